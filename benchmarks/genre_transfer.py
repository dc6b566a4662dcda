"""Genre transfer of a pruned LLM (issue 31): calibrate on one genre, score perplexity on every genre.

SmolLM2-135M (python -m scripts.make_smollm2) and seven genres of real text (python -m scripts.make_genre_text:
data/genres/<genre>/{calib,eval}.txt). A cell is (calibration, variant, budget):

    calibration  <genre>-nomix: 128 windows of data/genres/<genre>/calib.txt only (the behaviour before issue 31);
                 <genre>-mixNN: NN % of the windows from the shipped general mix (data/calib_mix, whose genres
                 are docs, shakespeare, fortunes, movie; --calib_mix_fraction 0.NN), the rest from that file;
                 <genre>-mix: main.py's default share (a cell named <genre>-mixNN with NN = 100 x CALIB_MIX_FRACTION);
                 mix: the mix alone (main.py without --calib_file)
    variant      ours (fisher + rearrange + lsq, main.py's default), kwon (the paper's scales), nomt (the same masks,
                 no mask tuning), ridgeR (lsq with --ridge R), refit_<genre> (masks from this calibration, the lsq
                 refit on <genre>'s calibration text instead)

Each cell scores the pruned model (physically pruned: the same function as the masks, tested) on the first
--eval_sequences windows of every genre's eval.txt; the dense model once per genre. Cells are JSON files in
--cell_dir, skipped when done; the Fisher gradients of each calibration are kept there too (grads-*.pt).

    ../shared/tools/quiet --log benchmarks/results/quiet.jsonl -- python -m benchmarks.genre_transfer \\
        --calibrations docs-nomix tweets-nomix --variants ours --constraints 0.8 0.5
    python -m benchmarks.genre_transfer --summary      # the matrices, JSON + figure, from the cells
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from arch import bind
from benchmarks.record import LoadSampler, cell_done, machine_metadata, read_cell, write_cell, write_json
from dataset.lm_text import evaluation_sequences, lm_batches, load_text, mix_counts, mixed_calibration_sequences
from evaluate.perplexity import lm_loss, perplexity
from evaluate.zero_shot import zero_shot_scores
from prune.fisher import collect_mask_grads
from prune.physical import physically_pruned_copy
from prune.pipeline import PruneOptions, prune
from prune.widths import resolve_width_multiple
from tasks import registry as task_registry
from tasks.causal_lm import CALIB_MIX, CALIB_MIX_FRACTION, mix_sources
from utils.checkpoint import load_model, load_tokenizer
from utils.device import peak_rss_mb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENRE_DIR = os.path.join(ROOT, "data", "genres")
GENRES = ("docs", "shakespeare", "fortunes", "movie", "tweets", "news", "legal")
CELL_DIR = os.path.join(ROOT, "benchmarks", "results", "genre_transfer")
SUMMARY = os.path.join(ROOT, "benchmarks", "results", "genre_transfer.json")
FIGURE = os.path.join(ROOT, "figures", "genre_transfer.png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", default=os.path.join(ROOT, "checkpoints", "smollm2-135m"))
    p.add_argument("--calibrations", nargs="*", default=[], help="<genre>-nomix, <genre>-mix or mix")
    p.add_argument("--variants", nargs="+", default=["ours"])
    p.add_argument("--constraints", type=float, nargs="+", default=[0.8, 0.5])
    p.add_argument("--num_samples", type=int, default=128)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--eval_sequences", type=int, default=32, help="windows of each genre's eval.txt")
    p.add_argument("--zero_shot", nargs="*", default=[], help="cell names also scored on --eval_tasks ('dense' too)")
    p.add_argument("--eval_tasks", default=os.path.join(ROOT, "data", "zero_shot"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell_dir", default=CELL_DIR)
    p.add_argument("--summary", action="store_true", help="only write the summary JSON and figure from the cells")
    return p.parse_args(argv)


def mix_fraction(how: str) -> float | None:
    """The share of windows from the mix in a calibration spec's mode: nomix 0, mix the default, mixNN NN %."""
    if how == "nomix":
        return 0.0
    if how == "mix":
        return CALIB_MIX_FRACTION
    digits = how[3:]
    return int(digits) / 100 if how.startswith("mix") and digits.isdigit() and 0 < int(digits) <= 100 else None


