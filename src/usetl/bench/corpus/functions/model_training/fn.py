"""FunctionBench model_training: TF-IDF and logistic regression on reviews (scikit-learn,
pandas), the model saved to /tmp with joblib and loaded back."""

import random

import joblib
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

GOOD = ["great", "excellent", "love", "perfect", "fast", "works"]
BAD = ["broken", "awful", "slow", "refund", "hate", "waste"]
FILLER = ["the", "product", "it", "was", "and", "this", "arrived", "box", "my", "a"]


def reviews(rng, n):
    rows = []
    for _ in range(n):
        score = rng.choice([1, 5])
        words = rng.sample(FILLER, 5) + rng.sample(GOOD if score == 5 else BAD, 2)
        rng.shuffle(words)
        rows.append({"Text": " ".join(words), "Score": score})
    return pd.DataFrame(rows)


def handler(event, context):
    df = reviews(random.Random(event["seed"]), event["rows"])
    df["Text"] = df["Text"].str.replace(r"\W+", " ", regex=True).str.lower()
    vectorizer = TfidfVectorizer(min_df=2)
    x = vectorizer.fit_transform(df["Text"])
    model = LogisticRegression(max_iter=200).fit(x, df["Score"])
    joblib.dump(model, "/tmp/lr_model.pk")
    loaded = joblib.load("/tmp/lr_model.pk")
    test = vectorizer.transform(["love it works great", "awful and broken refund"])
    return {"features": x.shape[1], "train_accuracy": round(float(model.score(x, df["Score"])), 4),
            "predicted": [int(p) for p in loaded.predict(test)]}
