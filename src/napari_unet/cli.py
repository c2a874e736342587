"""The ``napari-unet`` command line: the same engine as the plugin, for batches.

    napari-unet models
    napari-unet segment INPUT... --model NAME_OR_PATH --output DIR [--probabilities] [--overwrite]
    napari-unet segment BIG.zarr|BIG.tif --model M --output DIR [--workers N | --scheduler ADDRESS]
    napari-unet train --images ... --labels ... --output MODEL_FILE [--model START] [--overwrite]
    napari-unet evaluate --predictions ... --truth ...
    napari-unet export MODEL OUT.zip [--overwrite]     (bioimage.io model package)

Rules (docs/cli.md): no file is ever replaced unless ``--overwrite`` is given, and an input is
never replaced even then; every failure is one line on stderr and exit status 2; a batch goes
on past a bad image and lists the failures at the end; Ctrl-C exits with 130 and SIGTERM with
143, after a line saying what was kept (never a half-written file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from .errors import first_line

__all__ = ["main"]

PROG = "napari-unet"


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that temporary files are removed on the way out."""


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _reason(e: BaseException) -> str:
    """An exception as one line, without a traceback."""
    if isinstance(e, OSError) and e.strerror and not isinstance(e, FileExistsError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}"
    return first_line(e)


def _memory_reason(e: MemoryError) -> str:
    from .memory import NotEnoughMemory

    if isinstance(e, NotEnoughMemory):
        return str(e)  # the estimate, made before allocating, with the way out
    return "out of memory" + (f": {_reason(e)}" if str(e) else "") + "; free memory, or use a smaller --tile"


