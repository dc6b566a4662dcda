import pytest
import torch

from types import SimpleNamespace

from arch.hooks import call_layer, capture_inputs, layer_calls
from prune.layer_io import first_layer_inputs, run_layer
from prune.masks import full_masks
from prune.targets import teacher_targets
from prune.reconstruct import FLUSH_EVERY, Normal, _layer_outputs, _replay_matches, gram, reconstruct_weights
from prune.slim_layer import replayed_attention
from prune.weight_updates import load_weight_updates, save_weight_updates, swapped_weights
from tests.tiny import DECODER_FAMILIES, FAMILIES, lm_batch, random_batch, tiny_decoder, tiny_model
from arch import bind
from arch.hooks import apply_masks


def _setup(seed=5):
    model = tiny_model("bert", seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    arch = bind(model)
    batches = [random_batch(model, batch=8, length=12, seed=s) for s in range(6)]
    return model, arch, batches


def _error(model, arch, teacher, student, batches, updates=None):
    err = 0.0
    with torch.inference_mode():
        for b in batches:
            b = {k: v for k, v in b.items() if k != "labels"}
            with apply_masks(arch, *teacher):
                t = model.base_model(**b).last_hidden_state
            with swapped_weights(arch, updates), apply_masks(arch, *student):
                s = model.base_model(**b).last_hidden_state
            err += float((t - s)[b["attention_mask"].bool()].pow(2).sum())
    return err


def test_teacher_equal_to_student_leaves_weights_unchanged():
    model, arch, batches = _setup()
    head, neuron = full_masks(3, 4, 37)
    head[1, 0] = 0
    neuron[:, :10] = 0
    inputs = first_layer_inputs(model, arch, batches)
    updates, _ = reconstruct_weights(arch, head, neuron, head, neuron, inputs, last_layer_tokens="all")
    for (l, role), (w, b) in updates.items():
        linear = arch.attn_out(l) if role == "attn_out" else arch.ffn_out(l)
        kept = w.abs().sum(0) != 0
        assert torch.allclose(w[:, kept], linear.weight[:, kept], atol=1e-3), (l, role)
        assert torch.allclose(b, linear.bias, atol=1e-3)


def test_reconstruction_beats_unscaled_and_restores_the_model():
    model, arch, batches = _setup()
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = full_masks(3, 4, 37)
    head, neuron = full_masks(3, 4, 37)
    head[1:, :2] = 0
    neuron[:, 5:30] = 0
    inputs = first_layer_inputs(model, arch, batches)
    updates, report = reconstruct_weights(arch, *teacher, head, neuron, inputs, last_layer_tokens="all")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before_weights.items())
    plain = _error(model, arch, teacher, (head, neuron), batches)
    tuned = _error(model, arch, teacher, (head, neuron), batches, updates)
    assert tuned < 0.5 * plain
    assert {e["status"] for e in report.events} == {"ok"}
    # pruned columns stay zero: the physical model can drop them
    assert float(updates[(1, "attn_out")][0][:, :16].abs().sum()) == 0.0


def test_weight_updates_round_trip(tmp_path):
    updates = {(0, "attn_out"): (torch.randn(4, 4), torch.randn(4)), (2, "ffn_out"): (torch.randn(4, 7), torch.randn(4))}
    save_weight_updates(str(tmp_path / "w.pt"), updates)
    loaded = load_weight_updates(str(tmp_path / "w.pt"))
    assert loaded.keys() == updates.keys()
    assert all(torch.equal(loaded[k][0], updates[k][0]) for k in updates)



