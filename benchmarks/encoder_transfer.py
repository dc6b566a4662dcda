"""Does the `lsq` refit fit its calibration genre? (issue 31, the encoder question.)

The embedded default (MiniLM fine-tuned on movie-review sentences, `python -m scripts.demo`) is pruned with its
calibration sample drawn from the movie-review training split, then scored on two dev sets with the same labels:
the movie-review dev split (the calibration genre) and the product-review sentences of the same vaderSentiment
3.3.2 sdist (amazonReviewSnippets_GroundTruth.txt, Hutto & Gilbert 2014, MIT; label = rating > 0, zero-rated
sentences dropped; a genre the sample never saw). If the refit overfits the calibration genre, its drop on the
product reviews is larger than the paper's method's (`kwon`) or the refit without the head step (`lsq_nohead`).

Cells (resumable: each a JSON under benchmarks/results/encoder_transfer/, done cells skipped on rerun):
dev set x method x constraint, each one main.py run (its run folder under outputs/encoder_transfer/).

    python -m benchmarks.encoder_transfer [--constraints 0.4] [--methods lsq lsq_nohead kwon] [--sdist PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

from benchmarks.record import LoadSampler, cell_done, machine_metadata, read_cell, write_cell, write_json
from scripts.demo import DATA_DIR, QUICK_CKPT_DIR
from scripts.make_movie_sst2 import download_sdist, format_tsv, parse_ground_truth, read_ground_truth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = os.path.join(ROOT, "benchmarks", "results", "encoder_transfer")
SUMMARY = os.path.join(ROOT, "benchmarks", "results", "encoder_transfer.json")
PRODUCT_FILE = "amazonReviewSnippets_GroundTruth.txt"
METHODS = {"lsq": [], "lsq_nohead": ["--no_head_refit"], "kwon": ["--method", "kwon"]}


def product_data_dir(sdist: str | None, movie_dir: str, out: str) -> str:
    """A GLUE task folder (like data/movie-sst2): the movie-review train split (the calibration sample's source) and
    the product reviews as dev.tsv."""
    folder = out
    if os.path.isfile(os.path.join(folder, "dev.tsv")):
        return out
    tmp = None
    if sdist is None:
        tmp = tempfile.mkdtemp(prefix="vader-")
        sdist = download_sdist(tmp)
    try:
        rows = parse_ground_truth(read_ground_truth(sdist, PRODUCT_FILE))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(movie_dir, "train.tsv"), os.path.join(folder, "train.tsv"))
    with open(os.path.join(folder, "dev.tsv"), "wb") as f:
        f.write(format_tsv(rows))
    return out


def run_cell(data_dir: str, method: str, constraint: float, out: str) -> dict:
    import main  # its imports (torch, transformers) are needed only when a cell runs
    argv = ["--task_name", "sst2", "--ckpt_dir", QUICK_CKPT_DIR, "--data_dir", data_dir, "--constraint",
            str(constraint), "--max_seq_length", "64", "--output_dir", out, "--overwrite", *METHODS[method]]
    with LoadSampler() as load:
        code = main.main(argv)
    if code != 0:
        raise SystemExit(f"main.py failed ({code}) for {argv}")
    results = json.load(open(os.path.join(out, "results.json")))
    before, after = results["metric_before"]["accuracy"], results["metric_after"]["accuracy"]
    return {"method": method, "constraint": constraint, "accuracy_before": before, "accuracy_after": after,
            "drop_points": round(100 * (before - after), 2), "mac_ratio": results["mac_ratio"],
            "seconds_pruning": results["seconds"]["pruning_total"], "load": load.summary(),
            "dev_rows": results["data"]["dev"]["rows"]}


def summarise(cells: list[dict]) -> dict:
    """Per method and constraint: the drop on each dev set and how much larger it is off-genre."""
    out = []
    for method in METHODS:
        for c in sorted({x["constraint"] for x in cells}):
            pair = {x["dev"]: x for x in cells if x["method"] == method and x["constraint"] == c}
            if set(pair) != {"movie", "product"}:
                continue
            n = pair["product"].get("dev_rows") or 0
            p = pair["product"]["accuracy_after"]
            out.append({"method": method, "constraint": c, "drop_movie": pair["movie"]["drop_points"],
                        "drop_product": pair["product"]["drop_points"],
                        "extra_drop_off_genre": round(pair["product"]["drop_points"] - pair["movie"]["drop_points"], 2),
                        "product_se_points": round(100 * math.sqrt(p * (1 - p) / n), 2) if n else None})
    return {"rows": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--constraints", nargs="+", type=float, default=[0.4])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--sdist", default=None, help="the vaderSentiment-3.3.2.tar.gz sdist (default: pip download)")
    args = p.parse_args(argv)
    if not os.path.isdir(QUICK_CKPT_DIR) or not os.path.isdir(DATA_DIR):
        print(f"error: {QUICK_CKPT_DIR} or {DATA_DIR} is missing: run python -m scripts.demo first", file=sys.stderr)
        return 2
    dev_sets = {"movie": DATA_DIR,
                "product": product_data_dir(args.sdist, DATA_DIR, os.path.join(ROOT, "data", "movie-to-product"))}
    cells = []
    for dev, data_dir in dev_sets.items():
        for method in args.methods:
            for c in args.constraints:
                path = os.path.join(CELLS, f"{dev}-{method}-{c:g}.json")
                if not cell_done(path):
                    cell = run_cell(data_dir, method, c, os.path.join(ROOT, "outputs", "encoder_transfer",
                                                                      f"{dev}-{method}-{c:g}"))
                    write_cell(path, {**cell, "dev": dev, "machine": machine_metadata()})
                cells.append(read_cell(path))
    summary = {**summarise(cells), "cells": [{k: v for k, v in x.items() if k != "machine"} for x in cells],
               "checkpoint": os.path.relpath(QUICK_CKPT_DIR, ROOT), "machine": machine_metadata()}
    write_json(SUMMARY, summary)
    for row in summary["rows"]:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
