"""Causal language modelling as a task: calibration sequences for the pruning, perplexity on held-out text."""
from __future__ import annotations

import logging
import os

from transformers import AutoModelForCausalLM

from arch.hooks import apply_masks
from dataset.errors import DataError
from dataset.lm_text import (TextDataError, evaluation_sequences, lm_batches, load_text, mix_counts,
                             mixed_calibration_sequences)
from evaluate.perplexity import greedy_generations, lm_loss, perplexity
from evaluate.speed import decode_speed, prefill_latency
from evaluate.zero_shot import ZeroShotError, check_task_sources, zero_shot_scores
from prune.weight_updates import swapped_weights
from tasks.base import DataRequest, Task, TaskData
from tasks.registry import register

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the general text mixed into every calibration (issue 31: a sample of one genre alone overfits the pruned model
# to it); python -m scripts.make_genre_text builds it, benchmarks/genre_transfer.py measures it
CALIB_MIX = os.path.join(ROOT, "data", "calib_mix")
# of the calibration windows drawn from the mix when --calib_file is given: a quarter kept the calibration genre's
# perplexity where it was and took most of the unseen genres' loss away; a half cost the calibration genre more
# (docs/results.md#genre-transfer-of-a-pruned-llm-issue-31)
CALIB_MIX_FRACTION = 0.25
MAX_CALIBRATION_TOKENS = 2**28       # 2 GB of token ids: a larger --num_samples is a typo
# Greedy continuations of these are printed before and after pruning, for a person to read.
PROMPTS = ["The Python tutorial explains that", "A list comprehension is", "Once upon a time"]


def mix_sources(folder: str) -> dict[str, str]:
    """{file name: text} of the .txt files of a calibration-mix folder, in name order."""
    if not os.path.isdir(folder):
        raise TextDataError(f"--calib_mix '{folder}' is not a folder of .txt files; build the shipped one with "
                            f"`python -m scripts.make_genre_text`, or pass --calib_mix none to calibrate on "
                            f"--calib_file alone")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".txt"))
    if not names:
        raise TextDataError(f"--calib_mix '{folder}' holds no .txt files; pass a folder with one .txt per source, "
                            f"or --calib_mix none")
    return {n: load_text(os.path.join(folder, n)) for n in names}


def _windows(error, seq_len: int) -> str:
    """lm_text's message in main.py's terms: the window length is --max_seq_length."""
    return (str(error).replace(f"seq_len={seq_len}", f"--max_seq_length {seq_len} tokens")
            .replace("or fewer or shorter windows", f"or a smaller --num_samples or --max_seq_length (now {seq_len}), "
                                                    f"or a larger --calib_mix_fraction")
            .replace("or shorter windows", f"or a smaller --max_seq_length (now {seq_len})"))


