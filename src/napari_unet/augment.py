"""Data augmentation for U-Net training (numpy in, numpy out, reproducible).

Every random function takes an explicit ``numpy.random.Generator`` (``rng``): the same
seed gives the same result. Images are (H, W) or (C, H, W); labels and weights are
(H, W) and always move with the image. Geometric warps resample the image with cubic
splines (order 3) and labels/weights with nearest neighbour (order 0), so labels keep
integer values from the original set (label convention: 0 = not annotated,
1 = background, >= 2 = cells). Borders are filled by mirroring (no new values appear).

The elastic deformation follows the U-Net paper: random displacement vectors on a coarse
3 x 3 grid, drawn from a Gaussian with 10 px standard deviation, interpolated to every
pixel with bicubic (cubic spline) interpolation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .tiling import reflect_index

__all__ = [
    "elastic_displacement",
    "affine_displacement",
    "warp",
    "elastic_deform",
    "random_flip_rot",
    "grey_value",
    "microscope",
    "degraded",
    "unseen_microscope",
    "rescale",
    "augment",
]


def _spatial_shape(image: np.ndarray) -> tuple[int, int]:
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    return image.shape[-2:]


def _check_arrays(shape, arrays):
    for a in arrays:
        if np.shape(a) != tuple(shape):
            raise ValueError(f"label/weight arrays must have shape {tuple(shape)}, got {np.shape(a)}")


def _cubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix interpolating n_in evenly spread nodes (first/last on the
    first/last pixel) to n_out pixels with a cubic spline."""
    if n_in == 1:
        return np.ones((n_out, 1))
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    mat = np.empty((n_out, n_in))
    for k in range(n_in):
        e = np.zeros(n_in)
        e[k] = 1.0
        mat[:, k] = ndi.map_coordinates(e, pos[None], order=min(3, n_in - 1), mode="mirror")
    return mat


def elastic_displacement(shape, rng: np.random.Generator, grid: int = 3, sigma: float = 10.0) -> np.ndarray:
    """Dense random displacement field, float64 (2, H, W), in pixels.

    Vectors with standard deviation ``sigma`` (pixels) on a ``grid`` x ``grid`` coarse grid
    spanning the image, interpolated to every pixel with a cubic spline.
    """
    h, w = (int(s) for s in shape)
    if grid < 2:
        raise ValueError("grid must be >= 2")
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid)) if sigma > 0 else np.zeros((2, grid, grid))
    my = _cubic_matrix(h, grid)
    mx = _cubic_matrix(w, grid)
    return np.stack([my @ coarse[i] @ mx.T for i in range(2)])


def affine_displacement(
    shape, rng: np.random.Generator, max_rotation: float = 0.0, max_shift: float = 0.0, max_scale: float = 0.0
) -> np.ndarray:
    """Displacement field (2, H, W), pixels, of a random rotation/scale about the centre and shift.

    Angle uniform in [-max_rotation, max_rotation] degrees, shift uniform in
    [-max_shift, max_shift] pixels per axis, scale uniform in [1 - max_scale, 1 + max_scale].
    """
    h, w = (int(s) for s in shape)
    angle = math.radians(rng.uniform(-max_rotation, max_rotation)) if max_rotation else 0.0
    shift = rng.uniform(-max_shift, max_shift, size=2) if max_shift else np.zeros(2)
    scale = rng.uniform(1.0 - max_scale, 1.0 + max_scale) if max_scale else 1.0
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    src_y = c * yy - s * xx + shift[0]
    src_x = s * yy + c * xx + shift[1]
    return np.stack([src_y - yy, src_x - xx])


def warp(image, *arrays_nearest, displacement, order: int = 3, mode: str = "mirror"):
    """Resample ``image`` and ``arrays_nearest`` at ``pixel + displacement``.

    ``displacement``: (2, H, W) in pixels. ``image`` (H, W) or (C, H, W) -> float32,
    interpolated with spline ``order``; each array (H, W) is resampled with nearest
    neighbour and keeps its dtype. Returns ``image`` alone, or a tuple
    ``(image, *arrays)`` when arrays are given.
    """
    image = np.asarray(image)
    shape = _spatial_shape(image)
    _check_arrays(shape, arrays_nearest)
    displacement = np.asarray(displacement)
    if displacement.shape != (2, *shape):
        raise ValueError(f"displacement must have shape {(2, *shape)}, got {displacement.shape}")
    grid = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    coords = grid + displacement
    img = image.astype(np.float32, copy=False)
    if img.ndim == 2:
        out = ndi.map_coordinates(img, coords, order=order, mode=mode, output=np.float32)
    else:
        out = np.stack(
            [ndi.map_coordinates(ch, coords, order=order, mode=mode, output=np.float32) for ch in img]
        )
    if not arrays_nearest:
        return out
    # nearest neighbour by rounding, mirrored into the image, exact for any dtype
    iy = reflect_index(np.rint(coords[0]).astype(np.int64), shape[0])
    ix = reflect_index(np.rint(coords[1]).astype(np.int64), shape[1])
    rest = tuple(np.asarray(a)[iy, ix] for a in arrays_nearest)
    return (out, *rest)


