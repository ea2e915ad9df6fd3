"""Persona images (avatar, moments cover, a personal account's own WeChat QR code), kept in the one storage.

An image is checked by its first bytes (PNG, JPEG, GIF or WebP, whatever its name or the browser
claims), bounded in size, and stored under ``persona/<random token>.<ext>``; the account keeps
the path it is served at (``/media/persona/<token>.<ext>``). The token is unguessable, and the
images are what a customer sees anyway (an avatar, a QR code to scan), so they are served
without a login — a landing page opened on a customer's phone shows them.
"""

from __future__ import annotations

import secrets
from typing import IO

from siyu.core import storage
from siyu.core.errors import Invalid

AREA = "persona"
URL_PREFIX = "/media/persona/"
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # a phone photo after WeChat's own compression is well under this
SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"GIF87a", "gif", "image/gif"),
    (b"GIF89a", "gif", "image/gif"),
)
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


def image_kind(head: bytes) -> str | None:
    """``png``/``jpg``/``gif``/``webp`` for an image's first bytes, else None."""
    for signature, ext, _type in SIGNATURES:
        if head.startswith(signature):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def save_image(stream: IO[bytes], *, field: str) -> str:
    """Store an uploaded image; returns the path it is served at. Not an image, or too large: ``Invalid``."""
    head = stream.read(16)
    ext = image_kind(head)
    if ext is None:
        raise Invalid("Not an image: upload a PNG, JPEG, GIF or WebP file", field=field)
    rest = stream.read(MAX_IMAGE_BYTES + 1 - len(head))
    data = head + rest
    if len(data) > MAX_IMAGE_BYTES:
        raise Invalid("The image is larger than {mb} MB", field=field, mb=MAX_IMAGE_BYTES // (1024 * 1024))
    name = f"{secrets.token_urlsafe(18)}.{ext}"
    storage.put_bytes(f"{AREA}/{name}", data, meta={"content_type": CONTENT_TYPES[ext]})
    return URL_PREFIX + name


def key_for(name: str) -> str | None:
    """The storage key of a served name (``<token>.<ext>``), or None for anything else."""
    token, _dot, ext = name.rpartition(".")
    if ext not in CONTENT_TYPES or not token or not all(c.isalnum() or c in "-_" for c in token) or len(token) > 64:
        return None
    return f"{AREA}/{name}"
