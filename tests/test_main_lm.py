"""main.py --task_name causal_lm end to end on a tiny random Llama with grouped-query attention."""
import json
import os

import pytest
import torch

import main
from tests.tiny import save_tiny_checkpoint, tiny_decoder_config

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches and "
         "every river runs to the sea yet the sea is never full").split()


def _text(seed: int, sentences: int) -> str:
    gen = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(sentences):
        idx = torch.randint(0, len(WORDS), (12,), generator=gen).tolist()
        lines.append(" ".join(WORDS[i] for i in idx) + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM
    folder = save_tiny_checkpoint(tmp_path_factory.mktemp("llama"), AutoModelForCausalLM,
                                  lambda vocab: tiny_decoder_config("llama", vocab_size=vocab))
    text = tmp_path_factory.mktemp("text")
    (text / "calib.txt").write_text(_text(0, 80))
    (text / "eval.txt").write_text(_text(1, 40))
    return folder, str(text / "calib.txt"), str(text / "eval.txt")


def test_causal_lm_prunes_saves_and_reloads(tiny_llama, tmp_path):
    ckpt, calib, held_out = tiny_llama
    out = tmp_path / "run"
    code = main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
                      "--constraint", "0.5", "--num_samples", "8", "--max_seq_length", "32", "--batch_size", "4",
                      "--output_dir", str(out), "--save_pruned", "--speed_batch_size", "2", "--speed_seq_len", "16"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["primary_metric"] == "perplexity"
    assert results["metric_before"]["perplexity"] > 1 and results["metric_after"]["perplexity"] > 1
    assert results["mac_ratio"] <= 0.5 + 1e-9
    assert results["data"]["calibration"]["sequences"] == 8
    assert len(results["generations"]["before"]) == len(results["generations"]["after"]) == 3
    saved = results["pruned_model"]
    assert saved["decoder_speed"]["decode_tokens_per_s_pruned"] > 0 and saved["decoder_speed"]["prefill_speedup"] > 0
    assert saved["metric"]["perplexity"] == pytest.approx(results["metric_after"]["perplexity"], rel=1e-4)
    from export.hf_load import load_pruned
    model = load_pruned(saved["path"])
    ids = torch.tensor([[101, 1996, 4248, 2829]])
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 8)
    assert os.path.isfile(out / "head_mask.pt") and torch.load(out / "head_mask.pt").shape == (3, 2)
    # the FFN of 37 channels has fewer than 8 blocks of 32: free widths, recorded with the saved model
    assert json.loads(open(os.path.join(saved["path"], "pruning.json")).read())["width_multiple"] == 1


def test_causal_lm_needs_both_texts(tiny_llama, capsys):
    ckpt, calib, _ = tiny_llama
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--constraint", "0.5"])
    assert exit_info.value.code == 2 and "--eval_file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """The tiny Llama with an FFN of 256 channels: 8 blocks of 32, where the decoder default multiple applies."""
    from transformers import AutoModelForCausalLM

    def config(vocab):
        c = tiny_decoder_config("llama", vocab_size=vocab)
        c.intermediate_size = 256
        return c
    return save_tiny_checkpoint(tmp_path_factory.mktemp("wide"), AutoModelForCausalLM, config)


@pytest.mark.parametrize("flag,multiple", [([], 32), (["--width_multiple", "1"], 1), (["--metric", "params"], 32),
                                           (["--search", "threshold"], 1)])
def test_decoder_default_width_multiple(wide_llama, tiny_llama, tmp_path, flag, multiple):
    """causal_lm keeps FFN widths in multiples of 32 unless told otherwise (or where 32 cannot apply), records
    the multiple in results.json and says so in the log."""
    _, calib, held_out = tiny_llama
    out = tmp_path / "run"
    code = main.main(["--task_name", "causal_lm", "--ckpt_dir", wide_llama, "--calib_file", calib, "--eval_file",
                      held_out, "--constraint", "0.7", "--num_samples", "8", "--max_seq_length", "32",
                      "--batch_size", "4", "--output_dir", str(out), *flag])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    counts = results["neurons_kept_per_layer"]
    assert all(c % multiple == 0 for c in counts), counts
    if multiple == 1:
        assert any(c % 32 for c in counts), counts      # free widths on this model are not all multiples by chance
    assert results["options"].get("width_multiple", 1) == multiple
    assert f"FFN widths: multiples of {multiple}" in (out / "log.txt").read_text()
    assert results["budget_ratio"] <= 0.7 + 1e-9


def test_tiny_ffn_keeps_free_widths_by_default(tiny_llama, tmp_path):
    """An FFN with fewer than 8 blocks of 32 channels (37 here) is not rounded by the default."""
    ckpt, calib, held_out = tiny_llama
    out = tmp_path / "run"
    assert main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
                      "--constraint", "0.5", "--num_samples", "8", "--max_seq_length", "32", "--batch_size", "4",
                      "--output_dir", str(out)]) == 0
    log_text = (out / "log.txt").read_text()
    assert "FFN widths: multiples of 1 (the task's default 32 does not apply: the FFN has 37 channels" in log_text
    assert "width_multiple" not in json.loads((out / "results.json").read_text())["options"]


def test_query_head_units_end_to_end(tiny_llama, tmp_path):
    """--attention_unit query: masks per query head, every layer a valid GQA layer, the saved model equals the
    masked one and reloads; the flag is refused with a search that counts whole groups."""
    ckpt, calib, held_out = tiny_llama
    out = tmp_path / "run"
    code = main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
                      "--constraint", "0.5", "--num_samples", "8", "--max_seq_length", "32", "--batch_size", "4",
                      "--attention_unit", "query", "--output_dir", str(out), "--save_pruned",
                      "--speed_batch_size", "2", "--speed_seq_len", "16"])
    assert code == 0
    head = torch.load(out / "head_mask.pt")
    assert head.shape == (3, 4)
    from prune.query_heads import layer_widths
    layer_widths(head, 2)
    results = json.loads((out / "results.json").read_text())
    assert results["mac_ratio"] <= 0.5 + 1e-9 and results["options"]["attention_unit"] == "query"
    saved = results["pruned_model"]
    assert saved["metric"]["perplexity"] == pytest.approx(results["metric_after"]["perplexity"], rel=1e-4)
    assert json.loads(open(os.path.join(saved["path"], "pruning.json")).read())["attention_unit"] == "query"
    from export.hf_load import load_pruned
    assert load_pruned(saved["path"]).generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3).shape == (1, 6)
    with pytest.raises(SystemExit) as e:
        main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
                   "--constraint", "0.5", "--attention_unit", "query", "--search", "uniform"])
    assert e.value.code == 2
