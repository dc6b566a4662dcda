"""What every script that reads a saved model and writes files checks, before any work: the input folder is a
whole model nobody is still writing, the output is a place it may write and not the input, nothing is replaced
without --overwrite; and how it ends: one `error:` line and exit 2 for a user's mistake, Ctrl-C / SIGTERM with
the partial files removed (exit 130 / 143), never a traceback for either.

The scripts' own locks and the no-overwrite rule are run/folder.claimed_outputs; the signal handling is
run/safety.run_guard (the same as main.py's).
"""
from __future__ import annotations

import logging
import os
import sys

from run.folder import LOCK_FILE, OutputError, live_lock_owner
from run.safety import Terminated, run_guard, writing
from utils.atomic import is_tool_temp_dir
from utils.errors import UserError

log = logging.getLogger(__name__)


class InputFolderError(UserError):
    """A folder a script reads that is missing, not a folder, or not finished."""


def check_model_folder(folder: str, flag: str) -> None:
    """`folder` exists, is a folder holding config.json, and no run is still writing it."""
    if not os.path.exists(folder):
        raise InputFolderError(f"{flag} '{folder}' does not exist; pass a model folder (main.py --save_pruned writes "
                               f"one, or a checkpoint saved with save_pretrained).")
    if not os.path.isdir(folder):
        raise InputFolderError(f"{flag} '{folder}' is a file, not a folder; pass the folder that holds config.json.")
    if is_tool_temp_dir(folder):
        raise InputFolderError(f"{flag} '{folder}' is a temporary folder of a run that is still writing the model "
                               f"(or was killed while writing it); pass the finished folder, whose name has no "
                               f"'.tmp-' part, once the run is done.")
    real = os.path.realpath(folder)
    parent = os.path.dirname(real)
    for lock, what in ((real + ".lock", "its --save_pruned lock"), (os.path.join(parent, LOCK_FILE), "its run folder")):
        owner = live_lock_owner(lock)
        if owner:
            raise InputFolderError(f"{flag} '{folder}' is being written by a running main.py ({what} {lock} is held by "
                                   f"pid {owner.get('pid')}, started {owner.get('started')}); wait until that run "
                                   f"has finished and run again.")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise InputFolderError(f"{flag} '{folder}' has no config.json; it is not a saved model (main.py --save_pruned "
                               f"writes one; a HF checkpoint is a folder written by save_pretrained).")


def _same_or_inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or os.path.commonpath([path, folder]) == folder


def check_output_folder(folder: str, flag: str, inputs: dict[str, str]) -> None:
    """`folder` (created if absent) can hold new files and is none of the input folders `inputs` {flag: path}."""
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OutputError(f"{flag} '{folder}' exists and is not a folder; pass a folder for the output files.")
    for other_flag, other in inputs.items():
        if other and os.path.isdir(other) and _same_or_inside(folder, other):
            raise OutputError(f"{flag} '{folder}' is {other_flag} '{other}' or inside it; the input folder is not "
                              f"changed by this script. Pass another {flag}.")
    with writing(f"the folder {flag}", os.path.dirname(os.path.abspath(folder)) or "."):
        os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} '{folder}' is not writable; fix its permissions or pass another {flag}.")


def check_output_file(path: str, flag: str, overwrite: bool, inputs: dict[str, str]) -> None:
    """`path` is a file name whose folder can be made, not an input, and not an existing file without --overwrite."""
    if os.path.isdir(path):
        raise OutputError(f"{flag} '{path}' is a folder; pass a file name, e.g. {os.path.join(path, 'scores.json')}.")
    for other_flag, other in inputs.items():
        if other and _same_or_inside(path, other):
            raise OutputError(f"{flag} '{path}' is inside {other_flag} '{other}'; the input is not changed by this "
                              f"script. Pass a file elsewhere.")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{flag} '{path}' exists; not replaced. Pass --overwrite to replace it, or another {flag}.")
    check_output_folder(os.path.dirname(os.path.abspath(path)), f"the folder of {flag}", {})


def guarded_main(body, what: str) -> int:
    """Run `body()` (returns the exit status) as a script's main: a UserError is one `error:` line and exit 2;
    Ctrl-C / SIGTERM clean up (the body removes its partial files on the way out) and exit 130 / 143."""
    try:
        with run_guard():
            return body()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signal_name = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
        print(f"interrupted ({signal_name}): {what} stopped; no partial file is left and nothing earlier was "
              f"replaced. Run it again to finish.", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
