"""Word reports as back-office handlers generate them with python-docx: headings, styled
paragraphs, a table filled from rows, a page break and section settings, core properties,
saved to bytes and parsed back, and a template's placeholders replaced."""

import datetime
import io
import random

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Pt


def build(rows, seed):
    rng = random.Random(seed)
    doc = Document()
    doc.core_properties.author = "reports"
    doc.core_properties.title = "Monthly sales"
    doc.core_properties.created = datetime.datetime(2024, 6, 1, 9, 30)
    doc.add_heading("Monthly sales", level=0)
    p = doc.add_paragraph("Prepared for ")
    p.add_run("{customer}").bold = True
    p.add_run(" on {date}.")
    p.alignment = WD_ALIGN_PARAGRAPH.CENTER
    table = doc.add_table(rows=1, cols=3)
    table.style = "Light Grid Accent 1"
    for cell, name in zip(table.rows[0].cells, ("Region", "Units", "Revenue"), strict=True):
        cell.text = name
    totals = 0
    for i in range(rows):
        units = rng.randrange(1, 500)
        revenue = units * rng.choice([9.99, 19.5, 4.25])
        totals += revenue
        cells = table.add_row().cells
        cells[0].text, cells[1].text, cells[2].text = f"R{i:02d}", str(units), f"{revenue:.2f}"
    doc.add_page_break()
    doc.add_heading("Notes", level=1)
    for item in ("Figures are net.", "Returns excluded."):
        doc.add_paragraph(item, style="List Bullet")
    run = doc.add_paragraph().add_run(f"Total {totals:.2f}")
    run.font.size = Pt(14)
    doc.sections[0].left_margin = Pt(54)
    return doc


def fill(doc, values):
    for p in doc.paragraphs:
        for run in p.runs:
            for key, value in values.items():
                run.text = run.text.replace("{" + key + "}", value)


def handler(event, context):
    doc = build(event["rows"], event["seed"])
    fill(doc, {"customer": event["customer"], "date": "2024-06-30"})
    buf = io.BytesIO()
    doc.save(buf)
    back = Document(io.BytesIO(buf.getvalue()))
    table = back.tables[0]
    return {"paragraphs": [p.text for p in back.paragraphs if p.text][:4],
            "styles": sorted({p.style.name for p in back.paragraphs}),
            "rows": len(table.rows), "header": [c.text for c in table.rows[0].cells],
            "last": [c.text for c in table.rows[-1].cells],
            "total": back.paragraphs[-1].text, "author": back.core_properties.author,
            "title": back.core_properties.title,
            "margin": back.sections[0].left_margin.pt, "zip_ok": buf.getvalue()[:2] == b"PK"}
