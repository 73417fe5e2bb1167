"""Text extraction with the regex module where re falls short: Unicode properties and
scripts, fuzzy matching with error counts, possessive quantifiers and atomic groups,
recursion for balanced brackets, named lists, and a timeout on a pathological pattern."""

import regex


def handler(event, context):
    text = event["text"]
    words = regex.findall(r"\p{L}+", text)
    scripts = {s: len(regex.findall(rf"\p{{Script={s}}}+", text))
               for s in ("Latin", "Greek", "Cyrillic", "Han")}
    fuzzy = [(m.group(), m.fuzzy_counts) for m in regex.finditer(
        r"(?:serverless){e<=2}", text, flags=regex.BESTMATCH)]
    balanced = regex.findall(r"\((?:[^()]++|(?R))*\)", "f(a(b)c) g((x)(y)) h(")
    names = regex.findall(r"\L<cities>", text, cities=["Zürich", "Αθήνα", "Москва"])
    graphemes = regex.findall(r"\X", "e\u0301a\U0001F469\u200d\U0001F4BB!")
    atomic = bool(regex.match(r"(?>a+)b", "aaab"))
    try:
        regex.match(r"(a+)+$", "a" * 28 + "!", timeout=0.05)
        timed_out = False
    except TimeoutError:
        timed_out = True
    return {"words": len(words), "scripts": scripts, "fuzzy": fuzzy, "balanced": balanced,
            "cities": names, "graphemes": len(graphemes), "atomic": atomic,
            "casefold": regex.sub(r"(?i)STRASSE", "street", "Hauptstraße 1", flags=regex.FULLCASE),
            "timed_out": timed_out, "split": regex.split(r"\s*[,;]\s*", "a , b;c ;d")}
