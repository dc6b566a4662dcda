"""Encode speed of the pruned sentence-embedding models against the MAC count's ideal and the physical limits, which
leave what pruning cannot shrink (issue 33; T_fixed: the model pruned to nothing; T_floor: pruned to one head (two for
the fused graph) and one neuron per kept layer; both timed beside the original and the pruned model, see
benchmarks/latency.py). One cell per model x backend (eager PyTorch; ONNX Runtime on the portable graph, onnx, and
on the one fused into its transformer kernels, onnx_fused), each a benchmarks/latency.py run over batch 1/8/32 x
32/64/128 tokens on the masks of an sts_embedding run folder (--per_kind: also the per-kind ideal, cells in
speed_limit_per_kind/):

    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.sts_embedding \\
        --models mpnet minilm --methods lsq --constraints 0.5 --seeds 0        # leaves the run folders
    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.speed_limit
    python -m benchmarks.speed_limit --summary     # benchmarks/results/speed_limit.json + a markdown table
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from benchmarks.record import (ROOT, cell_done, machine_metadata, read_cell, read_cells, run_measured, write_cell,
                               write_json)
from benchmarks.sts_embedding import cell_name, model_dirs, run_folder

CELL_DIR = os.path.join(ROOT, "benchmarks", "results", "speed_limit")
SUMMARY = os.path.join(ROOT, "benchmarks", "results", "speed_limit.json")
BATCHES, TOKENS = (1, 8, 32), (32, 64, 128)
# ONNX Runtime on the portable graph, and on the graph fused into its transformer kernels (one Attention per layer)
BACKENDS = {"eager": ["--backend", "eager"], "onnx": ["--backend", "onnx"],
            "onnx_fused": ["--backend", "onnx", "--onnx_graph", "fused"]}
GOAL = 0.9          # the goal: this fraction of the physical ideal at every shape


def run_cell(model: str, backend: str, run: str, threads: int, repeats: int, per_kind: bool = False,
             batches=BATCHES) -> dict:
    mask_dir = run_folder(run)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "latency.json")
        argv = [sys.executable, "-m", "benchmarks.latency", "--ckpt_dir", model_dirs()[model], "--mask_dir", mask_dir,
                "--head", "embedding", *BACKENDS[backend], "--batch_sizes", *map(str, batches),
                "--seq_lens", *map(str, TOKENS), "--threads", str(threads), "--repeats", str(repeats),
                "--output", out] + (["--per_kind"] if per_kind else [])
        meta = machine_metadata(threads)
        proc, wall, load = run_measured(argv, ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{model} {backend}: benchmarks.latency exited {proc.returncode}: "
                               f"{proc.stderr.strip().splitlines()[-3:]}")
        with open(out) as f:
            report = json.load(f)
    return {"model": model, "backend": backend, "masks_of": run, "command": " ".join(argv[1:-2]), "report": report,
            "wall_s": wall, "load": load, "machine": meta}


def summarize(cell_dir: str = CELL_DIR, summary: str = SUMMARY) -> int:
    cells = read_cells(cell_dir)
    if not cells:
        print("no cells yet", file=sys.stderr)
        return 2
    rows = []
    for c in cells:
        for r in c["report"]["results"]:
            rows.append({"model": c["model"], "backend": c["backend"], "masks_of": c["masks_of"]}
                        | {k: r.get(k) for k in ("batch_size", "seq_len", "speedup", "ideal_mac_speedup",
                                                  "ideal_physical_speedup", "fraction_of_ideal",
                                                  "fraction_of_physical_ideal", "fixed_share", "prunable_mac_ratio",
                                                  "original_s", "pruned_s", "fixed_s", "floor_s", "floor_share",
                                                  "floor_mac_ratio", "ideal_floor_speedup",
                                                  "fraction_of_floor_ideal", "ideal_unit_speedup",
                                                  "fraction_of_unit_ideal", "additivity", "head_time_share",
                                                  "head_mac_share")}
                        | {"floor_heads": c["report"].get("floor_heads", 1),   # cells from before it was recorded: 1
                           # the ONNX graph's attention form (export/onnx.py); None: eager PyTorch, or not recorded
                           "onnx_attention": c["report"].get("onnx", {}).get("attention", {}).get("original"),
                           "load_mean": c["load"]["load_mean"], "load_max": c["load"]["load_max"],
                           "quiet": c["load"]["quiet"]})
    ideals = ("physical", "floor") + (("unit",) if any(r["fraction_of_unit_ideal"] is not None for r in rows) else ())
    goal = {ideal: goal_against(rows, f"fraction_of_{ideal}_ideal")
            | {"by_backend": {b: goal_against([r for r in rows if r["backend"] == b], f"fraction_of_{ideal}_ideal")
                              for b in sorted({r["backend"] for r in rows})}} for ideal in ideals}
    write_json(summary, {"rows": rows, "goal": goal})
    columns = ["model", "backend", "batch x tokens", "T ms (unpruned)", "T_fixed share", "T_floor share", "speedup",
               "MAC ideal", "physical ideal", "floor ideal", "fraction of physical ideal", "fraction of floor ideal"]
    columns += ["fraction of per-kind ideal", "additivity"] if "unit" in goal else []
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731  (cells from before T_floor was timed)
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | {r['batch_size']} x {r['seq_len']} | {1e3 * r['original_s']:.1f} | "
              f"{r['fixed_share']:.2f} | {fmt(r['floor_share'])} | {r['speedup']:.2f} | {r['ideal_mac_speedup']:.2f} "
              f"| {r['ideal_physical_speedup']:.2f} | {fmt(r['ideal_floor_speedup'])} | "
              f"{r['fraction_of_physical_ideal']:.2f} | {fmt(r['fraction_of_floor_ideal'])} |"
              + (f" {fmt(r['fraction_of_unit_ideal'])} | {fmt(r['additivity'])} |" if "unit" in goal else ""))
    for ideal, g in goal.items():
        print(f"\ngoal >= {GOAL} of the {ideal} ideal at every shape: lowest {fmt(g['lowest'])}, "
              f"{g['shapes_below']} of {g['shapes']} shapes below, met: {g['met']}")
        for backend, b in g["by_backend"].items():
            print(f"  {backend}: lowest {fmt(b['lowest'])}, {b['shapes_below']} of {b['shapes']} below, "
                  f"met: {b['met']}")
    return 0


def goal_against(rows: list[dict], key: str) -> dict:
    fractions = [r[key] for r in rows if r.get(key) is not None]
    return {"at_least": GOAL, "lowest": min(fractions) if fractions else None, "shapes": len(fractions),
            "shapes_below": sum(f < GOAL for f in fractions),
            "met": len(fractions) == len(rows) and bool(fractions) and min(fractions) >= GOAL}


def settings_clash(cell: dict, args) -> str:
    """What a finished cell was timed with that differs from this request ('' when nothing does): a rerun must not
    pass off a cell of other batch sizes, threads or repeats as the one asked for."""
    report = cell["report"]
    held = {"--batch_sizes": sorted({r["batch_size"] for r in report["results"]}), "--threads": report["threads"],
            "--repeats": report["repeats"]}
    asked = {"--batch_sizes": sorted(set(args.batch_sizes)), "--threads": args.threads, "--repeats": args.repeats}
    return ", ".join(f"{flag} {held[flag]} (asked: {asked[flag]})" for flag in held if held[flag] != asked[flag])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["minilm", "mpnet"], choices=sorted(model_dirs()))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--method", default="lsq")
    p.add_argument("--constraint", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--per_kind", action="store_true",
                   help="also time every head / every neuron above the floor (benchmarks/latency.py --per_kind); "
                        "cells in speed_limit_per_kind/")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--summary", action="store_true", help="only summarise the cells there are")
    args = p.parse_args(argv)
    cell_dir, summary = (CELL_DIR + "_per_kind", SUMMARY.replace(".json", "_per_kind.json")) if args.per_kind else \
        (CELL_DIR, SUMMARY)
    if args.summary:
        return summarize(cell_dir, summary)
    for model in args.models:
        run = cell_name(model, args.method, args.constraint, args.seed, "gold")
        for backend in args.backends:
            path = os.path.join(cell_dir, f"{run}-{backend}.json")
            if cell_done(path):
                clash = settings_clash(read_cell(path), args)
                if clash:
                    print(f"error: {path} was timed with {clash}: delete it to time it again, or ask for what it "
                          f"holds", file=sys.stderr)
                    return 2
                continue
            cell = run_cell(model, backend, run, args.threads, args.repeats, args.per_kind, args.batch_sizes)
            write_cell(path, cell)
            print(f"{os.path.basename(path)}: done in {cell['wall_s']} s, load mean {cell['load']['load_mean']}",
                  flush=True)
    return summarize(cell_dir, summary)


if __name__ == "__main__":
    sys.exit(main())
