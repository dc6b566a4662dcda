import itertools

import pytest
import torch

from prune.cost import MacCost
from prune.fisher import collect_mask_grads, fisher_importance
from prune.layer_io import first_layer_inputs
from prune.masks import full_masks, kept_per_layer
from prune.rearrange import greedy_rearrange, rearrange_masks
from prune.mask_tuning import solve_damped, tune_masks
from prune.search import search_mac, teacher_constraint
from tests.tiny import random_batch, tiny_model
from arch import bind
from arch.hooks import apply_masks

COST = MacCost(seq_len=20, hidden_size=32, head_dim=8)


def test_mac_counts_match_the_paper():
    cost = MacCost(seq_len=128, hidden_size=768, head_dim=64)
    assert cost.per_head == 4 * 128 * 768 * 64 + 2 * 128 * 128 * 64
    assert cost.per_neuron == 2 * 128 * 768


@pytest.mark.parametrize("constraint", [0.1, 0.33, 0.5, 0.77, 0.95])
def test_search_respects_budget(constraint):
    gen = torch.Generator().manual_seed(1)
    h_imp, n_imp = torch.rand(3, 4, generator=gen), torch.rand(3, 37, generator=gen)
    head, neuron = search_mac(h_imp, n_imp, COST, constraint)
    assert COST.of_masks(head, neuron) <= constraint * COST.of_counts(12, 111) + 1e-6
    assert set(head.unique().tolist()) <= {0.0, 1.0}


def test_search_keeps_more_importance_with_more_budget():
    gen = torch.Generator().manual_seed(2)
    h_imp, n_imp = torch.rand(3, 4, generator=gen), torch.rand(3, 37, generator=gen)
    kept = []
    for c in (0.2, 0.4, 0.6, 0.8):
        head, neuron = search_mac(h_imp, n_imp, COST, c)
        kept.append(float((h_imp * head).sum() + (n_imp * neuron).sum()))
    assert kept == sorted(kept) and kept[0] < kept[-1]


def test_search_is_optimal_on_a_small_case():
    """Brute force over all head subsets with neurons filled greedily (exact for equal costs)."""
    gen = torch.Generator().manual_seed(3)
    h_imp, n_imp = torch.rand(1, 4, generator=gen) * 5, torch.rand(1, 10, generator=gen)
    cost = MacCost(seq_len=4, hidden_size=8, head_dim=2)
    budget = 0.5 * cost.of_counts(4, 10)
    best = 0.0
    for k in range(5):
        for heads in itertools.combinations(range(4), k):
            left = budget - k * cost.per_head
            if left < 0:
                continue
            m = min(int(left // cost.per_neuron), 10)
            best = max(best, float(h_imp[0, list(heads)].sum() + n_imp[0].sort(descending=True)[0][:m].sum()))
    head, neuron = search_mac(h_imp, n_imp, cost, 0.5)
    assert float((h_imp * head).sum() + (n_imp * neuron).sum()) == pytest.approx(best)


def test_schedule_teacher_is_sqrt_of_target():
    assert teacher_constraint(0.49) == pytest.approx(0.7)
    assert teacher_constraint(0.49, 1.0) == 0.49


def _pruned_loss(mask, grads):
    return float(grads[:, mask == 0].sum(dim=1).pow(2).sum())


def test_rearrange_keeps_counts_and_lowers_block_loss():
    gen = torch.Generator().manual_seed(4)
    grads = torch.randn(16, 2, 30, generator=gen)
    grads[:, :, :10] += 2.0        # correlated units
    mask = torch.ones(2, 30)
    mask[0, :12] = 0
    mask[1, 5:25] = 0
    new = rearrange_masks(mask, grads)
    assert kept_per_layer(new) == kept_per_layer(mask)
    for layer in range(2):
        assert _pruned_loss(new[layer], grads[:, layer]) <= _pruned_loss(mask[layer], grads[:, layer]) + 1e-9


def test_rearrange_finds_cancelling_pair():
    """Units whose gradients cancel cost little together: the greedy swaps unit 1 for unit 3."""
    grads = torch.tensor([[3.0, -0.6, 0.5, 0.4], [3.0, -0.6, 0.5, 0.4]])
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])        # Fisher alone prunes the small units 2, 3
    assert greedy_rearrange(mask, grads).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_fisher_gradients_shapes_and_finiteness():
    model = tiny_model("bert")
    arch = bind(model)
    batches = [random_batch(model, seed=s) for s in range(3)]
    head_grads, neuron_grads = collect_mask_grads(model, arch, batches)
    assert head_grads.shape == (3, 3, 4) and neuron_grads.shape == (3, 3, 37)
    assert torch.isfinite(head_grads).all() and fisher_importance(head_grads).min() >= 0
    assert all(p.requires_grad for p in model.parameters())   # parameters restored


def test_mask_gradients_match_finite_differences_of_the_loss():
    model = tiny_model("bert")
    arch = bind(model)
    batches = [random_batch(model, seed=s) for s in range(2)]
    head, neuron = full_masks(3, 4, 37)
    head_grads, _ = collect_mask_grads(model, arch, batches)
    eps = 1e-3
    losses = []
    for sign in (1, -1):
        h = head.clone()
        h[2, 1] += sign * eps
        with torch.no_grad(), apply_masks(arch, h, neuron):
            losses.append(sum(float(model(**b).loss) for b in batches))
    assert (losses[0] - losses[1]) / (2 * eps) == pytest.approx(float(head_grads[:, 2, 1].sum()), rel=1e-2, abs=1e-4)


