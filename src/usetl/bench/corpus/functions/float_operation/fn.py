"""FunctionBench float_operation: sin, cos and sqrt over a range."""

import math


def float_operations(n):
    total = 0.0
    for i in range(n):
        sin_i = math.sin(i)
        cos_i = math.cos(i)
        sqrt_i = math.sqrt(i)
        total += sin_i * cos_i + sqrt_i
    return total


def handler(event, context):
    return {"result": round(float_operations(event["n"]), 4)}
