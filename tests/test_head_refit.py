"""The task head's first Linear is found by running the model and refitted to the unpruned model's."""
import pytest
import torch

from prune.head_refit import _head_rows, find_head_linear, head_targets
from prune.masks import full_masks
from prune.methods import TuningInputs, lsq
from prune.physical import physically_pruned_copy
from prune.weight_updates import HEAD, load_weight_updates, save_weight_updates, swapped_weights
from tests.tiny import lm_batch, random_batch, tiny_decoder, tiny_model
from arch import bind
from arch.hooks import apply_masks


@pytest.mark.parametrize("family,qa,expected", [
    ("bert", False, "bert.pooler.dense"), ("roberta", False, "classifier.dense"),
    ("distilbert", False, "pre_classifier"), ("electra", False, "classifier.dense"),
    ("bert", True, "qa_outputs")])
def test_the_head_linear_is_the_first_linear_after_the_last_block(family, qa, expected):
    model = tiny_model(family, qa=qa)
    assert find_head_linear(model, bind(model), random_batch(model, with_labels=False)) == expected


def test_a_language_model_head_is_not_refitted():
    model = tiny_decoder("llama")
    assert find_head_linear(model, bind(model), lm_batch(model)) == "lm_head"
    assert head_targets(model, bind(model), [lm_batch(model)]) is None


def _pruned_setup():
    model = tiny_model("bert")
    arch = bind(model)
    batches = [random_batch(model, batch=8, seed=s) for s in range(6)]
    head, neuron = full_masks(3, 4, 37)
    head[1:, 1:] = 0                  # a deep cut: the upper blocks cannot reconstruct their teacher
    neuron[1:, 3:] = 0
    return model, arch, batches, (head, neuron)


def _head_error(model, arch, batches, masks, targets, updates=None):
    linear = model.get_submodule(targets[0])
    with swapped_weights(arch, updates or {}):
        rows = _head_rows(model, arch, linear, batches, masks)
    return sum(float((y - t).pow(2).sum()) for (_, y), t in zip(rows, targets[1]))


def test_refit_brings_the_head_closer_to_the_unpruned_head_and_survives_pruning(tmp_path):
    model, arch, batches, masks = _pruned_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = lsq(TuningInputs(model, arch, full_masks(3, 4, 37), masks, batches, "first"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    key = (HEAD, "bert.pooler.dense")
    assert key in outcome.weight_updates
    assert outcome.events[-1] == {"layer": "head", "part": "bert.pooler.dense", "status": "ok"}
    targets = head_targets(model, arch, batches)
    layers_only = {k: v for k, v in outcome.weight_updates.items() if k != key}
    assert _head_error(model, arch, batches, masks, targets, outcome.weight_updates) < \
        0.5 * _head_error(model, arch, batches, masks, targets, layers_only)
    # the refitted head goes with the masks: saved, reloaded, and into the physically pruned model
    save_weight_updates(str(tmp_path / "w.pt"), outcome.weight_updates)
    assert load_weight_updates(str(tmp_path / "w.pt")).keys() == outcome.weight_updates.keys()
    pruned, _ = physically_pruned_copy(model, *masks, outcome.weight_updates)
    batch = random_batch(model, with_labels=False)
    with torch.inference_mode(), swapped_weights(arch, outcome.weight_updates), apply_masks(arch, *masks):
        expected = model(**batch).logits
    with torch.inference_mode():
        torch.testing.assert_close(pruned(**batch).logits, expected, rtol=1e-4, atol=1e-5)


def test_head_refit_can_be_switched_off():
    model, arch, batches, masks = _pruned_setup()
    outcome = lsq(TuningInputs(model, arch, full_masks(3, 4, 37), masks, batches, "first", head_refit=False))
    assert all(layer != HEAD for layer, _ in outcome.weight_updates)