def elastic_deform(image, *arrays_nearest, rng: np.random.Generator, grid: int = 3, sigma: float = 10.0, order: int = 3):
    """Random elastic deformation of the U-Net paper.

    Displacements with std ``sigma`` pixels on a ``grid`` x ``grid`` grid, cubic-spline
    interpolated to every pixel; ``image`` (H, W) or (C, H, W) warped with spline
    ``order`` (float32 output), each array (H, W) of ``arrays_nearest`` (labels,
    weights) with nearest neighbour (dtype kept); mirrored borders. Returns the image,
    or ``(image, *arrays)``.
    """
    image = np.asarray(image)
    disp = elastic_displacement(_spatial_shape(image), rng, grid=grid, sigma=sigma)
    return warp(image, *arrays_nearest, displacement=disp, order=order)


def random_flip_rot(image, *arrays, rng: np.random.Generator):
    """Same random multiple-of-90-degree rotation and optional flip on the image and arrays.

    Exact (no interpolation). Works on the last two axes; square images keep their shape,
    others may get H and W swapped. Returns ``(image, *arrays)`` (contiguous copies).
    """
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))

    def f(a):
        a = np.rot90(np.asarray(a), k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        return np.ascontiguousarray(a)

    return (f(image), *(f(a) for a in arrays))


def grey_value(
    image,
    rng: np.random.Generator,
    gamma: float = 0.2,
    contrast: float = 0.2,
    brightness: float = 0.1,
    noise: float = 0.0,
) -> np.ndarray:
    """Random intensity change of a normalised float image; float32, same shape.

    With ``r`` the image's intensity range (max - min): gamma exponent
    ``exp(U(-gamma, gamma))`` applied on the image rescaled to [0, 1] (then scaled back),
    contrast factor ``1 + U(-contrast, contrast)`` about the mean, offset
    ``U(-brightness, brightness) * r``, Gaussian noise of std ``noise * r``.
    """
    img = np.asarray(image, dtype=np.float32)
    g = math.exp(rng.uniform(-gamma, gamma)) if gamma else 1.0
    c = 1.0 + rng.uniform(-contrast, contrast) if contrast else 1.0
    b = rng.uniform(-brightness, brightness) if brightness else 0.0
    lo, hi = float(img.min()), float(img.max())
    r = hi - lo
    if r <= 0:
        return img.copy()
    out = (img - lo) / r
    out = np.power(out, g, dtype=np.float32)
    out = lo + r * out
    mean = float(out.mean())
    out = mean + c * (out - mean) + b * r
    if noise:
        out = out + rng.normal(0.0, noise * r, size=out.shape).astype(np.float32)
    return out.astype(np.float32, copy=False)


def _smooth_field(shape, rng: np.random.Generator, grid: int, std: float) -> np.ndarray:
    """A smooth random field (H, W): normal values on a coarse grid, cubic-interpolated."""
    coarse = rng.normal(0.0, std, size=(grid, grid))
    return (_cubic_matrix(shape[0], grid) @ coarse @ _cubic_matrix(shape[1], grid).T).astype(np.float32)


def microscope(
    image,
    rng: np.random.Generator,
    *,
    background=None,
    contrast_range: tuple[float, float] = (0.03, 1.0),
    uneven: float = 0.5,
    object_brightness: float = 0.7,
    debris: float = 1.5,
    gamma: float = 0.5,
    blur: float = 1.5,
    noise: float = 0.06,
    percentiles: tuple[float, float] | None = (1.0, 99.8),
    instrument: np.random.Generator | None = None,
) -> np.ndarray:
    """What real microscopes do to a normalised float image (C, H, W) or (H, W); float32.

    In this order, each with random strength: objects dimmed or brightened by a smooth field
    (dim and bright cells in one image, ``object_brightness`` = std of the log factor); the
    whole signal's contrast scaled by a factor log-uniform in ``contrast_range`` (down to a
    few percent of the range); a smooth uneven background of up to ``uneven`` times the
    original range; bright out-of-focus blobs (debris: a Poisson number with mean ``debris``
    of Gaussian blobs 6-30 px wide, up to 20 times as bright as the cells, centred on
    ``background`` pixels when that bool mask (H, W) is given); gamma ``exp(U(-gamma,
    gamma))``; Gaussian blur of up to ``blur`` px; Gaussian noise of up to ``noise`` times the
    range. Then, with ``percentiles``, the tile is normalised again from its own percentiles,
    as inference normalises a whole image, so that debris dominates the range as it would.

    ``instrument``, when given, draws what belongs to the microscope rather than to the field
    of view (contrast, the uneven background, gamma, blur, noise level); a generator seeded
    alike for every image gives images of one microscope. ``rng`` draws the rest (which
    objects are dim, the debris).
    """
    inst = rng if instrument is None else instrument
    img = np.asarray(image, dtype=np.float32)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[None]
    h, w = img.shape[-2:]
    lo = float(np.percentile(img, 1.0))
    out = img - lo
    rng_ = float(np.percentile(out, 99.8)) or 1.0
    if object_brightness:
        out = out * np.exp(_smooth_field((h, w), rng, 4, object_brightness))
    c = math.exp(inst.uniform(math.log(contrast_range[0]), math.log(contrast_range[1])))
    out = out * c
    if uneven:
        field = _smooth_field((h, w), inst, 3, 1.0)
        field -= field.min()
        out = out + inst.uniform(0, uneven) * rng_ * field / max(float(field.max()), 1e-6)
    n_blobs = rng.poisson(debris) if debris else 0
    if n_blobs:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cand = np.flatnonzero(background.ravel()) if background is not None and np.any(background) else None
        for _ in range(n_blobs):
            if cand is not None:
                cy, cx = divmod(int(cand[rng.integers(cand.size)]), w)
            else:
                cy, cx = int(rng.integers(h)), int(rng.integers(w))
            sig = rng.uniform(6.0, 30.0)
            amp = math.exp(rng.uniform(0.0, math.log(20.0))) * rng_ * c
            out = out + amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig * sig))
    if gamma:
        top = max(float(out.max()), 1e-6)
        out = top * np.power(np.clip(out / top, 0, None), math.exp(inst.uniform(-gamma, gamma)), dtype=np.float32)
    if blur and inst.random() < 0.3:
        out = np.stack([ndi.gaussian_filter(ch, inst.uniform(0.5, blur)) for ch in out])
    if noise:
        span = float(np.percentile(out, 99.8) - np.percentile(out, 1.0)) or 1.0
        out = out + rng.normal(0.0, inst.uniform(0, noise) * span, size=out.shape).astype(np.float32)
    if percentiles is not None:
        a, b = np.percentile(out, percentiles)
        out = (out - a) / (b - a if b > a else 1.0)
    out = out.astype(np.float32, copy=False)
    return out[0] if squeeze else out


