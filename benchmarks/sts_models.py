"""The sentence-embedding models of the sts_embedding runs, loaded for timing: the unpruned encoder (no pooler) and
copies physically pruned with run folders' masks (benchmarks/onnx_attention.py, ffn_padding.py,
pruned_side_by_side.py)."""
from __future__ import annotations

import copy
import os

from arch import bind
from benchmarks.sts_embedding import model_dirs, run_folder
from prune.masks import load_masks
from prune.physical import physically_prune
from tasks.sentence_similarity import EncoderWithoutPooler
from utils.checkpoint import load_model


def original_and_pruned(model: str, runs: list[str]) -> dict:
    """{'original': the unpruned encoder, RUN's name: its copy pruned with RUN's masks, ...}, all in eval mode."""
    folders = [run_folder(run) for run in runs]          # before the model loads: a missing one fails at once
    original = load_model(model_dirs()[model], "embedding", EncoderWithoutPooler).eval()
    models = {"original": original}
    for run, folder in zip(runs, folders):
        pruned = copy.deepcopy(original)
        physically_prune(pruned, bind(pruned), *load_masks(folder))
        models[os.path.basename(os.path.normpath(run))] = pruned.eval()
    return models
