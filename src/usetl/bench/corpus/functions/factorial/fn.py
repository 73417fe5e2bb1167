"""ServerlessBench/FaaSdom factorial: a big factorial, its digits and trailing zeros."""

import math


def handler(event, context):
    n = event["n"]
    value = math.factorial(n)
    digits = str(value)
    return {"digits": len(digits), "trailing_zeros": len(digits) - len(digits.rstrip("0")),
            "mod": value % 1_000_000_007}
