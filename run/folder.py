"""The run folder: arguments, versions, log, masks and results, written so that a killed run
never leaves a results.json that looks complete."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid

from export.hf_folder import FORMAT, PRUNING_FILE
from utils.atomic import is_tool_temp_dir
from utils.errors import UserError


class OutputError(UserError):
    """A user-fixable problem with --output_dir or --save_pruned."""


# Files of a run that a new run in the same folder must not leave behind: on their own they would
# look like the new run's output (results.json is the "finished" marker and is written last).
RUN_OUTPUTS = ("results.json", "head_mask.pt", "neuron_mask.pt", "weight_updates.pt")
RUN_FILES = RUN_OUTPUTS + ("args.json", "versions.json", "log.txt")   # what a run writes in its folder
LOCK_FILE = "run.lock"


def prepare_run_folder(path: str, overwrite: bool, save_target: str | None = None) -> None:
    """Check the folder, take its lock (one run at a time), then remove what earlier runs of this
    tool left that would look current. Only files this tool recognises as its own are removed."""
    if os.path.isfile(os.path.join(path, "results.json")) and not overwrite and not _locked_by_other(path):
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
    _refuse_foreign_files(path)
    stale = acquire_lock(path, save_target)
    if os.path.isfile(os.path.join(path, "results.json")) and not overwrite:   # finished while we waited
        release_locks()
        raise OutputError(f"--output_dir '{path}' already holds a finished run (results.json). "
                          f"Pass --overwrite to replace it, or choose another --output_dir.")
    _remove_old_outputs(path, stale)


def _refuse_foreign_files(path: str) -> None:
    """A folder that is not a run folder of this tool but holds files a run would replace."""
    if _is_run_folder(path):
        return
    taken = [n for n in RUN_FILES if os.path.lexists(os.path.join(path, n))]
    if taken:
        raise OutputError(f"--output_dir '{path}' holds files that this tool did not write ({', '.join(taken)}) "
                          f"and a run would replace them; choose a new or empty --output_dir.")


def _is_run_folder(path: str) -> bool:
    args = _read_json(os.path.join(path, "args.json"))
    return isinstance(args, dict) and {"task_name", "ckpt_dir", "output_dir"} <= set(args)


def _read_json(file: str):
    try:
        with open(file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove_old_outputs(path: str, stale: dict | None) -> None:
    # results.json goes first, so that a run killed during this cleanup still has none.
    old_models = [m for m in (_previous_pruned_model(path), _unfinished_pruned_model(path, stale)) if m]
    partial = RUN_OUTPUTS + ("args.json", "versions.json", "results.json.pending")
    for name in RUN_OUTPUTS + ("results.json.pending",) + tuple(n + ".tmp" for n in partial):
        target = os.path.join(path, name)
        if os.path.isfile(target):
            os.remove(target)
    for model in old_models:
        shutil.rmtree(model, ignore_errors=True)
    parents = {path} | {os.path.dirname(os.path.abspath(m)) for m in old_models}
    if stale and isinstance(stale.get("save_pruned"), str):
        parents.add(os.path.dirname(os.path.abspath(stale["save_pruned"])))
    for parent in parents:          # temporary folders of a pruned-model save that was killed
        for entry in _scandir(parent):
            if entry.is_dir(follow_symlinks=False) and _SAVE_TMP.fullmatch(entry.name) \
                    and is_tool_temp_dir(entry.path):
                shutil.rmtree(entry.path, ignore_errors=True)


def _scandir(path: str) -> list:
    try:
        return list(os.scandir(path))
    except OSError:
        return []


# utils/atomic.stage_dir writes into tempfile.mkdtemp(prefix=NAME + ".tmp-") next to the target
_SAVE_TMP = re.compile(r".+\.(tmp|old)-[A-Za-z0-9_]{8}")


def pruned_model_run_id(folder: str) -> str | None:
    """The run id recorded in a pruned model saved by this tool ('' for one saved without);
    None when `folder` is not such a model."""
    info = _read_json(os.path.join(folder, PRUNING_FILE))
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return None
    run_id = info.get("run_id")
    return run_id if isinstance(run_id, str) else ""


def _previous_pruned_model(path: str) -> str | None:
    """The pruned model folder that the finished run being replaced saved inside `path` (--save_pruned)."""
    results = _read_json(os.path.join(path, "results.json"))
    saved = results.get("pruned_model") if isinstance(results, dict) else None
    saved = saved.get("path") if isinstance(saved, dict) else None
    if not isinstance(saved, str):
        return None
    saved, root = os.path.realpath(saved), os.path.realpath(path)
    inside = saved != root and os.path.commonpath([saved, root]) == root
    return saved if inside and pruned_model_run_id(saved) is not None else None


def _unfinished_pruned_model(path: str, stale: dict | None) -> str | None:
    """The model a killed run of this folder put in place without its results.json (same run id)."""
    if not stale or not isinstance(stale.get("save_pruned"), str) or not stale.get("run_id"):
        return None
    target = stale["save_pruned"]
    return target if pruned_model_run_id(target) == stale["run_id"] else None


# ----------------------------------------------------------------------------- the lock

_held: list[tuple[str, str]] = []          # (lock file, run id) taken by this process
_pending_warnings: list[str] = []          # logged once setup_logging has opened log.txt


def current_run_id() -> str | None:
    return _held[-1][1] if _held else None


def _lock_owner_alive(owner: dict) -> bool | None:
    """True/False for a lock of this host; None when it cannot be told (another host)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    if owner["pid"] == os.getpid():
        return False       # runs of one process are sequential: an earlier run() that did not release it
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _started_after_lock(owner["pid"], owner.get("started")):
        owner["_reused"] = True        # the pid now belongs to a process started after the lock: not its run
        return False
    return True


