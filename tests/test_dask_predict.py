import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from _helpers import CountingArray, tiny_model

from napari_unet.dask_predict import predict_dask
from napari_unet.predict import predict_probabilities


@pytest.mark.parametrize("shape,block", [((300, 250), 64), ((97, 401), 100), ((2, 130, 90), 48)])
def test_dask_blocks_equal_in_memory_result(shape, block):
    model = tiny_model(depth=3)
    img = (np.random.default_rng(0).random(shape) * 1000).astype(np.uint16)
    lazy = predict_dask(da.from_array(img, chunks=(37,) * len(shape)), model, block=block, tile=92, precision="float32")
    assert lazy.shape == (2,) + shape and lazy.numblocks[-1] > 1
    got = lazy.compute(scheduler="synchronous")
    np.testing.assert_allclose(got, predict_probabilities(img, model, tile=92, precision="float32", scales=[1]), atol=1e-5)


def test_dask_reads_only_what_a_block_needs():
    model = tiny_model(depth=3)  # 20 pixels of context each side
    img = np.random.default_rng(1).random((400, 400)).astype(np.float32)
    src = CountingArray(img)
    lazy = predict_dask(da.from_array(src, chunks=(20, 20), asarray=True), model, block=96, tile=92,
                        precision="float32")
    src.reads.clear()  # building the graph reads the plane's normalisation statistics (a sample)
    corner = lazy[:, :10, :10].compute(scheduler="synchronous")
    read = src.read_mask()
    # tiles of 92 give 52 output pixels: the corner block is 104 x 104 (two tiles a side), whose
    # tiles read rows and columns up to 52 - 20 + 92 = 124, fetched in chunks of 20 (up to 140)
    rows, cols = np.nonzero(read.any(1))[0], np.nonzero(read.any(0))[0]
    assert rows.max() < 140 and cols.max() < 140, (rows.max(), cols.max())
    assert read.sum() <= 140 * 140 < img.size // 8
    np.testing.assert_allclose(corner, predict_probabilities(img, model, tile=92, precision="float32", scales=[1])[:, :10, :10],
                               atol=1e-5)
