"""Folders that appear whole or not at all: stage next to the target, rename into place, discard.

A leaf module (standard library only): the run folder, the saved-model writers and the signal clean-up
all use it, and it uses none of them.
"""
from __future__ import annotations

import os
import shutil
import tempfile

TEMP_MARKER = ".tool-temp"                 # inside every temporary folder this tool creates
_staged: list[str] = []       # staged folders not placed yet: removed when the run ends any other way


def mark_tool_temp_dir(folder: str) -> None:
    with open(os.path.join(folder, TEMP_MARKER), "w") as f:
        f.write("a temporary folder of main.py; safe to delete when no run is going on\n")


def is_tool_temp_dir(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, TEMP_MARKER))


def stage_dir(target: str) -> str:
    """A new temporary folder next to `target` (so the final rename stays on one file system),
    recognisable as ours by a marker, with the permissions the umask gives a new folder."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(os.path.normpath(target)) + ".tmp-", dir=parent)
    _staged.append(tmp)
    mark_tool_temp_dir(tmp)
    os.chmod(tmp, 0o777 & ~current_umask())   # mkdtemp makes it 0700: other users could not read the model
    return tmp



def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def place_dir(tmp: str, target: str) -> None:
    """Rename the finished folder `tmp` to `target`; an existing `target` (checked to be ours
    beforehand) is moved aside first and removed after, so `target` is never half of either."""
    os.remove(os.path.join(tmp, TEMP_MARKER))
    if tmp in _staged:
        _staged.remove(tmp)
    umask_modes(tmp)
    if not os.path.exists(target):
        os.rename(tmp, target)
        return
    parent = os.path.dirname(os.path.abspath(target))
    old = tempfile.mkdtemp(prefix=os.path.basename(os.path.normpath(target)) + ".old-", dir=parent)
    mark_tool_temp_dir(old)
    aside = os.path.join(old, "previous")
    os.rename(target, aside)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def umask_modes(folder: str) -> None:
    """Give every file and folder under `folder` the mode a plain open() / mkdir gives under the
    current umask: writers underneath (safetensors, mkdtemp) create theirs 0600 / 0700, which other
    users could not read."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def discard_dir(tmp: str | None) -> None:
    if tmp and is_tool_temp_dir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    if tmp in _staged:
        _staged.remove(tmp)
