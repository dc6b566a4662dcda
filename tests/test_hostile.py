"""Nothing silently wrong (issue 26): each case found by trying to break the tool, as a test of the exit
status, the one message (it names the input and the fix) and the files (byte-identical, modes, which
run id a folder holds). Every place a second process could replace what a first one placed, every
config.json field that changes the loss, every flag that reaches a tokenizer or a buffer unchecked.

main.py is driven through main.main([...]) or a real subprocess; the few internals these tests need are
imported here at the top, so that they are easy to re-point when modules move.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import main
import export.hf_folder as pruned_io
from export.hf_load import load_pruned
from tests.test_errors import _argv, _glue, _save_ckpt, assert_user_error, run_main
from tests.test_main_lm import _text
from tests.test_safety import SAVE, _env, _wait_for_log, ckpt, slow_data, snapshot, sst2  # noqa: F401  (fixtures)
from tests.tiny import save_tiny_checkpoint, tiny_config, tiny_decoder_config
from export.hf_folder import PrunedModelError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = [("a charming and affecting journey", 1), ("dull and lifeless", 0), ("great fun", 1),
             ("a mess", 0), ("moving and funny", 1), ("painfully slow", 0)]

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def pruned(ckpt, sst2, tmp_path_factory):
    """A run folder with a saved pruned model, made once."""
    out = tmp_path_factory.mktemp("pruned") / "out"
    code = main.main(_argv(ckpt, sst2, out, *SAVE))
    assert code == 0
    return out


def _popen(argv, prelude=""):
    """main.py in a real process (stdout to /dev/null, stderr kept)."""
    code = f"import sys; sys.path.insert(0, {REPO!r}); {prelude}\nimport main; sys.exit(main.main())"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- 1. two runs, one --save_pruned

def test_two_processes_sharing_one_save_pruned_target(ckpt, slow_data, sst2, tmp_path):
    """Both real processes get the same absolute --save_pruned: the second is refused while the first
    works, and the folder ends up holding the first run's model, the one its results.json names."""
    target = tmp_path / "shared_model"
    first_out, second_out = tmp_path / "a", tmp_path / "b"
    first = _popen(_argv(ckpt, slow_data, first_out, "--num_samples", "720", "--batch_size", "1",
                         "--save_pruned", target, *SAVE[1:]))
    try:
        _wait_for_log(first, first_out / "log.txt")
        second = _popen(_argv(ckpt, sst2, second_out, "--constraint", "0.4", "--save_pruned", target, *SAVE[1:],
                              constraint="0.4"))
        _, err = second.communicate(timeout=180)
        assert second.returncode == 2, err
        line = assert_user_error(2, err, f"--save_pruned '{target}'", "in use by another run", f"pid {first.pid}",
                                 str(first_out), "--overwrite", "another --save_pruned")
        assert "Traceback" not in err, line
        assert not (second_out / "results.json").exists()
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    results = json.loads((first_out / "results.json").read_text())
    assert json.loads((target / "pruning.json").read_text())["run_id"] == results["pruned_model"]["run_id"]
    assert not (tmp_path / "shared_model.lock").exists()


def test_model_placed_by_another_process_meanwhile_is_not_replaced(ckpt, sst2, tmp_path, capsys, monkeypatch):
    """A process that ignores the lock (an older version of the tool, a copy by hand) placed a model in the
    target while the run worked: the run fails at place time and leaves that model alone."""
    target = tmp_path / "model"
    real = pruned_io.save_pruned

    def save_then_intrude(*a, **k):
        info = real(*a, **k)
        target.mkdir()
        (target / "pruning.json").write_text(json.dumps({"format": pruned_io.FORMAT, "run_id": "intruder"}))
        return info
    monkeypatch.setattr(main, "save_pruned", save_then_intrude)     # main.py calls the name it imported
    out = tmp_path / "out"
    code, err = run_main(_argv(ckpt, sst2, out, "--save_pruned", str(target), *SAVE[1:]), capsys)
    assert_user_error(code, err, f"--save_pruned '{target}'", "changed while this run was working",
                      "'intruder'", "not replaced", "--overwrite")
    assert json.loads((target / "pruning.json").read_text())["run_id"] == "intruder"
    assert sorted(p.name for p in target.iterdir()) == ["pruning.json"]
    assert not (out / "results.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock")]


def test_finished_model_in_shared_target_needs_overwrite(pruned, ckpt, sst2, tmp_path, capsys):
    """The sequential sibling: a second run later finds the first one's model and refuses without --overwrite."""
    target = _copy_model(pruned / "pruned_model", tmp_path / "model")
    before = snapshot(target)
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out", "--save_pruned", str(target), *SAVE[1:]), capsys)
    assert_user_error(code, err, "already holds a pruned model", "--overwrite")
    assert snapshot(target) == before


