"""Post-training pruning of a fine-tuned Transformer (Kwon et al. 2022) from the command line.

    python main.py --task_name sst2 --ckpt_dir CKPT --data_dir GLUE --constraint 0.5

Flags -> a frozen RunConfig (its `prune` field a PruneOptions) -> run(). The task (tasks/) prepares the
data and adds its extras; main.py never branches on a task's name.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace

STARTUP_INTERRUPTED = "\ninterrupted: stopped while starting up, before any file was written; run the same command again"


def _interrupted_while_starting(signum, frame):
    """SIGINT before main() runs: nothing is written yet, so leave at once. (A KeyboardInterrupt raised inside a
    library's import can be swallowed by it, and the run would go on as if no Ctrl-C had come.)"""
    sys.stderr.write(STARTUP_INTERRUPTED + "\n")
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_while_starting)

try:    # a Ctrl-C while the libraries load is one line, not the import machinery's traceback
    import torch

    from arch import ATTENTION_UNITS, bind, facts_for
    from evaluate.similarity import LOSSES as SIMILARITY_LOSSES
    from evaluate.speed import measure_speedup
    from export import registry as exporters
    from export.hf_folder import save_pruned, weights_size_bytes
    from prune.latency_tables import load_lut
    from prune.masks import kept_per_layer, save_masks
    from prune.options import differences, variant_name
    from prune.physical import count_parameters, physically_pruned_copy
    from prune.pipeline import PruneOptions, prune
    from prune.weight_updates import save_weight_updates, swapped_weights
    from prune.widths import resolve_width_multiple
    from prune.registry import choices
    from run.folder import current_run_id, package_versions, prepare_run_folder, setup_logging, write_json
    from run.safety import (Terminated, check_save_target, claim_save_target, finish_run, resolve_save_target,
                            run_guard, target_state, writing)
    from tasks import registry as task_registry  # importing tasks/ registers the built-in tasks
    from tasks.base import DataRequest
    from tasks.causal_lm import CALIB_MIX_FRACTION
    from utils.arg_types import positive_int
    from utils.checkpoint import (check_checkpoint_dir, check_fits, check_task_fields, load_config, load_model,
                                  load_tokenizer)
    from utils.device import peak_gpu_mb, peak_rss_mb, resolve_device
    from utils.distributed import Dist, DistributedError, check_enough_batches, close, init_from_env
    from utils.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR, USER_ERRORS
    from utils.offload import Placement, parse_max_memory, peak_gpu_mb_per_device
except KeyboardInterrupt:
    print(STARTUP_INTERRUPTED, file=sys.stderr)
    sys.exit(130)

log = logging.getLogger("main")


@dataclass(frozen=True)
class RunConfig:
    """One run: the pruning options (their defaults live in PruneOptions) and what the run reads and writes."""
    task_name: str
    ckpt_dir: str
    output_dir: str
    prune: PruneOptions
    data: DataRequest
    model_name: str | None = None
    device: str = "auto"
    gradient_batches: str = "sorted"
    eval_stages: bool = False
    overwrite: bool = False
    mha_lut: str | None = None            # paths; the tables are read once the model is known
    ffn_lut: str | None = None
    save_pruned: str | None = None
    speed_batch_size: int = 32
    speed_seq_len: int = 128
    export: str | None = None
    device_map: str | None = None
    max_memory: dict | None = None

    @property
    def constraint(self) -> float:
        return self.prune.constraint


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; give the fraction of MACs to keep, e.g. 0.5")
    if not (0 < value < 1) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1); give the fraction to keep, e.g. 0.5 keeps half")
    return value


MAX_LENGTH = 2**20             # tokens: longer than any supported model's position table
MAX_SPEED_TOKENS = 2**20       # batch x length of the timing input
# Flags naming a file, folder or model: an empty value (an unset shell variable) must not mean "none".
PATH_FLAGS = ("ckpt_dir", "model_name", "data_dir", "output_dir", "calib_file", "calib_mix", "eval_file", "mha_lut",
              "ffn_lut", "save_pruned")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; give a share between 0 and 1, e.g. 0.5")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]; give a share between 0 and 1, e.g. 0.5")
    return value