def degraded(image, background, seed: int, *, contrast: tuple[float, float] = (0.05, 0.2), debris: float = 4.0,
             instrument_seed: int | None = None):
    """``image`` (H, W) as a poorer widefield microscope would record it, for benchmarks and
    tests: nuclei dimmed to ``contrast`` of the range (dim and bright ones side by side),
    uneven background, bright out-of-focus debris on ``background`` pixels (bool (H, W)),
    noise; uint16. :func:`microscope` with fixed, strong settings and its own ``seed``. With
    ``instrument_seed``, images degraded with the same one come from one microscope (same
    contrast, uneven background and noise level; their own dim nuclei and debris)."""
    x = np.asarray(image, dtype=np.float32)
    x = (x - x.min()) / max(float(np.ptp(x)), 1.0)
    out = microscope(x, np.random.default_rng(seed), background=background, contrast_range=contrast, uneven=0.5,
                     object_brightness=0.5, debris=debris, gamma=0.0, blur=0.0, noise=0.02, percentiles=None,
                     instrument=None if instrument_seed is None else np.random.default_rng(instrument_seed))
    return (np.clip(out, 0, None) * 4000).astype(np.uint16)


def unseen_microscope(image, background, seed: int, instrument_seed: int = 7, *, contrast: float = 0.15,
                      debris: int = 25, defocus: float = 2.0, photons: float = 60.0):
    """``image`` (H, W) as a microscope unlike anything :func:`microscope` trains on would
    record it, for benchmarks and tests: nuclei dim and bright side by side (a smooth field,
    log-std 0.8) at ``contrast`` of the range, ``debris`` compact bright particles of nucleus
    size (4-12 px, 1-6 times the nuclei, textured) on ``background`` pixels (bool (H, W)), the
    whole defocused (Gaussian blur of ``defocus`` px), vignetting with an offset, and shot
    noise (Poisson, ``photons`` counts for a nucleus at full contrast); uint16. Where
    :func:`degraded` stays inside the training augmentation (large smooth debris, Gaussian
    noise), this is outside it: debris the size of a nucleus, blur and shot noise, so the
    built-in model starts low (foreground IoU 0.55-0.60 on HeLa and DSB2018), as on the
    microscope it never saw. ``seed`` draws the field of view (dim nuclei, debris, noise),
    ``instrument_seed`` the microscope (where the vignetting is centred)."""
    rng, inst = np.random.default_rng(seed), np.random.default_rng(instrument_seed)
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x, (1.0, 99.8))
    x = np.clip((x - lo) / max(float(hi - lo), 1e-6), 0, None)
    h, w = x.shape
    coarse = ndi.gaussian_filter(rng.normal(0.0, 1.0, (h // 32 + 2, w // 32 + 2)), 1.0)
    field = ndi.zoom(coarse, (h / coarse.shape[0], w / coarse.shape[1]), order=1)[:h, :w]
    x = x * np.exp(0.8 * field / max(float(field.std()), 1e-6)) * contrast
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cand = np.flatnonzero(np.asarray(background, bool).ravel())
    particles = np.zeros((h, w), np.float32)
    for _ in range(debris if cand.size else 0):
        cy, cx = divmod(int(cand[rng.integers(cand.size)]), w)
        r = rng.uniform(4.0, 12.0)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        amp = rng.uniform(1.0, 6.0) * contrast
        particles += amp * blob * (1 + 0.5 * rng.normal(size=(h, w)).astype(np.float32) * (blob > 0.1))
    x = x + np.clip(particles, 0, None)
    x = ndi.gaussian_filter(x, defocus)
    cy, cx = inst.uniform(0.3, 0.7) * h, inst.uniform(0.3, 0.7) * w
    vignette = np.exp(-2.0 * ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * (h * h + w * w)))
    x = (x + 0.25 * contrast * vignette + 0.05) * (0.5 + 0.5 * vignette)
    counts = rng.poisson(np.clip(x, 0, None) * photons / contrast)
    return np.clip(counts + 100, 0, np.iinfo(np.uint16).max).astype(np.uint16)  # never wraps round


def rescale(image, *arrays_nearest, size: int):
    """Resize ``image`` (C, h, w) to (C, size, size) (linear, anti-aliased when shrinking) and
    each (h, w) array to (size, size) with nearest neighbour (dtype kept)."""
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float32)
    shrink = image.shape[-1] > size
    img = np.stack([resize(ch, (size, size), order=1, anti_aliasing=shrink, preserve_range=True) for ch in image])
    rest = []
    for a in arrays_nearest:
        a = np.asarray(a)
        iy = np.minimum((np.arange(size) + 0.5) * a.shape[0] / size, a.shape[0] - 1).astype(np.int64)
        ix = np.minimum((np.arange(size) + 0.5) * a.shape[1] / size, a.shape[1] - 1).astype(np.int64)
        rest.append(a[iy][:, ix])
    return (img.astype(np.float32), *rest)


def augment(
    image,
    labels,
    weights=None,
    *,
    rng: np.random.Generator,
    flip_rot: bool = True,
    elastic: bool = True,
    grid: int = 3,
    sigma: float = 10.0,
    max_rotation: float = 0.0,
    max_shift: float = 0.0,
    max_scale: float = 0.0,
    intensity: bool = True,
):
    """Composite augmentation used in training.

    ``image`` (H, W) or (C, H, W), ``labels`` (H, W) integer, ``weights`` (H, W) or None.
    Steps: random 90-degree rotation/flip (``flip_rot``; needs H == W to keep shapes,
    else only flips by 180-degree steps are used); one warp combining the elastic
    deformation (``elastic``, ``grid``, ``sigma``) and a random rotation/shift/scale
    (degrees, pixels, fraction); random grey values (``intensity``).
    Returns ``(image float32, labels, weights)`` or ``(image, labels)`` when weights is None;
    shapes unchanged, labels values a subset of the input's.
    """
    image = np.asarray(image)
    shape = _spatial_shape(image)
    labels = np.asarray(labels)
    arrays = [labels] if weights is None else [labels, np.asarray(weights)]
    _check_arrays(shape, arrays)

    if flip_rot:
        if shape[0] == shape[1]:
            image, *arrays = random_flip_rot(image, *arrays, rng=rng)
        else:
            flip_y, flip_x = bool(rng.integers(2)), bool(rng.integers(2))
            sl = (slice(None, None, -1 if flip_y else 1), slice(None, None, -1 if flip_x else 1))
            image = np.ascontiguousarray(image[(...,) + sl])
            arrays = [np.ascontiguousarray(a[sl]) for a in arrays]

    disp = None
    if elastic and sigma > 0:
        disp = elastic_displacement(shape, rng, grid=grid, sigma=sigma)
    if max_rotation or max_shift or max_scale:
        aff = affine_displacement(shape, rng, max_rotation=max_rotation, max_shift=max_shift, max_scale=max_scale)
        disp = aff if disp is None else disp + aff
    if disp is not None:
        image, *arrays = warp(image, *arrays, displacement=disp, order=3)
    else:
        image = image.astype(np.float32)

    if intensity:
        image = grey_value(image, rng)
    return (image, *arrays)
