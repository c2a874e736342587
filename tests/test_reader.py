"""Opening a .safetensors file that napari-unet did not write: refused in one line, the current model kept."""

import numpy as np
import pytest

pytest.importorskip("napari")

from safetensors.numpy import save_file  # noqa: E402


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])  # plain, and as Hugging Face writes them
def test_reader_refuses_a_foreign_safetensors_file(tmp_path, monkeypatch, session, metadata):
    import napari_unet._reader as reader

    other = tmp_path / "sam.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other), metadata=metadata)
    errors = []
    monkeypatch.setattr(reader, "show_error", errors.append)
    monkeypatch.setattr(reader, "_other_readers", lambda path: [])  # napari-unet is the only reader
    assert reader.get_reader(str(other)) is reader.read_model
    assert reader.read_model(str(other)) == [(None,)]
    assert len(errors) == 1 and "sam.safetensors holds weights saved by another program" in errors[0]
    assert session.model is None
    monkeypatch.setattr(reader, "_other_readers", lambda path: ["another-plugin"])
    assert reader.get_reader(str(other)) is None  # napari tries the other reader
