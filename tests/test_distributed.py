"""Block-wise segmentation on a dask.distributed LocalCluster into OME-Zarr: equal to the
in-memory result, resumable, one-line messages for bad inputs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("distributed")

from _helpers import tiny_model
from scipy import ndimage as ndi
from test_blockwise import assert_one_to_one, crossing

from napari_unet import cli
from napari_unet.distributed import ClusterError, connect, segment_to_zarr
from napari_unet.modelfile import save_model
from napari_unet.omezarr import ZarrInputError, open_labels_pyramid, open_source
from napari_unet.predict import labels_from_model_output, predict_probabilities
from napari_unet.tiling import Cancelled

TILE = 188
RUN = dict(tile=TILE, precision="float32", device="cpu")


@pytest.fixture(scope="module")
def client():
    c = connect(workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def case():
    """A smooth random image, a tiny model and its in-memory probabilities and labels, with a
    threshold that makes many objects of all sizes crossing the blocks."""
    rng = np.random.default_rng(0)
    image = (ndi.gaussian_filter(rng.random((420, 380)), 4) * 60000).astype(np.uint16)
    model = tiny_model()
    probs = predict_probabilities(image, model, scales=[1], **RUN)  # block-wise: the image as it is
    post = dict(threshold=float(np.percentile(probs[1], 55)), smooth=1.0, min_size=5)
    model.postprocessing = post
    labels = labels_from_model_output(probs, model)
    return image, model, probs, labels


def write_zarr(path, image, chunks=(100, 100), axes=None):
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    a = g.create_array("0", shape=image.shape, chunks=chunks, dtype=image.dtype)
    a[:] = image
    if axes is not None:
        g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in axes],
                                   "datasets": [{"path": "0"}]}]
    return path


def test_cluster_result_equals_in_memory(tmp_path, client, case):
    image, model, probs, labels = case
    src = write_zarr(tmp_path / "img.zarr", image[None, None], chunks=(1, 1, 100, 100), axes="tzyx")
    res = segment_to_zarr(src, model, tmp_path / "out", client=client, probabilities=True, block=128, **RUN)
    assert res.labels == tmp_path / "out" / "img_labels.zarr" and res.n_objects == labels.max()
    got = zarr.open_group(str(res.labels), mode="r")
    assert got.attrs["image-label"]["version"] == "0.4"
    assert crossing(labels, 128) >= 5
    assert_one_to_one(labels, got["0"][:])
    np.testing.assert_allclose(zarr.open_group(str(res.probabilities), mode="r")["0"][:], probs, atol=1e-5)
    levels = open_labels_pyramid(res.labels)
    assert [lv.shape for lv in levels] == [(420, 380), (210, 190)]
    np.testing.assert_array_equal(levels[1].compute(), got["0"][::2, ::2])
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir())  # work folder removed


def test_interrupted_run_resumes_without_recomputing(tmp_path, client, case):
    image, model, probs, labels = case
    src = write_zarr(tmp_path / "img.zarr", image)
    calls = []

    def stop_after_three(phase, done, total):
        calls.append(phase)
        if phase == "labels" and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_to_zarr(src, model, tmp_path / "out", block=128, progress=stop_after_three, **RUN)
    assert not (tmp_path / "out" / "img_labels.zarr").exists()
    n_predicted = len(list((tmp_path / "out" / ".img.napari-unet-work" / "predict").glob("*.done")))
    done = []
    res = segment_to_zarr(src, model, tmp_path / "out", client=client, block=128,
                          progress=lambda phase, d, total: done.append((phase, total)), **RUN)
    totals = dict(done)
    # every probability block and three label blocks were kept: only the rest ran again
    assert totals["probabilities"] == 0 and totals["labels"] == 4 * 3 - 3  # 420 x 380 in blocks of 128
    assert res.resumed_blocks == n_predicted + 3
    assert_one_to_one(labels, zarr.open_group(str(res.labels), mode="r")["0"][:])


def test_killed_command_resumes(tmp_path, case):
    image, model, probs, labels = case
    big = np.tile(image, (3, 3))
    src = write_zarr(tmp_path / "big.zarr", big, chunks=(256, 256))
    mfile = save_model(model, tmp_path / "m.safetensors")
    cmd = [sys.executable, "-m", "napari_unet.cli", "segment", str(src), "--model", str(mfile), "--output",
           str(tmp_path / "out"), "--block", "128", "--tile", str(TILE), "--precision", "float32", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    markers = tmp_path / "out" / ".big.napari-unet-work" / "predict"
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 240:
        if markers.is_dir() and len(list(markers.glob("*.done"))) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    kept = len(list(markers.glob("*.done")))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resumed: {kept} blocks were already done" in r.stdout
    ref = labels_from_model_output(predict_probabilities(big, model, scales=[1], **RUN), model)
    assert_one_to_one(ref, zarr.open_group(str(tmp_path / "out" / "big_labels.zarr"), mode="r")["0"][:])


def test_rerun_with_other_settings_is_refused(tmp_path, case):
    image, model, _, _ = case
    src = write_zarr(tmp_path / "img.zarr", image)

    def stop(phase, done, total):
        if phase == "labels" and done == 1:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        segment_to_zarr(src, model, tmp_path / "out", block=128, progress=stop, **RUN)
    with pytest.raises(ZarrInputError, match="other settings"):
        segment_to_zarr(src, model, tmp_path / "out", block=128, threshold=0.9, **RUN)


def test_tif_input_is_read_lazily(tmp_path, case):
    import tifffile

    image, model, _, labels = case
    tifffile.imwrite(tmp_path / "plain.tif", image)
    tifffile.imwrite(tmp_path / "packed.tif", image, compression="zlib", tile=(64, 64))
    assert open_source(tmp_path / "plain.tif").kind == "tif-memmap"
    assert open_source(tmp_path / "packed.tif").kind == "tif-zarr"
    res = segment_to_zarr(tmp_path / "packed.tif", model, tmp_path / "out", block=192, **RUN)
    assert res.labels.name == "packed_labels.zarr"
    assert_one_to_one(labels, zarr.open_group(str(res.labels), mode="r")["0"][:])


def test_in_process_array_with_progress(tmp_path, case):
    da = pytest.importorskip("dask.array")
    image, model, _, labels = case
    seen = []
    res = segment_to_zarr(da.from_array(image, chunks=100), model, tmp_path, name="layer", block=192,
                          progress=lambda *a: seen.append(a), **RUN)
    assert {p for p, _, _ in seen} == {"statistics", "probabilities", "labels", "write", "pyramid"}
    assert_one_to_one(labels, zarr.open_group(str(res.labels), mode="r")["0"][:])


@pytest.mark.parametrize("make,message", [
    (lambda p: write_zarr(p, np.zeros((3, 40, 50), np.uint16), chunks=(1, 40, 50), axes="zyx"),
     "3 entries along z"),
    (lambda p: write_zarr(p, np.zeros((40, 50), np.uint16), chunks=(40, 50), axes="tc"), "needs y and x axes"),
    (lambda p: write_zarr(p, np.zeros((5, 40, 50), np.uint16), chunks=(5, 40, 50)), "split stacks into planes"),
])
def test_bad_zarr_gives_one_line(tmp_path, capsys, make, message, tiny_model_file):
    src = make(tmp_path / "bad.zarr")
    rc = cli.main(["segment", str(src), "--model", str(tiny_model_file), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_unreachable_scheduler_gives_one_line(tmp_path, capsys, monkeypatch, tiny_model_file):
    import napari_unet.distributed as D

    with pytest.raises(ClusterError, match="cannot reach the dask scheduler"):
        connect(scheduler="tcp://127.0.0.1:9", timeout=1)
    real = D.connect
    monkeypatch.setattr(D, "connect", lambda **kw: real(**kw, timeout=1))
    write_zarr(tmp_path / "img.zarr", np.zeros((64, 64), np.uint16))
    rc = cli.main(["segment", str(tmp_path / "img.zarr"), "--model", str(tiny_model_file), "--output",
                   str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err
    assert len(err.strip().splitlines()) == 1


def test_existing_output_is_never_replaced(tmp_path, tiny_model_file, capsys):
    write_zarr(tmp_path / "img.zarr", np.zeros((64, 64), np.uint16))
    (tmp_path / "out" / "img_labels.zarr").mkdir(parents=True)
    rc = cli.main(["segment", str(tmp_path / "img.zarr"), "--model", str(tiny_model_file), "--output",
                   str(tmp_path / "out")])
    assert rc == 2 and "already exists" in capsys.readouterr().err


def test_napari_multiscale_layer_out_of_core_with_progress_and_cancel(tmp_path, case):
    import threading

    da = pytest.importorskip("dask.array")
    from napari_unet.distributed import is_out_of_core, segment_layer_data

    image, model, _, labels = case
    levels = [da.from_array(image, chunks=128), da.from_array(image[::2, ::2], chunks=128)]
    assert is_out_of_core(levels) and not is_out_of_core(image)
    stop = threading.Event()
    seen = []

    def progress(phase, done, total):
        seen.append(phase)
        if phase == "labels" and done == 2:
            stop.set()

    with pytest.raises(Cancelled):
        segment_layer_data(levels, model, tmp_path, name="layer", block=128, progress=progress, cancel=stop, **RUN)
    stop.clear()
    res, lazy = segment_layer_data(levels, model, tmp_path, name="layer", block=128, **RUN)
    assert res.resumed_blocks > 0 and len(lazy) == 2 and lazy[0].shape == image.shape
    assert type(lazy[0]).__name__ == "Array" and lazy[0].chunksize == (128, 128)
    assert_one_to_one(labels, lazy[0].compute())
    with pytest.raises(ZarrInputError, match="one 2D image"):
        segment_layer_data(da.zeros((3, 64, 64), chunks=32), model, tmp_path, name="stack", **RUN)


def test_ome_zarr_05_with_channels_and_pixel_size(tmp_path):
    image = np.arange(2 * 30 * 40, dtype=np.uint16).reshape(2, 30, 40)
    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    g.create_array("s0", shape=image.shape, chunks=(1, 16, 16), dtype=image.dtype)[:] = image
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.25]}]}]}]}
    src = open_source(tmp_path / "img.zarr", in_channels=2)
    assert src.plane_shape == (30, 40) and src.channels == 2 and src.scale == (0.5, 0.25) and src.name == "img"
    np.testing.assert_array_equal(src.read(3, 9, 5, 20), image[:, 3:9, 5:20])
    np.testing.assert_array_equal(src.read(0, 30, 0, 40, 4, 4), image[:, ::4, ::4])


def test_overwrite_replaces_an_existing_result_only_when_asked(tmp_path, case):
    image, model, _, labels = case
    src = write_zarr(tmp_path / "img.zarr", image)
    old = tmp_path / "out" / "img_labels.zarr"
    old.mkdir(parents=True)
    (old / "mine.txt").write_text("keep me")
    with pytest.raises(ZarrInputError, match="already exists"):
        segment_to_zarr(src, model, tmp_path / "out", block=256, **RUN)
    assert (old / "mine.txt").exists()
    res = segment_to_zarr(src, model, tmp_path / "out", block=256, overwrite=True, **RUN)
    assert not (old / "mine.txt").exists()
    assert_one_to_one(labels, zarr.open_group(str(res.labels), mode="r")["0"][:])
    with pytest.raises(ZarrInputError, match="would replace the input"):
        segment_to_zarr(res.labels, model, tmp_path / "out", name="img", overwrite=True, **RUN)
