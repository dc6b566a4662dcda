"""The benchmark helpers whose numbers reach the README: cells, machine metadata, paired differences, goals."""
import json
import math
import os
import time

import pytest

from benchmarks.llama_cpp_table import add_ratios, table
from benchmarks.llm_prune import method_options, paired_difference, zero_shot_table
from benchmarks.record import LoadSampler, cell_done, machine_metadata, read_cell, write_cell


def test_cells_are_written_whole_and_recognised(tmp_path):
    path = str(tmp_path / "sub" / "cell.json")
    assert not cell_done(path)
    with open(tmp_path / "half.json", "w") as f:
        f.write('{"perplexity": 3')                 # a cell cut short is not done
    assert not cell_done(str(tmp_path / "half.json"))
    with open(tmp_path / "undone.json", "w") as f:
        json.dump({"perplexity": 3.0}, f)          # written by something else, without the done mark
    assert not cell_done(str(tmp_path / "undone.json"))
    write_cell(path, {"perplexity": 3.0})
    assert cell_done(path) and read_cell(path) == {"perplexity": 3.0, "done": True}
    assert os.listdir(tmp_path / "sub") == ["cell.json"]       # no temporary file left


def test_machine_metadata_and_load_sampler():
    meta = machine_metadata(threads=2)
    assert meta["threads"] == 2 and meta["cpu_count"] == os.cpu_count()
    assert meta["versions"]["torch"] and meta["versions"]["python"]
    assert len(meta["load_average_before"]) == 3
    assert meta["git"]["commit"] is None or len(meta["git"]["commit"]) == 40
    with LoadSampler(every=0.05) as load:
        time.sleep(0.2)
    s = load.summary(limit=1e9)
    assert s["quiet"] and s["load_max"] >= s["load_mean"] >= 0 and len(load.samples) >= 2
    assert not load.summary(limit=-1.0)["quiet"]


def _zs(per_task):
    """A zero_shot_scores-shaped result from {task: [0/1 per item]}."""
    tasks = {n: {"acc": sum(v) / len(v), "acc_stderr": 0.01, "items": len(v), "per_item": {"acc": v}}
             for n, v in per_task.items()}
    return {"tasks": tasks, "average": {"acc": sum(t["acc"] for t in tasks.values()) / len(tasks)}}


def test_paired_difference_by_hand():
    a = _zs({"t1": [1, 1, 0, 1], "t2": [1, 0]})
    b = _zs({"t1": [1, 0, 0, 0], "t2": [0, 0]})
    d = paired_difference(a, b)
    # t1 differences 0,1,0,1: mean 0.5, sample variance 1/3, over 4 items; t2: 1,0: mean 0.5, variance 0.5, over 2
    assert d["per_task"] == [0.5, 0.5] and d["difference"] == pytest.approx(0.5)
    se = math.sqrt((1 / 3) / 4 + 0.5 / 2) / 2
    assert d["stderr"] == pytest.approx(se)
    assert d["ci95"] == pytest.approx([0.5 - 1.96 * se, 0.5 + 1.96 * se])
    assert d["difference"] == pytest.approx(a["average"]["acc"] - b["average"]["acc"])
    assert paired_difference(a, _zs({"other": [1]})) == {}


def test_zero_shot_table_pairs_ours_against_flap():
    out = {"dense_zero_shot": _zs({"t1": [1, 1, 1, 1]}),
           "runs": [{"method": "flap", "constraint": 0.8, "zero_shot": _zs({"t1": [1, 0, 0, 0]})},
                    {"method": "ours", "constraint": 0.8, "zero_shot": _zs({"t1": [1, 1, 0, 0]})},
                    {"method": "wanda_sp", "constraint": 0.8, "zero_shot": _zs({"t1": [0, 0, 0, 0]})}]}
    text = zero_shot_table(out)
    ours = next(line for line in text.splitlines() if "| ours |" in line)
    assert "0.5000" in ours and "+0.2500" in ours
    assert next(line for line in text.splitlines() if "| wanda_sp |" in line).endswith("|  |")


def test_method_options_width_variants():
    assert method_options("ours_w256", 1536)["width_multiple"] == 256
    assert method_options("ours", 1536)["width_multiple"] == 32    # main.py's decoder default (tasks/causal_lm.py)
    assert method_options("ours", 37)["width_multiple"] == 1       # fewer than 8 blocks of 32: as main.py
    assert "width_multiple" not in method_options("flap", 1536)