def _length(text: str) -> int:
    """A length in tokens: bounded before it reaches the tokenizer (which overflows on huge values)."""
    return positive_int(text, MAX_LENGTH)


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
    defaults = PruneOptions(constraint=0.5)
    run_defaults = RunConfig("", "", "", defaults, DataRequest("", 0, 0, 0))
    task_defaults = ", ".join(f"{task_registry.get(n).max_seq_length} for {n}" for n in task_registry.names()
                              if n in ("sst2", "squad", "causal_lm"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    width_defaults = ", ".join(f"{task_registry.get(n).width_multiple} for {n}" for n in task_registry.names()
                               if task_registry.get(n).width_multiple != defaults.width_multiple)

    g = p.add_argument_group("model and data")
    g.add_argument("--task_name", required=True, type=str.lower, choices=task_registry.names(),
                   help="a GLUE task, squad / squad_v2, causal_lm (a decoder LLM) or stsb_embedding (a sentence-"
                        "embedding model scored by cosine similarity on STS-B)")
    g.add_argument("--ckpt_dir", required=True, help="fine-tuned checkpoint folder (or hub id when online)")
    g.add_argument("--model_name", default=None, help="base model for the tokenizer, if the checkpoint has none")
    g.add_argument("--data_dir", default=None, help="GLUE TSV folder, or the folder of the official SQuAD JSON "
                   "files (default: the HuggingFace hub)")
    g.add_argument("--num_samples", default=None, type=positive_int,
                   help="examples for the gradients and mask tuning (default: the task's, 2048; causal_lm: 128)")
    g.add_argument("--max_seq_length", default=None, type=_length,
                   help=f"tokens per example (default: the task's: {task_defaults}; 384 for squad_v2)")
    g.add_argument("--doc_stride", default=run_defaults.data.doc_stride, type=_length,
                   help=f"squad/squad_v2: overlap of consecutive windows over a long context (default "
                        f"{run_defaults.data.doc_stride})")
    g.add_argument("--batch_size", default=run_defaults.data.batch_size, type=positive_int,
                   help=f"batch size of the gradients, mask tuning and evaluation (default {run_defaults.data.batch_size})")
    g.add_argument("--seed", default=defaults.seed, type=_seed,
                   help=f"picks the sample and breaks ties (default {defaults.seed})")

    g = p.add_argument_group("budget")
    g.add_argument("--constraint", required=True, type=_fraction,
                   help="fraction to keep, 0 < c < 1, of what --metric measures: MACs (mac), heads + FFN weights "
                        "(params) or the latency the tables estimate (latency)")
    g.add_argument("--metric", default=defaults.metric, choices=choices("metric"),
                   help=f"what --constraint is a fraction of (default {defaults.metric})")
    g.add_argument("--mha_lut", default=None, help="--metric latency: attention latency table (mha_lut.pt from "
                   "python -m scripts.measure_latency)")
    g.add_argument("--ffn_lut", default=None, help="--metric latency: FFN latency table (ffn_lut.pt)")
    g.add_argument("--lut_fit", action="store_true", default=defaults.lut_fit,
                   help="--metric latency: price each unit count by the tables' piecewise-linear fit instead of the "
                        "measured entry (for noisy tables, e.g. batch 1 on a CPU, whose dips the search would take)")
    g.add_argument("--width_multiple", default=None, type=positive_int,
                   help=f"every layer keeps a multiple of this many FFN channels, e.g. 256 for Q4_K_M (default: the "
                        f"task's: {width_defaults}, where the FFN has >= 8 such blocks and the metric is mac/params; "
                        f"{defaults.width_multiple} = any count otherwise)")

    g = p.add_argument_group("method and ablations")
    g.add_argument("--method", default=defaults.method, choices=choices("method"),
                   help=f"mask tuning: lsq refits the kept units' output projections by ridge least squares, kwon is "
                        f"the paper's, bias is FLAP's (default {defaults.method})")
    g.add_argument("--importance", default=defaults.importance, choices=choices("importance"),
                   help=f"how units are scored (default {defaults.importance}, the paper's)")
    g.add_argument("--search", default=defaults.search, choices=choices("search"),
                   help=f"how masks are chosen: global (the paper), uniform (as Wanda-sp) or threshold (as FLAP) "
                        f"(default {defaults.search})")
    g.add_argument("--attention_unit", default=defaults.attention_unit, choices=list(ATTENTION_UNITS),
                   help=f"what one head unit is in a grouped-query model: a KV group with all its query heads "
                        f"(group), or one query head, each layer keeping the same number in every kept group "
                        f"(query; --metric mac/params, --search global) (default {defaults.attention_unit})")
    g.add_argument("--ridge", default=defaults.ridge, type=_positive_float,
                   help=f"lsq: ridge strength towards the original weights, relative to the mean input energy "
                        f"(default {defaults.ridge:g})")
    g.add_argument("--teacher", default=defaults.teacher, choices=["schedule", "full"],
                   help=f"what each layer reconstructs: the paper's less-pruned mask or the unpruned model "
                        f"(default {defaults.teacher})")
    g.add_argument("--teacher_exponent", default=defaults.teacher_exponent, type=_fraction,
                   help=f"--teacher schedule: the teacher keeps constraint ** exponent (default "
                        f"{defaults.teacher_exponent:g}, the paper's sqrt(c))")
    g.add_argument("--gradient_batches", default=run_defaults.gradient_batches, choices=["sorted", "random"],
                   help=f"batching of the Fisher gradients: sorted by length or random, as the paper's code (default "
                        f"{run_defaults.gradient_batches})")
    g.add_argument("--no_rearrange", action="store_true", help="ablation: skip mask rearrangement")
    g.add_argument("--no_mask_tuning", "--no_rescale", dest="no_mask_tuning", action="store_true",
                   help="ablation: skip mask tuning (--no_rescale is the old name)")
    g.add_argument("--no_head_refit", action="store_true",
                   help="ablation (lsq): do not refit the task head's first Linear to the unpruned model's")

    g = p.add_argument_group("LLM (--task_name causal_lm)")
    g.add_argument("--calib_file", default=None, help="calibration text: a .txt file or a folder of them, or "
                   "wikitext2 / c4 from the hub when online (default: the general mix of --calib_mix alone)")
    g.add_argument("--calib_mix", default=None,
                   help="a folder of .txt files of general text mixed into the calibration so that the pruned model "
                        "keeps working outside --calib_file's genre, or 'none' to calibrate on --calib_file alone "
                        "(default: data/calib_mix, built by python -m scripts.make_genre_text)")
    g.add_argument("--calib_mix_fraction", default=None, type=_share,
                   help="share of the calibration windows drawn from --calib_mix when --calib_file is given, the same "
                        "number from each of its files (default "
                        f"{CALIB_MIX_FRACTION:g}; 0 still uses the mix when --calib_file is absent)")
    g.add_argument("--eval_file", default=None, help="held-out text for the perplexity (file, folder, wikitext2 "
                   "or c4); keep it disjoint from --calib_file")
    g.add_argument("--eval_sequences", default=None, type=positive_int,
                   help="perplexity on at most this many windows of --max_seq_length tokens (default: all)")

    g = p.add_argument_group("sentence embeddings (--task_name stsb_embedding)")
    g.add_argument("--similarity_loss", default=None, choices=sorted(SIMILARITY_LOSSES),
                   help="the loss behind the importance scores: gold (cosine regression on the gold scores, the "
                        "model's own STS training loss) or teacher (no labels: each pruned embedding must pick out "
                        f"its unpruned one in the batch) (default {task_registry.get('stsb_embedding').similarity_loss})")

    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_tasks", default=None,
                   help="causal_lm: zero-shot accuracy before and after (lm-eval): task names (online), or a folder "
                        "of task YAML files such as data/zero_shot (python -m scripts.make_zero_shot_tasks)")
    g.add_argument("--eval_limit", default=None, type=positive_int,
                   help="--eval_tasks: at most this many items per task (default: all)")
    g.add_argument("--eval_stages", action="store_true",
                   help="also evaluate the teacher, search-only and rearranged masks")

    g = p.add_argument_group("output and export")
    g.add_argument("--output_dir", default=None,
                   help="the run folder (default: outputs/<model>/<task>/<metric>/<constraint>/seed_<seed>)")
    g.add_argument("--overwrite", action="store_true", help="replace a finished run in --output_dir")
    g.add_argument("--save_pruned", nargs="?", const="pruned_model", default=None, metavar="DIR",
                   help="also save the physically pruned model and time it; a relative DIR is inside --output_dir "
                        "(default DIR: pruned_model)")
    g.add_argument("--speed_batch_size", default=run_defaults.speed_batch_size, type=positive_int,
                   help=f"--save_pruned: batch size of the timing (default {run_defaults.speed_batch_size})")
    g.add_argument("--speed_seq_len", default=run_defaults.speed_seq_len, type=_length,
                   help=f"--save_pruned: sequence length of the timing (default {run_defaults.speed_seq_len})")
    g.add_argument("--export", default=None, choices=exporters.names(),
                   help="--save_pruned: also write the saved model as "
                        + "; ".join(f"{n}: {exporters.get(n).help}" for n in exporters.names()))

    g = p.add_argument_group("devices and processes")
    g.add_argument("--device", default=run_defaults.device, help=f"auto, cpu or cuda[:N] (default {run_defaults.device})")
    g.add_argument("--gpu", default=None, type=int, help="alias of --device cuda:N (the original tool's flag)")
    g.add_argument("--device_map", default=None, choices=["auto"],
                   help="causal_lm, a model larger than one device: spread it over the devices and stream one layer "
                        "at a time for mask tuning")
    g.add_argument("--max_memory", default=None, type=_max_memory, metavar="DEV=SIZE,...",
                   help="--device_map auto: memory per device, e.g. 0=20GiB,cpu=60GiB (the rest goes to disk)")
    return p


def _max_memory(text: str) -> dict:
    try:
        return parse_max_memory(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--max_memory {text!r}: {e}")


def config_from_args(argv=None) -> RunConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    task = task_registry.get(args.task_name)
    for name in PATH_FLAGS:
        value = getattr(args, name)
        if isinstance(value, str) and not value.strip():
            parser.error(f"--{name} {value!r} is empty (an unset shell variable?); give a path"
                         + (", or leave --save_pruned out to save no model" if name == "save_pruned" else
                            f", or leave --{name} out for its default" if name != "ckpt_dir" else ""))
    if args.save_pruned and args.speed_batch_size * args.speed_seq_len > MAX_SPEED_TOKENS:
        parser.error(f"--speed_batch_size {args.speed_batch_size} x --speed_seq_len {args.speed_seq_len} = "
                     f"{args.speed_batch_size * args.speed_seq_len:,} tokens per timed batch, more than the "
                     f"{MAX_SPEED_TOKENS:,} the timing allows; lower --speed_batch_size")
    if args.attention_unit == "query" and (args.metric == "latency" or args.search != "global"):
        parser.error("--attention_unit query needs --metric mac or params and --search global (the latency tables "
                     "and the other searches count whole KV groups)")
    if args.metric == "latency" and not (args.mha_lut and args.ffn_lut):
        parser.error("--metric latency needs --mha_lut and --ffn_lut (measure them on the target device with "
                     "python -m scripts.measure_latency)")
    if args.lut_fit and args.metric != "latency":
        parser.error(f"--lut_fit smooths the latency tables of --metric latency; --metric {args.metric} has none: "
                     f"drop --lut_fit or use --metric latency")
    data = DataRequest(task_name=args.task_name, num_samples=args.num_samples or task.num_samples, seed=args.seed,
                       max_seq_length=args.max_seq_length or task.max_seq_length, batch_size=args.batch_size,
                       data_dir=args.data_dir, doc_stride=args.doc_stride, calib_file=args.calib_file,
                       calib_mix=args.calib_mix, calib_mix_fraction=args.calib_mix_fraction,
                       eval_file=args.eval_file, eval_sequences=args.eval_sequences,
                       eval_tasks=args.eval_tasks, eval_limit=args.eval_limit,
                       similarity_loss=args.similarity_loss)
    for problem in task.check_request(data):
        parser.error(problem)
    if args.device_map and task.head != "causal_lm":
        parser.error("--device_map auto is for decoders (--task_name causal_lm); an encoder fits on one device")
    if args.max_memory and not args.device_map:
        parser.error("--max_memory sets the budget of --device_map auto: add --device_map auto")
    if args.export and not args.save_pruned:
        parser.error(f"--export {args.export} exports the saved pruned model: add --save_pruned")
    if args.export:
        missing = exporters.get(args.export).missing_packages()
        if missing:
            parser.error(f"--export {args.export} needs {', '.join(missing)}: pip install {' '.join(missing)}")
    options = PruneOptions(args.constraint, rearrange=not args.no_rearrange, mask_tuning=not args.no_mask_tuning,
                           method=args.method, importance=args.importance, metric=args.metric, search=args.search,
                           seed=args.seed, teacher=args.teacher, teacher_exponent=args.teacher_exponent,
                           ridge=args.ridge, head_refit=not args.no_head_refit,
                           width_multiple=args.width_multiple, attention_unit=args.attention_unit,
                           lut_fit=args.lut_fit)
    output_dir = args.output_dir or os.path.join(
        "outputs", os.path.basename(os.path.normpath(args.ckpt_dir)), args.task_name, args.metric,
        f"{args.constraint:g}", f"seed_{args.seed}")
    return RunConfig(
        task_name=args.task_name, ckpt_dir=args.ckpt_dir, output_dir=output_dir, prune=options, data=data,
        model_name=args.model_name, device=f"cuda:{args.gpu}" if args.gpu is not None else args.device,
        gradient_batches=args.gradient_batches, eval_stages=args.eval_stages, overwrite=args.overwrite,
        mha_lut=args.mha_lut, ffn_lut=args.ffn_lut, save_pruned=args.save_pruned,
        speed_batch_size=args.speed_batch_size, speed_seq_len=args.speed_seq_len, export=args.export,
        device_map=args.device_map, max_memory=args.max_memory)


def run(cfg: RunConfig, dist=None) -> dict:
    """dist (utils/distributed.Dist): the processes sharing the work; only the first one writes the run folder."""
    dist = dist or Dist()
    task = task_registry.get(cfg.task_name)
    save_target = resolve_save_target(cfg.save_pruned, cfg.output_dir)
    check_save_target(save_target, cfg.output_dir, cfg.ckpt_dir, cfg.overwrite)
    device = dist.device() if dist.backend == "nccl" else resolve_device(cfg.device)
    if cfg.device_map and dist.active:
        raise DistributedError("--device_map auto spreads one model over this machine's devices, so it takes one "
                               "process: start main.py without torchrun / accelerate launch, or drop --device_map.")
    placement = Placement(device, cfg.device_map, cfg.max_memory)
    check_checkpoint_dir(cfg.ckpt_dir)
    model_config = load_config(cfg.ckpt_dir)
    facts = facts_for(model_config.model_type)    # unsupported architectures fail here, before loading
    check_task_fields(model_config, cfg.ckpt_dir, cfg.task_name, task.problem_type(cfg.task_name))
    tokenizer = load_tokenizer(cfg.ckpt_dir, cfg.model_name)
    check_fits(tokenizer, model_config, cfg.speed_seq_len if cfg.save_pruned else None)
    if cfg.export:
        try:                                       # a format that cannot take the model: before any work
            exporters.get(cfg.export).check(model_config, tokenizer)
        except USER_ERRORS as e:
            raise type(e)(f"--export {cfg.export} cannot take --ckpt_dir '{cfg.ckpt_dir}': {e}") from None
    options = cfg.prune
    multiple, why = resolve_width_multiple(options.width_multiple, task.width_multiple,
                                           getattr(model_config, facts.ffn_attr), options.metric, options.search)
    options = replace(options, width_multiple=multiple)
    target_held = None
    if dist.is_main:
        claim_save_target(save_target, cfg.output_dir, cfg.ckpt_dir, cfg.overwrite)   # before anything is removed
        prepare_run_folder(cfg.output_dir, cfg.overwrite, save_target)
        target_held = target_state(save_target) if save_target else None
        setup_logging(cfg.output_dir)
        write_json(os.path.join(cfg.output_dir, "args.json"), asdict(cfg))
        write_json(os.path.join(cfg.output_dir, "versions.json"), package_versions())
        log.info("run folder %s", cfg.output_dir)
    else:
        setup_logging(None, verbose=False)

    torch.manual_seed(cfg.prune.seed)
    wall_start = time.perf_counter()
    model = load_model(cfg.ckpt_dir, task.head, task.auto_class)
    model = model if placement.streaming else model.to(device)     # streaming: held in CPU memory
    arch = bind(model, options.attention_unit)
    log.info("FFN widths: multiples of %d (%s)", multiple, why)
    if options.metric == "latency":               # bad tables fail here, before the data and the gradients
        heads = "attention heads" if arch.heads_per_unit == 1 else "attention head units (key/value groups)"
        options = replace(options, mha_lut=load_lut(cfg.mha_lut, arch.num_head_units, "--mha_lut", heads),
                          ffn_lut=load_lut(cfg.ffn_lut, arch.ffn_dim, "--ffn_lut", "FFN neurons"))
    data = task.prepare(cfg.data, tokenizer, model.config, dist)
    options = replace(options, checkpoint_layers=data.checkpoint_layers)
    gradient_batches = data.gradient_batches if cfg.gradient_batches == "random" else None
    check_enough_batches(dist, "the sample", len(data.sample_batches), "--num_samples (or lower --batch_size)")
    loss_tokens = arch.classifier_token if data.loss_tokens == "classifier" else data.loss_tokens

    eval_start = time.perf_counter()
    with placement.whole_model(model, "evaluate"):
        before = data.evaluate(model, arch)
    eval_seconds = time.perf_counter() - eval_start
    log.info("unpruned %s: %s", data.primary_metric, before)

    prune_start = time.perf_counter()
    result = prune(model, arch, data.sample_batches, data.seq_len, options, loss_tokens, loss_fn=data.loss_fn,
                   gradient_batches=gradient_batches, dist=dist, placement=placement)
    prune_seconds = time.perf_counter() - prune_start
    head_mask, neuron_mask = result.final
    with swapped_weights(arch, result.weight_updates), placement.whole_model(model, "evaluate"):
        after = data.evaluate(model, arch, head_mask, neuron_mask)
    log.info("pruned %s: %s (MAC ratio %.4f, pruning %.1f s)", data.primary_metric, after, result.mac_ratio,
             prune_seconds)
    extras = task.pruned_extras(cfg.data, model, arch, tokenizer, result.final, result.weight_updates, placement,
                                dist)

    stages = {}
    if cfg.eval_stages:
        for name, (h, n) in result.masks.items():
            if name != "final":
                with placement.whole_model(model, "evaluate"):
                    stages[name] = data.evaluate(model, arch, h, n)
                log.info("stage %s: %s", name, stages[name])

    if dist.is_main:
        with writing("the masks", cfg.output_dir):
            save_masks(cfg.output_dir, head_mask, neuron_mask)
            if result.weight_updates:   # lsq: the refitted output projections belong with the masks
                save_weight_updates(os.path.join(cfg.output_dir, "weight_updates.pt"), result.weight_updates)
    chosen = differences(replace(cfg.prune, width_multiple=options.width_multiple),
                         gradient_batches=cfg.gradient_batches)
    results = {
        "task": data.name,
        "primary_metric": data.primary_metric,
        "metric_before": before,
        "metric_after": after,
        "metric_stages": stages,
        "constraint": options.constraint,
        "variant": variant_name(chosen),
        "options": chosen,              # what differs from PruneOptions' defaults (and --gradient_batches')
        "method": options.method,
        "teacher": options.teacher,
        "teacher_exponent": options.teacher_exponent if options.teacher == "schedule" else None,
        "ridge": options.ridge if options.method == "lsq" else None,
        "mask_tuning_enabled": options.mask_tuning,
        "budget_metric": options.metric,
        "mac_ratio": result.mac_ratio,
        "param_ratio": result.param_ratio,
        "budget_ratio": result.budget_ratio,
        "seq_len_for_macs": data.seq_len,
        "seconds": {**result.seconds, "pruning_total": round(prune_seconds, 3),
                    "evaluate_once": round(eval_seconds, 3),
                    "wall_total": round(time.perf_counter() - wall_start, 3)},
        "peak_memory_mb": {"rss": round(peak_rss_mb(), 1), "gpu": peak_gpu_mb(device),
                           "gpu_per_device": peak_gpu_mb_per_device()},
        "distributed": _split(dist, data, gradient_batches),
        "heads_kept_per_layer": kept_per_layer(head_mask),
        "neurons_kept_per_layer": kept_per_layer(neuron_mask),
        "mask_tuning": result.tuning_events,
        "device": str(device),
        "data": data.info,
        **extras,
    }
    if options.metric == "latency":
        results["latency_ratio"] = result.budget_ratio
    staged = None
    if cfg.save_pruned:
        results["pruned_model"], staged = _save_pruned_model(cfg, task, model, tokenizer, data, result, device, dist,
                                                             placement, options.width_multiple)
    results["placement"] = placement.record()          # where each pass ran, the pruned model's included
    results["peak_memory_mb"]["rss_per_process"] = [round(m, 1) for m in dist.all_gather_object(peak_rss_mb())]
    dist.barrier()      # every process finished its share: a failed one never gets here, so no results.json
    if dist.is_main:
        finish_run(cfg.output_dir, results, staged, save_target, target_held)   # the model and results.json, last
        log.info("done: %s", os.path.join(cfg.output_dir, "results.json"))
    return results


def _split(dist, data, gradient_batches) -> dict:
    """How the work was split over the processes (batches per process, in the order of the ranks)."""
    def per_rank(count: int) -> list[int]:
        return [len(range(r, count, dist.world_size)) for r in range(dist.world_size)]
    return {"world_size": dist.world_size, "backend": dist.backend, "split": "every world_size-th batch",
            "gradient_batches": per_rank(len(gradient_batches or data.sample_batches)),
            "tuning_batches": per_rank(len(data.sample_batches)),
            "eval_batches": per_rank(data.eval_batch_count) if data.eval_batch_count is not None
            else "all on every process (not split)"}


def _save_pruned_model(cfg: RunConfig, task, model, tokenizer, data, result, device, dist, placement,
                       width_multiple: int = 1) -> tuple[dict, str | None]:
    """Physically prune a copy of the model, stage it next to its target, check it and time it against
    the original. Returns (results.json's pruned_model, the staged folder). With several processes all
    evaluate their share; only the first one saves, times and exports."""
    path = resolve_save_target(cfg.save_pruned, cfg.output_dir)
    head_mask, neuron_mask = result.final
    pruned, shapes = physically_pruned_copy(model, head_mask, neuron_mask, getattr(result, "weight_updates", None))
    with placement.whole_model(pruned, "evaluate_pruned"):
        metric = data.evaluate(pruned, bind(pruned))
    if not dist.is_main:
        return {}, None
    with writing("the pruned model", os.path.dirname(os.path.abspath(path))):
        staged = save_pruned(pruned, tokenizer, path, shapes, run_id=current_run_id(), place=False,
                             width_multiple=width_multiple)["staged_dir"]
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
    with placement.whole_model(model, "speed_original"), placement.whole_model(pruned, "speed_pruned"):
        info.update(task.saved_model_extras(model, pruned, cfg.speed_seq_len))
    if cfg.export:
        exported = exporters.get(cfg.export).write(pruned, staged, data)     # placed with the model folder
        if "path" in exported:
            exported["path"] = os.path.join(path, os.path.relpath(exported["path"], staged))
        info[cfg.export] = exported
    log.info("pruned model saved to %s: %s %s, %d -> %d parameters, %.2fx faster (batch %d x %d tokens, %s)",
             path, data.primary_metric, metric, info["parameters_before"], info["parameters_after"],
             speed["speedup"], cfg.speed_batch_size, cfg.speed_seq_len, device)
    return info, staged


def main(argv=None) -> int:
    """Exit status: 0 done, 2 a user-fixable error (one `error: ...` paragraph on stderr; argparse's
    usage errors too), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Other exceptions are bugs and
    keep their traceback. Ctrl-C anywhere, the argument parsing included, is the one `interrupted:` line."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)     # from here on, Ctrl-C is a KeyboardInterrupt
    cfg = None
    dist = None
    try:
        cfg = config_from_args(argv)
        try:
            with run_guard():              # SIGTERM like Ctrl-C; the folder's lock released on any exit
                dist = init_from_env(cfg.device)
                run(cfg, dist)
        except USER_ERRORS as e:
            where = f" (process {dist.rank} of {dist.world_size})" if dist and dist.active else ""
            print(f"error{where}: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()),
                  file=sys.stderr)
            return EXIT_USER_ERROR
        finally:
            if dist is not None:
                close(dist)
    except KeyboardInterrupt as e:
        if cfg is None:
            print(STARTUP_INTERRUPTED, file=sys.stderr)
        else:
            print(f"\ninterrupted: the run in {cfg.output_dir} did not finish and left no results.json; "
                  f"run the same command again to redo it", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
