"""Nothing silently wrong, fourth round (issue 35): the surfaces added since the last round, tried the way a
careless, unlucky or hostile user would: --export gguf and scripts/export_gguf.py (with --quantize),
--width_multiple, --eval_tasks / --eval_limit and their task folders, scripts/eval_saved.py,
scripts/make_zero_shot_tasks.py and the ONNX export's model.onnx.

Each case checks the exit status, the one `error:` line (it names the input and the fix), and the files: nothing
partial left, nothing replaced (byte-identical snapshots), no run folder started for a refusal that needs none.
"""
import importlib.util
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch

import main
from tests.test_errors import assert_user_error, run_main
from tests.test_hostile import _script, texts, unrelated_process  # noqa: F401  (fixtures)
from tests.test_main_lm import _text
from tests.test_safety import snapshot
from tests.test_zero_shot import fake_sources  # noqa: F401  (fixture: the builder tests' fake archives)
from tests.tiny import byte_level_bpe_tokenizer, tiny_config, tiny_decoder_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py
needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed")
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed")


@pytest.fixture(autouse=True)
def fresh_logging():
    """The scripts call logging.basicConfig, which binds the root logger to the sys.stderr of the first test
    that ran one (capsys replaces it per test): give each test its own."""
    import logging
    root = logging.getLogger()
    saved = root.handlers[:]
    yield
    root.handlers[:] = saved


def run_script(name, argv, capsys):
    capsys.readouterr()
    try:
        code = _script(name).main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- fixtures

def _decoder(folder, family, texts, ffn=256):
    from transformers import AutoModelForCausalLM
    tokenizer = byte_level_bpe_tokenizer((texts / "calib.txt").read_text().splitlines())
    config = tiny_decoder_config(family, vocab_size=len(tokenizer) + 3)
    config.intermediate_size = ffn
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory, texts):
    """A tiny Llama (FFN 256 = 8 blocks of 32) with a byte-level BPE tokenizer: what the GGUF export takes."""
    return _decoder(tmp_path_factory.mktemp("llama"), "llama", texts)


@pytest.fixture(scope="module")
def bert(tmp_path_factory, tokenizer):
    from transformers import AutoModelForSequenceClassification
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_config("bert", vocab_size=tokenizer.vocab_size)).save_pretrained(
        folder)
    tokenizer.save_pretrained(folder)
    return folder


def _lm_argv(ckpt, texts, out, *extra):
    return ["--task_name", "causal_lm", "--ckpt_dir", str(ckpt), "--calib_file", str(texts / "calib.txt"),
            "--eval_file", str(texts / "eval.txt"), "--constraint", "0.6", "--num_samples", "8",
            "--max_seq_length", "32", "--batch_size", "4", "--speed_batch_size", "2", "--speed_seq_len", "16",
            "--device", "cpu", "--output_dir", str(out), *map(str, extra)]


@pytest.fixture(scope="module")
def pruned(llama, texts, tmp_path_factory):
    """A run folder with the saved pruned model of the tiny Llama (made once)."""
    out = tmp_path_factory.mktemp("pruned") / "run"
    assert main.main(_lm_argv(llama, texts, out, "--save_pruned")) == 0
    return out / "pruned_model"


# ----------------------------------------------------------------------------- main.py --export gguf

@needs_gguf
@pytest.mark.parametrize("which", ["encoder", "qwen3", "wordpiece"])
def test_export_gguf_refuses_what_it_cannot_take_before_any_work(which, bert, texts, tmp_path, capsys):
    out = tmp_path / "out"
    if which == "encoder":
        argv = ["--task_name", "sst2", "--ckpt_dir", str(bert), "--data_dir", str(tmp_path / "unused"),
                "--constraint", "0.5", "--output_dir", str(out), "--save_pruned", "--export", "gguf",
                "--speed_seq_len", "16"]
        os.makedirs(tmp_path / "unused" / "SST-2")
        needles = ("'bert'", "--export onnx")
    elif which == "qwen3":
        argv = _lm_argv(_decoder(tmp_path / "qwen3", "qwen3", texts), texts, out, "--save_pruned", "--export", "gguf")
        needles = ("'qwen3'", "query/key RMSNorm")
    else:      # a Llama with a WordPiece tokenizer: llama.cpp could not tokenize for it
        from transformers import AutoModelForCausalLM
        from tests.tiny import save_tiny_checkpoint
        ckpt = save_tiny_checkpoint(tmp_path / "wp", AutoModelForCausalLM,
                                    lambda vocab: tiny_decoder_config("llama", vocab_size=vocab))
        argv = _lm_argv(ckpt, texts, out, "--save_pruned", "--export", "gguf")
        needles = ("not a byte-level BPE tokenizer", "WordPiece")
    code, err = run_main(argv, capsys)
    assert_user_error(code, err, *needles)
    assert not out.exists()                  # refused before the run folder, the data and the gradients


