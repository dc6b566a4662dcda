"""Data-parallel runs: 2 gloo processes under torchrun give the masks, metrics and results.json fields of one
process; a process that fails stops the launch with its message and no results.json."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import main
from tests.test_main_glue import NEGATIVE, POSITIVE, tiny_ckpt  # noqa: F401  (fixture)
from tests.test_main_lm import tiny_llama  # noqa: F401  (fixture)
from utils.distributed import Dist

ENTRY = os.path.join(os.path.dirname(__file__), "dist_entry.py")


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """144 dev rows: two dev batches of 128 and 16, so that the evaluation is split too."""
    folder = tmp_path_factory.mktemp("glue") / "SST-2"
    folder.mkdir()
    rows = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]
    for name, reps in (("train.tsv", 6), ("dev.tsv", 12)):
        lines = ["sentence\tlabel"] + [f"{s} {'!' * (i % 4)}\t{y}" for i, (s, y) in enumerate(rows * reps)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return str(folder.parent)


def _launch(runs: list[list[str]], env_extra=None, timeout=240):
    """torchrun with 2 CPU processes on a free port; every argument list is one main.py run in it."""
    argv = [a for run in runs for a in run + ["--then"]][:-1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", ENTRY, *argv]
    launch = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    try:
        stdout, stderr = launch.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)      # the workers too, not only torchrun
        launch.communicate()
        raise
    return subprocess.CompletedProcess(cmd, launch.returncode, stdout, stderr)


def _glue_args(ckpt, data, out, *extra):
    return ["--task_name", "sst2", "--ckpt_dir", ckpt, "--data_dir", data, "--constraint", "0.5", "--num_samples",
            "40", "--batch_size", "8", "--output_dir", str(out), "--device", "cpu", *extra]


def _lm_args(llama, out, *extra):
    ckpt, calib, held_out = llama
    return ["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", calib, "--eval_file", held_out,
            "--constraint", "0.5", "--num_samples", "8", "--max_seq_length", "32", "--batch_size", "2",
            "--eval_sequences", "5", "--output_dir", str(out), "--device", "cpu", *extra]


def _close(a, b, tol=1e-6):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a if k != "seconds")
    if isinstance(a, float):
        return abs(a - b) <= tol * max(1.0, abs(a))
    return a == b


def _same_run(single, parallel, metric_keys):
    one, two = (json.loads((d / "results.json").read_text()) for d in (single, parallel))
    assert one.keys() == two.keys()
    for name in ("head_mask.pt", "neuron_mask.pt"):
        assert torch.equal(torch.load(single / name), torch.load(parallel / name)), name
    for key in ("metric_before", "metric_after"):
        assert {k: one[key][k] for k in metric_keys} != {} and _close(
            {k: one[key][k] for k in metric_keys}, {k: two[key][k] for k in metric_keys}), (key, one[key], two[key])
    for key in ("mac_ratio", "heads_kept_per_layer", "neurons_kept_per_layer", "mask_tuning"):
        assert _close(one[key], two[key]), key
    assert one["distributed"]["world_size"] == 1 and two["distributed"]["world_size"] == 2
    assert two["distributed"]["backend"] == "gloo" and len(two["peak_memory_mb"]["rss_per_process"]) == 2
    return one, two


def test_two_processes_match_one(tiny_ckpt, glue_dir, tiny_llama, tmp_path, one_thread):  # noqa: F811
    runs = {
        "bert": (_glue_args(tiny_ckpt, glue_dir, tmp_path / "bert1"),
                 _glue_args(tiny_ckpt, glue_dir, tmp_path / "bert2")),
        "kwon": (_glue_args(tiny_ckpt, glue_dir, tmp_path / "kwon1", "--method", "kwon"),
                 _glue_args(tiny_ckpt, glue_dir, tmp_path / "kwon2", "--method", "kwon")),
        "llama": (_lm_args(tiny_llama, tmp_path / "llama1"), _lm_args(tiny_llama, tmp_path / "llama2")),
    }
    done = _launch([two for _, two in runs.values()])
    assert done.returncode == 0, done.stderr[-3000:]
    for one, _ in runs.values():
        assert main.main(one) == 0
    _, bert = _same_run(tmp_path / "bert1", tmp_path / "bert2", ["accuracy"])
    assert bert["distributed"]["gradient_batches"] == [3, 2] and bert["distributed"]["eval_batches"] == [1, 1]
    _same_run(tmp_path / "kwon1", tmp_path / "kwon2", ["accuracy"])
    _, llama = _same_run(tmp_path / "llama1", tmp_path / "llama2", ["perplexity", "nll", "tokens"])
    assert llama["distributed"]["tuning_batches"] == [2, 2] and llama["distributed"]["eval_batches"] == [2, 1]
    one, two = (torch.load(tmp_path / d / "weight_updates.pt") for d in ("llama1", "llama2"))
    assert one.keys() == two.keys()
    assert all(torch.allclose(one[k]["weight"], two[k]["weight"], atol=1e-5) for k in one)


def test_a_failing_process_stops_the_launch(tiny_ckpt, glue_dir, tmp_path):  # noqa: F811
    out = tmp_path / "failed"
    done = _launch([_glue_args(tiny_ckpt, glue_dir, out)], {"FAIL_RANK": "1"})
    assert done.returncode != 0
    assert "error (process 1 of 2): injected failure in the reconstruction of process 1" in done.stderr
    assert not (out / "results.json").exists() and not (out / "results.json.pending").exists()


def test_shard_and_gather_are_inverse_in_one_process():
    dist = Dist()
    items = list(range(7))
    assert dist.shard(items) == items and dist.gather_in_order(items) == items
    t = torch.ones(3)
    assert dist.all_reduce_sum(t) is t and torch.equal(t, torch.ones(3))
    # what each of 3 processes would take: every third item, and the interleave puts them back
    parts = [Dist(r, 3, r, "gloo").shard(items) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]


@pytest.fixture(scope="module")
def wide_llama(tiny_llama, tmp_path_factory):  # noqa: F811
    """The tiny Llama with a wide FFN, so that a memory budget can hold its embeddings and some layers only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny import tiny_decoder_config
    ckpt, calib, held_out = tiny_llama
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    config = tiny_decoder_config("llama", vocab_size=tokenizer.vocab_size)
    config.intermediate_size = 2000
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wide")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), calib, held_out


