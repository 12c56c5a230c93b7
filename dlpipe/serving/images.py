"""Checks an encoded image passes before TensorFlow decodes it.

Size limits are read from the header (Pillow parses it without decoding pixels), so a
decompression bomb is refused before it costs memory. Anything Pillow cannot identify
as an allowed format is refused with the example's position in the request.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

from dlpipe.contract.images import MAGIC, sniff_format
from dlpipe.serving.protocol import RequestError


def image_checker(*, max_bytes: int, max_pixels: int,
                  formats: tuple[str, ...] = tuple(MAGIC)) -> Callable[[bytes, str], None]:
    def check(data: bytes, where: str) -> None:
        if len(data) > max_bytes:
            raise RequestError(f"{where}: image of {len(data):,} bytes; the limit is {max_bytes:,}",
                               status=413)
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    kind, (width, height) = image.format, image.size
        except (UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning, OSError, ValueError, SyntaxError):
            kind, width, height = None, 0, 0
            if sniff_format(data) is not None:
                raise RequestError(f"{where}: image header is damaged or the image is too "
                                   "large to open") from None
        if kind not in formats:
            raise RequestError(f"{where}: not a {' or '.join(formats)} image") from None
        if width * height > max_pixels:
            raise RequestError(f"{where}: image of {width}x{height} pixels; the limit is "
                               f"{max_pixels:,} pixels", status=413)

    return check