def test_last_layer_attention_rows_follow_last_mha_cls_only():
    model, arch, batches = _setup()
    teacher = full_masks(3, 4, 37)
    head, neuron = full_masks(3, 4, 37)
    head[:, :1] = 0
    neuron[:, :12] = 0
    inputs = first_layer_inputs(model, arch, batches)
    all_tokens, _ = reconstruct_weights(arch, *teacher, head, neuron, inputs, last_layer_tokens="all")
    mixed, _ = reconstruct_weights(arch, *teacher, head, neuron, inputs, last_layer_tokens="first",
                                   last_mha_all_tokens=True)
    cls_only, _ = reconstruct_weights(arch, *teacher, head, neuron, inputs, last_layer_tokens="first")
    last = (2, "attn_out")
    assert torch.allclose(mixed[last][0], all_tokens[last][0], atol=1e-5)        # attention: every token
    assert not torch.allclose(cls_only[last][0], all_tokens[last][0], atol=1e-3)  # attention: first token


def test_refit_is_in_the_masked_models_terms_when_masks_are_scaled():
    """A kept unit's mask value multiplies its input, so without ridge doubling every kept value halves every refitted
    weight and changes nothing else (the student's function, hence every later layer's fit, is the same)."""
    model, arch, batches = _setup()
    teacher = full_masks(3, 4, 37)
    head, neuron = full_masks(3, 4, 37)
    head[1, :2] = 0
    neuron[:, 5:30] = 0
    inputs = first_layer_inputs(model, arch, batches)
    plain, _ = reconstruct_weights(arch, *teacher, head, neuron, inputs, last_layer_tokens="all", ridge=0.0)
    doubled, _ = reconstruct_weights(arch, *teacher, head * 2, neuron * 2, inputs, last_layer_tokens="all", ridge=0.0)
    assert plain.keys() == doubled.keys() and len(plain) == 6
    for key, (w, b) in plain.items():
        assert torch.allclose(doubled[key][0] * 2, w, rtol=1e-3, atol=1e-3 * float(w.abs().max())), key
        assert torch.allclose(doubled[key][1], b, rtol=1e-3, atol=1e-3 * float(b.abs().max())), key


def test_a_capture_that_stops_early_skips_the_rest_of_the_layer():
    from arch.hooks import capture_inputs
    from prune.layer_io import capture_layer
    model, arch, batches = _setup()
    lb = first_layer_inputs(model, arch, batches[:1])[0]
    calls = []
    handle = arch.ffn_in(0).register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with torch.inference_mode(), capture_inputs({"ctx": arch.attn_out(0)}, stop_at="ctx") as seen:
            capture_layer(arch, 0, lb)
        assert len(seen["ctx"]) == 1 and calls == []
        with torch.inference_mode(), capture_inputs({"a": arch.ffn_out(0)}, outputs={"out": arch.ffn_out(0)}) as seen:
            capture_layer(arch, 0, lb)
        assert len(seen["a"]) == 1 and len(seen["out"]) == 1 and calls == [1]
    finally:
        handle.remove()


@pytest.mark.parametrize("width", [7, 300, 777])
def test_gram_by_blocks_equals_the_product(width):
    x = torch.randn(50, width, generator=torch.Generator().manual_seed(width), dtype=torch.float64)
    assert torch.allclose(gram(x), x.t() @ x, rtol=1e-12, atol=1e-10)


def _model_and_inputs(family):
    model = tiny_decoder(family) if family in DECODER_FAMILIES else tiny_model(family)
    batch = lm_batch(model) if family in DECODER_FAMILIES else random_batch(model, with_labels=False)
    batch["attention_mask"][0, -3:] = 0          # padding in one row
    arch = bind(model)
    return model, arch, first_layer_inputs(model, arch, [batch, batch])


@pytest.mark.parametrize("family", FAMILIES + DECODER_FAMILIES)
def test_ffn_block_output_is_the_layers_output(family):
    """Every family's block ends as BoundArch.ffn_block_output says: the refit relies on it to skip a pass."""
    model, arch, inputs = _model_and_inputs(family)
    with torch.inference_mode(), capture_inputs({"x": arch.ffn_out(1), "r": arch.ffn_residual(1)}) as seen:
        real = run_layer(arch, 1, inputs[:1])[0].hidden
        computed = arch.ffn_block_output(1, arch.ffn_out(1)(seen["x"][0]), seen["r"][0])
    assert torch.allclose(computed, real, atol=1e-6, rtol=1e-5)


