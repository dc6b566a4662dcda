"""The rows of a sweep: every run folder under a root read into one row (task, model, variant, constraint, seed,
metric before/after, MAC ratio, seconds per stage, units kept), and their means over seeds (scripts/collect.py)."""
from __future__ import annotations

import json
import math
import os
import re
import statistics

from prune.options import variant_name


STAGES = ["gradients", "search", "rearrange", "mask_tuning"]
EVAL_STAGES = ["teacher", "search", "rearrange"]     # results.json metric_stages (main.py --eval_stages)
VARIANT_ORDER = ["search", "rearrange", "kwon", "lsq", "magnitude", "random"]
VARIANT_LABELS = {
    "search": "search only",
    "rearrange": "+ rearrangement",
    "kwon": "+ mask tuning (kwon)",
    "lsq": "+ lsq refit",
    "magnitude": "magnitude importance (kwon)",
    "random": "random importance (kwon)",
}
DEFAULT_VARIANTS = ["kwon", "lsq"]          # preference for the heat map
RUN_MARKERS = ("results.json", "args.json", "log.txt", "sweep.log")

COLUMNS = [
    "task", "model", "variant", "method", "importance", "teacher", "rearrange", "rescale", "budget",
    "constraint", "seed", "num_samples", "primary_metric", "metric_before", "metric_after", "metric_delta",
    "mac_ratio", "latency_ratio", "measured_speedup",
    *[f"seconds_{s}" for s in STAGES], "seconds_pruning_total", "seconds_wall_total",
    "peak_rss_mb", "peak_gpu_mb", "device", "run_dir", *[f"stage_{s}" for s in EVAL_STAGES],
]
MEAN_COLUMNS = [
    "task", "model", "variant", "constraint", "n_seeds", "seeds", "primary_metric", "metric_before",
    "metric_after_mean", "metric_after_std", "metric_delta_mean", "mac_ratio_mean", "measured_speedup_mean",
    *[f"seconds_{s}_mean" for s in STAGES], "seconds_pruning_total_mean", "peak_rss_mb_mean",
]


# ----------------------------------------------------------------------------------------------
# reading the run folders
# ----------------------------------------------------------------------------------------------

def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def find_runs(root: str) -> tuple[list[str], list[str]]:
    """(finished run folders, unfinished run folders), sorted. Saved pruned models are not searched."""
    finished, unfinished = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not os.path.isfile(os.path.join(folder, d, "pruning.json")))
        if "results.json" in files:
            finished.append(folder)
            dirs[:] = []          # a run folder does not hold other runs
        elif any(name in files for name in RUN_MARKERS):
            unfinished.append(folder)
    return sorted(finished), sorted(unfinished)


def run_args(folder: str, results: dict) -> dict:
    """A run's options as one flat dict: args.json (its `prune` and `data` parts flattened; older folders have
    flat ones), else what results.json says."""
    args = read_json(os.path.join(folder, "args.json")) or {}
    if not args:          # older or copied folders: what results.json says is enough
        args = {k: results[k] for k in ("method", "teacher", "constraint") if k in results}
    for part in ("data", "prune"):
        if isinstance(args.get(part), dict):
            args = {**args, **args[part]}
    return args


def _seed_from_path(path: str):
    m = re.search(r"seed_?(\d+)", path)
    return int(m.group(1)) if m else None


def _number(value):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _stage_metric(stages, stage: str, primary: str | None):
    """The primary metric of one --eval_stages evaluation, or None."""
    scores = stages.get(stage) if isinstance(stages, dict) else None
    return _number(scores.get(primary)) if isinstance(scores, dict) else None


