def zone(country):
    return {"DE": 1, "FR": 1, "US": 3}.get(country, 2)
