"""Reproduce the table of ../shared/benchmark/REFERENCE.md with this project's methods.

Runs main.py (one subprocess per constraint, seed and method, so that peak memory is per run) on the
fixed benchmark checkpoint and data, and writes a JSON with accuracy per stage, seconds per stage and
peak RSS next to the reference numbers. Resumable: finished run folders are reused.

    python -m benchmarks.reference_benchmark --methods lsq kwon --output benchmarks/results/reference.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "..", "shared", "benchmark")

# REFERENCE.md: final accuracy (after mask tuning) of the authors' code, per (constraint, seed).
REFERENCE_FINAL = {(0.4, 0): 0.8380, (0.5, 0): 0.8500, (0.5, 1): 0.8515, (0.5, 2): 0.8625, (0.6, 0): 0.8620,
                   (0.6, 1): 0.8650, (0.6, 2): 0.8640, (0.7, 0): 0.8680, (0.8, 0): 0.8660}
REFERENCE_SECONDS_AT_HALF = 126.0
REFERENCE_PEAK_RSS_MB = 1600.0
UNPRUNED = 0.8670


def run_one(method: str, constraint: float, seed: int, out_root: str, num_samples: int, eval_stages: bool) -> dict:
    folder = os.path.join(out_root, method, f"c{constraint:g}", f"seed_{seed}")
    results_path = os.path.join(folder, "results.json")
    if not os.path.isfile(results_path):
        cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--task_name", "sst2",
               "--ckpt_dir", os.path.join(BENCH, "minilm-movie-sst2"), "--data_dir", os.path.join(BENCH, "movie-sst2"),
               "--constraint", str(constraint), "--seed", str(seed), "--num_samples", str(num_samples),
               "--max_seq_length", "64", "--method", method, "--output_dir", folder, "--overwrite"]
        if eval_stages:
            cmd.append("--eval_stages")
        subprocess.run(cmd, check=True, cwd=ROOT)
    with open(results_path) as f:
        r = json.load(f)
    return {
        "method": method, "constraint": constraint, "seed": seed,
        "accuracy": r["metric_after"]["accuracy"],
        "stages": {k: v["accuracy"] for k, v in r.get("metric_stages", {}).items()},
        "mac_ratio": r["mac_ratio"],
        "seconds": r["seconds"],
        "peak_rss_mb": r["peak_memory_mb"]["rss"],
        "reference_accuracy": REFERENCE_FINAL.get((constraint, seed)),
    }


def summarize(rows: list[dict]) -> dict:
    out = {}
    for method in sorted({r["method"] for r in rows}):
        for c in sorted({r["constraint"] for r in rows if r["method"] == method}):
            sel = [r for r in rows if r["method"] == method and r["constraint"] == c]
            refs = [r["reference_accuracy"] for r in sel if r["reference_accuracy"] is not None]
            out[f"{method}@{c:g}"] = {
                "seeds": [r["seed"] for r in sel],
                "mean_accuracy": sum(r["accuracy"] for r in sel) / len(sel),
                "reference_mean": sum(refs) / len(refs) if len(refs) == len(sel) else None,
                "mean_pruning_seconds": sum(r["seconds"]["pruning_total"] for r in sel) / len(sel),
                "max_peak_rss_mb": max(r["peak_rss_mb"] for r in sel),
            }
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| method | constraint | seed | search only | + rearrangement | final | reference final | MAC ratio | pruning s | gradients s | tuning s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["constraint"], r["seed"])):
        s = r["seconds"]
        ref = f"{r['reference_accuracy']:.4f}" if r["reference_accuracy"] else "-"
        stage = lambda name: f"{r['stages'][name]:.4f}" if name in r["stages"] else "–"  # noqa: E731 (--no_eval_stages)
        lines.append(f"| {r['method']} | {r['constraint']:g} | {r['seed']} | {stage('search')} | "
                     f"{stage('rearrange')} | **{r['accuracy']:.4f}** | {ref} | {r['mac_ratio']:.4f} | "
                     f"{s['pruning_total']:.1f} | {s.get('gradients', 0):.1f} | {s.get('mask_tuning', 0):.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["lsq", "kwon"])
    p.add_argument("--runs", nargs="+", default=[f"{c}:{s}" for c, s in REFERENCE_FINAL],
                   help="constraint:seed pairs (default: those of REFERENCE.md)")
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--no_eval_stages", action="store_true")
    p.add_argument("--out_root", default=os.path.join(ROOT, "outputs", "reference_benchmark"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "reference.json"))
    args = p.parse_args(argv)
    if not os.path.isdir(BENCH):
        print(f"error: the benchmark folder {BENCH} is absent", file=sys.stderr)
        return 2
    rows = []
    for method in args.methods:
        for pair in args.runs:
            c, s = pair.split(":")
            rows.append(run_one(method, float(c), int(s), args.out_root, args.num_samples, not args.no_eval_stages))
    report = {"unpruned": UNPRUNED, "reference_seconds_at_0.5": REFERENCE_SECONDS_AT_HALF,
              "reference_peak_rss_mb": REFERENCE_PEAK_RSS_MB, "runs": rows, "summary": summarize(rows),
              "markdown": markdown(rows)}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(report["markdown"])
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