def prepare_causal_lm(calib_source: str | None, eval_source: str, tokenizer, config, num_sequences: int, seed: int,
                      seq_len: int, batch_size: int, eval_sequences: int | None = None, dist=None,
                      calib_mix: str | None = None, mix_fraction: float = CALIB_MIX_FRACTION) -> TaskData:
    """num_sequences random windows of seq_len tokens of the calibration text -- with calib_mix (a folder of .txt
    files), mix_fraction of them from the mix's files, evenly, and all of them when calib_source is None; the
    evaluation text cut into consecutive windows of seq_len tokens (the WikiText-2 protocol), at most
    eval_sequences of them."""

    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and seq_len > positions:
        raise DataError(f"--max_seq_length {seq_len} is longer than the model's {positions} positions; "
                        f"pass --max_seq_length {positions} or less.")
    texts = {"": load_text(calib_source)} if calib_source else {}
    texts.update(mix_sources(calib_mix) if calib_mix else {})
    eval_text = load_text(eval_source)
    if calib_source == eval_source:
        log.warning("the calibration and evaluation text are the same (%s): the perplexity is not held out",
                    calib_source)
    if num_sequences * seq_len > MAX_CALIBRATION_TOKENS:
        raise DataError(f"--num_samples {num_sequences} x --max_seq_length {seq_len} = {num_sequences * seq_len:,} "
                        f"calibration tokens, more than the {MAX_CALIBRATION_TOKENS:,} this tool holds in memory; "
                        f"lower --num_samples (the default is 128).")
    counts = mix_counts(num_sequences, bool(calib_source), [n for n in texts if n], mix_fraction)
    try:
        calib, sources = mixed_calibration_sequences(texts, counts, tokenizer, seq_len, seed)
    except TextDataError as e:
        where = f"--calib_file '{calib_source}'" if calib_source else f"--calib_mix '{calib_mix}'"
        raise TextDataError(f"{where}: {_windows(e, seq_len)}") from None
    try:
        held_out = evaluation_sequences(eval_text, tokenizer, seq_len, eval_sequences)
    except TextDataError as e:
        raise TextDataError(f"--eval_file '{eval_source}': {_windows(e, seq_len)}") from None
    sample_batches = lm_batches(calib, batch_size)
    eval_batches = lm_batches(held_out, batch_size)
    log.info("causal_lm: %d calibration and %d evaluation sequences of %d tokens", len(calib), len(held_out), seq_len)

    def evaluate(model, arch, head_mask=None, neuron_mask=None) -> dict:
        return perplexity(model, eval_batches, context=lambda: apply_masks(arch, head_mask, neuron_mask), dist=dist)

    sources = {(calib_source if name == "" else os.path.join(calib_mix, name)): {**got, "tokens": got["windows"] * seq_len}
               for name, got in sources.items()}
    log.info("calibration windows: %s", ", ".join(f"{k} {v['windows']}" for k, v in sources.items()))
    info = {"calibration": {"source": calib_source, "mix": calib_mix, "mix_fraction": mix_fraction if calib_mix else None,
                            "sources": sources, "sequences": len(calib), "seq_len": seq_len},
            "evaluation": {"source": eval_source, "sequences": len(held_out), "seq_len": seq_len},
            "num_samples_used": len(calib)}
    # a decoder's gradient pass is where memory peaks: chunked logits and recomputed blocks keep it near one
    # block's activations (exact; about a third more gradient time)
    return TaskData("causal_lm", "causal_lm", sample_batches, evaluate, "perplexity", float(seq_len), "all", info,
                    dev_batches=eval_batches, loss_fn=lm_loss, checkpoint_layers=True,
                    eval_batch_count=len(eval_batches))


def zero_shot_before_after(model, arch, tokenizer, masks, weight_updates, placement, request: DataRequest) -> dict:
    """lm-evaluation-harness scores of the unpruned model and of the pruned one (its masks and weight updates
    applied to the same in-memory model)."""
    score = lambda context=None: zero_shot_scores(model, tokenizer, request.eval_tasks, request.eval_limit,  # noqa: E731
                                                  request.batch_size, context=context)
    with placement.whole_model(model, "zero_shot"):
        before = score()
    with swapped_weights(arch, weight_updates), placement.whole_model(model, "zero_shot"):
        after = score(lambda: apply_masks(arch, *masks))
    log.info("zero-shot average acc: unpruned %s, pruned %s", before.get("average", {}).get("acc"),
             after.get("average", {}).get("acc"))
    return {"before": before, "after": after}


