"""What a task is to main.py: names, the Auto class, defaults, how its data is prepared, and extras.

A task file defines a `Task` subclass and registers an instance (tasks/registry.py). main.py reads the
task's defaults, loads the model with its Auto class, asks it to prepare a `TaskData` (sample batches,
evaluation, loss tokens, ...) from a `DataRequest`, and lets it add its extras to results.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable



@dataclass(frozen=True)
class DataRequest:
    """Everything a task may read to prepare its data (main.py fills it from the flags)."""
    task_name: str
    num_samples: int
    seed: int
    max_seq_length: int
    batch_size: int = 32                 # the sample's batches (gradients, mask tuning) and the evaluation's
    data_dir: str | None = None          # GLUE TSV / SQuAD JSON folder (None: the hub)
    doc_stride: int = 128                # SQuAD windows
    calib_file: str | None = None        # causal LM: calibration text
    calib_mix: str | None = None         # causal LM: general-text folder mixed in (None: the task's; 'none': off)
    calib_mix_fraction: float | None = None   # causal LM: share of the windows from the mix (None: the task's)
    eval_file: str | None = None         # causal LM: held-out text
    eval_sequences: int | None = None    # causal LM: cap on evaluation windows
    eval_tasks: str | None = None        # causal LM: lm-evaluation-harness tasks (names, YAML folders or files)
    eval_limit: int | None = None        # causal LM: items per zero-shot task
    similarity_loss: str | None = None   # stsb_embedding: the importance scores' loss (None: the task's)


# flags that only some tasks read: a task that does not list one in `reads` refuses it instead of ignoring it
TASK_SPECIFIC = ("calib_file", "calib_mix", "calib_mix_fraction", "eval_file", "eval_sequences", "eval_tasks",
                 "eval_limit", "similarity_loss")


@dataclass
class TaskData:
    name: str
    head: str                         # 'classification', 'qa' or 'causal_lm'
    sample_batches: list[dict]        # training sample for gradients and mask tuning
    evaluate: Callable                # evaluate(model, arch, head_mask, neuron_mask) -> metrics dict
    primary_metric: str
    seq_len: float                    # average tokens per example, for the MAC count
    loss_tokens: str                  # the tokens the loss reads: classifier (the family's) | all
    info: dict
    gradient_batches: list[dict] | None = None   # the same sample in random batches (None: sample_batches)
    dev_batches: list[dict] | None = None        # what `evaluate` runs the model on (the ONNX check reuses it)
    predict: Callable | None = None   # predict(model, arch, head_mask, neuron_mask) -> per-dev-row predictions
    dev_labels: list | None = None    # the dev rows' labels, in the order `predict` returns them
    loss_fn: Callable | None = None   # loss_fn(model, batch) for the gradients (None: the model's own loss)
    checkpoint_layers: bool = False   # recompute blocks in the gradients' backward pass (memory, not speed)
    eval_batch_count: int | None = None   # batches the evaluation splits over processes (None: not split)


class Task:
    """A task family. Subclasses set the class attributes and implement `prepare`."""
    names: tuple[str, ...] = ()       # the --task_name values it answers to
    head: str = ""                    # what load_model builds: 'classification', 'qa', 'causal_lm' or 'embedding'
    auto_class: type | None = None    # the transformers Auto class of that head
    max_seq_length: int = 128         # default --max_seq_length
    num_samples: int = 2048           # default --num_samples
    width_multiple: int = 1           # default --width_multiple: FFN widths in multiples of this (prune/widths.py)
    needs: dict[str, str] = {}        # DataRequest field -> why it is required (the error names the flag)
    reads: tuple[str, ...] = ()       # the task-specific DataRequest fields it reads (others must stay unset)

    def check_request(self, request: DataRequest) -> list[str]:
        """What the user must change: one message per missing required input or per flag the task ignores."""
        problems = [why for field, why in self.needs.items() if getattr(request, field) in (None, "")]
        for field in TASK_SPECIFIC:
            if field not in self.reads and getattr(request, field) not in (None, ""):
                users = ", ".join(self.names[:3]) + ("..." if len(self.names) > 3 else "")
                problems.append(f"--{field} does not apply to --task_name {request.task_name} ({users} ignore it): "
                                f"drop it, or pick a task that reads it")
        return problems

    def prepare(self, request: DataRequest, tokenizer, config, dist=None) -> TaskData:
        raise NotImplementedError

    def problem_type(self, task_name: str) -> str | None:
        """The config.json problem_type this task's loss is (a checkpoint saying otherwise is refused); None: any."""
        return None

    def pruned_extras(self, request: DataRequest, model, arch, tokenizer, masks, weight_updates, placement,
                      dist=None) -> dict:
        """Extra results of the pruned (masked) model beside the metric, e.g. generations; {} by default."""
        return {}

    def saved_model_extras(self, original, pruned, seq_len: int) -> dict:
        """Extra results of the physically pruned model, e.g. a decoder's decode speed; {} by default."""
        return {}
