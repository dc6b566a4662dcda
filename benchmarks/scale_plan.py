"""What pruning Llama-3-8B and -70B with this tool would take, scaled from measured SmolLM2-135M runs.

Times: the multiply-accumulates (MACs) of each stage, counted from the model's shape, divided by the rate at which
this project's code ran the same stage on SmolLM2 (README: `main.py` at 0.5, 128 x 256 calibration tokens, idle
2-core CPU: gradients 121 s, refit 204 s). The two stages' measured rates agree (below), which is the check
that the MAC count explains the time. GPU times divide the same MACs by an *assumed* sustained rate
(--gpu_tmacs, not measured here: no GPU was available).
Memory: weights from the parameter count; the gradient pass's activations from the measured peak-RSS growth per
sequence of SmolLM2 gradient batches (fp32; 1 and 4 sequences of 256 tokens, with 30 and with 15 of its layers:
--layer_mb per layer, --vocab_mb for the output layer and the loss), scaled by hidden + FFN width (and halved for
bf16) and by the vocabulary; the layer-wise stages from what they cache (5 copies of the sample's hidden states)
plus one layer and its normal equations (float64).

    python -m benchmarks.scale_plan --output benchmarks/results/scale_plan.json
"""
from __future__ import annotations

import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Published configs (config.json of meta-llama/Meta-Llama-3-8B / -70B, HuggingFaceTB/SmolLM2-135M).
MODELS = {
    "smollm2-135m": dict(layers=30, hidden=576, ffn=1536, heads=9, kv_heads=3, head_dim=64, vocab=49152, tied=True),
    "llama-3-8b": dict(layers=32, hidden=4096, ffn=14336, heads=32, kv_heads=8, head_dim=128, vocab=128256, tied=False),
    "llama-3-70b": dict(layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8, head_dim=128, vocab=128256,
                        tied=False),
}
MEASURED = {"model": "smollm2-135m", "sequences": 128, "seq_len": 256, "gradients_s": 121.0, "refit_s": 204.0,
            "constraint": 0.5, "peak_rss_gb": 5.7, "source": "README, main.py --constraint 0.5 on SmolLM2, idle 2-core CPU"}
GIB = 2**30


def layer_params(m: dict) -> int:
    q = m["heads"] * m["head_dim"]
    kv = m["kv_heads"] * m["head_dim"]
    return m["hidden"] * (q + 2 * kv) + q * m["hidden"] + 3 * m["hidden"] * m["ffn"] + 2 * m["hidden"]


def params(m: dict) -> int:
    embed = m["vocab"] * m["hidden"]
    return m["layers"] * layer_params(m) + embed * (1 if m["tied"] else 2) + m["hidden"]


def layer_macs_per_token(m: dict, seq_len: int) -> float:
    """Linear layers plus attention scores and values over the whole window (as the README's count)."""
    return layer_params(m) - 2 * m["hidden"] + 2 * seq_len * m["heads"] * m["head_dim"]


def gradient_macs(m: dict, tokens: int, seq_len: int) -> float:
    """Forward plus backward to the activations (the weights are frozen): twice the forward."""
    return 2 * tokens * (m["layers"] * layer_macs_per_token(m, seq_len) + m["hidden"] * m["vocab"])


def refit_macs(m: dict, tokens: int, seq_len: int, keep: float) -> float:
    """Per layer: 4 layer passes over the sample (teacher, the two block fits, the student's next input) and the
    normal equations X^T X, X^T Y of the two refitted projections over the kept columns."""
    k_attn, k_ffn = keep * m["heads"] * m["head_dim"], keep * m["ffn"]
    gram = tokens * (k_attn ** 2 + k_attn * m["hidden"] + k_ffn ** 2 + k_ffn * m["hidden"])
    solve = (k_attn ** 3 + k_ffn ** 3) / 3
    return m["layers"] * (4 * tokens * layer_macs_per_token(m, seq_len) + gram + solve)


