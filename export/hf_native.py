"""Make a saved pruned folder loadable by plain HuggingFace calls.

    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)
    transformers.pipeline("text-classification", model=path, trust_remote_code=True)

`record_shapes` compares the pruned model with the library model its config builds and records
what differs, whatever the family: the Linear modules of another size, the attention blocks
that lost all their heads (modules with `_pruned_no_heads`), and integer attributes such as head
counts. `make_native` stores that record in config.json as `pruned_shapes`, writes
modeling_pruned.py (arch/pruned_modeling.py plus a subclass of the library class that applies
the record after building) and points config.json's `auto_map` at it.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import os

import torch
import torch.nn as nn
import transformers
from transformers.models.auto import modeling_auto

from arch import pruned_modeling
from arch.pruned_modeling import config_view, head_input_slices

log = logging.getLogger(__name__)

SHAPES_KEY = "pruned_shapes"
MODELING_FILE = "modeling_pruned.py"

# Auto classes a saved folder may be opened with, and the transformers table naming their models.
AUTO_CLASSES = {
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModel": "MODEL_MAPPING_NAMES",
}

_CLASS_TEMPLATE = '''

from transformers import {base} as _LibraryModel  # noqa: E402


class {name}(_LibraryModel):
    """{base} with the per-layer sizes of a physically pruned model (config.pruned_shapes)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_pruned_shapes(self, config.pruned_shapes)


# pipeline(...) checks the model's class name against its task's table, which names {base} but not this
# subclass, and logs a screenful of "not supported" (it works anyway): drop exactly that message.
quiet_pipeline_check("{name}")
'''


def library_class(model: nn.Module) -> type:
    """The transformers class the model is (or subclasses, when loaded from modeling_pruned.py)."""
    for cls in type(model).__mro__:
        if getattr(transformers, cls.__name__, None) is cls:
            return cls
    raise TypeError(f"{type(model).__name__} is not (a subclass of) a transformers model class")


def _reference(model: nn.Module) -> nn.Module:
    """The unpruned model the config builds, on the meta device (no memory, no initialisation)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, SHAPES_KEY):
        delattr(config, SHAPES_KEY)
    with torch.device("meta"):
        return library_class(model)(config)


def _linear_spec(module) -> list | None:
    if not isinstance(module, nn.Linear):
        return None
    return [module.in_features, module.out_features, module.bias is not None]


def _changed_numbers(module: nn.Module, ref: nn.Module | None) -> dict:
    out = {}
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if ref is None or getattr(ref, name, None) != value:
            out[name] = value
    return out


def record_shapes(model: nn.Module) -> dict:
    """{"linears": {path: [in, out, has_bias]}, "no_heads": {path: {"n_outputs", "out_proj"}},
    "attrs": {path: {name: number}}, "head_inputs": {path: {"inputs", "heads"}}, "config_views": {path: {name: value}},
    "removed": [path]}: what differs from the model the config builds ("removed": modules it builds that the model
    was loaded without, such as the pooler of a sentence-embedding encoder)."""
    ref = dict(_reference(model).named_modules())
    present = {path for path, _ in model.named_modules()}    # holds "", the model itself
    removed = [path for path in ref if path and path not in present and path.rpartition(".")[0] in present]
    linears, no_heads, attrs, head_inputs, config_views = {}, {}, {}, {}, {}
    for path, module in model.named_modules():
        spec = _linear_spec(module)
        if spec is not None:
            if spec != _linear_spec(ref.get(path)):
                linears[path] = spec
            continue
        if getattr(type(module), "_pruned_no_heads", False):
            no_heads[path] = {"n_outputs": module._n_outputs, "out_proj": module._out_proj_path}
        changed = _changed_numbers(module, ref.get(path))
        if changed:
            attrs[path] = changed
        slices = head_input_slices(module)
        if slices is not None:
            head_inputs[path] = slices
        overrides = config_view(module)
        if overrides is not None:
            config_views[path] = overrides
    record = {"linears": linears, "no_heads": no_heads, "attrs": attrs}
    if head_inputs:
        record["head_inputs"] = head_inputs
    if config_views:
        record["config_views"] = config_views
    if removed:
        record["removed"] = removed
    return record


def auto_classes(model: nn.Module) -> list[str]:
    """The Auto classes whose table maps this model type to the model's library class."""
    base, model_type = library_class(model).__name__, model.config.model_type
    found = []
    for auto, table in AUTO_CLASSES.items():
        names = getattr(modeling_auto, table, {}).get(model_type)
        if base == names or (isinstance(names, (tuple, list)) and base in names):
            found.append(auto)
    return found


def modeling_source(base: str) -> tuple[str, str]:
    """(class name, text of modeling_pruned.py) for a subclass of transformers.<base>."""
    name = "Pruned" + base
    return name, inspect.getsource(pruned_modeling) + _CLASS_TEMPLATE.format(base=base, name=name)


def make_native(model: nn.Module, folder: str) -> dict:
    """Write modeling_pruned.py into a folder saved by save_pretrained and extend its config.json
    (pruned_shapes, auto_map, architectures = the library class). Returns the shape record."""
    shapes = record_shapes(model)
    base = library_class(model).__name__
    name, source = modeling_source(base)
    with open(os.path.join(folder, MODELING_FILE), "w") as f:
        f.write(source)
    autos = auto_classes(model)
    if not autos:
        log.warning("transformers has no Auto class for %s; load it with modeling_pruned.%s.from_pretrained",
                    base, name)
    config_file = os.path.join(folder, "config.json")
    with open(config_file) as f:
        config = json.load(f)
    config["architectures"] = [base]     # save_pretrained wrote the subclass's name when reloaded
    config["auto_map"] = {auto: f"{MODELING_FILE[:-3]}.{name}" for auto in autos}
    config[SHAPES_KEY] = shapes
    with open(config_file, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return shapes
