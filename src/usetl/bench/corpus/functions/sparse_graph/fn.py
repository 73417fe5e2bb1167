"""Sparse linear algebra as recommendation and routing functions use it: a sparse
Laplacian system solved (spsolve, conjugate gradients), its smallest eigenvalues (eigsh),
connected components and shortest paths with scipy.sparse.csgraph, and formats converted."""

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph, linalg


def handler(event, context):
    n = event["n"]
    rng = np.random.default_rng(event["seed"])
    rows = rng.integers(0, n, event["edges"])
    cols = rng.integers(0, n, event["edges"])
    weights = rng.uniform(1, 10, event["edges"])
    graph = sparse.coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    graph = graph + graph.T
    count, labels = csgraph.connected_components(graph, directed=False)
    dist = csgraph.dijkstra(graph, directed=False, indices=0)
    lap = csgraph.laplacian(graph) + sparse.identity(n) * 0.1
    b = np.ones(n)
    exact = linalg.spsolve(lap.tocsc(), b)
    cg, info = linalg.cg(lap, b, rtol=1e-10, maxiter=5000)
    eig = linalg.eigsh(lap, k=3, sigma=0, which="LM", return_eigenvectors=False)
    tree = csgraph.minimum_spanning_tree(graph)
    return {"nnz": int(graph.nnz), "components": int(count),
            "largest": int(np.bincount(labels).max()),
            "reachable": int(np.isfinite(dist).sum()), "cg_ok": info == 0 and bool(
                np.allclose(cg, exact, atol=1e-6)), "solution_sum": round(float(exact.sum()), 6),
            "eig": sorted(round(float(e), 6) for e in eig),
            "mst_weight": round(float(tree.sum()), 4), "formats": [
                graph.format, graph.tocsc().format, graph.todok().format]}
