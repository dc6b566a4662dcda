"""Collect the run folders of a sweep into tables and figures.

    python -m scripts.collect outputs/sweep [--out figures/] [--heatmap_run RUN_DIR] [--quiet]

Every folder under ROOT that holds results.json (and, normally, args.json) is one finished run;
folders with args.json, log.txt or sweep.log but no results.json are listed as unfinished and
otherwise ignored. Writes into ROOT:

  summary.csv       one row per finished run
  summary_mean.csv  mean (and standard deviation) over seeds per task, model, variant and constraint
  ablation.csv      per task, model and constraint: the mean over seeds (and the number of seeds) of
                    every variant, the ablation steps first (see below)
  summary.md        the ablation tables, both tables above in Markdown, plus the unfinished folders

and, into --out (default: figures/ of the repository), with stable names:

  accuracy_vs_macs.png    primary metric after pruning vs MAC ratio, one line per variant, mean over
                          seeds with the spread as error bars; dashed line: the unpruned model
  speedup_vs_macs.png     measured speedup of the physically pruned model vs MAC ratio (only when some
                          run has pruned_model.measured_speedup, i.e. main.py --save_pruned); dotted: 1/MAC ratio
  kept_per_layer.png      heads and FFN neurons kept per layer (heat map, counts written in the cells)
                          for one variant and seed at every constraint it was run at; default: the
                          default variant (kwon, else lsq, else the first), lowest seed; --heatmap_run
                          picks one run folder instead
  seconds_per_stage.png   seconds per pruning stage (gradients, search, rearrange, mask tuning) per
                          constraint, stacked, one panel per variant, mean over seeds

The variant of a run is derived from its args.json (not from the folder name):
  search       Fisher search only (--no_rearrange --no_mask_tuning)
  rearrange    search + mask rearrangement (--no_mask_tuning)
  kwon         search + rearrangement + the paper's mask tuning (--method kwon)
  lsq          search + rearrangement + least-squares refit (--method lsq)
  magnitude / random   the kwon pipeline with --importance magnitude / random
with suffixes for anything else that differs from these or from main.py's current defaults (e.g.
"lsq-random", "kwon-norearrange", "kwon-teacher_full", "lsq-ridge0.001", "kwon-latency").

The ablation table (summary.md "## Ablation", ablation.csv), one per task and model, one line per
constraint: search only | + rearrangement | + mask tuning (kwon, the paper) | lsq (ours) | any other
variant. "search only" and "+ rearrangement" come from the search / rearrange runs at that constraint;
without them, from the kwon runs' --eval_stages scores of the same masks (results.json metric_stages,
marked * in summary.md, "kwon --eval_stages" in the *_source columns of ablation.csv).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys

from prune.options import variant_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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

def _read_json(path: str):
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
    args = _read_json(os.path.join(folder, "args.json")) or {}
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
    results = _read_json(os.path.join(folder, "results.json"))
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


def _variant_key(variant: str):
    base = variant.split("-")[0]
    return (VARIANT_ORDER.index(base) if base in VARIANT_ORDER else len(VARIANT_ORDER), variant)


def _sort_key(row: dict):
    return (str(row["task"]), str(row["model"]), _variant_key(row["variant"]), row["constraint"] or 0,
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

def _mean(values):
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
            "metric_before": _mean(r["metric_before"] for r in group),
            "metric_after_mean": _mean(r["metric_after"] for r in group),
            "metric_after_std": _std([r["metric_after"] for r in group]),
            "metric_delta_mean": _mean(r["metric_delta"] for r in group),
            "mac_ratio_mean": _mean(r["mac_ratio"] for r in group),
            "measured_speedup_mean": _mean(r["measured_speedup"] for r in group),
            **{f"seconds_{s}_mean": _mean(r[f"seconds_{s}"] for r in group) for s in STAGES},
            "seconds_pruning_total_mean": _mean(r["seconds_pruning_total"] for r in group),
            "peak_rss_mb_mean": _mean(r["peak_rss_mb"] for r in group),
        })
    out.sort(key=lambda m: (str(m["task"]), str(m["model"]), _variant_key(m["variant"]), m["constraint"] or 0))
    return out


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------

def _cell(value, digits: int | None = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}" if digits is None else f"{value:.{digits}f}"
    return str(value)


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else (str(row[c]).lower() if isinstance(row[c], bool)
                                                            else row[c]) for c in columns])
    os.replace(tmp, path)


def _md_table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


# ----------------------------------------------------------------------------------------------
# the ablation table
# ----------------------------------------------------------------------------------------------

ABLATION_STEPS = {"search": "search only", "rearrange": "+ rearrangement",
                  "kwon": "+ mask tuning (kwon, the paper)", "lsq": "lsq (ours)"}
STAGE_FALLBACK = {"search": "stage_search", "rearrange": "stage_rearrange"}   # from the kwon runs
STAGE_SOURCE = "kwon --eval_stages"
STAGE_NOTE = "* from the kwon runs' --eval_stages evaluation of the same masks"


def _ablation_cell(runs: list[dict], variant: str) -> tuple | None:
    """(mean over seeds, number of seeds, taken from the kwon runs' stages) for one constraint, or None."""
    values = [r["metric_after"] for r in runs if r["variant"] == variant and r["metric_after"] is not None]
    from_stages = not values and variant in STAGE_FALLBACK
    if from_stages:
        stage = STAGE_FALLBACK[variant]
        values = [r[stage] for r in runs if r["variant"] == "kwon" and r[stage] is not None]
    return (statistics.fmean(values), len(values), from_stages) if values else None


def ablation(rows: list[dict]) -> list[dict]:
    """One table per task and model: task, model, primary_metric, unpruned (mean metric_before), variants
    (the columns: the ablation steps, then every other variant present) and lines, one per constraint:
    {"constraint": c, "cells": {variant: _ablation_cell(...)}}."""
    tables = []
    for (task, model), group in sorted(_task_groups(rows).items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        others = sorted({r["variant"] for r in group} - set(ABLATION_STEPS), key=_variant_key)
        variants = [*ABLATION_STEPS, *others]
        lines = []
        for c in sorted({r["constraint"] for r in group}, key=lambda c: c or 0):
            runs = [r for r in group if r["constraint"] == c]
            lines.append({"constraint": c, "cells": {v: _ablation_cell(runs, v) for v in variants}})
        tables.append({"task": task, "model": model, "primary_metric": group[0]["primary_metric"],
                       "unpruned": _mean(r["metric_before"] for r in group), "variants": variants,
                       "lines": lines})
    return tables


def _ablation_text(cell: tuple | None) -> str:
    if cell is None:
        return ""
    mean, n, from_stages = cell
    return f"{mean:.4f}" + (f" ({n})" if n > 1 else "") + ("*" if from_stages else "")


def ablation_tables(rows: list[dict]) -> str:
    """The "## Ablation" section of summary.md ("" without runs)."""
    tables = ablation(rows)
    if not tables:
        return ""
    parts = ["## Ablation", "",
             "Dev metric after pruning, mean over seeds (the number of seeds in parentheses when more than one).", ""]
    for t in tables:
        unpruned = "" if t["unpruned"] is None else f", unpruned {t['unpruned']:.4f}"
        parts += [f"### {t['task']} — {t['model']} ({t['primary_metric'] or 'metric'}{unpruned})", ""]
        header = ["constraint", *[ABLATION_STEPS.get(v, v) for v in t["variants"]]]
        lines = [[_cell(line["constraint"], None), *[_ablation_text(line["cells"][v]) for v in t["variants"]]]
                 for line in t["lines"]]
        parts += _md_table(header, lines) + [""]
        if any(cell and cell[2] for line in t["lines"] for cell in line["cells"].values()):
            parts += ["\\" + STAGE_NOTE, ""]      # escaped: not a list item
    return "\n".join(parts)


def ablation_csv(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """(rows, columns) of ablation.csv: one row per task, model and constraint; per variant the mean over
    seeds and the number of seeds (<variant>_n); for search and rearrange also where it came from
    (<variant>_source: runs, or kwon --eval_stages)."""
    tables = ablation(rows)
    variants = [*ABLATION_STEPS, *sorted({v for t in tables for v in t["variants"]} - set(ABLATION_STEPS),
                                         key=_variant_key)]
    columns = ["task", "model", "primary_metric", "unpruned", "constraint"]
    for v in variants:
        columns += [v, f"{v}_n"] + ([f"{v}_source"] if v in STAGE_FALLBACK else [])
    out = []
    for t in tables:
        for line in t["lines"]:
            row = {k: t[k] for k in ("task", "model", "primary_metric", "unpruned")}
            row["constraint"] = line["constraint"]
            for v, cell in line["cells"].items():
                if cell is not None:
                    row[v], row[f"{v}_n"] = cell[0], cell[1]
                if cell is not None and v in STAGE_FALLBACK:
                    row[f"{v}_source"] = STAGE_SOURCE if cell[2] else "runs"
            out.append(row)
    return out, columns


def markdown(rows: list[dict], means: list[dict], unfinished: list[str], root: str) -> str:
    parts = [f"# Sweep summary: {root}", "",
             f"{len(rows)} finished run(s), {len(unfinished)} unfinished.", ""]
    if rows:
        parts += [ablation_tables(rows)]
    if means:
        parts += ["## Mean over seeds", ""]
        header = ["task", "model", "variant", "constraint", "seeds", "metric", "before", "after (mean ± std)",
                  "MAC ratio", "speedup", "s gradients", "s search", "s rearrange", "s mask tuning",
                  "s pruning", "peak RSS MB"]
        lines = []
        for m in means:
            after = _cell(m["metric_after_mean"])
            if m["n_seeds"] > 1 and m["metric_after_std"] is not None:
                after += f" ± {m['metric_after_std']:.4f}"
            lines.append([_cell(m["task"]), _cell(m["model"]), m["variant"], _cell(m["constraint"], None),
                          str(m["n_seeds"]), _cell(m["primary_metric"]), _cell(m["metric_before"]), after,
                          _cell(m["mac_ratio_mean"]), _cell(m["measured_speedup_mean"], 2),
                          *[_cell(m[f"seconds_{s}_mean"], 1) for s in STAGES],
                          _cell(m["seconds_pruning_total_mean"], 1), _cell(m["peak_rss_mb_mean"], 0)])
        parts += _md_table(header, lines) + [""]
    if rows:
        parts += ["## Runs", ""]
        header = ["task", "model", "variant", "constraint", "seed", "metric", "before", "after", "MAC ratio",
                  "speedup", "s gradients", "s search", "s rearrange", "s mask tuning", "s pruning",
                  "peak RSS MB", "run"]
        lines = [[_cell(r["task"]), _cell(r["model"]), r["variant"], _cell(r["constraint"], None), _cell(r["seed"]),
                  _cell(r["primary_metric"]), _cell(r["metric_before"]), _cell(r["metric_after"]),
                  _cell(r["mac_ratio"]), _cell(r["measured_speedup"], 2),
                  *[_cell(r[f"seconds_{s}"], 1) for s in STAGES], _cell(r["seconds_pruning_total"], 1),
                  _cell(r["peak_rss_mb"], 0), r["run_dir"]] for r in rows]
        parts += _md_table(header, lines) + [""]
    if unfinished:
        parts += ["## Unfinished (no results.json)", ""] + [f"- {u}" for u in unfinished] + [""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib  # figures only: its import takes seconds, the tables do not need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def _task_groups(means: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for m in means:
        groups.setdefault((m["task"], m["model"]), []).append(m)
    return groups


def _panels(plt, count: int, width: float = 5.5, height: float = 4.2, max_cols: int = 3):
    cols = min(count, max_cols)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def plot_metric_vs_macs(plt, means: list[dict], path: str) -> str | None:
    groups = {k: v for k, v in _task_groups(means).items()
              if any(m["mac_ratio_mean"] is not None and m["metric_after_mean"] is not None for m in v)}
    if not groups:
        return None
    fig, axes = _panels(plt, len(groups))
    for ax, ((task, model), group) in zip(axes, sorted(groups.items(), key=lambda kv: str(kv[0]))):
        metric = group[0]["primary_metric"] or "metric"
        variants = sorted({m["variant"] for m in group}, key=_variant_key)
        for variant in variants:
            pts = sorted((m for m in group if m["variant"] == variant and m["mac_ratio_mean"] is not None
                          and m["metric_after_mean"] is not None), key=lambda m: m["mac_ratio_mean"])
            if not pts:
                continue
            ax.errorbar([m["mac_ratio_mean"] for m in pts], [m["metric_after_mean"] for m in pts],
                        yerr=[m["metric_after_std"] or 0 for m in pts], marker="o", markersize=4, capsize=3,
                        label=_label(variant))
        before = _mean(m["metric_before"] for m in group)
        if before is not None:
            ax.axhline(before, color="black", linestyle="--", linewidth=1, label=f"unpruned ({before:.4f})")
        ax.set_xlabel("MAC ratio (heads + FFN, kept / original)")
        ax.set_ylabel(f"dev {metric} after pruning")
        ax.set_title(f"{task} — {model}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_speedup_vs_macs(plt, rows: list[dict], means: list[dict], path: str) -> str | None:
    pts = [r for r in rows if r["measured_speedup"] is not None and r["mac_ratio"] is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    multi = len({(r["task"], r["model"]) for r in pts}) > 1
    keys = sorted({(r["task"], r["model"], r["variant"]) for r in pts},
                  key=lambda k: (str(k[0]), str(k[1]), _variant_key(k[2])))
    for key in keys:        # every run as a point, the mean over seeds as the line
        line = ax.plot(*zip(*sorted((m["mac_ratio_mean"], m["measured_speedup_mean"]) for m in means
                                    if (m["task"], m["model"], m["variant"]) == key
                                    and m["measured_speedup_mean"] is not None and m["mac_ratio_mean"] is not None)),
                       marker="o", markersize=4, linestyle="-",
                       label=_label(key[2]) + (f" ({key[0]}, {key[1]})" if multi else ""))[0]
        sel = [r for r in pts if (r["task"], r["model"], r["variant"]) == key]
        if len(sel) > len({r["constraint"] for r in sel}):
            ax.scatter([r["mac_ratio"] for r in sel], [r["measured_speedup"] for r in sel], s=10, alpha=0.4,
                       color=line.get_color())
    lo = min(r["mac_ratio"] for r in pts)
    xs = [lo + (1 - lo) * i / 50 for i in range(51)]
    ax.plot(xs, [1 / x for x in xs], color="grey", linestyle=":", label="ideal: 1 / MAC ratio")
    ax.axhline(1.0, color="black", linewidth=0.8)
    shapes = sorted({(str(r["_speed"].get("device", r["device"])), r["_speed"].get("batch_size"),
                      r["_speed"].get("seq_len"), r["_speed"].get("threads")) for r in pts}, key=str)
    described = "; ".join(f"{d}" + (f", batch {b} x {s} tokens" if b and s else "") + (f", {t} threads" if t else "")
                          for d, b, s, t in shapes[:3]) + ("; ..." if len(shapes) > 3 else "")
    ax.set_xlabel("MAC ratio (heads + FFN, kept / original)")
    ax.set_ylabel("measured speedup of the pruned model")
    ax.set_title(f"measured speedup ({described})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def choose_heatmap_runs(rows: list[dict], heatmap_run: str | None) -> tuple[list[dict], str]:
    """The runs shown in the heat map and a title."""
    usable = [r for r in rows if r["_heads"] and r["_neurons"]]
    if heatmap_run:
        target = os.path.realpath(heatmap_run)
        chosen = [r for r in usable if os.path.realpath(r["_folder"]) == target]
        if not chosen:
            raise SystemExit(f"--heatmap_run {heatmap_run}: not a finished run under the root")
        r = chosen[0]
        return chosen, f"{r['task']} — {r['model']} — {r['variant']}, seed {r['seed']} ({r['run_dir']})"
    if not usable:
        return [], ""
    variants = {r["variant"] for r in usable}
    variant = next((v for v in DEFAULT_VARIANTS if v in variants), None) or sorted(variants, key=_variant_key)[0]
    first = min((r for r in usable if r["variant"] == variant),
                key=lambda r: (str(r["task"]), str(r["model"]), r["constraint"] or 0,
                               r["seed"] if isinstance(r["seed"], int) else -1))
    seed = first["seed"]
    chosen = [r for r in usable if r["variant"] == variant and r["seed"] == seed and r["task"] == first["task"]
              and r["model"] == first["model"]]
    chosen.sort(key=lambda r: r["constraint"] or 0)
    return chosen, f"{first['task']} — {first['model']} — {variant}, seed {seed}"


def plot_kept_per_layer(plt, rows: list[dict], path: str, heatmap_run: str | None = None,
                        num_heads: int | None = None, ffn_dim: int | None = None) -> str | None:
    chosen, title = choose_heatmap_runs(rows, heatmap_run)
    if not chosen:
        return None
    # the unpruned sizes: from the checkpoint's config.json when it is reachable, else the largest count seen
    sizes = _model_sizes(chosen[0])
    num_heads = num_heads or sizes.get("heads") or max(max(r["_heads"]) for r in chosen) or 1
    ffn_dim = ffn_dim or sizes.get("ffn") or max(max(r["_neurons"]) for r in chosen) or 1
    layers = max(len(r["_heads"]) for r in chosen)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(3.5, 0.55 * layers + 1) + 2.5, 0.5 * len(chosen) + 2.2),
                             squeeze=False)
    labels = [f"c={r['constraint']:g} (MAC {r['mac_ratio']:.2f})" if r["mac_ratio"] is not None
              else f"c={r['constraint']:g}" for r in chosen]
    image = None
    for ax, key, total, what in ((axes[0][0], "_heads", num_heads, f"heads kept (of {num_heads})"),
                                 (axes[0][1], "_neurons", ffn_dim, f"FFN neurons kept (of {ffn_dim})")):
        counts = [list(r[key]) + [0] * (layers - len(r[key])) for r in chosen]
        frac = [[c / total for c in line] for line in counts]
        image = ax.imshow(frac, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for i, line in enumerate(counts):
            for j, c in enumerate(line):
                ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                        color="black" if frac[i][j] > 0.6 else "white")
        ax.set_xticks(range(layers))
        ax.set_xticklabels([str(j) for j in range(layers)])
        ax.set_xlabel("layer")
        ax.set_yticks(range(len(chosen)))
        ax.set_yticklabels(labels if key == "_heads" else [""] * len(chosen))
        ax.set_title(what)
    fig.colorbar(image, ax=[axes[0][0], axes[0][1]], fraction=0.03, pad=0.02, label="fraction kept")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _model_sizes(row: dict) -> dict:
    args = _read_json(os.path.join(row["_folder"], "args.json")) or {}
    ckpt = args.get("ckpt_dir")
    if not ckpt:
        return {}
    for base in ("", REPO, os.path.dirname(row["_folder"])):
        config = _read_json(os.path.join(base, ckpt, "config.json"))
        if config:
            heads = config.get("num_attention_heads", config.get("n_heads"))
            ffn = config.get("intermediate_size", config.get("hidden_dim"))
            return {"heads": heads, "ffn": ffn}
    return {}


def plot_seconds_per_stage(plt, means: list[dict], path: str) -> str | None:
    usable = [m for m in means if any(m[f"seconds_{s}_mean"] is not None for s in STAGES)]
    if not usable:
        return None
    keys = sorted({(m["task"], m["model"], m["variant"]) for m in usable},
                  key=lambda k: (str(k[0]), str(k[1]), _variant_key(k[2])))
    multi = len({(k[0], k[1]) for k in keys}) > 1
    fig, axes = _panels(plt, len(keys), width=4.6, height=3.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = max(sum(m[f"seconds_{s}_mean"] or 0 for s in STAGES) for m in usable)
    for ax, key in zip(axes, keys):
        group = sorted((m for m in usable if (m["task"], m["model"], m["variant"]) == key),
                       key=lambda m: m["constraint"] or 0)
        xs = range(len(group))
        bottom = [0.0] * len(group)
        for color, stage in zip(colors, STAGES):
            heights = [m[f"seconds_{stage}_mean"] or 0.0 for m in group]
            ax.bar(xs, heights, bottom=bottom, color=color, label=stage.replace("_", " "), width=0.7)
            bottom = [b + h for b, h in zip(bottom, heights)]
        for x, total in zip(xs, bottom):
            ax.text(x, total, f"{total:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{m['constraint']:g}" for m in group])
        ax.set_xlabel("constraint")
        ax.set_ylabel("seconds (mean over seeds)")
        ax.set_ylim(0, top * 1.12 or 1)
        ax.set_title(_label(key[2]) + (f"\n{key[0]} — {key[1]}" if multi else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(STAGES), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_figures(rows: list[dict], means: list[dict], out: str, heatmap_run: str | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    plt = _pyplot()
    made = {}
    for name, fn in (("accuracy_vs_macs.png", lambda p: plot_metric_vs_macs(plt, means, p)),
                     ("speedup_vs_macs.png", lambda p: plot_speedup_vs_macs(plt, rows, means, p)),
                     ("kept_per_layer.png", lambda p: plot_kept_per_layer(plt, rows, p, heatmap_run)),
                     ("seconds_per_stage.png", lambda p: plot_seconds_per_stage(plt, means, p))):
        made[name] = fn(os.path.join(out, name))
    return made


# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="the sweep root (e.g. outputs/sweep)")
    p.add_argument("--out", default=os.path.join(REPO, "figures"), help="folder for the PNG figures")
    p.add_argument("--heatmap_run", default=None, help="run folder for kept_per_layer.png")
    p.add_argument("--no_figures", action="store_true")
    p.add_argument("--quiet", action="store_true", help="do not print summary.md")
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    rows, unfinished = collect(args.root)
    means = mean_rows(rows)
    write_csv(os.path.join(args.root, "summary.csv"), rows, COLUMNS)
    write_csv(os.path.join(args.root, "summary_mean.csv"), means, MEAN_COLUMNS)
    write_csv(os.path.join(args.root, "ablation.csv"), *ablation_csv(rows))
    md = markdown(rows, means, unfinished, args.root)
    with open(os.path.join(args.root, "summary.md"), "w") as f:
        f.write(md)
    if not args.quiet:
        print(md)
    print(f"wrote {os.path.join(args.root, 'summary.csv')}, summary_mean.csv, ablation.csv and summary.md "
          f"({len(rows)} finished, {len(unfinished)} unfinished)")
    if not args.no_figures and rows:
        made = make_figures(rows, means, args.out, args.heatmap_run)
        for name, path in made.items():
            print(f"figure {name}: {path if path else 'skipped (no data for it)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
