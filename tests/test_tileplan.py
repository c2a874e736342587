"""Tile planning and the predictor (issue 10): a ready TilePlan is used as planned, the
caller's network is never moved or converted, and the helpers that have one home now."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import tiny_model

from napari_unet.predict import Predictor, predict_probabilities
from napari_unet.tileplan import TilePlan, choose_tile, plan_tiles, round_tile


def _blobs(n=96):
    yy, xx = np.mgrid[:n, :n]
    return (200 * (((yy - 30) ** 2 + (xx - 40) ** 2) < 150) + 20).astype(np.uint8)


def test_predicting_leaves_the_callers_network_as_it_was():
    m = tiny_model()
    net = m.network.train()
    before = {k: (v.data_ptr(), v.device, v.is_contiguous()) for k, v in net.state_dict().items()}
    predict_probabilities(_blobs(), m, device="cpu", precision="float32")
    assert net.training  # not switched to eval
    after = {k: (v.data_ptr(), v.device, v.is_contiguous()) for k, v in net.state_dict().items()}
    assert after == before  # same tensors: not moved, not made channels-last


def test_predictor_uses_the_plan_it_is_given():
    m = tiny_model()
    cpu = torch.device("cpu")
    plan = plan_tiles(m.config, (96, 96), cpu, "float32", tile=60)
    assert plan.tile == choose_tile(m.config, (96, 96), tile=60)[0] and plan.batch_size == 1
    small = TilePlan((plan.tile[0] - plan.align, plan.tile[1] - plan.align), plan.margin, plan.align, 2)
    pred = Predictor(m, small, device="cpu", precision="float32")
    assert (pred.tile, pred.batch_size) == (small.tile, 2)
    seen = []
    out = pred.plane(_blobs()[None].astype(np.float32), progress=lambda n: seen.append(n))
    assert len(pred.grid((96, 96))) == sum(seen) > len(plan.grid((96, 96)))  # the smaller tiles were used
    # the same probabilities as with the chosen plan: tiling never changes the result
    ref = Predictor(m, plan, device="cpu", precision="float32").plane(_blobs()[None].astype(np.float32))
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(TypeError, match="plan must be a TilePlan"):
        Predictor(m, (96, 96))


def test_round_tile_is_what_the_planner_uses():
    m = tiny_model()
    for t in (1, 30, 98, 123, 500):
        r = round_tile(m.config, t)
        assert choose_tile(m.config, (4000, 4000), tile=t)[0] == (r, r)
        assert choose_tile(m.config, (4000, 4000), tile=r)[0] == (r, r)  # rounding twice changes nothing
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, not 0"):
        plan_tiles(m.config, (96, 96), torch.device("cpu"), "float32", batch_size=0)


def test_precision_and_autocast_come_from_the_device_module():
    from napari_unet.device import autocast, resolve_precision
    from napari_unet.errors import InputError

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "float32" and resolve_precision("bf16", cpu) == "bfloat16"
    with pytest.raises(InputError, match="unknown precision 'half'"):
        resolve_precision("half", cpu)
    x = torch.ones(2, 2)
    with autocast(cpu, True):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(cpu, False):
        assert (x @ x).dtype == torch.float32


def test_labels_dtype_never_beyond_what_the_writers_promise():
    from napari_unet.io import write_labels
    from napari_unet.labels import integer_labels, labels_dtype

    assert labels_dtype(65535) == np.uint16 and labels_dtype(65536) == np.uint32
    assert labels_dtype(2**32 - 1) == np.uint32
    with pytest.raises(ValueError, match="do not fit in uint32"):
        labels_dtype(2**32)
    assert integer_labels(np.array([[0.0, 2.0]])).dtype == np.int64
    for bad, msg in ((np.array([[0.5]]), "non-integer"), (np.array([[np.nan]]), "non-integer"),
                     (np.array([[-1]]), "negative"), (np.array([["a"]]), "integer image")):
        with pytest.raises(ValueError, match=msg):
            integer_labels(bad)
    with pytest.raises(ValueError, match="labels contain negative values"):
        write_labels("never-written.tif", np.array([[-1, 2]]))


def test_first_line_and_full_resolution():
    from napari_unet.errors import first_line
    from napari_unet.io import full_resolution

    assert first_line(ValueError("\n  one\ntwo")) == "one" and first_line(KeyError()) == "KeyError"
    levels = [np.zeros((8, 8)), np.zeros((4, 4))]
    assert full_resolution(levels) is levels[0] and full_resolution(levels[1]) is levels[1]
    assert full_resolution(tuple(levels), multiscale=True) is levels[0]


def test_default_model_is_listed_first_everywhere(capsys):
    from napari_unet.builtin import DEFAULT_MODEL, builtin_names, list_builtin_models
    from napari_unet.cli import main

    names = builtin_names()
    if DEFAULT_MODEL not in names:
        pytest.skip("the default built-in model is not installed")
    assert names[0] == DEFAULT_MODEL and sorted(names[1:]) == names[1:]
    assert list(list_builtin_models()) == names
    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[0] == DEFAULT_MODEL


def test_the_cpu_tile_budget_honours_the_memory_limit(monkeypatch):
    import torch

    from napari_unet.tileplan import default_memory_budget

    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "400M")
    assert default_memory_budget(torch.device("cpu")) == 100 * 2**20  # a quarter of the limit
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "64G")
    assert default_memory_budget(torch.device("cpu")) == 2 * 2**30  # never more than 2 GiB
