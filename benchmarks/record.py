"""What every benchmark result records beside its numbers, and resumable cells (one JSON each).

A figure is only as good as the machine it was taken on: like pyperf's metadata, `machine_metadata()` records the
CPU, its flags that decide which kernels run (AVX2/AVX-512), the thread count, the library versions, the git commit
and the load average; `LoadSampler` adds the load during the measurement (mean, max of the 1-minute load average,
sampled every few seconds). A 2-core machine measuring one job shows a load near 2; more means something ran beside
it and its seconds are not a figure to publish.

Cells: a long table is a list of cells, each written to its own JSON (`write_cell`) as soon as it is done and
skipped on a rerun (`cell_done`), so a stop loses at most the cell in progress.
"""
from __future__ import annotations

import datetime
import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import threading
import time

from run.folder import package_versions
from run.folder import write_json as write_run_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("llama_cpp_python", "gguf", "lm_eval", "onnxruntime")
CPU_FLAGS = ("avx2", "avx512f", "avx512_fp16", "avx512_bf16", "avx_vnni", "amx_tile", "f16c", "fma", "neon")


def _cpu() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags)}


def _versions() -> dict:
    """run.folder.package_versions plus the optional engines a benchmark may have used."""
    out = package_versions()
    for name in PACKAGES:
        if name not in out:
            try:
                out[name] = importlib.metadata.version(name.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                out[name] = None
    return out


def _git() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine_metadata(threads: int | None = None) -> dict:
    """The machine, libraries, commit and the load average right now."""
    try:
        import torch  # every benchmark here has it; the metadata must not fail without it
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    return {"when": datetime.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
            **_cpu(), "threads": threads if threads is not None else torch_threads, "torch_threads": torch_threads,
            "versions": _versions(), "git": _git(), "load_average_before": [round(x, 2) for x in os.getloadavg()]}


class LoadSampler:
    """Samples the 1-minute load average every `every` seconds while open; `summary()` gives before/mean/max."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self.before = os.getloadavg()[0]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        return False

    def summary(self, limit: float | None = None) -> dict:
        """Load before, mean and max during; `quiet` when the mean stayed at or under `limit` (default: the core
        count + 0.5, one job using every core)."""
        limit = (os.cpu_count() or 1) + 0.5 if limit is None else limit
        samples = self.samples or [self.before]
        mean = sum(samples) / len(samples)
        return {"load_before": round(self.before, 2), "load_mean": round(mean, 2), "load_max": round(max(samples), 2),
                "load_limit": limit, "quiet": mean <= limit}


def cell_done(path: str) -> bool:
    """True when `path` holds a finished cell (a readable JSON written by write_cell)."""
    try:
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get("done"))
    except (OSError, ValueError, AttributeError):
        return False


def read_cell(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_cells(cell_dir: str) -> list[dict]:
    """Every finished cell JSON in a folder, in name order (one cut short or not ours is left out)."""
    return [read_cell(p) for p in sorted(glob.glob(os.path.join(cell_dir, "*.json"))) if cell_done(p)]


def run_measured(argv: list[str], cwd: str):
    """Run a benchmark subprocess with the load sampled meanwhile; returns (process, wall seconds, load summary)."""
    start = time.perf_counter()
    with LoadSampler() as load:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    return proc, round(time.perf_counter() - start, 1), load.summary()


def write_cell(path: str, data: dict) -> None:
    """Write one finished cell atomically, marked done."""
    write_json(path, {**data, "done": True})


def write_json(path: str, data: dict) -> None:
    """Write a result JSON atomically (run.folder.write_json), creating its folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_run_json(path, data)
