"""The run folder: arguments, versions, log, masks and results, written so that a killed run
never leaves a results.json that looks complete."""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import tempfile


class OutputError(ValueError):
    """A user-fixable problem with --output_dir."""


def prepare_run_folder(path: str, overwrite: bool) -> None:
    if os.path.isfile(os.path.join(path, "results.json")) and not overwrite:
        raise OutputError(f"--output_dir '{path}' already holds a finished run (results.json). "
                          f"Pass --overwrite to replace it, or choose another --output_dir.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
    except OSError as e:
        raise OutputError(f"--output_dir '{path}' is not writable ({e.strerror}); choose a folder you can write to.") from None
    # A previous, unfinished or overwritten run must not leave files that look current.
    for name in ("results.json", "head_mask.pt", "neuron_mask.pt"):
        target = os.path.join(path, name)
        if os.path.exists(target):
            os.remove(target)


def write_json(path: str, data) -> None:
    """Atomic: write to a temporary name in the same folder, then rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torch", "transformers", "datasets", "numpy", "scipy", "tokenizers"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            versions[name] = None
    return versions


def setup_logging(folder: str | None, verbose: bool = True) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    root.addHandler(console)
    if folder:
        file_handler = logging.FileHandler(os.path.join(folder, "log.txt"), mode="w")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    for noisy in ("transformers", "datasets", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
