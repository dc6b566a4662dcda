"""Zero-shot accuracy of a causal LM through EleutherAI's lm-evaluation-harness (PyPI ``lm-eval==0.4.13``).

``zero_shot_scores(model, tokenizer, "arc_easy,hellaswag", limit=100)`` wraps the in-memory model (pruned with
mask hooks or physically, never re-saved) in lm-eval's ``HFLM`` and runs ``lm_eval.simple_evaluate`` on it. The
``tasks`` string is a comma-separated list whose items are

- a task, group or tag name the harness knows (``arc_easy``; online users get the standard tasks unchanged),
- a folder of task YAML files (every task defined there; the folder is the TaskManager's ``include_path``, so
  its tasks may also be named in the same string), or
- one task YAML file.

Local-file tasks (``dataset_path: json`` with ``dataset_kwargs: data_files``) may give their data files
relative to the YAML's folder, so that a built task folder (``python -m scripts.make_zero_shot_tasks``) can be moved;
a relative path that does not exist there is left to the harness (which resolves it against the working
directory, as the ``lm_eval`` command does).

This module is part of the project's local ``evaluate`` package, which shadows the PyPI ``evaluate`` package
when running from the project root. lm-eval's loglikelihood scoring (acc, acc_norm) uses its own metric
registry and imports PyPI ``evaluate`` only for metrics it does not register itself (``hf_evaluate: true`` or an
unknown metric name), which the offline tasks here do not use; ``tests/test_zero_shot.py`` checks both.

The harness's global seeding (random, numpy, torch) is undone after the call, so evaluating before pruning
leaves the pruning's random draws as they were without ``--eval_tasks``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import torch

from utils.errors import UserError

log = logging.getLogger(__name__)

LM_EVAL_REQUIREMENT = "lm-eval==0.4.13"
REPORTED = ("acc", "acc_norm")        # the multiple-choice metrics averaged over tasks


class ZeroShotError(UserError):
    """--eval_tasks / --eval_limit problems a user can fix (lm-eval missing, unknown task, bad task folder)."""


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def _require_lm_eval():
    if not lm_eval_available():
        raise ZeroShotError(f"--eval_tasks needs EleutherAI's lm-evaluation-harness: pip install '{LM_EVAL_REQUIREMENT}' "
                            f"(scripts/setup.sh installs it), or drop --eval_tasks.")
    import lm_eval
    return lm_eval


def _split_items(tasks: str) -> list[str]:
    items = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    if not items:
        raise ZeroShotError("--eval_tasks is empty: give task names (arc_easy,piqa), a folder of task YAML files "
                            "(data/zero_shot, built by python -m scripts.make_zero_shot_tasks) or a YAML file.")
    return items


def _resolve_data_files(cfg: dict, yaml_dir: str) -> dict | None:
    """A copy of cfg with dataset_kwargs.data_files relative to yaml_dir made absolute, or None if none are."""
    kwargs = cfg.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if not files:
        return None
    changed = False

    def fix(path):
        nonlocal changed
        if isinstance(path, str) and not os.path.isabs(path) and "://" not in path:
            candidate = os.path.join(yaml_dir, path)
            if os.path.exists(candidate):
                changed = True
                return os.path.abspath(candidate)
        return path

    if isinstance(files, dict):
        new = {split: ([fix(p) for p in v] if isinstance(v, list) else fix(v)) for split, v in files.items()}
    elif isinstance(files, list):
        new = [fix(p) for p in files]
    else:
        new = fix(files)
    if not changed:
        return None
    return {**cfg, "dataset_kwargs": {**kwargs, "data_files": new}}


def _load_task_yaml(path: str) -> dict:
    """The full config of one task YAML (includes and !function resolved), with lm-eval's own loader."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval 0.4.13
    except ImportError:                                      # pragma: no cover - other lm-eval versions
        from lm_eval.utils import load_yaml_config

        return load_yaml_config(path)
    return dict(load_yaml(Path(path), resolve_func=True))


