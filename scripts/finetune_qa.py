"""Fine-tune a pretrained encoder for extractive question answering on SQuAD-format JSON.

Recipe: the standard SQuAD preprocessing (question + context windows of --max_length tokens with
--doc_stride overlap; the answer's start/end tokens, or CLS for unanswerable / out-of-window),
AdamW (weight decay on matrices, none on biases and LayerNorm weights), linear warm-up over
--warmup_ratio of the steps (rounded up) then linear decay to 0, gradient clipping at 1.0,
per-epoch shuffling, dynamic padding, seeded torch/numpy/random. With --dev_file the dev questions
are scored at the end (SQuAD v1.1 EM/F1, or the v2.0 metrics). The output folder (written to a
temporary sibling, then renamed) holds model + tokenizer from save_pretrained and finetune.json
(recipe, dev metrics, loss curve, seconds). A folder whose finetune.json has the same recipe is
reused as a cache. The trainer is scripts/trainer.py.

    python -m scripts.finetune_qa --train_file data/squad/train-v2.0.json \\
        --dev_file data/squad/dev-v2.0.json --output_dir checkpoints/minilm-squad_v2

The task (squad or squad_v2) follows the data when --task_name is omitted: squad_v2 when the
training file is version 2.0 or has unanswerable questions.
"""
from __future__ import annotations

import argparse
import os

from dataset.errors import DataError  # noqa: F401  (part of this module's API)
from dataset.squad import SQUAD_TASKS, check_task
from scripts import trainer
from scripts.trainer import RESULT_FILE, FinetuneError  # noqa: F401  (part of this module's API)
from scripts.trainer import QaRecipe as Recipe  # noqa: F401
from scripts.trainer import infer_task


def finetune_qa(train_file: str, output_dir: str, dev_file: str | None = None, task_name: str | None = None,
                model_dir: str | None = None, epochs: int = 2, max_steps: int | None = None, lr: float = 1e-4,
                batch_size: int = 32, max_length: int = 384, doc_stride: int = 128, seed: int = 0,
                weight_decay: float = 0.01, warmup_ratio: float = 0.1, max_grad_norm: float = 1.0) -> dict:
    """Fine-tune and save to output_dir; return the finetune.json contents plus 'cached' (bool)."""
    trainer.check_squad_file("--train_file", train_file)
    task = check_task(task_name) if task_name else infer_task(train_file)
    recipe = Recipe(
        task_name=task, model_dir=os.path.abspath(model_dir or trainer.default_model_dir()),
        train_file=os.path.abspath(train_file), dev_file=os.path.abspath(dev_file) if dev_file else None,
        epochs=epochs, max_steps=max_steps, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        max_length=max_length, doc_stride=doc_stride, warmup_ratio=warmup_ratio,
        max_grad_norm=max_grad_norm, seed=seed)
    return trainer.finetune(recipe, trainer.QaHead(), output_dir)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_file", required=True, help="SQuAD-format JSON (e.g. train-v2.0.json)")
    parser.add_argument("--dev_file", default=None, help="SQuAD-format JSON scored after training")
    parser.add_argument("--task_name", default=None, choices=SQUAD_TASKS,
                        help="squad (v1.1) or squad_v2; default: from the training file")
    trainer.add_recipe_args(parser, epochs=2, max_length=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    trainer.run_cli(finetune_qa, parse_args(argv), no_metrics="no --dev_file")


if __name__ == "__main__":
    main()
