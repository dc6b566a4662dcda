"""The README and docs/ as a newcomer reads them: every relative link resolves, every command shown parses, every
measured number in README.md is in the JSON its line links to, docs/usage.md is what main.py's parser says, and the
README stays a front door (at most 200 lines).

Commands: `python main.py ...` lines go through main.py's parser (then its checks that need no files); `python -m
scripts.X ...` / `benchmarks.X` lines through that module's own parser, where it has a `build_parser()`, else its
main(["--help"]) must exist. Placeholders in capitals (CKPT, RUN/pruned_model) are kept as they are: they are paths,
and parsing does not open them.

Numbers: in README.md, outside code blocks and inline code, every decimal number (28.62, 2.10×, 0.4165) on a line
must equal, at the decimals shown, some number in the JSON files that line links to; a line with such a number and
no JSON link fails. Whole numbers (2 cores, 135M, 200 lines) are names and counts, and arXiv ids and versions
(Python 3.11) are names, not measurements.
"""
import argparse
import importlib
import inspect
import json
import os
import re
import shlex
import sys
from unittest import mock

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(REPO, "README.md")] + sorted(
    os.path.join(REPO, "docs", f) for f in os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])")
IDENTIFIER = re.compile(r"\b(arXiv|Python|version|v)\s*\d+(\.\d+)+")      # names, not measurements


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prose_lines(text):
    """(line number, line) outside fenced and indented code blocks, with inline code removed."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            continue
        yield number, re.sub(r"`[^`]*`", "", line)


def _heading_anchors(path):
    # anchors are made from the heading with its inline code kept as text
    out = set()
    fenced = False
    for line in _text(path).splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower().replace("`", "")
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(doc):
    for number, line in _prose_lines(_text(doc)):
        for target in LINK.findall(line):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            assert os.path.exists(full), f"{os.path.relpath(doc, REPO)}:{number}: {target} does not exist"
            if anchor and full.endswith(".md"):
                assert anchor in _heading_anchors(full), f"{os.path.relpath(doc, REPO)}:{number}: no heading #{anchor}"


def _commands(text):
    """Commands shown in code blocks, continuation lines joined, comments dropped; a shell loop's variable
    (`for task in mrpc stsb; do`) takes its first value."""
    lines, current, loop = [], "", {}
    for line in text.splitlines():
        stripped = line.strip()
        if not (line.startswith("    ") or current):
            continue
        for var, first in re.findall(r"for (\w+) in ([^\s;]+)", stripped):
            loop[var] = first
        for var, first in loop.items():
            stripped = stripped.replace("${" + var + "}", first).replace("$" + var, first)
        stripped = stripped.split("  #")[0].rstrip()
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return [c for c in lines if c.startswith(("python main.py", "python -m scripts.", "python -m benchmarks."))]


def _split(command):
    words = shlex.split(command.replace("...", ""))
    return [w for w in words if w not in ("[", "]") and not w.startswith("[")]


ALL_COMMANDS = [(os.path.relpath(doc, REPO), c) for doc in DOCS for c in _commands(_text(doc))]


def test_the_docs_show_commands():
    assert sum(c.startswith("python main.py") for _, c in ALL_COMMANDS) >= 5
    assert any("export_gguf" in c for _, c in ALL_COMMANDS)


@pytest.mark.parametrize("doc,command", ALL_COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in ALL_COMMANDS])
def test_every_command_shown_parses(doc, command):
    words = _split(command)
    if words[:2] == ["python", "main.py"]:
        import main
        argv = words[2:]
        if "--task_name" not in argv or "--ckpt_dir" not in argv or "--constraint" not in argv:
            pytest.skip("an excerpt of a command (the rest elided), not a whole one")
        main.build_parser().parse_args(argv)
        return
    _parse_only(importlib.import_module(words[2]), words[3:])


class _Parsed(Exception):
    """Raised instead of running a script once its parser has accepted the flags."""


def _parse_only(module, argv):
    """Run module.main only as far as its argument parser: a bad flag is argparse's SystemExit(2)."""
    real = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        real(self, argv, namespace)
        raise _Parsed
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse), \
            mock.patch.object(sys, "argv", [module.__name__, *argv]):
        try:
            module.main(argv) if inspect.signature(module.main).parameters else module.main()
        except _Parsed:
            return
        except SystemExit as e:
            pytest.fail(f"{module.__name__} {' '.join(argv)}: the parser refused it (exit {e.code})")
    pytest.fail(f"{module.__name__}.main returned without parsing its arguments")


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


def _paragraphs(text):
    """(first line number, text) of each prose paragraph, a table row being its own paragraph."""
    start, lines = None, []
    for number, line in _prose_lines(text):
        if not line.strip() or line.startswith(("|", "#")):
            if lines:
                yield start, " ".join(lines)
            start, lines = None, []
            if line.startswith("|"):
                yield number, line
            continue
        start = start or number
        lines.append(line.strip())
    if lines:
        yield start, " ".join(lines)


def test_every_number_in_the_readme_is_in_the_json_its_line_links_to():
    readme = os.path.join(REPO, "README.md")
    checked = 0
    for number, line in _paragraphs(_text(readme)):
        shown = DECIMAL.findall(IDENTIFIER.sub("", line))
        if not shown:
            continue
        files = [t for t in LINK.findall(line) if t.endswith(".json")]
        assert files, f"README.md:{number}: numbers {shown} with no link to the JSON they come from"
        values = [v for f in files for v in _numbers(json.loads(_text(os.path.join(REPO, f))))]
        for text in shown:
            decimals = len(text.split(".")[1])
            assert any(round(v, decimals) == float(text) for v in values), \
                f"README.md:{number}: {text} is in none of {files}"
            checked += 1
    assert checked >= 10


def test_usage_page_is_what_the_parser_says():
    from scripts.make_usage_doc import usage_markdown
    import main
    assert _text(os.path.join(REPO, "docs", "usage.md")) == usage_markdown(main.build_parser()), \
        "docs/usage.md is out of date: run python -m scripts.make_usage_doc"


def test_readme_is_a_front_door():
    text = _text(os.path.join(REPO, "README.md"))
    lines = text.splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:60])
    for needle in ("decoder LLM", "llama.cpp", "bash scripts/demo.sh", "bash scripts/setup.sh && python -m pytest",
                   "--export gguf"):
        assert needle in first_screen, needle


def test_help_groups_are_the_documented_ones():
    import main
    titles = [g.title for g in main.build_parser()._action_groups]
    for group in ("model and data", "budget", "method and ablations", "LLM (--task_name causal_lm)", "evaluation",
                  "output and export", "devices and processes"):
        assert group in titles