def _row(model, quant, file_mb, bytes_mb, prompt, gen):
    return {"model": model, "quant": quant, "file_bytes": file_mb * 1e6, "weight_bytes_per_token": bytes_mb * 1e6,
            "perplexity": 10.0, "pytorch_perplexity_fp32": 10.0,
            "speed": {"128x64": {"prompt_tokens_per_s": prompt, "generation_tokens_per_s": gen}}}


def test_llama_cpp_goals():
    rows = [_row("dense", "f16", 200, 180, 500, 100), _row("dense", "q4_k_m", 100, 80, 550, 130),
            _row("0.8", "f16", 160, 144, 640, 118), _row("0.8", "q4_k_m", 90, 64, 520, 140)]
    add_ratios(rows, "dense")
    f16, q4 = rows[2], rows[3]
    assert f16["bytes_ratio_limit"] == pytest.approx(1.25)
    s = f16["speed"]["128x64"]
    assert s["prompt_speedup"] == pytest.approx(1.28) and s["generation_speedup"] == pytest.approx(1.18)
    assert s["speed_goal_met"]                       # both >= 0.9 x 1.25 = 1.125 and >= 1
    assert not q4["speed"]["128x64"]["speed_goal_met"]   # prompt 520 < dense 550: slower than dense
    # size goal: dense Q4 100 MB x (160/200 + 0.02) = 82 MB; 90 MB misses it; F16 160 <= 200 x 0.82
    assert f16["size_goal_met"] and not q4["size_goal_met"]
    assert "0.8 | q4_k_m" in table(rows, ["128x64"])


def test_encoder_transfer_summary_pairs_the_two_dev_sets():
    from benchmarks.encoder_transfer import summarise
    cells = [{"dev": "movie", "method": "lsq", "constraint": 0.4, "drop_points": 0.25, "accuracy_after": 0.8335},
             {"dev": "product", "method": "lsq", "constraint": 0.4, "drop_points": 2.63, "accuracy_after": 0.75,
              "dev_rows": 3600},
             {"dev": "movie", "method": "kwon", "constraint": 0.4, "drop_points": 2.3, "accuracy_after": 0.813}]
    rows = summarise(cells)["rows"]
    assert len(rows) == 1                                   # kwon has no product cell: no row
    assert rows[0]["extra_drop_off_genre"] == 2.38 and rows[0]["product_se_points"] == 0.72


def test_genre_summary_counts_unseen_genres_honestly(tmp_path):
    """A mix row's 'unseen' leaves out the mix's genres; 'held-out' is the same column set in both modes."""
    from benchmarks.genre_summary import markdown, row_summary, summary
    genres = ("docs", "movie", "tweets", "legal")
    ratio = {"docs": 1.9, "movie": 1.6, "tweets": 1.3, "legal": 2.1}
    nomix = row_summary({"calibration": "tweets-nomix", "ratio": ratio}, genres, ["docs", "movie"])
    assert nomix["in_genre"] == 1.3 and nomix["worst_unseen"] == 2.1 and nomix["worst_unseen_genre"] == "legal"
    mixed = row_summary({"calibration": "tweets-mix", "ratio": {**ratio, "legal": 1.5}}, genres, ["docs", "movie"])
    # docs (1.9) is in the mix: not unseen; legal is the only genre neither the file nor the mix holds
    assert mixed["worst_unseen"] == 1.5 and mixed["worst_heldout"] == 1.5 and nomix["worst_heldout"] == 2.1
    for name, spec, r in (("a", "tweets-nomix", ratio), ("b", "tweets-mix", {**ratio, "legal": 1.5})):
        (tmp_path / f"{name}.json").write_text(json.dumps({"calibration": spec, "variant": "ours", "constraint": 0.8,
                                                           "ratio": r}))
    out = summary(str(tmp_path), genres)
    assert out["headline"]["nomix/ours/0.8"]["worst_unseen"] == 2.1
    assert out["headline"]["mix/ours/0.8"]["worst_in_genre"] == 1.3
    table = markdown({**out, "mix_genres": ["docs", "movie"]})
    assert "| tweets | yes | *1.90* | *1.60* | **1.30** | 1.50 | 1.50 (legal) | 1.50 |" in table


