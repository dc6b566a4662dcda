"""End-to-end inference latency of an original and a physically pruned model.

    python -m benchmarks.latency --ckpt_dir CKPT --pruned_dir PRUNED --batch_sizes 1 32 --seq_lens 128 \
        --threads 2 --output bench.json
    python -m benchmarks.latency --ckpt_dir CKPT --mask_dir RUN_FOLDER ...   # prune in memory from masks
    python -m benchmarks.latency ... --backend eager onnx                   # and in ONNX Runtime

For every backend and (batch size, sequence length) the two models are timed alternately (one
call each per round, so load changes on a shared machine hit both alike) on random token ids with
no padding; the median of the rounds is reported with the speedup and its fraction of the ideal.
Backends: eager PyTorch, and ONNX Runtime (CPUExecutionProvider; CUDAExecutionProvider with
--device cuda when onnxruntime has it) on graphs exported by export/onnx.py (--onnx_graph fused: fused
into ONNX Runtime's transformer kernels): the pruned folder's model.onnx when it has one, else both models are exported into --onnx_dir (default: a temporary folder). ONNX Runtime is fed host tensors, so on CUDA its times include the copies.
The sessions run without intra-op spinning: called in turn, each session's threads would otherwise spin on for a
while after its call and take the cores from the next session's call, which slows the short calls most. The JSON also holds parameter counts,
on-disk weight sizes and the ideal (MAC-count) speedup at each sequence length:

  MACs(s) = sum over layers [ heads_l * (4 s h d + 2 s^2 d) + neurons_l * 2 s h + fixed_l ]
            + sum over Linear modules outside the encoder (pooler / classifier head) of in * out

with h the hidden size, d the head size: per head, Q/K/V projections 3 s h d, scores and context
2 s^2 d, its slice of the output projection s d h; per FFN neuron, s h in and s h out. The
classification head runs on one token per sequence. Embeddings are lookups (0 MACs). fixed_l
counts the per-layer work that pruning does not remove: the two residual adds and two LayerNorms
(about 4 s h operations; reported separately as well, since they are not multiply-accumulates).

The MAC-count ideal assumes every second is spent in prunable work; the physical limit does not. T_fixed, the time
of what pruning cannot shrink (embeddings, LayerNorms, residual adds, biases, pooler and classifier, per-layer call
overheads), is measured directly: the model physically pruned to no head and no neuron in any layer (every layer's
attention replaced by an empty one, every FFN Linear(h, 0)) is timed alternately with the other two. With r the
pruned model's share of the prunable MACs (heads and neurons), the best a pruned model can do is

  T_ideal = T_fixed + (T - T_fixed) * r,     ideal physical speedup = T / T_ideal

and `fraction_of_physical_ideal` is the measured speedup over that (--no_fixed skips it).

T_fixed leaves out the fixed cost of the calls a layer makes as long as it keeps one head or one neuron (the
attention and FFN modules' launches, reshapes, softmax set-up), which no pruning short of removing the whole module
can shrink. T_floor measures it: the model physically pruned to one head and one neuron in every layer where the
pruned model keeps any (floor_model; two heads with --onnx_graph fused where the attention fuses into ONNX Runtime's
Attention kernel, which takes layers of two or more heads, a one-head layer getting a slower MultiHeadAttention
path), timed in the same rounds. With r_floor = (P_pruned - P_floor) / (P_original -
P_floor), P the head and neuron MACs, the floor ideal is T / (T_floor + (T - T_floor) * r_floor) and
`fraction_of_floor_ideal` the measured speedup over it. Both are reported; the floor ideal is the limit for a model
with the pruned model's structure, the T_fixed one the limit for any structure.

--per_kind weighs heads and neurons by their measured time instead of their MACs: it also times every head with the
floor's neurons and every neuron with the floor's heads (kind_models) and reports T / (T_floor + (T_heads_full -
T_floor) r_h + (T_neurons_full - T_floor) r_n) as `ideal_unit_speedup`, with `additivity` = (T_heads_full +
T_neurons_full - T_floor) / T as the check that the two kinds' times add up.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from arch import bind
from arch.hooks import apply_masks
from export.hf_folder import weights_size_bytes
from export.hf_load import load_pruned
from export.onnx import (ONNX_FILE, OrtModel, export_onnx, exported_sessions, max_abs_difference,
                         missing_packages, providers)
from export.onnx_fuse import MIN_FUSED_HEADS
from prune.masks import load_masks
from prune.physical import count_parameters, physically_prune
from tasks.sentence_similarity import EncoderWithoutPooler
from utils.checkpoint import load_model
from utils.timing import random_inputs, time_models

FLOOR_HEADS = 1   # the floor's heads per kept layer: one makes every call a layer of any head count makes, except in
                  # the fused ONNX graph, where a one-head layer gets another kernel (floor_heads_for)


def encoder_macs(heads_per_layer, neurons_per_layer, seq_len: int, hidden: int, head_dim: int) -> dict:
    s, h, d = seq_len, hidden, head_dim
    per_head = 4 * s * h * d + 2 * s * s * d
    per_neuron = 2 * s * h
    heads = sum(heads_per_layer) * per_head
    neurons = sum(neurons_per_layer) * per_neuron
    fixed = len(heads_per_layer) * 4 * s * h
    return {"heads": heads, "neurons": neurons, "fixed": fixed}


def head_macs(model: nn.Module, arch) -> int:
    """MACs of the Linear modules outside the encoder layers (pooler, classifier), once per sequence."""
    inside = {id(m) for m in arch.layers().modules()}
    return sum(m.in_features * m.out_features for m in model.modules()
               if isinstance(m, nn.Linear) and id(m) not in inside)


def widths(arch) -> tuple[list[int], list[int]]:
    """Head units and FFN neurons per layer."""
    layers = range(arch.num_layers)
    return [arch.head_units_in_layer(i) for i in layers], [arch.neurons_in_layer(i) for i in layers]


def model_macs(model: nn.Module, arch, seq_len: int) -> dict:
    enc = encoder_macs(*widths(arch), seq_len, arch.hidden_size, arch.head_dim)
    enc["head"] = head_macs(model, arch)
    enc["total_macs"] = enc["heads"] + enc["neurons"] + enc["head"]
    enc["total_with_fixed"] = enc["total_macs"] + enc["fixed"]
    return enc


def prunable_mac_ratio(macs_original: dict, macs_pruned: dict) -> float:
    """The pruned model's share of the original's head and neuron MACs (what pruning can remove)."""
    return (macs_pruned["heads"] + macs_pruned["neurons"]) / (macs_original["heads"] + macs_original["neurons"])


def kind_models(model: nn.Module, heads_per_layer, neurons_per_layer, floor_heads: int = FLOOR_HEADS) -> dict:
    """Two copies that keep one kind of unit in full and the floor's units of the other kind:
    'heads_full' (every head, the floor's neuron) and 'neurons_full' (the floor's heads, every neuron)."""
    return {f"{kind}_full": floor_model(model, heads_per_layer, neurons_per_layer, kind, floor_heads)
            for kind in ("heads", "neurons")}


def floor_widths(pruned_arch, floor_heads: int = FLOOR_HEADS) -> tuple[list[int], list[int]]:
    """The floor's widths: floor_heads heads (the pruned model's fewer) and one neuron in every layer where the pruned
    model keeps any."""
    heads, neurons = widths(pruned_arch)
    return [min(floor_heads, w) for w in heads], [min(1, w) for w in neurons]


def unit_counts(original_arch, pruned_arch, floor_heads: int = FLOOR_HEADS) -> dict:
    """{'heads'|'neurons': (original, pruned, floor)} unit counts summed over the layers."""
    counts = zip(widths(original_arch), widths(pruned_arch), floor_widths(pruned_arch, floor_heads))
    return {kind: tuple(map(sum, per_layer)) for kind, per_layer in zip(("heads", "neurons"), counts)}


def unit_ideal_speedup(times: dict, units: dict) -> float:
    """T / (T_floor + (T_heads_full - T_floor) r_h + (T_neurons_full - T_floor) r_n): time linear in the kept heads
    and neurons above the floor, each kind at its own measured cost per unit. units: {'heads'|'neurons':
    (original, pruned, floor) counts}."""
    ratio = {kind: (units[kind][1] - units[kind][2]) / (units[kind][0] - units[kind][2]) for kind in units}
    t, floor = times["original"], times["floor"]
    ideal = floor + (times["heads_full"] - floor) * ratio["heads"] + (times["neurons_full"] - floor) * ratio["neurons"]
    if not 0 < ideal <= t * 1.5:
        raise ValueError(f"the per-kind ideal time {ideal:.6f} s is implausible against T = {t:.6f} s: time the "
                         f"models alternately on an idle machine")
    return t / ideal


def floor_macs(pruned_arch, seq_len: int, floor_heads: int = FLOOR_HEADS) -> dict:
    """Head and neuron MACs of floor_model()."""
    return encoder_macs(*floor_widths(pruned_arch, floor_heads), seq_len, pruned_arch.hidden_size, pruned_arch.head_dim)


def floor_mac_ratio(macs_original: dict, macs_pruned: dict, macs_floor: dict) -> float:
    """The pruned model's share of the head and neuron MACs above the floor's: what pruning removes beyond the floor."""
    prunable = lambda macs: macs["heads"] + macs["neurons"]  # noqa: E731
    return (prunable(macs_pruned) - prunable(macs_floor)) / (prunable(macs_original) - prunable(macs_floor))


def physical_ideal_speedup(t_original: float, t_fixed: float, mac_ratio: float) -> float:
    """T / (T_fixed + (T - T_fixed) * r): the speedup if the prunable time shrank exactly with its MACs."""
    if not 0 <= t_fixed <= t_original:
        raise ValueError(f"T_fixed {t_fixed:.6f} s is not within [0, T = {t_original:.6f} s]: time both models "
                         f"alternately on an idle machine")
    return t_original / (t_fixed + (t_original - t_fixed) * mac_ratio)


def empty_model(model: nn.Module) -> nn.Module:
    """A copy pruned to no head and no neuron in any layer: it runs only what pruning cannot remove."""
    empty = copy.deepcopy(model)
    arch = bind(empty)
    physically_prune(empty, arch, torch.zeros(arch.num_layers, arch.num_head_units),
                     torch.zeros(arch.num_layers, arch.ffn_dim))
    return empty.eval()


def floor_model(model: nn.Module, heads_per_layer, neurons_per_layer, keep_all: str | None = None,
                floor_heads: int = FLOOR_HEADS) -> nn.Module:
    """A copy keeping floor_heads heads (the pruned model's fewer) and one neuron in every layer where the pruned model
    keeps any (none where it keeps none): it makes every call the pruned model makes, with almost no prunable work.
    keep_all: 'heads' or 'neurons' keeps every unit of that kind instead."""
    floor = copy.deepcopy(model)
    arch = bind(floor)
    head_mask = torch.zeros(arch.num_layers, arch.num_head_units)
    neuron_mask = torch.zeros(arch.num_layers, arch.ffn_dim)
    for layer, (heads, neurons) in enumerate(zip(heads_per_layer, neurons_per_layer)):
        head_mask[layer, :min(floor_heads, heads)] = 1
        neuron_mask[layer, 0] = float(neurons > 0)
    if keep_all == "heads":
        head_mask[:] = 1
    elif keep_all == "neurons":
        neuron_mask[:] = 1
    physically_prune(floor, arch, head_mask, neuron_mask)
    return floor.eval()


def floor_heads_for(args, model: nn.Module, folder: str | None) -> tuple[int, dict]:
    """Heads the floor keeps per layer: MIN_FUSED_HEADS when the run times the fused ONNX graph and `model`'s attention
    fuses into ONNX Runtime's Attention kernel (whose one-head layers get a slower MultiHeadAttention path instead;
    every backend of that run shares the floor), else FLOOR_HEADS. The fusion is tried on the original model's own
    export, folder/original.onnx, which the ONNX backend then uses: returns (heads, {'original': export_onnx's report}),
    or (FLOOR_HEADS, {}) where nothing was exported."""
    if args.no_fixed or "onnx" not in args.backend or args.onnx_graph != "fused":
        return FLOOR_HEADS, {}
    info = export_onnx(model, os.path.join(folder, "original.onnx"), fuse=True)
    return (MIN_FUSED_HEADS if info["fused"].get("attention") else FLOOR_HEADS), {"original": info}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", required=True, help="the original fine-tuned checkpoint")
    p.add_argument("--pruned_dir", default=None, help="a folder written by save_pruned (main.py --save_pruned)")
    p.add_argument("--mask_dir", default=None, help="a run folder with head_mask.pt / neuron_mask.pt")
    p.add_argument("--head", default="classification", choices=["classification", "qa", "embedding"],
                   help="the model class to load the checkpoint as (embedding: the bare encoder, no pooler)")
    p.add_argument("--no_fixed", action="store_true",
                   help="skip T_fixed and T_floor (the models pruned to nothing and to one unit per kept layer, "
                        "timed beside the others) and the physical ideals")
    p.add_argument("--per_kind", action="store_true",
                   help="also time every head with the floor's neurons and every neuron with the floor's heads, and "
                        "report the ideal with each kind at its own measured cost per unit (ideal_unit_speedup)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--seq_lens", type=int, nargs="+", default=[128])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", nargs="+", default=["eager"], choices=["eager", "onnx"],
                   help="eager PyTorch and/or ONNX Runtime (needs onnx, onnxscript, onnxruntime)")
    p.add_argument("--onnx_dir", default=None, help="--backend onnx: keep the exported graphs here")
    p.add_argument("--onnx_graph", default="plain", choices=["plain", "fused"],
                   help="--backend onnx: export the exporter's standard ops (default) or fuse them into ONNX "
                        "Runtime's Attention/SkipLayerNormalization/BiasGelu kernels")
    p.add_argument("--output", required=True, help="JSON file to write")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.pruned_dir and not args.mask_dir:
        print("error: give --pruned_dir (a saved pruned model) or --mask_dir (masks to prune with)", file=sys.stderr)
        return 2
    if "onnx" in args.backend:
        if missing_packages():
            print(f"error: --backend onnx needs {', '.join(missing_packages())}: pip install "
                  f"{' '.join(missing_packages())}", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    auto_class = EncoderWithoutPooler if args.head == "embedding" else None
    original = load_model(args.ckpt_dir, args.head, auto_class).to(device).eval()
    orig_arch = bind(original)
    masks = load_masks(args.mask_dir) if args.mask_dir else None
    if args.pruned_dir:
        pruned = load_pruned(args.pruned_dir, device)
    else:
        pruned = copy.deepcopy(original)
        physically_prune(pruned, bind(pruned), *masks)
    pruned.eval()
    pruned_arch = bind(pruned)

    onnx_folder = (args.onnx_dir or tempfile.mkdtemp(prefix="latency-onnx-")) if "onnx" in args.backend else None
    if onnx_folder:
        os.makedirs(onnx_folder, exist_ok=True)
    floor_heads, exported = floor_heads_for(args, original, onnx_folder)
    report = {
        "ckpt_dir": args.ckpt_dir, "pruned_dir": args.pruned_dir, "mask_dir": args.mask_dir,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "repeats": args.repeats, "warmup": args.warmup, "floor_heads": floor_heads,
        "original": {"parameters": count_parameters(original),
                     "weights_bytes": weights_size_bytes(args.ckpt_dir) if os.path.isdir(args.ckpt_dir) else None},
        "pruned": {"parameters": count_parameters(pruned),
                   "weights_bytes": weights_size_bytes(args.pruned_dir) if args.pruned_dir else None,
                   **dict(zip(("heads_per_layer", "neurons_per_layer"), widths(pruned_arch)))},
        "results": [],
    }
    models = {"original": original, "pruned": pruned}
    if not args.no_fixed:
        models |= {"fixed": empty_model(original),
                   "floor": floor_model(original, report["pruned"]["heads_per_layer"],
                                        report["pruned"]["neurons_per_layer"], floor_heads=report["floor_heads"])}
        if args.per_kind:
            models |= kind_models(original, report["pruned"]["heads_per_layer"], report["pruned"]["neurons_per_layer"],
                                  report["floor_heads"])
    backends = {"eager": models}
    if "onnx" in args.backend:
        backends["onnx"] = _onnx_models(args, models, report, onnx_folder, exported)
    backends = {name: backends[name] for name in args.backend}

    if masks is not None:  # the pruned model must compute what the masked original computes
        inputs = random_inputs(original.config, 4, 32, device, seed=1)
        with torch.inference_mode():
            with apply_masks(orig_arch, masks[0].to(device), masks[1].to(device)):
                ref = original(**inputs)[0]
            got = pruned(**inputs)[0]
        report["max_abs_output_diff_vs_masked"] = float((ref - got).abs().max())

    for backend, models in backends.items():
        for seq_len in args.seq_lens:
            for batch_size in args.batch_sizes:
                row = _time_row(args, backend, models, batch_size, seq_len, device, original, pruned,
                                report["floor_heads"])
                report["results"].append(row)
                print(f"{backend:5s} batch {batch_size:3d} seq {seq_len:4d}: original {row['original_s'] * 1e3:8.1f} "
                      f"ms, pruned {row['pruned_s'] * 1e3:8.1f} ms, speedup {row['speedup']:.2f}x "
                      f"(ideal {row['ideal_mac_speedup']:.2f}x, physical {row.get('ideal_physical_speedup') or 0:.2f}x)",
                      file=sys.stderr, flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(args.output + ".tmp", args.output)
    return 0


def _onnx_models(args, models: dict, report: dict, folder: str, exported: dict) -> dict:
    """ONNX Runtime sessions of the models (original, pruned, fixed), exported into `folder` (or the pruned folder's
    model.onnx), checked against eager. exported: {name: export_onnx's report} of graphs already written there
    (floor_heads_for)."""
    own = {}      # a saved pruned folder's own graph is timed as it is
    if args.pruned_dir and os.path.isfile(os.path.join(args.pruned_dir, ONNX_FILE)):
        own["pruned"] = os.path.join(args.pruned_dir, ONNX_FILE)
    written, infos = exported_sessions({name: m for name, m in models.items() if name not in own}, folder,
                                       args.device, args.threads, args.onnx_graph == "fused", exported=exported)
    written |= {name: OrtModel(path, args.device, args.threads, spin=False) for name, path in own.items()}
    sessions = {name: written[name] for name in models}
    paths = {name: own.get(name, os.path.join(folder, f"{name}.onnx")) for name in models}
    if not args.onnx_dir:   # the sessions hold the graphs in memory
        shutil.rmtree(folder, ignore_errors=True)
        paths = {name: None if path.startswith(folder) else path for name, path in paths.items()}
    check = [random_inputs(models["original"].config, 2, 32, "cpu", seed=2)]
    diffs = {name: max_abs_difference(model, sessions[name], check) for name, model in models.items()}
    report["onnx"] = {"paths": paths, "providers": providers(args.device), "graph": args.onnx_graph,
                      "intra_op_spinning": False,
                      "fusions": {name: info["fused"] for name, info in infos.items()},
                      "attention": {name: info["attention"] for name, info in infos.items()},
                      "max_abs_output_diff_vs_eager": diffs}
    return sessions


def _undefined_as_none(ideal, *timings):
    """The ideal, or None where the timings leave it undefined (on a tiny model the floor can take as long as the
    model itself): the other columns of the row still stand."""
    try:
        return ideal(*timings)
    except ValueError as e:
        print(f"warning: {ideal.__name__} left out: {e}", file=sys.stderr)
        return None


def _time_row(args, backend, models, batch_size, seq_len, device, original, pruned, floor_heads) -> dict:
    macs_o, macs_p = model_macs(original, bind(original), seq_len), model_macs(pruned, bind(pruned), seq_len)
    inputs = random_inputs(original.config, batch_size, seq_len, "cpu" if backend == "onnx" else device)
    t = time_models(models, inputs, device, args.warmup, args.repeats)
    ideal = macs_o["total_macs"] / macs_p["total_macs"]
    speedup = t["original"]["median_s"] / t["pruned"]["median_s"]
    physical = {}
    if "fixed" in t:
        ratio = prunable_mac_ratio(macs_o, macs_p)
        limit = physical_ideal_speedup(t["original"]["median_s"], t["fixed"]["median_s"], ratio)
        floor_ratio = floor_mac_ratio(macs_o, macs_p, floor_macs(bind(pruned), seq_len, floor_heads))
        floor_limit = _undefined_as_none(physical_ideal_speedup, t["original"]["median_s"], t["floor"]["median_s"],
                                         floor_ratio)
        physical = {"fixed_s": t["fixed"]["median_s"], "fixed_share": t["fixed"]["median_s"] / t["original"]["median_s"],
                    "prunable_mac_ratio": ratio, "ideal_physical_speedup": limit,
                    "fraction_of_physical_ideal": speedup / limit,
                    "floor_s": t["floor"]["median_s"],
                    "floor_share": t["floor"]["median_s"] / t["original"]["median_s"],
                    "floor_mac_ratio": floor_ratio, "ideal_floor_speedup": floor_limit,
                    "fraction_of_floor_ideal": floor_limit and speedup / floor_limit}
        if "heads_full" in t:
            units = unit_counts(bind(original), bind(pruned), floor_heads)
            median = {name: t[name]["median_s"] for name in t}
            unit_limit = _undefined_as_none(unit_ideal_speedup, median, units)
            physical |= {"heads_full_s": median["heads_full"], "neurons_full_s": median["neurons_full"],
                         # 1.0 when the two kinds' times add up: T_heads_full + T_neurons_full - T_floor = T
                         "additivity": (median["heads_full"] + median["neurons_full"] - median["floor"]) /
                                       median["original"],
                         # the heads' share of the time above the floor, beside their share of the prunable MACs
                         "head_time_share": (median["heads_full"] - median["floor"]) /
                                            (median["heads_full"] + median["neurons_full"] - 2 * median["floor"]),
                         "head_mac_share": macs_o["heads"] / (macs_o["heads"] + macs_o["neurons"]),
                         "unit_counts": units, "ideal_unit_speedup": unit_limit,
                         "fraction_of_unit_ideal": unit_limit and speedup / unit_limit}
    return physical | {
        "backend": backend, "batch_size": batch_size, "seq_len": seq_len,
        "original_s": t["original"]["median_s"], "pruned_s": t["pruned"]["median_s"],
        "speedup": speedup,
        "speedup_of_min": t["original"]["min_s"] / t["pruned"]["min_s"],
        "timings": t,
        "original_macs": macs_o["total_macs"], "pruned_macs": macs_p["total_macs"],
        "ideal_mac_speedup": ideal,
        "ideal_speedup_with_fixed": macs_o["total_with_fixed"] / macs_p["total_with_fixed"],
        "fraction_of_ideal": speedup / ideal,
    }


if __name__ == "__main__":
    sys.exit(main())