def resolve_tasks(tasks: str):
    """(specs for simple_evaluate, TaskManager, the names asked for): folders and YAML files are indexed with
    include_path; a task whose local data files are relative to its YAML becomes a config dict with them made
    absolute; any other item is passed by name."""
    lm_eval = _require_lm_eval()  # noqa: F841
    from lm_eval.tasks import TaskManager

    items = _split_items(tasks)
    include, wanted = [], []
    for item in items:
        if os.path.isdir(item):
            include.append(os.path.abspath(item))
            wanted.append(("folder", os.path.abspath(item)))
        elif item.endswith((".yaml", ".yml")):
            if not os.path.isfile(item):
                raise ZeroShotError(f"--eval_tasks: task file {item} does not exist (build the offline tasks with "
                                    f"'python -m scripts.make_zero_shot_tasks', or fix the path).")
            include.append(os.path.dirname(os.path.abspath(item)))
            wanted.append(("file", os.path.abspath(item)))
        elif os.sep in item or item.startswith("."):
            raise ZeroShotError(f"--eval_tasks: {item} is neither a folder, a YAML file nor a task name "
                                f"(build the offline tasks with 'python -m scripts.make_zero_shot_tasks').")
        else:
            wanted.append(("name", item))
    # the harness's own ~10k task files take ~10-20 s to index: only when a name is not in the given folders
    manager = TaskManager(include_path=sorted(set(include)) or None, include_defaults=not include)
    if include and any(kind == "name" and value not in manager.task_index for kind, value in wanted):
        manager = TaskManager(include_path=sorted(set(include)))
    index = manager.task_index
    names: list[str] = []
    for kind, value in wanted:
        if kind == "name":
            if value not in index:
                raise ZeroShotError(f"--eval_tasks: lm-eval knows no task, group or tag called {value!r} (check "
                                    f"'lm_eval ls tasks', or give a folder of task YAML files).")
            names.append(value)
        elif kind == "folder":
            found = sorted(name for name, entry in index.items()
                           if entry.yaml_path is not None and getattr(entry.kind, "name", "") == "TASK"
                           and os.path.dirname(os.path.abspath(entry.yaml_path)) == value)
            if not found:
                raise ZeroShotError(f"--eval_tasks: no task YAML files in {value} (build them with "
                                    f"'python -m scripts.make_zero_shot_tasks --out_dir {value}').")
            names.extend(found)
        else:
            found = [name for name, entry in index.items()
                     if entry.yaml_path is not None and os.path.abspath(entry.yaml_path) == value]
            if not found:
                raise ZeroShotError(f"--eval_tasks: {value} defines no task lm-eval can index (it needs a 'task:' key).")
            names.extend(sorted(found))
    names = list(dict.fromkeys(names))
    specs = []
    for name in names:
        entry = index[name]
        spec = name
        if entry.yaml_path is not None and getattr(entry.kind, "name", "") == "TASK":
            cfg = _resolve_data_files(_load_task_yaml(str(entry.yaml_path)),
                                      os.path.dirname(os.path.abspath(entry.yaml_path)))
            if cfg is not None:
                for key in ("tag", "group", "task_list"):
                    cfg.pop(key, None)
                spec = cfg
        specs.append(spec)
    return specs, manager, names


def _data_file_paths(cfg: dict) -> list[str]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files") if isinstance(cfg.get("dataset_kwargs"), dict) else None
    if isinstance(files, dict):
        files = [p for v in files.values() for p in (v if isinstance(v, list) else [v])]
    elif not isinstance(files, list):
        files = [files] if files else []
    return [p for p in files if isinstance(p, str) and "://" not in p]


def _check_task_file(path: str) -> str | None:
    """The task name a local YAML defines (None for an include base or a group), after checking that it parses
    and that its local data files exist (beside the YAML or from the working directory, as the harness reads them)."""
    try:
        cfg = _load_task_yaml(path)
    except Exception as e:  # yaml.YAMLError, a missing !include or !function, an unreadable file
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ZeroShotError(f"--eval_tasks: the task file {path} cannot be read as lm-eval task YAML ({detail}); "
                            f"fix it or rebuild the tasks with 'python -m scripts.make_zero_shot_tasks'.") from None
    name = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(name, str):
        return None
    for data in _data_file_paths(cfg):
        beside = os.path.join(os.path.dirname(path), data)
        if not (os.path.isfile(beside) or os.path.isfile(data)):
            raise ZeroShotError(f"--eval_tasks: task {name!r} ({path}) reads the data file {data}, which is neither "
                                f"beside the YAML nor under {os.getcwd()}; put it there, or rebuild the tasks with "
                                f"'python -m scripts.make_zero_shot_tasks'.")
    return name


