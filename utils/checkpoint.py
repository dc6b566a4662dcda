"""Loading a fine-tuned checkpoint with errors that say what is wrong and how to fix it."""
from __future__ import annotations

import logging
import os

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForQuestionAnswering,
                          AutoModelForSequenceClassification, AutoTokenizer)

from utils.errors import UserError
import socket
from urllib.parse import urlparse
import json

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class CheckpointError(UserError):
    """A user-fixable problem with the checkpoint."""


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set: a hub id cannot be fetched."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub's host (instead of the library's long retries)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def check_local_or_hub(value: str, flag: str) -> None:
    """A name that does not exist locally is only worth a hub look-up if it can be one: not a path
    (./x, /x, or a folder whose parent exists here), the hub not switched off, and reachable. Otherwise
    say "no such local folder" at once instead of after the library's retries."""
    parent = os.path.dirname(value.rstrip(os.sep))
    looks_like_path = (value.startswith((".", os.sep, "~")) or value.count("/") != 1
                       or (parent and os.path.isdir(parent)))
    why = ("it is a path, not a hub id of the form owner/name" if looks_like_path else
           "HF_HUB_OFFLINE is set, so it is not looked up on the hub" if hub_offline() else
           "and the HuggingFace hub cannot be reached to look it up as a hub id" if not hub_reachable() else None)
    if why:
        raise CheckpointError(f"{flag} '{value}' does not exist: no such local folder ({why}). Check the path (relative paths "
                              f"start from {os.getcwd()}); pass the folder written by save_pretrained "
                              f"(config.json + model.safetensors), or a hub id when online.")


def check_checkpoint_dir(ckpt_dir: str) -> None:
    """Fail early, before any expensive work, when a local checkpoint folder is unusable."""
    if not os.path.exists(ckpt_dir):
        check_local_or_hub(ckpt_dir, "--ckpt_dir")
        return  # looks like a hub id (owner/name) and the hub answers: let the hub path try it
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' is a file, not a folder; pass the folder holding config.json.")
    if not os.access(ckpt_dir, os.R_OK | os.X_OK):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' is not readable; check its permissions.")
    if not os.path.isfile(os.path.join(ckpt_dir, "config.json")):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' has no config.json; it is not a HuggingFace "
                              f"checkpoint folder (save one with model.save_pretrained).")
    if not any(os.path.isfile(os.path.join(ckpt_dir, w)) for w in WEIGHT_FILES):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' has no weights (none of {', '.join(WEIGHT_FILES)}).")
    if os.path.isfile(os.path.join(ckpt_dir, "pruning.json")) or _has_pruned_shapes(ckpt_dir):
        raise CheckpointError(f"--ckpt_dir '{ckpt_dir}' is a model this tool already pruned (it has pruning.json "
                              f"and config.json's pruned_shapes); it cannot be pruned again. Pass the original "
                              f"fine-tuned checkpoint with a smaller --constraint instead, or use this folder as it "
                              f"is (export.hf_load.load_pruned, or from_pretrained(..., trust_remote_code=True)).")


