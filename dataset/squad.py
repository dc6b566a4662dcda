"""SQuAD v1.1 / v2.0: loading (HuggingFace hub or official JSON files) and the standard
extractive-QA preprocessing (sliding windows over long contexts, answer spans as token positions).

Examples use the HuggingFace datasets layout::

    {"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}

with empty answer lists for unanswerable (SQuAD v2.0) questions.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from dataset.errors import DataError
from dataset.features import longest_first, sample_indices
from utils.paths import file_problem

log = logging.getLogger(__name__)

SQUAD_TASKS = ("squad", "squad_v2")
OFFICIAL_FILES = {
    ("squad", "train"): "train-v1.1.json", ("squad", "dev"): "dev-v1.1.json",
    ("squad_v2", "train"): "train-v2.0.json", ("squad_v2", "dev"): "dev-v2.0.json",
}
HUB_IDS = {"squad": "rajpurkar/squad", "squad_v2": "rajpurkar/squad_v2"}   # the canonical "squad"/"squad_v2"
OFFICIAL_URL = "https://rajpurkar.github.io/SQuAD-explorer/"
MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask")
POSITION_KEYS = ("start_positions", "end_positions")


def check_task(task_name: str) -> str:
    key = task_name.lower().replace("-", "_")
    if key in ("squad_v1", "squad1", "squad_v1.1"):
        key = "squad"
    if key not in SQUAD_TASKS:
        raise DataError(f"unknown SQuAD task '{task_name}'; use one of {', '.join(SQUAD_TASKS)}.")
    return key


# ----------------------------------------------------------------------------- loading

def parse_squad_json(data: dict, source: str = "<json>") -> tuple[list[dict], dict]:
    """Official SQuAD JSON ({"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}) to
    flat examples. Returns (examples, info) where info counts skipped questions, unanswerable
    questions and answers whose answer_start does not point at their text."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{source} is not in the official SQuAD layout (a JSON object with a 'data' list "
                        f"of articles holding 'paragraphs' with 'context' and 'qas').")
    examples, skipped, unanswerable, misaligned = [], 0, 0, 0
    seen_ids = set()
    for a, article in enumerate(data["data"]):
        _expect(article, dict, f"data[{a}]", source)
        title = article.get("title", "")
        for p, paragraph in enumerate(_expect(article.get("paragraphs") or [], list, f"data[{a}].paragraphs", source)):
            where = f"data[{a}].paragraphs[{p}]"
            _expect(paragraph, dict, where, source)
            context = paragraph.get("context")
            for q, qa in enumerate(_expect(paragraph.get("qas") or [], list, f"{where}.qas", source)):
                _expect(qa, dict, f"{where}.qas[{q}]", source)
                _expect(qa.get("answers") or [], list, f"{where}.qas[{q}].answers", source)
                qid, question = qa.get("id"), qa.get("question")
                if not isinstance(context, str) or not context or not qid or not isinstance(question, str) \
                        or not question.strip() or str(qid) in seen_ids:
                    skipped += 1
                    continue
                answers = [] if qa.get("is_impossible") else list(qa.get("answers") or [])
                try:
                    texts = [str(a["text"]) for a in answers]
                    starts = [int(a["answer_start"]) for a in answers]
                except (KeyError, TypeError, ValueError):
                    skipped += 1
                    continue
                if not texts:
                    unanswerable += 1
                misaligned += sum(context[s:s + len(t)] != t for t, s in zip(texts, starts))
                seen_ids.add(str(qid))
                examples.append({"id": str(qid), "title": title, "context": context, "question": question,
                                 "answers": {"text": texts, "answer_start": starts}})
    if not examples:
        raise DataError(f"{source} holds no usable questions ({skipped} skipped).")
    return examples, {"source": source, "version": data.get("version"), "examples": len(examples),
                      "skipped_questions": skipped, "unanswerable": unanswerable,
                      "misaligned_answers": misaligned}


def _expect(value, kind: type, where: str, source: str):
    if not isinstance(value, kind):
        raise DataError(f"{source}: {where} is a {type(value).__name__}, not a JSON "
                        f"{'object' if kind is dict else 'list'}; the file is not in the official SQuAD layout "
                        f"(data[].paragraphs[].qas[].answers[]): fix that entry or download the file again.")
    return value


def read_squad_json(path: str) -> tuple[list[dict], dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}).") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); is it the official SQuAD file, complete?") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}); check the file and its permissions.") from None
    return parse_squad_json(data, path)


