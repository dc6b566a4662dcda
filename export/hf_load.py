"""Loading physically pruned models saved by `export.hf_folder.save_pruned`.

The folder records, in config.json's `pruned_shapes`, every module whose size differs from what the
config builds; `load_pruned` builds the library class, applies that record and loads the weights
strictly (what `AutoModel*.from_pretrained(path, trust_remote_code=True)` does through the folder's
modeling_pruned.py). Folders saved before the record existed are rebuilt by pruning again from the
kept units in pruning.json.
"""
from __future__ import annotations

import os

import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.initialization import no_init_weights

from arch import bind
from arch.pruned_modeling import apply_pruned_shapes
from export.hf_folder import PRUNING_FILE, PrunedModelError, read_pruning_info
from export.hf_native import SHAPES_KEY
from prune.physical import add_biases, masks_from_shapes, physically_prune
from utils.checkpoint import check_causal, load_config, load_model


def load_pruned(path: str, device="cpu"):
    """Rebuild a model saved by `save_pruned`: config -> model -> same shrinking -> strict weights."""

    info = read_pruning_info(path)
    if info.get("stock"):        # a plain checkpoint of its family (export/stock.py): transformers builds it
        return _load_stock(path, device)
    config_file = os.path.join(path, "config.json")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:      # unreadable JSON, an unknown model_type, ...
        raise PrunedModelError(f"{config_file} cannot be read ({type(e).__name__}: {_first_line(e)}); it was "
                               f"edited or damaged: restore it from a copy or save the model again") from None
    try:
        if getattr(config, SHAPES_KEY, None) is not None:
            model = _build_from_record(config, info)
        else:
            model = _build_from_masks(config, info)
    except PrunedModelError:
        raise
    except Exception as e:      # a pruned_shapes record that names modules or sizes the model does not have
        raise PrunedModelError(f"{config_file}: its {SHAPES_KEY} do not build a model of this architecture "
                               f"({type(e).__name__}: {_first_line(e)}); it was edited or damaged: restore it "
                               f"from a copy or save the model again") from None
    model.to(device)
    state = _load_weights(path, device)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shapes that differ between the weights and what config.json builds
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), _first_line(e))
        raise PrunedModelError(f"the weights in '{path}' do not match the shapes that {config_file} "
                               f"({SHAPES_KEY}) and {PRUNING_FILE} describe ({detail[:300]}); one of the "
                               f"files was edited or belongs to another model: save the model again") from None
    # save_pretrained leaves out the second name of a tied (shared) tensor; nothing else may be absent
    shared = _tied_names(model)
    missing = [k for k in missing if k not in shared]
    if missing or unexpected:
        raise PrunedModelError(f"the weights in '{path}' do not match the pruned shapes: missing {missing[:5]}, "
                               f"unexpected {list(unexpected)[:5]}; one of the files was edited or belongs to "
                               f"another model: save the model again")
    model.eval()
    return model


def _build_from_record(config, info: dict):
    model = _build(_model_class(config), config)
    model.tie_weights()      # tied input/output embeddings share one tensor, saved once
    apply_pruned_shapes(model, config.pruned_shapes)
    arch = bind(model, info.get("attention_unit", "group"))
    built = ([arch.head_units_in_layer(i) for i in range(arch.num_layers)],
             [arch.neurons_in_layer(i) for i in range(arch.num_layers)])
    if built != (info["heads_per_layer"], info["neurons_per_layer"]):
        raise PrunedModelError(f"config.json's pruned_shapes build (heads, neurons) per layer {built}, but "
                               f"{PRUNING_FILE} records {(info['heads_per_layer'], info['neurons_per_layer'])}: "
                               f"the folder's files do not match")
    return model


def _build_from_masks(config, info: dict):
    """Folders saved before config.json carried pruned_shapes: prune again from the kept units."""

    for key in ("heads_per_layer", "ffn_dims_per_layer"):
        if hasattr(config, key):
            delattr(config, key)
    model = _build(_model_class(config), config)
    model.tie_weights()      # tied input/output embeddings share one tensor, saved once
    arch = bind(model, info.get("attention_unit", "group"))
    expected = (arch.num_layers, arch.num_head_units, arch.head_dim, arch.ffn_dim)
    recorded = (info["num_layers"], info["num_heads"], info["head_dim"], info["ffn_dim"])
    if expected != recorded:
        raise PrunedModelError(f"{PRUNING_FILE} describes (layers, head units, head size, ffn) = {recorded} but "
                               f"config.json builds {expected}")
    add_biases(arch, info.get("biased", []))
    physically_prune(model, arch, *masks_from_shapes(info))
    return model


def _tied_names(model) -> set:
    by_ptr: dict = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.numel():
            by_ptr.setdefault(p.data_ptr(), []).append(name)
    return {n for names in by_ptr.values() if len(names) > 1 for n in names}


def _model_class(config):
    names = config.architectures or []
    if not names or not hasattr(transformers, names[0]):
        raise PrunedModelError(f"config.json names no model class transformers {transformers.__version__} knows "
                               f"(architectures: {names})")
    return getattr(transformers, names[0])


def _build(cls, config):
    with no_init_weights():
        return cls._from_config(config)


def _load_weights(path: str, device) -> dict:
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise PrunedModelError(f"'{path}' holds no .safetensors weights")
    state = {}
    for name in files:
        file = os.path.join(path, name)
        try:
            state.update(load_file(file, device=str(device)))
        except MemoryError:
            raise
        except Exception as e:   # safetensors' SafetensorError on a truncated or damaged file, OSError
            raise PrunedModelError(f"{file} cannot be read ({type(e).__name__}: {_first_line(e)}); the file is "
                                   f"truncated or damaged: copy it again, or save the model again "
                                   f"(main.py --save_pruned)") from None
    return state


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def _load_stock(path: str, device):
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
    except Exception as e:      # a damaged file of the folder: name it and the fix, not the library's error
        raise PrunedModelError(f"cannot load the stock checkpoint in '{path}' ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:300]}); the folder is damaged: copy it again, or save the "
                               f"model again (main.py --save_pruned)") from None
    return model.to(device).eval()


def load_causal_lm(folder: str, device="cpu"):
    """A saved causal LM: a pruned folder (pruning.json) through load_pruned, else a plain HF checkpoint (its
    errors named as main.py names them). Anything that is not a causal LM (an encoder, a classifier) is refused:
    its "perplexity" or zero-shot score would not be one."""
    if os.path.isfile(os.path.join(folder, PRUNING_FILE)):
        model = load_pruned(folder, device=device)
        if not type(model).__name__.endswith("ForCausalLM"):
            raise PrunedModelError(f"'{folder}' holds a pruned {type(model).__name__}, not a causal language model; "
                                   f"this takes a decoder LLM pruned with --task_name causal_lm")
        check_causal(model, folder)
        return model
    saved_as = getattr(load_config(folder), "architectures", None) or []
    if saved_as and not any(str(a).endswith("ForCausalLM") for a in saved_as):
        raise PrunedModelError(f"'{folder}' holds a {saved_as[0]}, not a causal language model (config.json "
                               f"architectures); this takes a decoder LLM such as Llama, Qwen2 or Mistral")
    return load_model(folder, "causal_lm", AutoModelForCausalLM).to(device)