def test_layer_outputs_run_the_layer_when_the_block_end_differs(monkeypatch):
    model, arch, inputs = _model_and_inputs("bert")
    with torch.inference_mode(), capture_inputs({"x": arch.ffn_out(0), "r": arch.ffn_residual(0)}) as seen:
        real = run_layer(arch, 0, inputs)
        ffn_io = list(zip(seen["x"], seen["r"]))
        assert all(torch.equal(a.hidden, b.hidden) for a, b in zip(_layer_outputs(arch, 0, inputs, ffn_io), real))
        monkeypatch.setattr(type(arch), "ffn_block_output", lambda self, i, y, r: r + y)   # a pre-norm block's end
        wrong = [(x, r + 1.0) for x, r in ffn_io]
        assert all(torch.equal(a.hidden, b.hidden) for a, b in zip(_layer_outputs(arch, 0, inputs, wrong), real))


@pytest.mark.parametrize("family", ["bert", "mpnet", "llama", "gemma3", "phi3"])
def test_teacher_targets_from_a_pruned_copy_equal_the_masked_layer(family):
    """A teacher mask that drops units runs its layer as a pruned copy: same targets and outputs as masking."""
    model, arch, inputs = _model_and_inputs(family)
    head, neuron = full_masks(arch.num_layers, arch.num_head_units, arch.ffn_dim)
    head[1, 0] = 0
    neuron[1, ::3] = 0
    with torch.inference_mode():
        targets = teacher_targets(arch, 1, head, neuron, inputs, "all", with_bias=True)
        with apply_masks(arch, head, neuron), \
                capture_inputs({"h": arch.ffn_residual(1)}, outputs={"y": arch.attn_out(1), "f": arch.ffn_out(1)}) as seen:
            outputs = run_layer(arch, 1, inputs)
    for b, lb in enumerate(inputs):
        keep = lb.token_mask
        assert torch.allclose(targets.outputs[b].hidden, outputs[b].hidden, atol=1e-5)
        ffn_base = seen["f"][b][keep] if arch.out_norm(1, "ffn_out") is not None else (seen["f"][b] + seen["h"][b])[keep]
        assert torch.allclose(targets.ffn[b].base, ffn_base, atol=1e-5)
        mha_base = seen["y"][b][keep] if arch.out_norm(1, "attn_out") is not None else (seen["y"][b] + lb.hidden)[keep]
        assert torch.allclose(targets.mha[b].base, mha_base, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES + DECODER_FAMILIES)
def test_replayed_attention_gives_the_ffn_its_real_inputs(family):
    """The FFN fit's pass replays the attention fit's contexts instead of recomputing the attention."""
    model, arch, inputs = _model_and_inputs(family)
    with torch.inference_mode():
        with capture_inputs({"c": arch.attn_out(1)}) as seen:
            run_layer(arch, 1, inputs)
        contexts = [(c, None) for c in seen["c"]]
        assert _replay_matches(arch, 1, inputs, contexts)
        assert not _replay_matches(arch, 1, inputs, [(c + 1.0, None) for c, _ in contexts])
        with capture_inputs({"x": arch.ffn_out(1)}) as real:
            run_layer(arch, 1, inputs)
        with replayed_attention(arch, 1, [c for c, _ in contexts]), capture_inputs({"x": arch.ffn_out(1)}) as replayed:
            run_layer(arch, 1, inputs)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(replayed["x"], real["x"]))
    assert type(arch.attention(1)).__name__ != "ReplayedAttention"      # put back


def _replayed(arch, inputs):
    """Each batch's last-layer output, replaying the recorded calls layer by layer."""
    out = []
    for lb in inputs:
        hidden = lb.hidden
        for l in range(arch.num_layers):
            hidden = call_layer(arch.layer(l), hidden, *lb.calls[l])
        out.append(hidden)
    return out