def test_genre_rows_name_their_mix_share_and_the_default(tmp_path):
    """Cells name the share they ran at (docs-mix -> docs-mix25 while 25 % is the default), rows sort by share and the
    default's row says so, so a changed default never relabels old cells."""
    from benchmarks.genre_summary import markdown, mix_share, summary
    from benchmarks.genre_transfer import canonical, mix_fraction
    from tasks.causal_lm import CALIB_MIX_FRACTION
    default = round(100 * CALIB_MIX_FRACTION)
    assert canonical("docs-mix") == f"docs-mix{default}" and canonical("docs-mix50") == "docs-mix50"
    assert canonical("docs-nomix") == "docs-nomix" and canonical("mix") == "mix"
    assert mix_fraction("mix50") == 0.5 and mix_fraction("nomix") == 0.0 and mix_fraction("mix0") is None
    assert mix_share("mix25") == 0.25 and mix_share("nomix") == 0.0 and mix_share("ridge") is None
    genres = ("docs", "legal")
    for mode, legal in (("nomix", 2.0), ("mix50", 1.6), (f"mix{default}", 1.7)):
        (tmp_path / f"{mode}.json").write_text(json.dumps({"calibration": f"docs-{mode}", "variant": "ours",
                                                           "constraint": 0.8, "ratio": {"docs": 1.3, "legal": legal}}))
    rows = [line for line in markdown(summary(str(tmp_path), genres)).splitlines() if line.startswith("| docs |")]
    assert [r.split(" | ")[1] for r in rows] == ["no"] + sorted([f"{default} % (default)", "50 %"],
                                                                 key=lambda t: int(t.split()[0]))


