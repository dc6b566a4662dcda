"""The genre-transfer matrices from benchmarks/genre_transfer.py's cells: per (calibration mode, variant, budget)
the pruned/dense perplexity ratio of every (calibration genre, evaluation genre), the in-genre ratio and the worst
unseen one ("unseen": neither the calibration file's genre nor, with the mix, one of the mix's genres), and the worst
"held-out" one (never in the mix nor the calibration file: the same columns with and without the mix)."""
from __future__ import annotations

import glob
import json
import math
import os

from tasks.causal_lm import CALIB_MIX, CALIB_MIX_FRACTION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENSE_ZERO_SHOT = os.path.join(ROOT, "benchmarks", "results", "llm_cells", "dense.json")


def mix_genres(folder: str = CALIB_MIX) -> list[str]:
    return sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".txt")) if os.path.isdir(folder) else []


def _cells(cell_dir: str) -> list[dict]:
    cells = []
    for path in sorted(glob.glob(os.path.join(cell_dir, "*.json"))):
        with open(path) as f:
            cell = json.load(f)
        if "calibration" in cell:
            cells.append(cell)
    return cells


def row_summary(cell: dict, genres, mixed: list[str]) -> dict:
    spec = cell["calibration"]
    genre, _, mode = spec.rpartition("-") if spec != "mix" else (None, "", "mix")
    seen = {genre} | (set(mixed) if mode.startswith("mix") else set())
    unseen = [g for g in genres if g not in seen]
    ratio = cell["ratio"]
    worst = max(unseen, key=lambda g: ratio[g]) if unseen else None
    heldout = [g for g in genres if g != genre and g not in mixed]   # unseen in both modes: a like-for-like column set
    return {"genre": genre, "mode": mode, "in_genre": ratio.get(genre) if genre else None,
            "worst_heldout": max(ratio[g] for g in heldout) if heldout else None,
            "worst_unseen": ratio[worst] if worst else None, "worst_unseen_genre": worst,
            "geomean_unseen": math.exp(sum(math.log(ratio[g]) for g in unseen) / len(unseen)) if unseen else None,
            "ratio": ratio}


def summary(cell_dir: str, genres) -> dict:
    mixed = mix_genres()
    dense_path = os.path.join(cell_dir, "dense.json")
    dense = json.load(open(dense_path)) if os.path.isfile(dense_path) else {}
    if "zero_shot" not in dense and os.path.isfile(DENSE_ZERO_SHOT):
        # the same model on the same task files, scored by benchmarks/llm_prune.py: not scored twice
        with open(DENSE_ZERO_SHOT) as f:
            dense["zero_shot"] = json.load(f).get("zero_shot")
        dense["zero_shot_from"] = os.path.relpath(DENSE_ZERO_SHOT, ROOT)
    groups: dict[str, dict] = {}
    cells = list(_cells(cell_dir))
    seen = items_in_mix() if any("zero_shot" in c for c in cells) or dense.get("zero_shot") else None
    for cell in cells:
        row = row_summary(cell, genres, mixed)
        key = f"{row['mode']}/{cell['variant']}/{cell['constraint']:g}"
        g = groups.setdefault(key, {"mode": row["mode"], "variant": cell["variant"], "constraint": cell["constraint"],
                                    "rows": {}})
        g["rows"][row["genre"] or "mix"] = row
        if "zero_shot" in cell:
            g.setdefault("zero_shot", {})[row["genre"] or "mix"] = {
                "all_items": cell["zero_shot"]["average"], "items_not_in_mix": clean_average(cell["zero_shot"], seen)}
    headline = {}
    for key, g in sorted(groups.items()):
        rows = [r for r in g["rows"].values()]
        ins = [r["in_genre"] for r in rows if r["in_genre"] is not None]
        unseen = [r["worst_unseen"] for r in rows if r["worst_unseen"] is not None]
        g["worst_in_genre"] = max(ins) if ins else None
        g["worst_unseen"] = max(unseen) if unseen else None
        held = [r["worst_heldout"] for r in rows if r["worst_heldout"] is not None]
        g["worst_heldout"] = max(held) if held else None
        headline[key] = {"calibrations": len(rows), "worst_in_genre": g["worst_in_genre"],
                         "worst_unseen": g["worst_unseen"], "worst_heldout": g["worst_heldout"]}
    return {"genres": list(genres), "mix_genres": mixed, "dense_perplexity": dense.get("perplexity"),
            "dense_zero_shot": ({"all_items": dense["zero_shot"]["average"],
                                 "items_not_in_mix": clean_average(dense["zero_shot"], seen)}
                                if dense.get("zero_shot") else None), "groups": groups, "headline": headline,
            "dense_zero_shot_from": dense.get("zero_shot_from", "dense.json"), "cells": os.path.relpath(cell_dir, ROOT)}