def check_task_sources(tasks: str) -> list[str]:
    """Before any work: every folder or YAML file in `tasks` parses, defines tasks whose local data files exist,
    and none of whose task names is one of lm-eval's own (its scores would be reported under the standard task's
    name); then the whole list resolves (names the harness knows). Returns the task names; raises ZeroShotError."""
    _require_lm_eval()
    local: dict[str, str] = {}
    for item in _split_items(tasks):
        if os.path.isdir(item):
            files = sorted(os.path.join(item, f) for f in os.listdir(item) if f.endswith((".yaml", ".yml")))
        elif item.endswith((".yaml", ".yml")) and os.path.isfile(item):
            files = [item]
        else:
            continue                                   # a name, or a missing file: resolve_tasks says which
        for path in files:
            name = _check_task_file(path)
            if name is not None:
                local.setdefault(name, path)
    if local:
        from lm_eval.tasks import TaskManager
        standard = TaskManager().task_index
        taken = sorted(n for n in local if n in standard and os.path.abspath(str(standard[n].yaml_path or "")) !=
                       os.path.abspath(local[n]))
        if taken:
            raise ZeroShotError(f"--eval_tasks: the task name {taken[0]!r} ({local[taken[0]]}) is one of lm-eval's own "
                                f"tasks; its scores would be reported as that standard task's. Rename it (the 'task:' "
                                f"line) or name lm-eval's task instead of the file.")
    return resolve_tasks(tasks)[2]


