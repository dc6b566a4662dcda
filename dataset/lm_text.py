"""Text for the causal-LM task: loading, calibration windows, evaluation windows, batches.

Offline (the default, and all that CI uses): a plain UTF-8 text file, or a folder of ``.txt`` files, e.g.
``data/lm/calib.txt`` and ``data/lm/eval.txt`` built by ``python -m scripts.make_lm_text`` from the Python 3.11
documentation (PSF licence; provenance in ``data/lm/PROVENANCE.json``).

Online (kept for users with hub access; never exercised offline): ``wikitext2`` (datasets ``wikitext`` /
``wikitext-2-raw-v1``, documents joined with blank lines, the SparseGPT/Wanda/FLAP protocol) and ``c4``
(``allenai/c4``: the first train shard for calibration, the first validation shard for evaluation, first 1,100
documents, as in SparseGPT and Wanda).

Protocols
- calibration: ``calibration_sequences`` draws ``num_sequences`` windows of ``seq_len`` tokens at uniformly random
  start offsets of the whole tokenized text (``torch.Generator().manual_seed(seed)``: the same windows for the same
  text, tokenizer and seed on any machine); windows may overlap, as in Wanda/FLAP's ``get_loaders``.
- a mix: ``mixed_calibration_sequences`` draws ``counts[name]`` such windows from each of several texts (the user's
  file and the general mix of data/calib_mix; ``mix_counts`` says how many from each) and shuffles them together.
- evaluation: ``evaluation_sequences`` cuts the tokenized text into consecutive, non-overlapping windows of
  ``seq_len`` tokens and drops the incomplete tail (``n = tokens // seq_len``), the standard WikiText-2
  perplexity protocol. Text is tokenized with ``add_special_tokens=False`` (no BOS per window).
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch

from utils.errors import UserError

HUB_SOURCES = ("wikitext2", "c4")
_BINARY_SNIFF_BYTES = 8192


class TextDataError(UserError):
    """A user-fixable problem with causal-LM text: names the path and how to fix it."""


_FIX = ("build the offline text with `python -m scripts.make_lm_text` (writes data/lm/calib.txt and "
        "data/lm/eval.txt), or pass a UTF-8 .txt file / a folder of .txt files, or `wikitext2` / `c4` when online")


def _read_text_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise TextDataError(f"cannot read {path}: {e.strerror}; {_FIX}") from e
    if b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
        raise TextDataError(f"{path} looks binary (NUL bytes), not plain text; {_FIX}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TextDataError(f"{path} is not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                            f"re-encode it, e.g. `iconv -f latin1 -t utf-8`, or {_FIX}") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load_text(path: str, split: str = "validation", max_documents: int | None = None) -> str:
    """Text of a UTF-8 file, of all ``*.txt`` in a folder (sorted by name, joined by a blank line), or of a hub set.

    path: a file, a folder, or one of ``HUB_SOURCES`` (``wikitext2``/``c4``; needs network and ``datasets``;
    ``split``: ``train`` for calibration, ``validation``/``test`` for evaluation; ``max_documents`` caps c4).
    Raises TextDataError (a ValueError) naming the path when it is missing, empty, binary or not UTF-8.
    """
    path = os.fspath(path)
    if path in HUB_SOURCES and not os.path.exists(path):
        return load_hub_text(path, split=split, max_documents=max_documents)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".txt") and os.path.isfile(os.path.join(path, n)))
        if not names:
            raise TextDataError(f"the folder {path} holds no .txt files; {_FIX}")
        parts = [_read_text_file(os.path.join(path, n)).strip("\n") for n in names]
        text = "\n\n".join(p for p in parts if p.strip())
    elif os.path.isfile(path):
        text = _read_text_file(path)
    else:
        raise TextDataError(f"no such file or folder: {path}; {_FIX}")
    if not text.strip():
        raise TextDataError(f"{path} is empty (no text); {_FIX}")
    return text


def load_hub_text(name: str, split: str = "validation", max_documents: int | None = None) -> str:
    """WikiText-2 raw or C4 from the hub (online only). Not used offline or in CI."""
    try:
        from datasets import load_dataset  # the hub path only: a multi-second import offline runs never need
    except ImportError as e:  # pragma: no cover - datasets is in requirements
        raise TextDataError(f"{name}: the `datasets` package is needed for hub text ({e})") from e
    try:
        if name == "wikitext2":
            hub_split = "validation" if split == "validation" else split
            ds = load_dataset("wikitext", "wikitext-2-raw-v1", split=hub_split)
            texts = ds["text"]
            if max_documents is not None:
                texts = texts[:max_documents]
            return "\n\n".join(texts)
        if name == "c4":
            if split == "train":
                files = {"train": "en/c4-train.00000-of-01024.json.gz"}
            else:
                files, split = {"validation": "en/c4-validation.00000-of-00008.json.gz"}, "validation"
            ds = load_dataset("allenai/c4", data_files=files, split=split)
            n = len(ds) if max_documents is None else min(max_documents, len(ds))
            if split == "validation" and max_documents is None:
                n = min(1100, len(ds))
            return " ".join(ds.select(range(n))["text"])
    except TextDataError:
        raise
    except Exception as e:  # network / hub errors: say what to do offline
        raise TextDataError(f"could not load {name!r} ({split}) from the hub ({type(e).__name__}: {e}); "
                            f"offline, {_FIX}") from e
    raise TextDataError(f"unknown hub text {name!r}: use one of {HUB_SOURCES}")


def tokenize_text(text, tokenizer) -> torch.Tensor:
    """1-D LongTensor of the token ids of ``text`` (no special tokens). A 1-D tensor/list of ids passes through."""
    if isinstance(text, torch.Tensor):
        ids = text.reshape(-1).long()
    elif isinstance(text, (list, tuple)):
        ids = torch.tensor(text, dtype=torch.long)
    else:
        if not isinstance(text, str) or not text.strip():
            raise TextDataError("the text is empty: nothing to tokenize; " + _FIX)
        enc = tokenizer(text, add_special_tokens=False, verbose=False)
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
    return ids


def leading_tokens(tokenizer) -> list[int]:
    """[BOS] when the tokenizer starts every text with it (Gemma, Llama 2/3: their models always saw it first and
    are far off without it), else []. Windows then start with it and hold one text token less."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a").input_ids
    return [int(bos)] if ids and ids[0] == bos else []