def _started_after_lock(pid: int, started) -> bool:
    """The process `pid` started clearly after the lock was written (its pid was reused, e.g. after a
    restart). False when that cannot be told (no /proc, an unreadable time)."""
    try:
        locked = time.mktime(time.strptime(started, "%Y-%m-%dT%H:%M:%S%z")) if isinstance(started, str) else None
        if locked is None:
            return False
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        with open(f"/proc/{pid}/stat") as f:
            ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK") > locked + 5
    except (OSError, ValueError, IndexError, StopIteration, OverflowError):
        return False


def live_lock_owner(file: str) -> dict | None:
    """Who holds the lock `file` (pid, host, start time), when it is a live process of this host other than this one."""
    owner = _read_json(file)
    if isinstance(owner, dict) and _lock_owner_alive({**owner, "_file": file}) is True:
        return owner
    return None


def _locked_by_other(path: str) -> bool:
    owner = _read_json(os.path.join(path, LOCK_FILE))
    return isinstance(owner, dict) and _lock_owner_alive({**owner, "_file": os.path.join(path, LOCK_FILE)}) is True


def acquire_lock(path: str, save_target: str | None = None, file: str | None = None,
                 what: str | None = None, output_dir: str | None = None) -> dict | None:
    """Create `path`/run.lock (pid, host, start time, run id); returns the stale lock it took over.

    A lock whose process is gone (same host) is taken over with a warning: it is what kill -9
    leaves, and it tells which pruned model that run may have put in place without its results.
    `file` and `what` lock something else than a run folder (a --save_pruned target outside it); one
    process holds the same run id in all its locks.
    """
    file = file or os.path.join(path, LOCK_FILE)
    what = what or f"--output_dir '{path}'"
    run_id = _held[0][1] if _held else uuid.uuid4().hex[:16]
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run_id": run_id, "save_pruned": os.path.abspath(save_target) if save_target else None,
            "output_dir": os.path.abspath(output_dir or path)}
    stale = None
    for _ in range(3):
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            stale = _take_over(file, what)
            continue
        except OSError as e:
            raise OutputError(f"cannot create the lock {file} ({e.strerror or e}); choose a folder you can "
                              f"write to.") from None
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        _held.append((file, run_id))
        return stale
    raise OutputError(f"another run keeps taking the lock {file}; wait for it to finish.")


