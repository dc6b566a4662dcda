"""Build the movie-sst2 demo data set from the vaderSentiment 3.3.2 source distribution.

The sdist carries `additional_resources/hutto_ICWSM_2014.tar.gz`, a tarball inside the tarball, whose
`movieReviewSnippets_GroundTruth.txt` holds 10,605 lines `id<TAB>mean rating<TAB>sentence` (UTF-8, CRLF
line ends, no end-of-line after the last line). This script turns it into the SST-2 TSV layout:

- sentences are kept verbatim (no cleanup, no quoting: the GLUE readers use QUOTE_NONE);
- label = 1 if rating > 0 else 0; the 37 zero-rated lines are dropped (10,568 rows remain);
- the rows, in file order, are shuffled with `random.Random(0).shuffle`;
- dev.tsv = the first 2,000, train.tsv = the other 8,568;
- each file: header `sentence<TAB>label`, one `sentence<TAB>label` line per row, `\\n` line ends
  (including after the last row), UTF-8 without BOM.

That reproduces /work/shared/benchmark/movie-sst2/ byte for byte.

    python -m scripts.make_movie_sst2 [--sdist PATH] [--out_dir data/movie-sst2] [--force]
"""
from __future__ import annotations

import argparse
import glob
import io
import logging
import os
import random
import subprocess
import sys
import tarfile
import tempfile

log = logging.getLogger(__name__)

VADER_REQUIREMENT = "vaderSentiment==3.3.2"
GROUND_TRUTH_NAME = "movieReviewSnippets_GroundTruth.txt"
DEFAULT_OUT_DIR = os.path.join("data", "movie-sst2")
DEV_SIZE = 2000
SHUFFLE_SEED = 0
SPLIT_FILES = ("train.tsv", "dev.tsv")


class MovieDataError(ValueError):
    """A user-fixable problem with the source distribution or the output folder."""


def download_sdist(dest_dir: str, timeout_s: int | None = None) -> str:
    """Fetch the vaderSentiment sdist with pip; return the path of the archive.

    timeout_s: pip's socket timeout, with a single retry (fail fast when offline); None keeps pip's settings.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", VADER_REQUIREMENT, "-d", dest_dir]
    if timeout_s is not None:
        cmd += ["--timeout", str(timeout_s), "--retries", "1"]
    log.info("downloading %s: %s", VADER_REQUIREMENT, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    archives = glob.glob(os.path.join(dest_dir, "vaderSentiment-*.tar.gz"))
    if result.returncode != 0 or not archives:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise MovieDataError(f"pip could not download the {VADER_REQUIREMENT} sdist ({' | '.join(tail)}). "
                             f"Download it elsewhere and pass --sdist PATH/vaderSentiment-3.3.2.tar.gz.")
    return archives[0]


def _find_in_tar(tar: tarfile.TarFile, name: str, depth: int = 0) -> bytes | None:
    """The bytes of the member called `name`, looking inside nested .tar.gz/.tgz members too."""
    members = [m for m in tar.getmembers() if m.isfile()]
    for member in members:
        if os.path.basename(member.name) == name:
            return tar.extractfile(member).read()
    if depth >= 2:
        return None
    for member in members:
        if member.name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(fileobj=io.BytesIO(tar.extractfile(member).read())) as inner:
                found = _find_in_tar(inner, name, depth + 1)
            if found is not None:
                return found
    return None


def read_ground_truth(sdist: str, name: str = GROUND_TRUTH_NAME) -> str:
    """The text of movieReviewSnippets_GroundTruth.txt (or another ground-truth file `name`) from the sdist archive."""
    if not os.path.isfile(sdist):
        raise MovieDataError(f"--sdist '{sdist}' is not a file; pass the vaderSentiment-3.3.2.tar.gz archive.")
    try:
        with tarfile.open(sdist) as tar:
            data = _find_in_tar(tar, name)
    except tarfile.TarError as e:
        raise MovieDataError(f"--sdist '{sdist}' is not a readable tar archive ({e}); pass the "
                             f"vaderSentiment-3.3.2.tar.gz source distribution.") from None
    if data is None:
        raise MovieDataError(f"--sdist '{sdist}' holds no {name} (also not in nested tarballs); "
                             f"pass the {VADER_REQUIREMENT} source distribution.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MovieDataError(f"{name} in '{sdist}' is not UTF-8 ({e}); is it the 3.3.2 sdist?") from None


def parse_ground_truth(text: str) -> list[tuple[str, int]]:
    """(sentence, label) in file order; label = rating > 0; zero-rated lines are dropped."""
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise MovieDataError(f"{GROUND_TRUTH_NAME} line {number}: expected 3 tab-separated fields "
                                 f"(id, rating, sentence), got {len(fields)}: {line[:80]!r}")
        try:
            rating = float(fields[1])
        except ValueError:
            raise MovieDataError(f"{GROUND_TRUTH_NAME} line {number}: rating {fields[1]!r} is not a number") from None
        if rating != 0:
            rows.append((fields[2], 1 if rating > 0 else 0))
    return rows


def split_rows(rows: list, dev_size: int = DEV_SIZE, seed: int = SHUFFLE_SEED) -> tuple[list, list]:
    """(train, dev): shuffle a copy with random.Random(seed); dev is the first dev_size rows."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return shuffled[dev_size:], shuffled[:dev_size]


