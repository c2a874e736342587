"""bioimage.io packages: export, import, round trip, refusals, and `bioimageio test`."""

from __future__ import annotations

import hashlib
import io
import socket
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from _helpers import tiny_model

from napari_unet.bioimageio import BioimageioError, export_bioimageio, load_bioimageio
from napari_unet.cli import main
from napari_unet.modelfile import ModelFileError, load_model, save_model
from napari_unet.normalize import Normalization
from napari_unet.predict import predict_probabilities

pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed (pip install 'napari-unet[bioimageio]')")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address, *a, **k)

    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_offline_fixture_refuses_connections(offline):
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def _image(shape=(150, 170), seed=0, channels=None):
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    a = ndi.gaussian_filter(rng.random(shape if channels is None else (channels,) + shape), 2)
    return (a * 4000).astype(np.uint16)


def _probs(image, model, **kw):
    return predict_probabilities(image, model, device="cpu", precision="float32", **kw)


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    model = tiny_model(seed=1)
    path = tmp_path_factory.mktemp("pkg") / "tiny.zip"
    export_bioimageio(model, path, test_image=_image(seed=5), authors=["A. Biologist"])
    return model, path


# --------------------------------------------------------------------------- export


def test_package_contents(tiny_package):
    model, path = tiny_package
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "test_input.npy", "test_output.npy", "cover.png",
            "README.md"} <= names
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "napari_unet.model" and arch["callable"] == "UNet"
    assert arch["kwargs"] == model.config.to_dict()
    assert rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert rdf["authors"] == [{"name": "A. Biologist"}] and rdf["license"] == "CC-BY-4.0"
    # the valid convolutions' context: output = input - 2 * margin
    from napari_unet.model import context_margin

    y_in, y_out = rdf["inputs"][0]["axes"][2], rdf["outputs"][0]["axes"][2]
    assert y_out["size"] == {"tensor_id": "raw", "axis_id": "y", "offset": -2 * context_margin(model.config)}
    assert y_in["size"]["step"] == 4  # two poolings
    pre = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert pre == [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.8}}]
    assert rdf["outputs"][0]["postprocessing"][0] == {"id": "softmax", "kwargs": {"axis": "channel"}}
    assert rdf["config"]["napari_unet"]["class_names"] == model.class_names
    assert "## Validation" in readme and "10.1007/978-3-319-24574-4_28" in readme
    # test tensors: a valid input size, the output smaller by the context
    with zipfile.ZipFile(path) as z:
        x = np.load(io.BytesIO(z.read("test_input.npy")))
        y = np.load(io.BytesIO(z.read("test_output.npy")))
    assert x.shape[:2] == (1, 1) and y.shape[:2] == (1, 2)
    assert y.shape[2] == x.shape[2] - 2 * context_margin(model.config)
    np.testing.assert_allclose(y.sum(1), 1, atol=1e-5)


def test_export_refuses_to_replace_without_overwrite(tmp_path):
    out = tmp_path / "m.zip"
    out.write_bytes(b"precious")
    with pytest.raises(BioimageioError, match="exists.*overwrite"):
        export_bioimageio(tiny_model(), out, test_image=_image())
    assert out.read_bytes() == b"precious"
    export_bioimageio(tiny_model(), out, test_image=_image(), overwrite=True)
    assert zipfile.is_zipfile(out)
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]  # no temporary file left behind


