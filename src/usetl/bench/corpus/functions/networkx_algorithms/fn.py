"""Graph analytics beyond MST, as recommendation and routing handlers run them with
networkx: Dijkstra and A* paths, max flow and min cut, Louvain communities with a seed,
topological generations of a DAG, betweenness on a sample, PageRank, k-core, and a
graph round-tripped through GraphML and node-link JSON."""

import io
import json
import random

import networkx as nx


def r(x):
    return round(x, 6)


def handler(event, context):
    n, seed = event["nodes"], event["seed"]
    g = nx.connected_watts_strogatz_graph(n, 6, 0.2, seed=seed)
    rng = random.Random(seed)
    for u, v in g.edges:
        g[u][v]["weight"] = rng.randint(1, 20)
    path = nx.dijkstra_path(g, 0, n // 2)
    astar = nx.astar_path_length(g, 0, n // 2, heuristic=lambda a, b: 0)
    flow_g = nx.DiGraph()
    for u, v, d in g.edges(data=True):
        flow_g.add_edge(u, v, capacity=d["weight"])
        flow_g.add_edge(v, u, capacity=d["weight"])
    flow, _ = nx.maximum_flow(flow_g, 0, n - 1)
    cut, (left, _) = nx.minimum_cut(flow_g, 0, n - 1)
    communities = nx.community.louvain_communities(g, seed=seed)
    dag = nx.gnp_random_graph(40, 0.1, seed=seed, directed=True)
    dag = nx.DiGraph([(u, v) for u, v in dag.edges if u < v])
    generations = [sorted(x) for x in nx.topological_generations(dag)]
    between = nx.betweenness_centrality(g, k=50, seed=seed)
    top = sorted(between, key=lambda k: (-between[k], k))[:3]
    pr = nx.pagerank(g, alpha=0.85)
    buf = io.BytesIO()
    nx.write_graphml(g, buf)
    back = nx.read_graphml(io.BytesIO(buf.getvalue()), node_type=int)
    linked = nx.node_link_graph(json.loads(json.dumps(nx.node_link_data(g))))
    return {"edges": g.number_of_edges(), "path": path, "astar": astar,
            "flow": flow, "cut": cut, "left": len(left),
            "communities": sorted(len(c) for c in communities)[-3:],
            "modularity_ok": nx.community.modularity(g, communities) > 0.3,
            "generations": len(generations), "first_generation": generations[0][:5],
            "betweenness": top, "pagerank": [r(pr[0]), r(max(pr.values()))],
            "core": max(nx.core_number(g).values()),
            "graphml": nx.utils.graphs_equal(g, back) or sorted(back.edges) == sorted(g.edges),
            "node_link": sorted(linked.edges) == sorted(g.edges)}
