"""GLUE tasks: from the HuggingFace hub when online, or from GLUE-distribution TSV files offline."""
from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass

from dataset.errors import DataError
from utils.paths import file_problem

# The default limit (131072 characters) rejects valid long fields; a TSV row is bounded by memory anyway.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str                  # folder name in the GLUE distribution
    text_columns: tuple          # TSV header names of the one or two text columns
    label_column: str
    label_names: tuple           # HuggingFace GLUE convention: label id = position; () = regression
    dev_file: str = "dev.tsv"
    headerless_columns: dict | None = None   # CoLA ships without a header: name -> column index

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)


GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("sentence",), "label", ("unacceptable", "acceptable"),
             headerless_columns={"label": 1, "sentence": 3}),
    GlueTask("sst2", "SST-2", ("sentence",), "label", ("negative", "positive")),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("not_equivalent", "equivalent")),
    GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("not_duplicate", "duplicate")),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", ()),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
             ("entailment", "neutral", "contradiction"), dev_file="dev_matched.tsv"),
    GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment")),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment")),
]}

# Column names of the hub's nyu-mll/glue configs.
_HUB_TEXT_COLUMNS = {
    "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
}


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown task '{name}'. Known GLUE tasks: {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


def _task_dir(task: GlueTask, data_dir: str) -> str:
    """Accept either the GLUE root (holding SST-2/, MRPC/...) or the task folder itself."""
    nested = os.path.join(data_dir, task.folder)
    return nested if os.path.isdir(nested) else data_dir


def find_tsv(task: GlueTask, data_dir: str, split: str) -> str:
    name = "train.tsv" if split == "train" else task.dev_file
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir '{data_dir}' {'is not a folder' if os.path.exists(data_dir) else 'does not exist'}; point it at the GLUE root holding "
                        f"{task.folder}/ or at that folder itself (it needs train.tsv and {task.dev_file}).")
    path = os.path.join(_task_dir(task, data_dir), name)
    if os.path.lexists(path) and file_problem(path):
        raise DataError(f"--data_dir: {path} {file_problem(path)}; it must be the GLUE {task.folder} TSV file.")
    if not os.path.isfile(path):
        raise DataError(
            f"--data_dir: no {name} for task {task.name} in {data_dir} (looked for {path}). Point "
            f"--data_dir at the GLUE root holding {task.folder}/ or at that folder itself.")
    return path


