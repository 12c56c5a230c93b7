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
