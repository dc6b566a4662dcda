"""The run folder: arguments, versions, log, masks and results, written so that a killed run
never leaves a results.json that looks complete."""
from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile

from utils.errors import UserError


class OutputError(UserError):
    """A user-fixable problem with --output_dir."""


# Files of a run that a new run in the same folder must not leave behind: on their own they would
# look like the new run's output (results.json is the "finished" marker and is written last).
RUN_OUTPUTS = ("results.json", "head_mask.pt", "neuron_mask.pt", "weight_updates.pt")
PRUNED_MODEL_MARKER = "pruning.json"      # utils/pruned_io.PRUNING_FILE: a saved pruned model folder


def prepare_run_folder(path: str, overwrite: bool) -> None:
    if os.path.isfile(os.path.join(path, "results.json")) and not overwrite:
        raise OutputError(f"--output_dir '{path}' already holds a finished run (results.json). "
                          f"Pass --overwrite to replace it, or choose another --output_dir.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"--output_dir '{path}' is a file, not a folder; choose a folder path "
                          f"(it is created if missing).")
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
    except OSError as e:
        raise OutputError(f"--output_dir '{path}' is not writable ({e.strerror or e}); choose a folder you "
                          f"can write to.") from None
    # A previous, unfinished or overwritten run must not leave files that look current:
    # results.json goes first, so that a run killed during this cleanup still has none.
    old_pruned = _previous_pruned_model(path)
    for name in RUN_OUTPUTS + tuple(n + ".tmp" for n in RUN_OUTPUTS):
        target = os.path.join(path, name)
        if os.path.isfile(target):
            os.remove(target)
    if old_pruned:
        shutil.rmtree(old_pruned, ignore_errors=True)
    for entry in os.scandir(path):   # temporary folders of a pruned-model save that was killed
        if entry.is_dir(follow_symlinks=False) and _SAVE_TMP.fullmatch(entry.name):
            shutil.rmtree(entry.path, ignore_errors=True)


# utils/pruned_io.save_pruned writes into tempfile.mkdtemp(prefix=NAME + ".tmp-") next to the target
_SAVE_TMP = re.compile(r".+\.(tmp|old)-[A-Za-z0-9_]{8}")


def _previous_pruned_model(path: str) -> str | None:
    """The pruned model folder that the finished run being replaced saved inside `path` (--save_pruned)."""
    try:
        with open(os.path.join(path, "results.json")) as f:
            saved = json.load(f).get("pruned_model", {}).get("path")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(saved, str):
        return None
    saved, root = os.path.realpath(saved), os.path.realpath(path)
    inside = saved != root and os.path.commonpath([saved, root]) == root
    return saved if inside and os.path.isfile(os.path.join(saved, PRUNED_MODEL_MARKER)) else None


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