def figure(out: dict, path: str, variant: str = "ours") -> None:
    """Heatmaps of log2(pruned / dense perplexity): one per (mode, budget) of `variant`."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    panels = [g for g in out["groups"].values() if g["variant"] == variant and mix_share(g["mode"]) is not None]
    if not panels:
        return
    budgets = sorted({g["constraint"] for g in panels}, reverse=True)
    modes = sorted({g["mode"] for g in panels}, key=_mode_order)
    genres = out["genres"]
    rows = [r for r in genres if any(r in g["rows"] for g in panels)]   # every panel the same rows; blank: not run
    fig, axes = plt.subplots(len(budgets), len(modes), figsize=(4.2 * len(modes), 4.2 * len(budgets)), squeeze=False)
    for i_b, budget in enumerate(budgets):
        for i_m, mode in enumerate(modes):
            ax = axes[i_b][i_m]
            g = next((g for g in panels if g["constraint"] == budget and g["mode"] == mode), None)
            if g is None:
                ax.axis("off")
                continue
            data = [[math.log2(g["rows"][r]["ratio"][c]) if r in g["rows"] else math.nan for c in genres]
                    for r in rows]
            im = ax.imshow(data, cmap="magma_r", vmin=0, vmax=3)
            for i, r in enumerate(rows):
                for j, c in enumerate(genres):
                    if r in g["rows"]:
                        ax.text(j, i, f"{g['rows'][r]['ratio'][c]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if data[i][j] > 1.8 else "black")
            ax.set_xticks(range(len(genres)), genres, rotation=60, fontsize=8)
            ax.set_yticks(range(len(rows)), rows if i_m == 0 else [""] * len(rows), fontsize=8)
            ax.set_xlabel("evaluated on")
            if i_m == 0:
                ax.set_ylabel("calibrated on")
            ax.set_title(("no mix" if mode == "nomix" else f"mix {_mix_column(mode)}") + f" at {budget:g} of the MACs",
                         fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="log2(pruned / dense perplexity)")
    fig.suptitle("SmolLM2-135M: perplexity ratio, pruned / dense")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def mix_share(mode: str) -> float | None:
    """The share of the calibration windows from the mix in a mode: nomix 0, mixNN NN %, mix (the mix alone) 1."""
    if mode == "nomix":
        return 0.0
    if mode == "mix":
        return 1.0
    return int(mode[3:]) / 100 if mode.startswith("mix") and mode[3:].isdigit() else None


def _mix_column(mode: str) -> str:
    """The 'mix' column: no, yes, or the share in % (with '(default)' at main.py's)."""
    share = mix_share(mode)
    if mode in ("nomix", "mix") or share is None:
        return {"nomix": "no", "mix": "yes"}.get(mode, mode)
    return f"{mode[3:]} %" + (" (default)" if math.isclose(share, CALIB_MIX_FRACTION) else "")


def _mode_order(mode: str) -> tuple:
    share = mix_share(mode)
    return (share is None, share if share is not None else 0.0, mode)


def markdown(out: dict, variant: str = "ours") -> str:
    """Per budget, one row per (calibration genre, mode) of `variant`: the ratio on every genre, in-genre in bold,
    genres in the mix in italics on mix rows; the worst unseen and worst held-out ratio."""
    genres, mixed = out["genres"], set(out["mix_genres"])
    lines = []
    for c in sorted({g["constraint"] for g in out["groups"].values()}, reverse=True):
        lines += [f"**{c:g} of the MACs** (pruned ÷ dense perplexity)", "",
                  "| calibrated on | mix | " + " | ".join(genres) + " | worst unseen | worst held-out |",
                  "|---|---|" + "---|" * (len(genres) + 2)]
        for mode in sorted({g["mode"] for g in out["groups"].values()}, key=_mode_order):
            g = out["groups"].get(f"{mode}/{variant}/{c:g}")
            if not g:
                continue
            for genre in [x for x in genres if x in g["rows"]] + (["mix"] if "mix" in g["rows"] else []):
                r = g["rows"][genre]

                def cell(col):
                    text = f"{r['ratio'][col]:.2f}"
                    if col == genre:
                        return f"**{text}**"
                    return f"*{text}*" if mode.startswith("mix") and col in mixed else text
                lines.append(f"| {genre} | {_mix_column(mode)} | " + " | ".join(cell(x) for x in genres)
                             + f" | {r['worst_unseen']:.2f} ({r['worst_unseen_genre']}) | {r['worst_heldout']:.2f} |")
        lines.append("")
    return "\n".join(lines)


ZERO_SHOT_DIR = os.path.join(ROOT, "data", "zero_shot")
PREFIX = 60   # characters of an item's context that must appear in the mix for it to count as seen


def _normal(text: str) -> str:
    return " ".join(text.split())


def items_in_mix(tasks_dir: str = ZERO_SHOT_DIR, mix_dir: str = CALIB_MIX) -> dict[str, set[int]] | None:
    """{task: indices of its items whose context (first PREFIX characters, whitespace folded) is in the mix's text}:
    the offline zero-shot tasks and the mix draw on the same fortune files and plays. None without the task files
    (``python -m scripts.make_zero_shot_tasks`` builds them)."""
    import yaml
    if not os.path.isdir(tasks_dir):
        return None
    mix = _normal(" ".join(open(os.path.join(mix_dir, n), encoding="utf-8").read()
                           for n in sorted(os.listdir(mix_dir)) if n.endswith(".txt")))
    seen = {}
    for name in sorted(os.listdir(tasks_dir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(tasks_dir, name)) as f:
            spec = yaml.safe_load(f)
        data = os.path.join(tasks_dir, spec["dataset_kwargs"]["data_files"]["test"])
        with open(data, encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
        seen[spec["task"]] = {i for i, item in enumerate(items)
                              if _normal(item.get("context") or item.get("text") or "")[:PREFIX] in mix}
    return seen


def clean_average(zero_shot: dict, seen: dict[str, set[int]] | None, metric: str = "acc") -> dict | None:
    """The zero-shot average over the items the mix does not hold (per task, then over tasks); None when which
    items the mix holds is unknown (seen is None)."""
    if seen is None:
        return None
    per_task = {}
    for task, result in zero_shot["tasks"].items():
        flags = result.get("per_item", {}).get(metric)
        if not flags:
            continue
        kept = [float(v) for i, v in enumerate(flags) if i not in seen.get(task, set())]
        per_task[task] = sum(kept) / len(kept)
    return {metric: sum(per_task.values()) / len(per_task) if per_task else None, "per_task": per_task,
            "items_left_out": {t: len(seen.get(t, ())) for t in per_task}}