def find_squad_file(task_name: str, split: str, data_dir: str) -> str:
    task = check_task(task_name)
    name = OFFICIAL_FILES[(task, split)]
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir '{data_dir}' {'is not a folder' if os.path.exists(data_dir) else 'does not exist'}; point it at the folder holding "
                        f"{OFFICIAL_FILES[(task, 'train')]} and {OFFICIAL_FILES[(task, 'dev')]}.")
    path = os.path.join(data_dir, name)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise DataError(f"--data_dir: {path} {file_problem(path)}; it must be the official SQuAD JSON file.")
    if not os.path.isfile(path):
        other = [n for n in OFFICIAL_FILES.values() if os.path.isfile(os.path.join(data_dir, n))]
        have = f" It holds {', '.join(other)}." if other else ""
        version = "v1.1" if task == "squad" else "v2.0"
        raise DataError(
            f"--data_dir: no {name} for task {task} in {data_dir} (looked for {path}).{have} Put the official "
            f"SQuAD {version} files {OFFICIAL_FILES[(task, 'train')]} and {OFFICIAL_FILES[(task, 'dev')]} "
            f"(from {OFFICIAL_URL}) in --data_dir, or omit --data_dir to load {HUB_IDS[task]} from the "
            f"HuggingFace hub when online.")
    return path


def load_squad_split(task_name: str, split: str, data_dir: str | None = None, path: str | None = None
                     ) -> tuple[list[dict], dict]:
    """Examples of split 'train' or 'dev': from `path`, else from the official file in `data_dir`,
    else from the hub."""
    task = check_task(task_name)
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', not {split!r}")
    if path is None and data_dir:
        path = find_squad_file(task, split, data_dir)
    if path is not None:
        if file_problem(path):
            raise DataError(f"SQuAD {split} file {path} {file_problem(path)}; pass the official SQuAD JSON file.")
        examples, info = read_squad_json(path)
    else:
        examples, info = _load_from_hub(task, split)
    if task == "squad" and info["unanswerable"]:
        log.warning("%s: %d unanswerable questions in a SQuAD v1.1 task; they score 0 with the v1.1 "
                    "metrics (use --task_name squad_v2 for v2.0 data)", info["source"], info["unanswerable"])
    if info["skipped_questions"]:
        log.warning("%s: skipped %d questions with missing fields or duplicate ids",
                    info["source"], info["skipped_questions"])
    if info["misaligned_answers"]:
        log.warning("%s: %d answers whose answer_start does not point at their text",
                    info["source"], info["misaligned_answers"])
    return examples, info


def _load_from_hub(task: str, split: str) -> tuple[list[dict], dict]:
    import datasets  # the hub path only: a multi-second import that offline runs never need
    hub_split = "train" if split == "train" else "validation"
    try:
        ds = datasets.load_dataset(HUB_IDS[task], split=hub_split)
    except Exception as e:  # offline or hub error: the fix is the same
        raise DataError(
            f"could not load {HUB_IDS[task]} ({hub_split}) from the HuggingFace hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}). Offline, pass --data_dir with the official "
            f"files {OFFICIAL_FILES[(task, 'train')]} and {OFFICIAL_FILES[(task, 'dev')]} "
            f"(from {OFFICIAL_URL}).") from None
    examples = []
    unanswerable = 0
    for row in ds:
        answers = {"text": list(row["answers"]["text"]), "answer_start": [int(s) for s in row["answers"]["answer_start"]]}
        unanswerable += not answers["text"]
        examples.append({"id": str(row["id"]), "title": row.get("title", ""), "context": row["context"],
                         "question": row["question"], "answers": answers})
    return examples, {"source": f"hub:{HUB_IDS[task]}/{hub_split}", "version": None, "examples": len(examples),
                      "skipped_questions": 0, "unanswerable": unanswerable, "misaligned_answers": 0}


# ----------------------------------------------------------------------------- preprocessing

def _check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"SQuAD preprocessing needs a fast (Rust) tokenizer for offset mappings, but "
                        f"{type(tokenizer).__name__} is a slow one; save the checkpoint with a tokenizer.json "
                        f"(AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(CKPT)).")


def _tokenize(examples: list[dict], tokenizer, max_length: int, doc_stride: int, offsets: bool):
    """Question + context pairs (context truncated, overflowing windows kept with `doc_stride` overlap)."""
    _check_tokenizer(tokenizer)
    if not 0 <= doc_stride < max_length:
        raise DataError(f"--doc_stride {doc_stride} must be at least 0 and below --max_seq_length {max_length}.")
    pad_on_right = tokenizer.padding_side == "right"
    questions = [ex["question"].lstrip() for ex in examples]   # leading spaces waste window tokens
    contexts = [ex["context"] for ex in examples]
    first, second = (questions, contexts) if pad_on_right else (contexts, questions)
    try:
        enc = tokenizer(first, second, truncation="only_second" if pad_on_right else "only_first",
                        max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=offsets, padding=False)
    except Exception as e:  # e.g. a question too long to leave room for a context window
        raise DataError(
            f"cannot split SQuAD contexts into windows of {max_length} tokens with stride {doc_stride} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}). A question must leave "
            f"more than --doc_stride tokens for the context: raise --max_seq_length or lower --doc_stride.") from None
    return enc, (1 if pad_on_right else 0)


