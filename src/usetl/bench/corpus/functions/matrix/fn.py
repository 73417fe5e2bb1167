"""FaaSdom matrix: pure-Python matrix multiplication."""

import random


def multiply(a, b):
    columns = list(zip(*b, strict=True))
    return [[sum(x * y for x, y in zip(row, col, strict=True)) for col in columns] for row in a]


def handler(event, context):
    rng = random.Random(event["seed"])
    n = event["n"]
    a = [[rng.randint(0, 9) for _ in range(n)] for _ in range(n)]
    b = [[rng.randint(0, 9) for _ in range(n)] for _ in range(n)]
    c = multiply(a, b)
    return {"trace": sum(c[i][i] for i in range(n)), "corner": c[n - 1][n - 1]}