def test_zero_shot_items_held_in_the_mix_are_left_out(tmp_path):
    from benchmarks.genre_summary import clean_average, items_in_mix
    mix, tasks = tmp_path / "mix", tmp_path / "tasks"
    mix.mkdir(), tasks.mkdir()
    (mix / "a.txt").write_text("Why is it called a funny bone when it hurts so\nmuch? Nobody knows.\n")
    items = [{"context": "Why is it  called a funny bone\nwhen it hurts so", "choices": ["much", "x"], "label": 0},
             {"context": "A sentence that the mix has never held anywhere at all, not even close.", "choices": ["a"],
              "label": 0}]
    (tasks / "t.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    (tasks / "t.yaml").write_text("task: pp_t\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\n")
    seen = items_in_mix(str(tasks), str(mix))
    assert seen == {"pp_t": {0}}
    result = clean_average({"tasks": {"pp_t": {"per_item": {"acc": [1, 0]}}}}, seen)
    assert result["acc"] == 0.0 and result["items_left_out"] == {"pp_t": 1}


def test_physical_ideal_on_a_synthetic_timing():
    from benchmarks.latency import physical_ideal_speedup, prunable_mac_ratio
    # 10 s, of which 2 s cannot shrink; a quarter of the prunable MACs kept: 2 + 8 / 4 = 4 s at best
    assert physical_ideal_speedup(10.0, 2.0, 0.25) == pytest.approx(2.5)
    assert physical_ideal_speedup(10.0, 0.0, 0.25) == pytest.approx(4.0)      # nothing fixed: the MAC ideal
    assert physical_ideal_speedup(10.0, 10.0, 0.25) == pytest.approx(1.0)     # nothing prunable: no speedup
    with pytest.raises(ValueError, match="T_fixed"):
        physical_ideal_speedup(1.0, 1.5, 0.5)
    from benchmarks.latency import _undefined_as_none
    assert _undefined_as_none(physical_ideal_speedup, 1.0, 1.5, 0.5) is None   # a floor slower than the model
    assert _undefined_as_none(physical_ideal_speedup, 10.0, 2.0, 0.25) == pytest.approx(2.5)
    ratio = prunable_mac_ratio({"heads": 30, "neurons": 70, "head": 1000}, {"heads": 10, "neurons": 15, "head": 1000})
    assert ratio == pytest.approx(0.25)                                       # the classifier's MACs are fixed


def test_the_fixed_part_model_keeps_nothing_prunable_and_computes_the_zero_masked_model():
    import torch
    from arch import bind
    from arch.hooks import apply_masks
    from benchmarks.latency import empty_model, model_macs
    from tests.tiny import random_batch, tiny_model
    model = tiny_model("bert", seed=3).eval()
    arch = bind(model)
    empty = empty_model(model)
    macs = model_macs(empty, bind(empty), 16)
    assert macs["heads"] == 0 and macs["neurons"] == 0 and macs["head"] > 0
    batch = {k: v for k, v in random_batch(model, batch=2, length=16, seed=1).items() if k != "labels"}
    with torch.inference_mode():
        with apply_masks(arch, torch.zeros(arch.num_layers, arch.num_head_units), torch.zeros(arch.num_layers, arch.ffn_dim)):
            want = model(**batch).logits
        got = empty(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert bind(model).head_units_in_layer(0) == arch.num_head_units          # the original is untouched


def test_the_floor_model_keeps_its_heads_and_one_neuron_where_the_pruned_model_keeps_any():
    import copy
    import torch
    from arch import bind
    from arch.hooks import apply_masks
    from benchmarks.latency import floor_mac_ratio, floor_macs, floor_model, model_macs
    from prune.physical import physically_prune
    from tests.tiny import random_batch, tiny_model
    model = tiny_model("bert", seed=3).eval()
    arch = bind(model)
    head_mask, neuron_mask = torch.ones(arch.num_layers, arch.num_head_units), torch.ones(arch.num_layers, arch.ffn_dim)
    head_mask[0, 1:] = 0                                    # layer 0 keeps one head: the floor keeps that one
    head_mask[1] = 0                                        # layer 1 keeps no head: the floor keeps none there either
    neuron_mask[0, ::2] = 0
    pruned = copy.deepcopy(model)
    physically_prune(pruned, bind(pruned), head_mask, neuron_mask)
    pruned_arch = bind(pruned)
    heads = [pruned_arch.head_units_in_layer(i) for i in range(arch.num_layers)]
    neurons = [pruned_arch.neurons_in_layer(i) for i in range(arch.num_layers)]
    assert arch.num_head_units > 2
    assert [bind(floor_model(model, heads, neurons)).head_units_in_layer(i) for i in range(arch.num_layers)] == \
        [1, 0] + [1] * (arch.num_layers - 2)                # one head by default
    floor = floor_model(model, heads, neurons, floor_heads=2)   # as for the fused ONNX graph
    floor_arch = bind(floor)
    assert [floor_arch.head_units_in_layer(i) for i in range(arch.num_layers)] == [1, 0] + [2] * (arch.num_layers - 2)
    assert [floor_arch.neurons_in_layer(i) for i in range(arch.num_layers)] == [1] * arch.num_layers
    want_heads, want_neurons = torch.zeros_like(head_mask), torch.zeros_like(neuron_mask)
    want_heads[0, 0] = 1
    want_heads[2:, :2] = 1
    want_neurons[:, 0] = 1
    batch = {k: v for k, v in random_batch(model, batch=2, length=16, seed=1).items() if k != "labels"}
    with torch.inference_mode():
        with apply_masks(arch, want_heads, want_neurons):
            want = model(**batch).logits
        got = floor(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)
    macs = {name: model_macs(m, bind(m), 16) for name, m in (("o", model), ("p", pruned), ("f", floor))}
    assert floor_macs(pruned_arch, 16, 2)["heads"] == macs["f"]["heads"] > floor_macs(pruned_arch, 16)["heads"]
    assert floor_macs(pruned_arch, 16, 2)["neurons"] == macs["f"]["neurons"]
    prunable = {k: v["heads"] + v["neurons"] for k, v in macs.items()}
    assert floor_mac_ratio(macs["o"], macs["p"], macs["f"]) == pytest.approx(
        (prunable["p"] - prunable["f"]) / (prunable["o"] - prunable["f"]))
    assert floor_mac_ratio(macs["o"], macs["o"], macs["f"]) == pytest.approx(1.0)
    assert floor_mac_ratio(macs["o"], macs["f"], macs["f"]) == 0.0


def test_per_kind_models_and_ideal():
    from arch import bind
    from benchmarks.latency import kind_models, unit_counts, unit_ideal_speedup
    from tests.tiny import tiny_model
    model = tiny_model("bert", seed=3).eval()
    arch = bind(model)
    heads, neurons = [1] + [0] * (arch.num_layers - 1), [3] * arch.num_layers
    kinds = kind_models(model, heads, neurons)
    h_arch, n_arch = bind(kinds["heads_full"]), bind(kinds["neurons_full"])
    layers = range(arch.num_layers)
    assert [h_arch.head_units_in_layer(i) for i in layers] == [arch.num_head_units] * arch.num_layers
    assert [h_arch.neurons_in_layer(i) for i in layers] == [1] * arch.num_layers
    assert [n_arch.head_units_in_layer(i) for i in layers] == heads      # the floor's heads: the pruned model's one
    assert [n_arch.neurons_in_layer(i) for i in layers] == [arch.ffn_dim] * arch.num_layers
    counts = unit_counts(arch, n_arch)
    assert counts["heads"] == (arch.num_layers * arch.num_head_units, 1, 1)
    assert counts["neurons"] == (arch.num_layers * arch.ffn_dim,) * 2 + (arch.num_layers,)
    # 10 s in all, 2 s floor; every head adds 3 s, every neuron 5 s; half the heads and a fifth of the neurons
    # above the floor kept: 2 + 1.5 + 1 = 4.5 s at best
    times = {"original": 10.0, "floor": 2.0, "heads_full": 5.0, "neurons_full": 7.0}
    units = {"heads": (21, 11, 1), "neurons": (101, 21, 1)}
    assert unit_ideal_speedup(times, units) == pytest.approx(10.0 / 4.5)
    with pytest.raises(ValueError, match="implausible"):
        unit_ideal_speedup(times | {"floor": 40.0}, units)


def test_accuracy_table_from_stored_cells_by_hand(tmp_path):
    import numpy as np
    from scipy.stats import spearmanr
    from benchmarks.accuracy_table import _stored, cell_path, markdown, summarize
    labels = [1, 0, 1, 1, 0]
    cells = {("movie", 0, 1.0, "dense"): [1, 0, 1, 1, 1], ("movie", 1, 1.0, "dense"): [1, 0, 1, 1, 0],
             ("movie", 0, 0.3, "kwon"): [0, 0, 0, 1, 0], ("movie", 1, 0.3, "kwon"): [1, 1, 0, 1, 0],
             ("movie", 0, 0.3, "lsq"): [1, 0, 1, 1, 0], ("movie", 1, 0.3, "lsq"): [1, 0, 1, 0, 0],
             ("movie", 0, 0.5, "lsq"): [1, 1, 1, 1, 0]}
    for (t, s, c, v), preds in cells.items():
        extra = {"labels": labels} if v == "dense" else {"constraint": c, "mac_ratio": c, "seconds": 1.0}
        write_cell(cell_path(str(tmp_path), t, s, c, v), {"task": t, "seed": s, "variant": v, "preds": preds, **extra})
    with open(tmp_path / "movie-s2-c0.3-lsq.json", "w") as f:
        f.write('{"task": "movie", "seed": 2')             # a cell cut short is left out
    at = {(e["constraint"], e["variant"]): e for e in summarize(str(tmp_path))}
    acc = lambda p: 100 * np.mean(np.asarray(p) == labels)  # noqa: E731
    lsq, kwon = at[(0.3, "lsq")], at[(0.3, "kwon")]
    assert lsq["seeds"] == [0, 1] and lsq["metric"] == pytest.approx((acc([1, 0, 1, 1, 0]) + acc([1, 0, 1, 0, 0])) / 2)
    assert lsq["dense"] == pytest.approx((80 + 100) / 2) and lsq["drop"] == pytest.approx(lsq["dense"] - lsq["metric"])
    assert lsq["vs_baseline"] == pytest.approx(lsq["metric"] - kwon["metric"]) and lsq["paired_seeds"] == [0, 1]
    assert lsq["ci95"][0] <= lsq["vs_baseline"] <= lsq["ci95"][1] and "vs_baseline" not in kwon
    assert lsq["fidelity"] == pytest.approx((0.8 + 0.8) / 2)
    lone = at[(0.5, "lsq")]
    table = markdown(summarize(str(tmp_path)))
    assert lone["seeds"] == [0] and "vs_baseline" not in lone and "mean over 2 seeds unless a cell says fewer" in table
    assert "80.00, 0.600, 1 seed |" in table and "0.800, 2 seed" not in table     # only the short cell is marked
    # STS-B: Spearman of the scores, stored to 7 significant digits
    scores, gold = np.array([0.1, 0.42, 0.3, 0.9]), [0.0, 3.0, 2.0, 5.0]
    write_cell(cell_path(str(tmp_path), "stsb", 0, 1.0, "dense"),
               {"task": "stsb", "seed": 0, "variant": "dense", "preds": _stored(scores), "labels": gold})
    write_cell(cell_path(str(tmp_path), "stsb", 0, 0.3, "lsq"), {"task": "stsb", "seed": 0, "variant": "lsq",
               "constraint": 0.3, "mac_ratio": 0.3, "seconds": 1.0, "preds": _stored(np.float32([0.1, 0.2, 0.3, 0.25]))})
    stsb = next(e for e in summarize(str(tmp_path)) if e["task"] == "stsb")
    assert stsb["metric"] == pytest.approx(100 * spearmanr([0.1, 0.2, 0.3, 0.25], gold)[0], abs=0.01)
    assert stsb["dense"] == pytest.approx(100.0) and _stored(np.array([3, 1])) == [3, 1]


def test_sts_embedding_pairs_lsq_with_kwon_on_common_seeds():
    from benchmarks.sts_embedding import paired_methods
    row = lambda m, c, meth, s, v, loss="gold": {"model": m, "constraint": c, "method": meth, "seed": s,  # noqa: E731
                                                 "similarity_loss": loss, "spearman_after_points": v}
    rows = [row("mpnet", 0.5, "lsq", 0, 88.0), row("mpnet", 0.5, "kwon", 0, 87.5), row("mpnet", 0.5, "lsq", 1, 88.2),
            row("mpnet", 0.5, "kwon", 1, 88.4), row("mpnet", 0.5, "lsq", 2, 90.0),     # seed 2: no kwon to pair
            row("mpnet", 0.5, "kwon", 0, 10.0, "teacher"), row("mpnet", 0.4, "kwon", 0, 80.0)]
    assert paired_methods(rows) == [{"model": "mpnet", "constraint": 0.5, "seeds": [0, 1], "lsq": 88.1, "kwon": 87.95,
                                     "per_seed": [0.5, -0.2]}]


def _speed_row(fraction: float, batch_size: int = 1) -> dict:
    """One benchmarks/latency.py result row as speed_limit reads it, at `fraction` of both ideals."""
    return {"batch_size": batch_size, "seq_len": 32, "speedup": 1.5, "ideal_mac_speedup": 2.0,
            "ideal_physical_speedup": 1.8, "fraction_of_physical_ideal": fraction, "fixed_share": 0.1,
            "original_s": 0.01, "floor_share": 0.2, "ideal_floor_speedup": 1.6, "fraction_of_floor_ideal": fraction}


def test_speed_limit_goal_is_judged_over_all_rows_and_per_backend(tmp_path):
    from benchmarks.record import write_cell
    from benchmarks.speed_limit import summarize
    cells = tmp_path / "cells"
    for backend, fractions in (("eager", [0.95, 0.91]), ("onnx", [0.88, 0.97]), ("onnx_fused", [0.92, 0.90])):
        write_cell(str(cells / f"m-{backend}.json"),
                   {"model": "m", "backend": backend, "masks_of": "run",
                    "report": {"results": list(map(_speed_row, fractions))},
                    "load": {"load_mean": 1.0, "load_max": 1.5, "quiet": True}})
    assert summarize(str(cells), str(tmp_path / "summary.json")) == 0
    goal = json.loads((tmp_path / "summary.json").read_text())["goal"]["floor"]
    assert goal["shapes"] == 6 and goal["shapes_below"] == 1 and goal["lowest"] == 0.88 and not goal["met"]
    by = goal["by_backend"]
    assert by["eager"]["met"] and by["onnx_fused"]["met"] and by["onnx_fused"]["lowest"] == 0.90
    assert not by["onnx"]["met"] and by["onnx"]["shapes_below"] == 1


def test_the_floor_keeps_two_heads_only_where_the_fused_graph_has_the_attention_kernel(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from benchmarks.latency import build_parser, floor_heads_for
    from tests.tiny import tiny_model
    bert, mpnet = tiny_model("bert", seed=3).eval(), tiny_model("mpnet", seed=3).eval()
    base = ["--ckpt_dir", "c", "--mask_dir", "m", "--output", "o.json"]
    heads = lambda model, *extra: floor_heads_for(build_parser().parse_args(base + list(extra)), model,  # noqa: E731
                                                  str(tmp_path))[0]
    assert heads(bert) == heads(bert, "--backend", "onnx") == heads(bert, "--onnx_graph", "fused") == 1
    assert heads(bert, "--backend", "eager", "onnx", "--onnx_graph", "fused") == 2
    assert heads(mpnet, "--backend", "onnx", "--onnx_graph", "fused") == 1      # its attention is not fused
    args = build_parser().parse_args(base + ["--backend", "onnx", "--onnx_graph", "fused"])
    exported = floor_heads_for(args, bert, str(tmp_path))[1]["original"]        # the export the backend reuses
    assert exported["fused"]["attention"] > 0 and exported["attention"] == "sdpa"
    assert (tmp_path / "original.onnx").is_file()


def test_speed_limit_refuses_to_pass_off_a_cell_timed_otherwise(tmp_path, monkeypatch, capsys):
    import benchmarks.speed_limit as speed_limit
    from benchmarks.record import write_cell
    from benchmarks.sts_embedding import cell_name
    monkeypatch.setattr(speed_limit, "CELL_DIR", str(tmp_path / "cells"))
    monkeypatch.setattr(speed_limit, "SUMMARY", str(tmp_path / "summary.json"))
    run = cell_name("minilm", "lsq", 0.5, 0, "gold")
    write_cell(str(tmp_path / "cells" / f"{run}-eager.json"),
               {"model": "minilm", "backend": "eager", "masks_of": run,
                "report": {"threads": 2, "repeats": 15, "results": [_speed_row(0.95), _speed_row(0.95, 8)]},
                "load": {"load_mean": 1.0, "load_max": 1.5, "quiet": True}})
    argv = ["--models", "minilm", "--backends", "eager"]
    assert speed_limit.main(argv + ["--batch_sizes", "8", "1"]) == 0          # the cell holds what is asked: kept
    capsys.readouterr()
    assert speed_limit.main(argv + ["--batch_sizes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{run}-eager.json was timed with --batch_sizes [1, 8] (asked: [1])" in err and "delete it" in err
    assert speed_limit.main(argv + ["--batch_sizes", "1", "8", "--repeats", "30"]) == 2
    assert "--repeats 15 (asked: 30)" in capsys.readouterr().err


def test_accuracy_table_interval_ignores_resamples_with_one_distinct_score(tmp_path):
    import numpy as np
    from benchmarks.accuracy_table import _rowwise_corr, cell_path, summarize
    assert np.isnan(_rowwise_corr(np.array([[1.0, 1.0, 1.0]]), np.array([[1.0, 2.0, 3.0]])))[0]
    assert _rowwise_corr(np.array([[1.0, 2.0, 4.0]]), np.array([[1.0, 2.0, 4.0]]))[0] == pytest.approx(1.0)
    gold = [0.0, 1.0, 2.0, 3.0]                  # four rows: some bootstrap resamples draw one row four times
    for v, preds in (("dense", [0.1, 0.2, 0.3, 0.4]), ("kwon", [0.4, 0.1, 0.3, 0.2]), ("lsq", [0.1, 0.3, 0.2, 0.4])):
        extra = {"labels": gold} if v == "dense" else {"constraint": 0.5, "mac_ratio": 0.5, "seconds": 1.0}
        write_cell(cell_path(str(tmp_path), "stsb", 0, 1.0 if v == "dense" else 0.5, v),
                   {"task": "stsb", "seed": 0, "variant": v, "preds": preds, **extra})
    lsq = next(e for e in summarize(str(tmp_path)) if e["variant"] == "lsq")
    assert lsq["vs_baseline"] == pytest.approx(100 * (0.8 - (-0.4)))     # Spearman 0.8 against -0.4
    assert all(np.isfinite(lsq["ci95"])) and lsq["ci95"][0] <= lsq["ci95"][1]


def test_refit_memory_trace_records_every_refit_step_and_restores_them(tokenizer, tmp_path):
    import prune.reconstruct as reconstruct
    from benchmarks.refit_memory_trace import STEPS, main
    from tests.test_errors import _argv, _glue, _save_ckpt
    before = {name: getattr(reconstruct, name) for name in STEPS}
    ckpt = _save_ckpt(tmp_path / "ckpt", tokenizer)
    out = tmp_path / "trace.json"
    argv = ["--output", str(out), "--", *_argv(ckpt, _glue(tmp_path / "glue"), tmp_path / "run", "--method", "lsq")]
    assert main(argv) == 0
    trace = json.loads(out.read_text())
    steps = [s["step"] for s in trace["steps"]]
    layers = steps.count("teacher_targets")
    assert layers >= 2 and steps[:3] == ["teacher_targets", "_fit_block", "_fit_block"]
    assert all(s["rss_after_mb"] > 0 and s["peak_mb"] <= trace["peak_mb"] for s in trace["steps"])
    assert {name: getattr(reconstruct, name) for name in STEPS} == before          # the wrappers are gone


def test_accuracy_table_pairs_with_the_baseline_it_is_given(tmp_path):
    from benchmarks.accuracy_table import cell_path, main
    labels = [1, 0, 1, 1, 0]
    for v, preds in (("dense", [1, 0, 1, 1, 0]), ("kwon", [0, 0, 0, 1, 0]), ("lsq", [1, 0, 1, 1, 1]),
                     ("lsq_width32", [1, 0, 1, 1, 0])):
        extra = {"labels": labels} if v == "dense" else {"constraint": 0.5, "mac_ratio": 0.5, "seconds": 1.0}
        write_cell(cell_path(str(tmp_path / "cells"), "movie", 0, 1.0 if v == "dense" else 0.5, v),
                   {"task": "movie", "seed": 0, "variant": v, "preds": preds, **extra})
    results = tmp_path / "summary"
    assert main(["--table", "--cell_dir", str(tmp_path / "cells"), "--baseline", "lsq", "--results", str(results),
                 "--figure", str(tmp_path / "f.png")]) == 0
    at = {e["variant"]: e for e in json.loads((tmp_path / "summary.json").read_text())}
    assert at["lsq_width32"]["vs_baseline"] == pytest.approx(100 - 80) and at["kwon"]["vs_baseline"] == -20
    assert "vs_baseline" not in at["lsq"] and "paired difference to lsq" in (tmp_path / "summary.md").read_text()


def test_onnx_attention_ratio_is_eager_time_over_sdpa_time_per_model():
    from benchmarks.onnx_attention import FORMS, ratios
    timings = {"original-sdpa": {"median_s": 0.010}, "original-eager": {"median_s": 0.008},
               "pruned-sdpa": {"median_s": 0.005}, "pruned-eager": {"median_s": 0.006}}
    assert FORMS == ("sdpa", "eager")
    assert ratios(timings, ["original", "pruned"]) == pytest.approx({"original": 0.8, "pruned": 1.2})


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_zero_padded_ffn_widths_compute_the_same_function(family):
    import torch
    from arch import bind
    from benchmarks.ffn_padding import pad_ffn_widths
    from prune.physical import physically_prune
    from tests.tiny import tiny_decoder, tiny_model
    model = (tiny_model("bert", seed=4) if family == "bert" else tiny_decoder("llama", seed=4)).eval()
    arch = bind(model)
    neuron_mask = (torch.rand(arch.num_layers, arch.ffn_dim, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    neuron_mask[1] = 0                                                   # a layer without FFN stays without
    physically_prune(model, arch, torch.ones(arch.num_layers, arch.num_head_units), neuron_mask)
    padded, widths = pad_ffn_widths(model, 8)
    kept = neuron_mask.sum(1).long().tolist()
    assert widths == [-(-k // 8) * 8 for k in kept] and widths[1] == 0 and widths != kept
    ids = torch.randint(5, 90, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(padded(input_ids=ids)[0], model(input_ids=ids)[0], atol=1e-6)


def test_time_shapes_times_every_model_at_every_shape_in_order():
    from transformers import BertConfig
    from utils.timing import relative_medians, time_shapes
    seen = []
    models = {"a": lambda **batch: seen.append(("a", tuple(batch["input_ids"].shape))),
              "b": lambda **batch: seen.append(("b", tuple(batch["input_ids"].shape)))}
    rows = time_shapes(models, BertConfig(vocab_size=50), [1, 3], [4, 8], warmup=1, repeats=2)
    assert [(r["batch_size"], r["seq_len"]) for r in rows] == [(1, 4), (3, 4), (1, 8), (3, 8)]
    assert all(set(r["timings"]) == {"a", "b"} and r["timings"]["a"]["n"] == 2 for r in rows)
    assert seen[:6] == [("a", (1, 4)), ("b", (1, 4))] * 3             # one warm-up round, then alternating rounds
    timings = {"a": {"median_s": 2.0}, "b": {"median_s": 0.5}}
    assert relative_medians(timings, "a") == {"a": 1.0, "b": 0.25}
