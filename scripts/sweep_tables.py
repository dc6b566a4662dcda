"""The tables of a sweep: CSV files, the Markdown summary and the ablation table (scripts/collect.py)."""
from __future__ import annotations

import csv
import os
import statistics

from scripts.sweep_rows import STAGES, mean_of, task_groups, variant_key


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
    for (task, model), group in sorted(task_groups(rows).items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        others = sorted({r["variant"] for r in group} - set(ABLATION_STEPS), key=variant_key)
        variants = [*ABLATION_STEPS, *others]
        lines = []
        for c in sorted({r["constraint"] for r in group}, key=lambda c: c or 0):
            runs = [r for r in group if r["constraint"] == c]
            lines.append({"constraint": c, "cells": {v: _ablation_cell(runs, v) for v in variants}})
        tables.append({"task": task, "model": model, "primary_metric": group[0]["primary_metric"],
                       "unpruned": mean_of(r["metric_before"] for r in group), "variants": variants,
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
                                         key=variant_key)]
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


