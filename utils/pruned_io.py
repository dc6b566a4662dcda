"""Saving and loading physically pruned models.

The folder has the HuggingFace layout (config.json, model.safetensors, tokenizer files) plus
pruning.json, which records which original heads and neurons every layer kept. A plain
`from_pretrained` cannot load it (the layers have uneven widths); `load_pruned` builds the model
from config.json, shrinks each layer to the recorded shapes with the same code that pruned it
(prune/physical.py), and loads the weights strictly. The original checkpoint is not needed.
"""
from __future__ import annotations

import json
import os

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
                place: bool = True) -> dict:
    """Write the pruned model to `path` atomically; returns what pruning.json holds.

    Everything is written into a temporary folder next to `path` and renamed into place, so `path`
    is either the previous content or the complete new model, never half of one. With
    place=False the folder is left staged (returned under "staged_dir", not part of pruning.json):
    main.py renames it into place with utils.safety.place_dir right before results.json.
    """
    from prune.physical import count_parameters
    from utils.safety import discard_dir, place_dir, stage_dir

    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it")
    tmp = stage_dir(path)
    try:
        model.save_pretrained(tmp)
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
            **({"run_id": run_id} if run_id else {}),
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


OPTIONAL_FIELDS = {"run_id": _text, "heads_per_unit": _positive_int, "biased": _biased}


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


def _model_class(config):
    import transformers
    names = config.architectures or []
    if not names or not hasattr(transformers, names[0]):
        raise PrunedModelError(f"config.json names no model class transformers {transformers.__version__} knows "
                               f"(architectures: {names})")
    return getattr(transformers, names[0])


def _build(cls, config):
    try:
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:  # pragma: no cover
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = None
    if no_init_weights is None:  # pragma: no cover
        return cls._from_config(config)
    with no_init_weights():
        return cls._from_config(config)


def _load_weights(path: str, device) -> dict:
    from safetensors.torch import load_file
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise PrunedModelError(f"'{path}' holds no .safetensors weights")
    state = {}
    for name in files:
        state.update(load_file(os.path.join(path, name), device=str(device)))
    return state


def load_pruned(path: str, device="cpu"):
    """Rebuild a model saved by `save_pruned`: config -> model -> same shrinking -> strict weights."""
    from transformers import AutoConfig

    from prune.physical import add_biases, masks_from_shapes, physically_prune
    from utils.arch import bind

    info = read_pruning_info(path)
    config = AutoConfig.from_pretrained(path)
    for key in ("heads_per_layer", "ffn_dims_per_layer"):
        if hasattr(config, key):
            delattr(config, key)
    model = _build(_model_class(config), config)
    model.tie_weights()      # tied input/output embeddings share one tensor, saved once
    arch = bind(model)
    expected = (arch.num_layers, arch.num_head_units, arch.head_dim, arch.ffn_dim)
    recorded = (info["num_layers"], info["num_heads"], info["head_dim"], info["ffn_dim"])
    if expected != recorded:
        raise PrunedModelError(f"{PRUNING_FILE} describes (layers, head units, head size, ffn) = {recorded} but "
                               f"config.json builds {expected}")
    add_biases(arch, info.get("biased", []))
    physically_prune(model, arch, *masks_from_shapes(info))
    model.to(device)
    state = _load_weights(path, device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # save_pretrained leaves out the second name of a tied (shared) tensor; nothing else may be absent
    shared = _tied_names(model)
    missing = [k for k in missing if k not in shared]
    if missing or unexpected:
        raise PrunedModelError(f"the weights in '{path}' do not match the pruned shapes: missing {missing[:5]}, "
                               f"unexpected {list(unexpected)[:5]}")
    model.eval()
    return model


def _tied_names(model) -> set:
    by_ptr: dict = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.numel():
            by_ptr.setdefault(p.data_ptr(), []).append(name)
    return {n for names in by_ptr.values() if len(names) > 1 for n in names}


def checkpoint_summary(model, path: str | None = None) -> dict:
    """Parameter count and (when `path` is a saved folder) bytes of its weight files."""
    from prune.physical import count_parameters
    out = {"parameters": count_parameters(model)}
    if path is not None:
        out["weights_bytes"] = weights_size_bytes(path)
        out["folder_bytes"] = _dir_size(path)
    return out
