"""Choosing the device and measuring memory."""
from __future__ import annotations

import resource
import sys

import torch

from utils.errors import UserError


class DeviceError(UserError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"--device '{name}' is not a device name; use auto, cpu, cuda or cuda:N "
                          f"(--gpu N is the same as --device cuda:N).") from None
    if device.type not in ("cpu", "cuda"):
        _check_other_device(name, device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} was asked for but no CUDA GPU is available "
                              f"(torch {torch.__version__}); use --device cpu or --device auto.")
        count = torch.cuda.device_count()
        if device.index is not None and not 0 <= device.index < count:
            raise DeviceError(f"--device {name} was asked for but this machine has {count} CUDA GPU(s), "
                              f"numbered 0..{count - 1}; pick one of them (or --device auto).")
    return device


def _check_other_device(name: str, device: torch.device) -> None:
    """Device types torch knows besides cpu/cuda: only usable ones that this machine has."""
    if device.type == "meta":
        raise DeviceError(f"--device {name} holds no data (torch's shape-only device); use cpu, cuda or auto.")
    backend = {"mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}.get(device.type)
    if backend is None:
        raise DeviceError(f"--device {name} is a device type this tool does not support; use auto, cpu, "
                          f"cuda[:N], mps or xpu.")
    if not backend.is_available():
        raise DeviceError(f"--device {name} was asked for but this machine has no {device.type} device "
                          f"(torch {torch.__version__}); use --device cpu or --device auto.")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux; None elsewhere): freed tensors the allocator holds included."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_gpu_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}
