"""Build the offline causal-LM calibration and evaluation text from the Python 3.11 documentation.

Provenance
----------
- Source: Debian bookworm package ``python3.11-doc`` (version 3.11.2-6+deb12u9, Section doc, arch all), the
  official Python 3.11 documentation as Sphinx HTML under ``/usr/share/doc/python3.11/html``.
- Licence: "Python software and documentation are licensed under the PSF License Agreement" (the docs'
  own license.html; code examples since 3.8.6 are dual PSF / Zero-Clause BSD). Copyright (c) 2001-2023
  Python Software Foundation. The PSF licence permits reproducing and preparing derivative works provided the
  copyright notice is retained; this script records it in ``PROVENANCE.json``.
- Getting it: ``apt-get install python3.11-doc`` (or this script runs ``apt-get download python3.11-doc``
  and unpacks the .deb with ``dpkg-deb -x`` into a temporary folder when the docs are not installed;
  ``--html_dir`` points at an unpacked copy).

What is kept (natural English prose, no code)
---------------------------------------------
- Documents: every ``*.html`` page under ``tutorial/ howto/ faq/ reference/ library/ using/ extending/
  whatsnew/`` (``whatsnew/changelog.html``, a bullet list of issue titles, is left out), 409 pages.
- From each page, only the text of ``<p>`` elements inside ``<div class="body" role="main">``; everything in
  ``<pre>`` (code), ``<table>``, ``<script>``/``<style>`` and the "¶" header links is dropped; whitespace is
  collapsed to single spaces; paragraphs of fewer than 8 words are dropped; at most the first
  ``MAX_DOC_CHARS`` = 20,000 characters of each page are kept (cut at a paragraph end) so that no single
  long page dominates. Paragraphs are joined with a blank line, documents with a blank line too.
- Split by document, deterministic: the sorted page list is shuffled with ``random.Random(0)``; pages are
  taken in that order into eval.txt until it holds >= 300,000 characters, then into calib.txt until it holds
  >= 600,000 characters; the remaining pages are unused. No page is in both files (the page lists are in
  PROVENANCE.json).

Outputs (UTF-8, ``\\n`` line ends), measured on the files built from 3.11.2-6+deb12u9 (token counts with the
SmolLM2-135M tokenizer, no special tokens; rebuilding gives the same bytes):

- ``data/lm/calib.txt``: 63 pages, 602,924 characters, 96,649 words, 138,004 tokens (128 x 256 = 32,768 needed);
  sha256 30ddd36bc282f1e81001bae7554b5bdd721974e8f2a3fef49f3a0d5416915681
- ``data/lm/eval.txt``: 29 pages, 318,101 characters, 51,018 words, 71,734 tokens (280 windows of 256);
  sha256 c69b7df1909454afe57633164de95e32ff139ac26fa63f40546e9b6f95c8cfc9
- ``data/lm/PROVENANCE.json``: package, version, licence, the pages of each split, sizes, sha256.

About 20 s on 2 CPU cores (download 12.6 MB .deb, unpack, parse 92 pages, count tokens).

    python -m scripts.make_lm_text [--html_dir DIR] [--out_dir data/lm] [--tokenizer checkpoints/smollm2-135m] [--force]
"""
from __future__ import annotations

import argparse
import glob
import html.parser
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

from transformers import AutoTokenizer

from utils.paths import sha256_of

log = logging.getLogger("make_lm_text")

DEB_PACKAGE = "python3.11-doc"
INSTALLED_HTML = "/usr/share/doc/python3.11/html"
SECTIONS = ("tutorial", "howto", "faq", "reference", "library", "using", "extending", "whatsnew")
EXCLUDED_PAGES = ("whatsnew/changelog.html",)
MIN_PARAGRAPH_WORDS = 8
MAX_DOC_CHARS = 20_000
EVAL_TARGET_CHARS = 300_000
CALIB_TARGET_CHARS = 600_000
SHUFFLE_SEED = 0
DEFAULT_OUT_DIR = os.path.join("data", "lm")
DEFAULT_TOKENIZER = os.path.join("checkpoints", "smollm2-135m")
LICENCE = ("PSF License Agreement (Python 3.11 documentation; code examples dual PSF / 0BSD). "
           "Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.")