def canonical(spec: str) -> str:
    """A calibration spec with the default share spelled out (docs-mix -> docs-mix25), so that a cell's name says
    what went in even after the default changes."""
    genre, _, how = spec.rpartition("-")
    return f"{genre}-mix{round(100 * CALIB_MIX_FRACTION)}" if genre and how == "mix" else spec


def calibration_windows(spec: str, tokenizer, num_samples: int, seq_len: int, seed: int):
    """The windows of a calibration spec and what went in."""
    if spec == "mix":
        genre, use_mix = None, True
    else:
        genre, _, how = spec.rpartition("-")
        if genre not in GENRES or mix_fraction(how) is None:
            raise SystemExit(f"error: calibration {spec!r}: use <genre>-mix, <genre>-mixNN (NN % from the mix), "
                             f"<genre>-nomix or mix; genres {GENRES}")
        use_mix = how != "nomix"
    texts = {"": load_text(os.path.join(GENRE_DIR, genre, "calib.txt"))} if genre else {}
    mix = mix_sources(CALIB_MIX) if use_mix else {}
    texts.update(mix)
    counts = mix_counts(num_samples, genre is not None, list(mix), mix_fraction(how) if genre else 1.0)
    windows, record = mixed_calibration_sequences(texts, counts, tokenizer, seq_len, seed)
    return windows, {(genre if k == "" else f"mix:{k}"): v for k, v in record.items()}


def variant_options(variant: str, constraint: float, ffn_dim: int) -> tuple[dict, str | None]:
    """PruneOptions keywords of a variant, and the genre whose text the refit uses (None: the calibration's)."""
    multiple, _ = resolve_width_multiple(None, task_registry.get("causal_lm").width_multiple, ffn_dim, "mac", "global")
    base = {"width_multiple": multiple}
    if variant == "ours":
        return base, None
    if variant == "kwon":
        return {**base, "method": "kwon"}, None
    if variant == "nomt":
        return {**base, "mask_tuning": False}, None
    if variant.startswith("ridge"):
        return {**base, "ridge": float(variant[5:])}, None
    if variant.startswith("refit_") and variant[6:] in GENRES:
        return base, variant[6:]
    raise SystemExit(f"error: unknown variant {variant!r}")


def genre_batches(tokenizer, seq_len: int, n: int, batch_size: int) -> dict:
    return {g: lm_batches(evaluation_sequences(load_text(os.path.join(GENRE_DIR, g, "eval.txt")), tokenizer, seq_len, n),
                          batch_size) for g in GENRES}


