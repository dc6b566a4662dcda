import json
import os

import pytest
import torch

import main
from tests.tiny import save_tiny_checkpoint, tiny_config

POSITIVE = ["a charming and affecting journey", "great fun", "wonderful acting and a smart script",
            "a delight from start to finish", "moving and funny", "brilliant"]
NEGATIVE = ["dull and lifeless", "a mess", "boring , predictable and far too long",
            "the worst film of the year", "painfully slow", "flat jokes"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    def config(vocab):
        c = tiny_config("bert", vocab_size=vocab)
        c.id2label, c.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
        return c
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), AutoModelForSequenceClassification, config)


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("glue") / "SST-2"
    folder.mkdir()
    rows = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]
    for name, reps in (("train.tsv", 6), ("dev.tsv", 1)):
        lines = ["sentence\tlabel"] + [f"{s} \t{y}" for s, y in rows * reps]
        (folder / name).write_text("\n".join(lines) + "\n")
    return str(folder.parent)


def test_main_prunes_end_to_end(tiny_ckpt, sst2_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["--task_name", "sst2", "--ckpt_dir", tiny_ckpt, "--data_dir", sst2_dir, "--constraint", "0.5",
            "--num_samples", "40", "--batch_size", "8", "--output_dir", str(out), "--device", "cpu",
            "--eval_stages"]
    assert main.main(argv) == 0
    for name in ("args.json", "versions.json", "log.txt", "head_mask.pt", "neuron_mask.pt", "results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["mac_ratio"] <= 0.5
    assert set(results["metric_stages"]) == {"teacher", "search", "rearrange"}
    assert 0 <= results["metric_after"]["accuracy"] <= 1
    assert {"gradients", "search", "rearrange", "mask_tuning"} <= set(results["seconds"])
    head_mask = torch.load(out / "head_mask.pt")
    assert head_mask.shape == (3, 4) and results["heads_kept_per_layer"] == (head_mask != 0).sum(1).tolist()
    assert json.loads((out / "args.json").read_text())["prune"]["constraint"] == 0.5

    # the same inputs and seed give the same masks
    again = tmp_path / "again"
    assert main.main(argv[:-3] + ["--output_dir", str(again), "--device", "cpu"]) == 0
    assert torch.equal(torch.load(again / "head_mask.pt"), head_mask)
    assert torch.equal(torch.load(again / "neuron_mask.pt"), torch.load(out / "neuron_mask.pt"))

    # a finished run is not overwritten by accident
    assert main.main(argv) == 2
    assert main.main(argv + ["--overwrite"]) == 0


def test_wrong_label_count_is_a_clear_error(tiny_ckpt, tmp_path, capsys):
    folder = tmp_path / "MNLI"
    folder.mkdir()
    for name in ("train.tsv", "dev_matched.tsv"):
        (folder / name).write_text("index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tentailment\n")
    code = main.main(["--task_name", "mnli", "--ckpt_dir", tiny_ckpt, "--data_dir", str(tmp_path),
                      "--constraint", "0.5", "--output_dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "2 output label(s)" in err and "mnli needs 3" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_gradient_batches_hold_the_sample_in_random_batches(tiny_ckpt, sst2_dir):
    from transformers import AutoConfig, AutoTokenizer

    from tasks.glue import prepare_glue
    config = AutoConfig.from_pretrained(tiny_ckpt)
    task = prepare_glue("sst2", sst2_dir, AutoTokenizer.from_pretrained(tiny_ckpt), config, 40, 0, 32, 8)

    def rows(batches):
        return sorted(tuple(ids[m.bool()].tolist()) for b in batches for ids, m in zip(b["input_ids"], b["attention_mask"]))
    assert rows(task.gradient_batches) == rows(task.sample_batches) and len(rows(task.sample_batches)) == 40
    lengths = [int(b["attention_mask"].sum(1).max()) for b in task.sample_batches]
    assert lengths == sorted(lengths, reverse=True)              # tuning batches: longest first
    assert [b["input_ids"].shape for b in task.gradient_batches] != [b["input_ids"].shape for b in task.sample_batches]


def test_the_head_refit_is_recorded_and_can_be_turned_off(tiny_ckpt, sst2_dir, tmp_path):
    from prune.weight_updates import HEAD, load_weight_updates
    base = ["--task_name", "sst2", "--ckpt_dir", tiny_ckpt, "--data_dir", sst2_dir, "--constraint", "0.4",
            "--num_samples", "24", "--batch_size", "8", "--device", "cpu"]
    for extra, expected in (([], True), (["--no_head_refit"], False)):
        out = tmp_path / f"run{len(extra)}"
        assert main.main(base + extra + ["--output_dir", str(out)]) == 0
        updates = load_weight_updates(str(out / "weight_updates.pt"))
        assert ((HEAD, "bert.pooler.dense") in updates) is expected
        events = json.loads((out / "results.json").read_text())["mask_tuning"]
        assert any(e["layer"] == "head" for e in events) is expected
