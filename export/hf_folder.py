"""The folder format of physically pruned models: saving, reading and checking pruning.json.

The folder has the HuggingFace layout (config.json, model.safetensors, tokenizer files) plus
pruning.json, which records which original heads and neurons every layer kept. The layers have
uneven widths, so config.json also carries `pruned_shapes` (the sizes that differ from what the
config builds) and an `auto_map` to modeling_pruned.py, a subclass of the library's model that
applies them (export/hf_native.py): `AutoModelFor...from_pretrained(path, trust_remote_code=True)`
and `pipeline(..., trust_remote_code=True)` load it; `export.hf_load.load_pruned` applies the same
record with the same code (arch/pruned_modeling.py) without running code from the folder.
"""
from __future__ import annotations

import json
import os

from export.hf_native import make_native
from export.stock import save_stock
from prune.physical import count_parameters
from utils.atomic import discard_dir, place_dir, stage_dir
from utils.errors import UserError

PRUNING_FILE = "pruning.json"
FORMAT = "physically-pruned-encoder"
FORMAT_VERSION = 1


class PrunedModelError(UserError):
    """A folder that is not a usable pruned model."""


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def weights_size_bytes(path: str) -> int:
    """On-disk size of a checkpoint folder's weight files (safetensors / bin, shards included)."""
    total = 0
    for name in os.listdir(path):
        if name.endswith((".safetensors", ".bin")):
            total += os.path.getsize(os.path.join(path, name))
    return total


