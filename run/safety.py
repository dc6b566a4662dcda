"""Never lose a user's files: where --save_pruned may write, how a finished folder is put in place,
what a failed write leaves, and how Ctrl-C / SIGTERM end a run.

The run folder's lock lives in run/folder.py (it is part of preparing the folder).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading

from export.hf_folder import PRUNING_FILE
from run.folder import RUN_OUTPUTS, OutputError, acquire_lock, pruned_model_run_id, release_locks, write_json
from utils.atomic import _staged, discard_dir, place_dir

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (the same clean-up), exit status 143."""


# ----------------------------------------------------------------------------- --save_pruned target

def _inside(path: str, root: str) -> bool:
    """`path` is `root` or somewhere below it (both real paths)."""
    return path == root or os.path.commonpath([path, root]) == root


def resolve_save_target(save_pruned: str | None, output_dir: str) -> str | None:
    if not save_pruned:
        return None
    return save_pruned if os.path.isabs(save_pruned) else os.path.join(output_dir, save_pruned)


def check_save_target(target: str | None, output_dir: str, ckpt_dir: str, overwrite: bool) -> None:
    """Refuse, before any work, a --save_pruned folder whose replacement would lose a user's files."""
    if target is None:
        return
    real = os.path.realpath(target)
    for flag, other in (("--output_dir", output_dir), ("--ckpt_dir", ckpt_dir)):
        if not os.path.exists(other) and flag == "--ckpt_dir":
            continue                     # a hub id
        other = os.path.realpath(other)
        if _inside(other, real):
            raise OutputError(f"--save_pruned '{target}' is {flag} or a folder above it; saving there would "
                              f"replace {flag}. Pass a new folder, e.g. --save_pruned pruned_model.")
        if flag == "--ckpt_dir" and _inside(real, other):
            raise OutputError(f"--save_pruned '{target}' is inside --ckpt_dir '{ckpt_dir}'; the checkpoint "
                              f"folder is not changed by this tool. Pass a folder outside it.")
    if os.path.islink(target) or (os.path.exists(target) and not os.path.isdir(target)):
        raise OutputError(f"--save_pruned '{target}' exists and is not a folder; it is not replaced. "
                          f"Pass a path that does not exist yet.")
    if not os.path.exists(target):
        return
    if pruned_model_run_id(target) is None:
        raise OutputError(f"--save_pruned '{target}' exists and is not a pruned model saved by this tool "
                          f"(no valid pruning.json); it is not replaced. Pass a path that does not exist yet.")
    if not overwrite and not _inside(real, os.path.realpath(output_dir)):
        raise OutputError(f"--save_pruned '{target}' already holds a pruned model; pass --overwrite to "
                          f"replace it, or choose another folder.")


def claim_save_target(target: str | None, output_dir: str, ckpt_dir: str, overwrite: bool):
    """Lock a --save_pruned folder outside the run folder (whose own lock covers the inside) for the
    whole run, so that a second run sharing it is refused instead of replacing this run's model, check
    it again under the lock, and return what it holds now: `finish_run` places the model only if that
    has not changed meanwhile."""
    if target is None:
        return None
    if not _inside(os.path.realpath(target), os.path.realpath(output_dir)):
        lock = os.path.join(os.path.dirname(os.path.abspath(target)),
                            os.path.basename(os.path.normpath(target)) + ".lock")
        acquire_lock(os.path.dirname(lock), target, file=lock, what=f"--save_pruned '{target}'",
                     output_dir=output_dir)
    check_save_target(target, output_dir, ckpt_dir, overwrite)
    return target_state(target)


def target_state(target: str):
    """What a --save_pruned folder holds: None (nothing), or its run id and identity on disk."""
    if not os.path.lexists(target):
        return None
    try:
        info = os.stat(os.path.join(target, PRUNING_FILE))
        stamp = (info.st_ino, info.st_mtime_ns)
    except OSError:
        stamp = None
    return (pruned_model_run_id(target), os.lstat(target).st_ino, stamp)


def _describe_state(state) -> str:
    return "nothing" if state is None else (f"the model of run {state[0]!r}" if state[0] else "another folder")


_UNCHECKED = object()


def finish_run(folder: str, results: dict, staged: str | None, target: str | None, expected=_UNCHECKED) -> None:
    """The last step of a run: results.json is written beside its final name, then the staged
    model and it are renamed into place (renames need no space), so a model is only ever
    presented together with the results.json that names its run id. `expected`: what the target
    held when the run claimed it (`claim_save_target`); if another process placed something there
    since, nothing is replaced and the run fails."""
    final = os.path.join(folder, "results.json")
    pending = final + ".pending"
    if staged and expected is not _UNCHECKED and target_state(target) != expected:
        now = target_state(target)
        raise OutputError(f"--save_pruned '{target}' changed while this run was working: it held "
                          f"{_describe_state(expected)} and now holds {_describe_state(now)}, placed by another "
                          f"process. It is not replaced and this run's model is discarded; run again with another "
                          f"--save_pruned, or with --overwrite once no other run uses that folder.")
    write_json(pending, results)
    try:
        with writing("the pruned model", folder, [pending]):
            if staged:
                place_dir(staged, target)
            os.replace(pending, final)
    finally:
        if os.path.exists(pending):
            os.remove(pending)


# ----------------------------------------------------------------------------- failed writes

# torch.save (RuntimeError) and safetensors (SafetensorError) wrap the OSError of a failed write
_WRITE_FAILURE_WORDS = ("write failed", "no space left", "os error", "quota", "read-only", "permission denied",
                        "i/o error")


def _write_failure(e: BaseException) -> str | None:
    """The reason, when `e` is a failed write."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e).strip()
    if any(w in text.lower() for w in _WRITE_FAILURE_WORDS):
        return text.splitlines()[0][:200]
    return None


@contextlib.contextmanager
def writing(what: str, folder: str, leftovers=()):
    """Turn a failed write (disk full, read-only, no permission) into one OutputError line; remove
    `leftovers` (this run's partial files) and the `.tmp` files of the run outputs in `folder`."""
    try:
        yield
    except Exception as e:
        reason = _write_failure(e)
        if reason is None:
            raise
        remove_partial_outputs(folder, leftovers)
        free = _free_mb(folder)
        space = f"; {free:.0f} MB free there" if free is not None else ""
        raise OutputError(f"cannot write {what} in '{folder}' ({reason}{space}); free some space, fix the "
                          f"permissions, or choose another --output_dir, then run again.") from None


def remove_partial_outputs(folder: str, leftovers=()) -> None:
    names = RUN_OUTPUTS + ("args.json", "versions.json", "results.json.pending")
    for path in list(leftovers) + [os.path.join(folder, n + ".tmp") for n in names]:
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                discard_dir(path)
            else:
                os.remove(path)


def _free_mb(folder: str) -> float | None:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return None


# ----------------------------------------------------------------------------- signals

_signalled = []


def _on_signal(signum, frame):
    # The first Ctrl-C / SIGTERM starts the clean-up; later ones must not interrupt it (kill -9 still can).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _signalled.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def run_guard():
    """Around a whole run: SIGTERM cleans up like Ctrl-C, a second signal cannot break the clean-up,
    and the run folder's lock is released on any exit."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    _signalled.clear()
    if main_thread:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        if main_thread:                     # whatever ended the run, a signal must not cut the clean-up
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
        try:
            for tmp in list(_staged):
                discard_dir(tmp)
            release_locks()
        finally:
            # after a signal they stay ignored: the caller still prints its message and exits
            for sig, handler in previous.items() if not _signalled else ():
                signal.signal(sig, handler)
