"""What is wrong with a path where a regular file is expected."""
from __future__ import annotations

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
