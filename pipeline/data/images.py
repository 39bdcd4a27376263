"""Natural-image patches cut from the photographs that ship inside installed packages.

The simulator and the image-classification set need natural images without any download, so
they draw from the sample photographs bundled with scikit-image, scikit-learn and matplotlib.
Every photograph is converted to grayscale with grey levels 0-255 (float32).

A patch is a rectangle of the photograph, ``scale`` photograph pixels per output pixel, resized
to the output shape by area interpolation (each output pixel averages the photograph pixels it
covers) and optionally mirrored left-right.  Sampling is split in two steps,
:func:`sample_patch_specs` (where to cut; deterministic given the generator) and
:func:`cut_patches` (the pixels), so that callers can keep the provenance of every patch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import numpy as np


class Photograph(NamedTuple):
    """One bundled photograph: ``pixels`` is (H, W) float32, grey levels 0-255, read-only."""

    name: str
    pixels: np.ndarray


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if name == "stereo_motorcycle" else image  # (left, right, disparity)

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # The file that sklearn.datasets.load_sample_image reads, located without importing
        # scikit-learn (about a second of start-up).
        import importlib.util
        import pathlib

        import matplotlib.image

        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"scikit-learn is not installed; cannot load its sample image {filename}")
        path = pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "images" / filename
        return matplotlib.image.imread(path)

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook
        import matplotlib.image

        return matplotlib.image.imread(matplotlib.cbook.get_sample_data(filename, asfileobj=False))

    return load


# Natural scenes and textures only: no text, drawings, phantoms or star fields.  Each of these is a
# file inside the installed package (scikit-image's loaders read bundled files without pooch).
PHOTOGRAPH_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "brick": _skimage("brick"),
    "camera": _skimage("camera"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "coins": _skimage("coins"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "moon": _skimage("moon"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "rocket": _skimage("rocket"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) image of any dtype -> (H, W) float32 grey levels 0-255."""
    image = np.asarray(image)
    if image.dtype.kind == "f" and image.max() <= 1.0:  # matplotlib reads PNG as floats in [0, 1]
        image = image * 255.0
    image = image.astype(np.float64)
    if image.ndim == 3:
        if image.shape[2] not in (3, 4):
            raise ValueError(f"expected a grey, RGB or RGBA image, got shape {image.shape}")
        # ITU-R 601 luma, the weighting PIL and OpenCV use for grayscale; alpha is ignored.
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114])
    elif image.ndim != 2:
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {image.shape}")
    return np.clip(image, 0.0, 255.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def source_photographs() -> tuple[Photograph, ...]:
    """Every bundled photograph, in a fixed order, loaded once and cached (read-only arrays)."""
    photographs = []
    for name, load in PHOTOGRAPH_LOADERS.items():
        pixels = to_grey(load())
        pixels.flags.writeable = False
        photographs.append(Photograph(name, pixels))
    return tuple(photographs)


def photograph(key: str | int) -> Photograph:
    """One bundled photograph by name (see :data:`PHOTOGRAPH_LOADERS`) or by index."""
    photographs = source_photographs()
    if isinstance(key, str):
        for photo in photographs:
            if photo.name == key:
                return photo
        raise KeyError(f"no bundled photograph {key!r}; available: {', '.join(p.name for p in photographs)}")
    return photographs[key]


@dataclasses.dataclass(frozen=True)
class PatchSpec:
    """Where a patch comes from: rows ``row:row+height`` and columns ``col:col+width`` of photograph
    number ``photo`` (an index into the photograph list used), mirrored left-right if ``flip``."""

    photo: int
    row: int
    col: int
    height: int
    width: int
    flip: bool = False


def summed_area_table(pixels: np.ndarray) -> np.ndarray:
    """(H + 1, W + 1) float64 table whose entry [r, c] is the sum of ``pixels[:r, :c]``."""
    table = np.zeros((pixels.shape[0] + 1, pixels.shape[1] + 1))
    np.cumsum(np.cumsum(pixels, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    return table


def _area_patch(table: np.ndarray, row: int, col: int, height: int, width: int, shape: tuple[int, int]) -> np.ndarray:
    """Area interpolation from a summed-area table: each output pixel is the mean of the photograph
    over its footprint, fractional pixels weighted by overlap (anti-aliased when shrinking).  The
    integral of a piecewise-constant image is bilinear within each pixel, so bilinear lookup in the
    table at the footprint corners is exact."""

    def corners(start: int, length: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        edges = start + np.arange(n + 1) * (length / n)
        index = np.minimum(np.floor(edges).astype(int), size - 2)
        return index, edges - index

    r, fr = corners(row, height, shape[0], table.shape[0])
    c, fc = corners(col, width, shape[1], table.shape[1])
    fr, fc = fr[:, None], fc[None, :]
    integral = (1 - fr) * ((1 - fc) * table[np.ix_(r, c)] + fc * table[np.ix_(r, c + 1)]) + fr * (
        (1 - fc) * table[np.ix_(r + 1, c)] + fc * table[np.ix_(r + 1, c + 1)]
    )
    return np.diff(np.diff(integral, axis=0), axis=1) / ((height / shape[0]) * (width / shape[1]))


def cut_patch(
    pixels: np.ndarray,
    row: int,
    col: int,
    height: int,
    width: int,
    shape: tuple[int, int] | None = None,
    flip: bool = False,
) -> np.ndarray:
    """Cut ``pixels[row:row+height, col:col+width]``, resize it to ``shape`` (default: no resize) by
    area interpolation and mirror it if ``flip``.  Returns (H, W) float32 in the input's range."""
    return _cut(np.asarray(pixels), None, row, col, height, width, shape, flip)


def _cut(pixels, table, row, col, height, width, shape, flip) -> np.ndarray:
    """:func:`cut_patch`, optionally given the whole photograph's summed-area table."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a (H, W) grey photograph, got shape {pixels.shape}")
    if height < 1 or width < 1 or row < 0 or col < 0 or row + height > pixels.shape[0] or col + width > pixels.shape[1]:
        raise ValueError(
            f"patch rows {row}:{row + height}, columns {col}:{col + width} do not fit a photograph "
            f"of shape {pixels.shape}"
        )
    if shape is None or tuple(shape) == (height, width):
        patch = pixels[row : row + height, col : col + width]
    else:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"patch shape must be two positive ints, got {shape}")
        region = pixels[row : row + height, col : col + width]
        if table is None:  # a table of the region alone is enough for one patch
            table, row, col = summed_area_table(region), 0, 0
        patch = _area_patch(table, row, col, height, width, tuple(shape))
        # Clip away the rounding of table differences (an average stays within the region's range).
        patch = np.clip(patch, region.min(), region.max())
    if flip:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch, dtype=np.float32)


def sample_patch_specs(
    n: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    photographs: Sequence[Photograph] | None = None,
    scale: tuple[float, float] = (2.0, 6.0),
    flip: bool = True,
) -> list[PatchSpec]:
    """Draw ``n`` patch positions: a photograph uniformly at random, a scale log-uniform in
    ``scale`` (photograph pixels per output pixel, reduced where the photograph is too small), a
    position uniformly within the photograph and, if ``flip``, a mirror with probability 1/2."""
    photographs = source_photographs() if photographs is None else photographs
    if not photographs:
        raise ValueError("no photographs to cut patches from")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"patch shape must be two positive ints, got {shape}")
    low, high = scale
    if not 0 < low <= high:
        raise ValueError(f"scale range must satisfy 0 < low <= high, got {scale}")
    out_h, out_w = shape
    photo = rng.integers(len(photographs), size=n)
    log_scale = rng.uniform(np.log(low), np.log(high), size=n)
    row_frac, col_frac = rng.uniform(size=(2, n))
    flips = rng.uniform(size=n) < 0.5 if flip else np.zeros(n, bool)
    specs = []
    for i in range(n):
        ph, pw = photographs[photo[i]].pixels.shape
        s = min(np.exp(log_scale[i]), ph / out_h, pw / out_w)
        height, width = max(1, int(round(out_h * s))), max(1, int(round(out_w * s)))
        height, width = min(height, ph), min(width, pw)
        row = int(row_frac[i] * (ph - height + 1))
        col = int(col_frac[i] * (pw - width + 1))
        specs.append(PatchSpec(int(photo[i]), row, col, height, width, bool(flips[i])))
    return specs


def cut_patches(
    specs: Sequence[PatchSpec],
    shape: tuple[int, int],
    photographs: Sequence[Photograph] | None = None,
) -> np.ndarray:
    """Pixels of each patch, resized to ``shape``: (n, H, W) float32, grey levels 0-255."""
    photographs = source_photographs() if photographs is None else photographs
    out = np.empty((len(specs), *shape), np.float32)
    tables: dict[int, np.ndarray] = {}  # one summed-area table per photograph used
    for i, spec in enumerate(specs):
        pixels = photographs[spec.photo].pixels
        if spec.photo not in tables:
            tables[spec.photo] = summed_area_table(pixels)
        out[i] = _cut(pixels, tables[spec.photo], spec.row, spec.col, spec.height, spec.width, shape, spec.flip)
    return out


def sample_patches(
    n: int,
    shape: tuple[int, int] = (36, 64),
    rng: np.random.Generator | None = None,
    photographs: Sequence[Photograph] | None = None,
    scale: tuple[float, float] = (2.0, 6.0),
    flip: bool = True,
) -> np.ndarray:
    """``n`` random natural-image patches, (n, H, W) float32, grey levels 0-255.

    Deterministic given ``rng`` (a fresh ``default_rng(0)`` when None).  See
    :func:`sample_patch_specs` for how positions, scales and flips are drawn.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    return cut_patches(sample_patch_specs(n, shape, rng, photographs, scale, flip), shape, photographs)
