"""Latency tables: fit, search under a budget, measurement, and the two command-line tools."""
import importlib.util
import json
import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from prune.latency_tables import LutError, check_lut, load_lut, measure_luts
from prune.latency import estimate_latency, fit_piecewise_linear, full_latency, piecewise_linear, search_latency

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _curve(n_units, threshold, slope, const, zero=0.05):
    lut = piecewise_linear(torch.arange(n_units + 1), threshold, slope, const)
    lut[0] = zero
    return lut


def _kept(head_imp, neuron_imp, masks):
    return float((head_imp * masks[0]).sum() + (neuron_imp * masks[1]).sum())


@pytest.mark.parametrize("threshold,slope,const", [(4, 0.3, 1.0), (1, 0.01, 0.2), (200, 0.002, 2.0)])
def test_fit_recovers_piecewise_linear(threshold, slope, const):
    n = 12 if threshold < 10 else 600
    t, s, c = fit_piecewise_linear(_curve(n, threshold, slope, const))
    assert t == threshold
    assert s == pytest.approx(slope, rel=1e-6)
    assert c == pytest.approx(const, rel=1e-6)


def test_fit_with_noise_and_flat_curve():
    gen = torch.Generator().manual_seed(0)
    lut = _curve(400, 100, 0.01, 1.0) + torch.randn(401, generator=gen, dtype=torch.float64) * 0.005
    t, s, c = fit_piecewise_linear(lut)
    assert abs(t - 100) <= 8 and s == pytest.approx(0.01, rel=0.05) and c == pytest.approx(1.0, abs=0.01)
    t, s, c = fit_piecewise_linear(torch.full((13,), 0.7))
    assert s == 0.0 and c == pytest.approx(0.7)


def _tables(kind, heads, ffn, gen):
    if kind == "piecewise":
        return _curve(heads, 4, 0.3, 1.0, 0.1), _curve(ffn, 64, 0.01, 1.5, 0.1)
    if kind == "noisy":   # non-monotone measured-looking tables
        mha = _curve(heads, 3, 0.2, 1.0, 0.05) * (1 + 0.1 * torch.rand(heads + 1, generator=gen, dtype=torch.float64))
        ffn_lut = _curve(ffn, 40, 0.01, 1.2, 0.05) * (1 + 0.1 * torch.rand(ffn + 1, generator=gen, dtype=torch.float64))
        return mha, ffn_lut
    return torch.arange(heads + 1, dtype=torch.float64) * 0.7, torch.arange(ffn + 1, dtype=torch.float64) * 0.02


