"""The image: the guest's read-only filesystem, baked from the host's CPython.

``default_image()`` gives the path of the image for the host's current
interpreter (baking it into the cache on first use); ``ImageArchive.open``
reads one.
"""

from .archive import Entry, ImageArchive, ImageError
from .build import (
    ImageInfo,
    ProgressFn,
    build_image,
    cache_root,
    current_digest,
    default_image,
    guest_lib,
    image_path,
    list_images,
)
from .inputs import GUEST_AGENT, GUEST_LIB
from .progress import StderrProgress

__all__ = [
    "GUEST_AGENT",
    "GUEST_LIB",
    "Entry",
    "ImageArchive",
    "ImageError",
    "ImageInfo",
    "ProgressFn",
    "StderrProgress",
    "build_image",
    "cache_root",
    "current_digest",
    "default_image",
    "guest_lib",
    "image_path",
    "list_images",
]