class CausalLM(Task):
    names = ("causal_lm",)
    head = "causal_lm"
    auto_class = AutoModelForCausalLM
    max_seq_length = 256
    num_samples = 128
    # llama.cpp's CPU kernels want FFN widths in multiples of 32: F16 prompt matmuls (tinyBLAS) need 16 | width on
    # AVX-512 (8 on AVX2), Q8_0/Q5_0 rows 32 | width, or llama.cpp stores the FFN output projection in F16
    # (benchmarks/llama_cpp_widths.py measures it; README Results)
    width_multiple = 32
    reads = ("calib_file", "calib_mix", "calib_mix_fraction", "eval_file", "eval_sequences", "eval_tasks", "eval_limit")
    needs = {"eval_file": "--task_name causal_lm needs --eval_file (held-out text, disjoint from --calib_file)"}

    def check_request(self, request: DataRequest) -> list[str]:
        problems = super().check_request(request)
        if request.eval_limit is not None and not request.eval_tasks:
            problems.append(f"--eval_limit {request.eval_limit} limits the items of --eval_tasks, which is not given: "
                            f"add --eval_tasks (e.g. data/zero_shot) or drop --eval_limit")
        problems += self._calibration_problems(request)
        if request.eval_tasks and not problems:
            try:
                check_task_sources(request.eval_tasks)
            except ZeroShotError as e:
                problems.append(str(e))
        return problems

    @staticmethod
    def calibration_mix(request: DataRequest) -> str | None:
        """The mix folder a request calibrates with: --calib_mix, the shipped one by default, None for 'none'."""
        if request.calib_mix is None:
            return CALIB_MIX
        return None if request.calib_mix.strip().lower() == "none" else request.calib_mix

    def _calibration_problems(self, request: DataRequest) -> list[str]:
        mix = self.calibration_mix(request)
        if mix is None and not request.calib_file:
            return ["--calib_mix none leaves nothing to calibrate on: add --calib_file (a text file or folder; "
                    "wikitext2 or c4 when online), or drop --calib_mix none to use the shipped general mix"]
        if mix is None and request.calib_mix_fraction is not None:
            return [f"--calib_mix_fraction {request.calib_mix_fraction:g} has no mix to draw from (--calib_mix none): "
                    f"drop one of them"]
        if mix is not None:
            try:
                mix_sources(mix)
            except TextDataError as e:
                return [str(e) + ("" if request.calib_mix else
                                  " (the default; `git checkout data/calib_mix` restores the shipped one)")]
        return []

    def prepare(self, request: DataRequest, tokenizer, config, dist=None) -> TaskData:
        fraction = CALIB_MIX_FRACTION if request.calib_mix_fraction is None else request.calib_mix_fraction
        return prepare_causal_lm(request.calib_file, request.eval_file, tokenizer, config, request.num_samples,
                                 request.seed, request.max_seq_length, request.batch_size, request.eval_sequences,
                                 dist, self.calibration_mix(request), fraction)

    def pruned_extras(self, request: DataRequest, model, arch, tokenizer, masks, weight_updates, placement,
                      dist=None) -> dict:
        """Greedy continuations of a few fixed prompts by the unpruned and the pruned model, for a person to read;
        with --eval_tasks, their zero-shot accuracy through lm-evaluation-harness (on the first process only)."""
        extras = self._generations(model, arch, tokenizer, masks, weight_updates, placement)
        if request.eval_tasks and (dist is None or dist.is_main):
            extras["zero_shot"] = zero_shot_before_after(model, arch, tokenizer, masks, weight_updates, placement,
                                                         request)
        return extras

    def _generations(self, model, arch, tokenizer, masks, weight_updates, placement) -> dict:
        with placement.whole_model(model, "generations"):
            before = greedy_generations(model, tokenizer, PROMPTS, max_new_tokens=24)
        with swapped_weights(arch, weight_updates), placement.whole_model(model, "generations"):
            after = greedy_generations(model, tokenizer, PROMPTS, max_new_tokens=24,
                                       context=lambda: apply_masks(arch, *masks))
        for prompt, old, new in zip(PROMPTS, before, after):
            log.info("prompt %r\n  unpruned: %r\n  pruned:   %r", prompt, old, new)
        return {"generations": {"prompts": PROMPTS, "before": before, "after": after}}

    def saved_model_extras(self, original, pruned, seq_len: int) -> dict:
        """Prefill latency (batch 1 x seq_len) and greedy decode tokens/s of both models."""
        out = {}
        for name, model in (("original", original), ("pruned", pruned)):
            out[f"prefill_s_{name}"] = prefill_latency(model, 1, seq_len)
            out[f"decode_tokens_per_s_{name}"] = decode_speed(model, prompt_len=min(64, seq_len), new_tokens=32)
        out["prefill_speedup"] = out["prefill_s_original"] / out["prefill_s_pruned"]
        out["decode_speedup"] = out["decode_tokens_per_s_pruned"] / out["decode_tokens_per_s_original"]
        return {"decoder_speed": out}


CAUSAL_LM = register(CausalLM())
