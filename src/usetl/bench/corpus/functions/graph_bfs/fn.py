"""SeBS 503.graph-bfs: breadth-first search of a Barabasi-Albert graph with python-igraph."""

import random

import igraph


def handler(event, context):
    random.seed(event["seed"])
    graph = igraph.Graph.Barabasi(event["size"], 10)
    order, layers, parents = graph.bfs(0)
    return {"visited": len(order), "layers": len(layers) - 1, "first": order[:10],
            "parents_of_last": parents[order[-1]]}