# ----------------------------------------------------------------------------- 2. a non-causal "causal LM"

@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "calib.txt").write_text(_text(0, 80))
    (folder / "eval.txt").write_text(_text(1, 40))
    (folder / "short.txt").write_text("the quick fox.\n")
    return folder


def _lm_argv(ckpt, texts, out, calib="calib.txt", evaluation="eval.txt", *extra):
    return ["--task_name", "causal_lm", "--ckpt_dir", str(ckpt), "--calib_file", str(texts / calib),
            "--eval_file", str(texts / evaluation), "--constraint", "0.5", "--num_samples", "8",
            "--max_seq_length", "32", "--batch_size", "4", "--device", "cpu", "--output_dir", str(out), *extra]


def test_masked_lm_encoder_as_causal_lm_is_refused(texts, tmp_path, capsys):
    from transformers import AutoModelForMaskedLM
    bert = save_tiny_checkpoint(tmp_path / "bert_mlm", AutoModelForMaskedLM,
                                lambda vocab: tiny_config("bert", vocab_size=vocab))
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(bert, texts, out), capsys)
    assert_user_error(code, err, bert, "is not a causal language model", "change with later tokens",
                      "is_decoder false", "decoder-only")
    assert not (out / "results.json").exists()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM
    return save_tiny_checkpoint(tmp_path_factory.mktemp("llama"), AutoModelForCausalLM,
                                lambda vocab: tiny_decoder_config("llama", vocab_size=vocab))


def test_real_decoder_passes_the_causality_probe(tiny_llama):
    from utils.checkpoint import load_model
    load_model(tiny_llama, "causal_lm")               # no error


# ----------------------------------------------------------------------------- 3. flags that reach a tokenizer or buffer

@pytest.mark.parametrize("flags, needle", [
    (["--max_seq_length", "100000000000000000000"], "argument --max_seq_length"),
    (["--doc_stride", "100000000000000000000"], "argument --doc_stride"),
    (["--speed_seq_len", "100000000000000000000"], "argument --speed_seq_len"),
    (["--num_samples", "100000000000000000000"], "argument --num_samples"),
    (["--batch_size", "100000000000000000000"], "argument --batch_size"),
    (["--speed_batch_size", "100000000000000000000"], "argument --speed_batch_size"),
    (["--eval_sequences", "100000000000000000000"], "argument --eval_sequences"),
    (["--save_pruned", "--speed_batch_size", "100000", "--speed_seq_len", "64"], "--speed_batch_size 100000 x"),
], ids=["max-seq-length", "doc-stride", "speed-seq-len", "num-samples", "batch-size", "speed-batch-size",
        "eval-sequences", "speed-tokens"])
def test_huge_numbers_are_refused_before_the_tokenizer(flags, needle, ckpt, sst2, tmp_path, capsys):
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out", *flags), capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert "larger than" in err or "lower --speed_batch_size" in err, err
    assert not (tmp_path / "out").exists()


def test_huge_causal_lm_sample_is_refused(tiny_llama, texts, tmp_path, capsys):
    argv = _lm_argv(tiny_llama, texts, tmp_path / "out")
    argv[argv.index("--num_samples") + 1] = "2000000000"
    code, err = run_main(argv, capsys)
    assert_user_error(code, err, "--num_samples 2000000000 x --max_seq_length 32", "lower --num_samples")


# ----------------------------------------------------------------------------- 4. config.json fields that change the loss

