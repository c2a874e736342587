import json
import os
import struct

import numpy as np
import pytest
import torch
from _helpers import tiny_model

from napari_unet.modelfile import FORMAT_VERSION, ModelFileError, load_model, read_model_info, save_model
from napari_unet.normalize import Normalization
from napari_unet.predict import predict_probabilities


def test_round_trip_keeps_everything(tmp_path):
    m = tiny_model(in_channels=2)
    m.normalization = Normalization("fixed", offset=3.0, scale=7.0)
    m.class_names = ["bg", "nucleus"]
    m.postprocessing = {"threshold": 0.7, "seed_threshold": 0.9, "min_size": 12}
    m.provenance = {"training_data": "synthetic", "iterations": 5}
    p = save_model(m, tmp_path / "m.safetensors")
    back = load_model(p)
    assert back.config == m.config
    assert back.normalization == m.normalization
    assert back.class_names == ["bg", "nucleus"]
    assert back.postprocessing == m.postprocessing
    assert back.provenance["training_data"] == "synthetic" and "saved" in back.provenance
    for (k, a), (_, b) in zip(m.network.state_dict().items(), back.network.state_dict().items()):
        assert torch.equal(a, b), k
    img = np.random.default_rng(0).random((2, 40, 40)).astype(np.float32)
    np.testing.assert_array_equal(predict_probabilities(img, m, precision="float32"), predict_probabilities(img, back, precision="float32"))
    assert read_model_info(p)["architecture"]["in_channels"] == 2


def test_float16_file_is_half_the_size(tmp_path):
    m = tiny_model()
    a = save_model(m, tmp_path / "a.safetensors")
    b = save_model(m, tmp_path / "b.safetensors", dtype=torch.float16)
    assert os.path.getsize(b) < 0.6 * os.path.getsize(a)
    assert load_model(b).network.head.weight.dtype == torch.float32


def test_loading_never_unpickles(tmp_path):
    # a pickle that would create a file when loaded with torch.load(weights_only=False)
    evil = tmp_path / "evil.safetensors"
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Boom()}, evil)
    with pytest.raises(ModelFileError, match="not a readable napari-unet model file"):
        load_model(evil)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    p = save_model(tiny_model(), tmp_path / "m.safetensors")
    data = p.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt|truncated"):
        load_model(tmp_path / "t.safetensors")


def test_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_model(tmp_path / "other.safetensors")


def _rewrite_header(path, fn):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    fn(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_newer_format_version(tmp_path):
    p = save_model(tiny_model(), tmp_path / "m.safetensors")
    _rewrite_header(p, lambda h: h["__metadata__"].update(format_version=str(FORMAT_VERSION + 1)))
    with pytest.raises(ModelFileError, match="newer napari-unet.*upgrade"):
        load_model(p)


def test_weights_not_matching_declared_architecture(tmp_path):
    p = save_model(tiny_model(), tmp_path / "m.safetensors")

    def widen(h):
        meta = json.loads(h["__metadata__"]["model"])
        meta["architecture"]["base_channels"] = 8
        h["__metadata__"]["model"] = json.dumps(meta)

    _rewrite_header(p, widen)
    with pytest.raises(ModelFileError, match="but the declared architecture needs"):
        load_model(p)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(ModelFileError, match="no built-in model or file named 'nope'"):
        load_model("nope")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"hello world, not a model")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(tmp_path / "junk.safetensors")


def test_save_is_atomic(tmp_path, monkeypatch):
    p = save_model(tiny_model(seed=1), tmp_path / "m.safetensors")
    before = p.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_model(seed=2), p, overwrite=True)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_never_replaces_a_file_unasked(tmp_path):
    from napari_unet.io import OutputExistsError

    p = save_model(tiny_model(seed=1), tmp_path / "m.safetensors")
    before = p.read_bytes()
    with pytest.raises(OutputExistsError, match="m.safetensors already exists.*overwrite=True"):
        save_model(tiny_model(seed=2), p)
    assert p.read_bytes() == before
    save_model(tiny_model(seed=2), p, overwrite=True)
    assert p.read_bytes() != before
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]