def plan(m: dict, ref: dict, rates: dict, measured_mb: tuple, gpu_tmacs: float, device_gib: float,
         tokens: int, seq_len: int, keep: float, batch: int, bytes_per_weight: int = 2) -> dict:
    weights_gib = params(m) * bytes_per_weight / GIB
    layer_mb, vocab_mb = measured_mb
    width = (m["hidden"] + m["ffn"]) / (ref["hidden"] + ref["ffn"])
    act_gib = (m["layers"] * layer_mb * width * bytes_per_weight / 4 + vocab_mb * m["vocab"] / ref["vocab"]) / 1024
    layer_gib = layer_params(m) * bytes_per_weight / GIB
    cached_gib = 5 * tokens * m["hidden"] * bytes_per_weight / GIB
    k_ffn = keep * m["ffn"]
    normal_gib = (k_ffn ** 2 + k_ffn * m["hidden"]) * 8 / GIB
    grad, refit = gradient_macs(m, tokens, seq_len), refit_macs(m, tokens, seq_len, keep)
    whole_gib = weights_gib + batch * act_gib
    return {
        "parameters_billion": round(params(m) / 1e9, 3),
        "weights_gib_bf16": round(weights_gib, 1),
        "gradients": {"tera_macs": round(grad / 1e12, 1),
                      "cpu_2core_hours": round(grad / rates["gradients"] / 3600, 2),
                      "gpu_minutes_at_assumed_rate": round(grad / (gpu_tmacs * 1e12) / 60, 2),
                      "memory_gib_weights_plus_one_batch": round(whole_gib, 1),
                      "activations_gib_per_sequence": round(act_gib, 2),
                      "devices_of_given_size": -(-whole_gib * 1.1 // device_gib)},   # 10% for the allocator
        "refit": {"tera_macs": round(refit / 1e12, 1),
                  "cpu_2core_hours": round(refit / rates["refit"] / 3600, 2),
                  "gpu_minutes_at_assumed_rate": round(refit / (gpu_tmacs * 1e12) / 60, 2),
                  "device_memory_gib": round(layer_gib + cached_gib + normal_gib, 2),
                  "one_layer_gib": round(layer_gib, 2), "cached_hidden_states_gib": round(cached_gib, 2),
                  "normal_equations_gib_fp64": round(normal_gib, 2),
                  "devices": 1},
        "cpu_memory_gib": {"model": round(weights_gib, 1), "model_plus_pruned_copy": round(weights_gib * (1 + keep), 1)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer_mb", type=float, required=True,
                   help="measured: MB per layer per sequence of 256 tokens in SmolLM2's gradient pass (fp32)")
    p.add_argument("--vocab_mb", type=float, required=True,
                   help="measured: MB per sequence of 256 tokens outside the layers (logits and loss, fp32)")
    p.add_argument("--gpu_tmacs", type=float, default=150.0,
                   help="ASSUMED sustained tera-MACs/s of one GPU in bf16 (default 150 = 300 TFLOP/s)")
    p.add_argument("--device_gib", type=float, default=80.0, help="memory of one GPU")
    p.add_argument("--batch_size", type=int, default=8, help="sequences per gradient batch (main.py --batch_size)")
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "scale_plan.json"))
    args = p.parse_args()
    ref = MODELS[MEASURED["model"]]
    tokens = MEASURED["sequences"] * MEASURED["seq_len"]
    seq_len, keep = MEASURED["seq_len"], MEASURED["constraint"]
    rates = {"gradients": gradient_macs(ref, tokens, seq_len) / MEASURED["gradients_s"],
             "refit": refit_macs(ref, tokens, seq_len, keep) / MEASURED["refit_s"]}
    out = {"measured": MEASURED, "measured_rate_giga_macs_per_s": {k: round(v / 1e9, 1) for k, v in rates.items()},
           "measured_gradient_mb_per_sequence_smollm2_fp32": {"per_layer": args.layer_mb, "outside_layers": args.vocab_mb},
           "assumed_gpu_tera_macs_per_s": args.gpu_tmacs, "device_gib": args.device_gib,
           "gradient_batch_size": args.batch_size,
           "calibration": {"sequences": MEASURED["sequences"], "seq_len": seq_len, "constraint": keep},
           "plans": {name: plan(m, ref, rates, (args.layer_mb, args.vocab_mb), args.gpu_tmacs, args.device_gib,
                                tokens, seq_len, keep, args.batch_size) for name, m in MODELS.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