def _edited(ckpt, tmp_path, **changes):
    folder = tmp_path / "c"
    shutil.copytree(ckpt, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("changes, task, needles", [
    (dict(problem_type="multi_label_classification"), "sst2",
     ["problem_type 'multi_label_classification'", "single-label-classification", '"problem_type": '
      '"single_label_classification"', "--task_name"]),
    (dict(problem_type="regression"), "sst2", ["problem_type 'regression'", "single_label_classification"]),
    (dict(problem_type="multi_label_classification", num_labels=1, id2label={"0": "LABEL_0"},
          label2id={"LABEL_0": 0}), "stsb", ["problem_type 'multi_label_classification'", '"regression"']),
    (dict(return_dict=False), "sst2", ["return_dict: false", "changes what the model returns", "set it to true"]),
    (dict(torchscript=True), "sst2", ["torchscript: true", "set it to false"]),
], ids=["multi-label-on-sst2", "regression-on-sst2", "multi-label-on-stsb", "return-dict", "torchscript"])
def test_config_fields_that_change_the_loss(changes, task, needles, ckpt, tmp_path, capsys):
    folder = _edited(ckpt, tmp_path, **changes)
    if task == "stsb":
        header = "index\tgenre\tfilename\tyear\tsentence1\tsentence2\tscore\n"
        rows = "".join(f"{i}\tg\t0\t0\t{s}\t{s}\t{i % 5}\n" for i, (s, _) in enumerate(SENTENCES * 3))
        data = _glue(tmp_path / "glue", train=header + rows, dev=header + rows, folder="STS-B")
    else:
        data = _glue(tmp_path / "glue")
    before = snapshot(folder)
    code, err = run_main(_argv(folder, data, tmp_path / "out", task=task), capsys)
    assert_user_error(code, err, f"{folder}/config.json", *needles)
    assert snapshot(folder) == before and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 5. Ctrl-C during the imports

INTERRUPT_IMPORT = """
import importlib.abc, sys
class _Stop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "transformers":
            raise KeyboardInterrupt
sys.meta_path.insert(0, _Stop())
"""


def test_ctrl_c_during_the_imports_is_one_line(ckpt, sst2, tmp_path):
    proc = _popen(_argv(ckpt, sst2, tmp_path / "out"), INTERRUPT_IMPORT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == [err.strip().splitlines()[-1]], err
    assert err.strip().startswith("interrupted:") and "run the same command again" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_real_ctrl_c_soon_after_start(delay, ckpt, sst2, tmp_path):
    proc = subprocess.Popen([sys.executable, "main.py", *_argv(ckpt, sst2, tmp_path / "out")], cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:"), err
    assert not (tmp_path / "out" / "results.json").exists()


# ----------------------------------------------------------------------------- 6. a pruned folder as --ckpt_dir

def test_pruned_folder_as_ckpt_dir_says_it_is_already_pruned(pruned, sst2, tmp_path, capsys):
    folder = str(pruned / "pruned_model")
    before = snapshot(folder)
    code, err = run_main(_argv(folder, sst2, tmp_path / "out"), capsys)
    line = assert_user_error(code, err, folder, "already pruned", "pruning.json", "original fine-tuned checkpoint",
                             "load_pruned")
    assert "restore the one saved with these weights" not in line
    assert snapshot(folder) == before and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 7. text shorter than one window

@pytest.mark.parametrize("which", ["calib", "eval"])
def test_text_shorter_than_one_window_names_the_file_and_the_flag(which, tiny_llama, texts, tmp_path, capsys):
    calib, evaluation = ("short.txt", "eval.txt") if which == "calib" else ("calib.txt", "short.txt")
    code, err = run_main(_lm_argv(tiny_llama, texts, tmp_path / "out", calib, evaluation), capsys)
    flag = "--calib_file" if which == "calib" else "--eval_file"
    line = assert_user_error(code, err, f"{flag} '{texts / 'short.txt'}'", "fewer than one window",
                             "--max_seq_length 32", "a smaller --max_seq_length")
    assert "--seq_len" not in line


# ----------------------------------------------------------------------------- 8. a stale lock with a live pid

@pytest.fixture
def unrelated_process():
    proc = subprocess.Popen(["sleep", "300"])
    time.sleep(0.2)
    yield proc
    proc.kill()
    proc.wait()


def test_lock_older_than_the_live_process_with_its_pid_is_taken_over(unrelated_process, ckpt, sst2, tmp_path,
                                                                     capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": unrelated_process.pid, "host": socket.gethostname(),
                                              "started": "2024-01-01T00:00:00+0000", "run_id": "old"}))
    code, err = run_main(_argv(ckpt, sst2, out), capsys)
    assert code == 0, err
    assert "whose pid now belongs to a process started later" in (out / "log.txt").read_text()


def test_lock_with_a_live_pid_says_how_to_clear_it(unrelated_process, ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / "run.lock"
    lock.write_text(json.dumps({"pid": unrelated_process.pid, "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": "r"}))
    before = snapshot(out)
    code, err = run_main(_argv(ckpt, sst2, out), capsys)
    assert_user_error(code, err, "in use by another run", f"pid {unrelated_process.pid}", "wait for it to finish",
                      "If no run is using it", f"delete the lock {lock}")
    assert snapshot(out) == before


# ----------------------------------------------------------------------------- 9. empty path flags

@pytest.mark.parametrize("flag", ["--save_pruned", "--output_dir", "--data_dir", "--ckpt_dir", "--model_name"])
def test_empty_path_flag_is_refused(flag, ckpt, sst2, tmp_path, capsys):
    argv = _argv(ckpt, sst2, tmp_path / "out")
    if flag in argv:
        argv[argv.index(flag) + 1] = ""
    else:
        argv += [flag, ""]
    code, err = run_main(argv, capsys)
    assert code == 2 and f"{flag} '' is empty" in err and "Traceback" not in err, err
    if flag == "--save_pruned":
        assert "leave --save_pruned out" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 10. damaged pruned folders

def test_load_pruned_on_a_truncated_safetensors(pruned, tmp_path):
    model = _copy_model(pruned / "pruned_model", tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(PrunedModelError, match=r"model\.safetensors cannot be read .*truncated or damaged.*save "
                                               r"the model again") as info:
        load_pruned(str(model))
    assert str(weights) in str(info.value)


@pytest.mark.parametrize("edit", ["linear-size", "module-name", "bad-json"])
def test_load_pruned_on_edited_pruned_shapes(edit, pruned, tmp_path):
    model = _copy_model(pruned / "pruned_model", tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    shapes = config["pruned_shapes"]
    if edit == "bad-json":
        (model / "config.json").write_text("{not json")
    else:
        name, spec = next(iter(shapes["linears"].items()))
        if edit == "linear-size":
            shapes["linears"][name] = [spec[0] + 1, spec[1], spec[2]]
        else:
            shapes["linears"]["no.such.module"] = spec
        (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(PrunedModelError) as info:
        load_pruned(str(model))
    text = str(info.value)
    assert "config.json" in text and ("save the model again" in text)


# ----------------------------------------------------------------------------- 11. launches that split nothing

@pytest.mark.parametrize("env, needles", [
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
      "ACCELERATE_MIXED_PRECISION": "no"},
     ["accelerate launch", "ACCELERATE_USE_CPU=True", "WORLD_SIZE", "torchrun --nproc_per_node N"]),
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}, ["OMPI_COMM_WORLD_SIZE=2", "torchrun"]),
], ids=["accelerate-cpu", "mpirun"])
def test_a_multi_process_launch_that_starts_one_process_is_refused(env, needles, ckpt, sst2, tmp_path, capsys,
                                                                   monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = run_main(_argv(ckpt, sst2, tmp_path / "out"), capsys)
    assert_user_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 12. modes of every written file

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_file_a_run_writes_has_the_umask_mode(umask, ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        code, err = run_main(_argv(ckpt, sst2, out, *SAVE, "--export", "onnx"), capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    written = [p for p in out.rglob("*")]
    assert any(p.name == "model.safetensors" for p in written) and any(p.suffix == ".onnx" for p in written)
    wrong = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~umask}
    assert not wrong, wrong
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


# ----------------------------------------------------------------------------- newcomer: a path taken for a hub id

@pytest.mark.parametrize("make", ["relative", "parent-exists", "model-name"])
def test_missing_local_folder_fails_fast(make, ckpt, sst2, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if make == "relative":
        monkeypatch.chdir(tmp_path)
        argv, flag, name = _argv("checkpoints/minilm-typo", sst2, tmp_path / "out"), "--ckpt_dir", \
            "checkpoints/minilm-typo"
    elif make == "parent-exists":
        (tmp_path / "checkpoints").mkdir()
        name = str(tmp_path / "checkpoints" / "typo")
        argv, flag = _argv(name, sst2, tmp_path / "out"), "--ckpt_dir"
    else:
        bare = tmp_path / "bare"
        shutil.copytree(ckpt, bare)
        for f in bare.iterdir():
            if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
                f.unlink()
        name, flag = "tokenizers/minilm-typo", "--model_name"
        argv = _argv(bare, sst2, tmp_path / "out", "--model_name", name)
    start = time.monotonic()
    code, err = run_main(argv, capsys)
    assert time.monotonic() - start < 20
    assert_user_error(code, err, name, "no such local folder")
    if flag == "--ckpt_dir":
        assert_user_error(code, err, "--ckpt_dir", "HF_HUB_OFFLINE is set" if make == "relative" else "a path")


# ----------------------------------------------------------------------------- newcomer: --help and the README

def test_help_shows_the_defaults_and_what_constraint_means(capsys):
    with pytest.raises(SystemExit):
        main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("picks the sample and breaks ties (default 0)", "evaluation (default 32)", "(default 0.1)",
                   "(default 0.5, the paper's sqrt(c))", "batch size of the timing (default 32)",
                   "sequence length of the timing (default 128)", "of what --metric measures: MACs (mac), heads + "
                   "FFN weights (params) or the latency"):
        assert needle in text, needle
    assert "fraction of MACs to keep" not in text


def test_readme_troubleshooting_points_at_files_that_exist():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert "ARCH_TABLE" not in readme and "utils/arch" not in readme    # a path that no longer exists


# ----------------------------------------------------------------------------- newcomer: the demo's table

def test_demo_table_names_the_recipe_and_the_checkpoint():
    import importlib.util
    spec = importlib.util.spec_from_file_location("demo_for_test", os.path.join(REPO, "scripts", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    results = {"primary_metric": "accuracy", "metric_before": {"accuracy": 0.9}, "metric_after": {"accuracy": 0.8},
               "mac_ratio": 0.5, "constraint": 0.5, "seconds": {"pruning_total": 1.0}}
    finetune = {"dev_metrics": {"accuracy": 0.9}, "cached": True}
    quick = demo.format_table(results, finetune, {}, "run", demo.recipe_name(False, demo.QUICK_STEPS),
                              demo.QUICK_CKPT_DIR)
    assert f"quick ({demo.QUICK_STEPS} steps of batch 32)" in quick and demo.QUICK_CKPT_DIR in quick
    full = demo.format_table(results, finetune, {}, "run", demo.recipe_name(True, None), demo.CKPT_DIR)
    assert "full (3 epochs)" in full and demo.CKPT_DIR in full


# ----------------------------------------------------------------------------- newcomer: pipeline on a pruned folder

def test_pipeline_on_a_pruned_folder_logs_no_not_supported_screenful(pruned):
    import logging

    from transformers import pipeline
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    logger = logging.getLogger("transformers.pipelines.base")     # where the pipeline logs its class check
    handler = Keep(level=logging.DEBUG)
    logger.addHandler(handler)
    try:
        classify = pipeline("text-classification", model=str(pruned / "pruned_model"), trust_remote_code=True)
        assert classify("great fun")[0]["label"]
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "is not supported for" in m], [m[:200] for m in seen]


# ----------------------------------------------------------------------------- newcomer: long silent stretches

def test_head_refit_and_timing_show_progress(ckpt, sst2, tmp_path, capfd):
    code = main.main(_argv(ckpt, sst2, tmp_path / "out", *SAVE))
    assert code == 0
    err = capfd.readouterr().err
    for bar in ("first-layer inputs", "head refit: unpruned outputs", "head refit: pruned inputs",
                "timing original vs pruned", "reconstruction"):
        assert bar in err, bar


# ----------------------------------------------------------------------------- siblings: other files a second run replaced

def _script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"{name}_for_test", os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_onnx_script_does_not_replace_the_runs_onnx(ckpt, sst2, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main(_argv(ckpt, sst2, out, *SAVE, "--export", "onnx"), capsys)[0] == 0
    folder = out / "pruned_model"
    before = snapshot(folder)
    script = _script("export_onnx")
    capsys.readouterr()
    assert script.main(["--pruned_dir", str(folder), "--batch_sizes", "1", "--seq_lens", "5"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'model.onnx'} exists" in err and "--overwrite" in err, err
    assert snapshot(folder) == before                        # byte-identical, and no lock left
    assert script.main(["--pruned_dir", str(folder), "--batch_sizes", "1", "--seq_lens", "5", "--overwrite"]) == 0
    assert not (folder / "model.onnx.lock").exists()


def test_measure_latency_does_not_replace_existing_tables(tmp_path, capsys):
    from transformers import BertConfig
    BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=3).save_pretrained(
        tmp_path)
    script = _script("measure_latency")
    out = tmp_path / "luts"
    argv = ["--ckpt_dir", str(tmp_path), "--batch_size", "2", "--seq_len", "8", "--ffn_step", "16", "--warmup", "0",
            "--repeats", "1", "--output_dir", str(out)]
    assert script.main(argv) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert script.main(argv + ["--batch_size", "4"]) == 2
    err = capsys.readouterr().err
    assert "mha_lut.pt" in err and "--overwrite" in err, err
    assert snapshot(out) == before
    assert script.main(argv + ["--overwrite"]) == 0


def test_measure_latency_refuses_a_folder_another_measurement_holds(unrelated_process, tmp_path, capsys):
    from transformers import BertConfig
    BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=3).save_pretrained(
        tmp_path)
    out = tmp_path / "luts"
    out.mkdir()
    (out / "mha_lut.pt.lock").write_text(json.dumps({"pid": unrelated_process.pid, "host": socket.gethostname(),
                                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                      "run_id": "r"}))
    script = _script("measure_latency")
    assert script.main(["--ckpt_dir", str(tmp_path), "--output_dir", str(out), "--repeats", "1"]) == 2
    assert "in use by another run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["mha_lut.pt.lock"]