@pytest.mark.parametrize("kind", ["piecewise", "noisy", "linear"])
@pytest.mark.parametrize("method", ["best", "dp", "paper"])
def test_search_respects_budget_and_grows(kind, method):
    gen = torch.Generator().manual_seed(3)
    layers, heads, ffn = 6, 12, 300
    mha, ffn_lut = _tables(kind, heads, ffn, gen)
    head_imp = torch.rand(layers, heads, generator=gen)
    neuron_imp = torch.rand(layers, ffn, generator=gen) * 0.05
    full = full_latency(mha, ffn_lut, layers)
    previous = -1.0
    for constraint in [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        masks = search_latency(head_imp, neuron_imp, mha, ffn_lut, constraint, method=method)
        assert masks[0].shape == (layers, heads) and masks[1].shape == (layers, ffn)
        assert set(masks[0].unique().tolist()) <= {0.0, 1.0}
        assert estimate_latency(mha, ffn_lut, *masks) <= constraint * full * (1 + 1e-12)
        kept = _kept(head_imp, neuron_imp, masks)
        assert kept >= previous - 1e-9
        previous = kept
        # inside a layer, units are kept in order of importance
        for imp, mask in ((head_imp, masks[0]), (neuron_imp, masks[1])):
            for i in range(layers):
                on, off = imp[i][mask[i] != 0], imp[i][mask[i] == 0]
                if on.numel() and off.numel():
                    assert on.min() >= off.max()
    if method != "paper":  # the whole budget keeps everything
        assert previous == pytest.approx(float(head_imp.sum() + neuron_imp.sum()))


def test_search_is_near_optimal_on_small_problem():
    """Exhaustive check on a problem small enough to enumerate every per-layer count."""
    import itertools
    gen = torch.Generator().manual_seed(5)
    layers, heads, ffn = 2, 3, 4
    mha, ffn_lut = _tables("noisy", heads, ffn, gen)
    head_imp, neuron_imp = torch.rand(layers, heads, generator=gen), torch.rand(layers, ffn, generator=gen)
    hs, _ = head_imp.sort(1, descending=True)
    ns, _ = neuron_imp.sort(1, descending=True)
    for constraint in [0.3, 0.5, 0.7, 0.9]:
        budget = constraint * full_latency(mha, ffn_lut, layers)
        best = 0.0
        for hc in itertools.product(range(heads + 1), repeat=layers):
            for nc in itertools.product(range(ffn + 1), repeat=layers):
                cost = sum(float(mha[k]) for k in hc) + sum(float(ffn_lut[k]) for k in nc)
                if cost <= budget:
                    value = sum(float(hs[i, :k].sum()) for i, k in enumerate(hc))
                    value += sum(float(ns[i, :k].sum()) for i, k in enumerate(nc))
                    best = max(best, value)
        got = _kept(head_imp, neuron_imp, search_latency(head_imp, neuron_imp, mha, ffn_lut, constraint))
        assert got == pytest.approx(best, rel=1e-6)


def test_search_rejects_impossible_and_mismatched():
    mha, ffn_lut = _curve(4, 2, 0.3, 1.0, 0.9), _curve(37, 8, 0.1, 1.0, 0.9)
    with pytest.raises(ValueError, match="empty model"):
        search_latency(torch.rand(3, 4), torch.rand(3, 37), mha, ffn_lut, 0.1)
    with pytest.raises(LutError, match="--mha_lut"):
        search_latency(torch.rand(3, 5), torch.rand(3, 37), mha, ffn_lut, 0.5)
    with pytest.raises(LutError, match="--ffn_lut.*38"):
        search_latency(torch.rand(3, 4), torch.rand(3, 37), mha, ffn_lut[:-1], 0.5)


def test_lut_validation_and_loading(tmp_path):
    with pytest.raises(LutError, match="original tool"):
        check_lut([1.0, 2.0, 3.0, 4.0], 4, "--mha_lut", "attention heads")
    with pytest.raises(LutError, match="--ffn_lut"):
        check_lut([1.0, float("nan")], 1, "--ffn_lut", "FFN neurons")
    torch.save(torch.tensor([0.1, 1.0, 1.5]), tmp_path / "m.pt")
    assert load_lut(str(tmp_path / "m.pt"), 2, "--mha_lut", "heads").tolist() == pytest.approx([0.1, 1.0, 1.5])
    with pytest.raises(LutError, match="--mha_lut.*does not exist"):
        load_lut(str(tmp_path / "none.pt"), 2, "--mha_lut", "heads")


def test_fitted_table_is_the_piecewise_linear_fit_with_the_empty_block_as_measured():
    from prune.latency import fitted_lut
    gen = torch.Generator().manual_seed(3)
    lut = _curve(40, 6, 0.2, 1.0, zero=0.05) + 0.05 * torch.randn(41, generator=gen, dtype=torch.float64)
    assert (lut[1:].diff() < 0).any()                                  # the measured table has dips
    smooth = fitted_lut(lut)
    assert smooth[0] == lut[0] and (smooth[1:].diff() >= 0).all()
    assert torch.allclose(smooth, piecewise_linear(torch.arange(41), *fit_piecewise_linear(lut)).index_put_(
        (torch.tensor([0]),), lut[:1]))
    assert float((smooth[1:] - _curve(40, 6, 0.2, 1.0)[1:]).abs().max()) < 0.1   # close to the true curve


def test_latency_budget_with_lut_fit_prices_counts_by_the_fit():
    from arch import bind
    from prune.budgets import BudgetInputs
    from prune.latency import fitted_lut
    from prune.registry import get
    import prune.budgets  # noqa: F401  (registers the metrics)
    arch = bind(BertForSequenceClassification(BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37,
                                                         num_hidden_layers=3, vocab_size=100)))
    mha = torch.tensor([0.1, 1.0, 0.8, 2.0, 2.5], dtype=torch.float64)    # a dip at 2 heads
    ffn = torch.linspace(0.1, 3.0, 38, dtype=torch.float64)
    raw = get("metric", "latency")(BudgetInputs(arch, 8, mha, ffn))
    fit = get("metric", "latency")(BudgetInputs(arch, 8, mha, ffn, lut_fit=True))
    assert torch.equal(raw.mha_lut, mha) and torch.allclose(fit.mha_lut, fitted_lut(mha))
    assert (fit.mha_lut[1:].diff() >= 0).all() and torch.allclose(fit.ffn_lut, fitted_lut(ffn))


def test_estimate_latency():
    mha, ffn_lut = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 10.0, 20.0, 30.0])
    head = torch.tensor([[1.0, 0.0], [0.5, -2.0]])
    neuron = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert estimate_latency(mha, ffn_lut, head, neuron) == pytest.approx(1.0 + 2.0 + 0.0 + 30.0)


def test_measure_tables_small():
    config = BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=3)
    mha, ffn_lut = measure_luts(config, batch_size=2, seq_len=8, ffn_step=8, warmup=1, repeats=2)
    assert mha.shape == (5,) and ffn_lut.shape == (38,)
    assert (mha > 0).all() and (ffn_lut > 0).all()


def test_measure_tables_of_a_grouped_query_decoder():
    from tests.tiny import tiny_decoder_config
    mha, ffn_lut = measure_luts(tiny_decoder_config("llama"), batch_size=2, seq_len=8, ffn_step=8, warmup=1,
                                repeats=2)
    assert mha.shape == (3,) and ffn_lut.shape == (38,)       # 2 head units (KV groups), 37 channels
    assert (mha > 0).all() and (ffn_lut > 0).all()