def _has_pruned_shapes(ckpt_dir: str) -> bool:
    try:
        with open(os.path.join(ckpt_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False                     # load_config says what is wrong with it
    return isinstance(config, dict) and "pruned_shapes" in config


def load_config(ckpt_dir: str):
    try:
        config = AutoConfig.from_pretrained(ckpt_dir)
    except Exception as e:
        hint = ("re-save it with model.save_pretrained" if os.path.isdir(ckpt_dir) else
                "pass a local checkpoint folder, or connect to the HuggingFace hub for a hub id")
        raise CheckpointError(f"cannot read the config of '{ckpt_dir}' ({_first_line(e)}); {hint}.") from None
    _check_heads(config, ckpt_dir)
    _check_label_maps(config, ckpt_dir)
    return config


def _check_heads(config, ckpt_dir: str) -> None:
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and (heads <= 0 or hidden % heads):
        raise CheckpointError(f"{ckpt_dir}/config.json: the hidden size {hidden} is not a multiple of the "
                              f"{heads} attention heads; config.json is damaged or belongs to another model "
                              f"(the weights are not the problem): restore the one saved with these weights.")


def _check_label_maps(config, ckpt_dir: str) -> None:
    """id2label and label2id must map 0..N-1 and N names one to one, or labels get silently mixed up."""
    id2label, label2id = getattr(config, "id2label", None) or {}, getattr(config, "label2id", None) or {}
    problem = None
    try:
        ids = sorted(int(k) for k in id2label)
        values = sorted(int(v) for v in label2id.values())
    except (TypeError, ValueError):
        problem = "holds ids that are not integers"
    else:
        n = len(id2label)
        if ids != list(range(n)):
            problem = f"id2label keys {ids[:8]} are not 0..{n - 1}"
        elif label2id and values != list(range(n)):
            problem = f"label2id ids {values[:8]} are not a permutation of 0..{n - 1}"
    if problem:
        raise CheckpointError(f"{ckpt_dir}/config.json: its label maps are inconsistent ({problem}); fix "
                              f"id2label/label2id in config.json so that they map 0..N-1 to N label names.")


def check_task_fields(config, ckpt_dir: str, task_name: str, wanted: str | None) -> None:
    """config.json fields that change the loss or the outputs must fit the task (wanted: the problem_type the
    task's loss is, None when it has none), or the gradients and the metric are computed for another problem
    than the one asked."""
    where = f"{ckpt_dir}/config.json" if os.path.isdir(ckpt_dir) else f"the config of '{ckpt_dir}'"
    problem = getattr(config, "problem_type", None)
    if wanted is not None and problem is not None:
        if problem != wanted:
            raise CheckpointError(f"{where} has problem_type '{problem}', but {task_name} is a "
                                  f"{wanted.replace('_', '-')} task: the loss behind the importance scores would be "
                                  f"the wrong one. Set \"problem_type\": \"{wanted}\" in config.json (or remove "
                                  f"it), or pick the --task_name the checkpoint was fine-tuned for.")
    if getattr(config, "is_encoder_decoder", False):
        raise CheckpointError(f"{where} has is_encoder_decoder true (model_type {config.model_type}); this tool "
                              f"prunes encoders and decoder-only language models: pass one of those.")
    for field, good in (("return_dict", True), ("torchscript", False)):
        value = config.to_dict().get(field, good) if hasattr(config, "to_dict") else good
        if value != good:
            raise CheckpointError(f"{where} has {field}: {json_bool(value)}, which changes what the model returns; "
                                  f"set it to {json_bool(good)} (or remove it) in config.json.")


def json_bool(value) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


def check_fits(tokenizer, config, speed_seq_len: int | None = None) -> None:
    """The tokenizer's ids must index the embeddings; --speed_seq_len must fit the position table."""
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary (vocab_size "
                              f"in config.json) has {vocab}: ids above {vocab - 1} would index past the "
                              f"embeddings. Use the tokenizer the model was trained with (--model_name), or "
                              f"resize the embeddings (model.resize_token_embeddings) and save again.")
    positions = getattr(config, "max_position_embeddings", None)
    if speed_seq_len and isinstance(positions, int):
        usable = positions - (config.pad_token_id + 1 if config.model_type in _OFFSET_POSITIONS else 0)
        if speed_seq_len > usable:
            raise CheckpointError(f"--speed_seq_len {speed_seq_len} is longer than the model's position table "
                                  f"({usable} tokens); pass --speed_seq_len {usable} or less.")


_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")    # positions start after the padding id


def _first_line(e: Exception, limit: int = 300) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:limit] if text else type(e).__name__)


def _saved_head(config) -> str | None:
    """'qa' or 'classification' when config.json says which head the checkpoint was saved with."""
    names = " ".join(getattr(config, "architectures", None) or [])
    if "QuestionAnswering" in names:
        return "qa"
    if "SequenceClassification" in names:
        return "classification"
    return None


