"""SeBS 502.graph-mst, with networkx: the minimum spanning tree of a random weighted graph."""

import random

import networkx as nx


def handler(event, context):
    rng = random.Random(event["seed"])
    graph = nx.gnm_random_graph(event["nodes"], event["edges"], seed=event["seed"])
    for u, v in graph.edges:
        graph[u][v]["weight"] = rng.randint(1, 1000)
    tree = nx.minimum_spanning_tree(graph)
    paths = nx.single_source_dijkstra_path_length(graph, 0)
    return {"components": nx.number_connected_components(graph),
            "tree_edges": tree.number_of_edges(), "tree_weight": tree.size(weight="weight"),
            "farthest": max(paths.values())}
