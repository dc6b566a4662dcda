"""Export a (pruned) HuggingFace model to ONNX with dynamic batch and sequence axes, and check it.

The exporter is torch.onnx.export(dynamo=True): it captures the model with torch.export, so the
uneven per-layer widths are just the shapes of the weights, zero-width layers included, and
shapes stay symbolic (the legacy TorchScript tracer also handles the pruned model but is
deprecated, and bakes the Python branches it takes on the example's sizes into the graph).
The portable graph writes attention as transformers' eager implementation computes it (plain MatMul, Softmax:
faster in ONNX Runtime than the SDPA decomposition, PORTABLE_ATTENTION). With fuse=True the SDPA form is exported
and fused into ONNX Runtime's transformer kernels (export/onnx_fuse.py: one Attention node per layer instead of some
twenty ops). The graph is checked against PyTorch on given
batches with ONNX Runtime (CPUExecutionProvider).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import io
import logging
import os
import shutil
import tempfile
import time
import warnings

import torch
import torch.nn as nn
from tqdm import tqdm

from export.onnx_fuse import fuse_for_ort
from export.registry import Exporter, register
from utils.atomic import current_umask
from utils.timing import random_inputs

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("logits", "start_logits", "end_logits")
ENCODER_OUTPUT = "last_hidden_state"   # what a model without a task head (a sentence-embedding encoder) gives
TOLERANCE = 1e-4                 # max abs difference of the outputs accepted as "the same model"
_SINGLE_FILE_LIMIT = 1.8e9       # ONNX protobufs stop at 2 GB; larger models keep weights in a .data file
# The attention each graph is written with. "eager" writes the scores, mask add, Softmax and context as plain ops; the
# SDPA decomposition (transformers' default "sdpa") adds a NaN guard (IsNaN + Where) over every [batch, heads, s, s]
# score tensor. Both compute the model's function (checked on export); ONNX Runtime runs the eager form 4-21 % faster
# (issue 33: benchmarks/onnx_attention.py). The fused graph keeps SDPA: onnxscript's fusions were checked on it, and
# they leave an eager one-head layer unfused. A family without the named one exports its own.
PORTABLE_ATTENTION = "eager"
FUSED_ATTENTION = "sdpa"
# the exporter's libraries log every optimisation pass at INFO, and torch warns that torchvision is absent
_CHATTY_LOGGERS = {"onnx_ir": logging.WARNING, "onnxscript": logging.WARNING,
                   "torch.onnx._internal.exporter._registration": logging.ERROR}


class _TensorsOut(nn.Module):
    """The model as the exporter wants it: named tensors in, a tuple of output tensors out."""

    def __init__(self, model: nn.Module, output_names: list[str]):
        super().__init__()
        self.model, self.output_names = model, output_names

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = self.model(input_ids=input_ids, **{k: v for k, v in given.items() if v is not None}, return_dict=True)
        return tuple(out[name] for name in self.output_names)


def missing_packages() -> list[str]:
    """The packages export_and_check needs that are not installed (optional extras of this tool)."""
    return [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]


def packages_problem(what: str) -> str:
    """'' when the packages missing_packages() checks are installed, else an error line: `what` needs them, and how."""
    missing = missing_packages()
    return f"error: {what} needs {', '.join(missing)}: pip install {' '.join(missing)}" if missing else ""


def input_names(model: nn.Module) -> list[str]:
    accepted = inspect.signature(model.forward).parameters
    return [n for n in INPUT_NAMES if n in accepted]


def output_names(model: nn.Module, example: dict) -> list[str]:
    with torch.no_grad():
        out = model(**example, return_dict=True)
    names = [n for n in OUTPUT_NAMES if n in out] or [n for n in (ENCODER_OUTPUT,) if n in out]
    if not names:
        raise ValueError(f"the model returns none of {OUTPUT_NAMES + (ENCODER_OUTPUT,)} (it returns "
                         f"{list(out.keys())})")
    return names


def example_inputs(model: nn.Module, batch_size: int = 2, seq_len: int = 16, seed: int = 0) -> dict:
    """Random inputs of the model's own input names, the first row half padding. For export, keep both sizes
    above 1 (torch.export specialises a graph on sizes 0 and 1)."""
    return random_inputs(model.config, batch_size, seq_len, seed=seed, names=input_names(model), pad_first_row=True)


def _on_cpu(model: nn.Module) -> nn.Module:
    device = next(model.parameters()).device
    return model.eval() if device.type == "cpu" else copy.deepcopy(model).cpu().eval()


def export_onnx(model: nn.Module, path: str, example: dict | None = None, fuse: bool = False,
                attention: str | None = None) -> dict:
    """Write `model` (on CPU, eval mode) to `path` as ONNX, with ONNX Runtime's fusions if `fuse`, its attention
    written as the `attention` implementation computes it (default: FUSED_ATTENTION or PORTABLE_ATTENTION; the model
    is set back after); returns {"inputs", "outputs", "seconds", "fused", "attention"} (fused: how often each fusion
    applied; attention: the implementation used)."""
    attention = attention or (FUSED_ATTENTION if fuse else PORTABLE_ATTENTION)
    model = _on_cpu(model)
    example = {n: t.cpu() for n, t in (example or example_inputs(model)).items() if n in input_names(model)}
    names = list(example)
    outputs = output_names(model, example)
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}   # shared: all inputs agree
    dims = {n: axes for n in names}
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > _SINGLE_FILE_LIMIT
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed, warnings.catch_warnings(), _quiet_loggers(), \
            attention_as(model, attention) as used:
        # it prints its progress, and warns that the inputs' shared axes are named once (as intended)
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)   # torch-internal
        torch.onnx.export(_TensorsOut(model, outputs).eval(), (), path, kwargs=example, dynamo=True,
                          input_names=names, output_names=outputs, dynamic_shapes=dims, external_data=big)
        fused = fuse_for_ort(path, big) if fuse else {}
    seconds = time.perf_counter() - start
    log.debug("%s", printed.getvalue())
    log.info("exported %s (%.1f s, inputs %s, outputs %s)", path, seconds, names, outputs)
    return {"inputs": names, "outputs": outputs, "seconds": round(seconds, 3), "fused": fused, "attention": used}


@contextlib.contextmanager
def attention_as(model: nn.Module, implementation: str | None):
    """`model` computing attention with `implementation` inside the block, its own implementation again after; yields
    the one in use (the model's own where `implementation` is None or the model cannot switch to it: a family whose
    attention does not go through transformers' AttentionInterface, such as MPNet, has only its own)."""
    own = getattr(model.config, "_attn_implementation", None)
    can_switch = getattr(model, "_can_set_attn_implementation", lambda: False)   # transformers 5
    switch = own is not None and implementation not in (None, own) and can_switch()
    if switch:
        try:
            model.set_attn_implementation(implementation)
        except (ValueError, ImportError) as err:    # the family has no such attention: export what the model computes
            log.info("exporting with the model's %s attention (%s unavailable: %s)", own, implementation, err)
            switch = False
    try:
        yield model.config._attn_implementation if switch else own
    finally:
        if switch:
            model.set_attn_implementation(own)


@contextlib.contextmanager
def _quiet_loggers():
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    try:
        for name, level in _CHATTY_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def providers(device: str = "cpu") -> list[str]:
    import onnxruntime as ort  # optional extra (--export onnx)
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtModel:
    """An ONNX Runtime session called like the HF model: `ort_model(**batch)` -> list of numpy outputs."""

    def __init__(self, path: str, device: str = "cpu", threads: int | None = None, spin: bool = True):
        import onnxruntime as ort  # optional extra (--export onnx)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:   # several sessions called in turn: a finished one's spinning threads would slow the next
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=providers(device))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, **batch):
        return self.session.run(None, {n: _numpy(t) for n, t in complete(batch, self.input_names).items()})


