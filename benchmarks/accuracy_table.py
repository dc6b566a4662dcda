"""Accuracy at aggressive budgets on three tasks, methods compared with paired statistics (issue 14).

Tasks: the movie-review benchmark (../shared/benchmark) and real GLUE MRPC and STS-B
(../shared/data/glue) with all-MiniLM-L6-v2 fine-tuned by python -m scripts.finetune (recipe below; the
checkpoints are rebuilt under checkpoints/ when missing). For every task x seed the mask gradients and
the unpruned model's dev predictions are computed once; every (constraint, variant) cell then runs
search -> rearrangement -> tuning and is written, with its per-example dev predictions, to its own JSON in
benchmarks/results/accuracy_table/ (committed: a rerun on any machine skips the done cells), so the table
is recomputed from them without rerunning anything:

- metric: the task's main metric (accuracy; STS-B Spearman), in points;
- drop: unpruned minus pruned, in points;
- paired difference to `kwon` (the paper's method) with a 95% bootstrap interval over the dev rows,
  the same resampled rows for every seed (so the interval is of the mean over seeds);
- fidelity: agreement with the unpruned model's predicted labels (STS-B: Pearson correlation with the
  unpruned model's scores).

    python -m benchmarks.accuracy_table                      # everything (resumes where it stopped)
    python -m benchmarks.accuracy_table --tasks movie --seeds 0 --constraints 0.3 --variants kwon lsq
    python -m benchmarks.accuracy_table --table              # only the table, from what is stored
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
BENCH = os.path.join(SHARED, "benchmark")
GLUE = os.path.join(SHARED, "data", "glue")

import torch

from arch import bind
from benchmarks.record import cell_done, machine_metadata, read_cells, write_cell
from benchmarks.variants import VARIANTS, run_variant  # noqa: E402  (the variants are PruneOptions overrides)
from prune.weight_updates import swapped_weights
from scripts.finetune import finetune
from tasks.glue import prepare_glue
from utils.checkpoint import load_model, load_tokenizer


@dataclass(frozen=True)
class BenchTask:
    task_name: str
    ckpt_dir: str
    data_dir: str
    max_length: int
    finetune: dict | None = None    # python -m scripts.finetune arguments that rebuild the checkpoint


# The recipe of the two GLUE checkpoints: python -m scripts.finetune's defaults (3 epochs, lr 1e-4, batch 32,
# AdamW, 6% warm-up) at 128 tokens, seed 0; STS-B 2 epochs (the sentence-similarity model converges fast).
TASKS = {
    "movie": BenchTask("sst2", os.path.join(BENCH, "minilm-movie-sst2"), os.path.join(BENCH, "movie-sst2"), 64),
    "mrpc": BenchTask("mrpc", os.path.join(ROOT, "checkpoints", "minilm-mrpc"), os.path.join(GLUE, "MRPC"), 128,
                      dict(max_length=128, seed=0)),
    "stsb": BenchTask("stsb", os.path.join(ROOT, "checkpoints", "minilm-stsb"), os.path.join(GLUE, "STS-B"), 128,
                      dict(max_length=128, seed=0, epochs=2)),
}
BOOTSTRAP = 2000
CELL_DIR = os.path.join(ROOT, "benchmarks", "results", "accuracy_table")


def ensure_checkpoint(task: BenchTask) -> None:
    if task.finetune is None:
        return
    result = finetune(task.task_name, task.ckpt_dir, task.data_dir, **task.finetune)
    print(json.dumps({"checkpoint": task.ckpt_dir, "cached": result.get("cached"),
                      "dev": result.get("dev_metrics") or result.get("metrics")}), flush=True)


def run(args) -> None:
    for task_key in args.tasks:
        bench = TASKS[task_key]
        ensure_checkpoint(bench)
        for seed in args.seeds:
            todo = [(c, v) for c in args.constraints for v in args.variants
                    if not cell_done(cell_path(args.cell_dir, task_key, seed, c, v))]
            if not todo:
                continue
            torch.manual_seed(seed)
            model = load_model(bench.ckpt_dir, "classification")
            arch = bind(model)
            task = prepare_glue(bench.task_name, bench.data_dir, load_tokenizer(bench.ckpt_dir, None), model.config,
                                args.num_samples, seed, bench.max_length, 32)
            dense_path = cell_path(args.cell_dir, task_key, seed, 1.0, "dense")
            if not cell_done(dense_path):
                write_cell(dense_path, {"task": task_key, "seed": seed, "variant": "dense",
                                        "preds": _stored(task.predict(model, arch)),
                                        "labels": _stored(np.asarray(task.dev_labels)), "machine": machine_metadata()})
            grads = {}
            for c, name in todo:
                meta = machine_metadata()
                result, seconds = run_variant(model, arch, task, grads, c, name, seed)
                with swapped_weights(arch, result.weight_updates):
                    preds = task.predict(model, arch, *result.final)
                row = {"task": task_key, "seed": seed, "constraint": c, "variant": name,
                       "mac_ratio": round(result.mac_ratio, 5), "seconds": round(seconds, 1),
                       "stage_seconds": result.seconds, "num_samples": args.num_samples}
                print(json.dumps(row), flush=True)
                write_cell(cell_path(args.cell_dir, task_key, seed, c, name),
                           {**row, "preds": _stored(preds), "machine": meta})


def cell_path(cell_dir: str, task: str, seed: int, constraint: float, variant: str) -> str:
    """One JSON per cell (constraint 1.0 with variant "dense": the unpruned model's predictions and the labels)."""
    name = f"{task}-s{seed}-dense" if variant == "dense" else f"{task}-s{seed}-c{constraint:g}-{variant}"
    return os.path.join(cell_dir, name + ".json")


def _stored(values: np.ndarray) -> list:
    """Predictions as JSON: labels as ints, scores to 7 significant digits (about float32's precision)."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        return [int(v) for v in values]
    return [float(f"{v:.7g}") for v in values.astype(np.float64)]


# ---- statistics -----------------------------------------------------------------------------------

def _metric(task_key: str, preds: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The main metric (points) of preds on each row of resampled indices idx [B, N]."""
    if task_key == "stsb":
        p, y = rankdata(preds[idx], axis=1), rankdata(labels[idx], axis=1)
        return 100 * _rowwise_corr(p, y)
    return 100 * (preds[idx] == labels[idx]).mean(axis=1)


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(1) / np.where(norm > 0, norm, 1), np.nan)


