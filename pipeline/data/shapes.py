"""The default classification task ("shapes"): ten kinds of textured shape on procedural
natural-like backgrounds, 32x32 grayscale uint8, CIFAR-shaped.

Each image shows one shape of its class at a random position (its centroid so that the shape lies
fully or mostly inside the image), scale and rotation.  Nothing but the shape's spatial form tells
the classes apart:

- **size from area**: the shape is scaled to a target area (in pixels) drawn from one log-uniform
  distribution shared by all classes, so the foreground fraction does not reveal the class (a ring
  and a disk of the same area cover the same number of pixels);
- **texture, contrast, polarity**: background and foreground are each ``mean + sd * texture``, where
  the texture is 1/f^alpha ("pink") noise with a random spectral slope, orientation bias and phase;
  the mean luminance, the foreground-background difference, its sign (bright or dark shape) and both
  standard deviations are drawn from distributions shared by all classes.

So a grey-level histogram and a linear classifier on pixels are near chance
(:mod:`pipeline.classifier.baselines`), while a network that learns spatial structure can solve it.
1/f^alpha noise with power exponent alpha near 2 has the second-order statistics of natural images.

Shapes are drawn anti-aliased: their polygons are filled at :data:`SUPERSAMPLE` times the resolution
(:func:`skimage.draw.polygon`) and averaged down (:func:`skimage.transform.downscale_local_mean`),
which gives each pixel the fraction of it the shape covers.

**No shared source pixels.**  Every image is generated from its own random stream
(``SeedSequence(seed).spawn`` per split, then per class, then per image) and uses no photograph:
backgrounds and textures are synthesised from that stream's white noise.  So no two images, within
a split or across train / validation / test, share source pixels, and none shares pixels with the
neural stimuli, which are patches of the photographs in :mod:`pipeline.data.images`.  Because image
``j`` of class ``c`` depends only on ``(seed, split, c, j)``, the result is bit-identical for a seed,
and changing the size of one split changes no image of another.

Measured at the default sizes (1,000 train, 200 validation, 200 test images per class, seed 0), on
one shared CPU core: generation about 9 s; test accuracy of the grey-level histogram baseline 0.10
and of the linear-pixel baseline 0.10 (seed 1: 0.10 and 0.13; chance 0.1); ResNet18 of width 16
(SGD, lr 0.1 decayed by 0.3 every 4 epochs, crop and flip augmentation) 0.50 after 4 epochs, 0.86
after 8 and 0.95 after 12.  The ResNet stays near chance for its first 2-3 epochs (about 300-450
steps of 64 images) before it takes off.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from skimage.draw import ellipse, polygon
from skimage.measure import moments
from skimage.transform import downscale_local_mean

from pipeline.data.cifar import IMAGE_SIDE, ClassificationSet

SPLITS = ("train", "validation", "test")
SUPERSAMPLE = 4  # shapes are filled at 4x the resolution, then area-averaged down
AREA_RANGE = (90.0, 220.0)  # target shape area in pixels (of 1024), log-uniform, all classes
INSIDE = 0.75  # the centroid keeps this fraction of the shape's radius from the image border
MEAN_LEVEL_RANGE = (80.0, 176.0)  # grey level midway between foreground and background means
CONTRAST_RANGE = (30.0, 80.0)  # |foreground mean - background mean|, grey levels; sign at random
BACKGROUND_SD_RANGE = (6.0, 24.0)  # standard deviation of the background texture, grey levels
FOREGROUND_SD_RANGE = (3.0, 15.0)  # standard deviation of the shape's texture, grey levels
SLOPE_RANGE = (1.5, 3.0)  # power-spectrum exponent alpha of the textures (natural images: about 2)
ANISOTROPY_RANGE = (0.0, 0.6)  # amplitude modulation 1 + k cos(2 (theta - theta0)) of the textures


@dataclasses.dataclass(frozen=True)
class Polygon:
    """A polygon part of a shape: vertices (K, 2) as (x, y) in shape units."""

    vertices: np.ndarray
    filled: bool = True


@dataclasses.dataclass(frozen=True)
class Ellipse:
    """An ellipse part of a shape: centre (x, y) and semi-axes along x and y, in shape units.

    Round parts are ellipses rather than many-sided polygons because :func:`skimage.draw.ellipse` fills
    one about ten times faster than :func:`skimage.draw.polygon` fills a 32-gon."""

    center: tuple[float, float]
    radii: tuple[float, float]
    filled: bool = True


# A shape is a list of parts; a filled part is added to the parts before it, one not filled is cut out.
Part = Polygon | Ellipse


def _star(points: int, inner: float) -> np.ndarray:
    """Vertices (2 * points, 2) of a star, alternating radius 1 and ``inner``."""
    t = np.pi * np.arange(2 * points) / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _regular(n: int) -> np.ndarray:
    """Vertices (n, 2) of a regular n-gon of circumradius 1."""
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


SHAPES: dict[str, list[Part]] = {
    "disk": [Ellipse((0, 0), (1, 1))],
    "ring": [Ellipse((0, 0), (1, 1)), Ellipse((0, 0), (0.6, 0.6), filled=False)],
    "triangle": [Polygon(_regular(3))],
    "square": [Polygon(_regular(4))],
    "cross": [Polygon(np.array([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)])),
              Polygon(np.array([(-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1)]))],
    "star": [Polygon(_star(5, 0.42))],
    "L": [Polygon(np.array([(0, 0), (0.35, 0), (0.35, 0.85), (0.8, 0.85), (0.8, 1.2), (0, 1.2)]))],
    "T": [Polygon(np.array([(-0.6, 0), (0.6, 0), (0.6, 0.33), (0.17, 0.33), (0.17, 1.1), (-0.17, 1.1),
                            (-0.17, 0.33), (-0.6, 0.33)]))],
    "crescent": [Ellipse((0, 0), (1, 1)), Ellipse((0.45, 0), (0.85, 0.85), filled=False)],
    "bar": [Ellipse((0, 0), (1, 0.3))],
}  # fmt: skip
SHAPE_NAMES = tuple(SHAPES)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Maps shape units to a mask's pixel coordinates (x, y): scaled by ``scale`` pixels per unit,
    rotated by ``angle`` radians about ``origin`` (x, y in shape units), which lands at ``at``."""

    scale: float
    angle: float
    origin: tuple[float, float]
    at: tuple[float, float]

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Points (K, 2) in shape units -> (K, 2) mask pixel coordinates."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        rotation = np.array([[c, -s], [s, c]])
        return np.asarray(self.at) + self.scale * (np.asarray(xy, dtype=float) - self.origin) @ rotation.T


