"""SeBS 501.graph-pagerank: PageRank of a Barabasi-Albert graph with python-igraph."""

import random

import igraph


def handler(event, context):
    random.seed(event["seed"])  # igraph draws from Python's random by default
    graph = igraph.Graph.Barabasi(event["size"], 10)
    ranks = graph.pagerank()
    top = sorted(range(len(ranks)), key=lambda v: -ranks[v])[:5]
    return {"edges": graph.ecount(), "top": top, "sum": round(sum(ranks), 6)}
