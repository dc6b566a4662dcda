"""Choosing the device and measuring memory."""
from __future__ import annotations

import resource
import sys

import torch


class DeviceError(ValueError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for but no CUDA GPU is available "
                          f"(torch {torch.__version__}); use --device cpu or --device auto.")
    return torch.device(name)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def peak_gpu_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
