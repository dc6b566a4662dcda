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
import sys

from benchmarks.record import write_json
from utils.device import current_rss_mb, peak_rss_mb

STEPS = ("teacher_targets", "_fit_block", "_layer_outputs")


def traced(trace: list, name: str, fn):
    """fn, recording the RSS before and after each call and the high-water mark after it in `trace`."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        before = current_rss_mb()
        out = fn(*args, **kwargs)
        trace.append({"step": name, "rss_before_mb": before, "rss_after_mb": current_rss_mb(),
                      "peak_mb": round(peak_rss_mb(), 1)})
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
    result = {"main_argv": main_argv, "exit_code": code, "peak_mb": round(peak_rss_mb(), 1), "steps": trace,
              "rss_before_refit_mb": trace[0]["rss_before_mb"] if trace else None}
    write_json(args.output, result)
    print(json.dumps({k: result[k] for k in ("exit_code", "peak_mb", "rss_before_refit_mb")}))
    return code


if __name__ == "__main__":
    sys.exit(main())