def test_offloaded_run_gives_the_in_memory_masks(wide_llama, tmp_path, one_thread):
    # 7.9 MB of weights (3.9 MB embeddings, 3.9 MB untied output layer): 9 MB holds the embeddings, accelerate's
    # reserve for the largest layer and the first block; the rest goes to disk
    assert main.main(_lm_args(wide_llama, tmp_path / "memory")) == 0
    assert main.main(_lm_args(wide_llama, tmp_path / "offload", "--device_map", "auto", "--max_memory", "cpu=9MB",
                                "--save_pruned", "--speed_batch_size", "1", "--speed_seq_len", "8")) == 0
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("memory", "offload"))
    for name in ("head_mask.pt", "neuron_mask.pt"):
        assert torch.equal(torch.load(tmp_path / "memory" / name), torch.load(tmp_path / "offload" / name)), name
    assert _close(one["metric_after"], two["metric_after"]) and _close(one["metric_before"], two["metric_before"])
    assert one["placement"] == {"device_map": None, "all_stages": "cpu"}
    gradients = two["placement"]["whole_model_device_maps"]["gradients"]
    assert gradients["model.embed_tokens"] == "cpu" and gradients["lm_head"] == "disk", gradients
    assert two["placement"]["layer_wise"].startswith("one layer at a time on cpu")
    assert {"evaluate_pruned", "speed_pruned", "generations"} <= set(two["placement"]["whole_model_device_maps"])
    assert two["pruned_model"]["metric"]["perplexity"] == pytest.approx(two["metric_after"]["perplexity"], rel=1e-4)
    a, b = (torch.load(tmp_path / d / "weight_updates.pt") for d in ("memory", "offload"))
    assert a.keys() == b.keys() and all(torch.equal(a[k]["weight"], b[k]["weight"]) for k in a)


def test_max_memory_and_device_map_flags(capsys):
    from utils.offload import parse_max_memory
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=60GB") == {0: "20GiB", 1: "20GiB", "cpu": "60GB"}
    for bad in ("0:20GiB", "gpu=1GB", "0=lots", ""):
        with pytest.raises(ValueError):
            parse_max_memory(bad)
    for argv, words in ((["--task_name", "sst2", "--device_map", "auto"], "is for decoders"),
                        (["--task_name", "causal_lm", "--calib_file", "c", "--eval_file", "e", "--max_memory",
                          "cpu=1GB"], "add --device_map auto")):
        with pytest.raises(SystemExit) as exit_info:
            main.config_from_args(argv + ["--ckpt_dir", "x", "--constraint", "0.5"])
        assert exit_info.value.code == 2 and words in capsys.readouterr().err