def test_teacher_exponent_sets_the_teachers_budget():
    from prune.pipeline import PruneOptions, prune
    model = tiny_model("bert")
    arch = bind(model)
    batches = [random_batch(model, seed=s) for s in range(2)]
    full = COST.of_counts(12, 111)
    ratios = {}
    for exponent in (0.5, 0.9):
        result = prune(model, arch, batches, 20, PruneOptions(0.3, method="kwon", rearrange=False, mask_tuning=False,
                                                                teacher_exponent=exponent))
        ratios[exponent] = COST.of_masks(*result.masks["teacher"]) / full
        assert ratios[exponent] <= 0.3 ** exponent + 1e-6
    assert 0.3 < ratios[0.9] < ratios[0.5]          # nearer the student, which keeps 0.3


def test_damped_solver_matches_closed_form():
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    b = torch.tensor([1.0, 2.0])
    scales, why = solve_damped(a, b)
    rhs = b.double() - a.double().sum(1)
    expected = 1 + torch.linalg.solve(a.double() @ a.double() + torch.eye(2, dtype=torch.float64), a.double() @ rhs)
    assert why == "ok" and torch.allclose(torch.tensor(scales), expected)
    assert solve_damped(torch.tensor([[float("nan")]]), torch.tensor([1.0]))[0] is None


def _layer_error(model, arch, teacher, student, batches):
    """Squared distance between teacher and student final hidden states."""
    err = 0.0
    with torch.inference_mode():
        for b in batches:
            b = {k: v for k, v in b.items() if k != "labels"}
            with apply_masks(arch, *teacher):
                t = model.base_model(**b).last_hidden_state
            with apply_masks(arch, *student):
                s = model.base_model(**b).last_hidden_state
            err += float((t - s)[b["attention_mask"].bool()].pow(2).sum())
    return err


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_tuning_with_teacher_equal_to_student_keeps_scales_near_one(family):
    model = tiny_model(family)
    arch = bind(model)
    batches = [random_batch(model, batch=8, length=12, seed=s) for s in range(4)]
    head, neuron = full_masks(3, 4, 37)
    head[1, 0] = 0
    neuron[:, :10] = 0
    inputs = first_layer_inputs(model, arch, batches)
    new_head, new_neuron, _ = tune_masks(arch, head, neuron, head, neuron, inputs, last_layer_tokens="all")
    # not exactly 1: the paper's free constant column is pulled towards 1 by the damping
    assert torch.allclose(new_head, head, atol=5e-3) and torch.allclose(new_neuron, neuron, atol=5e-3)


def test_tuning_lowers_reconstruction_error():
    model = tiny_model("bert", seed=5)
    arch = bind(model)
    with torch.no_grad():       # spread the weights so that pruning really hurts
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    batches = [random_batch(model, batch=8, length=12, seed=s) for s in range(6)]
    teacher = full_masks(3, 4, 37)
    head, neuron = full_masks(3, 4, 37)
    head[1:, :2] = 0
    neuron[:, 5:30] = 0
    inputs = first_layer_inputs(model, arch, batches)
    tuned_head, tuned_neuron, report = tune_masks(arch, *teacher, head, neuron, inputs, last_layer_tokens="all")
    before = _layer_error(model, arch, teacher, (head, neuron), batches)
    after = _layer_error(model, arch, teacher, (tuned_head, tuned_neuron), batches)
    assert after < 0.9 * before
    assert kept_per_layer(tuned_head) == kept_per_layer(head)
    assert {e["status"] for e in report.events} <= {"ok", "skipped", "guard"}


def _rearrange_by_recomputed_sums(mask, grads):
    """The greedy written directly: recompute every member's leftover sum at each step."""
    num_pruned = int((mask == 0).sum())
    vectors = grads.t().double()
    order = vectors.pow(2).sum(dim=1).argsort().tolist()
    pruned = order[:num_pruned]
    for candidate in order[num_pruned:]:
        pruned.append(candidate)
        total = vectors[pruned].sum(dim=0)
        drop = int((total.unsqueeze(0) - vectors[pruned]).pow(2).sum(dim=1).argmin())
        del pruned[drop]
    new_mask = torch.ones_like(mask)
    new_mask[pruned] = 0
    return new_mask


@pytest.mark.parametrize("seed", range(6))
def test_rearrange_by_gram_equals_recomputed_sums(seed):
    gen = torch.Generator().manual_seed(seed)
    units = 40 + 13 * seed
    grads = torch.randn(8 + seed, units, generator=gen) * torch.rand(units, generator=gen)
    grads[:, :4] = 0.0                           # exact ties: the longest-standing member goes first
    grads[:, 10:13] = grads[:, 20:21].clone()     # duplicates
    mask = torch.ones(units)
    mask[torch.randperm(units, generator=gen)[:units // 3 + seed]] = 0
    assert torch.equal(greedy_rearrange(mask, grads), _rearrange_by_recomputed_sums(mask, grads))


def test_rearrange_tie_drops_the_longest_standing_member():
    """Two equal small units: the one pruned from the start leaves, the one that just joined stays pruned."""
    grads = torch.tensor([[0.1, 0.1, 5.0]])
    mask = torch.tensor([1.0, 1.0, 0.0])
    first = int(grads.t().double().pow(2).sum(dim=1).argsort()[0])
    new = greedy_rearrange(mask, grads)
    assert torch.equal(new, _rearrange_by_recomputed_sums(mask, grads))
    assert new[first] == 1 and int((new == 0).sum()) == 1 and new[2] == 1