def run_row(folder: str, root: str) -> dict | None:
    results = read_json(os.path.join(folder, "results.json"))
    if not isinstance(results, dict):
        return None
    args = run_args(folder, results)
    primary = results.get("primary_metric") or next(iter(results.get("metric_after") or {}), None)
    before = _number((results.get("metric_before") or {}).get(primary))
    after = _number((results.get("metric_after") or {}).get(primary))
    seconds = results.get("seconds") or {}
    memory = results.get("peak_memory_mb") or {}
    pruned = results.get("pruned_model") or {}
    ckpt = args.get("ckpt_dir")
    seed = args.get("seed", _seed_from_path(os.path.relpath(folder, root)))
    data = results.get("data") or {}
    row = {
        "task": results.get("task") or args.get("task_name"),
        "model": os.path.basename(os.path.normpath(ckpt)) if ckpt else None,
        "variant": results.get("variant") or variant_name(args),
        "method": args.get("method", results.get("method")),
        "importance": args.get("importance", "fisher"),
        "teacher": args.get("teacher", results.get("teacher")),
        "rearrange": args.get("rearrange"),
        "rescale": args.get("mask_tuning", args.get("rescale")),
        "budget": args.get("metric", "mac"),
        "constraint": _number(results.get("constraint", args.get("constraint"))),
        "seed": seed,
        "num_samples": data.get("num_samples_used", args.get("num_samples")),
        "primary_metric": primary,
        "metric_before": before,
        "metric_after": after,
        "metric_delta": None if before is None or after is None else after - before,
        "mac_ratio": _number(results.get("mac_ratio")),
        "latency_ratio": _number(results.get("latency_ratio")),
        "measured_speedup": _number(pruned.get("measured_speedup")),
        **{f"seconds_{s}": _number(seconds.get(s)) for s in STAGES},
        "seconds_pruning_total": _number(seconds.get("pruning_total")),
        "seconds_wall_total": _number(seconds.get("wall_total")),
        "peak_rss_mb": _number(memory.get("rss")),
        "peak_gpu_mb": _number(memory.get("gpu")),
        "device": results.get("device"),
        "run_dir": os.path.relpath(folder, root),
        **{f"stage_{s}": _stage_metric(results.get("metric_stages"), s, primary) for s in EVAL_STAGES},
        # not in the CSV: for the heat map
        "_heads": results.get("heads_kept_per_layer"),
        "_neurons": results.get("neurons_kept_per_layer"),
        "_folder": folder,
        "_speed": pruned.get("speed") or {},
    }
    return row


def variant_key(variant: str):
    base = variant.split("-")[0]
    return (VARIANT_ORDER.index(base) if base in VARIANT_ORDER else len(VARIANT_ORDER), variant)


def _sort_key(row: dict):
    return (str(row["task"]), str(row["model"]), variant_key(row["variant"]), row["constraint"] or 0,
            row["seed"] if isinstance(row["seed"], int) else -1, row["run_dir"])


def collect(root: str) -> tuple[list[dict], list[str]]:
    finished, unfinished = find_runs(root)
    rows = []
    for folder in finished:
        row = run_row(folder, root)
        if row is None:
            unfinished.append(folder)       # unreadable results.json: not a finished run
        else:
            rows.append(row)
    rows.sort(key=_sort_key)
    return rows, sorted(os.path.relpath(u, root) for u in unfinished)


# ----------------------------------------------------------------------------------------------
# means over seeds
# ----------------------------------------------------------------------------------------------

def mean_of(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _std(values):
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


def mean_rows(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["model"], row["variant"], row["constraint"]), []).append(row)
    out = []
    for (task, model, variant, constraint), group in groups.items():
        out.append({
            "task": task, "model": model, "variant": variant, "constraint": constraint,
            "n_seeds": len(group),
            "seeds": " ".join(str(r["seed"]) for r in group),
            "primary_metric": group[0]["primary_metric"],
            "metric_before": mean_of(r["metric_before"] for r in group),
            "metric_after_mean": mean_of(r["metric_after"] for r in group),
            "metric_after_std": _std([r["metric_after"] for r in group]),
            "metric_delta_mean": mean_of(r["metric_delta"] for r in group),
            "mac_ratio_mean": mean_of(r["mac_ratio"] for r in group),
            "measured_speedup_mean": mean_of(r["measured_speedup"] for r in group),
            **{f"seconds_{s}_mean": mean_of(r[f"seconds_{s}"] for r in group) for s in STAGES},
            "seconds_pruning_total_mean": mean_of(r["seconds_pruning_total"] for r in group),
            "peak_rss_mb_mean": mean_of(r["peak_rss_mb"] for r in group),
        })
    out.sort(key=lambda m: (str(m["task"]), str(m["model"]), variant_key(m["variant"]), m["constraint"] or 0))
    return out


def task_groups(means: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for m in means:
        groups.setdefault((m["task"], m["model"]), []).append(m)
    return groups