def _with_leading(windows: torch.Tensor, prefix: list[int]) -> torch.Tensor:
    if not prefix:
        return windows
    head = torch.tensor(prefix, dtype=windows.dtype).expand(windows.shape[0], len(prefix))
    return torch.cat([head, windows], dim=1).contiguous()


def _text_len(seq_len: int, prefix: list[int]) -> int:
    if seq_len <= len(prefix):
        raise ValueError(f"seq_len={seq_len} leaves no text after the tokenizer's leading token; use seq_len >= 2")
    return seq_len - len(prefix)


def calibration_sequences(text, tokenizer, num_sequences: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """LongTensor [num_sequences, seq_len] of random windows of the tokenized text, deterministic per seed.

    ``text``: a string (tokenized here) or a 1-D tensor of ids. Raises TextDataError when the text has fewer
    than ``seq_len`` tokens (one window), saying how many are needed. A tokenizer that starts texts with BOS gets
    it at the start of every window (`leading_tokens`).
    """
    if num_sequences < 1 or seq_len < 1:
        raise ValueError(f"num_sequences and seq_len must be >= 1 (got {num_sequences}, {seq_len})")
    prefix = leading_tokens(tokenizer)
    seq_len = _text_len(seq_len, prefix)
    ids = tokenize_text(text, tokenizer)
    n = ids.numel()
    if n < seq_len:
        raise TextDataError(f"the calibration text has {n:,} tokens, fewer than one window of seq_len={seq_len} "
                            f"(need at least {seq_len:,}; {num_sequences * seq_len:,} for {num_sequences} "
                            f"non-overlapping windows); use more text or shorter windows")
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, n - seq_len + 1, (num_sequences,), generator=gen)
    offsets = starts[:, None] + torch.arange(seq_len)[None, :]
    return _with_leading(ids[offsets].contiguous(), prefix)


