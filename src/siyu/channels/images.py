"""QR code and poster PNGs for a channel.

The QR encodes the WeCom contact way's QR link when the corp is connected, otherwise
Siyu's own tracked link for the channel. The poster puts the channel's name, its
incentive and the QR on one printable image; Chinese text needs a CJK font, found among
the system's fonts (Debian: fonts-noto-cjk), and long names wrap rather than overflow.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
POSTER_SIZE = (1080, 1440)
MARGIN = 80


class FontMissing(RuntimeError):
    pass


@lru_cache
def cjk_font_path() -> str:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise FontMissing("no CJK font installed (apt-get install fonts-noto-cjk)")


def qr_png(data: str, *, box_size: int = 12) -> bytes:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=2)
    code.add_data(data)
    code.make(fit=True)
    image = code.make_image(fill_color="black", back_color="white").convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Break text into lines that fit ``width`` pixels, character by character (Chinese has no spaces)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for char in paragraph:
            if draw.textlength(line + char, font=font) > width and line:
                lines.append(line)
                line = char
            else:
                line += char
        lines.append(line)
    return lines


def poster_png(*, title: str, incentive: str, qr_data: str, footer: str = "", qr_image: bytes | None = None,
               badge: str = "") -> bytes:
    """The poster: ``title`` (the persona and brand a customer adds — never the internal channel name),
    the incentive, the QR (``qr_image`` — WeCom's own 「联系我」 image — when kept, else a QR of
    ``qr_data``) and a footer. ``badge``: one character drawn as the persona's avatar."""
    width, height = POSTER_SIZE
    poster = Image.new("RGB", POSTER_SIZE, (247, 244, 236))
    draw = ImageDraw.Draw(poster)
    font_path = cjk_font_path()
    body_font = ImageFont.truetype(font_path, 44)
    small_font = ImageFont.truetype(font_path, 32)
    # A long name gets a smaller font rather than running off the poster or being cut.
    for size in (72, 60, 50, 42):
        title_font = ImageFont.truetype(font_path, size)
        lines = _wrap(draw, title, title_font, width - 2 * MARGIN)
        if len(lines) <= 3:
            break
    y = MARGIN
    if badge:
        radius = 56
        draw.ellipse((MARGIN, y, MARGIN + 2 * radius, y + 2 * radius), fill=(34, 49, 38))
        badge_font = ImageFont.truetype(font_path, 64)
        draw.text((MARGIN + radius, y + radius), badge[:1], font=badge_font, fill=(247, 244, 236), anchor="mm")
        y += 2 * radius + 24
    for line in lines[:4]:
        draw.text((MARGIN, y), line, font=title_font, fill=(34, 49, 38))
        y += int(size * 1.28)
    y += 20
    for line in _wrap(draw, incentive, body_font, width - 2 * MARGIN)[:3]:
        draw.text((MARGIN, y), line, font=body_font, fill=(180, 83, 9))
        y += 60
    qr = Image.open(io.BytesIO(qr_image or qr_png(qr_data))).convert("RGB")
    side = min(width - 2 * MARGIN, height - y - MARGIN - 80)
    qr = qr.resize((side, side), Image.Resampling.NEAREST)
    poster.paste(qr, ((width - side) // 2, y + 20))
    if footer:
        (line, *_rest) = _wrap(draw, footer, small_font, width - 2 * MARGIN)
        draw.text((MARGIN, height - MARGIN - 32), line, font=small_font, fill=(100, 100, 100))
    out = io.BytesIO()
    poster.save(out, format="PNG")
    return out.getvalue()