def read_tsv(task: GlueTask, path: str) -> tuple[list[dict], int]:
    """Read a GLUE TSV into rows {'texts': tuple[str], 'label': str, 'line': int}. Returns (rows, skipped).

    Rows with too few columns or an empty text or label are skipped, counted and reported (a warning,
    and `skipped_rows` under `data` in results.json), not fatal: GLUE files in the wild hold a few
    such rows (QQP has questions that are empty; copies passed through editors or spreadsheets gain
    blank lines and stray tabs), and refusing the whole file would make standard data unusable.
    Anything else wrong with the file (encoding, columns, labels, no rows at all) is an error.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); re-save it as UTF-8.") from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable TSV file ({e}); is it the GLUE {task.folder} file?") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}); check the file and its permissions.") from None
    if not any(lines):
        raise DataError(f"{path} is empty; a GLUE {task.folder} TSV needs "
                        f"{'data rows' if task.headerless_columns else 'a header row and data rows'}.")
    if task.headerless_columns:
        columns = task.headerless_columns
        body = list(enumerate(lines, start=1))
    else:
        header = [h.strip() for h in lines[0]]
        twice = sorted({h for h in header if header.count(h) > 1 and h in task.text_columns + (task.label_column,)})
        if twice:
            raise DataError(f"{path}: the header names column(s) {twice} more than once (header: {header}); "
                            f"rename or remove the duplicate column so that each is named once.")
        columns = {}
        for name in task.text_columns + (task.label_column,):
            if name not in header:
                raise DataError(f"{path}: column '{name}' is missing (header: {header}); the "
                                f"{task.name} TSV layout needs columns {list(task.text_columns) + [task.label_column]}.")
            columns[name] = header.index(name)
        body = list(enumerate(lines, start=1))[1:]
    text_idx = [columns[c] for c in task.text_columns]
    label_idx = columns[task.label_column]
    needed = max(text_idx + [label_idx])
    rows, skipped = [], 0
    for number, line in body:
        if len(line) <= needed or not line[label_idx].strip() or any(not line[i].strip() for i in text_idx):
            skipped += 1
            continue
        rows.append({"texts": tuple(line[i] for i in text_idx), "label": line[label_idx].strip(), "line": number})
    if not rows:
        raise DataError(f"{path} has no usable rows ({skipped} rows with missing fields); the {task.name} "
                        f"data needs rows with {' and '.join(task.text_columns)} text and a {task.label_column}.")
    return rows, skipped


def label_converter(task: GlueTask, label2id: dict | None):
    """Map a raw label (a name or a HuggingFace-convention id) to the checkpoint's label id.

    The checkpoint's config.label2id wins when it names exactly the task's labels; otherwise the
    HuggingFace GLUE convention (id = position in the task's label list) applies.
    """
    if task.is_regression:
        def to_float(raw):
            try:
                value = float(raw)
            except ValueError:
                raise DataError(f"task {task.name}: label '{raw}' is not a number") from None
            if not math.isfinite(value):
                raise DataError(f"task {task.name}: label '{raw}' is not a finite number")
            return value
        return to_float
    names = list(task.label_names)
    ckpt = {str(k).lower(): int(v) for k, v in (label2id or {}).items()}
    use_ckpt = set(ckpt) == set(names)

    def convert(raw):
        raw = str(raw).strip().lower()
        if raw in names:
            name = raw
        else:
            try:
                value = float(raw)
            except ValueError:
                value = None
            if value is None or not value.is_integer() or not 0 <= value < len(names):
                raise DataError(f"task {task.name}: label '{raw}' is not one of {names} "
                                f"or 0..{len(names) - 1}")
            name = names[int(value)]
        return ckpt[name] if use_ckpt else names.index(name)
    return convert


def load_glue_split(task_name: str, split: str, data_dir: str | None, label2id: dict | None = None
                    ) -> tuple[list[dict], dict]:
    """Rows [{'texts': (a[, b]), 'label': int|float}] and info about where they came from."""
    task = get_task(task_name)
    convert = label_converter(task, label2id)
    if data_dir:
        path = find_tsv(task, data_dir, split)
        raw_rows, skipped = read_tsv(task, path)
        source = path
    else:
        raw_rows, skipped, source = _load_from_hub(task, split)
    rows = []
    for r in raw_rows:
        try:
            rows.append({"texts": r["texts"], "label": convert(r["label"])})
        except DataError as e:
            where = f"{source}, line {r['line']}" if "line" in r else source
            raise DataError(f"{where}: {e}. Check that the data is the {task.name} data (--task_name) "
                            f"and fix or remove that row.") from None
    return rows, {"source": source, "rows": len(rows), "skipped_rows": skipped}


def _load_from_hub(task: GlueTask, split: str):
    import datasets  # the hub path only: a multi-second import that offline runs never need
    hub_split = "train" if split == "train" else ("validation_matched" if task.name == "mnli" else "validation")
    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.name, split=hub_split)
    except Exception as e:  # offline or hub error: the fix is the same
        raise DataError(f"could not load GLUE {task.name} from the HuggingFace hub ({type(e).__name__}: "
                        f"{e}). Offline, pass --data_dir with the GLUE TSV files.") from None
    cols = _HUB_TEXT_COLUMNS[task.name]
    rows = [{"texts": tuple(ex[c] for c in cols), "label": ex["label"]} for ex in ds]
    return rows, 0, f"hub:nyu-mll/glue/{task.name}/{hub_split}"
