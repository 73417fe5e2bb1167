"""Record de-duplication, as CRM and catalogue ETL functions do it: names transliterated
to ASCII with unidecode, compared with rapidfuzz (ratio, token_set_ratio, WRatio), the best
matches picked with process.extract, and a full score matrix with cdist on threads."""

import rapidfuzz
from rapidfuzz import fuzz, process, utils
from unidecode import unidecode

CANONICAL = ["Zürich Versicherung AG", "Société Générale", "Łódź Logistics sp. z o.o.",
             "Ærø Fisheries", "Nguyễn Trading Co", "São Paulo Imports Ltda", "Müller & Söhne GmbH",
             "Αθήνα Shipping", "Москва Tech", "北京 Software"]


def noisy(name, i):
    s = unidecode(name).lower()
    if i % 3 == 0:
        s = s.replace("a", "", 1)
    if i % 2 == 0:
        s = " ".join(reversed(s.split()))
    return s + (" inc" if i % 4 == 0 else "")


def handler(event, context):
    ascii_names = [unidecode(n) for n in CANONICAL]
    incoming = [noisy(CANONICAL[i % len(CANONICAL)], i) for i in range(event["records"])]
    matches = [process.extractOne(s, ascii_names, scorer=fuzz.WRatio,
                                  processor=utils.default_process) for s in incoming]
    matrix = process.cdist(incoming, ascii_names, scorer=fuzz.token_set_ratio,
                           processor=utils.default_process, workers=2)
    best = matrix.argmax(axis=1).tolist()
    top3 = process.extract("muller sohne", ascii_names, scorer=fuzz.partial_ratio, limit=3)
    return {"ascii": ascii_names, "matched": [m[2] for m in matches],
            "scores": [round(m[1], 2) for m in matches][:10],
            "agree": sum(b == m[2] for b, m in zip(best, matches, strict=True)),
            "top3": [(t[0], round(t[1], 2)) for t in top3],
            "distance": rapidfuzz.distance.Levenshtein.distance("kitten", "sitting"),
            "jaro": round(rapidfuzz.distance.JaroWinkler.similarity("martha", "marhta"), 6)}