def _check_finite(model, ckpt_dir: str) -> None:
    """A NaN or inf weight makes every loss and gradient NaN: fail before any data or gradient work."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise CheckpointError(
            f"the weights of '{ckpt_dir}' hold NaN or inf values in {len(bad)} tensor(s) (e.g. {bad[:3]}); "
            f"the checkpoint is corrupt or its fine-tuning diverged. Re-save it from a good copy or fine-tune again.")


def load_model(ckpt_dir: str, head: str, auto_class=None):
    """head: 'classification', 'qa', 'causal_lm' or 'embedding' (for the messages); auto_class: the task's transformers Auto
    class (default: the one of that head). Weight/config mismatches are an error, not a warning."""
    cls = auto_class or {"qa": AutoModelForQuestionAnswering, "causal_lm": AutoModelForCausalLM}.get(
        head, AutoModelForSequenceClassification)
    try:   # mismatched shapes are reported below by name, instead of transformers' own error
        model, info = cls.from_pretrained(ckpt_dir, output_loading_info=True, ignore_mismatched_sizes=True)
    except MemoryError:
        raise
    except Exception as e:   # OSError, safetensors' SafetensorError on a corrupt file, ...
        raise CheckpointError(f"cannot load the weights of '{ckpt_dir}' as a {head} model "
                              f"({type(e).__name__}: {_first_line(e, 500)}); the weight file is corrupt or "
                              f"incomplete: re-save the checkpoint with save_pretrained.") from None
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    mismatched = sorted(info.get("mismatched_keys", []) or [], key=lambda m: str(m[0]) if isinstance(m, tuple) else str(m))
    if mismatched:
        shown = [f"{m[0]}: {list(m[1])} in the file, {list(m[2])} by config.json" if isinstance(m, tuple) and len(m) == 3
                 else str(m) for m in mismatched[:3]]
        raise CheckpointError(f"the weights of '{ckpt_dir}' do not match its config.json ({len(mismatched)} "
                              f"tensor(s) of the wrong shape, e.g. {'; '.join(shown)}). The config.json belongs "
                              f"to another model: restore the one saved with these weights (save_pretrained).")
    if missing:
        what = {"qa": "question-answering", "causal_lm": "causal language", "embedding": "sentence-embedding"}.get(
            head, "sequence-classification")
        saved = _saved_head(model.config)
        if saved and saved != head:
            fix = ("it was saved with a question-answering head: use --task_name squad or squad_v2"
                   if saved == "qa" else "it was saved with a sequence-classification head: use a GLUE --task_name")
            fix += (", or fine-tune it for this task first (python -m scripts.finetune_qa for squad, python -m scripts.finetune "
                    "for GLUE).")
        else:
            fix = ("it is probably a bare encoder or a checkpoint for another head: fine-tune it first "
                   "(python -m scripts.finetune, or python -m scripts.finetune_qa for squad) or pick the matching --task_name.")
        raise CheckpointError(
            f"'{ckpt_dir}' lacks weights for a {what} model ({len(missing)} missing, e.g. "
            f"{sorted(missing)[:3]}); {fix}")
    _check_finite(model, ckpt_dir)
    model.eval()
    if head == "causal_lm":
        check_causal(model, ckpt_dir)
    return model


def check_causal(model, ckpt_dir: str) -> None:
    """A causal LM's prediction at a position must not depend on later tokens; a masked-LM encoder loaded
    as a causal LM (BERT's LM head with is_decoder false) sees them, and its "perplexity" is not one.
    Probe: change the last of a few tokens and compare the logits at the earlier positions."""
    vocab = getattr(model.config, "vocab_size", None) or 8
    try:
        device = next(p.device for p in model.parameters() if p.device.type != "meta")
    except StopIteration:
        return
    ids = (torch.arange(6) * 7 + 3) % max(vocab - 1, 2) + 1
    other = ids.clone()
    other[-1] = (ids[-1] + 1) % max(vocab - 1, 2) + 1
    with torch.no_grad():
        logits = model(input_ids=torch.stack([ids, other]).to(device)).logits.float()
    if not torch.allclose(logits[0, :-1], logits[1, :-1], rtol=1e-3, atol=1e-4):
        flag = getattr(model.config, "is_decoder", None)
        raise CheckpointError(
            f"'{ckpt_dir}' is not a causal language model: its predictions at a position change with later tokens "
            f"(model_type {model.config.model_type}, {type(model).__name__}"
            + (f", is_decoder {json_bool(flag)} in config.json" if flag is not None else "")
            + "), so a perplexity of it would not be a causal one. --task_name causal_lm takes a decoder-only "
              "language model (Llama, Qwen2/3, Mistral, ...); prune an encoder with a GLUE or SQuAD --task_name "
              "after fine-tuning it.")


# Files that hold a tokenizer's vocabulary (one is enough); transformers 5 builds an empty tokenizer
# that maps every word to [UNK] from a folder that has none of them, instead of failing.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "sentencepiece.model")


def load_tokenizer(ckpt_dir: str, model_name: str | None):
    errors = []
    for flag, source in [("--ckpt_dir", ckpt_dir)] + ([("--model_name", model_name)] if model_name else []):
        if not os.path.exists(source):
            try:
                check_local_or_hub(source, flag)
            except CheckpointError as e:
                errors.append(f"{source}: {str(e).split(': ', 1)[-1].split(' Check the path')[0]}")
                continue
        if os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, f)) for f in TOKENIZER_FILES):
            errors.append(f"{source}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
            continue
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as e:  # missing files, offline hub, ...
            errors.append(f"{source}: {_first_line(e, 200)}")
            continue
        if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
            errors.append(f"{source}: the tokenizer's vocabulary holds only special tokens")
            continue
        return tokenizer
    raise CheckpointError(
        "no tokenizer found (" + "; ".join(errors) + "). Save the tokenizer into --ckpt_dir "
        "(tokenizer.save_pretrained) or pass --model_name naming the base model.")