def _fidelity(task_key: str, preds: np.ndarray, dense: np.ndarray) -> float:
    if task_key == "stsb":
        return float(np.corrcoef(preds, dense)[0, 1])
    return float((preds == dense).mean())


def summarize(cell_dir: str, baseline: str = "kwon") -> list[dict]:
    """One entry per task x constraint x variant: means over the seeds present for that variant and the
    baseline, and the paired bootstrap interval of the difference of those means."""
    stored = {(c["task"], c["seed"], c.get("constraint", 1.0), c["variant"]): c for c in read_cells(cell_dir)}
    load = lambda t, s, c, v: np.asarray(stored[(t, s, c, v)]["preds"])  # noqa: E731
    cells = {}
    for (t, s, c, v), r in stored.items():
        if v != "dense":
            cells.setdefault((t, c, v), []).append(r)
    summary = []
    for (task_key, c, variant), group in sorted(cells.items()):
        labels = np.asarray(next(r["labels"] for k, r in stored.items() if k[0] == task_key and k[3] == "dense"))
        n = len(labels)
        rng = np.random.default_rng(0)
        idx = np.concatenate([np.arange(n)[None], rng.integers(0, n, (BOOTSTRAP, n))])   # row 0: the dev set itself
        seeds = sorted(r["seed"] for r in group)
        paired = [s for s in seeds if (task_key, c, baseline) in cells
                  and any(b["seed"] == s for b in cells[(task_key, c, baseline)])]
        metric = np.mean([_metric(task_key, load(task_key, s, c, variant), labels, idx) for s in seeds], axis=0)
        dense = np.mean([_metric(task_key, load(task_key, s, 1.0, "dense"), labels, idx[:1]) for s in seeds])
        entry = {"task": task_key, "constraint": c, "variant": variant, "seeds": seeds,
                 "metric": round(float(metric[0]), 2), "dense": round(float(dense), 2),
                 "drop": round(float(dense - metric[0]), 2),
                 "fidelity": round(float(np.mean([_fidelity(task_key, load(task_key, s, c, variant),
                                                            load(task_key, s, 1.0, "dense")) for s in seeds])), 4),
                 "mac_ratio": round(float(np.mean([r["mac_ratio"] for r in group])), 4),
                 "seconds": round(float(np.mean([r["seconds"] for r in group])), 1)}
        if paired and variant != baseline:
            diff = np.mean([_metric(task_key, load(task_key, s, c, variant), labels, idx)
                            - _metric(task_key, load(task_key, s, c, baseline), labels, idx) for s in paired], axis=0)
            # a resample of a tiny dev set can hold one distinct score: its correlation is undefined (NaN), not 0
            low, high = np.nanpercentile(diff[1:], [2.5, 97.5])
            entry.update(vs_baseline=round(float(diff[0]), 2), ci95=[round(float(low), 2), round(float(high), 2)],
                         paired_seeds=paired)
        summary.append(entry)
    return summary