@contextlib.contextmanager
def _kept_rng_state():
    """Undo lm-eval's global seeding (random, numpy, torch CPU and CUDA) when the block ends."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _light_env_info():
    """simple_evaluate ends with add_env_info, which runs torch's collect_env (pip, nvidia-smi, ...: ~5 s on 2
    busy cores, twice per run); the results here keep only the scores, so it is replaced by a no-op meanwhile."""
    try:
        import lm_eval.evaluator as evaluator
    except ImportError:                                      # pragma: no cover
        yield
        return
    if not hasattr(evaluator, "add_env_info"):               # pragma: no cover - other lm-eval versions
        yield
        return
    with mock.patch.object(evaluator, "add_env_info", lambda storage: None):
        yield


@contextlib.contextmanager
def _quiet(level=logging.WARNING):
    logger = logging.getLogger("lm_eval")
    old = logger.level
    logger.setLevel(max(level, old))
    try:
        yield
    finally:
        logger.setLevel(old)


def _prefix_token_id(model, tokenizer):
    """None (the harness takes BOS, else EOS) unless the tokenizer has neither: then CLS, the config's BOS/EOS,
    PAD or 0 (the harness would fail on a None prefix token, e.g. with a BERT-style tokenizer)."""
    if tokenizer.bos_token_id is not None or tokenizer.eos_token_id is not None:
        return None
    for candidate in (getattr(tokenizer, "cls_token_id", None), getattr(model.config, "bos_token_id", None),
                      getattr(model.config, "eos_token_id", None), tokenizer.pad_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _summarise(out: dict, names: list[str], keep_loglikelihoods: bool = False) -> dict:
    """Per task: acc, acc_norm and their standard errors, items, chance (mean 1/choices), per-item correctness."""
    tasks = {}
    samples = out.get("samples") or {}
    for name, values in sorted(out.get("results", {}).items()):
        row = {}
        for key, value in values.items():
            if key == "alias" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric = key.split(",")[0]
            if metric == "sample_len":
                continue
            row[metric] = None if isinstance(value, float) and math.isnan(value) else float(value)
        if not any(m in row for m in REPORTED) and name not in samples:
            continue                                   # a group's aggregate row without scores of its own
        items = sorted(samples.get(name, []), key=lambda s: s["doc_id"])
        if items:
            row["items"] = len(items)
            choices = [len(s.get("arguments") or []) for s in items]
            if all(c > 1 for c in choices):         # multiple choice; an open-vocabulary task has no chance level
                row["chance"] = sum(1.0 / c for c in choices) / len(choices)
            row["per_item"] = {m: [int(round(float(s[m]))) for s in items] for m in REPORTED
                               if all(m in s for s in items)}
            if keep_loglikelihoods:      # [item][choice] summed log-probability of the choice given the context
                row["per_item"]["loglikelihoods"] = [[float(r[0]) for r in s["filtered_resps"]] for s in items]
        else:
            row["items"] = out.get("n-samples", {}).get(name, {}).get("effective")
        tasks[name] = row
    average, over = {}, {}
    for metric in REPORTED:
        names_with = [name for name, row in tasks.items() if row.get(metric) is not None]
        if names_with:
            average[metric] = sum(tasks[n][metric] for n in names_with) / len(names_with)
            over[metric] = names_with
    return {"tasks": tasks, "average": average, "average_over": over}


def zero_shot_scores(model, tokenizer, tasks: str, limit: int | None = None, batch_size: int = 8,
                     context: Callable | None = None, max_length: int | None = None,
                     keep_loglikelihoods: bool = False) -> dict:
    """Score an in-memory causal LM on lm-eval tasks; returns

        {"tasks": {name: {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "items", "chance",
                          "per_item": {"acc": [0/1 per item in doc order], "acc_norm": [...]}}},
         "average": {"acc", "acc_norm"}, "limit", "seconds", "lm_eval_version", "task_names"}

    tasks: names, folders of task YAML files or YAML files, comma-separated (see the module docstring).
    limit: at most this many items per task (the first ones, in the data set's order); None = all.
    context: a callable returning a context manager held open while scoring (e.g. the pruning's mask hooks:
    ``lambda: apply_masks(arch, head_mask, neuron_mask)``).
    keep_loglikelihoods: also return every choice's summed log-probability per item (multiple-choice tasks).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ZeroShotError(f"--eval_limit must be a positive whole number of items per task, not {limit!r}.")
    lm_eval = _require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    specs, manager, names = resolve_tasks(tasks)
    was_training = model.training
    model.eval()
    try:
        with _kept_rng_state(), _quiet(), _light_env_info(), torch.inference_mode(), \
                (context() if context else contextlib.nullcontext()):
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size), max_length=max_length,
                      prefix_token_id=_prefix_token_id(model, tokenizer))
            out = lm_eval.simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit,
                                          batch_size=int(batch_size), bootstrap_iters=1000, log_samples=True,
                                          write_out=False, cache_requests=False)
    except (KeyError, FileNotFoundError, ConnectionError) as e:      # ConnectionError: a hub data set, offline
        detail = " ".join(str(e).split())[:300]
        raise ZeroShotError(f"--eval_tasks {tasks}: lm-eval could not load the tasks ({type(e).__name__}: {detail}); "
                            f"offline, build the local tasks with 'python -m scripts.make_zero_shot_tasks' and pass "
                            f"their folder.") from None
    finally:
        model.train(was_training)
    summary = _summarise(out, names, keep_loglikelihoods)
    summary.update(limit=limit, seconds=round(time.perf_counter() - start, 3), task_names=names,
                   lm_eval_version=getattr(lm_eval, "__version__", None))
    for name, row in summary["tasks"].items():
        log.info("zero-shot %s: acc %s acc_norm %s (%s items, chance %s)", name, _fmt(row.get("acc")),
                 _fmt(row.get("acc_norm")), row.get("items"), _fmt(row.get("chance")))
    if summary["average"]:
        log.info("zero-shot average: %s", {k: round(v, 4) for k, v in summary["average"].items()})
    return summary


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def without_items(scores: dict) -> dict:
    """scores without the per-item lists (for a log line or a compact table)."""
    return {**scores, "tasks": {n: {k: v for k, v in row.items() if k != "per_item"}
                                for n, row in scores.get("tasks", {}).items()}}
