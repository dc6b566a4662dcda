"""Hostile inputs and faults: every input a user controls fails as one `error: ...` paragraph naming
the input and the fix, exit status 2 (argparse: its usage line and status 2); numerical faults are
errors or logged per-layer fallbacks; an interrupted or killed run leaves nothing that looks finished.

Tiny random models on CPU; the whole file runs in well under a minute.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
from tests.tiny import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = [("a charming and affecting journey", 1), ("dull and lifeless", 0), ("great fun", 1),
             ("a mess", 0), ("moving and funny", 1), ("painfully slow", 0)]
GOOD_TRAIN = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in SENTENCES * 4)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _save_ckpt(folder, tokenizer, qa=False, num_labels=2, edit=None):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    torch.manual_seed(0)
    config = tiny_config("bert", num_labels=num_labels, vocab_size=tokenizer.vocab_size)
    model = (AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification).from_config(config)
    if edit:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer):
    return _save_ckpt(tmp_path_factory.mktemp("ckpt"), tokenizer)


def _glue(root, train=GOOD_TRAIN, dev=GOOD_TRAIN, folder="SST-2", dev_name="dev.tsv"):
    task = root / folder
    task.mkdir(parents=True, exist_ok=True)
    for name, content in (("train.tsv", train), (dev_name, dev)):
        if content is not None:
            (task / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(root)


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    return _glue(tmp_path_factory.mktemp("glue"))


def _argv(ckpt, data_dir, out, *extra, task="sst2", constraint="0.5"):
    return ["--task_name", task, "--ckpt_dir", str(ckpt), "--data_dir", str(data_dir), "--constraint", constraint,
            "--num_samples", "16", "--batch_size", "8", "--device", "cpu", "--output_dir", str(out), *extra]


def run_main(argv, capsys):
    """(exit status, stderr) of main.main, argparse's SystemExit included."""
    capsys.readouterr()
    try:
        code = main.main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_user_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err                   # one paragraph, on one line
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- checkpoint

def _no_config(tmp_path, ckpt):
    (tmp_path / "c").mkdir()
    shutil.copy(os.path.join(ckpt, "model.safetensors"), tmp_path / "c")
    return tmp_path / "c"


def _no_weights(tmp_path, ckpt):
    (tmp_path / "c").mkdir()
    shutil.copy(os.path.join(ckpt, "config.json"), tmp_path / "c")
    return tmp_path / "c"


def _a_file(tmp_path, ckpt):
    (tmp_path / "c").write_text("x")
    return tmp_path / "c"


def _bad_json(tmp_path, ckpt):
    shutil.copytree(ckpt, tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    return tmp_path / "c"


@pytest.mark.parametrize("make, needles", [
    (lambda tmp_path, ckpt: tmp_path / "nowhere", ["--ckpt_dir", "does not exist", "save_pretrained"]),
    (_a_file, ["--ckpt_dir", "is a file, not a folder", "config.json"]),
    (_no_config, ["--ckpt_dir", "has no config.json", "save_pretrained"]),
    (_no_weights, ["--ckpt_dir", "has no weights", "model.safetensors"]),
    (_bad_json, ["cannot read the config", "not a valid JSON", "re-save it"]),
], ids=["missing", "file", "no-config", "no-weights", "bad-config-json"])
def test_unusable_checkpoint_folder_fails_before_any_work(make, needles, ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(make(tmp_path, ckpt), sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, *needles)
    assert not (tmp_path / "out").exists()          # nothing written: it failed before the run folder


def test_unreadable_checkpoint_folder(ckpt, sst2, tmp_path, capsys, monkeypatch):
    # tests run as root, where chmod does not block reads: fake the permission check instead
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == ckpt else real_access(p, mode, **kw))
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "--ckpt_dir", "is not readable", "permissions")


