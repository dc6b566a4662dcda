"""Fine-tune a pretrained encoder into a GLUE task checkpoint (classification or STS-B regression).

Recipe: AdamW (weight decay on matrices, none on biases and LayerNorm weights), 6% linear warm-up
(rounded up) then linear decay to 0 (transformers' get_linear_schedule_with_warmup), gradient
clipping at 1.0, per-epoch shuffling, dynamic padding, seeded torch/numpy/random. The dev split is
scored at the end. The output folder (written to a temporary sibling, then renamed) holds model +
tokenizer from save_pretrained and finetune.json (recipe, dev metrics, seconds). A folder whose
finetune.json has the same recipe is reused as a cache. The trainer is scripts/trainer.py.

    python -m scripts.finetune --task_name sst2 --data_dir data/movie-sst2 \\
        --output_dir checkpoints/minilm-movie-sst2
"""
from __future__ import annotations

import argparse
import os

from dataset.errors import DataError  # noqa: F401  (part of this module's API)
from dataset.glue import get_task
from scripts import trainer
from scripts.trainer import RESULT_FILE, FinetuneError  # noqa: F401  (part of this module's API)
from scripts.trainer import GlueRecipe as Recipe  # noqa: F401


def finetune(task_name: str, output_dir: str, data_dir: str | None = None, model_dir: str | None = None,
             epochs: int = 3, max_steps: int | None = None, lr: float = 1e-4, batch_size: int = 32,
             max_length: int = 64, seed: int = 0, weight_decay: float = 0.01, warmup_ratio: float = 0.06,
             max_grad_norm: float = 1.0) -> dict:
    """Fine-tune and save to output_dir; return the finetune.json contents plus 'cached' (bool)."""
    task = get_task(task_name)
    recipe = Recipe(
        task_name=task.name, model_dir=os.path.abspath(model_dir or trainer.default_model_dir()),
        data_dir=os.path.abspath(data_dir) if data_dir else None, epochs=epochs, max_steps=max_steps,
        lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_length=max_length,
        warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm, seed=seed)
    return trainer.finetune(recipe, trainer.GlueHead(task), output_dir)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task_name", required=True, help="GLUE task whose layout the data has (sst2, stsb, ...)")
    parser.add_argument("--data_dir", help="GLUE root or task folder with train.tsv/dev.tsv (default: the hub)")
    trainer.add_recipe_args(parser, epochs=3, max_length=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    trainer.run_cli(finetune, parse_args(argv))


if __name__ == "__main__":
    main()