# ----------------------------------------------------------------------------- scripts/export_gguf.py

@needs_gguf
def test_export_gguf_does_not_replace_files_without_overwrite(pruned, tmp_path, capsys):
    out = tmp_path / "gguf"
    argv = ["--model_dir", pruned, "--output_dir", out]
    assert run_script("export_gguf", argv, capsys)[0] == 0
    before = snapshot(out)
    code, err = run_script("export_gguf", argv, capsys)
    assert_user_error(code, err, str(out / "model-f16.gguf"), "exists", "--overwrite")
    assert snapshot(out) == before                           # byte-identical, and no lock left behind
    assert run_script("export_gguf", argv + ["--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(out)) == ["model-f16.gguf"]


@needs_gguf
@pytest.mark.parametrize("quant,needles", [(["q9_z"], ("'q9_z'", "q8_0", "q4_k_m")),
                                           (["q8_0", "f16"], ("--quantize f16", "--dtype f16"))])
def test_export_gguf_checks_quant_types_before_writing(quant, needles, pruned, tmp_path, capsys):
    out = tmp_path / "gguf"
    code, err = run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out, "--quantize", *quant], capsys)
    assert_user_error(code, err, *needles)
    assert not out.exists()


@needs_gguf
def test_export_gguf_without_the_quantizer_refuses_before_writing(pruned, tmp_path, capsys, monkeypatch):
    import importlib.util as util
    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    out = tmp_path / "gguf"
    code, err = run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out, "--quantize", "q8_0"], capsys)
    assert_user_error(code, err, "--quantize", "llama-cpp-python", "scripts/setup.sh")
    assert not out.exists()


@needs_gguf
def test_export_gguf_with_another_models_tokenizer_is_refused_before_loading(pruned, tmp_path, capsys):
    bigger = byte_level_bpe_tokenizer([_text(seed, 200) for seed in range(3)] + ["zebra quartz jukebox"] * 3,
                                      vocab_size=2000)
    bigger.save_pretrained(tmp_path / "tok")
    out = tmp_path / "gguf"
    code, err = run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out, "--tokenizer_dir", tmp_path / "tok"],
                           capsys)
    assert_user_error(code, err, str(tmp_path / "tok"), "not this model's tokenizer")
    assert not out.exists()


@needs_gguf
@pytest.mark.parametrize("where", ["same", "inside", "file"])
def test_export_gguf_output_dir_that_cannot_be_used(where, pruned, tmp_path, capsys):
    before = snapshot(pruned)
    out = {"same": pruned, "inside": pruned / "gguf", "file": pruned / "config.json"}[where]
    code, err = run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out], capsys)
    assert_user_error(code, err, f"--output_dir '{out}'", "not a folder" if where == "file" else "--model_dir")
    assert snapshot(pruned) == before


def _live_lock(path, proc):
    path.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": "other"}))


