import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from napari_unet.dask_predict import predict_dask
from napari_unet.predict import predict_probabilities

from _helpers import tiny_model


@pytest.mark.parametrize("shape,block", [((300, 250), 64), ((97, 401), 100), ((2, 130, 90), 48)])
def test_dask_blocks_equal_in_memory_result(shape, block):
    model = tiny_model(depth=3)
    img = (np.random.default_rng(0).random(shape) * 1000).astype(np.uint16)
    lazy = predict_dask(da.from_array(img, chunks=(37,) * len(shape)), model, block=block, tile=92, precision="float32")
    assert lazy.shape == (2,) + shape and lazy.numblocks[-1] > 1
    got = lazy.compute(scheduler="synchronous")
    np.testing.assert_allclose(got, predict_probabilities(img, model, tile=92, precision="float32"), atol=1e-5)


def test_dask_reads_only_what_a_block_needs():
    model = tiny_model(depth=3)
    img = np.random.default_rng(1).random((400, 400)).astype(np.float32)
    lazy = predict_dask(img, model, block=96, tile=92, precision="float32")
    one = lazy[:, :10, :10].compute(scheduler="synchronous")
    np.testing.assert_allclose(one, predict_probabilities(img, model, tile=92, precision="float32")[:, :10, :10], atol=1e-5)
