"""Instance labels of a plane too large to label at once: block by block, ids merged across blocks.

Each block is labelled from the probabilities of the block plus a ``halo`` of context on every
side (the model's post-processing, see :func:`napari_unet.postprocess.labels_from_model_output`),
and only its core is kept. Ids are then merged across block faces: every block also reports
the labels it sees in a thin ``strip`` just beyond each face (its halo) and just inside it (its
core); labels that cover the same pixels there are joined in a graph, its connected components
become the objects, and a relabel map per block gives sequential ids, unique over the plane.
``min_size`` is applied to the merged objects (their size over all blocks), never per block.

How exact this is (tests/test_blockwise.py):

* **threshold + connected components** (optionally ``smooth`` and ``min_size``): equal to the
  in-memory result up to renumbering, with a one-to-one id correspondence, as long as the halo
  covers the smoothing kernel (the default does). Every label that overlaps another across a
  face is joined, which is the connected-component merge of dask-image.
* ``fill_holes``: holes are filled within each block's window, so a hole that crosses a block
  edge and reaches farther than the halo is not filled (the in-memory pass would fill it).
* **seeded watershed** (``seed_threshold``, three-class models): two touching cells that the
  watershed splits must not be joined, so each label is joined only to the label it overlaps
  most on the other side of the face (both directions). Equal to the in-memory result when
  each object and the seeds it competes with lie within the halo of the face; larger objects
  can be split or cut differently near a block edge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["OUT_OF_CORE_PIXELS", "is_out_of_core", "BlockPlan", "postprocessing_params", "uses_watershed", "default_halo", "label_window",
           "block_summary", "merge_blocks", "label_blockwise"]

SIDES = ("top", "bottom", "left", "right")
#: width in pixels of the strips compared across a block face
STRIP = 8


@dataclass(frozen=True)
class BlockPlan:
    """A regular grid of ``block``-sized cores over an ``H x W`` plane, each labelled from a
    window of its core grown by ``halo`` (clipped at the plane's border)."""

    shape: tuple[int, int]
    block: tuple[int, int]
    halo: int
    strip: int = STRIP

    def __post_init__(self):
        if self.halo < self.strip:
            raise ValueError(f"the halo ({self.halo}) must be at least the strip width ({self.strip})")

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.shape[0] // self.block[0]), -(-self.shape[1] // self.block[1])

    def __len__(self) -> int:
        return self.grid[0] * self.grid[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                yield i, j

    def core(self, i: int, j: int) -> tuple[int, int, int, int]:
        by, bx = self.block
        H, W = self.shape
        return i * by, min(H, (i + 1) * by), j * bx, min(W, (j + 1) * bx)

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        y0, y1, x0, x1 = self.core(i, j)
        h = self.halo
        return max(0, y0 - h), min(self.shape[0], y1 + h), max(0, x0 - h), min(self.shape[1], x1 + h)


def postprocessing_params(model, **overrides) -> dict:
    """The model's post-processing defaults with ``overrides`` (None keeps the model's value),
    as :func:`~napari_unet.postprocess.labels_from_model_output` uses them (other names are ignored)."""
    known = model.postprocessing.fields()
    return model.postprocessing.replace(**{k: v for k, v in overrides.items() if k in known}).to_dict()


def uses_watershed(model, params: dict) -> bool:
    """Whether the post-processing splits touching objects (seeded watershed)."""
    if model.config.n_classes == 3:
        return True
    s = params.get("seed_threshold")
    return s is not None and s > params.get("threshold", 0.5)


def default_halo(params: dict) -> int:
    """Context for each block: the smoothing kernel's reach (scipy truncates at 4 sigma) plus
    64 pixels for holes and watershed competition near a block edge."""
    smooth = float(params.get("smooth") or 0.0)
    return int(4.0 * smooth + 0.5) + 64


def label_window(probabilities: np.ndarray, model, params: dict) -> np.ndarray:
    """Labels ``(h, w)`` uint32 of one window's class probabilities ``(K, h, w)`` with the
    model's post-processing, ``min_size`` left for after the merge."""
    from .postprocess import labels_from_classes

    p = dict(params)
    p["min_size"] = 0
    probs = np.asarray(probabilities, dtype=np.float32)
    return labels_from_classes(probs, model.foreground_class, **p).astype(np.uint32)


def block_summary(window_labels: np.ndarray, plan: BlockPlan, i: int, j: int):
    """Split one window's labels into the block's core labels and what the merge needs: the
    number of labels ``n``, the core size of each (``sizes``, index 0 = background) and, for
    each face with a neighbour, the labels just beyond (``out_<side>``) and just inside it
    (``in_<side>``)."""
    cy0, cy1, cx0, cx1 = plan.core(i, j)
    wy0, _, wx0, _ = plan.window(i, j)
    ya, yb, xa, xb = cy0 - wy0, cy1 - wy0, cx0 - wx0, cx1 - wx0
    lab = window_labels
    core = np.ascontiguousarray(lab[ya:yb, xa:xb])
    n = int(lab.max()) if lab.size else 0
    s = plan.strip
    gi, gj = plan.grid
    summary = {"n": np.int64(n), "sizes": np.bincount(core.ravel(), minlength=n + 1).astype(np.int64)}
    if i > 0:
        summary["out_top"], summary["in_top"] = lab[ya - s:ya, xa:xb], core[:s]
    if i < gi - 1:
        summary["out_bottom"], summary["in_bottom"] = lab[yb:yb + s, xa:xb], core[-s:]
    if j > 0:
        summary["out_left"], summary["in_left"] = lab[ya:yb, xa - s:xa], core[:, :s]
    if j < gj - 1:
        summary["out_right"], summary["in_right"] = lab[ya:yb, xb:xb + s], core[:, -s:]
    summary = {k: np.ascontiguousarray(v) if k != "n" else np.asarray(v) for k, v in summary.items()}
    return core, summary


def _pairs(x: np.ndarray, y: np.ndarray, best_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Label pairs covering the same pixels; with ``best_only`` each x label keeps only the y
    label it overlaps most."""
    if x.shape != y.shape:
        raise ValueError(f"strips of different shapes {x.shape} and {y.shape}: blocks do not line up")
    m = (x > 0) & (y > 0)
    a = x[m].astype(np.int64)
    b = y[m].astype(np.int64)
    if a.size == 0:
        return a, b
    key = a * (int(b.max()) + 1) + b
    uniq, counts = np.unique(key, return_counts=True)
    ua, ub = uniq // (int(b.max()) + 1), uniq % (int(b.max()) + 1)
    if not best_only:
        return ua, ub
    order = np.lexsort((-counts, ua))  # by x label, most overlap first
    ua, ub = ua[order], ub[order]
    first = np.r_[True, ua[1:] != ua[:-1]]
    return ua[first], ub[first]


def merge_blocks(plan: BlockPlan, summaries: dict, *, min_size: int = 0, best_match: bool = False):
    """Relabel maps that give every object one id over the plane.

    Parameters
    ----------
    summaries : dict
        ``(i, j) -> summary`` from :func:`block_summary` for every block of ``plan``.
    min_size : int
        Objects with fewer pixels in total are removed (mapped to 0).
    best_match : bool
        Join each label only to the label it overlaps most across a face (seeded watershed),
        instead of to every label it overlaps (connected components).

    Returns
    -------
    luts : dict
        ``(i, j) -> int64 array`` mapping the block's core labels to final ids (0 stays 0).
    n_objects : int
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets = {}
    total = 1  # node 0 is the background
    for b in plan:
        offsets[b] = total
        total += int(summaries[b]["n"])
    sizes = np.zeros(total, np.int64)
    for b in plan:
        s = summaries[b]["sizes"]
        sizes[offsets[b]:offsets[b] + len(s) - 1] = s[1:]
    ea, eb = [], []

    def link(A, B, out_key, in_key, out_b, in_b):
        a, b = _pairs(summaries[A][out_key], summaries[B][in_key], best_match)
        ea.append(a + offsets[out_b] - 1)
        eb.append(b + offsets[in_b] - 1)

    gi, gj = plan.grid
    for i, j in plan:
        if i < gi - 1:
            link((i, j), (i + 1, j), "out_bottom", "in_top", (i, j), (i + 1, j))
            link((i + 1, j), (i, j), "out_top", "in_bottom", (i + 1, j), (i, j))
        if j < gj - 1:
            link((i, j), (i, j + 1), "out_right", "in_left", (i, j), (i, j + 1))
            link((i, j + 1), (i, j), "out_left", "in_right", (i, j + 1), (i, j))
    a = np.concatenate(ea) if ea else np.zeros(0, np.int64)
    b = np.concatenate(eb) if eb else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=sizes, minlength=comp.max() + 1)
    keep = comp_size >= max(1, int(min_size or 0))
    keep[comp[0]] = False
    # ids in order of first appearance in block order
    final = np.zeros(comp.max() + 1, np.int64)
    comps, first = np.unique(comp[1:], return_index=True)
    order = comps[np.argsort(first)]
    order = order[keep[order]]
    final[order] = np.arange(1, len(order) + 1)
    luts = {}
    for blk in plan:
        n = int(summaries[blk]["n"])
        lut = np.zeros(n + 1, np.int64)
        lut[1:] = final[comp[offsets[blk]:offsets[blk] + n]]
        luts[blk] = lut
    return luts, len(order)


def label_blockwise(
    probabilities,
    model,
    *,
    block: int = 2048,
    halo: int | None = None,
    out: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    **overrides,
) -> np.ndarray:
    """Instance labels of one plane from its class probabilities ``(K, H, W)``, block by block,
    so that memory holds the output and one block's window, never a whole-plane temporary.

    Parameters
    ----------
    probabilities : array-like, shape (K, H, W)
        numpy, memmap, zarr or dask; read one window at a time.
    block : int
        Core edge of a block in pixels.
    halo : int, optional
        Context each side of a block (default :func:`default_halo`).
    out : array, optional
        ``(H, W)`` uint32 output (e.g. a memmap or zarr array); allocated if None.
    progress : callable, optional
        ``progress(done, total)`` after every block.
    cancel : threading.Event or callable, optional
        Checked before every block (raises :class:`~napari_unet.tiling.Cancelled`).
    **overrides
        ``threshold``, ``seed_threshold``, ``min_size``, ``smooth``, ``fill_holes`` (None keeps
        the model's).

    Returns
    -------
    labels : uint32 array ``(H, W)`` (``out`` when given), ids 1..n unique over the plane.
    """
    from .tiling import check_cancel

    K, H, W = probabilities.shape
    params = postprocessing_params(model, **overrides)
    plan = BlockPlan((int(H), int(W)), (int(block), int(block)), default_halo(params) if halo is None else int(halo))
    if out is None:
        out = np.zeros((H, W), np.uint32)
    summaries = {}
    for done, (i, j) in enumerate(plan, 1):
        check_cancel(cancel)
        wy0, wy1, wx0, wx1 = plan.window(i, j)
        lab = label_window(np.asarray(probabilities[:, wy0:wy1, wx0:wx1]), model, params)
        core, summaries[(i, j)] = block_summary(lab, plan, i, j)
        y0, y1, x0, x1 = plan.core(i, j)
        out[y0:y1, x0:x1] = core
        if progress is not None:
            progress(done, len(plan))
    luts, _ = merge_blocks(plan, summaries, min_size=params["min_size"], best_match=uses_watershed(model, params))
    for i, j in plan:
        y0, y1, x0, x1 = plan.core(i, j)
        out[y0:y1, x0:x1] = luts[(i, j)][np.asarray(out[y0:y1, x0:x1])].astype(np.uint32)
    return out


#: a lazy (dask/zarr) layer with more pixels per plane than this is segmented out of core
OUT_OF_CORE_PIXELS = 64 * 2**20


def is_out_of_core(data, multiscale: bool = False) -> bool:
    """Whether a napari layer's ``data`` should be segmented block-wise to zarr: a multiscale
    layer, or a lazy (dask, zarr) array with more than :data:`OUT_OF_CORE_PIXELS` pixels per plane."""
    if multiscale or isinstance(data, (list, tuple)):
        return True
    if isinstance(data, np.ndarray):
        return False
    return int(data.shape[-1]) * int(data.shape[-2]) > OUT_OF_CORE_PIXELS
