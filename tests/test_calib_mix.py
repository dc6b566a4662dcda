"""The general calibration mix of causal-LM pruning (issue 31): how many windows come from where, that they are
deterministic, recorded, refused when a source is too small, and that --calib_mix none gives the old sample."""
import json
import os

import pytest
import torch

import main
from dataset.lm_text import (MAX_WINDOW_REUSE, TextDataError, calibration_sequences, mix_counts,
                             mixed_calibration_sequences, tokenize_text)
from tasks.base import DataRequest
from tasks.causal_lm import CALIB_MIX, CALIB_MIX_FRACTION, CAUSAL_LM, mix_sources, prepare_causal_lm
from tests.test_lm_text import WORDS, _corpus
from tests.test_main_lm import tiny_llama  # noqa: F401  (the fixture)
from tests.tiny import word_level_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer(WORDS)


def test_mix_counts_split_the_windows():
    assert mix_counts(128, True, ["a", "b", "c", "d"], 0.5) == {"": 64, "a": 16, "b": 16, "c": 16, "d": 16}
    # the remainder goes to the first mix sources; nothing is lost
    assert mix_counts(10, True, ["a", "b", "c"], 0.5) == {"": 5, "a": 2, "b": 2, "c": 1}
    assert mix_counts(10, False, ["a", "b"], 0.5) == {"a": 5, "b": 5}          # no user text: all from the mix
    assert mix_counts(10, True, [], 0.5) == {"": 10}                           # no mix: all from the user text
    assert mix_counts(10, True, ["a"], 0.0) == {"": 10}
    assert mix_counts(10, True, ["a"], 1.0) == {"a": 10}
    with pytest.raises(ValueError):
        mix_counts(10, True, ["a"], 1.5)


def _texts(n_words=4000):
    return {"": _corpus(n_words, seed=1), "a.txt": _corpus(n_words, seed=2), "b.txt": _corpus(n_words, seed=3)}


def test_mixed_windows_are_deterministic_and_come_from_their_sources(tokenizer):
    texts, counts = _texts(), {"": 6, "a.txt": 3, "b.txt": 3}
    w1, rec1 = mixed_calibration_sequences(texts, counts, tokenizer, seq_len=16, seed=5)
    w2, rec2 = mixed_calibration_sequences(texts, counts, tokenizer, seq_len=16, seed=5)
    w3, _ = mixed_calibration_sequences(texts, counts, tokenizer, seq_len=16, seed=6)
    assert torch.equal(w1, w2) and rec1 == rec2 and not torch.equal(w1, w3)
    assert w1.shape == (12, 16)
    assert {k: v["windows"] for k, v in rec1.items()} == counts
    # every window is a contiguous slice of one source's tokens, and each source gives its count
    streams = {name: tokenize_text(text, tokenizer).tolist() for name, text in texts.items()}
    found = {name: 0 for name in texts}
    for row in w1.tolist():
        owners = [n for n, ids in streams.items()
                  if any(ids[i:i + 16] == row for i in range(len(ids) - 15))]
        assert owners, "a window that is in no source"
        found[owners[0]] += 1
    assert found == counts


def test_one_source_is_exactly_the_old_sample(tokenizer):
    text = _corpus(3000, seed=1)
    old = calibration_sequences(text, tokenizer, 8, 16, seed=3)
    new, record = mixed_calibration_sequences({"": text}, {"": 8}, tokenizer, 16, seed=3)
    assert torch.equal(old, new) and record[""]["windows"] == 8


def test_a_source_too_small_for_its_windows_is_named(tokenizer):
    texts = {"": _corpus(3000, seed=1), "tiny.txt": "the of and to in."}
    with pytest.raises(TextDataError, match=r"tiny\.txt has \d+ tokens, fewer than one window of seq_len=16"):
        mixed_calibration_sequences(texts, {"": 4, "tiny.txt": 4}, tokenizer, 16, seed=0)
    # enough for one window but far too little for many: each token would sit in > MAX_WINDOW_REUSE windows
    short = _corpus(120, seed=4)
    n = tokenize_text(short, tokenizer).numel()
    many = (n * MAX_WINDOW_REUSE) // 16 + 1
    with pytest.raises(TextDataError, match="at most 8 windows"):
        mixed_calibration_sequences({"": short}, {"": many}, tokenizer, 16, seed=0)