def _progress_bar(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tile", disable=disable, leave=False, dynamic_ncols=True)


def _load_model(spec: str, allow_torchscript: bool = False):
    from .modelfile import ModelFileError, load_model

    try:
        return load_model(spec, allow_torchscript=allow_torchscript)
    except ModelFileError as e:
        raise CliError(str(e)) from None


def _model_path(spec: str) -> Path | None:
    from .builtin import builtin_model_path

    p = builtin_model_path(spec)
    return Path(p) if p is not None else (Path(spec).expanduser() if spec else None)


def _channel_axis(value: str | None):
    if value is None:
        return None
    if value.lower() in ("none", "no"):
        return False
    try:
        return int(value)
    except ValueError:
        raise CliError(f"--channel-axis takes an integer or 'none', not {value!r}") from None


def _at_least(name: str, value, low: int):
    if value is not None and value < low:
        raise CliError(f"{name} must be at least {low}, not {value}")


def _check_output(path: Path, overwrite: bool, protect=(), what="--output") -> Path:
    """Output checks before any work, with the command line's words for the way out."""
    from .io import OutputExistsError, check_output

    try:
        return check_output(path, overwrite=overwrite, protect=protect)
    except OutputExistsError:
        raise CliError(f"{path} already exists: add --overwrite to replace it, or choose another {what}") from None
    except (OSError, ValueError) as e:
        raise CliError(_reason(e)) from None


def _check_folder(folder: Path) -> None:
    """An output folder that exists (or can be made) and can be written to, before any work."""
    from .io import check_folder

    try:
        check_folder(folder, f"cannot make the --output folder {folder}")
    except OSError as e:
        raise CliError(str(e)) from None


# --------------------------------------------------------------------------- models


def cmd_models(args) -> int:
    from .builtin import list_builtin_models

    models = list_builtin_models()
    if not models:
        print("no built-in models are installed", file=sys.stderr)
        return 1
    width = max(len(n) for n in models)
    for name, desc in models.items():
        print(f"{name:<{width}}  {desc}")
    return 0


# --------------------------------------------------------------------------- segment


def _is_large_input(path: str) -> bool:
    p = Path(path)
    return p.suffix.lower() == ".zarr" or (p.is_dir() and any((p / m).exists() for m in (".zgroup", ".zarray", "zarr.json")))


def cmd_segment_large(args) -> int:
    """Block-wise segmentation to OME-Zarr (``--workers``, ``--scheduler`` or a .zarr input)."""
    import os

    from .device import DeviceError, resolve_device
    from .distributed import ClusterError, _close, connect, segment_to_zarr
    from .errors import InputError
    from .omezarr import ZarrInputError
    from .tiling import Cancelled

    if args.workers is not None and args.scheduler:
        raise CliError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.block < 64:
        raise CliError("--block must be at least 64 pixels")
    if getattr(args, "tta", False):
        raise CliError("--tta is not available for block-wise segmentation (.zarr inputs, --workers, --scheduler) yet")
    if getattr(args, "scales", None) is not None and _scales_flag(args.scales) != [1.0]:
        raise CliError("--scales is not available for block-wise segmentation (.zarr inputs, --workers, --scheduler) "
                       "yet: it segments the image as it is")
    if args.channel_axis is not None:
        raise CliError("--channel-axis is not used for .zarr inputs or with --workers/--scheduler: the axes come "
                       "from the OME-Zarr metadata (or the tif's layout)")
    for p in args.inputs:
        if not Path(p).exists():
            raise CliError(f"input not found: {p}")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--output must be a folder, but {out_dir} is a file")
    post = _postprocessing_flags(args)
    model = _load_model(args.model, args.allow_torchscript)
    if not args.scheduler:  # a remote cluster's workers may have devices this machine lacks
        try:
            resolve_device(args.device)
        except DeviceError as e:
            raise CliError(str(e)) from None
    from .omezarr import open_source

    sources = []
    for p in args.inputs:  # every input checked before a cluster is started
        try:
            sources.append(open_source(p, model.in_channels))
        except ZarrInputError as e:
            raise CliError(str(e)) from None
    client = None
    threads = None
    if args.workers is not None or args.scheduler:
        try:
            client = connect(workers=args.workers, scheduler=args.scheduler)
        except ClusterError as e:
            raise CliError(str(e)) from None
        if args.workers:
            threads = max(1, (os.cpu_count() or 1) // args.workers)
    bars = {}
    state = {"name": ""}

    def progress(phase, done, total):
        if phase not in bars:
            for b in bars.values():
                b.close()
            bars.clear()
            from tqdm import tqdm

            bars[phase] = tqdm(total=total, desc=f"{state['name']} {phase}", unit="block", leave=False,
                               disable=args.quiet or not sys.stderr.isatty(), dynamic_ncols=True)
        bars[phase].n = done
        bars[phase].refresh()

    try:
        for p, source in zip(args.inputs, sources):
            state["name"] = Path(p).name
            try:
                res = segment_to_zarr(
                    source, model, out_dir, client=client, probabilities=args.probabilities, block=args.block,
                    device=args.device, tile=args.tile, precision=args.precision, threads=threads, progress=progress,
                    **post,
                    overwrite=bool(getattr(args, "overwrite", False)),
                )
            except (ZarrInputError, InputError) as e:
                raise CliError(str(e) if Path(p).name in str(e) else f"{Path(p).name}: {e}") from None
            except KeyboardInterrupt:
                print(f"interrupted: run the same command again to resume ({Path(p).name}: finished blocks are kept "
                      f"in {out_dir})", file=sys.stderr)
                return 130
            finally:
                for b in bars.values():
                    b.close()
                bars.clear()
            if not args.quiet:
                msg = f"{Path(p).name}: {res.n_objects} objects -> {res.labels}"
                if res.probabilities is not None:
                    msg += f", {res.probabilities}"
                if res.resumed_blocks:
                    msg += f" (resumed: {res.resumed_blocks} blocks were already done)"
                print(msg)
    except Cancelled:  # pragma: no cover - no cancel flag on the command line
        return 130
    finally:
        if client is not None:
            _close(client)
    return 0


def _rescue(path: Path, write, rescue: list) -> Path | None:
    """Write a finished result to a fresh temporary folder when its output cannot be written."""
    try:
        if not rescue:
            rescue.append(Path(tempfile.mkdtemp(prefix="napari-unet-results-")))
        return write(rescue[0] / path.name)
    except OSError:
        return None


def _read(path) -> np.ndarray:
    """The image at ``path``, or a :class:`CliError` saying in one line why it cannot be read
    (missing, a folder or a pipe, unreadable, larger than the memory)."""
    from .io import ImageReadError, read_image

    p = Path(path)
    if not p.exists():
        raise CliError(f"input not found: {p}")
    try:
        return read_image(p)
    except ImageReadError as e:
        raise CliError(str(e)) from None
    except MemoryError as e:
        raise CliError(f"{p.name}: {_memory_reason(e)}") from None


def _postprocessing_flags(args) -> dict:
    """The post-processing flags (``--threshold``, ``--seed-threshold``, ``--min-size``,
    ``--smooth``, ``--fill-holes``), checked; None where not given (the model's setting)."""
    from .postprocess import PostProcessing

    _at_least("--min-size", args.min_size, 0)
    flags = {k: getattr(args, k, None) for k in PostProcessing.fields()}
    try:
        PostProcessing().replace(**flags)
    except ValueError as e:
        name, _, rest = first_line(e).partition(" ")
        raise CliError(f"--{name.replace('_', '-')} {rest}") from None
    return flags


def _scales_flag(values):
    """``--scales`` as 'auto' or a list of magnifications (CliError otherwise)."""
    from .predict import check_scales

    if [v.lower() for v in values] == ["auto"]:
        return "auto"
    try:
        return check_scales([float(v) for v in values])
    except ValueError:
        raise CliError(f"--scales takes 'auto' or magnifications between 0.25 and 4 such as '1 0.7', "
                       f"not {' '.join(values)!r}") from None


def _tile_flag(args, model) -> int | None:
    """``--tile`` rounded as the tile planner rounds it, said on stderr when it changes."""
    from .tileplan import round_tile

    if args.tile is None:
        return None
    t = round_tile(model.config, args.tile)
    if t != args.tile:
        print(f"--tile {args.tile} is not a size this network accepts: using {t}"
              + (" (or less: a tile never exceeds the one that covers the image)" if t > 2048 else ""), file=sys.stderr)
    return t


def _segment_outputs(args, inputs: list[Path], out_dir: Path) -> list[tuple[Path, list[Path]]]:
    """``(input, [labels file, probabilities file])`` for every input, all decided and checked
    (no name clash, nothing replaced without --overwrite, never an input) before any work."""
    from .io import output_stem

    by_stem: dict[str, Path] = {}
    for p in inputs:
        stem = output_stem(p)
        if stem in by_stem:
            raise CliError(f"{by_stem[stem]} and {p} would both write {stem}_labels.tif: segment them into different --output folders")
        by_stem[stem] = p
    protect = [p for p in inputs if p.exists()]
    mp = _model_path(args.model)
    if mp is not None and mp.exists():
        protect.append(mp)
    plans = []
    for p in inputs:
        stem = output_stem(p)
        outs = [out_dir / f"{stem}_labels.tif"] + ([out_dir / f"{stem}_probabilities.tif"] if args.probabilities else [])
        for q in outs:
            _check_output(q, args.overwrite, protect, what="--output folder")
        plans.append((p, outs))
    return plans


def _write_results(results, name: str, rescue: list) -> tuple[list[Path], bool]:
    """Write ``(path, write)`` results; a result that cannot be written goes to a fresh
    temporary folder, with one line saying so. Returns the paths written and whether all were."""
    from .io import OutputExistsError

    written, ok = [], True
    for q, write in results:
        try:
            written.append(write(q))
            continue
        except OutputExistsError:
            # appeared while we worked (another process): never replaced
            kept = _rescue(q, write, rescue)
            _err(f"{q} appeared while {name} was segmented and was kept; "
                 + (f"this result was saved to {kept} instead" if kept else "this result could not be saved"))
        except OSError as e:
            kept = _rescue(q, write, rescue)
            _err(f"could not write {q} ({_reason(e)}); "
                 + (f"the result was saved to {kept} instead" if kept else "the result could not be saved anywhere"))
        ok = False
    return written, ok


def cmd_segment(args) -> int:
    if args.workers is not None or args.scheduler or any(_is_large_input(p) for p in args.inputs):
        return cmd_segment_large(args)
    from .device import DeviceError, resolve_device
    from .errors import InputError
    from .inputs import pick_channel
    from .io import write_labels, write_probabilities
    from .postprocess import labels_from_model_output
    from .predict import predict_probabilities

    _at_least("--batch-size", args.batch_size, 1)
    _at_least("--tile", args.tile, 1)
    post = _postprocessing_flags(args)
    channel_axis = _channel_axis(args.channel_axis)
    if args.channel is not None and channel_axis is False:
        raise CliError("--channel picks one channel along --channel-axis, which cannot be 'none'")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--output must be a folder, but {out_dir} is a file")
    _check_folder(out_dir)
    model = _load_model(args.model, args.allow_torchscript)
    try:
        resolve_device(args.device)
    except DeviceError as e:
        raise CliError(str(e)) from None
    scales = "auto" if args.scales is None else _scales_flag(args.scales)
    tile = _tile_flag(args, model)
    plans = _segment_outputs(args, [Path(p) for p in args.inputs], out_dir)

    done, finished, failed, rescue, current = [], 0, [], [], None
    try:
        for p, outs in plans:
            current = p
            bars = []  # created at the first tile, so that an error prints alone

            def progress(n_done, total, _name=p.name, _bars=bars):
                if not _bars:
                    _bars.append(_progress_bar(total, _name, args.quiet or not sys.stderr.isatty()))
                _bars[0].n = n_done
                _bars[0].refresh()

            try:
                image, axis = _read(p), channel_axis
                if args.channel is not None:
                    image, axis = pick_channel(image, args.channel, channel_axis), False
                probs = predict_probabilities(image, model, channel_axis=axis, device=args.device, tile=tile,
                                              precision=args.precision, batch_size=args.batch_size,
                                              progress=progress, tta=args.tta, scales=scales)
                del image
                labels = labels_from_model_output(probs, model, **post)
            except CliError as e:
                _err(str(e))
                failed.append(p.name)
                continue
            except (InputError, ValueError, MemoryError, FloatingPointError) as e:
                _err(f"{p.name}: {_memory_reason(e) if isinstance(e, MemoryError) else _reason(e)}")
                failed.append(p.name)
                continue
            finally:
                for b in bars:
                    b.close()
            results = [(outs[0], lambda q, _labels=labels: write_labels(q, _labels, overwrite=args.overwrite))]
            if args.probabilities:
                results.append((outs[1], lambda q, _probs=probs: write_probabilities(q, _probs, overwrite=args.overwrite)))
            written, ok = _write_results(results, p.name, rescue)
            done.extend(written)
            finished += ok
            if not ok:
                failed.append(p.name)
            elif not args.quiet:
                print(f"{p.name}: {int(labels.max())} objects -> " + ", ".join(str(w) for w in written))
    except KeyboardInterrupt as e:
        kept = f"{finished} of {len(plans)} images were finished and written to {out_dir}" if done else \
            "no result was written"
        word = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{PROG}: {word} during {current.name if current else 'start-up'}: {kept}; nothing half-written was left",
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    if failed:
        names = sorted(set(failed), key=failed.index)
        if len(plans) > 1:  # (one image: its own line said it all)
            _err(f"{len(names)} of {len(plans)} images failed ({', '.join(names)}); "
                 + (f"the others were written to {out_dir}" if finished else "nothing was written"))
        return 2
    return 0


# --------------------------------------------------------------------------- train


def _read_labels(path: Path, fmt: str):
    from . import labels as L

    raw = _read(path)
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        raw = raw[..., 0]
    try:
        if fmt == "convention":
            return L.validate_labels(raw)
        if fmt == "instances":
            lab = L.from_instances(raw)
        elif fmt == "binary":
            lab = L.from_binary(raw)
        else:
            lab = L.from_membranes(raw)
    except ValueError as e:
        raise CliError(f"{path.name}: {e}") from None
    return lab


def _pairs(images, labels, fmt, what):
    if len(images) != len(labels):
        raise CliError(f"{len(images)} {what} images but {len(labels)} label files: give one label file per image, in the same order")
    out = []
    for im, lb in zip(images, labels):
        img = _read(im)
        lab = _read_labels(Path(lb), fmt)
        if lab.shape != img.shape[:2] and lab.shape != img.shape[-2:]:
            raise CliError(f"{Path(lb).name} ({lab.shape}) does not match the size of {Path(im).name} ({img.shape})")
        out.append((img, lab))
    return out


def cmd_train(args) -> int:
    from .io import OutputExistsError
    from .model import UNetConfig
    from .modelfile import SegmentationModel, save_model
    from .train import TrainingConfig, train
    from .training.card import has_been_trained

    out = Path(args.output).expanduser()
    inputs = [*args.images, *args.labels, *(args.validation_images or []), *(args.validation_labels or [])]
    start = _model_path(args.model) if args.model else None
    if start is not None and start.exists() and out.exists() and os.path.samefile(start, out) and not args.overwrite:
        raise CliError(f"--output {out} is the --model start file: add --overwrite to replace it with the trained model, "
                       "or choose another --output")
    _check_output(out, args.overwrite, protect=inputs)
    fine_tune = {"auto": None, "yes": True, "no": False}[args.fine_tune]
    strokes = bool(args.model) if fine_tune is None else fine_tune
    given = {k: v for k, v in dict(
        iterations=args.iterations, tile=args.tile, learning_rate=args.learning_rate,
        validate_every=args.validate_every, distillation=args.distillation, distill_distance=args.distill_distance,
        holdout=args.holdout, train_layers=args.train_layers, mix_with_start=args.mix_with_start).items()
        if v is not None}
    try:
        # fine-tuning a model takes the defaults measured for strokes, a new network the general ones
        cfg = (TrainingConfig.for_strokes if strokes else TrainingConfig)(
            optimizer=args.optimizer, seed=args.seed, precision=args.precision, device=args.device, w0=args.w0,
            sigma=args.sigma, batch_size=args.batch_size, fine_tune=fine_tune, **given,
        )
    except ValueError as e:
        msg = str(e)
        for field in ("iterations", "tile", "batch_size", "learning_rate", "validate_every", "w0", "sigma"):
            msg = msg.replace(f"{field} must", f"--{field.replace('_', '-')} must").replace(
                f" and {field} >", f" and --{field} >")
        msg = msg.replace("mix_with_start is", "--mix-with-start is")
        raise CliError(msg) from None
    pairs = _pairs(args.images, args.labels, args.label_format, "training")
    val = _pairs(args.validation_images or [], args.validation_labels or [], args.label_format, "validation")
    if args.model:
        model = _load_model(args.model, args.allow_torchscript)
        start_name = model.name
    else:
        start_name = None
        ch = pairs[0][0].shape[-1] if pairs[0][0].ndim == 3 else 1
        names = args.class_names.split(",") if args.class_names else (
            ["background", "cell", "cell boundary"] if args.classes == 3 else ["background", "cell"])
        if len(names) != args.classes:
            raise CliError(f"--class-names gives {len(names)} names for --classes {args.classes}")
        try:
            model = SegmentationModel.new(
                UNetConfig(in_channels=ch, base_channels=args.base_channels, depth=args.depth, padding=args.padding,
                           n_classes=args.classes, input_compression=args.input_compression,
                           keep_linear=args.keep_linear),
                class_names=names,
            )
        except ValueError as e:
            raise CliError(str(e)) from None
    # the trained model's own name and description, never the start model's
    name = args.name or out.name.removesuffix(".safetensors")
    # a fine-tuned model describes itself (start model, strokes, score) unless --description says otherwise
    if args.description:
        description = args.description
    elif start_name and (fine_tune if fine_tune is not None else has_been_trained(model)):
        description = None  # train() writes what it was fine-tuned from and on
    elif start_name:
        description = f"trained further from {start_name}" + (f" ({model.description})" if model.description else "")
    else:
        description = model.description
    from .train import check_annotations

    # without a single cell train() refuses in one line; no warnings before that
    told = check_annotations([p[1] for p in pairs]) if any(np.any(p[1] >= 2) for p in pairs) else []
    for msg in told:
        print(f"{PROG}: warning: {msg}", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=cfg.iterations, desc="training", unit="it", disable=args.quiet, dynamic_ncols=True)
    cancel = threading.Event()

    def cb(p):
        bar.update(1)
        post = {"loss": f"{p.loss:.4f}"}
        if p.validation_score is not None:
            post["val"] = f"{p.validation_score:.3f}"
        bar.set_postfix(post, refresh=False)

    def on_sigint(signum, frame):
        # first Ctrl-C: stop after this iteration and save; the second one stops at once
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print(f"{'' if args.quiet else chr(10)}{PROG}: stopping after this iteration and saving the best model so far "
              "(Ctrl-C again to stop at once)", file=sys.stderr)

    old = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # printed here, in plain words, instead
            res = train(model, [p[0] for p in pairs], [p[1] for p in pairs], cfg, validation=val, callback=cb,
                        cancel=cancel, checkpoint=out, channel_axis=_channel_axis(args.channel_axis),
                        overwrite=args.overwrite, name=name, description=description,
                        image_names=[Path(p).name for p in args.images])
    except KeyboardInterrupt as e:
        res = getattr(e, "result", None)
        code = 143 if isinstance(e, Terminated) else 130
        if res is None:  # stopped before training began
            bar.close()
            print(f"{PROG}: {'terminated' if code == 143 else 'interrupted'} before training began: nothing was written",
                  file=sys.stderr)
            return code
    except OutputExistsError:
        raise CliError(f"{out} appeared while training started: it was kept; add --overwrite or choose another --output") from None
    except OSError as e:
        res = getattr(e, "result", None)
        if res is None:
            raise CliError(_reason(e)) from None
        kept = _rescue(out, lambda q: save_model(res.model, q), [])
        raise CliError(f"could not write {out} ({_reason(e)}); "
                       + (f"the trained model was saved to {kept} instead" if kept else "the trained model is lost")) from None
    except (ValueError, FloatingPointError) as e:
        raise CliError(_reason(e)) from None
    finally:
        bar.close()
        if old is not None:
            signal.signal(signal.SIGINT, old)
    if res.cancelled:
        word = "terminated" if code == 143 else "interrupted"
        if res.checkpoint is not None:
            print(f"{PROG}: {word} after {len(res.history)} of {cfg.iterations} iterations: the best model so far "
                  f"(iteration {res.best_iteration}) was saved to {res.checkpoint}; its card records both", file=sys.stderr)
        else:
            print(f"{PROG}: {word} before the first iteration: nothing was written"
                  + (f" ({out} is unchanged)" if out.exists() else ""), file=sys.stderr)
        return code or 130
    for msg in res.warnings:
        if msg not in told:
            print(f"{PROG}: warning: {msg}", file=sys.stderr)
    best = ""
    if res.best_score is not None and res.scored_on != "training loss":
        best = f", best {res.scored_on} score {res.best_score:.4f}"
        if res.start_score is not None:
            best += f", start model {res.start_score:.4f}"
        if res.held_out:
            c, b = res.held_out["cells"], res.held_out["background_strokes"]
            best += f"; held out: {c} cell{'s' * (c != 1)}, {b} background stroke{'s' * (b != 1)}"
    what = "kept the start model" if res.kept_start else f"best iteration {res.best_iteration}"
    print(f"trained {len(res.history)} iterations in {res.seconds:.0f} s ({what}{best}) -> {out}")
    return 0


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args) -> int:
    from . import labels as L
    from .metrics import evaluate

    if len(args.predictions) != len(args.truth):
        raise CliError(f"{len(args.predictions)} predictions but {len(args.truth)} truth files: give them in pairs, in the same order")
    rows = []
    for pp, tp in zip(args.predictions, args.truth):
        pred, truth = _read(pp), _read(tp)
        for a, path in ((pred, pp), (truth, tp)):
            if a.ndim != 2:
                raise CliError(f"{Path(path).name} has shape {a.shape}: evaluate takes 2D label images; "
                               "save one plane per file")
        try:
            if args.truth_format == "membranes":
                truth = L.to_instances(L.from_membranes(truth))
            elif args.truth_format == "convention":
                truth = L.to_instances(truth)
            if pred.shape != truth.shape:
                raise CliError(f"{Path(pp).name} {pred.shape} and {Path(tp).name} {truth.shape} differ in shape")
            r = evaluate(pred, truth)
        except ValueError as e:
            raise CliError(f"{Path(pp).name} / {Path(tp).name}: {_reason(e)}") from None
        r["image"] = Path(pp).name
        rows.append(r)
    keys = ["pixel_error", "rand_error", "iou", "ap50"]
    if args.json:
        print(json.dumps(rows, indent=1, default=float))
        return 0
    w = max(len(r["image"]) for r in rows + [{"image": "mean"}])
    print(f"{'image':<{w}}  " + "  ".join(f"{k:>11}" for k in keys))
    for r in rows:
        print(f"{r['image']:<{w}}  " + "  ".join(f"{r[k]:>11.4f}" for k in keys))
    if len(rows) > 1:
        print(f"{'mean':<{w}}  " + "  ".join(f"{np.mean([r[k] for r in rows]):>11.4f}" for k in keys))
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args) -> int:
    from .bioimageio import BioimageioError, export_bioimageio

    test_image = _read(args.test_image) if args.test_image else None
    model = _load_model(args.model, args.allow_torchscript)
    try:
        out = export_bioimageio(
            model, args.output, overwrite=args.overwrite, test_image=test_image, authors=args.author,
            license=args.license, torchscript=not args.no_torchscript,
            builtin=_is_builtin(args.model),
        )
    except BioimageioError as e:
        raise CliError(str(e)) from None
    if not args.quiet:
        print(f"{model.name} -> {out} (bioimage.io model package; check it with 'bioimageio test {out}')")
    return 0


