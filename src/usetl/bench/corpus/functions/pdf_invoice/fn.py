"""Invoices as PDF, as document-generation functions make them: one with reportlab's
platypus (a table, paragraphs, page numbers, invariant output) and one with fpdf2 (cells,
a fixed creation date), each checked by its pages, size and a digest."""

import hashlib
import io
from datetime import UTC, datetime

from fpdf import FPDF
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle


def lines(n):
    return [[f"Item {i}", str(i % 5 + 1), f"{(i * 3.75) % 40:.2f}"] for i in range(n)]


def with_reportlab(n):
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, invariant=1, title="Invoice 42")
    styles = getSampleStyleSheet()
    table = Table([["Item", "Qty", "Price"]] + lines(n), repeatRows=1)
    table.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.grey),
                               ("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
    pages = []

    def number(canvas, document):
        pages.append(document.page)
        canvas.drawString(500, 20, f"page {document.page}")
    doc.build([Paragraph("Invoice 42", styles["Title"]), Spacer(1, 12), table],
              onFirstPage=number, onLaterPages=number)
    return out.getvalue(), len(pages)


def with_fpdf(n):
    pdf = FPDF()
    pdf.set_creation_date(datetime(2024, 1, 1, tzinfo=UTC))
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.cell(0, 10, "Invoice 42", new_x="LMARGIN", new_y="NEXT", align="C")
    for row in lines(n):
        for text in row:
            pdf.cell(60, 8, text, border=1)
        pdf.ln()
    return bytes(pdf.output()), pdf.page_no()


def handler(event, context):
    rl, rl_pages = with_reportlab(event["rows"])
    fp, fp_pages = with_fpdf(event["rows"])
    return {"reportlab": {"pages": rl_pages, "size": len(rl), "head": rl[:8].decode(),
                          "sha256": hashlib.sha256(rl).hexdigest()},
            "fpdf": {"pages": fp_pages, "size": len(fp),
                     "sha256": hashlib.sha256(fp).hexdigest()}}
