"""Post-training pruning of a fine-tuned Transformer (Kwon et al. 2022) from the command line.

    python main.py --task_name sst2 --ckpt_dir CKPT --data_dir GLUE --constraint 0.5
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

log = logging.getLogger("main")

QA_TASKS = ["squad", "squad_v2"]
LM_TASKS = ["causal_lm"]
TASKS = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"] + QA_TASKS + LM_TASKS
DEFAULT_MAX_SEQ_LENGTH = {"glue": 128, "qa": 384, "lm": 256}
DEFAULT_NUM_SAMPLES = {"glue": 2048, "qa": 2048, "lm": 128}


def task_kind(task_name: str) -> str:
    return "qa" if task_name in QA_TASKS else "lm" if task_name in LM_TASKS else "glue"


@dataclass(frozen=True)
class RunConfig:
    task_name: str
    ckpt_dir: str
    model_name: str | None
    data_dir: str | None
    output_dir: str
    metric: str
    constraint: float
    num_samples: int
    seed: int
    device: str
    max_seq_length: int
    doc_stride: int
    batch_size: int
    rearrange: bool
    mask_tuning: bool
    importance: str
    search: str
    method: str
    teacher: str
    ridge: float
    gradient_batches: str
    teacher_exponent: float
    eval_stages: bool
    overwrite: bool
    mha_lut: str | None = None
    ffn_lut: str | None = None
    calib_file: str | None = None
    eval_file: str | None = None
    eval_sequences: int | None = None
    save_pruned: str | None = None
    speed_batch_size: int = 32
    speed_seq_len: int = 128
    export: str | None = None
    head_refit: bool = True
    device_map: str | None = None
    max_memory: dict | None = None
    eval_tasks: str | None = None
    eval_limit: int | None = None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; give the fraction of MACs to keep, e.g. 0.5")
    if not (0 < value < 1) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1); give the fraction to keep, e.g. 0.5 keeps half")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} must be a positive finite number (e.g. the default 0.1)")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    if not 0 <= value < 2**32:           # what numpy's and torch's generators accept
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{2**32 - 1}; give a seed in that range, e.g. 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    from prune.pipeline import PruneOptions
    from prune.registry import choices
    defaults = PruneOptions(constraint=0.5)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task_name", required=True, type=str.lower, choices=TASKS)
    p.add_argument("--ckpt_dir", required=True, help="fine-tuned checkpoint folder (or hub id when online)")
    p.add_argument("--model_name", default=None, help="base model for the tokenizer, if the checkpoint has none")
    p.add_argument("--data_dir", default=None, help="GLUE TSV folder, or the folder of the official SQuAD JSON "
                   "files (train-v1.1.json/dev-v1.1.json, train-v2.0.json/dev-v2.0.json); omit to load from the "
                   "HuggingFace hub")
    p.add_argument("--output_dir", default=None, help="default: outputs/<model>/<task>/<metric>/<constraint>/seed_<seed>")
    p.add_argument("--calib_file", default=None, help="causal_lm: calibration text (a .txt file or a folder of "
                   "them), or wikitext2 / c4 from the hub when online")
    p.add_argument("--eval_file", default=None, help="causal_lm: held-out text for the perplexity (file, folder, "
                   "wikitext2 or c4); keep it disjoint from --calib_file")
    p.add_argument("--eval_sequences", default=None, type=_positive_int,
                   help="causal_lm: evaluate on at most this many sequences of --max_seq_length tokens (default: all)")
    p.add_argument("--eval_tasks", default=None,
                   help="causal_lm: also score zero-shot accuracy with lm-evaluation-harness (pip install lm-eval) "
                        "before and after pruning: task names (arc_easy,piqa; online), a folder of task YAML files "
                        "(offline: python -m scripts.make_zero_shot_tasks -> data/zero_shot) or YAML files")
    p.add_argument("--eval_limit", default=None, type=_positive_int,
                   help="--eval_tasks: at most this many items per task (default: all)")
    p.add_argument("--metric", default=defaults.metric, choices=choices("metric"),
                   help="what --constraint is a fraction of: mac (heads + FFN at the task's average length), "
                        "params (heads + FFN weights) or latency (tables from scripts/measure_latency.py)")
    p.add_argument("--constraint", required=True, type=_fraction, help="fraction of MACs to keep, 0 < c < 1")
    p.add_argument("--num_samples", default=None, type=_positive_int,
                   help="training examples for the gradients and mask tuning (default 2048; causal_lm: 128 "
                        "calibration sequences)")
    p.add_argument("--seed", default=defaults.seed, type=_seed)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--gpu", default=None, type=int, help="alias of --device cuda:N (original tool's flag)")
    p.add_argument("--max_seq_length", default=None, type=_positive_int,
                   help="default: 384 for squad/squad_v2, 128 for GLUE tasks, 256 for causal_lm")
    p.add_argument("--doc_stride", default=128, type=_positive_int,
                   help="squad/squad_v2: overlap in tokens of consecutive windows over a long context")
    p.add_argument("--batch_size", default=32, type=_positive_int, help="sample batch size for the gradients")
    p.add_argument("--no_rearrange", action="store_true", help="ablation: skip mask rearrangement")
    p.add_argument("--no_mask_tuning", "--no_rescale", dest="no_mask_tuning", action="store_true",
                   help="ablation: skip mask tuning (--no_rescale is the old name)")
    p.add_argument("--no_head_refit", action="store_true",
                   help="ablation (lsq): do not refit the task head's first Linear to the unpruned model's")
    p.add_argument("--importance", default=defaults.importance, choices=choices("importance"),
                   help="how units are scored: fisher (the paper), or a baseline: magnitude, random, wanda_sp, flap")
    p.add_argument("--search", default=defaults.search, choices=choices("search"),
                   help="how masks are chosen under a mac/params budget: global (the paper: most total importance), "
                        "uniform (the same fraction in every layer, as Wanda-sp) or threshold (one global score "
                        "threshold, as FLAP)")
    p.add_argument("--method", default=defaults.method, choices=choices("method"),
                   help="how mask tuning works: lsq (default) refits the output projections of the kept heads/"
                        "neurons by layer-wise ridge least squares; kwon is the paper's, one scale per kept unit; "
                        "bias is FLAP's bias compensation (pruned inputs replaced by their mean)")
    p.add_argument("--ridge", default=defaults.ridge, type=_positive_float,
                   help="lsq: ridge strength towards the original weights, relative to the mean input energy")
    p.add_argument("--teacher", default=None, choices=["schedule", "full"],
                   help="what each layer reconstructs: the paper's less-pruned teacher mask (schedule, default) "
                        "or the unpruned model (full)")
    p.add_argument("--teacher_exponent", default=defaults.teacher_exponent, type=_fraction,
                   help="--teacher schedule: the teacher mask keeps constraint ** exponent of the MACs (the paper: "
                        "0.5, i.e. sqrt(c)); closer to 1 puts the teacher nearer the pruned model")
    p.add_argument("--gradient_batches", default="sorted", choices=["sorted", "random"],
                   help="how the sample is batched for the Fisher gradients: sorted by length (default: little "
                        "padding, faster) or random (as the paper's code; no better on the benchmark)")
    p.add_argument("--eval_stages", action="store_true", help="also evaluate the teacher, search-only and rearranged masks")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --output_dir")
    p.add_argument("--mha_lut", default=None, help="--metric latency: attention latency table (mha_lut.pt from "
                   "scripts/measure_latency.py)")
    p.add_argument("--ffn_lut", default=None, help="--metric latency: FFN latency table (ffn_lut.pt)")
    p.add_argument("--save_pruned", nargs="?", const="pruned_model", default=None, metavar="DIR",
                   help="also save the physically pruned model (HF files + pruning.json; load it with "
                        "prune.pruned_model.load_pruned) and time it; a relative DIR is inside --output_dir "
                        "(default DIR: pruned_model)")
    p.add_argument("--speed_batch_size", default=32, type=_positive_int, help="--save_pruned: batch size of the timing")
    p.add_argument("--speed_seq_len", default=128, type=_positive_int, help="--save_pruned: sequence length of the timing")
    p.add_argument("--export", default=None, choices=["onnx"],
                   help="--save_pruned: also write model.onnx into the saved folder (dynamic batch and sequence "
                        "axes), checked against PyTorch on the dev batches; needs the onnx, onnxscript and "
                        "onnxruntime packages")
    p.add_argument("--device_map", default=None, choices=["auto"],
                   help="causal_lm, a model larger than one device: hold it in CPU memory, spread it over the "
                        "devices (accelerate's infer_auto_device_map + dispatch_model, within --max_memory) for the "
                        "gradient pass and the evaluations, and stream one layer at a time onto --device for mask "
                        "tuning")
    p.add_argument("--max_memory", default=None, type=_max_memory, metavar="DEV=SIZE,...",
                   help="--device_map auto: memory per device, e.g. 0=20GiB,1=20GiB,cpu=60GiB (what does not fit "
                        "goes to a temporary folder on disk)")
    return p


def _max_memory(text: str) -> dict:
    from utils.offload import parse_max_memory
    try:
        return parse_max_memory(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--max_memory {text!r}: {e}")


def config_from_args(argv=None) -> RunConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.metric == "latency" and not (args.mha_lut and args.ffn_lut):
        parser.error("--metric latency needs --mha_lut and --ffn_lut (measure them on the target device with "
                     "scripts/measure_latency.py)")
    kind = task_kind(args.task_name)
    if kind == "lm" and not (args.calib_file and args.eval_file):
        parser.error("--task_name causal_lm needs --calib_file and --eval_file (text files or folders; "
                     "wikitext2 or c4 from the hub when online)")
    if args.eval_tasks and kind != "lm":
        parser.error("--eval_tasks scores causal LMs (--task_name causal_lm)")
    if args.device_map and kind != "lm":
        parser.error("--device_map auto is for decoders (--task_name causal_lm); an encoder fits on one device")
    if args.max_memory and not args.device_map:
        parser.error("--max_memory sets the budget of --device_map auto: add --device_map auto")
    if args.export and not args.save_pruned:
        parser.error("--export onnx exports the saved pruned model: add --save_pruned")
    if args.export:
        import importlib.util
        missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(f"--export onnx needs {', '.join(missing)}: pip install {' '.join(missing)}")
    device = f"cuda:{args.gpu}" if args.gpu is not None else args.device
    max_seq_length = args.max_seq_length or DEFAULT_MAX_SEQ_LENGTH[kind]
    output_dir = args.output_dir or os.path.join(
        "outputs", os.path.basename(os.path.normpath(args.ckpt_dir)), args.task_name, args.metric,
        f"{args.constraint:g}", f"seed_{args.seed}")
    return RunConfig(
        task_name=args.task_name, ckpt_dir=args.ckpt_dir, model_name=args.model_name, data_dir=args.data_dir,
        output_dir=output_dir, metric=args.metric, constraint=args.constraint,
        num_samples=args.num_samples or DEFAULT_NUM_SAMPLES[kind],
        seed=args.seed, device=device, max_seq_length=max_seq_length, doc_stride=args.doc_stride,
        batch_size=args.batch_size,
        rearrange=not args.no_rearrange, mask_tuning=not args.no_mask_tuning, importance=args.importance,
        search=args.search,
        method=args.method, teacher=args.teacher or "schedule", ridge=args.ridge,
        gradient_batches=args.gradient_batches, teacher_exponent=args.teacher_exponent,
        eval_stages=args.eval_stages, overwrite=args.overwrite, mha_lut=args.mha_lut, ffn_lut=args.ffn_lut,
        calib_file=args.calib_file, eval_file=args.eval_file, eval_sequences=args.eval_sequences,
        save_pruned=args.save_pruned, speed_batch_size=args.speed_batch_size, speed_seq_len=args.speed_seq_len,
        export=args.export, head_refit=not args.no_head_refit, device_map=args.device_map,
        max_memory=args.max_memory, eval_tasks=args.eval_tasks, eval_limit=args.eval_limit)


def run(cfg: RunConfig, dist=None) -> dict:
    """dist (utils/distributed.Dist): the processes sharing the work; only the first one writes the run folder."""
    import torch

    from dataset.tasks import prepare_glue
    from prune.masks import kept_per_layer, save_masks
    from prune.pipeline import PruneOptions, prune
    from prune.reconstruct import save_weight_updates, swapped_weights
    from utils.arch import bind, facts_for
    from utils.checkpoint import check_checkpoint_dir, check_fits, load_config, load_model, load_tokenizer
    from utils.device import peak_gpu_mb, peak_rss_mb, resolve_device
    from utils.distributed import Dist, DistributedError, check_enough_batches
    from utils.offload import Placement, peak_gpu_mb_per_device
    from utils.run_folder import package_versions, prepare_run_folder, setup_logging, write_json
    from utils.safety import check_save_target, finish_run, resolve_save_target, writing

    dist = dist or Dist()
    save_target = resolve_save_target(cfg.save_pruned, cfg.output_dir)
    check_save_target(save_target, cfg.output_dir, cfg.ckpt_dir, cfg.overwrite)
    device = dist.device() if dist.backend == "nccl" else resolve_device(cfg.device)
    if cfg.device_map and dist.active:
        raise DistributedError("--device_map auto spreads one model over this machine's devices, so it takes one "
                               "process: start main.py without torchrun / accelerate launch, or drop --device_map.")
    placement = Placement(device, cfg.device_map, cfg.max_memory)
    check_checkpoint_dir(cfg.ckpt_dir)
    model_config = load_config(cfg.ckpt_dir)
    facts_for(model_config.model_type)            # unsupported architectures fail here, before loading
    tokenizer = load_tokenizer(cfg.ckpt_dir, cfg.model_name)
    check_fits(tokenizer, model_config, cfg.speed_seq_len if cfg.save_pruned else None)
    if dist.is_main:
        prepare_run_folder(cfg.output_dir, cfg.overwrite, save_target)
        setup_logging(cfg.output_dir)
        write_json(os.path.join(cfg.output_dir, "args.json"), asdict(cfg))
        write_json(os.path.join(cfg.output_dir, "versions.json"), package_versions())
        log.info("run folder %s", cfg.output_dir)
    else:
        setup_logging(None, verbose=False)

    torch.manual_seed(cfg.seed)
    wall_start = time.perf_counter()
    kind = task_kind(cfg.task_name)
    model = load_model(cfg.ckpt_dir, {"qa": "qa", "lm": "causal_lm", "glue": "classification"}[kind])
    model = model if placement.streaming else model.to(device)     # streaming: held in CPU memory
    arch = bind(model)
    mha_lut = ffn_lut = None
    if cfg.metric == "latency":                   # bad tables fail here, before the data and the gradients
        from prune.latency import load_lut
        heads = "attention heads" if arch.heads_per_unit == 1 else "attention head units (key/value groups)"
        mha_lut = load_lut(cfg.mha_lut, arch.num_head_units, "--mha_lut", heads)
        ffn_lut = load_lut(cfg.ffn_lut, arch.ffn_dim, "--ffn_lut", "FFN neurons")
    if kind == "qa":
        from dataset.squad_task import prepare_squad
        task = prepare_squad(cfg.task_name, cfg.data_dir, tokenizer, model.config, cfg.num_samples, cfg.seed,
                             cfg.max_seq_length, cfg.doc_stride, cfg.batch_size)
    elif kind == "lm":
        from dataset.lm_task import prepare_causal_lm
        task = prepare_causal_lm(cfg.calib_file, cfg.eval_file, tokenizer, model.config, cfg.num_samples, cfg.seed,
                                 cfg.max_seq_length, cfg.batch_size, cfg.eval_sequences, dist)
    else:
        task = prepare_glue(cfg.task_name, cfg.data_dir, tokenizer, model.config, cfg.num_samples, cfg.seed,
                            cfg.max_seq_length, cfg.batch_size, dist)
    gradient_batches = task.gradient_batches if cfg.gradient_batches == "random" else None
    check_enough_batches(dist, "the sample", len(task.sample_batches), "--num_samples (or lower --batch_size)")
    loss_tokens = arch.classifier_token if task.loss_tokens == "classifier" else task.loss_tokens

    eval_start = time.perf_counter()
    with placement.whole_model(model, "evaluate"):
        before = task.evaluate(model, arch)
    eval_seconds = time.perf_counter() - eval_start
    log.info("unpruned %s: %s", task.primary_metric, before)
    zero_shot = {}
    if cfg.eval_tasks and dist.is_main:           # lm-evaluation-harness on the in-memory model (issue #23)
        from evaluate.zero_shot import zero_shot_scores
        with placement.whole_model(model, "zero_shot"):
            zero_shot["before"] = zero_shot_scores(model, tokenizer, cfg.eval_tasks, cfg.eval_limit, cfg.batch_size)

    prune_start = time.perf_counter()
    options = PruneOptions(cfg.constraint, rearrange=cfg.rearrange, mask_tuning=cfg.mask_tuning,
                           method=cfg.method, importance=cfg.importance, search=cfg.search, metric=cfg.metric,
                           seed=cfg.seed,
                           mha_lut=mha_lut, ffn_lut=ffn_lut, teacher=cfg.teacher, ridge=cfg.ridge,
                           teacher_exponent=cfg.teacher_exponent, checkpoint_layers=task.checkpoint_layers,
                           head_refit=cfg.head_refit)
    result = prune(model, arch, task.sample_batches, task.seq_len, options, loss_tokens, loss_fn=task.loss_fn,
                   gradient_batches=gradient_batches, dist=dist, placement=placement)
    prune_seconds = time.perf_counter() - prune_start
    head_mask, neuron_mask = result.final
    with swapped_weights(arch, result.weight_updates), placement.whole_model(model, "evaluate"):
        after = task.evaluate(model, arch, head_mask, neuron_mask)
    log.info("pruned %s: %s (MAC ratio %.4f, pruning %.1f s)", task.primary_metric, after, result.mac_ratio, prune_seconds)
    if zero_shot:
        from utils.hooks import apply_masks
        with swapped_weights(arch, result.weight_updates), placement.whole_model(model, "zero_shot"):
            zero_shot["after"] = zero_shot_scores(model, tokenizer, cfg.eval_tasks, cfg.eval_limit, cfg.batch_size,
                                                  context=lambda: apply_masks(arch, head_mask, neuron_mask))
    generations = _generations(model, arch, tokenizer, result, placement) if kind == "lm" else None

    stages = {}
    if cfg.eval_stages:
        for name, (h, n) in result.masks.items():
            if name != "final":
                with placement.whole_model(model, "evaluate"):
                    stages[name] = task.evaluate(model, arch, h, n)
                log.info("stage %s: %s", name, stages[name])

    if dist.is_main:
        with writing("the masks", cfg.output_dir):
            save_masks(cfg.output_dir, head_mask, neuron_mask)
            if result.weight_updates:   # lsq: the refitted output projections belong with the masks
                save_weight_updates(os.path.join(cfg.output_dir, "weight_updates.pt"), result.weight_updates)
    results = {
        "task": task.name,
        "primary_metric": task.primary_metric,
        "metric_before": before,
        "metric_after": after,
        "metric_stages": stages,
        "constraint": cfg.constraint,
        "method": cfg.method,
        "teacher": cfg.teacher,
        "teacher_exponent": cfg.teacher_exponent if cfg.teacher == "schedule" else None,
        "ridge": cfg.ridge if cfg.method == "lsq" else None,
        "mask_tuning_enabled": cfg.mask_tuning,
        "budget_metric": cfg.metric,
        "mac_ratio": result.mac_ratio,
        "param_ratio": result.param_ratio,
        "budget_ratio": result.budget_ratio,
        "seq_len_for_macs": task.seq_len,
        "seconds": {**result.seconds, "pruning_total": round(prune_seconds, 3),
                    "evaluate_once": round(eval_seconds, 3),
                    "wall_total": round(time.perf_counter() - wall_start, 3)},
        "peak_memory_mb": {"rss": round(peak_rss_mb(), 1), "gpu": peak_gpu_mb(device),
                           "gpu_per_device": peak_gpu_mb_per_device()},
        "distributed": _split(dist, task, gradient_batches, cfg.batch_size),
        "heads_kept_per_layer": kept_per_layer(head_mask),
        "neurons_kept_per_layer": kept_per_layer(neuron_mask),
        "mask_tuning": result.tuning_events,
        "device": str(device),
        "data": task.info,
    }
    if generations:
        results["generations"] = generations
    if zero_shot:
        results["zero_shot"] = zero_shot
    if cfg.metric == "latency":
        results["latency_ratio"] = result.budget_ratio
    staged = None
    if cfg.save_pruned:
        results["pruned_model"], staged = _save_pruned_model(cfg, model, tokenizer, task, result, device, dist,
                                                             placement)
    results["placement"] = placement.record()          # where each pass ran, the pruned model's included
    results["peak_memory_mb"]["rss_per_process"] = [round(m, 1) for m in dist.all_gather_object(peak_rss_mb())]
    dist.barrier()      # every process finished its share: a failed one never gets here, so no results.json
    if dist.is_main:
        finish_run(cfg.output_dir, results, staged, save_target)   # the model and results.json, last
        log.info("done: %s", os.path.join(cfg.output_dir, "results.json"))
    return results


def _split(dist, task, gradient_batches, batch_size: int) -> dict:
    """How the work was split over the processes (batches per process, in the order of the ranks)."""
    def per_rank(batches):
        count = len(batches) if isinstance(batches, list) else batches
        return [len(range(r, count, dist.world_size)) for r in range(dist.world_size)]
    if task.head == "causal_lm":
        eval_batches = per_rank(math.ceil(task.info["evaluation"]["sequences"] / batch_size))
    else:
        eval_batches = per_rank(task.dev_batches) if task.head != "qa" else "all on every process (not split)"
    return {"world_size": dist.world_size, "backend": dist.backend, "split": "every world_size-th batch",
            "gradient_batches": per_rank(gradient_batches or task.sample_batches),
            "tuning_batches": per_rank(task.sample_batches),
            "eval_batches": eval_batches}


def _generations(model, arch, tokenizer, result, placement) -> dict:
    """Greedy continuations of a few fixed prompts by the unpruned and the pruned model, for a person to read."""
    from dataset.lm_task import PROMPTS
    from evaluate.perplexity import greedy_generations
    from prune.reconstruct import swapped_weights
    from utils.hooks import apply_masks

    with placement.whole_model(model, "generations"):
        before = greedy_generations(model, tokenizer, PROMPTS, max_new_tokens=24)
    with swapped_weights(arch, result.weight_updates), placement.whole_model(model, "generations"):
        after = greedy_generations(model, tokenizer, PROMPTS, max_new_tokens=24,
                                   context=lambda: apply_masks(arch, *result.final))
    for prompt, old, new in zip(PROMPTS, before, after):
        log.info("prompt %r\n  unpruned: %r\n  pruned:   %r", prompt, old, new)
    return {"prompts": PROMPTS, "before": before, "after": after}


def _decoder_speed(original, pruned, seq_len: int) -> dict:
    """Prefill latency (batch 1 x seq_len) and greedy decode tokens/s of both models."""
    from evaluate.perplexity import decode_speed, prefill_latency
    out = {}
    for name, model in (("original", original), ("pruned", pruned)):
        out[f"prefill_s_{name}"] = prefill_latency(model, 1, seq_len)
        out[f"decode_tokens_per_s_{name}"] = decode_speed(model, prompt_len=min(64, seq_len), new_tokens=32)
    out["prefill_speedup"] = out["prefill_s_original"] / out["prefill_s_pruned"]
    out["decode_speedup"] = out["decode_tokens_per_s_pruned"] / out["decode_tokens_per_s_original"]
    return out


def _save_pruned_model(cfg: RunConfig, model, tokenizer, task, result, device, dist, placement
                       ) -> tuple[dict, str | None]:
    """Physically prune a copy of the model, stage it next to its target, check it and time it against
    the original. Returns (results.json's pruned_model, the staged folder). With several processes all
    evaluate their share; only the first one saves, times and exports."""
    from prune.latency import measure_speedup
    from prune.physical import count_parameters, physically_pruned_copy
    from utils.arch import bind
    from utils.pruned_io import save_pruned, weights_size_bytes
    from utils.run_folder import current_run_id
    from utils.safety import resolve_save_target, writing

    path = resolve_save_target(cfg.save_pruned, cfg.output_dir)
    head_mask, neuron_mask = result.final
    pruned, shapes = physically_pruned_copy(model, head_mask, neuron_mask, getattr(result, "weight_updates", None))
    with placement.whole_model(pruned, "evaluate_pruned"):
        metric = task.evaluate(pruned, bind(pruned))
    if not dist.is_main:
        return {}, None
    with writing("the pruned model", os.path.dirname(os.path.abspath(path))):
        staged = save_pruned(pruned, tokenizer, path, shapes, run_id=current_run_id(), place=False)["staged_dir"]
    with placement.whole_model(model, "speed_original"), placement.whole_model(pruned, "speed_pruned"):
        speed = measure_speedup(model, pruned, cfg.speed_batch_size, cfg.speed_seq_len, device)
    info = {
        "path": path,
        "metric": metric,
        "parameters_before": count_parameters(model),
        "parameters_after": count_parameters(pruned),
        "weights_bytes_before": weights_size_bytes(cfg.ckpt_dir) if os.path.isdir(cfg.ckpt_dir) else None,
        "weights_bytes_after": weights_size_bytes(staged),
        "run_id": current_run_id(),
        "heads_per_layer": shapes["heads_per_layer"],
        "neurons_per_layer": shapes["neurons_per_layer"],
        "measured_speedup": speed["speedup"],
        "speed": {k: v for k, v in speed.items() if k != "timings"},
    }
    if task.head == "causal_lm":
        with placement.whole_model(model, "speed_original"), placement.whole_model(pruned, "speed_pruned"):
            info["decoder_speed"] = _decoder_speed(model, pruned, cfg.speed_seq_len)
    if cfg.export == "onnx":
        from utils.onnx_export import export_and_check
        info["onnx"] = export_and_check(pruned, staged, task.dev_batches)     # placed with the model folder
        info["onnx"]["path"] = os.path.join(path, os.path.basename(info["onnx"]["path"]))
    log.info("pruned model saved to %s: %s %s, %d -> %d parameters, %.2fx faster (batch %d x %d tokens, %s)",
             path, task.primary_metric, metric, info["parameters_before"], info["parameters_after"],
             speed["speedup"], cfg.speed_batch_size, cfg.speed_seq_len, device)
    return info, staged


def main(argv=None) -> int:
    """Exit status: 0 done, 2 a user-fixable error (one `error: ...` paragraph on stderr; argparse's
    usage errors too), 130 interrupted (Ctrl-C). Other exceptions are bugs and keep their traceback."""
    cfg = config_from_args(argv)
    dist = None
    try:
        from utils.distributed import close, init_from_env
        from utils.errors import USER_ERRORS
        from utils.safety import Terminated, run_guard
        try:
            with run_guard():              # SIGTERM like Ctrl-C; the folder's lock released on any exit
                dist = init_from_env(cfg.device)
                run(cfg, dist)
        except USER_ERRORS as e:
            where = f" (process {dist.rank} of {dist.world_size})" if dist and dist.active else ""
            print(f"error{where}: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()),
                  file=sys.stderr)
            return 2
        finally:
            if dist is not None:
                close(dist)
    except KeyboardInterrupt as e:
        print(f"\ninterrupted: the run in {cfg.output_dir} did not finish and left no results.json; "
              f"run the same command again to redo it", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