def fill(name: str, placement: Placement, side: int) -> np.ndarray:
    """Boolean mask (side, side) of shape ``name`` placed by ``placement``: a pixel is set where its
    centre lies inside."""
    mask = np.zeros((side, side), dtype=bool)
    for part in SHAPES[name]:
        if isinstance(part, Polygon):
            xy = placement.apply(part.vertices)
            rr, cc = polygon(xy[:, 1], xy[:, 0], mask.shape)
        else:
            (x, y), (rx, ry) = placement.apply(np.array([part.center]))[0], part.radii
            # skimage's rotation turns the (row, col) axes the other way round from ours (x, y)
            rr, cc = ellipse(y, x, placement.scale * ry, placement.scale * rx, mask.shape, rotation=-placement.angle)
        mask[rr, cc] = part.filled
    return mask


@dataclasses.dataclass(frozen=True)
class ShapeGeometry:
    """Area, centroid (x, y) and radius (largest distance of the shape from its centroid), in shape units."""

    area: float
    centroid: tuple[float, float]
    radius: float


GEOMETRY_SIDE, GEOMETRY_EXTENT = 1024, 1.6  # the mask that measures a shape: 1024 px over [-1.6, 1.6]


@functools.lru_cache(maxsize=None)
def shape_geometry(name: str) -> ShapeGeometry:
    """Geometry of shape ``name``, measured on a fine mask (0.003 shape units per pixel), which handles
    overlapping parts and cut-outs alike."""
    unit = 2 * GEOMETRY_EXTENT / GEOMETRY_SIDE  # shape units per pixel
    centre = GEOMETRY_EXTENT / unit - 0.5
    mask = fill(name, Placement(1 / unit, 0.0, (0.0, 0.0), (centre, centre)), GEOMETRY_SIDE)
    m = moments(mask, order=1)
    row, col = m[1, 0] / m[0, 0], m[0, 1] / m[0, 0]
    rr, cc = np.nonzero(mask)
    radius = np.hypot(rr - row, cc - col).max() + 0.5
    centroid = ((col - centre) * unit, (row - centre) * unit)
    return ShapeGeometry(float(m[0, 0] * unit**2), centroid, float(radius * unit))


