"""scikit-learn as tutorials write it: a random forest with n_jobs=2 (joblib's default,
process-based backend) and cross-validation, and OpenMP histogram boosting."""

from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import cross_val_score


def handler(event, context):
    x, y = make_classification(n_samples=event["samples"], n_features=10, random_state=0)
    forest = RandomForestClassifier(n_estimators=20, n_jobs=2, random_state=0).fit(x, y)
    scores = cross_val_score(RandomForestClassifier(n_estimators=10, random_state=0), x, y,
                             cv=3, n_jobs=2)
    boosted = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    return {"forest": round(forest.score(x, y), 3), "cv": [round(s, 3) for s in scores],
            "boosted": round(boosted.score(x, y), 3)}
