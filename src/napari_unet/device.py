"""Choosing the torch device (``auto`` takes CUDA, then Apple MPS, then the CPU) and the
precision to run on it (bfloat16 where the hardware runs it natively)."""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError

__all__ = ["resolve_device", "available_devices", "DeviceError", "bf16_is_fast", "resolve_precision", "autocast"]


class DeviceError(ValueError):
    """The device asked for does not exist here."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device names usable on this machine, best first, ``auto`` first of all."""
    out = ["auto"]
    if torch.cuda.is_available():
        out.append("cuda")
        if torch.cuda.device_count() > 1:
            out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/``None`` -> best available; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` -> that
    device, or :class:`DeviceError` saying why it cannot be used."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "device 'cuda' was asked for but no CUDA GPU is usable here "
                "(no NVIDIA GPU, or torch was installed without CUDA); use --device cpu or auto"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return dev
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' was asked for but Apple MPS is not available here; use cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 runs natively (fast) on ``device``: a CUDA GPU with bf16 support, or a
    CPU with AMX or AVX-512 BF16 instructions (elsewhere it would be emulated, and slow)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            f = getattr(cpu, probe, None)
            try:
                if f is not None and f():
                    return True
            except Exception:  # pragma: no cover - private API changed
                pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``float32`` or ``bfloat16``. ``auto`` is bfloat16 where the hardware runs it natively (its
    labels agreed with float32 on >= 99.4 % of objects on real held-out images,
    docs/benchmarks.md), else float32; :class:`~napari_unet.errors.InputError` otherwise."""
    p = (precision or "auto").lower()
    if p in ("bf16", "bfloat16"):
        p = "bfloat16"
    elif p in ("fp32", "float32"):
        p = "float32"
    elif p == "auto":
        p = "bfloat16" if bf16_is_fast(device) else "float32"
    else:
        raise InputError(f"unknown precision {precision!r}: use float32, bfloat16 or auto")
    if p == "bfloat16" and device.type == "mps":
        raise InputError("bfloat16 is not supported on Apple MPS; use float32")
    return p


def autocast(device: torch.device, bf16: bool):
    """The context a forward pass runs in: bfloat16 autocast on ``device`` when ``bf16``, else
    nothing (float32)."""
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
