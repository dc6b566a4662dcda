"""Saving and loading physically pruned models.

The folder has the HuggingFace layout (config.json, model.safetensors, tokenizer files) plus
pruning.json, which records which original heads and neurons every layer kept. The layers have
uneven widths, so config.json also carries `pruned_shapes` (the sizes that differ from what the
config builds) and an `auto_map` to modeling_pruned.py, a subclass of the library's model that
applies them (utils/hf_native.py): `AutoModelFor...from_pretrained(path, trust_remote_code=True)`
and `pipeline(..., trust_remote_code=True)` load it. `load_pruned` applies the same record with
the same code (utils/pruned_modeling.py) without running code from the folder; for folders saved
before the record existed it shrinks each layer from pruning.json's kept units with the code that
pruned it (prune/physical.py). Weights load strictly. The original checkpoint is not needed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

PRUNING_FILE = "pruning.json"
FORMAT = "physically-pruned-encoder"
FORMAT_VERSION = 1


class PrunedModelError(ValueError):
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


def save_pruned(model, tokenizer, path: str, shapes: dict, overwrite: bool = True) -> dict:
    """Write the pruned model to `path` atomically; returns what pruning.json holds.

    Everything is written into a temporary folder next to `path` and renamed into place, so `path`
    is either the previous content or the complete new model, never half of one.
    """
    from prune.physical import count_parameters
    from utils.hf_native import make_native

    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it")
    tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=parent)
    try:
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
            **{k: shapes[k] for k in ("num_layers", "num_heads", "head_dim", "ffn_dim", "hidden_size",
                                      "heads_per_layer", "neurons_per_layer", "kept_heads", "kept_neurons")},
        }
        with open(os.path.join(tmp, PRUNING_FILE), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=os.path.basename(path) + ".old-", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def read_pruning_info(path: str) -> dict:
    file = os.path.join(path, PRUNING_FILE)
    if not os.path.isfile(file):
        raise PrunedModelError(f"'{path}' has no {PRUNING_FILE}; it is not a folder written by save_pruned "
                               f"(an unpruned checkpoint loads with from_pretrained)")
    with open(file) as f:
        info = json.load(f)
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise PrunedModelError(f"{file} has format {info.get('format')!r} version {info.get('format_version')!r}; "
                               f"this tool reads {FORMAT!r} version {FORMAT_VERSION}")
    return info


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

    from utils.hf_native import SHAPES_KEY

    info = read_pruning_info(path)
    config = AutoConfig.from_pretrained(path)
    if getattr(config, SHAPES_KEY, None) is not None:
        model = _build_from_record(config, info)
    else:
        model = _build_from_masks(config, info)
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


def _build_from_record(config, info: dict):
    from utils.arch import bind
    from utils.pruned_modeling import apply_pruned_shapes

    model = _build(_model_class(config), config)
    apply_pruned_shapes(model, config.pruned_shapes)
    arch = bind(model)
    built = ([arch.heads_in_layer(i) for i in range(arch.num_layers)],
             [arch.neurons_in_layer(i) for i in range(arch.num_layers)])
    if built != (info["heads_per_layer"], info["neurons_per_layer"]):
        raise PrunedModelError(f"config.json's pruned_shapes build (heads, neurons) per layer {built}, but "
                               f"{PRUNING_FILE} records {(info['heads_per_layer'], info['neurons_per_layer'])}: "
                               f"the folder's files do not match")
    return model


def _build_from_masks(config, info: dict):
    """Folders saved before config.json carried pruned_shapes: prune again from the kept units."""
    from prune.physical import masks_from_shapes, physically_prune
    from utils.arch import bind

    for key in ("heads_per_layer", "ffn_dims_per_layer"):
        if hasattr(config, key):
            delattr(config, key)
    model = _build(_model_class(config), config)
    arch = bind(model)
    expected = (arch.num_layers, arch.num_heads, arch.head_dim, arch.ffn_dim)
    recorded = (info["num_layers"], info["num_heads"], info["head_dim"], info["ffn_dim"])
    if expected != recorded:
        raise PrunedModelError(f"{PRUNING_FILE} describes (layers, heads, head size, ffn) = {recorded} but "
                               f"config.json builds {expected}")
    physically_prune(model, arch, *masks_from_shapes(info))
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
