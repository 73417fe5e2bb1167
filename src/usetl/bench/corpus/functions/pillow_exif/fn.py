"""Photo handling as upload handlers do it with Pillow (vSwarm's image-rotate and SeBS's
thumbnailer read what this writes): EXIF written and read back (orientation, camera,
GPS), exif_transpose, format conversions (WebP lossless, PNG text chunks, multi-frame
TIFF, animated GIF, ICO sizes), ICC-free colour modes and a palette quantization."""

import hashlib
import io

from PIL import ExifTags, Image, ImageDraw, ImageOps, PngImagePlugin


def picture(w, h):
    img = Image.new("RGB", (w, h), (30, 60, 90))
    draw = ImageDraw.Draw(img)
    for i in range(0, w, 16):
        draw.line([(i, 0), (w - i, h)], fill=(i % 256, 200, 255 - i % 256), width=3)
    draw.rectangle([w // 4, h // 4, w // 2, h // 2], fill=(250, 20, 20))
    return img


def digest(img):
    return hashlib.sha256(img.tobytes()).hexdigest()[:16]


def exif_round(img):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotated 90° clockwise
    exif[ExifTags.Base.Make] = "Corpus"
    exif[ExifTags.Base.Model] = "Cam 1"
    exif[ExifTags.Base.DateTime] = "2024:06:01 12:00:00"
    gps = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0)}
    exif[ExifTags.IFD.GPSInfo] = gps
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=90)
    back = Image.open(io.BytesIO(buf.getvalue()))
    read = back.getexif()
    upright = ImageOps.exif_transpose(back)
    gps_back = read.get_ifd(ExifTags.IFD.GPSInfo)
    return {"make": read[ExifTags.Base.Make], "orientation": read[ExifTags.Base.Orientation],
            "size": list(back.size), "upright": list(upright.size),
            "gps": [gps_back[ExifTags.GPS.GPSLatitudeRef],
                    [float(v) for v in gps_back[ExifTags.GPS.GPSLatitude]]],
            "jpeg": digest(back)}


def formats(img):
    out = {}
    buf = io.BytesIO()
    img.save(buf, "WEBP", lossless=True)
    out["webp"] = digest(Image.open(io.BytesIO(buf.getvalue()))) == digest(img)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "corpus")
    info.add_itxt("Comment", "naïve ✓", lang="fr")
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info, optimize=True)
    png = Image.open(io.BytesIO(buf.getvalue()))
    out["png_text"] = dict(sorted(png.text.items()))
    frames = [img.rotate(a) for a in (0, 90, 180)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    tiff = Image.open(io.BytesIO(buf.getvalue()))
    out["tiff_frames"] = tiff.n_frames
    buf = io.BytesIO()
    small = [f.resize((64, 48)).quantize(32) for f in frames]
    small[0].save(buf, "GIF", save_all=True, append_images=small[1:], duration=100, loop=0)
    gif = Image.open(io.BytesIO(buf.getvalue()))
    out["gif"] = [gif.n_frames, gif.info.get("loop"), gif.info.get("duration")]
    buf = io.BytesIO()
    img.save(buf, "ICO", sizes=[(16, 16), (32, 32), (48, 48)])
    out["ico"] = sorted(Image.open(io.BytesIO(buf.getvalue())).info["sizes"])
    out["modes"] = {m: digest(img.convert(m)) for m in ("L", "CMYK", "YCbCr", "1")}
    out["quantized_colours"] = len(img.quantize(16).getcolors())
    return out


def handler(event, context):
    img = picture(event["width"], event["height"])
    return {"exif": exif_round(img), "formats": formats(img), "source": digest(img)}