class LMTextSourceError(RuntimeError):
    """A user-fixable problem: the documentation package is missing or unreadable."""


class _ProseParser(html.parser.HTMLParser):
    """Collect the text of <p> elements inside Sphinx's main body div, skipping code, tables and header links."""

    _SKIP_TAGS = ("pre", "table", "script", "style")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_body = False
        self.div_depth = 0
        self.skip_stack: list[str] = []
        self.current: list[str] | None = None
        self.paragraphs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div":
            if not self.in_body and "body" in classes and a.get("role") == "main":
                self.in_body, self.div_depth = True, 0
                return
            if self.in_body:
                self.div_depth += 1
        if not self.in_body:
            return
        if tag in self._SKIP_TAGS or (tag == "a" and "headerlink" in classes):
            self.skip_stack.append(tag)
            return
        if tag == "p" and self.current is None:
            self.current = []

    def handle_endtag(self, tag):
        if not self.in_body:
            return
        if self.skip_stack and self.skip_stack[-1] == tag:
            self.skip_stack.pop()
            return
        if tag == "p" and self.current is not None:
            text = re.sub(r"\s+", " ", "".join(self.current)).strip()
            self.current = None
            if len(text.split()) >= MIN_PARAGRAPH_WORDS:
                self.paragraphs.append(text)
        elif tag == "div":
            if self.div_depth == 0:
                self.in_body = False
            else:
                self.div_depth -= 1

    def handle_data(self, data):
        if self.in_body and self.current is not None and not self.skip_stack:
            self.current.append(data)


def page_prose(path: str) -> str:
    """The kept prose of one HTML page (paragraphs joined by a blank line), cut to MAX_DOC_CHARS."""
    with open(path, encoding="utf-8") as f:
        parser = _ProseParser()
        parser.feed(f.read())
        parser.close()
    kept, size = [], 0
    for para in parser.paragraphs:
        if kept and size + len(para) > MAX_DOC_CHARS:
            break
        kept.append(para)
        size += len(para) + 2
    return "\n\n".join(kept)


def list_pages(html_dir: str) -> list[str]:
    pages = []
    for section in SECTIONS:
        for path in glob.glob(os.path.join(html_dir, section, "**", "*.html"), recursive=True):
            rel = os.path.relpath(path, html_dir).replace(os.sep, "/")
            if rel not in EXCLUDED_PAGES:
                pages.append(rel)
    return sorted(pages)


def split_pages(html_dir: str) -> dict:
    """Deterministic split of whole pages into eval and calib; returns texts and page lists."""
    pages = list_pages(html_dir)
    if not pages:
        raise LMTextSourceError(f"no documentation pages under {html_dir}: is it the python3.11 html folder?")
    order = list(pages)
    random.Random(SHUFFLE_SEED).shuffle(order)
    splits = {"eval": ([], [], EVAL_TARGET_CHARS), "calib": ([], [], CALIB_TARGET_CHARS)}
    names = iter(("eval", "calib"))
    name = next(names)
    for rel in order:
        texts, used, target = splits[name]
        if sum(len(t) for t in texts) >= target:
            name = next(names, None)
            if name is None:
                break
            texts, used, target = splits[name]
        prose = page_prose(os.path.join(html_dir, rel))
        if prose:
            texts.append(prose)
            used.append({"page": rel, "chars": len(prose)})
    out = {}
    for name, (texts, used, target) in splits.items():
        text = "\n\n".join(texts) + "\n"
        if len(text) < target:
            raise LMTextSourceError(f"only {len(text):,} characters for {name} (< {target:,}) from {html_dir}")
        out[name] = {"text": text, "pages": used}
    return out


def deb_version_installed() -> str | None:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", DEB_PACKAGE], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def download_docs(dest: str) -> tuple[str, str, str]:
    """apt-get download + dpkg-deb -x into dest; return (html_dir, version, deb file name)."""
    r = subprocess.run(["apt-get", "download", DEB_PACKAGE], cwd=dest, capture_output=True, text=True)
    debs = glob.glob(os.path.join(dest, f"{DEB_PACKAGE}_*.deb"))
    if r.returncode != 0 or not debs:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise LMTextSourceError(f"apt-get download {DEB_PACKAGE} failed ({tail}); run "
                                f"'apt-get update && apt-get install {DEB_PACKAGE}' or pass --html_dir")
    deb = debs[0]
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True).stdout.strip()
    root = os.path.join(dest, "x")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return os.path.join(root, INSTALLED_HTML.lstrip("/")), version, os.path.basename(deb)


