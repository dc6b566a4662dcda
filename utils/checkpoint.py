"""Loading a fine-tuned checkpoint with errors that say what is wrong and how to fix it."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class CheckpointError(ValueError):
    """A user-fixable problem with the checkpoint."""


def check_checkpoint_dir(ckpt_dir: str) -> None:
    """Fail early, before any expensive work, when a local checkpoint folder is unusable."""
    if not os.path.exists(ckpt_dir):
        if "/" in ckpt_dir and not ckpt_dir.startswith((".", "/")) and ckpt_dir.count("/") == 1:
            return  # looks like a hub id (owner/name): let the hub path try it
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' does not exist. Pass the folder written by "
                              f"save_pretrained (config.json + model.safetensors) or a hub id.")
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' is a file, not a folder; pass the folder holding config.json.")
    if not os.access(ckpt_dir, os.R_OK | os.X_OK):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' is not readable; check its permissions.")
    if not os.path.isfile(os.path.join(ckpt_dir, "config.json")):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' has no config.json; it is not a HuggingFace "
                              f"checkpoint folder (save one with model.save_pretrained).")
    if not any(os.path.isfile(os.path.join(ckpt_dir, w)) for w in WEIGHT_FILES):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' has no weights (none of {', '.join(WEIGHT_FILES)}).")


def load_config(ckpt_dir: str):
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(ckpt_dir)
    except Exception as e:
        raise CheckpointError(f"cannot read the config of '{ckpt_dir}': {e}") from None


def load_model(ckpt_dir: str, head: str):
    """head: 'classification' or 'qa'. Weight/config mismatches are an error, not a warning."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
    try:
        model, info = cls.from_pretrained(ckpt_dir, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot load the weights of '{ckpt_dir}' as a {head} model: "
                              f"{str(e).splitlines()[0][:500]}") from None
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    mismatched = info.get("mismatched_keys", [])
    if mismatched:
        raise CheckpointError(f"the weights of '{ckpt_dir}' do not match its config.json "
                              f"(e.g. {list(mismatched)[:3]}); re-save the checkpoint with save_pretrained.")
    if missing:
        what = "question-answering" if head == "qa" else "sequence-classification"
        raise CheckpointError(
            f"'{ckpt_dir}' lacks weights for a {what} model ({len(missing)} missing, e.g. "
            f"{sorted(missing)[:3]}). It is probably a bare encoder or a checkpoint for another head: "
            f"fine-tune it first (scripts/finetune.py, or scripts/finetune_qa.py for squad) or pick the matching --task_name.")
    model.eval()
    return model


def load_tokenizer(ckpt_dir: str, model_name: str | None):
    from transformers import AutoTokenizer
    errors = []
    for source in [ckpt_dir] + ([model_name] if model_name else []):
        try:
            return AutoTokenizer.from_pretrained(source)
        except Exception as e:  # missing files, offline hub, ...
            errors.append(f"{source}: {str(e).splitlines()[0][:200]}")
    raise CheckpointError(
        "no tokenizer found (" + "; ".join(errors) + "). Save the tokenizer into --ckpt_dir "
        "(tokenizer.save_pretrained) or pass --model_name naming the base model.")