def test_prepare_records_what_went_in(tokenizer, tmp_path):
    mix = tmp_path / "mix"
    mix.mkdir()
    (mix / "a.txt").write_text(_corpus(2000, seed=2))
    (mix / "b.txt").write_text(_corpus(2000, seed=3))
    calib, held_out = tmp_path / "calib.txt", tmp_path / "eval.txt"
    calib.write_text(_corpus(2000, seed=1))
    held_out.write_text(_corpus(600, seed=9))

    class Config:
        max_position_embeddings = 64
    data = prepare_causal_lm(str(calib), str(held_out), tokenizer, Config(), 8, 0, 16, 4, calib_mix=str(mix),
                             mix_fraction=0.5)
    rec = data.info["calibration"]
    assert rec["mix"] == str(mix) and rec["mix_fraction"] == 0.5 and rec["sequences"] == 8
    assert {k: v["windows"] for k, v in rec["sources"].items()} == {str(calib): 4, str(mix / "a.txt"): 2,
                                                                   str(mix / "b.txt"): 2}
    assert all(v["tokens"] == v["windows"] * 16 and v["tokens_in_text"] > 0 for v in rec["sources"].values())
    alone = prepare_causal_lm(None, str(held_out), tokenizer, Config(), 8, 0, 16, 4, calib_mix=str(mix))
    assert {k: v["windows"] for k, v in alone.info["calibration"]["sources"].items()} == {
        str(mix / "a.txt"): 4, str(mix / "b.txt"): 4}
    off = prepare_causal_lm(str(calib), str(held_out), tokenizer, Config(), 8, 0, 16, 4)
    assert torch.equal(torch.cat([b["input_ids"] for b in off.sample_batches]),
                       calibration_sequences(calib.read_text(), tokenizer, 8, 16, 0))


def _request(**kw):
    return DataRequest(task_name="causal_lm", num_samples=8, seed=0, max_seq_length=16, eval_file="e.txt", **kw)


def test_the_task_resolves_and_checks_the_mix(tmp_path):
    assert CAUSAL_LM.calibration_mix(_request()) == CALIB_MIX
    assert CAUSAL_LM.calibration_mix(_request(calib_mix="none")) is None
    assert CAUSAL_LM.calibration_mix(_request(calib_mix="NONE")) is None
    assert CAUSAL_LM.check_request(_request()) == []            # the shipped mix alone: no --calib_file needed
    problems = CAUSAL_LM.check_request(_request(calib_mix="none"))
    assert len(problems) == 1 and "nothing to calibrate on" in problems[0]
    problems = CAUSAL_LM.check_request(_request(calib_file="c.txt", calib_mix="none", calib_mix_fraction=0.3))
    assert len(problems) == 1 and "--calib_mix_fraction 0.3 has no mix" in problems[0]
    problems = CAUSAL_LM.check_request(_request(calib_file="c.txt", calib_mix=str(tmp_path / "nope")))
    assert len(problems) == 1 and "is not a folder" in problems[0] and "--calib_mix none" in problems[0]
    (tmp_path / "empty").mkdir()
    problems = CAUSAL_LM.check_request(_request(calib_file="c.txt", calib_mix=str(tmp_path / "empty")))
    assert len(problems) == 1 and "holds no .txt files" in problems[0]


def test_the_shipped_mix_is_there_and_as_recorded():
    from utils.paths import sha256_of
    with open(os.path.join(CALIB_MIX, "PROVENANCE.json")) as f:
        prov = json.load(f)
    texts = mix_sources(CALIB_MIX)
    assert sorted(texts) == sorted(prov["files"]) and len(texts) >= 4
    for name, rec in prov["files"].items():
        assert sha256_of(os.path.join(CALIB_MIX, name)) == rec["sha256"]
        assert rec["licence"]
    assert 0 < CALIB_MIX_FRACTION < 1


def test_main_records_the_mix_and_refuses_a_bad_fraction(tiny_llama, tmp_path, capsys):  # noqa: F811
    ckpt, calib, held_out = tiny_llama
    out = tmp_path / "run"
    code = main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
                      "--constraint", "0.5", "--num_samples", "8", "--max_seq_length", "32", "--batch_size", "4",
                      "--output_dir", str(out), "--calib_mix_fraction", "0.25", "--no_mask_tuning"])
    assert code == 0
    rec = json.loads((out / "results.json").read_text())["data"]["calibration"]
    assert rec["mix"] == CALIB_MIX and rec["mix_fraction"] == 0.25
    assert rec["sources"][calib]["windows"] == 6 and sum(v["windows"] for v in rec["sources"].values()) == 8
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit) as info:
            main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
                       "--constraint", "0.5", "--calib_mix_fraction", bad])
        assert info.value.code == 2 and "--calib_mix_fraction" in capsys.readouterr().err


def test_main_names_a_calibration_file_too_small_for_its_windows(tiny_llama, tmp_path, capsys):  # noqa: F811
    ckpt, _, held_out = tiny_llama
    small = tmp_path / "small.txt"
    small.write_text("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches.\n" * 3)
    code = main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", str(small), "--eval_file",
                      held_out, "--constraint", "0.5", "--num_samples", "64", "--max_seq_length", "32",
                      "--calib_mix", "none", "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and f"--calib_file '{small}'" in err and "64 windows of 32 need at least 256" in err
    assert "--num_samples" in err and "Traceback" not in err
