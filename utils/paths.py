"""Facts about files: what is wrong with a path where a regular file is expected, and a file's sha256."""
from __future__ import annotations

import hashlib
import os
import stat


def file_problem(path: str) -> str | None:
    """None for a readable regular file, else why not ('is a folder', 'is a FIFO', ...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except OSError as e:          # ELOOP: a symbolic link loop; EACCES; ENAMETOOLONG ...
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"is {kind}, not a regular file"
    return None


def sha256_of(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (provenance records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