def format_tsv(rows: list[tuple[str, int]]) -> bytes:
    lines = ["sentence\tlabel\n"] + [f"{sentence}\t{label}\n" for sentence, label in rows]
    return "".join(lines).encode("utf-8")


def _write_files_atomically(out_dir: str, contents: dict[str, bytes]) -> None:
    """Write every file to a temporary name in out_dir first, then rename them into place."""
    temps = {}
    try:
        for name, data in contents.items():
            temp = os.path.join(out_dir, f".{name}.{os.getpid()}.tmp")
            temps[name] = temp
            with open(temp, "wb") as f:  # open(), unlike mkstemp, keeps the usual umask permissions
                f.write(data)
        for name, temp in temps.items():
            os.replace(temp, os.path.join(out_dir, name))
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)


def build_movie_sst2(out_dir: str = DEFAULT_OUT_DIR, sdist: str | None = None, force: bool = False) -> str:
    """Write train.tsv and dev.tsv into out_dir and return out_dir.

    sdist: path of vaderSentiment-3.3.2.tar.gz; None downloads it with pip. Existing files are kept
    unless force is true.
    """
    if not force and all(os.path.isfile(os.path.join(out_dir, n)) for n in SPLIT_FILES):
        log.info("%s already holds %s; keeping them (use --force to rebuild)", out_dir, " and ".join(SPLIT_FILES))
        return out_dir
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise MovieDataError(f"--out_dir '{out_dir}' is a file; pass a folder for train.tsv and dev.tsv.")
    with tempfile.TemporaryDirectory() as download_dir:
        text = read_ground_truth(sdist or download_sdist(download_dir))
    rows = parse_ground_truth(text)
    if len(rows) <= DEV_SIZE:
        raise MovieDataError(f"only {len(rows)} rated sentences found; expected 10,568 from {VADER_REQUIREMENT}.")
    train, dev = split_rows(rows)
    os.makedirs(out_dir, exist_ok=True)
    _write_files_atomically(out_dir, {"train.tsv": format_tsv(train), "dev.tsv": format_tsv(dev)})
    log.info("wrote %d train and %d dev rows to %s", len(train), len(dev), out_dir)
    return out_dir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", help="vaderSentiment-3.3.2.tar.gz (default: download it with pip)")
    parser.add_argument("--out_dir", default=DEFAULT_OUT_DIR, help="folder for train.tsv and dev.tsv")
    parser.add_argument("--force", action="store_true", help="rebuild even when the files exist")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        out_dir = build_movie_sst2(args.out_dir, args.sdist, force=args.force)
    except MovieDataError as e:
        sys.exit(f"error: {e}")
    print(f"movie-sst2 data in {out_dir}")


if __name__ == "__main__":
    main()
