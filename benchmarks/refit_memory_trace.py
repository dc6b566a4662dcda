"""Where the lsq refit's peak memory comes from: main.py run in this process with the resident set size (RSS) read
before and after each step of prune/reconstruct.py (the teacher targets, each block's fit, the layer outputs), and
the process's high-water mark after each. Memory is not disturbed by other jobs the way timings are.

    python -m benchmarks.refit_memory_trace --output benchmarks/results/refit_memory_trace.json -- \\
        --task_name sst2 --ckpt_dir ../shared/benchmark/minilm-movie-sst2 --data_dir ../shared/benchmark/movie-sst2 \\
        --constraint 0.5 --seed 0 --num_samples 2048 --max_seq_length 64 --method lsq --output_dir OUT --overwrite

Everything after `--` goes to main.py. The RSS of a step is what the allocator holds, freed tensors included, so a
step that reuses freed memory shows no growth: read the growth of the high-water mark.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys

STEPS = ("teacher_targets", "_fit_block", "_layer_outputs")


def _mb(value: float) -> float:
    return round(value / 2 ** 20, 1)


def _rss() -> int:
    with open("/proc/self/statm") as f:            # Linux: size and resident pages
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # Linux reports KiB


def traced(trace: list, name: str, fn):
    """fn, recording the RSS before and after each call and the high-water mark after it in `trace`."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        before = _rss()
        out = fn(*args, **kwargs)
        trace.append({"step": name, "rss_before_mb": _mb(before), "rss_after_mb": _mb(_rss()),
                      "peak_mb": _peak_mb()})
        return out
    return call


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True)
    p.add_argument("main_argv", nargs="*", help="main.py's arguments, after --")
    args = p.parse_args(argv)
    main_argv = args.main_argv
    if not main_argv:
        p.error("give main.py's arguments after --")

    import main as tool
    import prune.reconstruct as reconstruct
    trace: list[dict] = []
    originals = {name: getattr(reconstruct, name) for name in STEPS}
    try:
        for name, fn in originals.items():
            setattr(reconstruct, name, traced(trace, name, fn))
        code = tool.main(main_argv)
    finally:
        for name, fn in originals.items():
            setattr(reconstruct, name, fn)
    result = {"main_argv": main_argv, "exit_code": code, "peak_mb": _peak_mb(), "steps": trace,
              "rss_before_refit_mb": trace[0]["rss_before_mb"] if trace else None}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(args.output + ".tmp", args.output)
    print(json.dumps({k: result[k] for k in ("exit_code", "peak_mb", "rss_before_refit_mb")}))
    return code


if __name__ == "__main__":
    sys.exit(main())
