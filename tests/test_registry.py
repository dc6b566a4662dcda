"""Importance, budget metric and mask-tuning method are registries: adding one touches no other file."""
import pytest
import torch

import main
from prune import registry
from prune.pipeline import PruneOptions, prune
from tests.tiny import random_batch, tiny_model
from arch import bind


@pytest.fixture
def registered():
    added = []

    def add(kind, name, fn):
        registry.register(kind, name)(fn)
        added.append((kind, name))
    yield add
    for kind, name in added:
        del registry._REGISTRY[kind][name]


def test_builtins_are_registered():
    assert {"fisher", "magnitude", "random"} <= set(registry.choices("importance"))
    assert {"mac", "params", "latency"} <= set(registry.choices("metric"))
    assert {"kwon", "lsq"} <= set(registry.choices("method"))


def test_an_importance_registered_here_shows_up_in_main_and_runs(registered):
    def first_units(inputs):     # keeps the lowest-numbered units: easy to recognise
        h, n = inputs.head_grads.shape[1:], inputs.neuron_grads.shape[1:]
        return (-torch.arange(h[1]).float().expand(h), -torch.arange(n[1]).float().expand(n))
    registered("importance", "first_units_test", first_units)
    assert "first_units_test" in main.build_parser().format_help()
    cfg = main.config_from_args(["--task_name", "sst2", "--ckpt_dir", "x", "--constraint", "0.5",
                                 "--importance", "first_units_test"])
    assert cfg.prune.importance == "first_units_test"
    model = tiny_model("bert")
    result = prune(model, bind(model), [random_batch(model)], 9, PruneOptions(0.5, importance="first_units_test",
                                                                             mask_tuning=False, rearrange=False))
    head, neuron = result.final
    kept = (neuron[0] != 0).nonzero().flatten().tolist()
    assert kept == list(range(len(kept)))


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="fisher"):
        registry.get("importance", "nope")


def test_params_metric_budgets_the_weights():
    model = tiny_model("bert")
    result = prune(model, bind(model), [random_batch(model)], 9,
                   PruneOptions(0.4, metric="params", mask_tuning=False))
    assert result.param_ratio <= 0.4 + 1e-9 and result.budget_ratio == result.param_ratio
    assert result.param_ratio > 0.35