@needs_gguf
@pytest.mark.parametrize("state", ["missing", "staged", "save_lock", "run_lock", "no_config", "damaged", "encoder"])
def test_export_gguf_refuses_a_model_folder_that_is_not_whole(state, pruned, bert, unrelated_process, tmp_path, capsys):
    import shutil
    model = tmp_path / "model"
    needles = ()
    if state == "missing":
        needles = ("does not exist",)
    elif state == "staged":          # what main.py writes before the rename: a marked temporary folder
        model = tmp_path / "model.tmp-abcdefgh"
        shutil.copytree(pruned, model)
        (model / ".tool-temp").write_text("x")
        needles = ("temporary folder", "still writing")
    elif state in ("save_lock", "run_lock"):
        shutil.copytree(pruned, model)
        _live_lock(tmp_path / ("model.lock" if state == "save_lock" else "run.lock"), unrelated_process)
        needles = ("being written", f"pid {unrelated_process.pid}")
    elif state == "no_config":
        shutil.copytree(pruned, model)
        os.remove(model / "config.json")
        needles = ("no config.json",)
    elif state == "damaged":
        shutil.copytree(pruned, model)
        with open(model / "model.safetensors", "r+b") as f:
            f.truncate(100)
        needles = ("damaged",)
    else:
        model = bert
        needles = ("'bert'",)
    out = tmp_path / "gguf"
    code, err = run_script("export_gguf", ["--model_dir", model, "--output_dir", out], capsys)
    assert_user_error(code, err, str(model), *needles)
    assert not os.path.exists(out / "model-f16.gguf")


@needs_gguf
def test_interrupted_gguf_export_keeps_the_previous_file_and_leaves_no_partial(pruned, tmp_path, capsys, monkeypatch,
                                                                               caplog):
    import gguf
    out = tmp_path / "gguf"
    argv = ["--model_dir", pruned, "--output_dir", out]
    assert run_script("export_gguf", argv, capsys)[0] == 0
    before = snapshot(out)

    def killed(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", killed)
    code, err = run_script("export_gguf", argv + ["--overwrite"], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert snapshot(out) == before                           # the earlier file, no .partial, no lock
    monkeypatch.undo()
    (out / "model-f16.gguf.partial").write_bytes(b"half a file")     # what kill -9 leaves
    code, err = run_script("export_gguf", argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert "model-f16.gguf.partial" in caplog.text and "interrupted" in caplog.text   # the rerun says what it found
    assert sorted(os.listdir(out)) == ["model-f16.gguf"]


@needs_gguf
def test_gguf_export_into_a_folder_another_export_holds_is_refused(pruned, unrelated_process, tmp_path, capsys):
    out = tmp_path / "gguf"
    out.mkdir()
    _live_lock(out / "model-f16.gguf.lock", unrelated_process)
    code, err = run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out], capsys)
    assert_user_error(code, err, "in use by another run", f"pid {unrelated_process.pid}")
    assert sorted(os.listdir(out)) == ["model-f16.gguf.lock"]


@needs_gguf
@needs_llama_cpp
def test_quantized_gguf_of_a_pruned_model_loads_in_llama_cpp(pruned, tmp_path, capsys):
    """An independent check: llama.cpp loads the quantized file of an uneven pruned model and its next-token
    logits track PyTorch's (Q8_0: within 0.1 of the logit range here; a wrong layout is off by the whole range)."""
    import llama_cpp
    import numpy as np
    from export.hf_load import load_pruned
    out = tmp_path / "gguf"
    assert run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out, "--quantize", "q8_0"], capsys)[0] == 0
    ids = [5, 17, 42, 99, 7, 63]
    with torch.inference_mode():
        ref = load_pruned(str(pruned))(torch.tensor([ids])).logits[0].float().numpy()
    llm = llama_cpp.Llama(str(out / "model-q8_0.gguf"), n_ctx=32, logits_all=True, verbose=False, n_threads=1)
    llm.eval(ids)
    got = np.array(llm.scores[:len(ids)])
    span = float(ref.max() - ref.min())
    assert float(np.abs(got - ref).max()) < 0.1 * span


# ----------------------------------------------------------------------------- --width_multiple

@pytest.mark.parametrize("extra,needles", [(["--width_multiple", "4096"], ("--width_multiple 4096", "256 channels")),
                                           (["--width_multiple", "64", "--search", "threshold"],
                                            ("--width_multiple 64", "threshold"))])
def test_width_multiple_that_cannot_work_is_refused_before_the_run(extra, needles, llama, texts, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(llama, texts, out, *extra), capsys)
    assert_user_error(code, err, *needles)
    assert not out.exists()


