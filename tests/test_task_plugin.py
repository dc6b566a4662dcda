"""A task is one registered object: a toy task defined here runs through main.py, which is not edited."""
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import main
from arch.hooks import apply_masks
from tasks import registry
from tasks.base import Task, TaskData
from tests.tiny import save_tiny_checkpoint, tiny_config

LENGTH = 10


class ParityOfSecondToken(Task):
    """Label = parity of the second token id: tiny random data the task makes itself."""
    names = ("toy_parity",)
    head = "classification"
    auto_class = AutoModelForSequenceClassification
    max_seq_length = 16
    num_samples = 32

    def prepare(self, request, tokenizer, config, dist=None) -> TaskData:
        gen = torch.Generator().manual_seed(request.seed)

        def batch(n):
            ids = torch.randint(5, config.vocab_size, (n, LENGTH), generator=gen)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 1] % 2}
        sample = [batch(request.batch_size) for _ in range(request.num_samples // request.batch_size)]
        dev = [batch(16), batch(16)]

        def evaluate(model, arch, head_mask=None, neuron_mask=None) -> dict:
            right = 0
            with apply_masks(arch, head_mask, neuron_mask), torch.inference_mode():
                for b in dev:
                    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                    right += int((logits.argmax(-1) == b["labels"]).sum())
            return {"accuracy": right / 32}
        return TaskData("toy_parity", self.head, sample, evaluate, "accuracy", float(LENGTH), "classifier",
                        {"num_samples_used": len(sample) * request.batch_size}, dev_batches=dev,
                        eval_batch_count=len(dev))


@pytest.fixture
def toy_task(monkeypatch):
    monkeypatch.setitem(registry._TASKS, "toy_parity", ParityOfSecondToken())


def test_a_task_registered_from_outside_runs_through_main(toy_task, tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", AutoModelForSequenceClassification,
                                lambda vocab: tiny_config("bert", vocab_size=vocab))
    out = tmp_path / "run"
    argv = ["--task_name", "toy_parity", "--ckpt_dir", ckpt, "--constraint", "0.5", "--batch_size", "8",
            "--output_dir", str(out), "--device", "cpu", "--save_pruned", "--speed_seq_len", "16",
            "--speed_batch_size", "2"]
    assert main.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "toy_parity" and results["primary_metric"] == "accuracy"
    assert 0 <= results["metric_after"]["accuracy"] <= 1
    assert results["data"]["num_samples_used"] == 32            # the task's own default --num_samples
    assert results["distributed"]["eval_batches"] == [2]
    assert abs(results["mac_ratio"] - 0.5) < 0.05
    assert results["pruned_model"]["metric"] == pytest.approx(results["metric_after"], abs=1e-6)


def test_an_unregistered_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main.config_from_args(["--task_name", "toy_parity", "--ckpt_dir", "x", "--constraint", "0.5"])
    assert e.value.code == 2 and "invalid choice: 'toy_parity'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--eval_tasks", "data/zero_shot"], ["--calib_file", "calib.txt"]])
def test_a_flag_the_task_does_not_read_is_refused_not_ignored(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main.config_from_args(["--task_name", "sst2", "--ckpt_dir", "x", "--constraint", "0.5", *flag])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{flag[0]} does not apply to --task_name sst2" in err, err
