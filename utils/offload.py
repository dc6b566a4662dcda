"""Models larger than one device: where each part of a run holds the model.

Without --device_map the model sits on one device and nothing here does anything. With --device_map auto the
model is held in CPU memory and

- the whole-model passes (the mask gradients, the evaluations, the generations) run with the model spread over
  the devices by accelerate (`infer_auto_device_map` within --max_memory, then `dispatch_model`; what does not
  fit goes to CPU memory or, past that, to a temporary folder on disk, and accelerate's hooks bring each part
  to its device when it runs);
- the layer-wise stages (mask tuning / reconstruction) stream one layer at a time onto the compute device, so
  that they need about one layer plus the cached activations of the sample there.
"""
from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from dataclasses import fields, is_dataclass, replace

import torch

from utils.errors import UserError


class PlacementError(UserError):
    pass


def parse_max_memory(text: str) -> dict:
    """'0=20GiB,cpu=60GiB' -> {0: '20GiB', 'cpu': '60GiB'} (accelerate's max_memory)."""
    from accelerate.utils import convert_file_size_to_int  # --device_map only: a second-long import
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, size = part.partition("=")
        key = key.strip()
        if not sep or not (key.isdigit() or key in ("cpu", "disk")):
            raise ValueError(f"'{part}' is not DEVICE=SIZE (DEVICE a GPU number or cpu, e.g. 0=20GiB,cpu=60GiB)")
        convert_file_size_to_int(size.strip())          # raises ValueError on a size it cannot read
        out[int(key) if key.isdigit() else key] = size.strip()
    if not out:
        raise ValueError("no DEVICE=SIZE pairs (e.g. 0=20GiB,cpu=60GiB)")
    return out


def input_device(model) -> torch.device:
    """Where a model's inputs go: its first parameter's device, or the CPU when that parameter is offloaded by
    accelerate (on the meta device until its hook loads it; the hooks move inputs to each part's device)."""
    device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


class Placement:
    """device_map None: the model is on `device` throughout. 'auto': see the module's docstring."""

    def __init__(self, device: torch.device, device_map: str | None = None, max_memory: dict | None = None):
        self.device, self.device_map, self.max_memory = device, device_map, max_memory
        self.maps: dict[str, dict] = {}        # pass name -> the device map it ran with

    @property
    def streaming(self) -> bool:
        return self.device_map is not None

    @contextlib.contextmanager
    def whole_model(self, model, name: str):
        """The model spread over the devices while the context is open, back in CPU memory after."""
        if not self.streaming:
            yield
            return
        from accelerate import dispatch_model, infer_auto_device_map  # --device_map only: a second-long import
        from accelerate.hooks import remove_hook_from_submodules
        max_memory = dict(self.max_memory) if self.max_memory else None   # accelerate rewrites the sizes in place
        device_map = infer_auto_device_map(model, max_memory=max_memory,
                                           no_split_module_classes=getattr(model, "_no_split_modules", None))
        if set(device_map.values()) <= {"disk"}:
            raise PlacementError(f"--max_memory {self.max_memory} does not hold even the first layer of the model "
                                 f"(accelerate placed all of it on disk); give the devices more memory.")
        self.maps[name] = dict(device_map)
        with tempfile.TemporaryDirectory(prefix="offload-") as folder:
            dispatch_model(model, device_map, main_device=self._main_device(device_map), offload_dir=folder)
            try:
                yield
            finally:
                remove_hook_from_submodules(model)     # offloaded weights are put back from accelerate's copy
                model.to("cpu")
                vars(model).pop("hf_device_map", None)  # or save_pretrained would take the model for an offloaded one

    def _main_device(self, device_map: dict):
        devices = [d for d in device_map.values() if d not in ("cpu", "disk")]
        return devices[0] if devices else "cpu"

    @contextlib.contextmanager
    def layer(self, arch, index: int):
        """Layer `index` on the compute device while the context is open (streaming), otherwise as it is."""
        layer = arch.layer(index)
        if not self.streaming or self.device.type == "cpu":
            yield
            return
        layer.to(self.device)
        try:
            yield
        finally:
            layer.to("cpu")

    def inputs(self, value):
        """Cached layer inputs (tensors in tuples, lists, dicts, dataclasses) on the compute device when streaming."""
        if not self.streaming:
            return value
        return _moved(value, self.device)

    def home(self, tensor):
        """Where results of a streamed layer are kept: CPU memory (unchanged without streaming)."""
        return tensor.cpu() if self.streaming and tensor is not None else tensor

    def record(self) -> dict:
        """results.json's placement: where each part ran."""
        if not self.streaming:
            return {"device_map": None, "all_stages": str(self.device)}
        return {"device_map": self.device_map, "max_memory": {str(k): v for k, v in (self.max_memory or {}).items()},
                "whole_model_passes": {name: dict(Counter(str(d) for d in m.values()))
                                       for name, m in self.maps.items()},
                "whole_model_device_maps": {name: {k: str(v) for k, v in m.items()} for name, m in self.maps.items()},
                "layer_wise": f"one layer at a time on {self.device}, the rest in CPU memory",
                "physical_pruning": "cpu, one layer at a time"}


def _moved(value, device, memo=None):
    """`value` with its tensors on `device`; an object met twice (blocks sharing one call's inputs) moves once."""
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, torch.Tensor):
        out = value.to(device)
    elif isinstance(value, (list, tuple)):
        out = type(value)(_moved(v, device, memo) for v in value)
    elif isinstance(value, dict):
        out = {k: _moved(v, device, memo) for k, v in value.items()}
    elif is_dataclass(value) and not isinstance(value, type):
        out = replace(value, **{f.name: _moved(getattr(value, f.name), device, memo) for f in fields(value)})
    else:
        return value
    memo[id(value)] = out
    return out


def peak_gpu_mb_per_device() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": round(torch.cuda.max_memory_allocated(i) / 2**20, 1) for i in range(torch.cuda.device_count())}