def test_corrupt_weight_file(ckpt, sst2, tmp_path, capsys):
    shutil.copytree(ckpt, tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"\x00" * 64)
    code, err = run_main(_argv(tmp_path / "c", sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "cannot load the weights", "corrupt", "save_pretrained")


def test_weights_that_do_not_match_the_config(ckpt, sst2, tmp_path, capsys):
    shutil.copytree(ckpt, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["intermediate_size"] = 50                      # the FFN weights in the file are 37 wide
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    code, err = run_main(_argv(tmp_path / "c", sst2, tmp_path / "out"), capsys)
    line = assert_user_error(code, err, "do not match its config.json", "intermediate.dense", "[37, 32] in the file",
                             "[50, 32] by config.json")
    assert "above report" not in line                     # not transformers' pointer to a log we silence
    assert not (tmp_path / "out" / "results.json").exists()


def test_checkpoint_with_fewer_layers_than_its_config(ckpt, sst2, tmp_path, capsys):
    shutil.copytree(ckpt, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["num_hidden_layers"] = 4
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    code, err = run_main(_argv(tmp_path / "c", sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "lacks weights", "encoder.layer.3")


def test_label_count_does_not_fit_the_task(ckpt, tmp_path, capsys):
    data = _glue(tmp_path / "glue", folder="MNLI", dev_name="dev_matched.tsv",
                 train="index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tentailment\n",
                 dev="index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tentailment\n")
    code, err = run_main(_argv(ckpt, data, tmp_path / "out", task="mnli"), capsys)
    assert_user_error(code, err, "2 output label(s)", "mnli needs 3", "--task_name")


def test_classification_checkpoint_on_a_qa_task(ckpt, tmp_path, capsys):
    (tmp_path / "squad").mkdir()
    code, err = run_main(_argv(ckpt, tmp_path / "squad", tmp_path / "out", task="squad"), capsys)
    assert_user_error(code, err, "lacks weights for a question-answering model", "qa_outputs",
                      "saved with a sequence-classification head", "GLUE --task_name")


def test_qa_checkpoint_on_a_classification_task(tokenizer, sst2, tmp_path, capsys):
    qa = _save_ckpt(tmp_path / "qa", tokenizer, qa=True)
    code, err = run_main(_argv(qa, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "lacks weights for a sequence-classification model", "classifier",
                      "saved with a question-answering head", "--task_name squad")


def test_unsupported_architecture(tmp_path, sst2, capsys):
    from transformers import GPT2Config
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "model.safetensors").write_bytes(b"never read")
    code, err = run_main(_argv(tmp_path / "gpt2", sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "model_type 'gpt2' is not supported", "bert", "ARCH_TABLE")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer(tokenizer, sst2, tmp_path, capsys):
    folder = _save_ckpt(tmp_path / "c", tokenizer)
    for name in os.listdir(folder):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            os.remove(os.path.join(folder, name))
    code, err = run_main(_argv(folder, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "no tokenizer found", "--model_name")


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("value, needle", [("0", "outside (0, 1)"), ("1", "outside (0, 1)"), ("1.5", "outside (0, 1)"),
                                           ("-0.2", "outside (0, 1)"), ("nan", "outside (0, 1)"),
                                           ("abc", "not a number")])
def test_constraint_outside_0_1_or_not_a_number(value, needle, ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out", constraint=value), capsys)
    assert code == 2
    assert "usage:" in err and "argument --constraint" in err and needle in err and "e.g. 0.5" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, needle", [("0", "positive finite"), ("-1", "positive finite"), ("inf", "positive finite"),
                                           ("nan", "positive finite"), ("x", "not a number")])
def test_ridge_must_be_positive(value, needle, ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out", "--ridge", value), capsys)
    assert code == 2 and "argument --ridge" in err and needle in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, needle", [("0", "must be at least 1"), ("-5", "must be at least 1"),
                                           ("many", "not a whole number")])
def test_num_samples_not_positive(value, needle, ckpt, sst2, tmp_path, capsys):
    argv = _argv(ckpt, sst2, tmp_path / "out")
    argv[argv.index("--num_samples") + 1] = value
    code, err = run_main(argv, capsys)
    assert code == 2 and "argument --num_samples" in err and needle in err


def test_unknown_task(ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out", task="imdb"), capsys)
    assert code == 2 and "argument --task_name" in err and "invalid choice: 'imdb'" in err and "sst2" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("flags", [["--device", "cuda"], ["--device", "cuda:1"], ["--gpu", "0"]])
def test_cuda_without_gpu(flags, ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out") + flags, capsys)
    assert_user_error(code, err, "no CUDA GPU is available", "--device cpu")
    assert not (tmp_path / "out").exists()


def test_device_that_is_not_a_device(ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out") + ["--device", "tpu"], capsys)
    assert_user_error(code, err, "--device 'tpu' is not a device name", "cpu")


# ----------------------------------------------------------------------------- data

NON_UTF8 = GOOD_TRAIN.encode() + b"caf\xe9 cr\xe8me\t1\n"


@pytest.mark.parametrize("files, needles", [
    (dict(train=None), ["--data_dir", "no train.tsv for task sst2", "SST-2/"]),
    (dict(dev=None), ["--data_dir", "no dev.tsv for task sst2"]),
    (dict(train=GOOD_TRAIN.replace("sentence\t", "text\t")), ["column 'sentence' is missing", "['text', 'label']"]),
    (dict(train=""), ["train.tsv is empty", "header row"]),
    (dict(train="sentence\tlabel\n"), ["train.tsv has no usable rows"]),
    (dict(train=GOOD_TRAIN + "fine\t7\n"), ["train.tsv, line 26", "label '7' is not one of ['negative', 'positive']"]),
    (dict(train=GOOD_TRAIN + "fine\t1.5\n"), ["train.tsv, line 26", "label '1.5'"]),
    (dict(train=GOOD_TRAIN + "fine\t-1\n"), ["train.tsv, line 26", "label '-1'"]),
    (dict(dev=GOOD_TRAIN + "fine\tmaybe\n"), ["dev.tsv, line 26", "label 'maybe'", "--task_name"]),
    (dict(train=NON_UTF8), ["train.tsv is not UTF-8 text", "re-save it as UTF-8"]),
], ids=["no-train", "no-dev", "columns", "empty", "header-only", "label-7", "label-1.5", "label--1", "label-word",
        "non-utf8"])
def test_bad_data_files(files, needles, ckpt, tmp_path, capsys):
    data = _glue(tmp_path / "glue", **files)
    code, err = run_main(_argv(ckpt, data, tmp_path / "out"), capsys)
    assert_user_error(code, err, *needles)
    assert not (tmp_path / "out" / "results.json").exists()


def test_data_dir_that_is_missing_or_not_a_folder(ckpt, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, err = run_main(_argv(ckpt, tmp_path / "afile", tmp_path / "out"), capsys)
    assert_user_error(code, err, "--data_dir", "is not a folder", "SST-2/")
    code, err = run_main(_argv(ckpt, tmp_path / "nowhere", tmp_path / "out"), capsys)
    assert_user_error(code, err, "--data_dir", "does not exist", "SST-2/")


def test_bad_squad_files(tokenizer, tmp_path, capsys):
    qa = _save_ckpt(tmp_path / "qa", tokenizer, qa=True)
    data = tmp_path / "squad"
    data.mkdir()
    flags = ["--max_seq_length", "64", "--doc_stride", "16"]
    cases = [
        ({}, ["--data_dir", "no train-v1.1.json for task squad", "dev-v1.1.json"]),
        ({"train-v1.1.json": b"{\"data\": [", "dev-v1.1.json": b"{}"}, ["train-v1.1.json is not valid JSON"]),
        ({"train-v1.1.json": b"[1, 2]"}, ["train-v1.1.json is not in the official SQuAD layout", "'data'"]),
        ({"train-v1.1.json": b"{\"data\": []}"}, ["train-v1.1.json holds no usable questions"]),
        ({"train-v1.1.json": b"\xff\xfe{}"}, ["train-v1.1.json is not UTF-8 text"]),
    ]
    for i, (files, needles) in enumerate(cases):
        for name, content in files.items():
            (data / name).write_bytes(content)
        code, err = run_main(_argv(qa, data, tmp_path / f"out{i}", *flags, task="squad"), capsys)
        assert_user_error(code, err, *needles)
    code, err = run_main(_argv(qa, tmp_path / "nowhere", tmp_path / "outx", *flags, task="squad"), capsys)
    assert_user_error(code, err, "--data_dir", "does not exist", "train-v1.1.json")


def test_rows_with_missing_fields_are_skipped_and_counted_and_big_num_samples_uses_all(ckpt, tmp_path, capsys):
    """Malformed rows (GLUE files in the wild have a few) are skipped with a warning and a count in
    results.json; --num_samples above the training set uses all of it, with a warning."""
    train = GOOD_TRAIN + "no tab on this line\n\t1\nan empty label\t\n"
    data = _glue(tmp_path / "glue", train=train)
    out = tmp_path / "out"
    argv = _argv(ckpt, data, out)
    argv[argv.index("--num_samples") + 1] = "100000"
    code, err = run_main(argv, capsys)
    assert code == 0, err
    info = json.loads((out / "results.json").read_text())["data"]
    assert info["train"]["skipped_rows"] == 3 and info["train"]["rows"] == 24
    assert info["dev"]["skipped_rows"] == 0
    assert info["num_samples_used"] == 24
    log = (out / "log.txt").read_text()
    assert "WARNING" in log and "skipped 3 rows with missing fields" in log
    assert "--num_samples 100000 is larger than the training set (24 rows): using all of it" in log


# ----------------------------------------------------------------------------- latency tables

def test_latency_tables_that_do_not_fit_the_model(ckpt, sst2, tmp_path, capsys):
    good_mha, good_ffn, short, junk = (tmp_path / n for n in ("mha.pt", "ffn.pt", "short.pt", "junk.pt"))
    torch.save(torch.linspace(0, 1, 5), good_mha)            # 4 heads -> counts 0..4
    torch.save(torch.linspace(0, 1, 38), good_ffn)           # 37 neurons -> counts 0..37
    torch.save(torch.linspace(0, 1, 4), short)               # the original tool's 1..N layout
    junk.write_text("not a table")
    lat = ["--metric", "latency"]
    cases = [
        (["--mha_lut", str(short), "--ffn_lut", str(good_ffn)],
         ["--mha_lut has 4 entries", "4 attention heads", "needs 5", "python -m scripts.measure_latency"]),
        (["--mha_lut", str(good_mha), "--ffn_lut", str(good_mha)], ["--ffn_lut has 5 entries", "37 FFN neurons"]),
        (["--mha_lut", str(tmp_path / "none.pt"), "--ffn_lut", str(good_ffn)], ["--mha_lut", "does not exist"]),
        (["--mha_lut", str(good_mha), "--ffn_lut", str(junk)], ["--ffn_lut", "is not a saved latency table"]),
    ]
    for i, (flags, needles) in enumerate(cases):
        code, err = run_main(_argv(ckpt, sst2, tmp_path / f"out{i}") + lat + flags, capsys)
        assert_user_error(code, err, *needles)
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "outx") + lat + ["--mha_lut", str(good_mha)], capsys)
    assert code == 2 and "--metric latency needs --mha_lut and --ffn_lut" in err
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "outy") + ["--lut_fit"], capsys)
    assert code == 2 and "--lut_fit smooths the latency tables of --metric latency" in err


# ----------------------------------------------------------------------------- output folder

def test_output_folder_with_a_finished_run_needs_overwrite(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main(_argv(ckpt, sst2, out, "--save_pruned", "--speed_batch_size", "1", "--speed_seq_len", "8"),
                    capsys)[0] == 0
    assert (out / "pruned_model" / "pruning.json").is_file() and (out / "weight_updates.pt").is_file()
    before = (out / "results.json").read_text()
    code, err = run_main(_argv(ckpt, sst2, out, "--method", "kwon"), capsys)
    assert_user_error(code, err, "already holds a finished run", "--overwrite")
    assert (out / "results.json").read_text() == before              # untouched

    # --overwrite replaces the run and removes what the old one wrote and the new one does not
    (out / "pruned_model.tmp-abcd1234").mkdir()                       # a pruned-model save that was killed
    (out / "pruned_model.tmp-abcd1234" / ".tool-temp").write_text("")
    (out / "photos.tmp-abcd1234").mkdir()                             # the same name pattern, not ours: kept
    assert run_main(_argv(ckpt, sst2, out, "--method", "kwon", "--overwrite"), capsys)[0] == 0
    assert json.loads((out / "results.json").read_text())["method"] == "kwon"
    assert not (out / "weight_updates.pt").exists()                   # lsq only: stale for a kwon run
    assert not (out / "pruned_model").exists() and not (out / "pruned_model.tmp-abcd1234").exists()
    assert (out / "photos.tmp-abcd1234").is_dir()


def test_output_folder_not_writable(ckpt, sst2, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")       # root ignores chmod: a path under a file is never writable
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "afile" / "run"), capsys)
    assert_user_error(code, err, "--output_dir", "is not writable", "choose a folder you can write to")
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "afile"), capsys)
    assert_user_error(code, err, "--output_dir", "is a file, not a folder")


# ----------------------------------------------------------------------------- numerical faults

def test_nan_weight_in_the_checkpoint(tokenizer, sst2, tmp_path, capsys):
    def poison(model):
        model.bert.encoder.layer[1].intermediate.dense.weight[0, 0] = float("nan")
    folder = _save_ckpt(tmp_path / "c", tokenizer, edit=poison)
    code, err = run_main(_argv(folder, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "NaN or inf", "bert.encoder.layer.1.intermediate.dense.weight", "corrupt")
    assert not (tmp_path / "out" / "results.json").exists()


def test_non_finite_gradients_are_a_clear_error(tokenizer, sst2, tmp_path, capsys):
    def overflow(model):      # finite weights whose activations overflow: the loss is NaN
        model.bert.encoder.layer[2].output.LayerNorm.weight.fill_(3e38)
    folder = _save_ckpt(tmp_path / "c", tokenizer, edit=overflow)
    code, err = run_main(_argv(folder, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, "mask gradients are NaN or inf in 2 of 2 sample batches", "loss overflows",
                      "--task_name")
    assert not (tmp_path / "out" / "results.json").exists()


def test_solver_rejects_non_finite_and_overflowing_systems():
    from prune.mask_tuning import solve_damped
    nan = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert solve_damped(nan, torch.ones(2, dtype=torch.float64)) == (None, "the least-squares system has NaN or inf entries")
    huge = torch.full((2, 2), 1e200, dtype=torch.float64)
    scales, why = solve_damped(huge, torch.ones(2, dtype=torch.float64))
    assert scales is None and "ill-conditioned" in why
    assert solve_damped(torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))[0] is None


@pytest.mark.parametrize("method", ["kwon", "lsq"])
def test_non_finite_layer_system_leaves_that_layer_untouched(method, caplog):
    """An FFN whose activations are not finite gives a NaN system: that block keeps its weights/scales,
    with a warning naming the layer; the other layers are tuned."""
    from prune.layer_io import first_layer_inputs
    from prune.masks import full_masks
    from prune.reconstruct import reconstruct_weights
    from prune.mask_tuning import tune_masks
    from tests.tiny import random_batch, tiny_model
    from arch import bind

    model = tiny_model("bert")
    arch = bind(model)
    with torch.no_grad():
        arch.ffn_in(2).weight[0, 0] = float("inf")
    batches = [random_batch(model, seed=s) for s in range(2)]
    teacher = full_masks(arch.num_layers, arch.num_heads, arch.ffn_dim, "cpu")
    student = (teacher[0].clone(), teacher[1].clone())
    student[0][:, 1] = 0
    student[1][:, 20:] = 0
    inputs = first_layer_inputs(model, arch, batches)
    ffn_out_before = arch.ffn_out(2).weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        if method == "kwon":
            head, neuron, report = tune_masks(arch, *teacher, *student, inputs)
            assert torch.equal(neuron[2], student[1][2])                  # layer 2 neurons: left unscaled
            assert not torch.equal(neuron[1], student[1][1])              # layer 1 neurons: tuned
            failed = ("neurons", "failed")
        else:
            updates, report = reconstruct_weights(arch, *teacher, *student, inputs)
            assert (2, "ffn_out") not in updates and (1, "ffn_out") in updates
            failed = ("ffn_out", "failed")
    assert torch.equal(arch.ffn_out(2).weight, ffn_out_before)
    status = {(e["layer"], e["part"]): e["status"] for e in report.events}
    assert status[(2, failed[0])] == failed[1]
    assert status[(1, failed[0])] == "ok" and status[(2, "heads" if method == "kwon" else "attn_out")] == "ok"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("layer 2" in w and ("neurons" in w or "ffn_out" in w) for w in warnings), warnings


@pytest.mark.parametrize("method", ["lsq", "kwon"])
def test_layers_pruned_to_nothing_run_fine(method, ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(_argv(ckpt, sst2, out, "--method", method, constraint="0.01"), capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert 0 in results["heads_kept_per_layer"] and 0 in results["neurons_kept_per_layer"]
    assert any(e["status"] == "empty" for e in results["mask_tuning"])
    assert results["mac_ratio"] <= 0.01


# ----------------------------------------------------------------------------- interrupted and killed runs

@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    """Enough one-row batches that the gradient stage lasts a few seconds."""
    rows = [f"{s} number {i}\t{y}" for i in range(120) for s, y in SENTENCES]
    return _glue(tmp_path_factory.mktemp("slow"), train="sentence\tlabel\n" + "\n".join(rows) + "\n")


def _start_and_signal(ckpt, data, out, sig, *extra):
    """Start `python main.py`, send `sig` once the log shows the gradient stage started; (status, stderr)."""
    argv = _argv(ckpt, data, out, "--num_samples", "720", "--batch_size", "1", "--save_pruned", "--speed_seq_len", "8",
                 *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "main.py"), *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = out / "log.txt"
        deadline = time.monotonic() + 120
        # main.py logs the unpruned metric right before pruning starts with the gradients
        while not (log.is_file() and "unpruned" in log.read_text()):
            assert proc.poll() is None, f"main.py ended early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "main.py never reached the gradient stage"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "main.py finished before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _looks_finished(out):
    pruned = [d for d in out.iterdir() if d.is_dir() and (d / "pruning.json").exists()]
    return (out / "results.json").exists() or bool(pruned)


def test_ctrl_c_exits_130_with_one_line_and_leaves_no_results(ckpt, slow_data, tmp_path):
    out = tmp_path / "out"
    code, err = _start_and_signal(ckpt, slow_data, out, signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    message = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(message) == 1 and "no results.json" in message[0] and str(out) in message[0]
    assert err.rstrip().splitlines()[-1] == message[0]
    assert not _looks_finished(out)
    assert not (out / "head_mask.pt").exists()


def test_killed_rerun_leaves_nothing_that_looks_finished(ckpt, sst2, slow_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main(_argv(ckpt, sst2, out, "--save_pruned", "--speed_batch_size", "1", "--speed_seq_len", "8"),
                    capsys)[0] == 0
    assert _looks_finished(out)
    (out / "log.txt").unlink()        # wait for the new run's log, not the old one
    code, _ = _start_and_signal(ckpt, slow_data, out, signal.SIGKILL, "--overwrite")
    assert code == -signal.SIGKILL
    assert not _looks_finished(out)                      # --overwrite removed the old results and model first
    assert not (out / "head_mask.pt").exists()


def test_inputs_longer_than_the_position_table_are_a_clear_error(ckpt, tmp_path, capsys):
    from transformers import AutoConfig
    positions = AutoConfig.from_pretrained(ckpt).max_position_embeddings
    long_row = "sentence\tlabel\n" + " ".join(["great"] * (positions + 10)) + "\t1\n"
    data = _glue(tmp_path / "glue", dev=GOOD_TRAIN + long_row.split("\n", 1)[1])
    code, err = run_main(_argv(ckpt, data, tmp_path / "out", "--max_seq_length", str(positions + 50)), capsys)
    assert_user_error(code, err, f"--max_seq_length {positions + 50}", f"--max_seq_length {positions} or less")
    assert not (tmp_path / "out" / "results.json").exists()
    # short inputs under a generous --max_seq_length are fine: nothing exceeds the table
    code, err = run_main(_argv(ckpt, _glue(tmp_path / "short"), tmp_path / "out2", "--max_seq_length",
                               str(positions + 50)), capsys)
    assert code == 0, err
