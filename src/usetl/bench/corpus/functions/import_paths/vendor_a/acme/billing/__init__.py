def total(items):
    return sum(q * p for q, p in items)
