"""Output safety of napari_unet.io: no file is replaced unasked, writes are atomic."""

import hashlib
import os

import numpy as np
import pytest
import tifffile

from napari_unet.io import OutputExistsError, check_output, output_stem, write_labels, write_probabilities


def digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.mark.parametrize(
    "name, stem",
    [("2024.01.15_wellA.tif", "2024.01.15_wellA"), ("cells.ome.tif", "cells"), ("a.b.png", "a.b"),
     ("plain", "plain"), ("x.TIFF", "x")],
)
def test_output_stem_keeps_every_dot(name, stem):
    assert output_stem(name) == stem


def test_writers_refuse_an_existing_file(tmp_path):
    p = tmp_path / "truth.tif"
    tifffile.imwrite(p, np.full((8, 8), 7, np.uint16))
    os.chmod(p, 0o444)
    before = digest(p)
    with pytest.raises(OutputExistsError, match="truth.tif already exists"):
        write_labels(p, np.zeros((8, 8), np.uint16))
    with pytest.raises(OutputExistsError):
        write_probabilities(p, np.zeros((2, 8, 8)))
    assert digest(p) == before and sorted(f.name for f in tmp_path.iterdir()) == ["truth.tif"]
    write_labels(p, np.ones((8, 8), np.uint16), overwrite=True)
    assert tifffile.imread(p).max() == 1


def test_race_between_two_writers_keeps_the_first(tmp_path, monkeypatch):
    """Another process creates the file while we compute: the link step refuses to replace it."""
    import napari_unet.io as io

    p = tmp_path / "well1_labels.tif"
    real = io._publish

    def late(tmp, path, overwrite):
        tifffile.imwrite(path, np.full((4, 4), 9, np.uint16))  # the other process wins
        return real(tmp, path, overwrite)

    monkeypatch.setattr(io, "_publish", late)
    with pytest.raises(OutputExistsError):
        write_labels(p, np.zeros((4, 4), np.uint16))
    assert tifffile.imread(p).max() == 9
    assert sorted(f.name for f in tmp_path.iterdir()) == ["well1_labels.tif"]


def test_check_output(tmp_path):
    inp = tmp_path / "in.tif"
    inp.write_bytes(b"x")
    with pytest.raises(ValueError, match="is an input file"):
        check_output(inp, overwrite=True, protect=[inp])
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(NotADirectoryError, match="in.tif is a file, not a folder"):
        check_output(inp / "sub" / "out.tif")
    assert check_output(tmp_path / "new" / "out.tif") == tmp_path / "new" / "out.tif"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_output_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            check_output(ro / "x.tif")
    finally:
        os.chmod(ro, 0o755)
