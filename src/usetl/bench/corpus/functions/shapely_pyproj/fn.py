"""Geospatial handlers (geofencing, delivery zones): shapely's GEOS geometry (buffers,
unions, intersections, validity, an STRtree query, WKT/WKB round trips) and pyproj's PROJ
database bundled in its wheel (CRS lookups, a WGS84 to Web Mercator and UTM transform,
geodesic distances and areas)."""

import random

from pyproj import CRS, Geod, Transformer
from shapely import STRtree, from_wkb, to_wkb, wkt
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import transform, unary_union


def r(x, n=4):
    return round(x, n)


def geometry(seed, points):
    rng = random.Random(seed)
    zones = [Point(rng.uniform(0, 100), rng.uniform(0, 100)).buffer(rng.uniform(5, 15))
             for _ in range(12)]
    merged = unary_union(zones)
    route = LineString([(0, 0), (50, 60), (100, 100)])
    bow = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    tree = STRtree(zones)
    probes = [Point(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(points)]
    inside = sum(len(tree.query(p, predicate="within")) > 0 for p in probes)
    back = from_wkb(to_wkb(merged))
    return {"area": r(merged.area, 2), "parts": len(getattr(merged, "geoms", [merged])),
            "route_inside": r(route.intersection(merged).length, 3),
            "bow_valid": bow.is_valid, "fixed_area": r(bow.buffer(0).area, 3),
            "inside": inside, "wkb_equal": back.equals(merged),
            "wkt": wkt.dumps(Point(1.5, 2.25).buffer(1, quad_segs=2), rounding_precision=3)}


def projection(cities):
    wgs = CRS.from_epsg(4326)
    merc = Transformer.from_crs(wgs, "EPSG:3857", always_xy=True)
    utm = CRS.from_epsg(32633)
    to_utm = Transformer.from_crs(wgs, utm, always_xy=True)
    geod = Geod(ellps="WGS84")
    names = list(cities)
    out = {"merc": {n: [r(v, 2) for v in merc.transform(*cities[n])] for n in names},
           "utm": {n: [r(v, 2) for v in to_utm.transform(*cities[n])] for n in names},
           "utm_name": utm.name, "datum": wgs.datum.name}
    a, b = cities[names[0]], cities[names[1]]
    az, _, dist = geod.inv(a[0], a[1], b[0], b[1])
    out["distance_km"] = r(dist / 1000, 3)
    out["azimuth"] = r(az, 3)
    square = Polygon([(13.0, 52.0), (14.0, 52.0), (14.0, 53.0), (13.0, 53.0)])
    area, _ = geod.geometry_area_perimeter(square)
    out["square_km2"] = r(abs(area) / 1e6, 2)
    projected = transform(lambda x, y: to_utm.transform(x, y), square)
    out["projected_km2"] = r(projected.area / 1e6, 2)
    return out


def handler(event, context):
    return {"geometry": geometry(event["seed"], event["points"]),
            "projection": projection({k: tuple(v) for k, v in event["cities"].items()})}
