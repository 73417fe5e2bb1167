"""A document pipeline's PDF step: pages made with fpdf2, then pypdf merging, rotating,
stamping page numbers from an overlay, extracting text, setting metadata, encrypting with
a password (RC4, no extra package) and reading back, as invoice and report mergers do."""

import datetime
import io

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

CREATED = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)


def make_pdf(title, lines):
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for start in range(0, len(lines), 20):
        pdf.add_page()
        pdf.cell(0, 10, f"{title} {start // 20 + 1}", new_x="LMARGIN", new_y="NEXT")
        for line in lines[start:start + 20]:
            pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    pdf.set_creation_date(CREATED)
    return bytes(pdf.output())


def overlay(count):
    pdf = FPDF()
    pdf.set_font("Courier", size=9)
    for i in range(count):
        pdf.add_page()
        pdf.set_y(-15)
        pdf.cell(0, 10, f"page {i + 1} of {count}", align="C")
    pdf.set_creation_date(CREATED)
    return PdfReader(io.BytesIO(bytes(pdf.output())))


def handler(event, context):
    docs = [make_pdf(f"Invoice {n}", [f"item {n}-{i}: {i * 3.5:.2f} EUR"
                                      for i in range(event["lines"])])
            for n in range(event["documents"])]
    writer = PdfWriter()
    for data in docs:
        writer.append(PdfReader(io.BytesIO(data)))
    count = len(writer.pages)
    stamps = overlay(count)
    for i, page in enumerate(writer.pages):
        page.merge_page(stamps.pages[i])
        if i % 2:
            page.rotate(90)
    writer.add_metadata({"/Title": "Merged invoices", "/Author": "billing"})
    writer.encrypt("s3cret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    reader = PdfReader(io.BytesIO(out.getvalue()))
    encrypted = reader.is_encrypted
    decrypted = reader.decrypt("s3cret").name
    texts = [p.extract_text() for p in reader.pages]
    return {"pages": len(reader.pages), "per_doc": [len(PdfReader(io.BytesIO(d)).pages)
                                                     for d in docs],
            "encrypted": encrypted, "decrypted": decrypted,
            "title": reader.metadata.title, "rotations": [p.rotation for p in reader.pages],
            "first": texts[0].splitlines()[:3], "stamped": all("of" in t for t in texts),
            "chars": sum(map(len, texts))}