def _take_over(file: str, what: str) -> dict | None:
    owner = _read_json(file)
    if not isinstance(owner, dict):          # being written right now, or damaged
        time.sleep(0.2)
        owner = _read_json(file)
    if not isinstance(owner, dict):
        raise OutputError(f"{what} has a damaged lock file {file}; if no run is using it, "
                          f"delete it and run again.")
    probe = {**owner, "_file": file}
    alive = _lock_owner_alive(probe)
    who = f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
    if isinstance(owner.get("output_dir"), str) and os.path.basename(file) != LOCK_FILE:
        who += f", run folder {owner['output_dir']}"
    flag = what.split()[0]
    if alive:
        raise OutputError(f"{what} is in use by another run ({who}); wait for it to finish"
                          + (" (then --overwrite replaces its model)" if flag == "--save_pruned" else "")
                          + f" or choose another {flag}. If no run is using it (a pid reused after a restart "
                          f"belongs to another program), delete the lock {file} and run again.")
    if alive is None:
        raise OutputError(f"{what} is locked by a run on another machine "
                          f"({who}); if that run has ended, delete {file} and run again.")
    if owner.get("pid") == os.getpid():
        _held[:] = [h for h in _held if h[0] != file]
    aside = f"{file}.stale-{os.getpid()}"
    try:
        os.rename(file, aside)               # atomic: of two runs taking over, one wins
    except FileNotFoundError:
        return None
    moved = _read_json(aside)
    if not isinstance(moved, dict) or moved.get("run_id") != owner.get("run_id"):
        with contextlib.suppress(OSError):    # another run took it over first: give its lock back
            os.link(aside, file)
        os.remove(aside)
        raise OutputError(f"{what} is in use by another run that just "
                          f"started; wait for it to finish or choose another {what.split()[0]}.")
    os.remove(aside)
    if owner.get("pid") != os.getpid():
        gone = ("whose pid now belongs to a process started later" if probe.get("_reused") else "that is gone")
        _pending_warnings.append(f"took over the stale lock {file} of a run {gone} ({who})"
                                 + ("; its unfinished outputs are removed" if os.path.basename(file) == LOCK_FILE
                                    else ""))
    return owner


@contextlib.contextmanager
def claimed_outputs(paths: list[str], what: str, overwrite: bool, written_by: str):
    """Hold a lock next to the first of `paths` while a script writes them, and refuse to replace any that
    exists without --overwrite (two measurements or exports into one folder would mix their files)."""
    lock = os.path.abspath(paths[0]) + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    try:
        acquire_lock(os.path.dirname(lock), file=lock, what=what)
        existing = [p for p in paths if os.path.lexists(p)]
        if existing and not overwrite:
            raise OutputError(f"{', '.join(existing)} {'exists' if len(existing) == 1 else 'exist'} ({written_by}); "
                              f"not replaced. Pass --overwrite to replace {'it' if len(existing) == 1 else 'them'}.")
        yield
    finally:
        release_locks()


def release_locks() -> None:
    while _held:
        file, run_id = _held.pop()
        owner = _read_json(file)
        if isinstance(owner, dict) and owner.get("run_id") == run_id:
            with contextlib.suppress(OSError):
                os.remove(file)


def write_json(path: str, data) -> None:
    """Atomic: write to a temporary name in the same folder, then rename. A failed write (disk full,
    read-only) is one OutputError line and leaves neither file half written."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OutputError(f"cannot write {path} ({e.strerror or e}); free some space, fix the permissions "
                          f"or choose another --output_dir, then run again.") from None


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
    while _pending_warnings:
        logging.getLogger(__name__).warning(_pending_warnings.pop(0))
    for noisy in ("transformers", "datasets", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
