"""The registry of tasks by --task_name. A leaf: it imports nothing of the project.

    register(MyTask())          # every name in MyTask.names becomes a --task_name

The package's __init__ imports the built-in task files, which register themselves; a task defined
anywhere else (a test, a plug-in) registers the same way and main.py runs it without an edit.
"""
from __future__ import annotations

_TASKS: dict = {}


def register(task):
    for name in task.names:
        _TASKS[name] = task
    return task


def get(name: str):
    if name not in _TASKS:
        raise KeyError(f"unknown task '{name}': one of {', '.join(_TASKS)}")
    return _TASKS[name]


def names() -> list[str]:
    return list(_TASKS)
