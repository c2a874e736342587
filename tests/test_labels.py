import numpy as np
import pytest

from napari_unet.labels import (
    from_binary,
    from_instances,
    from_membranes,
    separate_touching,
    to_classes,
    to_instances,
    validate_labels,
)


def test_from_instances_maps_and_dtype():
    inst = np.array([[0, 1], [3, 0]], dtype=np.int32)
    out = from_instances(inst)
    np.testing.assert_array_equal(out, [[1, 2], [4, 1]])
    assert out.dtype == np.uint16
    assert inst[0, 0] == 0  # input untouched
    big = np.array([[0, 70000]])
    out = from_instances(big)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, [[1, 70001]])
    with pytest.raises(ValueError):
        from_instances(np.array([[-1, 0]]))


def test_from_binary_components():
    m = np.zeros((6, 6), bool)
    m[0:2, 0:2] = True
    m[2, 2] = True  # touches the first block only diagonally
    m[4:6, 3:6] = True
    out = from_binary(m)  # 4-connectivity: three cells
    assert set(np.unique(out)) == {1, 2, 3, 4}
    assert np.all(out[~m] == 1)
    assert out[0, 0] == out[1, 1] != out[2, 2]
    out8 = from_binary(m.astype(np.uint8) * 7, connectivity=2)
    assert set(np.unique(out8)) == {1, 2, 3}
    assert out8[0, 0] == out8[2, 2]


def test_from_membranes_isbi_style():
    img = np.full((7, 7), 255, np.uint8)
    img[3, :] = 0
    img[:, 3] = 0  # membrane cross -> four interior regions
    out = from_membranes(img)
    assert np.all(out[img == 0] == 1)
    cells = np.unique(out[img == 255])
    assert len(cells) == 4 and cells.min() >= 2
    # regions touching only at a corner are different cells (4-connectivity)
    img2 = np.zeros((2, 2), np.uint8)
    img2[0, 0] = img2[1, 1] = 255
    out2 = from_membranes(img2)
    assert out2[0, 0] >= 2 and out2[1, 1] >= 2 and out2[0, 0] != out2[1, 1]
    assert out2[0, 1] == 1


def test_to_classes_and_instances():
    lab = np.array([[0, 1, 2], [5, 1, 0]], dtype=np.uint16)
    cls = to_classes(lab)
    assert cls.dtype == np.int64
    np.testing.assert_array_equal(cls, [[-1, 0, 1], [1, 0, -1]])
    inst = np.array([[0, 4, 1], [2, 2, 0]], dtype=np.uint16)
    np.testing.assert_array_equal(to_instances(from_instances(inst)), inst)
    np.testing.assert_array_equal(to_instances(lab), [[0, 0, 1], [4, 0, 0]])


def test_separate_touching_leaves_no_adjacent_cells():
    lab = np.ones((8, 10), np.uint16)
    lab[2:6, 1:5] = 2
    lab[2:6, 5:9] = 3  # touching square
    lab[0, 0] = 0
    out = separate_touching(lab)
    assert out[0, 0] == 0
    assert set(np.unique(out)) == {0, 1, 2, 3}
    # no 8-neighbouring pixels of different cells remain
    p = np.pad(out, 1)
    c = p[1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            n = p[1 + dy : p.shape[0] - 1 + dy, 1 + dx : p.shape[1] - 1 + dx]
            assert not np.any((c >= 2) & (n >= 2) & (c != n))
    # only one column was removed
    assert np.count_nonzero(out == 2) + np.count_nonzero(out == 3) == 32 - 4
    np.testing.assert_array_equal(lab[lab == 1], out[lab == 1])


def test_validate_labels_errors():
    ok = np.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(validate_labels(ok), ok)
    assert validate_labels(ok.astype(float)).dtype.kind in "iu"
    with pytest.raises(ValueError, match="negative"):
        validate_labels(np.array([[-1, 1], [2, 2]]))
    with pytest.raises(ValueError, match="non-integer"):
        validate_labels(np.array([[0.5, 1.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match="2D"):
        validate_labels(np.ones((2, 3, 3), int))
    with pytest.raises(ValueError, match="nothing is annotated"):
        validate_labels(np.zeros((4, 4), np.uint8))
