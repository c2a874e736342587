"""Block-wise labelling with ids merged across blocks equals the in-memory labels."""

import numpy as np
import pytest
from _helpers import tiny_model

from napari_unet.blockwise import BlockPlan, label_blockwise, merge_blocks
from napari_unet.predict import labels_from_model_output


def assert_one_to_one(ref: np.ndarray, got: np.ndarray) -> None:
    """Same foreground and a one-to-one correspondence of ids (equal up to renumbering)."""
    a, b = ref.ravel().astype(np.int64), got.ravel().astype(np.int64)
    assert np.array_equal(a > 0, b > 0), f"{int(((a > 0) != (b > 0)).sum())} pixels differ in foreground"
    pairs = np.unique(np.stack([a, b])[:, a > 0], axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1])), "ids do not correspond one to one"


def blobs_probabilities(shape=(520, 470), n=90, seed=0):
    """Two-class probabilities of overlapping round blobs of many sizes, a long bar across
    every block, noise; touching blobs joined by lower-probability necks."""
    rng = np.random.default_rng(seed)
    H, W = shape
    yy, xx = np.mgrid[:H, :W]
    fg = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(4, 45)
        fg = np.maximum(fg, np.clip(1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2, 0, 1))
    fg[H // 2:H // 2 + 5, :] = np.maximum(fg[H // 2:H // 2 + 5, :], 0.9)
    fg = np.clip(fg + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
    return np.stack([1 - fg, fg])


def crossing(labels: np.ndarray, block: int) -> int:
    """Number of objects that lie in more than one block."""
    H, W = labels.shape
    ids = labels.astype(np.int64)
    blk = (np.arange(H)[:, None] // block) * 1000 + np.arange(W)[None, :] // block
    m = ids > 0
    pairs = np.unique(np.stack([ids[m], blk[m]]), axis=1)
    _, counts = np.unique(pairs[0], return_counts=True)
    return int((counts > 1).sum())


@pytest.mark.parametrize("post,halo", [
    (dict(threshold=0.5), None),
    (dict(threshold=0.5, smooth=2.0, min_size=40), None),
    # holes are filled within each block's window: exact when they fit in the halo (the
    # default 70 misses a large enclosed gap between these blobs; 160 covers it)
    (dict(threshold=0.45, smooth=1.5, fill_holes=True, min_size=10), 160),
    (dict(threshold=0.4, seed_threshold=0.8, smooth=1.0), None),
])
def test_blockwise_labels_equal_in_memory(post, halo):
    probs = blobs_probabilities()
    model = tiny_model()
    model.postprocessing = dict(post)
    ref = labels_from_model_output(probs, model)
    got = label_blockwise(probs, model, block=96, halo=halo)
    assert crossing(ref, 96) >= 10
    assert_one_to_one(ref, got)
    assert got.max() == ref.max() and set(np.unique(got)) == set(range(int(got.max()) + 1))


def test_blockwise_writes_into_a_given_array_and_overrides_post_processing(tmp_path):
    zarr = pytest.importorskip("zarr")
    probs = blobs_probabilities((300, 260), n=40, seed=3)
    model = tiny_model()
    out = zarr.open_array(str(tmp_path / "l.zarr"), mode="w", shape=(300, 260), chunks=(64, 64), dtype="uint32")
    got = label_blockwise(zarr.array(probs), model, block=64, out=out, min_size=50)
    assert got is out
    assert_one_to_one(labels_from_model_output(probs, model, min_size=50), out[:])


def test_merge_joins_a_label_only_to_its_best_match_for_watershed():
    # two cells split by a watershed line that the two blocks place one pixel apart: joined
    # to every overlap they would become one object; to the best match they stay two
    plan = BlockPlan((16, 8), (8, 8), halo=8)
    top = np.zeros((16, 8), np.uint32)  # window of block (0, 0): rows 0..15
    top[:, :4], top[:, 4:] = 1, 2
    bottom = np.zeros((16, 8), np.uint32)  # window of block (1, 0): rows 0..15
    bottom[:, :5], bottom[:, 5:] = 1, 2
    from napari_unet.blockwise import block_summary

    summaries = {(0, 0): block_summary(top, plan, 0, 0)[1], (1, 0): block_summary(bottom, plan, 1, 0)[1]}
    luts, n = merge_blocks(plan, summaries, best_match=True)
    assert n == 2 and luts[(0, 0)][1] == luts[(1, 0)][1] != luts[(0, 0)][2] == luts[(1, 0)][2]
    _, n_all = merge_blocks(plan, summaries, best_match=False)
    assert n_all == 1


def test_real_nuclei_with_the_built_in_model_one_to_one():
    # seeded watershed, hole filling, smoothing and min_size: the built-in model's own settings
    from napari_unet.builtin import builtin_model_path
    from napari_unet.modelfile import load_model
    from napari_unet.predict import predict_probabilities

    if builtin_model_path("fluo-nuclei") is None:
        pytest.skip("built-in model fluo-nuclei is not installed")
    try:
        from napari_unet.samples import sample_image

        image = sample_image("nuclei")
    except (ImportError, KeyError, OSError):
        pytest.skip("no packaged nuclei sample")
    model = load_model("fluo-nuclei")
    probs = predict_probabilities(image, model, device="cpu", scales=[1])  # block-wise: the image as it is
    ref = labels_from_model_output(probs, model)
    got = label_blockwise(probs, model, block=128)
    assert crossing(ref, 128) >= 40
    assert_one_to_one(ref, got)


def test_segment_labels_large_planes_block_by_block_with_the_same_objects(monkeypatch):
    """Issue 7: a plane above postprocess.LARGE_PLANE is labelled block by block; objects crossing
    block faces keep one id, one-to-one with the whole-plane labels."""
    from _helpers import tiny_model

    import napari_unet.blockwise as B
    import napari_unet.postprocess as P

    model = tiny_model()
    model.postprocessing = {"threshold": 0.5, "min_size": 0}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:260]
    fg = np.zeros((300, 260), np.float32)
    for _ in range(40):  # discs, many across the 64-px block faces
        cy, cx, r = rng.integers(0, 300), rng.integers(0, 260), rng.integers(5, 20)
        fg[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 0.9
    probs = np.stack([1 - fg, fg])
    whole = P.labels_from_model_output(probs, model)
    calls = []
    real = B.label_blockwise
    monkeypatch.setattr(B, "label_blockwise", lambda *a, **k: calls.append(k["block"]) or real(*a, **k))
    monkeypatch.setattr(P, "LARGE_PLANE", 64 * 64)
    monkeypatch.setattr(P, "LABEL_BLOCK", 64)
    blocks = P.labels_from_model_output(probs, model)
    assert calls == [64]
    assert (whole > 0).sum() == (blocks > 0).sum() and whole.max() == len(np.unique(blocks[blocks > 0]))
    pairs = {(a, b) for a, b in zip(whole.ravel(), blocks.ravel()) if a or b}
    assert len(pairs) == whole.max()  # one-to-one
    assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == whole.max()