def _is_builtin(spec: str) -> bool:
    from .builtin import builtin_model_path

    return builtin_model_path(spec) is not None


# --------------------------------------------------------------------------- parser


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return v


_TS_HELP = ("accept a bioimage.io package whose only weights of this U-Net are TorchScript; TorchScript is code: "
            "use only packages you trust")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="U-Net segmentation (Ronneberger et al. 2015) for microscopy.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the built-in models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("segment", help="segment images into instance labels (and probabilities)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tif or png images; .zarr / OME-Zarr (or big tifs with --workers) are segmented block by block")
    p.add_argument("--model", required=True,
                   help="built-in model name (see 'napari-unet models'), model file or bioimage.io package (.zip, rdf.yaml)")
    p.add_argument("--allow-torchscript", action="store_true", help=_TS_HELP)
    p.add_argument("--output", required=True,
                   help="folder for <name>_labels.tif (and <name>_probabilities.tif), <name> the input's file name "
                        "without its suffix")
    p.add_argument("--overwrite", action="store_true",
                   help="replace result files that already exist (inputs and the model file are never replaced)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--tile", type=int, help="input tile edge in pixels (rounded to the nearest size the network accepts)")
    p.add_argument("--batch-size", type=int, help="tiles per forward pass (default: 1 on CPU, from memory on GPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 where the hardware runs it natively (agrees with float32, see docs), else float32")
    p.add_argument("--probabilities", action="store_true", help="also write float32 class probabilities (classes first)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the 8 rotations/flips (8x the time; see docs/models.md)")
    p.add_argument("--scales", nargs="+", metavar="S",
                   help="magnifications whose probabilities are averaged: 'auto' (the default; also at 0.7x, kept "
                        "where the network is surer), '1' (the image as it is, fastest), or numbers such as '1 0.7' "
                        "(see docs/models.md)")
    p.add_argument("--channel-axis", help="axis holding channels, or 'none' for a stack of grey planes (needed for 4D)")
    p.add_argument("--channel", type=int, metavar="K",
                   help="segment channel K only (along --channel-axis; default the small last or the first axis)")
    p.add_argument("--threshold", type=float, help="foreground probability threshold, 0 to 1 (default: the model's)")
    p.add_argument("--seed-threshold", type=float, help="split touching objects from cores above this probability")
    p.add_argument("--min-size", type=int, help="remove objects smaller than this many pixels")
    p.add_argument("--smooth", type=float, metavar="SIGMA", help="blur the probabilities by SIGMA pixels first")
    p.add_argument("--fill-holes", action=argparse.BooleanOptionalAction, default=None,
                   help="fill holes inside objects (--no-fill-holes: do not)")
    p.add_argument("--workers", type=int,
                   help="segment block by block on a local dask cluster of N worker processes, writing OME-Zarr "
                        "(<stem>_labels.zarr); .zarr inputs are always segmented block by block")
    p.add_argument("--scheduler", help="address of an existing dask scheduler (tcp://host:8786) to segment on")
    p.add_argument("--block", type=int, default=2048, help="block edge in pixels for block-wise segmentation")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train", help="train or fine-tune a model from labelled images")
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", required=True, help="one label image per image, same order")
    p.add_argument("--label-format", default="convention", choices=["convention", "instances", "binary", "membranes"],
                   help="convention: 0 not annotated, 1 background, 2+ cells; instances: 0 background, k object; "
                        "binary: nonzero foreground; membranes: ISBI 2012 style (255 interior, 0 membrane)")
    p.add_argument("--model", help="start from this built-in model, file or bioimage.io package (default: a new network)")
    p.add_argument("--allow-torchscript", action="store_true", help=_TS_HELP)
    p.add_argument("--output", required=True,
                   help="model file to write (used exactly as given); it holds the best model so far while training")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output if it exists (needed to replace the --model start file); "
                        "the training and validation images and labels are never replaced")
    p.add_argument("--iterations", type=int, help="default: 150 when fine-tuning (measured for strokes), else 500")
    p.add_argument("--learning-rate", type=_finite, help="default: 1e-4 when fine-tuning, else 1e-3")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="sgd: the paper's, momentum 0.99")
    p.add_argument("--tile", type=int, help="input tile edge; default: 252 when fine-tuning, else 428")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--validation-images", nargs="+")
    p.add_argument("--validation-labels", nargs="+")
    p.add_argument("--validate-every", type=int, help="default: 25 when fine-tuning, else 50")
    p.add_argument("--fine-tune", default="auto", choices=["auto", "yes", "no"],
                   help="fine-tuning safeguards (distillation, hold-out, keep the start model unless beaten); "
                        "auto: yes when --model is a trained model")
    p.add_argument("--distillation", type=float,
                   help="fine-tuning: weight of the start model's predictions on unpainted pixels (0 = off; default 1)")
    p.add_argument("--distill-distance", type=float,
                   help="fine-tuning: pixels over which the start model's say grows away from the strokes")
    p.add_argument("--holdout", type=float,
                   help="fine-tuning without validation data: share of painted objects held out to check (0 = none)")
    p.add_argument("--train-layers", choices=["all", "decoder"], help="decoder: freeze the contracting path")
    p.add_argument("--mix-with-start", type=_finite, metavar="SHARE",
                   help="fine-tuning: keep the start weights moved only SHARE of the way to the fine-tuned ones "
                        "(1 = the fine-tuned weights; default: the measured one, docs/training.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 autocast where the hardware runs it natively, else float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--w0", type=_finite, default=10.0)
    p.add_argument("--sigma", type=_finite, default=5.0)
    p.add_argument("--base-channels", type=int, default=16, help="new network only")
    p.add_argument("--depth", type=int, default=5, help="new network only")
    p.add_argument("--padding", default="valid", choices=["valid", "same"], help="new network only")
    p.add_argument("--input-compression", type=_finite, default=0.0, metavar="K",
                   help="new network only: log compression of the normalised input, x -> log(1 + K x) / log(1 + K), "
                        "so dim cells next to bright debris keep contrast (0, the paper: none; measured worse for the "
                        "built-in fluo-nuclei, docs/models.md)")
    p.add_argument("--keep-linear", action="store_true",
                   help="new network only, with --input-compression: the network sees the linear input beside "
                        "the compressed one and can use either")
    p.add_argument("--classes", type=int, default=2, choices=[2, 3],
                   help="new network only: 2 = the paper's background/cell; 3 adds a cell-boundary class "
                        "that keeps touching cells apart")
    p.add_argument("--class-names", help="new network only, comma-separated (default: background,cell[,cell boundary])")
    p.add_argument("--channel-axis")
    p.add_argument("--name", help="the trained model's name (default: the output file's name)")
    p.add_argument("--description")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score label images against ground truth")
    p.add_argument("--predictions", nargs="+", required=True, help="instance label images (0 = background)")
    p.add_argument("--truth", nargs="+", required=True)
    p.add_argument("--truth-format", default="instances", choices=["instances", "membranes", "convention"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write a model as a bioimage.io model package (zip)")
    p.add_argument("model", metavar="MODEL", help="built-in model name or model file (or bioimage.io package)")
    p.add_argument("output", metavar="OUT.zip", help="package to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.zip if it exists")
    p.add_argument("--test-image", help="image to cut the test tensors and the cover from (default: a sample image)")
    p.add_argument("--author", action="append", help="author of the model (repeat for several)")
    p.add_argument("--license", help="SPDX licence of the weights (default: BSD-3-Clause for the built-in models, else CC-BY-4.0)")
    p.add_argument("--no-torchscript", action="store_true", help="do not add TorchScript weights")
    p.add_argument("--allow-torchscript", action="store_true", help=_TS_HELP)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_export)
    return ap


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {first_line(message)}", file=sys.stderr)


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except CliError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt as e:  # outside the places that say more (loading, reading)
        print(f"{PROG}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}: nothing was written",
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except MemoryError as e:
        _err(_memory_reason(e))
        return 2
    except (OSError, ValueError, FloatingPointError, RuntimeError) as e:
        # anything the checks above did not foresee: still one line, and how to see more
        _err(f"{_reason(e)} (set NAPARI_UNET_DEBUG=1 for the full traceback)")
        if os.environ.get("NAPARI_UNET_DEBUG"):
            raise
        return 2
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