def score_genres(model, batches: dict) -> dict:
    return {g: perplexity(model, b)["perplexity"] for g, b in batches.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary:
        return summarize(args.cell_dir)
    os.makedirs(args.cell_dir, exist_ok=True)
    torch.manual_seed(args.seed)
    model = load_model(args.ckpt_dir, "causal_lm")
    tokenizer = load_tokenizer(args.ckpt_dir, None)
    arch = bind(model)
    evals = genre_batches(tokenizer, args.seq_len, args.eval_sequences, args.batch_size)
    meta = machine_metadata()
    path = lambda name: os.path.join(args.cell_dir, name + ".json")  # noqa: E731
    zs = lambda m: zero_shot_scores(m, tokenizer, args.eval_tasks, None, args.batch_size)  # noqa: E731

    if not cell_done(path("dense")):
        with LoadSampler() as load:
            start = time.perf_counter()
            cell = {"perplexity": score_genres(model, evals), "eval_seconds": round(time.perf_counter() - start, 1)}
            if "dense" in args.zero_shot:
                cell["zero_shot"] = zs(model)
        write_cell(path("dense"), {**cell, "eval_sequences": args.eval_sequences, "load": load.summary(),
                                   "machine": meta})
    dense_cell = read_cell(path("dense"))
    if "dense" in args.zero_shot and "zero_shot" not in dense_cell:
        write_cell(path("dense"), {**dense_cell, "zero_shot": zs(model)})
    dense = dense_cell["perplexity"]

    for spec in map(canonical, args.calibrations):
        windows, sources = calibration_windows(spec, tokenizer, args.num_samples, args.seq_len, args.seed)
        batches = lm_batches(windows, args.batch_size)
        grads, grad_seconds = None, None
        for variant in args.variants:
            for c in args.constraints:
                name = f"{spec}-{variant}-{c:g}"
                if cell_done(path(name)):
                    print(f"{name}: done earlier", flush=True)
                    continue
                if grads is None:
                    grads, grad_seconds = _grads(model, arch, batches, args.cell_dir, spec, args.seed)
                kw, refit_genre = variant_options(variant, c, arch.ffn_dim)
                sample = batches
                if refit_genre:
                    refit_windows, _ = calibration_windows(f"{refit_genre}-nomix", tokenizer, args.num_samples,
                                                           args.seq_len, args.seed)
                    sample = lm_batches(refit_windows, args.batch_size)
                with LoadSampler() as load:
                    start = time.perf_counter()
                    result = prune(model, arch, sample, float(args.seq_len), PruneOptions(c, seed=args.seed, **kw),
                                   "all", loss_fn=lm_loss, grads=grads, gradient_batches=batches)
                    seconds = time.perf_counter() - start
                    pruned, _ = physically_pruned_copy(model, *result.final, result.weight_updates)
                    start = time.perf_counter()
                    ppl = score_genres(pruned, evals)
                    cell = {"calibration": spec, "variant": variant, "constraint": c, "sources": sources,
                            "refit_on": refit_genre, "perplexity": ppl,
                            "ratio": {g: ppl[g] / dense[g] for g in GENRES}, "mac_ratio": result.mac_ratio,
                            "prune_seconds": round(seconds, 1), "gradient_seconds": grad_seconds,
                            "stage_seconds": result.seconds, "eval_seconds": round(time.perf_counter() - start, 1),
                            "peak_rss_mb": round(peak_rss_mb(), 1)}
                    if name in args.zero_shot:
                        cell["zero_shot"] = zs(pruned)
                    del pruned
                write_cell(path(name), {**cell, "eval_sequences": args.eval_sequences, "load": load.summary(),
                                        "machine": meta})
                print(f"{name}: " + " ".join(f"{g} x{cell['ratio'][g]:.2f}" for g in GENRES)
                      + f"  ({seconds:.0f} s)", flush=True)
    return summarize(args.cell_dir)


def _grads(model, arch, batches, cell_dir: str, spec: str, seed: int):
    """The Fisher gradients of a calibration, kept in the cell folder (same windows, same gradients)."""
    file = os.path.join(cell_dir, f"grads-{spec}-seed{seed}.pt")
    if os.path.isfile(file):
        saved = torch.load(file)
        return (saved["heads"], saved["neurons"]), saved["seconds"]
    start = time.perf_counter()
    heads, neurons = collect_mask_grads(model, arch, batches, lm_loss, True)
    seconds = round(time.perf_counter() - start, 1)
    torch.save({"heads": heads, "neurons": neurons, "seconds": seconds}, file + ".tmp")
    os.replace(file + ".tmp", file)
    print(f"gradients of {spec}: {seconds} s", flush=True)
    return (heads, neurons), seconds


def summarize(cell_dir: str) -> int:
    """genre_transfer.json: per (calibration mode, variant, budget) the matrix of ratios, in-genre and worst unseen."""
    from benchmarks.genre_summary import figure, markdown, summary
    out = summary(cell_dir, GENRES)
    write_json(SUMMARY, out)
    figure(out, FIGURE)
    print(json.dumps(out["headline"], indent=1))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
