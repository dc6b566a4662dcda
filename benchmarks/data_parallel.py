"""One process with 2 threads against 2 data-parallel processes with 1 thread each, on the same run.

Runs main.py twice on the benchmark checkpoint (default: the MiniLM movie-review benchmark at 0.5): plainly with
OMP_NUM_THREADS=2, then under torchrun with 2 gloo processes and OMP_NUM_THREADS=1, and writes the seconds of
every stage of both, their ratio (1 process / 2 processes: above 1 means the processes are faster), the command
wall times (loading included) and whether the masks are identical. Time it on an otherwise idle machine.

    python -m benchmarks.data_parallel --output benchmarks/results/data_parallel.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "..", "shared", "benchmark")
STAGES = ("gradients", "search", "rearrange", "mask_tuning", "pruning_total", "evaluate_once", "wall_total")


def run(label: str, launcher: list[str], threads: int, run_args: list[str], out_root: str) -> dict:
    folder = os.path.join(out_root, label)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run(launcher + [os.path.join(ROOT, "main.py"), *run_args, "--output_dir", folder, "--overwrite"],
                   check=True, cwd=ROOT, env=env)
    command_s = time.perf_counter() - start
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    return {"folder": folder, "command_s": round(command_s, 2), "seconds": results["seconds"],
            "metric_after": results["metric_after"], "distributed": results["distributed"],
            "peak_rss_mb_per_process": results["peak_memory_mb"]["rss_per_process"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(BENCH, "minilm-movie-sst2"))
    p.add_argument("--data_dir", default=os.path.join(BENCH, "movie-sst2"))
    p.add_argument("--task_name", default="sst2")
    p.add_argument("--num_samples", default=2048, type=int)
    p.add_argument("--max_seq_length", default=64, type=int)
    p.add_argument("--out_root", default=os.path.join(ROOT, "outputs", "data_parallel"))
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "data_parallel.json"))
    args = p.parse_args()
    run_args = ["--task_name", args.task_name, "--ckpt_dir", args.ckpt_dir, "--data_dir", args.data_dir,
                "--constraint", "0.5", "--seed", "0", "--num_samples", str(args.num_samples),
                "--max_seq_length", str(args.max_seq_length), "--device", "cpu"]
    one = run("1proc_2threads", [sys.executable], 2, run_args, args.out_root)
    two = run("2procs_1thread", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2"], 1, run_args, args.out_root)
    same = all(torch.equal(torch.load(os.path.join(one["folder"], n)), torch.load(os.path.join(two["folder"], n)))
               for n in ("head_mask.pt", "neuron_mask.pt"))
    ratio = {s: round(one["seconds"][s] / two["seconds"][s], 3) for s in STAGES
             if one["seconds"].get(s) and two["seconds"].get(s)}
    ratio["command"] = round(one["command_s"] / two["command_s"], 3)
    out = {"run": run_args, "cpus": os.cpu_count(), "one_process_2_threads": one, "two_processes_1_thread": two,
           "speedup_of_two_processes": ratio, "masks_identical": same}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({"speedup_of_two_processes": ratio, "masks_identical": same}, indent=2))


if __name__ == "__main__":
    main()