def markdown(summary: list[dict], baseline: str = "kwon") -> str:
    tasks = sorted({e["task"] for e in summary}, key=list(TASKS).index)
    constraints = sorted({e["constraint"] for e in summary})
    variants = [v for v in VARIANTS if any(e["variant"] == v for e in summary)]
    at = {(e["task"], e["constraint"], e["variant"]): e for e in summary}
    out = []
    for task_key in tasks:
        dense = next(e["dense"] for e in summary if e["task"] == task_key)
        most = max(len(e["seeds"]) for e in summary if e["task"] == task_key)
        out += [f"**{task_key}** (unpruned {dense:.2f}; cell: metric, paired difference to {baseline} with its "
                f"95% interval, fidelity; mean over {most} seeds unless a cell says fewer)", "",
                "| variant | " + " | ".join(f"{c:g}" for c in constraints) + " |",
                "|---|" + "---|" * len(constraints)]
        for v in variants:
            cells = []
            for c in constraints:
                e = at.get((task_key, c, v))
                if e is None:
                    cells.append("")
                    continue
                diff = (f" ({e['vs_baseline']:+.2f} [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}])"
                        if "vs_baseline" in e else "")
                fewer = f", {len(e['seeds'])} seed{'s' * (len(e['seeds']) > 1)}" if len(e["seeds"]) < most else ""
                cells.append(f"{e['metric']:.2f}{diff}, {e['fidelity']:.3f}{fewer}")
            out.append(f"| {v} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["**Drop ratio** (mean over tasks of the drop, unpruned minus pruned, divided by the baseline's mean "
            "drop; goal at 0.2-0.4: at most 0.25)", "", "| variant | " + " | ".join(f"{c:g}" for c in constraints)
            + " |", "|---|" + "---|" * len(constraints)]
    for v in variants:
        cells = []
        for c in constraints:
            mine = [at[(t, c, v)]["drop"] for t in tasks if (t, c, v) in at and (t, c, baseline) in at]
            base = [at[(t, c, baseline)]["drop"] for t in tasks if (t, c, v) in at and (t, c, baseline) in at]
            cells.append(f"{np.mean(mine) / np.mean(base):.2f} ({len(mine)})" if mine and np.mean(base) > 0 else "")
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def figure(summary: list[dict], path: str) -> None:
    import matplotlib  # figures only: its import takes seconds, the tables do not need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({e["task"] for e in summary}, key=list(TASKS).index)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task_key in zip(axes[0], tasks):
        entries = [e for e in summary if e["task"] == task_key]
        for v in [v for v in VARIANTS if any(e["variant"] == v for e in entries)]:
            pts = sorted((e["mac_ratio"], e["metric"]) for e in entries if e["variant"] == v)
            ax.plot(*zip(*pts), marker="o", label=v)
        ax.axhline(entries[0]["dense"], color="gray", ls="--", lw=1, label="unpruned")
        ax.set_title({"movie": "movie reviews (SST-2 layout)", "mrpc": "MRPC", "stsb": "STS-B"}[task_key])
        ax.set_xlabel("MACs kept (heads + FFN)")
        ax.set_ylabel("Spearman x 100" if task_key == "stsb" else "accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--constraints", nargs="+", type=float, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    p.add_argument("--variants", nargs="+", default=["kwon", "lsq"], choices=sorted(VARIANTS))
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--cell_dir", default=CELL_DIR, help="one JSON per cell, predictions included (committed)")
    p.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results", "accuracy_table"),
                   help="where the summary goes (.json and .md)")
    p.add_argument("--figure", default=os.path.join(ROOT, "figures", "accuracy_vs_macs_three_tasks.png"))
    p.add_argument("--table", action="store_true", help="only summarize what --cell_dir holds")
    p.add_argument("--baseline", default="kwon", choices=sorted(VARIANTS),
                   help="the variant every other one is paired with (its difference and 95%% interval)")
    args = p.parse_args(argv)
    if not args.table:
        run(args)
    summary = summarize(args.cell_dir, args.baseline)
    with open(args.results + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    text = markdown(summary, args.baseline)
    with open(args.results + ".md", "w") as f:
        f.write(text + "\n")
    figure(summary, args.figure)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
