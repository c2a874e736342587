"""Choosing the torch device: ``auto`` takes CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "available_devices", "DeviceError"]


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
