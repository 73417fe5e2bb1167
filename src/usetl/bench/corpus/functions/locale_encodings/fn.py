"""Encodings and locales as ETL functions meet them: the interpreter's encodings (stdio,
the file system, locale.getpreferredencoding), setlocale to C.UTF-8 and C, codecs for
legacy files (cp1252, latin-1, Shift JIS, UTF-16 with a BOM), error handlers, IDNA and
Unicode normalisation, and non-ASCII file names in /tmp."""

import codecs
import locale
import os
import sys
import tempfile
import unicodedata

TEXT = "Grüße, naïve café – 東京 ½ ﬁ"


def handler(event, context):
    encodings = {"stdout": sys.stdout.encoding if sys.stdout else None,
                 "fs": sys.getfilesystemencoding(), "fs_errors": sys.getfilesystemencodeerrors(),
                 "preferred": locale.getpreferredencoding(False), "utf8_mode": sys.flags.utf8_mode}
    tried = {}
    for name in ("C.UTF-8", "C", "POSIX", "de_DE.UTF-8"):
        try:
            tried[name] = locale.setlocale(locale.LC_ALL, name)
        except locale.Error as e:
            tried[name] = f"error: {e}"
    locale.setlocale(locale.LC_ALL, "C")
    conv = locale.localeconv()
    legacy = {}
    for codec in ("cp1252", "latin-1", "shift_jis", "utf-16", "utf-8-sig"):
        data = TEXT.encode(codec, errors="replace")
        legacy[codec] = [len(data), data.decode(codec)[:12]]
    with tempfile.TemporaryDirectory() as d:
        name = os.path.join(d, "résumé-東京.txt")
        with open(name, "w", encoding="cp1252", errors="xmlcharrefreplace") as f:
            f.write(TEXT)
        listed = os.listdir(d)
        raw = open(name, "rb").read()
        listed_bytes = os.listdir(d.encode())
    return {"encodings": encodings, "locales": tried, "decimal": conv["decimal_point"],
            "legacy": legacy, "listed": listed, "listed_bytes": [b.hex() for b in listed_bytes],
            "cp1252_file": raw.decode("cp1252"), "surrogate": os.fsdecode(b"bad\xff").encode(
                "utf-8", "surrogateescape").hex(),
            "nfkc": unicodedata.normalize("NFKC", TEXT), "nfd_len": len(unicodedata.normalize(
                "NFD", TEXT)), "idna": "bücher.example".encode("idna").decode(),
            "bom": codecs.BOM_UTF16_LE.hex(), "names": [unicodedata.name(c) for c in "½ﬁ"],
            "strxfrm": sorted(["b", "A", "a", "B"], key=locale.strxfrm)}
