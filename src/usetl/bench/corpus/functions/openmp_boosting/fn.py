"""OpenMP inside scikit-learn: histogram gradient boosting (libgomp threads, as many as
threadpoolctl allows) and KMeans."""

from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_info, threadpool_limits


def handler(event, context):
    x, y = make_classification(n_samples=event["samples"], n_features=8, random_state=0)
    with threadpool_limits(limits=2, user_api="openmp"):
        model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
        clusters = KMeans(n_clusters=3, n_init=2, random_state=0).fit(x)
    apis = sorted({p["user_api"] for p in threadpool_info()})
    return {"score": round(model.score(x, y), 3), "inertia": round(float(clusters.inertia_), 1),
            "apis": apis}
