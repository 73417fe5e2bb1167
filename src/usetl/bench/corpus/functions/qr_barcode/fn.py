"""Codes for tickets and labels: QR codes with qrcode (its matrix, a PNG through Pillow, an
SVG), and EAN-13 and Code 128 barcodes with python-barcode as SVG, as label and ticket
services make them."""

import hashlib
import io

import barcode
import qrcode
import qrcode.image.svg
from barcode.writer import SVGWriter


def handler(event, context):
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=4, border=2)
    qr.add_data(event["text"])
    qr.make(fit=True)
    matrix = qr.get_matrix()
    png = io.BytesIO()
    qr.make_image(fill_color="black", back_color="white").save(png)
    svg = io.BytesIO()
    qrcode.make(event["text"], image_factory=qrcode.image.svg.SvgPathImage).save(svg)
    codes = {}
    for kind, value in (("ean13", event["ean"]), ("code128", event["text"][:20])):
        out = io.BytesIO()
        code = barcode.get(kind, value, writer=SVGWriter())
        code.write(out, options={"write_text": True, "module_height": 10.0})
        codes[kind] = {"full": code.get_fullcode(),
                       "sha256": hashlib.sha256(out.getvalue()).hexdigest()}
    return {"version": qr.version, "size": len(matrix),
            "dark": sum(map(sum, matrix)), "png_magic": png.getvalue()[:8].hex(),
            "png_sha256": hashlib.sha256(png.getvalue()).hexdigest(),
            "svg_sha256": hashlib.sha256(svg.getvalue()).hexdigest(), "codes": codes}