def count_tokens(text: str, tokenizer_dir: str) -> int | None:
    if not tokenizer_dir or not os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
        return None
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def build(out_dir: str = DEFAULT_OUT_DIR, html_dir: str | None = None, tokenizer_dir: str | None = DEFAULT_TOKENIZER,
          force: bool = False) -> dict:
    prov_path = os.path.join(out_dir, "PROVENANCE.json")
    files = {"calib": os.path.join(out_dir, "calib.txt"), "eval": os.path.join(out_dir, "eval.txt")}
    if not force and os.path.isfile(prov_path) and all(os.path.isfile(p) for p in files.values()):
        with open(prov_path) as f:
            prov = json.load(f)
        if all(sha256_of(files[k]) == prov["outputs"][k]["sha256"] for k in files):
            log.info("%s is up to date (sha256 match): skipping (--force rebuilds)", out_dir)
            return {**prov, "skipped": True}
    tmp = None
    try:
        if html_dir:
            version, how = deb_version_installed() or "unknown (--html_dir)", f"--html_dir {html_dir}"
        elif os.path.isdir(INSTALLED_HTML):
            html_dir, version, how = INSTALLED_HTML, deb_version_installed() or "unknown", "installed package"
        else:
            tmp = tempfile.mkdtemp(prefix="pydoc-")
            html_dir, version, deb = download_docs(tmp)
            how = f"apt-get download ({deb}), dpkg-deb -x"
        if not os.path.isdir(html_dir):
            raise LMTextSourceError(f"{html_dir} is not a folder: apt-get install {DEB_PACKAGE} or fix --html_dir")
        splits = split_pages(html_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(out_dir, exist_ok=True)
    outputs = {}
    for name, path in files.items():
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(splits[name]["text"])
        text = splits[name]["text"]
        outputs[name] = {"file": path, "pages": len(splits[name]["pages"]), "chars": len(text),
                         "words": len(text.split()), "bytes": os.path.getsize(path), "sha256": sha256_of(path),
                         "smollm2_tokens": count_tokens(text, tokenizer_dir)}
    eval_pages = {p["page"] for p in splits["eval"]["pages"]}
    calib_pages = {p["page"] for p in splits["calib"]["pages"]}
    assert not eval_pages & calib_pages
    prov = {
        "source": {"debian_package": DEB_PACKAGE, "version": version, "obtained_by": how,
                   "html_root": INSTALLED_HTML, "sections": list(SECTIONS), "excluded": list(EXCLUDED_PAGES),
                   "licence": LICENCE},
        "extraction": {"kept": "<p> text inside div.body[role=main]; no pre/table/script/style/headerlink",
                       "min_paragraph_words": MIN_PARAGRAPH_WORDS, "max_doc_chars": MAX_DOC_CHARS,
                       "split": f"whole pages; sorted list shuffled with random.Random({SHUFFLE_SEED}); eval first "
                                f"to >= {EVAL_TARGET_CHARS} chars, then calib to >= {CALIB_TARGET_CHARS} chars",
                       "tokenizer_for_counts": tokenizer_dir if outputs["eval"]["smollm2_tokens"] else None},
        "outputs": outputs,
        "pages": {name: splits[name]["pages"] for name in files},
    }
    with open(prov_path, "w") as f:
        json.dump(prov, f, indent=2)
    return prov


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out_dir", default=DEFAULT_OUT_DIR)
    p.add_argument("--html_dir", default=None, help=f"an unpacked {INSTALLED_HTML} (default: installed or downloaded)")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer folder for the token counts (optional)")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prov = build(args.out_dir, args.html_dir, args.tokenizer, args.force)
    except LMTextSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, o in prov["outputs"].items():
        print(f"{o['file']}: {o['pages']} pages, {o['chars']:,} chars, {o['words']:,} words, "
              f"{o['smollm2_tokens']} SmolLM2 tokens, sha256 {o['sha256']}"
              + (" (unchanged)" if prov.get("skipped") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