def count_features(examples: list[dict], tokenizer, max_length: int = 384, doc_stride: int = 128,
                   chunk_size: int = 1000) -> list[int]:
    """Number of windows (features) of each example, without keeping the features."""
    counts = []
    for s in range(0, len(examples), chunk_size):
        enc, _ = _tokenize(examples[s:s + chunk_size], tokenizer, max_length, doc_stride, offsets=False)
        counts.extend(np.bincount(enc["overflow_to_sample_mapping"],
                                  minlength=len(examples[s:s + chunk_size])).tolist())
    return counts


def _model_keys(enc, tokenizer) -> list[str]:
    names = getattr(tokenizer, "model_input_names", None) or MODEL_KEYS
    return [k for k in MODEL_KEYS if k in enc and k in names]


def prepare_train_features(examples: list[dict], tokenizer, max_length: int = 384, doc_stride: int = 128
                           ) -> list[dict]:
    """Training features {input_ids, attention_mask[, token_type_ids], start_positions, end_positions,
    example_index}. The positions are the tokens of the first answer's span; they point at the CLS
    token when the question is unanswerable or the answer is not wholly inside the window."""
    enc, context_id = _tokenize(examples, tokenizer, max_length, doc_stride, offsets=True)
    keys = _model_keys(enc, tokenizer)
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        example_index = enc["overflow_to_sample_mapping"][i]
        answers = examples[example_index]["answers"]
        start = end = cls_index
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            sequence_ids = enc.sequence_ids(i)
            context_tokens = [t for t, sid in enumerate(sequence_ids) if sid == context_id]
            if not context_tokens:
                raise DataError(f"SQuAD example '{examples[example_index]['id']}': its context is blank after "
                                f"tokenization (only spaces or characters the tokenizer drops); fix or remove "
                                f"that paragraph.")
            first, last = context_tokens[0], context_tokens[-1]
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                start = first
                while start < len(offsets) and sequence_ids[start] == context_id and offsets[start][0] <= start_char:
                    start += 1
                start -= 1
                end = last
                while end >= first and offsets[end][1] >= end_char:
                    end -= 1
                end += 1
        features.append({**{k: enc[k][i] for k in keys}, "start_positions": start, "end_positions": end,
                         "example_index": example_index})
    return features


def prepare_eval_features(examples: list[dict], tokenizer, max_length: int = 384, doc_stride: int = 128
                          ) -> list[dict]:
    """Evaluation features {input_ids, attention_mask[, token_type_ids], example_id, offset_mapping},
    offset_mapping holding a (start, end) character span of the context per token, None elsewhere."""
    enc, context_id = _tokenize(examples, tokenizer, max_length, doc_stride, offsets=True)
    keys = _model_keys(enc, tokenizer)
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        sequence_ids = enc.sequence_ids(i)
        features.append({
            **{k: enc[k][i] for k in keys},
            "example_id": examples[enc["overflow_to_sample_mapping"][i]]["id"],
            "offset_mapping": [tuple(o) if sid == context_id else None for o, sid in zip(offsets, sequence_ids)],
        })
    return features


def sample_train_features(examples: list[dict], tokenizer, num_samples: int, seed: int,
                          max_length: int = 384, doc_stride: int = 128) -> tuple[list[dict], int]:
    """`num_samples` training features drawn with `seed`, without replacement, from all features of
    `examples` (all of them, shuffled, when there are fewer). Returns (features, total features).

    Only the examples owning a drawn feature are tokenized with offsets, so a full SQuAD training
    set never sits in memory as features.
    """
    counts = count_features(examples, tokenizer, max_length, doc_stride)
    total = int(sum(counts))
    picked = sample_indices(total, num_samples, seed)
    starts = np.concatenate([[0], np.cumsum(counts)])
    owner = np.searchsorted(starts, picked, side="right") - 1          # example of each drawn feature
    needed = sorted(set(owner.tolist()))
    feats = prepare_train_features([examples[e] for e in needed], tokenizer, max_length, doc_stride)
    by_global, windows_seen = {}, {}
    for f in feats:                       # features come in example order, windows in order
        e = needed[f["example_index"]]
        j = windows_seen.get(e, 0)
        windows_seen[e] = j + 1
        by_global[int(starts[e]) + j] = {**f, "example_index": e}
    return [by_global[g] for g in picked], total


def collate_qa(features: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad the model inputs to the longest feature; stack start/end positions when present."""
    longest = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in MODEL_KEYS:
        if key in features[0]:
            pad = pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([f[key] + [pad] * (longest - len(f[key])) for f in features])
    for key in POSITION_KEYS:
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch


def make_qa_batches(features: list[dict], batch_size: int, pad_token_id: int = 0, sort_by_length: bool = False
                    ) -> tuple[list[dict], list[int]]:
    """(batches, order): order[i] is the feature index of the i-th row across the batches."""
    order = longest_first(features) if sort_by_length else list(range(len(features)))
    batches = [collate_qa([features[i] for i in order[s:s + batch_size]], pad_token_id)
               for s in range(0, len(order), batch_size)]
    return batches, order