@pytest.mark.parametrize("family", FAMILIES + DECODER_FAMILIES)
def test_first_layer_inputs_run_the_first_block_once_and_replay_as_before(family):
    """Over a sweep the first block runs only until its return form is known; the recorded calls replay exactly
    as the calls recorded one batch at a time (each running the first block)."""
    model = tiny_decoder(family) if family in DECODER_FAMILIES else tiny_model(family)
    make = lm_batch if family in DECODER_FAMILIES else (lambda m, **k: random_batch(m, with_labels=False, **k))
    batches = [make(model, length=n, seed=n) for n in (9, 6, 11)]
    arch = bind(model)
    runs = []
    handle = arch.layer(0).register_forward_pre_hook(lambda m, a: runs.append(1))
    try:
        with torch.inference_mode():
            swept = first_layer_inputs(model, arch, batches)
            assert len(runs) == 1
            one_by_one = []
            for b in batches:
                hidden, calls = layer_calls(model, arch, {k: v for k, v in b.items() if k != "labels"})
                one_by_one.append(SimpleNamespace(hidden=hidden, calls=calls))
            assert len(runs) == 1 + len(batches)
            for a, b in zip(_replayed(arch, swept), _replayed(arch, one_by_one)):
                assert torch.equal(a, b)
    finally:
        handle.remove()


class _Blocks(torch.nn.Module):
    """Blocks that return (hidden, a batch-specific tensor), as a layer returning its attention weights does."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))

    def forward(self, input_ids, attention_mask=None):
        hidden = input_ids.float()
        for layer in self.layers:
            hidden, _extra = layer(hidden)
        return hidden


class _WithExtra(torch.nn.Linear):
    def forward(self, x):
        y = super().forward(x)
        return y, y.sum()


def test_a_block_with_batch_specific_outputs_runs_on_every_batch():
    model = _Blocks()
    model.layers = torch.nn.ModuleList(_WithExtra(4, 4) for _ in range(3))
    arch = SimpleNamespace(layers=lambda: model.layers, forward_kwargs={}, layer=lambda i: model.layers[i])
    runs = []
    model.layers[0].register_forward_pre_hook(lambda m, a: runs.append(1))
    batches = [{"input_ids": torch.randn(2, 4) + i, "attention_mask": torch.ones(2, 4)} for i in range(3)]
    with torch.inference_mode():
        inputs = first_layer_inputs(model, arch, batches)
    assert len(runs) == 3
    assert all(torch.equal(lb.hidden, b["input_ids"]) for lb, b in zip(inputs, batches))


def _ridge_solution(x, y, w0, ridge):
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx = xc.t() @ xc
    lam = ridge * float(cxx.diagonal().mean())
    w_t = torch.linalg.solve(cxx + lam * torch.eye(x.shape[1], dtype=x.dtype), xc.t() @ yc + lam * w0.t().double())
    return w_t.t(), y.mean(0) - x.mean(0) @ w_t


@pytest.mark.parametrize("batches", [1, FLUSH_EVERY, FLUSH_EVERY + 3])
@pytest.mark.parametrize("processes", [1, 2])
def test_normal_equations_in_groups_equal_the_direct_ridge_solution(batches, processes):
    """Batches summed in float32 groups before the float64 sums: the same solution as one direct solve, also
    when the sums are reduced over processes (each process saw the same share here: a reduce doubles them)."""
    gen = torch.Generator().manual_seed(batches)
    xs = [torch.randn(20, 6, generator=gen) + 3 for _ in range(batches)]
    ys = [x @ torch.randn(6, 5, generator=gen) + torch.randn(20, 5, generator=gen) for x in xs]
    w0 = torch.randn(5, 6, generator=gen)
    normal = Normal(6, 5, "cpu")
    for x, y in zip(xs, ys):
        normal.add(x, y)
    if processes > 1:
        normal.all_reduce(lambda t: t.mul_(processes))
    weight, bias = normal.solve(w0, 0.01)
    want_w, want_b = _ridge_solution(torch.cat(xs), torch.cat(ys), w0, 0.01)
    assert normal.n == 20 * batches * processes
    assert torch.allclose(weight, want_w, atol=1e-3) and torch.allclose(bias, want_b, atol=1e-3)   # float32 inputs