def rasterise(name: str, scale: float, angle: float, center: tuple[float, float]) -> np.ndarray:
    """Boolean mask (32 * SUPERSAMPLE, 32 * SUPERSAMPLE) of shape ``name`` scaled by ``scale`` pixels per
    shape unit, rotated by ``angle`` radians about its centroid, its centroid at ``center`` (x, y) in
    image pixels (pixel centres at 0..31)."""
    # the image's pixel edge -0.5 is the fine grid's edge -0.5
    at = (SUPERSAMPLE * (center[0] + 0.5) - 0.5, SUPERSAMPLE * (center[1] + 0.5) - 0.5)
    placement = Placement(SUPERSAMPLE * scale, angle, shape_geometry(name).centroid, at)
    return fill(name, placement, IMAGE_SIDE * SUPERSAMPLE)


def pink_noise(white: np.ndarray, slope: np.ndarray, anisotropy: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Textures (n, H, W) of zero mean and unit standard deviation with power spectrum
    ``(1 + k cos(2 (theta - theta0)))**2 / f**alpha``, shaped from white noise (n, H, W).

    slope : (n,) alpha; anisotropy : (n,) k in [0, 1); orientation : (n,) theta0 in radians.
    """
    _, h, w = white.shape
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0  # the mean is removed below; avoids 0 ** -alpha
    theta = np.arctan2(fy, fx)
    amplitude = f ** (-slope[:, None, None] / 2)
    amplitude *= 1 + anisotropy[:, None, None] * np.cos(2 * (theta - orientation[:, None, None]))
    amplitude[:, 0, 0] = 0.0
    texture = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(h, w))
    return texture / texture.std(axis=(1, 2), keepdims=True)


N_DRAWS = 15  # uniform numbers each image draws, after its two white-noise fields


@dataclasses.dataclass
class Scenes:
    """The random draws of n images of one class: white noise (n, 2, 32, 32) for the background and
    foreground textures, and ``uniform`` (n, N_DRAWS) in [0, 1), mapped to parameters by :func:`render`.

    Columns of ``uniform``: 0-3 the shape (log-area, rotation, centroid x, centroid y); then, background
    first, foreground second: 4-5 spectral slope, 6-7 anisotropy, 8-9 orientation of the anisotropy;
    10 polarity, 11 contrast, 12 mean level, 13-14 texture standard deviation."""

    white: np.ndarray
    uniform: np.ndarray


def draw_scenes(seeds: list[np.random.SeedSequence]) -> Scenes:
    """Each image's draws from its own stream ``default_rng(seeds[i])``, in a fixed order."""
    white = np.empty((len(seeds), 2, IMAGE_SIDE, IMAGE_SIDE))
    uniform = np.empty((len(seeds), N_DRAWS))
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        white[i] = rng.standard_normal((2, IMAGE_SIDE, IMAGE_SIDE))
        uniform[i] = rng.random(N_DRAWS)
    return Scenes(white, uniform)


def _between(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return bounds[0] + u * (bounds[1] - bounds[0])


def shape_masks(name: str, uniform: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (n, 32, 32) in [0, 1] of ``name`` for the shape draws (n, 4) in [0, 1):
    log-area, rotation, centroid x and y."""
    geometry = shape_geometry(name)
    area = np.exp(_between(uniform[:, 0], (np.log(AREA_RANGE[0]), np.log(AREA_RANGE[1]))))
    scale = np.sqrt(area / geometry.area)  # pixels per shape unit
    margin = np.minimum(INSIDE * scale * geometry.radius, IMAGE_SIDE / 2)
    low, high = margin - 0.5, IMAGE_SIDE - 0.5 - margin
    cx, cy = low + uniform[:, 2] * (high - low), low + uniform[:, 3] * (high - low)
    fine = np.stack(
        [rasterise(name, s, 2 * np.pi * a, (x, y)) for s, a, x, y in zip(scale, uniform[:, 1], cx, cy)]
    ).reshape(-1, IMAGE_SIDE * SUPERSAMPLE, IMAGE_SIDE * SUPERSAMPLE)
    return downscale_local_mean(fine, (1, SUPERSAMPLE, SUPERSAMPLE))


def render(name: str, scenes: Scenes) -> np.ndarray:
    """Images (n, 32, 32) uint8 of shape ``name`` from the draws ``scenes`` (columns: see :class:`Scenes`)."""
    u = scenes.uniform
    coverage = shape_masks(name, u[:, :4])
    sign = np.where(u[:, 10] < 0.5, -1.0, 1.0)  # dark or bright shape
    half_contrast = sign * _between(u[:, 11], CONTRAST_RANGE) / 2
    mean = _between(u[:, 12], MEAN_LEVEL_RANGE)
    layers = []  # background, then foreground: (n, 32, 32) grey levels
    for k, (offset, sd_range) in enumerate(
        ((-half_contrast, BACKGROUND_SD_RANGE), (half_contrast, FOREGROUND_SD_RANGE))
    ):
        texture = pink_noise(
            scenes.white[:, k],
            _between(u[:, 4 + k], SLOPE_RANGE),
            _between(u[:, 6 + k], ANISOTROPY_RANGE),
            np.pi * u[:, 8 + k],
        )
        layers.append((mean + offset)[:, None, None] + _between(u[:, 13 + k], sd_range)[:, None, None] * texture)
    background, foreground = layers
    image = background + coverage * (foreground - background)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def shapes_split(seed: np.random.SeedSequence, n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """One split: images (10 * n_per_class, 32, 32) uint8 grouped by class (class 0 first) and labels
    (10 * n_per_class,) int64.  Class ``c`` uses the ``c``-th child of ``seed``, image ``j`` its ``j``-th."""
    images, labels = [], []
    for label, (name, class_seed) in enumerate(zip(SHAPE_NAMES, seed.spawn(len(SHAPE_NAMES)))):
        images.append(render(name, draw_scenes(class_seed.spawn(n_per_class))))
        labels.append(np.full(n_per_class, label, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def shapes_classification_set(
    n_train_per_class: int = 1000, n_validation_per_class: int = 200, n_test_per_class: int = 200, seed: int = 0
) -> ClassificationSet:
    """The shapes task (see the module docstring) with train, validation and test splits, each from
    its own child of ``SeedSequence(seed)``.  Deterministic: bit-identical for the same arguments."""
    sizes = (n_train_per_class, n_validation_per_class, n_test_per_class)
    if min(sizes) < 1:
        raise ValueError(f"every split needs at least 1 image per class, got {dict(zip(SPLITS, sizes))}")
    splits = [shapes_split(s, n) for s, n in zip(np.random.SeedSequence(seed).spawn(len(SPLITS)), sizes)]
    (train, train_labels), (validation, validation_labels), (test, test_labels) = splits
    return ClassificationSet(
        train_images=train,
        train_labels=train_labels,
        test_images=test,
        test_labels=test_labels,
        class_names=SHAPE_NAMES,
        source=f"shapes:seed={seed}:train={n_train_per_class}:val={n_validation_per_class}:test={n_test_per_class}",
        validation_images=validation,
        validation_labels=validation_labels,
    )