def save_pruned(model, tokenizer, path: str, shapes: dict, overwrite: bool = True, run_id: str | None = None,
                place: bool = True, width_multiple: int | None = None) -> dict:
    """Write the pruned model to `path` atomically; returns what pruning.json holds.

    Everything is written into a temporary folder next to `path` and renamed into place, so `path`
    is either the previous content or the complete new model, never half of one. With
    place=False the folder is left staged (returned under "staged_dir", not part of pruning.json):
    main.py renames it into place with run.safety.place_dir right before results.json.
    """

    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it")
    tmp = stage_dir(path)
    try:
        stock = save_stock(model, None, tmp)       # same widths in every layer: the family's own config
        if stock is None:
            model.save_pretrained(tmp)
            make_native(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": (model.config.architectures or [type(model).__name__])[0],
            "model_type": model.config.model_type,
            "parameters": count_parameters(model),
            **{k: shapes[k] for k in ("num_layers", "num_heads", "heads_per_unit", "head_dim", "ffn_dim",
                                      "hidden_size", "heads_per_layer", "neurons_per_layer", "kept_heads",
                                      "kept_neurons", "biased")},
            **({"attention_unit": shapes["attention_unit"]} if shapes.get("attention_unit", "group") != "group" else {}),
            **({"run_id": run_id} if run_id else {}),
            **({"width_multiple": width_multiple} if width_multiple else {}),   # FFN widths are multiples of it
            **({"stock": stock} if stock else {}),
        }
        with open(os.path.join(tmp, PRUNING_FILE), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        if not place:
            return {**info, "staged_dir": tmp}
        place_dir(tmp, path)
    except BaseException:
        discard_dir(tmp)
        raise
    return info


def read_pruning_info(path: str) -> dict:
    file = os.path.join(path, PRUNING_FILE)
    if not os.path.isfile(file):
        raise PrunedModelError(f"'{path}' has no {PRUNING_FILE}; it is not a folder written by save_pruned "
                               f"(an unpruned checkpoint loads with from_pretrained)")
    try:
        with open(file, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PrunedModelError(f"{file} is not readable JSON ({e}); save the model again") from None
    if not isinstance(info, dict):
        raise PrunedModelError(f"{file} holds a {type(info).__name__}, not a JSON object; save the model again")
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise PrunedModelError(f"{file} has format {info.get('format')!r} version {info.get('format_version')!r}; "
                               f"this tool reads {FORMAT!r} version {FORMAT_VERSION}")
    try:
        return validate_pruning_info(info)
    except PrunedModelError as e:
        raise PrunedModelError(f"{file}: {e}; it was edited or damaged: save the model again") from None


# Field -> check. Each check gets (value, info) and returns an error text or None; add new fields here.
def _positive_int(value, info):
    return None if _is_int(value) and value > 0 else "must be a positive integer"


def _count(value, info):
    return None if _is_int(value) and value >= 0 else "must be a non-negative integer"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _per_layer(bound):
    def check(value, info):
        if not isinstance(value, list) or len(value) != info.get("num_layers"):
            return f"must be a list of num_layers ({info.get('num_layers')}) counts"
        if not all(_is_int(v) and 0 <= v <= info.get(bound, -1) for v in value):
            return f"must hold counts between 0 and {bound} ({info.get(bound)})"
        return None
    return check


def _kept(bound, counts):
    def check(value, info):
        if not isinstance(value, list) or len(value) != info.get("num_layers"):
            return f"must be a list of num_layers ({info.get('num_layers')}) index lists"
        for layer, kept in enumerate(value):
            if not isinstance(kept, list) or not all(_is_int(i) for i in kept):
                return f"layer {layer} must be a list of integer indices"
            if kept != sorted(set(kept)) or any(not 0 <= i < info.get(bound, 0) for i in kept):
                return f"layer {layer} must hold sorted, unique indices in 0..{info.get(bound, 0) - 1}"
            if isinstance(info.get(counts), list) and layer < len(info[counts]) and len(kept) != info[counts][layer]:
                return f"layer {layer} keeps {len(kept)} but {counts} says {info[counts][layer]}"
        return None
    return check


def _text(value, info):
    return None if isinstance(value, str) and value else "must be a non-empty string"


PRUNING_FIELDS = {     # required fields, checked in this order (later checks rely on earlier ones)
    "num_layers": _positive_int, "num_heads": _positive_int, "head_dim": _positive_int,
    "ffn_dim": _positive_int, "hidden_size": _positive_int, "architecture": _text, "model_type": _text,
    "parameters": _count,
    "heads_per_layer": _per_layer("num_heads"), "neurons_per_layer": _per_layer("ffn_dim"),
    "kept_heads": _kept("num_heads", "heads_per_layer"), "kept_neurons": _kept("ffn_dim", "neurons_per_layer"),
}


def _biased(value, info):
    if not isinstance(value, list):
        return "must be a list of [layer, role] pairs"
    for entry in value:
        if (not isinstance(entry, list) or len(entry) != 2 or not _is_int(entry[0])
                or not 0 <= entry[0] < info.get("num_layers", 0) or entry[1] not in ("attn_out", "ffn_out")):
            return "must hold [layer, 'attn_out' | 'ffn_out'] pairs with layer in 0..num_layers-1"
    return None


def _stock(value, info):
    if not isinstance(value, dict) or not isinstance(value.get("architecture"), str):
        return "must be the stock config's record (a dict naming its architecture)"
    return None


def _attention_unit(value, info):
    return None if value in ("group", "query") else "must be 'group' or 'query'"


OPTIONAL_FIELDS = {"run_id": _text, "heads_per_unit": _positive_int, "biased": _biased, "stock": _stock,
                   "width_multiple": _positive_int, "attention_unit": _attention_unit}


def validate_pruning_info(info: dict) -> dict:
    """Check every field of a pruning.json; the first malformed one is a PrunedModelError naming it."""
    if not isinstance(info, dict):
        raise PrunedModelError(f"pruning.json must hold a JSON object, not {type(info).__name__}")
    for name, check in PRUNING_FIELDS.items():
        if name not in info:
            raise PrunedModelError(f"field '{name}' is missing")
        problem = check(info[name], info)
        if problem:
            raise PrunedModelError(f"field '{name}' {problem} (found {_short(info[name])})")
    for name, check in OPTIONAL_FIELDS.items():
        problem = check(info[name], info) if name in info else None
        if problem:
            raise PrunedModelError(f"field '{name}' {problem} (found {_short(info[name])})")
    return info


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