def test_tables_from_whole_model_times_subtract_the_model_without_its_block():
    from arch import bind
    config = BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=3)
    timed = []

    def fake_runtime(model, inputs):      # 1 s outside the block, 0.1 s per head, 0.01 s per neuron
        arch = bind(model)
        if len(arch.layers()) == 0:
            timed.append("no block")
            return 1.0
        return 1.0 + 0.1 * arch.query_width(0) / arch.head_dim + 0.01 * arch.ffn_out(0).in_features
    mha, ffn_lut = measure_luts(config, batch_size=2, seq_len=8, ffn_step=8, time_model=fake_runtime)
    assert timed == ["no block"]                                    # timed once, subtracted from every entry
    assert torch.allclose(mha[1:], 0.1 * torch.arange(1, 5, dtype=torch.float64))
    assert torch.allclose(ffn_lut[1:], 0.01 * torch.arange(1, 38, dtype=torch.float64))
    assert float(mha[0]) == float(ffn_lut[0]) == pytest.approx(1e-9)   # an empty block costs nothing here


def test_latency_tables_measured_in_onnx_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from benchmarks.ort_latency_tables import main
    BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=3).save_pretrained(tmp_path)
    out = tmp_path / "luts"
    assert main(["--ckpt_dir", str(tmp_path), "--batch_size", "2", "--seq_len", "8", "--ffn_step", "37",
                 "--mha_step", "4", "--warmup", "1", "--repeats", "3", "--threads", "1", "--output_dir", str(out)]) == 0
    mha, ffn_lut = torch.load(out / "mha_lut.pt"), torch.load(out / "ffn_lut.pt")
    assert mha.shape == (5,) and ffn_lut.shape == (38,) and (mha > 0).all() and (ffn_lut > 0).all()
    assert json.loads((out / "lut_info.json").read_text())["backend"] == "onnx"


def _load_script(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3] + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_latency_script(tmp_path):
    BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=3).save_pretrained(tmp_path)
    script = _load_script(os.path.join(ROOT, "scripts", "measure_latency.py"))
    out = tmp_path / "luts"
    assert script.main(["--ckpt_dir", str(tmp_path), "--batch_size", "2", "--seq_len", "8", "--ffn_step", "16",
                        "--warmup", "0", "--repeats", "1", "--output_dir", str(out)]) == 0
    mha, ffn_lut = torch.load(out / "mha_lut.pt"), torch.load(out / "ffn_lut.pt")
    assert mha.shape == (5,) and ffn_lut.shape == (38,)
    info = json.loads((out / "lut_info.json").read_text())
    assert info["batch_size"] == 2 and info["seq_len"] == 8 and set(info["fit"]) == {"mha", "ffn"}


def test_benchmark_script(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37,
                                                     num_hidden_layers=3, num_labels=2, vocab_size=100)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    head, neuron = torch.ones(3, 4), torch.ones(3, 37)
    head[0] = 0
    head[1, :2] = 0
    neuron[2, 10:] = 0
    neuron[1] *= 0.5
    (tmp_path / "run").mkdir()
    torch.save(head, tmp_path / "run" / "head_mask.pt")
    torch.save(neuron, tmp_path / "run" / "neuron_mask.pt")
    bench = _load_script(os.path.join(ROOT, "benchmarks", "latency.py"))
    out = tmp_path / "bench.json"
    assert bench.main(["--ckpt_dir", str(tmp_path / "ckpt"), "--mask_dir", str(tmp_path / "run"),
                       "--batch_sizes", "2", "--seq_lens", "8", "16", "--repeats", "3", "--warmup", "1",
                       "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["max_abs_output_diff_vs_masked"] < 1e-5
    assert report["pruned"]["heads_per_layer"] == [0, 2, 4]
    assert report["pruned"]["parameters"] < report["original"]["parameters"]
    assert len(report["results"]) == 2
    row = report["results"][0]
    assert row["speedup"] > 0 and row["ideal_mac_speedup"] > 1
    # the MAC formula: heads (4 s h d + 2 s^2 d), neurons 2 s h, pooler h*h + classifier h*2
    s, h, d = 8, 32, 8
    orig = 12 * (4 * s * h * d + 2 * s * s * d) + 3 * 37 * 2 * s * h + h * h + h * 2
    pruned = 6 * (4 * s * h * d + 2 * s * s * d) + (37 + 37 + 10) * 2 * s * h + h * h + h * 2
    assert row["original_macs"] == orig and row["pruned_macs"] == pruned


def test_measure_speedup_fields():
    from evaluate.speed import measure_speedup
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37,
                                                     num_hidden_layers=2, vocab_size=100)).eval()
    out = measure_speedup(model, model, batch_size=2, seq_len=8, warmup=0, repeats=3)
    assert out["original_s"] > 0 and out["pruned_s"] > 0 and out["speedup"] > 0
    assert out["timings"]["original"]["n"] == 3
