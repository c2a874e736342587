"""bioimage.io model packages: export our models to the model zoo format, and load packages
that hold our U-Net.

A bioimage.io model package (https://bioimage.io) is a zip of an ``rdf.yaml`` description
(format 0.5) and the files it names: weights, test tensors, cover, documentation.

* :func:`export_bioimageio` writes one for a :class:`~napari_unet.modelfile.SegmentationModel`:
  ``pytorch_state_dict`` weights whose architecture is :class:`napari_unet.model.UNet` with its
  keyword arguments, TorchScript weights converted from them, the normalisation as
  preprocessing, softmax as postprocessing, the context the valid convolutions consume as the
  output's size offset, test tensors, a cover, a README from the model card, the citation of
  the U-Net paper and the provenance. It needs ``bioimageio.spec`` (``pip install
  'napari-unet[bioimageio]'``), which validates the description before anything is written.
* :func:`load_bioimageio` reads a package (zip, or an ``rdf.yaml`` beside its files) whose
  weights are a ``pytorch_state_dict`` of this package's U-Net, without pickle
  (``torch.load(weights_only=True)``) and without bioimageio installed. TorchScript weights
  (which are code) are read only when the caller opts in, and only to take their tensors into
  our own U-Net. Anything else is refused with one line saying what the package holds.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import first_line
from .modelheader import ModelFileError

__all__ = [
    "BioimageioError",
    "UNET_CITATION",
    "UNET_DOI",
    "export_bioimageio",
    "is_bioimageio_source",
    "load_bioimageio",
]

UNET_DOI = "10.1007/978-3-319-24574-4_28"
UNET_CITATION = (
    "Ronneberger O., Fischer P., Brox T. (2015). U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015, LNCS 9351, pp. 234-241."
)
INSTALL_HINT = "pip install 'napari-unet[bioimageio]'"

#: where the architecture lives, as written into (and required from) a package
ARCH_MODULE = "napari_unet.model"
ARCH_CALLABLE = "UNet"
#: our own section of the package's ``config``
CONFIG_KEY = "napari_unet"

_INPUT_ID = "raw"
_OUTPUT_ID = "probabilities"
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_TEST_EDGE = 380  # largest test input edge (pixels); the test output is smaller by the context


class BioimageioError(ModelFileError):
    """A bioimage.io package that cannot be written or used; the message says why in one line."""


def is_bioimageio_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package by its form (a ``.zip`` or a ``.yaml``)."""
    name = str(path).lower()
    return name.endswith((".zip", ".yaml", ".yml"))


# =========================================================================== export


def _require_spec() -> None:
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise BioimageioError(f"writing bioimage.io packages needs bioimageio.spec: {INSTALL_HINT}") from None


def _identifier(text: str, fallback: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]+", "_", str(text)).strip("_").lower()
    if not s:
        s = fallback
    if s[0].isdigit():
        s = f"{fallback}_{s}"
    return s


def _unique(names: list[str]) -> list[str]:
    out, seen = [], {}
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k}")
    return out


def _package_name(model) -> str:
    name = re.sub(r"[^0-9A-Za-z_+\- ()]+", " ", model.name or "").strip()
    name = " ".join(name.split())[:64]
    if len(name) < 5:
        name = f"U-Net {name or 'model'}".strip()
    return name