def exported_sessions(models: dict, folder: str, device: str = "cpu", threads: int | None = None, fuse: bool = False,
                      attention: str | None = None, exported: dict | None = None) -> tuple[dict, dict]:
    """Each model written to folder/NAME.onnx (unless `exported`, {name: export_onnx's report}, says it is there
    already) and an ONNX Runtime session of it without intra-op spinning, as benchmarks call several in turn;
    returns ({name: OrtModel}, {name: export_onnx's report}), in the order of `models`."""
    reports = {name: exported[name] for name in models if exported and name in exported}
    sessions = {}
    for name, model in models.items():
        path = os.path.join(folder, f"{name}.onnx")
        if name not in reports:
            reports[name] = export_onnx(model, path, fuse=fuse, attention=attention)
        sessions[name] = OrtModel(path, device, threads, spin=False)
    return sessions, reports


def complete(batch: dict, names: list[str]) -> dict:
    """The inputs `names` from `batch`, with the HF defaults for an absent mask (ones) or segment ids (zeros)."""
    ids = batch["input_ids"]
    defaults = {"attention_mask": torch.ones_like, "token_type_ids": torch.zeros_like}
    return {n: batch[n] if n in batch else defaults[n](ids) for n in names}


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


@torch.no_grad()
def max_abs_difference(model: nn.Module, ort_model: OrtModel, batches: list[dict]) -> float:
    """Largest |PyTorch - ONNX Runtime| over all outputs of all batches (model run on CPU), at the tokens the attention
    mask keeps: what a model computes at padding is no one's output (Gemma 3's sliding-window layers give padded
    positions different values in the two runtimes, every real token the same)."""

    model = _on_cpu(model)
    worst = 0.0
    for batch in tqdm(batches, desc="onnx check", leave=False):
        feed = {n: t.cpu() for n, t in complete(batch, ort_model.input_names).items()}
        out = model(**feed, return_dict=True)
        kept = feed["attention_mask"].bool().numpy() if "attention_mask" in feed else None
        for name, got in zip(ort_model.output_names, ort_model(**feed)):
            ref = out[name].float().numpy()
            if kept is not None and ref.ndim >= 3 and ref.shape[:2] == kept.shape:   # per-token vectors: real tokens
                ref, got = ref[kept], got[kept]
            worst = max(worst, float(abs(ref - got).max()) if ref.size else 0.0)
    return worst