def test_export_failure_leaves_nothing(tmp_path):
    out = tmp_path / "m.zip"
    with pytest.raises(BioimageioError, match="smaller than the network's smallest input"):
        export_bioimageio(tiny_model(), out, test_image=np.zeros((20, 20), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BioimageioError, match=r"\.zip"):
        export_bioimageio(tiny_model(), tmp_path / "m.yaml", test_image=_image())
    with pytest.raises(BioimageioError, match="not an SPDX licence identifier"):
        export_bioimageio(tiny_model(), out, test_image=_image(), license="free for all")
    with pytest.raises(BioimageioError, match="no slashes"):
        export_bioimageio(tiny_model(), out, test_image=_image(), authors=["lab/student"])
    with pytest.raises(BioimageioError, match="takes 2 channels: give a test image"):
        export_bioimageio(tiny_model(in_channels=2), out)
    assert list(tmp_path.iterdir()) == []


def test_cli_export(tmp_path, capsys):
    model_file = save_model(tiny_model(), tmp_path / "tiny.safetensors")
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, _image())
    out = tmp_path / "tiny.zip"
    assert main(["export", str(model_file), str(out), "--test-image", str(img), "--author", "Me", "-q"]) == 0
    assert yaml.safe_load(zipfile.ZipFile(out).read("rdf.yaml"))["authors"] == [{"name": "Me"}]
    assert main(["export", str(model_file), str(out), "--test-image", str(img)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and "Traceback" not in err
    assert main(["export", str(model_file), str(out), "--test-image", str(img), "--overwrite", "-q"]) == 0


# --------------------------------------------------------------------------- round trip


def test_round_trip_same_probabilities(tiny_package, tmp_path):
    model, path = tiny_package
    back = load_model(path)
    assert back.config == model.config and back.class_names == model.class_names
    assert back.normalization == model.normalization and back.postprocessing == model.postprocessing
    assert back.provenance["bioimageio_package"]["weights"] == "pytorch_state_dict"
    img = _image((130, 210), seed=3)
    np.testing.assert_allclose(_probs(img, back), _probs(img, model), rtol=0, atol=1e-6)
    # the rdf.yaml of an unpacked package works the same
    with zipfile.ZipFile(path) as z:
        z.extractall(tmp_path / "unpacked")
    again = load_model(tmp_path / "unpacked" / "rdf.yaml")
    np.testing.assert_allclose(_probs(img, again), _probs(img, model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["same-padding", "channels-fixed-normalisation", "input-compression",
                                  "linear-and-compressed"])
def test_round_trip_other_networks(tmp_path, kind, offline):
    if kind == "same-padding":
        model = tiny_model(seed=2, padding="same")
        img = _image(seed=4)
    elif kind == "input-compression":  # the log step travels inside the architecture's kwargs
        model = tiny_model(seed=2, input_compression=30.0)
        img = _image(seed=4)
    elif kind == "linear-and-compressed":  # keep_linear doubles the first layer's inputs, not the image's
        model = tiny_model(seed=2, input_compression=30.0, keep_linear=True)
        img = _image(seed=4)
    else:
        from napari_unet.model import UNetConfig
        from napari_unet.modelfile import SegmentationModel

        torch.manual_seed(3)
        model = SegmentationModel.new(
            UNetConfig(in_channels=2, n_classes=3, base_channels=4, depth=3, dropout=0.0), name="three classes",
            class_names=["background", "cell interior", "cell boundary"],
            normalization=Normalization(mode="fixed", offset=100.0, scale=900.0),
        )
        img = _image(channels=2, seed=4)
    path = export_bioimageio(model, tmp_path / "m.zip", test_image=img)
    back = load_bioimageio(path)
    assert back.config == model.config and back.class_names == model.class_names
    assert back.normalization.mode == model.normalization.mode
    np.testing.assert_allclose(_probs(img, back), _probs(img, model), rtol=0, atol=1e-5)
    _bioimageio_test(path)


def test_cli_segment_with_a_package(tiny_package, tmp_path):
    model, path = tiny_package
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, _image(seed=7))
    assert main(["segment", str(img), "--model", str(path), "--output", str(tmp_path / "o"), "--probabilities",
                 "--device", "cpu", "--precision", "float32", "-q"]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "o" / "img_probabilities.tif"),
                               _probs(_image(seed=7), model), atol=1e-6)


# --------------------------------------------------------------------------- refusals


def _repack(src: Path, dst: Path, edit_rdf=None, files=None, drop=()):
    """A copy of package ``src`` with its rdf edited and files replaced (sha256s updated)."""
    files = dict(files or {})
    with zipfile.ZipFile(src) as z:
        content = {n: z.read(n) for n in z.namelist()}
    rdf = yaml.safe_load(content.pop("rdf.yaml"))
    content.update(files)
    for name in drop:
        content.pop(name, None)
    for entry in rdf["weights"].values():
        if isinstance(entry, dict) and entry.get("source") in files:
            entry["sha256"] = hashlib.sha256(files[entry["source"]]).hexdigest()
    if edit_rdf:
        edit_rdf(rdf)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
        for n, b in content.items():
            z.writestr(n, b)
    return dst


def _foreign_arch(r):
    r["weights"]["pytorch_state_dict"]["architecture"] = {"callable": "UNet2d", "source": "unet.py", "kwargs": {}}


def _set(key, value):
    def f(r):
        r[key] = value
    return f


def _only(fmt, entry=None):
    def f(r):
        w = r["weights"].get(fmt) or entry
        r["weights"] = {fmt: w}
    return f


def _preprocessing(r):
    r["inputs"][0]["preprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}]


def _postprocessing(r):
    r["outputs"][0]["postprocessing"] = [{"id": "sigmoid"}]


def _remote(r):
    r["weights"]["pytorch_state_dict"]["source"] = "https://example.org/weights.pt"


REFUSALS = {
    "foreign architecture": (_foreign_arch, "holds pytorch_state_dict (architecture UNet2d from unet.py), torchscript"),
    "onnx only": (_only("onnx", {"source": "w.onnx", "opset_version": 15}), "holds onnx; napari-unet runs pytorch_state_dict"),
    "format 0.4": (_set("format_version", "0.4.10"), "format 0.4.10"),
    "not a model": (_set("type", "dataset"), "describes a bioimage.io dataset, not a model"),
    "preprocessing": (_preprocessing, "preprocessing (zero_mean_unit_variance) is not one napari-unet applies"),
    "postprocessing": (_postprocessing, "postprocessing (sigmoid) is not supported"),
    "remote weights": (_remote, "local files only"),
    "malformed": (_set("inputs", ["raw"]), "not a well-formed bioimage.io model description"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(tiny_package, tmp_path, case, capsys):
    edit, msg = REFUSALS[case]
    pkg = _repack(tiny_package[1], tmp_path / "bad.zip", edit)
    with pytest.raises(BioimageioError) as e:
        load_model(pkg)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ModelFileError)  # the widgets and the CLI show it as one line
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, _image())
    assert main(["segment", str(img), "--model", str(pkg), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


class _Payload:
    """Unpickling this runs code (creates a file): weights_only must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_never_unpickled(tiny_package, tmp_path):
    marker = tmp_path / "code-ran"
    state = dict(tiny_package[0].network.state_dict())
    state["evil"] = _Payload(marker)
    buf = io.BytesIO()
    torch.save(state, buf)
    pkg = _repack(tiny_package[1], tmp_path / "bad.zip", files={"weights.pt": buf.getvalue()})
    with pytest.raises(BioimageioError, match="cannot be read as plain tensors"):
        load_model(pkg)
    assert not marker.exists()


def test_damaged_and_mismatched_weights(tiny_package, tmp_path):
    with zipfile.ZipFile(tiny_package[1]) as z:
        good = z.read("weights.pt")
    # altered after packaging: the sha256 in rdf.yaml no longer matches
    pkg = _repack(tiny_package[1], tmp_path / "a.zip", lambda r: r["weights"]["pytorch_state_dict"].update(sha256="0" * 64))
    with pytest.raises(BioimageioError, match="does not match its sha256"):
        load_model(pkg)
    # weights of another network than the rdf describes
    other = io.BytesIO()
    torch.save(tiny_model(base_channels=8).network.state_dict(), other)
    pkg = _repack(tiny_package[1], tmp_path / "b.zip", files={"weights.pt": other.getvalue()})
    with pytest.raises(BioimageioError, match="do not match the U-Net"):
        load_model(pkg)
    pkg = _repack(tiny_package[1], tmp_path / "c.zip", drop=["weights.pt"])
    with pytest.raises(BioimageioError, match="weights.pt named in its rdf.yaml is missing"):
        load_model(pkg)
    # NaN weights (diverged training)
    state = {k: v.clone() for k, v in tiny_package[0].network.state_dict().items()}
    state["head.bias"][0] = float("nan")
    nan = io.BytesIO()
    torch.save(state, nan)
    pkg = _repack(tiny_package[1], tmp_path / "d.zip", files={"weights.pt": nan.getvalue()})
    with pytest.raises(BioimageioError, match="NaN or infinite weights"):
        load_model(pkg)
    # an rdf that declares a giant U-Net: refused from the shapes, nothing that size is allocated
    def giant(r):
        r["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["base_channels"] = 200_000
    pkg = _repack(tiny_package[1], tmp_path / "e.zip", giant)
    with pytest.raises(BioimageioError, match="do not match the U-Net"):
        load_model(pkg)
    assert good  # the untouched package still loads
    load_model(tiny_package[1])


def test_not_a_package(tmp_path):
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("hello.txt", "hi")
    with pytest.raises(BioimageioError, match="not a bioimage.io package"):
        load_model(z)
    (tmp_path / "y.zip").write_bytes(b"not a zip")
    with pytest.raises(BioimageioError, match="not a readable zip"):
        load_model(tmp_path / "y.zip")
    (tmp_path / "rdf.yaml").write_text("name: [unclosed")
    with pytest.raises(BioimageioError, match="not valid YAML"):
        load_model(tmp_path / "rdf.yaml")


def test_torchscript_only_behind_opt_in(tiny_package, tmp_path, capsys):
    model, path = tiny_package
    pkg = _repack(path, tmp_path / "ts.zip", _only("torchscript"), drop=["weights.pt"])
    with pytest.raises(BioimageioError, match="TorchScript weights are code.*--allow-torchscript"):
        load_model(pkg)
    with pytest.warns(UserWarning, match="TorchScript weights, which are code"):
        back = load_model(pkg, allow_torchscript=True)
    assert back.provenance["bioimageio_package"]["weights"] == "torchscript"
    img = _image(seed=9)
    np.testing.assert_allclose(_probs(img, back), _probs(img, model), rtol=0, atol=1e-6)
    imgf = tmp_path / "img.tif"
    tifffile.imwrite(imgf, img)
    assert main(["segment", str(imgf), "--model", str(pkg), "--output", str(tmp_path / "o"), "-q"]) == 2
    assert "--allow-torchscript" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["segment", str(imgf), "--model", str(pkg), "--output", str(tmp_path / "o"), "-q",
                     "--allow-torchscript"]) == 0


# --------------------------------------------------------------------------- bioimageio test


def _bioimageio_test(path):
    core = pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed")
    summary = core.test_model(str(path))
    failed = [d for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", "\n".join(f"{d.name}: {d.errors}" for d in failed)
    formats = {d.loc[1] for d in summary.details if len(d.loc) > 1 and d.loc[0] == "weights"}
    assert {"pytorch_state_dict", "torchscript"} <= formats


@pytest.mark.parametrize("name", ["fluo-nuclei", "em-membranes"])
def test_bioimageio_test_passes_for_builtin_models(name, tmp_path, offline):
    path = export_bioimageio(name, tmp_path / f"{name}.zip")
    rdf = yaml.safe_load(zipfile.ZipFile(path).read("rdf.yaml"))
    assert rdf["license"] == "BSD-3-Clause" and rdf["authors"] == [{"name": "napari-unet developers"}]
    _bioimageio_test(path)


def test_bioimageio_test_passes_for_a_fine_tuned_model(tmp_path, offline):
    from _helpers import simulated_strokes
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from napari_unet.samples import sample_image
    from napari_unet.train import TrainingConfig, train

    img = sample_image("nuclei")[:200, :200]
    inst, _ = ndi.label(img > threshold_otsu(img))
    strokes = simulated_strokes(inst, n_cells=5)
    res = train(load_model("fluo-nuclei"), [img], [strokes],
                TrainingConfig(iterations=2, tile=188, precision="float32", device="cpu"))
    tuned = res.model
    tuned.name = "nuclei-finetuned"
    path = export_bioimageio(tuned, tmp_path / "tuned.zip", authors=["A. Biologist"])
    _bioimageio_test(path)
    back = load_model(path)
    probe = sample_image("nuclei")[200:400, 300:500]
    np.testing.assert_allclose(_probs(probe, back), _probs(probe, tuned), rtol=0, atol=1e-5)


def test_files_larger_than_memory_are_not_read(tiny_package, monkeypatch):
    import napari_unet.bioimageio as bio

    monkeypatch.setattr(bio, "_memory_for_files", lambda: 10_000)  # the weights file is larger
    with pytest.raises(BioimageioError, match="weights.pt would take .* GiB of memory to read"):
        load_model(tiny_package[1])