def test_odd_width_multiple_gives_multiples_within_the_budget(llama, texts, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(llama, texts, out, "--width_multiple", "7", "--save_pruned"), capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["mac_ratio"] <= 0.6 + 1e-9
    from export.hf_load import load_pruned
    model = load_pruned(str(out / "pruned_model"))
    widths = [block.mlp.down_proj.in_features for block in model.model.layers]
    assert all(w % 7 == 0 for w in widths) and sum(widths) < 3 * 256, widths


def test_stock_folder_reloads_with_plain_from_pretrained_and_the_same_perplexity(llama, texts, tmp_path, capsys):
    """An independent check of --search uniform's stock checkpoint (lsq output biases, 32-multiple widths): plain
    transformers, no code of ours in the loading, reproduces the run's pruned perplexity on the held-out text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from dataset.lm_text import evaluation_sequences, lm_batches
    from evaluate.perplexity import perplexity
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(llama, texts, out, "--search", "uniform", "--save_pruned"), capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    folder = out / "pruned_model"
    assert json.loads((folder / "pruning.json").read_text()).get("stock"), "a uniform search gives a stock folder"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.config.intermediate_size % 32 == 0 and model.config.intermediate_size < 256
    tokenizer = AutoTokenizer.from_pretrained(folder)
    seqs = evaluation_sequences((texts / "eval.txt").read_text(), tokenizer, 32)
    ppl = perplexity(model, lm_batches(seqs, 4))["perplexity"]
    assert ppl == pytest.approx(results["metric_after"]["perplexity"], rel=1e-4)


# ----------------------------------------------------------------------------- --eval_tasks / --eval_limit

def _task_folder(root, kind):
    folder = root / f"tasks_{kind}"
    folder.mkdir()
    yaml = ("task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
            "output_type: multiple_choice\ndoc_to_text: \"{{{{text}}}}\"\ndoc_to_choice: [\"a\", \"b\"]\n"
            "doc_to_target: label\nmetric_list:\n  - metric: acc\n")
    if kind == "malformed":
        (folder / "t.yaml").write_text("task: [oops\n  bad: : yaml\n")
    elif kind == "missing_data":
        (folder / "t.yaml").write_text(yaml.format(name="my_task", data="nowhere.jsonl"))
    elif kind in ("collision", "valid"):
        (folder / "t.jsonl").write_text('{"text": "x", "label": 0}\n{"text": "y", "label": 1}\n')
        (folder / "t.yaml").write_text(yaml.format(name="arc_easy" if kind == "collision" else "hostile_valid_task",
                                                   data="t.jsonl"))
    return folder


@needs_lm_eval
@pytest.mark.parametrize("kind,needles", [("empty", ("no task YAML files",)),
                                          ("malformed", ("t.yaml", "cannot be read")),
                                          ("missing_data", ("nowhere.jsonl", "my_task")),
                                          ("collision", ("'arc_easy'", "lm-eval's own", "Rename"))])
def test_bad_task_folder_is_refused_before_the_run(kind, needles, llama, texts, tmp_path, capsys):
    folder = _task_folder(tmp_path, kind)
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(llama, texts, out, "--eval_tasks", folder, "--eval_limit", "2"), capsys)
    assert code == 2 and "Traceback" not in err
    assert all(n in err for n in needles), err
    assert not out.exists()


def test_eval_limit_without_eval_tasks_is_refused(llama, texts, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(llama, texts, out, "--eval_limit", "5"), capsys)
    assert code == 2 and "--eval_limit 5" in err and "--eval_tasks" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- scripts/eval_saved.py

@needs_lm_eval
@pytest.mark.parametrize("case", ["encoder", "no_config", "staged", "output_exists", "output_is_folder",
                                  "output_inside_model", "limit_0", "batch_0", "bad_tasks", "hub_task_offline",
                                  "no_tokenizer", "no_such_device"])
def test_eval_saved_refusals(case, pruned, bert, tmp_path, capsys):
    import shutil
    folder, extra, needles = pruned, [], ()
    tasks = str(_task_folder(tmp_path, "valid"))     # a good task folder: each case fails on its own input
    if case == "encoder":
        folder, needles = bert, ("BertForSequenceClassification", "not a causal language model")
    elif case == "no_config":
        folder, needles = tmp_path, ("no config.json",)
    elif case == "staged":
        folder = tmp_path / "m.tmp-abcdefgh"
        shutil.copytree(pruned, folder)
        (folder / ".tool-temp").write_text("x")
        needles = ("temporary folder",)
    elif case == "output_exists":
        (tmp_path / "s.json").write_text("{}")
        extra, needles = ["--output", tmp_path / "s.json"], ("exists", "--overwrite")
    elif case == "output_is_folder":
        extra, needles = ["--output", tmp_path], ("is a folder",)
    elif case == "output_inside_model":
        extra, needles = ["--output", pruned / "scores.json"], ("inside FOLDER",)
    elif case == "limit_0":
        extra, needles = ["--eval_limit", "0"], ("--eval_limit", "at least 1")
    elif case == "batch_0":
        extra, needles = ["--batch_size", "0"], ("--batch_size", "at least 1")
    elif case == "no_tokenizer":
        folder = tmp_path / "model"
        shutil.copytree(pruned, folder)
        for name in os.listdir(folder):
            if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
                os.remove(folder / name)
        needles = ("no tokenizer found",)
    elif case == "no_such_device":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        extra, needles = ["--device", "cuda"], ("--device cuda", "no CUDA GPU")
    elif case == "hub_task_offline":      # the tests run with HF_DATASETS_OFFLINE=1 (tests/conftest.py)
        tasks, extra, needles = "arc_easy", ["--eval_limit", "2"], ("--eval_tasks arc_easy", "make_zero_shot_tasks")
    else:
        tasks, needles = str(_task_folder(tmp_path, "malformed")), ("cannot be read",)
    before = snapshot(pruned)
    code, err = run_script("eval_saved", [folder, "--eval_tasks", tasks, *extra], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert all(n in err for n in needles), err
    assert snapshot(pruned) == before
    if case == "output_exists":
        assert (tmp_path / "s.json").read_text() == "{}"


# ----------------------------------------------------------------------------- the ONNX export's model.onnx

@pytest.fixture(scope="module")
def onnx_ready():
    from export.onnx import missing_packages
    if missing_packages():
        pytest.skip(f"the ONNX export needs {missing_packages()}")


def test_decoder_export_onnx_is_checked_on_the_held_out_text(onnx_ready, llama, texts, tmp_path, capsys):
    """--export onnx on a causal LM used to end in a TypeError after the whole run (the task gave the ONNX check no
    batches); now the graph is checked on the held-out windows like an encoder's on its dev set."""
    out = tmp_path / "out"
    code, err = run_main(_lm_argv(llama, texts, out, "--save_pruned", "--export", "onnx"), capsys)
    assert code == 0, err
    onnx = json.loads((out / "results.json").read_text())["pruned_model"]["onnx"]
    assert onnx["within_tolerance"] and onnx["checked_batches"] >= 1 and onnx["outputs"] == ["logits"]
    assert (out / "pruned_model" / "model.onnx").is_file()


def test_interrupted_onnx_export_keeps_the_previous_model_onnx(onnx_ready, pruned, tmp_path, capsys, monkeypatch,
                                                               caplog):
    import shutil
    import export.onnx as onnx_export
    folder = tmp_path / "model"
    shutil.copytree(pruned, folder)
    argv = ["--pruned_dir", folder, "--batch_sizes", "2", "--seq_lens", "6"]
    assert run_script("export_onnx", argv, capsys)[0] == 0
    before = snapshot(folder)

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(onnx_export, "max_abs_difference", killed)      # after the new graph is written
    code, err = run_script("export_onnx", argv + ["--overwrite"], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert snapshot(folder) == before
    monkeypatch.undo()
    (folder / ".onnx-export-killed").mkdir()                              # what kill -9 leaves
    code, err = run_script("export_onnx", argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert ".onnx-export-killed" in caplog.text and "interrupted" in caplog.text
    assert not (folder / ".onnx-export-killed").exists()


def test_onnx_export_on_a_full_disk_is_one_line_and_leaves_the_folder_as_it_was(onnx_ready, pruned, tmp_path, capsys,
                                                                                 monkeypatch):
    import errno
    import shutil
    import export.onnx as onnx_export
    folder = tmp_path / "model"
    shutil.copytree(pruned, folder)
    before = snapshot(folder)

    def full(model, path, *a, **k):
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(onnx_export, "export_onnx", full)
    code, err = run_script("export_onnx", ["--pruned_dir", folder, "--batch_sizes", "2", "--seq_lens", "6"], capsys)
    assert_user_error(code, err, "No space left on device", str(folder))
    assert snapshot(folder) == before


# ----------------------------------------------------------------------------- scripts/make_zero_shot_tasks.py

def test_task_folder_builder_replaces_nothing_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, err = run_script("make_zero_shot_tasks", ["--out_dir", out, "--overwrite", "--vader_sdist", tmp_path / "x"],
                           capsys)
    assert_user_error(code, err, f"--out_dir {out}", "did not write", "new or empty folder")
    assert (out / "notes.txt").read_text() == "my notes" and sorted(os.listdir(out)) == ["notes.txt"]
    code, err = run_script("make_zero_shot_tasks", ["--out_dir", tmp_path / "new", "--items", "0"], capsys)
    assert code == 2 and "--items" in err and not (tmp_path / "new").exists()


def _build_argv(out, sources, *extra):
    return ["--out_dir", out, "--items", "6", *[a for k, v in sources.items() for a in (f"--{k}", v)], *extra]


def test_task_folder_builder_needs_overwrite_for_an_edited_folder(fake_sources, tmp_path, capsys):
    out = tmp_path / "zs"
    assert run_script("make_zero_shot_tasks", _build_argv(out, fake_sources), capsys)[0] == 0
    code, err = run_script("make_zero_shot_tasks", _build_argv(out, fake_sources), capsys)
    assert code == 0                                                     # up to date: skipped, unchanged
    with open(out / "pp_fortune_cloze.jsonl", "a") as f:
        f.write('{"edited": true}\n')
    before = snapshot(out)
    code, err = run_script("make_zero_shot_tasks", _build_argv(out, fake_sources), capsys)
    assert_user_error(code, err, f"--out_dir {out}", "no longer match", "--overwrite")
    assert snapshot(out) == before
    assert run_script("make_zero_shot_tasks", _build_argv(out, fake_sources, "--overwrite"), capsys)[0] == 0
    assert '"edited"' not in (out / "pp_fortune_cloze.jsonl").read_text()
    assert not any(".tmp-" in n or ".old-" in n or n.endswith(".lock") for n in os.listdir(tmp_path))


def test_interrupted_task_folder_build_leaves_the_previous_folder(fake_sources, tmp_path, capsys, monkeypatch):
    out = tmp_path / "zs"
    assert run_script("make_zero_shot_tasks", _build_argv(out, fake_sources), capsys)[0] == 0
    before = snapshot(out)
    builder = _script("make_zero_shot_tasks")

    def killed(folder, *a, **k):
        (Path(folder) / "pp_review_sentiment.yaml").write_text("half")
        raise KeyboardInterrupt
    monkeypatch.setattr(builder, "_write_tasks", killed)
    capsys.readouterr()
    code = builder.main([str(a) for a in _build_argv(out, fake_sources, "--overwrite")])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["zs"]                        # no temporary folder, no lock


def test_task_folder_build_on_a_full_disk_is_one_line_and_leaves_nothing(fake_sources, tmp_path, capsys, monkeypatch):
    import errno
    builder = _script("make_zero_shot_tasks")

    def full(folder, *a, **k):
        (Path(folder) / "pp_review_sentiment.yaml").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(builder, "_write_tasks", full)
    capsys.readouterr()
    code = builder.main([str(a) for a in _build_argv(tmp_path / "zs", fake_sources)])
    assert_user_error(code, capsys.readouterr().err, "No space left on device", "the task folder")
    assert os.listdir(tmp_path) == []


@needs_gguf
def test_gguf_export_on_a_full_disk_is_one_line_and_leaves_no_partial(pruned, tmp_path, capsys, monkeypatch):
    import errno
    import gguf
    out = tmp_path / "gguf"

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full)
    code, err = run_script("export_gguf", ["--model_dir", pruned, "--output_dir", out], capsys)
    assert_user_error(code, err, "No space left on device", str(out))
    assert os.listdir(out) == []


def test_task_folder_build_with_more_items_than_the_sources_hold(fake_sources, tmp_path, capsys):
    code, err = run_script("make_zero_shot_tasks", ["--out_dir", tmp_path / "zs", "--items", "100000",
                                                    *[a for k, v in fake_sources.items() for a in (f"--{k}", v)]],
                           capsys)
    assert_user_error(code, err, "--items 100000", "lower --items")
    assert os.listdir(tmp_path) == []
