"""Upload validation by content, as file-ingest handlers do it with python-magic (libmagic
through ctypes and its compiled database, both from pylibmagic's wheel: a runtime image,
Lambda's as this one, carries no libmagic, so the function ships it): MIME types and
descriptions of generated files (PNG, PDF, gzip, zip, ELF, JSON, CSV, a script) from
buffers and from paths in /tmp."""

import gzip
import io
import json
import os
import sys
import tempfile
import zipfile

import pylibmagic  # noqa: F401  first: it points ctypes at its libmagic for magic's loader

# isort: split
import magic

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
       b"\x00\x00\x00IEND\xaeB`\x82")


def samples():
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("a.txt", "hello")
    return {"png": PNG, "pdf": b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
            "gzip": gzip.compress(b"x" * 100, mtime=0), "zip": z.getvalue(),
            "json": json.dumps({"a": [1, 2, 3]}).encode(),
            "csv": b"id,name,amount\n1,ada,3.5\n2,bob,4.0\n",
            "script": b"#!/bin/sh\necho hello\n", "empty": b""}


def handler(event, context):
    mime = magic.Magic(mime=True)
    desc = magic.Magic()
    found = {name: [mime.from_buffer(data), desc.from_buffer(data).split(",")[0]]
             for name, data in samples().items()}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in samples().items():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            paths[name] = magic.from_file(path, mime=True)
    elf = magic.from_file(os.path.realpath(sys.executable), mime=True)
    return {"buffers": found, "paths": paths, "elf": elf,
            "same": all(paths[n] == found[n][0] for n in paths)}
