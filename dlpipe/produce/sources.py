"""Labelled images to produce: scikit-learn's digits, a synthetic generator, a folder.

Every source is an iterator, so a million-record run holds one image at a time. Samples
are deterministic in their index: the same run produces the same bytes again.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dlpipe.contract.images import sniff_format
from dlpipe.produce.records import Image, encode_png

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "cross", "ring", "stripes", "checker", "diamond")


@dataclass(frozen=True)
class Sample:
    index: int
    label: str
    image: Image


def digits(*, start: int = 0) -> Iterator[Sample]:
    """The 1,797 real 8x8 grey digits that ship with scikit-learn, cycled as long as asked."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = (data.images * (255 / 16)).round().astype(np.uint8)
    n = len(pixels)
    for i in itertools.count(start):
        yield Sample(i, str(int(data.target[i % n])), encode_png(pixels[i % n]))


def synthetic(*, size: int = 32, seed: int = 0, start: int = 0,
              classes: tuple[str, ...] = SYNTHETIC_CLASSES) -> Iterator[Sample]:
    """Colour shapes on noisy backgrounds that a small CNN can tell apart; endless."""
    for i in itertools.count(start):
        label = classes[i % len(classes)]
        yield Sample(i, label, encode_png(synthetic_pixels(label, i, size=size, seed=seed)))


def synthetic_pixels(label: str, index: int, *, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.35, 0.65, size=2)
    r = rng.uniform(0.18, 0.3)
    dy, dx = yy - cy, xx - cx
    shapes = {
        "circle": dx**2 + dy**2 < r**2,
        "square": (abs(dx) < r * 0.85) & (abs(dy) < r * 0.85),
        "triangle": (dy > -r) & (dy < r) & (abs(dx) < (dy + r) / 2),
        "cross": ((abs(dx) < r / 4) & (abs(dy) < r)) | ((abs(dy) < r / 4) & (abs(dx) < r)),
        "ring": (dx**2 + dy**2 < r**2) & (dx**2 + dy**2 > (r * 0.6) ** 2),
        "stripes": (np.floor(yy * size / max(2, size // 8)) % 2 == 0) & (abs(dx) < r) & (abs(dy) < r),
        "checker": ((np.floor(xx * 4) + np.floor(yy * 4)) % 2 == 0) & (abs(dx) < r) & (abs(dy) < r),
        "diamond": abs(dx) + abs(dy) < r,
    }
    mask = shapes[label]
    background = rng.integers(0, 90, size=3)
    foreground = rng.integers(140, 256, size=3)
    img = background + rng.normal(0, 12, size=(size, size, 3))
    img[mask] = foreground + rng.normal(0, 12, size=(int(mask.sum()), 3))
    return img.clip(0, 255).astype(np.uint8)


def image_folder(root: Path, *, start: int = 0) -> Iterator[Sample]:
    """Images under ``root/<label>/`` (the ImageFolder convention), PNG and JPEG, sorted."""
    from PIL import Image as PILImage

    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not files:
        raise FileNotFoundError(f"no .png/.jpg/.jpeg files in {root}/<label>/")
    for i, path in enumerate(itertools.islice(itertools.cycle(files), start, None), start):
        data = path.read_bytes()
        with PILImage.open(path) as im:
            channels = len(im.getbands()) if im.mode != "P" else 3
            yield Sample(i, path.parent.name,
                         Image(data, sniff_format(data) or "JPEG",
                               im.width, im.height, channels))
