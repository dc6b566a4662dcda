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
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} was asked for but no CUDA GPU is available "
                              f"(torch {torch.__version__}); use --device cpu or --device auto.")
        count = torch.cuda.device_count()
        if device.index is not None and not 0 <= device.index < count:
            raise DeviceError(f"--device {name} was asked for but this machine has {count} CUDA GPU(s), "
                              f"numbered 0..{count - 1}; pick one of them (or --device auto).")
    return device


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def peak_gpu_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