def _input_geometry(config):
    """``(min, step, offset, halo)`` of the input edge: valid sizes are ``min + n*step``; the
    output edge is ``input + offset``; ``halo`` output pixels each side should be cropped."""
    from .model import alignment, context_margin, is_valid_input_size
    from .tileplan import SAME_HALO

    step = alignment(config)
    if config.padding == "valid":
        smallest = next(n for n in range(1, 64 * step) if is_valid_input_size(config, n))
        return smallest, step, -2 * context_margin(config), 0
    # "same": any multiple of the alignment; its zero padding disturbs SAME_HALO pixels each side
    smallest = step * (2 * SAME_HALO // step + 1)
    return smallest, step, 0, SAME_HALO


def _test_image(model, test_image):
    """One ``(C, H, W)`` float32 plane for the test tensors."""
    from .errors import InputError
    from .inputs import as_planes

    if test_image is None:
        from .samples import SAMPLES, sample_image

        if model.in_channels != 1:
            raise BioimageioError(
                f"the model takes {model.in_channels} channels: give a test image with that many channels "
                "(--test-image; in napari, select such an image layer)"
            )
        wanted = {model.name, str(model.provenance.get("trained_from", ""))}
        name = next((k for k, v in SAMPLES.items() if v.get("model") in wanted), "nuclei")
        test_image = sample_image(name)
    try:
        planes, _ = as_planes(np.asarray(test_image), model.in_channels, None)
    except InputError as e:
        raise BioimageioError(f"test image: {e}") from None
    return np.asarray(planes[0], dtype=np.float32)


def _crop_for_test(plane: np.ndarray, config) -> np.ndarray:
    lo, step, _, _ = _input_geometry(config)
    edge = min(plane.shape[-2:] + (_TEST_EDGE,))
    if edge < lo:
        raise BioimageioError(
            f"the test image ({plane.shape[-2]}x{plane.shape[-1]}) is smaller than the network's smallest input ({lo}x{lo})"
        )
    t = lo + (edge - lo) // step * step
    y0 = (plane.shape[-2] - t) // 2
    x0 = (plane.shape[-1] - t) // 2
    return np.ascontiguousarray(plane[:, y0 : y0 + t, x0 : x0 + t])


def _reference_output(net, normalization, x: np.ndarray) -> np.ndarray:
    """The test output for the raw test input ``x`` ``(C, h, w)``, as ``bioimageio test``
    computes it: normalise (statistics of the whole input), the network, softmax; no padding
    and no halo cropping (for a ``same`` network the halo is left in)."""
    import torch

    xn = normalization.apply(x, normalization.stats(x))
    with torch.inference_mode():
        y = torch.softmax(net(torch.from_numpy(xn[None])), dim=1)[0].numpy()
    return np.ascontiguousarray(y, dtype=np.float32)


def _cover(x: np.ndarray, y: np.ndarray, fg: int, path: Path) -> None:
    """A 2:1 cover: the (centre of the) test input beside the foreground probability."""
    import imageio.v3 as iio

    h, w = y.shape[-2:]
    dy, dx = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    img = x[:, dy : dy + h, dx : dx + w]
    img = img[:3].mean(axis=0) if img.shape[0] > 1 else img[0]
    lo, hi = np.percentile(img, (1, 99.8))
    left = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    right = np.clip(y[fg], 0, 1)
    grey = (np.concatenate([left, right], axis=1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[:, w:, 0] = (right * 255).astype(np.uint8)  # probability in magenta
    rgb[:, w:, 1] = 0
    iio.imwrite(path, rgb)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _documentation(model, geometry, license_id: str) -> str:
    c = model.config
    n = model.normalization
    lo, step, offset, halo = geometry
    prov = model.provenance or {}
    lines = [
        f"# {model.name}",
        "",
        model.description or "A U-Net trained with napari-unet.",
        "",
        "The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015), exported by "
        "[napari-unet](https://github.com/napari-unet/napari-unet).",
        "",
        "## Model",
        "",
        f"- classes (output channels, softmax): {', '.join(model.class_names)}; "
        f"foreground class: {model.class_names[model.foreground_class]}",
        f"- input channels: {c.in_channels}",
        f"- network: depth {c.depth}, {c.base_channels} feature maps at the first level, {c.padding} convolutions, "
        f"drop-out {c.dropout} (`napari_unet.model.UNet(**kwargs)`)",
        f"- input edge: {lo} + n x {step} pixels; "
        + (f"the output is {-offset} pixels smaller ({-offset // 2} pixels of context consumed each side, "
           "no border effects: tile with that overlap)" if offset else
           f"the output is as large as the input; crop {halo} pixels each side (zero-padding border effects)"),
        "- preprocessing: "
        + (f"percentiles {_fmt(n.low)} and {_fmt(n.high)} of each image and channel mapped to 0 and 1"
           if n.mode == "percentile" else f"(x - {_fmt(n.offset)}) / {_fmt(n.scale)}"),
        "- post-processing to instance labels in napari-unet: "
        + ", ".join(f"{k} = {_fmt(v)}" for k, v in model.postprocessing.to_dict().items()),
        "",
        "## Use",
        "",
        "In napari-unet: `napari-unet segment IMAGE --model THIS.zip --output DIR`, or choose the package "
        "in the plugin's model file field; `load_model('THIS.zip')` in Python. Elsewhere: any bioimage.io "
        "consumer that runs `pytorch_state_dict` (with napari-unet installed) or `torchscript` weights.",
        "",
        "## Training",
        "",
    ]
    for key in ("training_data", "trained_from", "iterations", "best_iteration", "training_images",
                "annotated_pixels", "painted_pixels", "date", "command"):
        if key in prov:
            lines.append(f"- {key.replace('_', ' ')}: {_fmt(prov[key])}")
    if isinstance(prov.get("training"), dict):
        t = prov["training"]
        lines.append("- settings: " + ", ".join(f"{k} {_fmt(v)}" for k, v in t.items()))
    if len(lines) and lines[-1] == "":
        lines.append("No training record in the model file.")
    lines += ["", "## Validation", ""]
    scores = prov.get("scores") or {}
    if isinstance(scores, dict) and scores:
        keys = ["pixel_error", "rand_error", "iou", "ap50", "f1"]
        lines.append("Held-out scores recorded when the model was made (napari-unet's metrics):")
        lines.append("")
        lines.append("| data | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for data, s in scores.items():
            if isinstance(s, dict):
                lines.append(f"| {data} | " + " | ".join(_fmt(s.get(k, "")) for k in keys) + " |")
    else:
        lines.append("No held-out scores are recorded for this model. Validate it on annotated images like yours "
                     "(`napari-unet evaluate`) before trusting its labels.")
    lines += [
        "",
        "The test tensors in this package are a crop of a sample image and this model's probabilities for it.",
        "",
        "## Licence and citation",
        "",
        f"Weights: {license_id}. Please cite the U-Net paper: {UNET_CITATION} doi:{UNET_DOI}",
        "",
    ]
    return "\n".join(lines)


def _traced(net, x):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, still what bioimage.io runs
        with torch.no_grad():
            return torch.jit.trace(net, x, check_trace=False)


def export_bioimageio(
    model,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    test_image=None,
    authors: list[str] | None = None,
    license: str | None = None,
    torchscript: bool = True,
    builtin: bool | None = None,
) -> Path:
    """Write ``model`` (a :class:`SegmentationModel`, a built-in name or a model file) as a
    bioimage.io model package (zip, format 0.5) to ``path``, atomically.

    Parameters
    ----------
    test_image : array-like, optional
        Image to crop the test tensors and the cover from (default: the package's sample
        image for this model, else the nuclei sample; needed for multi-channel models).
    authors : list of str, optional
        Who made the model (default: the napari-unet developers for the built-in models).
    license : str, optional
        SPDX identifier of the weights' licence (default: BSD-3-Clause, napari-unet's, for
        the built-in models, else CC-BY-4.0).
    torchscript : bool
        Also include TorchScript weights (for consumers without napari-unet installed).
    builtin : bool, optional
        Whether ``model`` is one of the built-in models (default: whether it was given by a
        built-in name); sets the default authors and licence.

    Raises :class:`BioimageioError` (one line) if the file exists and ``overwrite`` is False,
    if bioimageio.spec is missing or if the description does not validate.
    """
    import torch

    from .builtin import builtin_model_path
    from .io import atomic_write
    from .modelfile import SegmentationModel, load_model

    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise BioimageioError(f"a bioimage.io package is a .zip file: name it {path.with_suffix('.zip').name}")
    if path.is_dir():
        raise BioimageioError(f"{path} is a folder: give a .zip file name")
    if path.exists() and not overwrite:
        raise BioimageioError(f"{path} exists; choose another name or pass --overwrite (overwrite=True) to replace it")
    if not isinstance(model, SegmentationModel):
        if builtin is None:
            builtin = builtin_model_path(str(model)) is not None
        model = load_model(model)
    _require_spec()
    from bioimageio.spec import ValidationContext, save_bioimageio_package
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromLibraryDescr,
        Author,
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        Config,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        OutputTensorDescr,
        ParameterizedSize,
        PytorchStateDictWeightsDescr,
        ReflectPadding,
        ScaleLinearDescr,
        ScaleLinearKwargs,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        SizeReference,
        SoftmaxDescr,
        SoftmaxKwargs,
        SpaceInputAxis,
        SpaceOutputAxis,
        SpaceOutputAxisWithHalo,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from . import __version__

    config = model.config
    geometry = _input_geometry(config)
    lo, step, offset, halo = geometry
    license_id = license or ("BSD-3-Clause" if builtin else "CC-BY-4.0")
    if authors is None:
        authors = ["napari-unet developers"] if builtin else []
    for a in authors:
        if not str(a).strip() or "/" in str(a) or "\\" in str(a):
            raise BioimageioError(f"author {a!r}: give a person's or group's name (no slashes)")
    try:
        LicenseId(license_id)
    except ValueError:
        raise BioimageioError(
            f"{license_id!r} is not an SPDX licence identifier bioimage.io accepts (for example CC-BY-4.0, MIT, "
            "BSD-3-Clause, CC0-1.0)"
        ) from None
    # a private float32 CPU copy: the caller's model (maybe on a GPU, channels-last) is left as it is
    net = copy.deepcopy(model.network).to("cpu", torch.float32).to(memory_format=torch.contiguous_format).eval()
    x = _crop_for_test(_test_image(model, test_image), config)
    y = _reference_output(net, model.normalization, x)
    torch_version = torch.__version__.split("+")[0]

    work = Path(tempfile.mkdtemp(prefix="napari-unet-bioimageio-"))
    try:
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        torch.save(state, work / "weights.pt")
        np.save(work / "test_input.npy", x[None])
        np.save(work / "test_output.npy", y[None])
        import tifffile

        tifffile.imwrite(work / "sample_input.tif", x[None], metadata={"axes": "QCYX"})
        tifffile.imwrite(work / "sample_output.tif", y[None], metadata={"axes": "QCYX"})
        _cover(x, y, model.foreground_class, work / "cover.png")
        (work / "README.md").write_text(_documentation(model, geometry, license_id), encoding="utf-8")
        (work / "environment.yaml").write_text(
            "name: napari-unet\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
            f"  - python>=3.10\n  - pytorch>={torch_version.rsplit('.', 1)[0]}\n  - pip\n"
            f"  - pip:\n      - napari-unet>={__version__}\n",
            encoding="utf-8",
        )
        weights = {
            "pytorch_state_dict": PytorchStateDictWeightsDescr(
                source=work / "weights.pt",
                architecture=ArchitectureFromLibraryDescr(
                    import_from=ARCH_MODULE, callable=Identifier(ARCH_CALLABLE), kwargs=config.to_dict()
                ),
                pytorch_version=Version(torch_version),
                dependencies=FileDescr(source=work / "environment.yaml"),
                comment="float32 state dict of napari_unet.model.UNet; load with torch.load(weights_only=True)",
            )
        }
        if torchscript:
            # traced at the smallest input; it must hold for other sizes (its crops follow the shape)
            xn = model.normalization.apply(x, model.normalization.stats(x))
            small = np.ascontiguousarray(xn[:, :lo, :lo])
            traced = _traced(net, torch.from_numpy(small)[None])
            check = torch.from_numpy(np.pad(small, ((0, 0), (0, step), (0, 2 * step)), mode="reflect"))[None]
            with torch.no_grad():
                same = torch.allclose(traced(check), net(check), atol=1e-5, rtol=1e-4)
            if not same:  # pragma: no cover - would be a tracing bug
                raise BioimageioError("the TorchScript conversion does not reproduce the network; export with torchscript=False")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced.save(str(work / "weights_torchscript.pt"))
            weights["torchscript"] = TorchscriptWeightsDescr(
                source=work / "weights_torchscript.pt", pytorch_version=Version(torch_version),
                parent="pytorch_state_dict", comment="torch.jit.trace of the pytorch_state_dict network",
            )
        channel_in = _unique([_identifier(f"channel{i}", "channel") for i in range(config.in_channels)])
        channel_out = _unique([_identifier(n, "class") for n in model.class_names])
        n = model.normalization
        if n.mode == "percentile":
            norm = ScaleRangeDescr(kwargs=ScaleRangeKwargs(
                axes=[AxisId("y"), AxisId("x")], min_percentile=float(n.low), max_percentile=float(n.high)))
        else:
            norm = ScaleLinearDescr(kwargs=ScaleLinearKwargs(gain=1.0 / float(n.scale), offset=-float(n.offset) / float(n.scale)))
        preprocessing = [] if (n.mode == "fixed" and n.offset == 0 and n.scale == 1) else [norm]
        context = -offset // 2
        space_in = [
            SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=lo, step=step),
                           description=f"valid sizes {lo} + n*{step}")
            for a in ("y", "x")
        ]
        if halo:
            space_out = [SpaceOutputAxisWithHalo(id=AxisId(a), size=SizeReference(
                tensor_id=TensorId(_INPUT_ID), axis_id=AxisId(a), offset=0), halo=halo) for a in ("y", "x")]
        else:
            space_out = [SpaceOutputAxis(id=AxisId(a), size=SizeReference(
                tensor_id=TensorId(_INPUT_ID), axis_id=AxisId(a), offset=offset),
                description=f"valid convolutions: {context} pixels of input context each side") for a in ("y", "x")]
        inputs = [InputTensorDescr(
            id=TensorId(_INPUT_ID),
            description="image (grey or channels), any intensity range: normalised by the preprocessing",
            axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in channel_in]), *space_in],
            test_tensor=FileDescr(source=work / "test_input.npy"),
            sample_tensor=FileDescr(source=work / "sample_input.tif"),
            data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=preprocessing,
            pad=ReflectPadding() if halo else None,
        )]
        outputs = [OutputTensorDescr(
            id=TensorId(_OUTPUT_ID),
            description=f"class probabilities ({', '.join(model.class_names)})",
            axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in channel_out]), *space_out],
            test_tensor=FileDescr(source=work / "test_output.npy"),
            sample_tensor=FileDescr(source=work / "sample_output.tif"),
            data=IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[SoftmaxDescr(kwargs=SoftmaxKwargs(axis=AxisId("channel")))],
        )]
        card = model.header()
        card["provenance"] = dict(card["provenance"])
        card["provenance"].setdefault("exported", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        from .modelheader import FORMAT_VERSION

        card["format_version"] = FORMAT_VERSION
        card["exported_by"] = f"napari-unet {__version__}"
        card = json.loads(json.dumps(card, default=str))  # plain YAML values only
        with ValidationContext(perform_io_checks=True):
            try:
                descr = ModelDescr(
                    name=_package_name(model),
                    description=(model.description or f"U-Net {model.name} trained with napari-unet")[:1024],
                    authors=[Author(name=str(a).strip()) for a in authors],
                    cite=[CiteEntry(text=UNET_CITATION, doi=UNET_DOI)],
                    license=LicenseId(license_id),
                    documentation=FileDescr(source=work / "README.md"),
                    covers=[FileDescr(source=work / "cover.png")],
                    tags=["unet", "segmentation", "2d", "pytorch", "napari-unet", "instance-segmentation"],
                    inputs=inputs,
                    outputs=outputs,
                    weights=WeightsDescr(**weights),
                    timestamp=datetime.now(timezone.utc),
                    config=Config(**{CONFIG_KEY: card}),
                )
            except Exception as e:  # pydantic's ValidationError: condense to one line
                raise BioimageioError(f"the bioimage.io description does not validate: {_short(_first_error(e))}") from None
        zpath = work / "package.zip"
        save_bioimageio_package(descr, output_path=zpath)

        def write(tmp):
            shutil.copyfile(zpath, tmp)

        atomic_write(path, write, overwrite=overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _first_error(e: Exception) -> str:
    errs = getattr(e, "errors", None)
    if callable(errs):
        try:
            first = errs()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            return f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", ""))
        except Exception:
            pass
    return first_line(e)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# =========================================================================== import


class _Package:
    """The files of a package: a zip, or the folder of an ``rdf.yaml``. Local files only."""

    def __init__(self, path: Path):
        self.path = path
        self.label = path.name
        self._zip = None
        if path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise BioimageioError(f"{path.name} is not a readable zip file ({e})") from None
            names = set(self._zip.namelist())
            rdf = next((n for n in _RDF_NAMES if n in names), None)
            if rdf is None:
                raise BioimageioError(f"{path.name} is a zip file but not a bioimage.io package (no rdf.yaml inside)")
            self.rdf_name = rdf
            self.root = None
        else:
            self.rdf_name = path.name
            self.root = path.parent

    def close(self):
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str) -> bytes:
        name = str(name)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", name):
            raise BioimageioError(
                f"{self.label} refers to {name}, which is not in the package: napari-unet reads local files only; "
                "download the whole package (zip) and open that"
            )
        rel = PurePosixPath(name.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise BioimageioError(f"{self.label} refers to {name}, outside the package")
        try:
            if self._zip is not None:
                size = self._zip.getinfo(str(rel)).file_size  # as declared; a zip bomb declares it too
            else:
                size = (self.root / rel).stat().st_size
            if size > _memory_for_files():
                raise BioimageioError(f"{self.label}: {name} would take {size / 2**30:.1f} GiB of memory to read")
            if self._zip is not None:
                return self._zip.read(str(rel))
            return (self.root / rel).read_bytes()
        except (KeyError, OSError):
            raise BioimageioError(f"{self.label}: {name} named in its rdf.yaml is missing from the package") from None


def _memory_for_files() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available * 0.5)
    except Exception:  # pragma: no cover - psutil missing
        return 4 * 2**30


def _source(entry) -> tuple[str, str | None]:
    if isinstance(entry, dict):
        return str(entry.get("source", "")), entry.get("sha256")
    return str(entry), None


def _read_checked(pkg: _Package, entry, what: str) -> bytes:
    src, sha = _source(entry)
    if not src:
        raise BioimageioError(f"{pkg.label}: the {what} entry names no file")
    data = pkg.read(src)
    if sha and hashlib.sha256(data).hexdigest() != str(sha).lower():
        raise BioimageioError(f"{pkg.label}: {src} does not match its sha256 in rdf.yaml (damaged or altered package)")
    return data


def _holds(weights: dict) -> str:
    parts = []
    for fmt, entry in weights.items():
        arch = entry.get("architecture") if isinstance(entry, dict) else None
        if isinstance(arch, dict):
            where = arch.get("import_from") or arch.get("source") or "?"
            parts.append(f"{fmt} (architecture {arch.get('callable', '?')} from {where})")
        elif isinstance(arch, str):  # format 0.4
            parts.append(f"{fmt} (architecture {arch})")
        else:
            parts.append(str(fmt))
    return ", ".join(parts) or "no weights"


def _is_our_arch(entry) -> bool:
    arch = entry.get("architecture") if isinstance(entry, dict) else None
    return (isinstance(arch, dict) and arch.get("import_from") == ARCH_MODULE
            and arch.get("callable") == ARCH_CALLABLE)


def _axes(tensor: dict) -> list[dict]:
    axes = tensor.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
        raise BioimageioError("axes are not described as bioimage.io 0.5 axes")
    return axes


def _channel_names(tensor: dict) -> list[str]:
    for a in _axes(tensor):
        if a.get("type") == "channel":
            names = a.get("channel_names")
            return [str(n) for n in names] if isinstance(names, list) else []
    return []


def _check_layout(tensor: dict, what: str) -> None:
    kinds = [a.get("type") for a in _axes(tensor)]
    ids = [str(a.get("id", a.get("type"))) for a in _axes(tensor)]
    if kinds != ["batch", "channel", "space", "space"] or ids[2:] != ["y", "x"]:
        raise BioimageioError(f"its {what} has axes {','.join(ids)}; a napari-unet U-Net takes batch,channel,y,x")


def _normalization_from(pre: list, label: str):
    from .normalize import Normalization

    steps = [p for p in pre if not (isinstance(p, dict) and p.get("id") == "ensure_dtype")]
    if not steps:
        return Normalization(mode="fixed", offset=0.0, scale=1.0)
    if len(steps) == 1 and isinstance(steps[0], dict) and isinstance(steps[0].get("kwargs") or {}, dict):
        op, kw = steps[0].get("id"), steps[0].get("kwargs") or {}
        axes = kw.get("axes")
        try:
            if (op == "scale_range" and isinstance(axes, list) and sorted(map(str, axes)) == ["x", "y"]
                    and not kw.get("reference_tensor")):
                return Normalization(mode="percentile", low=float(kw.get("min_percentile", 0.0)),
                                     high=float(kw.get("max_percentile", 100.0)))
            gain, off = kw.get("gain", 1.0), kw.get("offset", 0.0)
            if (op == "scale_linear" and "axis" not in kw and isinstance(gain, (int, float))
                    and isinstance(off, (int, float)) and gain):
                return Normalization(mode="fixed", offset=-float(off) / float(gain), scale=1.0 / float(gain))
        except (TypeError, ValueError) as e:
            raise BioimageioError(f"{label}: its {op} preprocessing has unusable arguments ({e})") from None
    described = ", ".join(str(p.get("id") if isinstance(p, dict) else p) for p in steps)
    raise BioimageioError(
        f"{label}: its preprocessing ({described}) is not one napari-unet applies; supported: scale_range over y,x "
        "(percentiles per image) or one scalar scale_linear"
    )


def load_bioimageio(path: str | os.PathLike, *, allow_torchscript: bool = False):
    """A :class:`~napari_unet.modelfile.SegmentationModel` from a bioimage.io package (a zip,
    or an ``rdf.yaml`` beside its files; local files only).

    The package must hold ``pytorch_state_dict`` weights of :class:`napari_unet.model.UNet`
    (``architecture: {import_from: napari_unet.model, callable: UNet, kwargs: ...}``); they are
    read with ``torch.load(weights_only=True)``, which unpickles tensors only, never code.
    With ``allow_torchscript=True`` a package of this U-Net whose only usable weights are
    TorchScript is accepted too: TorchScript is a program, loading it runs its
    deserialisation, so only do this for files you trust (a warning says so). Its tensors are
    then taken into our own U-Net; its code is not used for inference.

    Raises :class:`BioimageioError` with one line saying what the package holds and what is
    supported.
    """
    import yaml

    path = Path(path).expanduser()
    if not path.exists():
        raise BioimageioError(f"bioimage.io package not found: {path}")
    if path.is_dir():
        raise BioimageioError(f"{path} is a folder: give the package's .zip or its rdf.yaml")
    pkg = _Package(path)
    try:
        try:
            rdf = yaml.safe_load(pkg.read(pkg.rdf_name))
        except yaml.YAMLError as e:
            raise BioimageioError(f"{path.name}: its {pkg.rdf_name} is not valid YAML ({first_line(e)})") from None
        if not isinstance(rdf, dict) or "format_version" not in rdf:
            raise BioimageioError(f"{path.name} is not a bioimage.io description (no format_version)")
        try:
            return _model_from_rdf(pkg, rdf, allow_torchscript)
        except (AttributeError, IndexError, KeyError, TypeError) as e:  # fields of unexpected types
            raise BioimageioError(
                f"{path.name}: its rdf.yaml is not a well-formed bioimage.io model description ({type(e).__name__}: {e})"
            ) from None
    finally:
        pkg.close()


def _model_from_rdf(pkg: _Package, rdf: dict, allow_torchscript: bool):
    import torch

    from .model import UNet, UNetConfig
    from .modelfile import SegmentationModel

    label = pkg.label
    kind = rdf.get("type")
    if kind != "model":
        raise BioimageioError(f"{label} describes a bioimage.io {kind or 'resource'}, not a model")
    version = str(rdf.get("format_version"))
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), dict) else {}
    weights = {k: v for k, v in weights.items() if v is not None}
    supported = ("napari-unet runs pytorch_state_dict weights of its own U-Net (napari_unet.model.UNet)"
                 + ("" if allow_torchscript else ", or that U-Net's TorchScript weights with --allow-torchscript"))
    if not version.startswith("0.5."):
        raise BioimageioError(
            f"{label} is a bioimage.io model in format {version} holding {_holds(weights)}; {supported} "
            "in format 0.5 packages"
        )
    state_entry = weights.get("pytorch_state_dict")
    ours = _is_our_arch(state_entry)
    ts_entry = weights.get("torchscript")
    ours_config = (rdf.get("config") or {}).get(CONFIG_KEY) if isinstance(rdf.get("config"), dict) else None
    if ours:
        kwargs = state_entry["architecture"].get("kwargs") or {}
        use = "pytorch_state_dict"
    elif ts_entry is not None and isinstance(ours_config, dict) and isinstance(ours_config.get("architecture"), dict):
        if not allow_torchscript:
            raise BioimageioError(
                f"{label} holds {_holds(weights)}; its TorchScript weights are code: open it with --allow-torchscript "
                "(allow_torchscript=True) only if you trust where it came from"
            )
        kwargs = ours_config["architecture"]
        use = "torchscript"
    else:
        raise BioimageioError(f"{label} holds {_holds(weights)}; {supported}")
    try:
        config = UNetConfig.from_dict(dict(kwargs))
    except (TypeError, ValueError) as e:
        raise BioimageioError(f"{label}: the U-Net arguments {kwargs} are not ones this napari-unet builds ({e})") from None

    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise BioimageioError(f"{label} has {len(inputs)} inputs and {len(outputs)} outputs; a U-Net has one of each")
    try:
        _check_layout(inputs[0], "input")
        _check_layout(outputs[0], "output")
    except BioimageioError as e:
        raise BioimageioError(f"{label}: {e}") from None
    n_in = len(_channel_names(inputs[0]))
    out_names = _channel_names(outputs[0])
    if n_in != config.in_channels or len(out_names) != config.n_classes:
        raise BioimageioError(
            f"{label}: its tensors have {n_in} input and {len(out_names)} output channels but its U-Net "
            f"{config.in_channels} and {config.n_classes}"
        )
    post = [p.get("id") for p in outputs[0].get("postprocessing") or [] if isinstance(p, dict)]
    post = [p for p in post if p != "ensure_dtype"]
    if post not in ([], ["softmax"]):
        raise BioimageioError(
            f"{label}: its output postprocessing ({', '.join(map(str, post))}) is not supported; napari-unet "
            "applies softmax to the U-Net's scores"
        )
    norm = _normalization_from(inputs[0].get("preprocessing") or [], label)

    with torch.device("meta"):  # the shapes the rdf's U-Net has, without allocating it
        expected = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
    if use == "pytorch_state_dict":
        data = _read_checked(pkg, state_entry, "pytorch_state_dict")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise BioimageioError(
                f"{label}: its pytorch_state_dict weights cannot be read as plain tensors (weights_only): "
                f"{first_line(e)}"
            ) from None
    else:
        data = _read_checked(pkg, ts_entry, "torchscript")
        warnings.warn(
            f"{label}: loading TorchScript weights, which are code; only its tensors are used, in napari-unet's U-Net",
            UserWarning, stacklevel=3,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(io.BytesIO(data), map_location="cpu").state_dict()
        except Exception as e:
            raise BioimageioError(f"{label}: its TorchScript weights cannot be loaded: {first_line(e)}") from None
    if (not isinstance(state, dict) or set(state) != set(expected)
            or any(not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != expected[k] for k in expected)):
        raise BioimageioError(f"{label}: its {use} weights do not match the U-Net its rdf.yaml describes")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BioimageioError(f"{label} holds NaN or infinite weights (in {bad[0]}): damaged, or its training diverged")
    net = UNet(config)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval()

    card = ours_config if isinstance(ours_config, dict) else {}
    class_names = card.get("class_names") if isinstance(card.get("class_names"), list) else out_names
    if len(class_names) != config.n_classes:
        class_names = out_names
    fg = card.get("foreground_class", 1 if config.n_classes > 1 else 0)
    if not isinstance(fg, int) or not 0 <= fg < config.n_classes:
        fg = 1 if config.n_classes > 1 else 0
    prov = card.get("provenance")
    provenance = dict(prov) if isinstance(prov, dict) else {}
    provenance["bioimageio_package"] = {"file": pkg.path.name, "name": rdf.get("name"), "weights": use,
                                        "id": rdf.get("id"), "format_version": version}
    post = card.get("postprocessing")
    try:
        return SegmentationModel(
            network=net,
            normalization=norm,
            class_names=[str(c) for c in class_names],
            foreground_class=fg,
            name=str(card.get("name") or rdf.get("name") or pkg.path.stem),
            description=str(card.get("description") or rdf.get("description") or ""),
            postprocessing=post if isinstance(post, dict) else None,  # None: the defaults
            provenance=provenance,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BioimageioError(f"{label}: its napari-unet model card (config.napari_unet) is inconsistent: {e}") from None