STAGE_PREFIX = ".onnx-export-"       # the temporary folder, inside the target folder, that the export writes into


def remove_stale_stages(folder: str) -> list[str]:
    """Remove what an export killed before its rename left in `folder`; returns the removed paths."""
    stale = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(STAGE_PREFIX))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def export_and_check(model: nn.Module, folder: str, batches: list[dict], example: dict | None = None,
                     fuse: bool = False) -> dict:
    """Write folder/model.onnx and compare it with PyTorch on `batches`; the report goes to results.json.

    The graph (and its .data file, for a large model) is written and checked in a temporary folder inside `folder`
    under its final name, then renamed into place, so an interrupted export leaves the earlier model.onnx or none."""
    stage = tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=folder)
    try:
        staged = os.path.join(stage, ONNX_FILE)
        info = export_onnx(model, staged, example, fuse)
        diff = max_abs_difference(model, OrtModel(staged), batches)
        names = sorted(os.listdir(stage), key=lambda n: n == ONNX_FILE)      # the graph last: it names the data file
        for name in names:
            os.chmod(os.path.join(stage, name), 0o666 & ~current_umask())
            os.replace(os.path.join(stage, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    path = os.path.join(folder, ONNX_FILE)
    info.update(path=path, max_abs_diff=diff, tolerance=TOLERANCE, within_tolerance=diff <= TOLERANCE,
                checked_batches=len(batches))
    if diff > TOLERANCE:
        log.warning("ONNX Runtime differs from PyTorch by up to %.3g on the check batches (tolerance %g)",
                    diff, TOLERANCE)
    else:
        log.info("ONNX Runtime matches PyTorch within %.3g on %d batches", diff, len(batches))
    return info


register(Exporter("onnx", write=lambda model, folder, data: export_and_check(model, folder, data.dev_batches),
                  missing_packages=missing_packages,
                  help="model.onnx (dynamic batch and sequence axes), checked against PyTorch on the dev batches; "
                       "needs the onnx, onnxscript and onnxruntime packages"))
register(Exporter("onnx_fused",
                  write=lambda model, folder, data: export_and_check(model, folder, data.dev_batches, fuse=True),
                  missing_packages=missing_packages,
                  help="model.onnx fused into ONNX Runtime's transformer kernels (one Attention node per layer; "
                       "runs in ONNX Runtime only; the faster graph there at batch 1), checked like onnx"))