def evaluation_sequences(text, tokenizer, seq_len: int, max_sequences: int | None = None) -> torch.Tensor:
    """LongTensor [n, seq_len] of consecutive non-overlapping windows (tail dropped), first ``max_sequences`` only;
    each starts with BOS when the tokenizer starts texts with it (then the windows hold seq_len - 1 text tokens)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1 (got {seq_len})")
    prefix = leading_tokens(tokenizer)
    seq_len = _text_len(seq_len, prefix)
    ids = tokenize_text(text, tokenizer)
    n = ids.numel() // seq_len
    if n == 0:
        raise TextDataError(f"the evaluation text has {ids.numel():,} tokens, fewer than one window of "
                            f"seq_len={seq_len}; use more text or shorter windows")
    if max_sequences is not None:
        if max_sequences < 1:
            raise ValueError(f"max_sequences must be >= 1 or None (got {max_sequences})")
        n = min(n, int(max_sequences))
    return _with_leading(ids[: n * seq_len].view(n, seq_len).clone(), prefix)


def lm_batches(seqs: torch.Tensor | Sequence[torch.Tensor], batch_size: int) -> list[dict]:
    """Split [n, seq_len] windows into batches {input_ids, attention_mask, labels}; labels = input_ids (HF shifts)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if not isinstance(seqs, torch.Tensor):
        seqs = torch.stack(list(seqs))
    if seqs.dim() != 2:
        raise ValueError(f"expected windows of shape [n, seq_len], got {tuple(seqs.shape)}")
    batches = []
    for i in range(0, seqs.shape[0], batch_size):
        ids = seqs[i:i + batch_size].long()
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return batches


def token_count(batches: Iterable[dict]) -> int:
    """Number of predicted tokens in the batches (seq_len - 1 per window, masked positions excluded)."""
    total = 0
    for b in batches:
        labels = b["labels"][:, 1:]
        keep = labels != -100
        if "attention_mask" in b:
            keep = keep & b["attention_mask"][:, 1:].bool()
        total += int(keep.sum())
    return total


MAX_WINDOW_REUSE = 8   # a source must hold at least windows x seq_len / this many tokens
SOURCE_SEED_STEP = 7919   # source i of a mix draws its windows with seed + i x this (source 0: the seed itself)


def mix_counts(num_sequences: int, user: bool, mix_names: Sequence[str], mix_fraction: float) -> dict[str, int]:
    """How many calibration windows each source gives: the user's text (key '') num_sequences x (1 - mix_fraction),
    rounded; the rest spread evenly over the mix sources in their order (the first ones take the remainder).
    Without a user text every window comes from the mix; without mix sources every window from the user's text."""
    if not 0.0 <= mix_fraction <= 1.0:
        raise ValueError(f"mix_fraction must be in [0, 1] (got {mix_fraction})")
    if not user and not mix_names:
        raise ValueError("no calibration source: neither a text nor mix sources")
    n_mix = num_sequences if not user else (round(num_sequences * mix_fraction) if mix_names else 0)
    counts = {"": num_sequences - n_mix} if user else {}
    for i, name in enumerate(mix_names):
        counts[name] = n_mix // len(mix_names) + (1 if i < n_mix % len(mix_names) else 0)
    return {k: v for k, v in counts.items() if v > 0}


def mixed_calibration_sequences(texts: dict[str, object], counts: dict[str, int], tokenizer, seq_len: int,
                                seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Calibration windows drawn from several texts: counts[name] random windows of texts[name] each (the same
    protocol as calibration_sequences, source i with seed + SOURCE_SEED_STEP x i), rows shuffled together with
    ``seed`` (one source alone: calibration_sequences' windows and order, as before the mix existed).
    Returns the [sum(counts), seq_len] windows and {name: {"windows", "tokens_in_text"}}.

    Raises TextDataError naming the source when it holds fewer than one window or fewer than
    windows x seq_len / MAX_WINDOW_REUSE tokens (each token would sit in more than that many windows on average:
    the sample would repeat a handful of sentences)."""
    parts, record = [], {}
    for i, (name, k) in enumerate(counts.items()):
        ids = tokenize_text(texts[name], tokenizer)
        need = max(seq_len, -(-k * seq_len // MAX_WINDOW_REUSE))
        if ids.numel() < seq_len:
            raise TextDataError(f"{name or 'the calibration text'} has {ids.numel():,} tokens, fewer than one window "
                                f"of seq_len={seq_len} tokens: give more text, or shorter windows")
        if ids.numel() < need:
            raise TextDataError(f"{name or 'the calibration text'} has {ids.numel():,} tokens; {k} windows of "
                                f"{seq_len} need at least {need:,} (each token in at most {MAX_WINDOW_REUSE} windows "
                                f"on average): give more text, or fewer or shorter windows")
        parts.append(calibration_sequences(ids, tokenizer, k, seq_len, seed=int(seed) + SOURCE_SEED_STEP * i))
        record[name] = {"windows": k, "tokens_in_text": int(ids.numel())}
    if len(parts) == 1:      # one source: exactly calibration_sequences' windows, in its order
        return parts[0], record
    windows = torch.cat(parts)
    order = torch.randperm(windows.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    return windows[order].contiguous(), record
