"""The image formats the pipeline accepts, told apart by their first bytes.

Producers, ingest and the server all decide "is this PNG or JPEG?" from these magic bytes,
so a format one of them accepts is never one another cannot name.
"""

from __future__ import annotations

MAGIC: dict[str, bytes] = {
    "PNG": b"\x89PNG\r\n\x1a\n",
    "JPEG": b"\xff\xd8\xff",
}


def sniff_format(data: bytes) -> str | None:
    """The format's name ("PNG" or "JPEG") from the leading bytes; None for anything else."""
    for name, magic in MAGIC.items():
        if data.startswith(magic):
            return name
    return None


def image_statistics(data: bytes) -> tuple[float, float, int, int] | None:
    """(mean, std of grey levels in [0, 1], width, height) of an encoded image; None if it
    does not decode. The same function describes training images and served ones for
    ``dlpipe drift``, so the two are measured alike."""
    import io

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return float(grey.mean()), float(grey.std()), int(grey.shape[1]), int(grey.shape[0])
