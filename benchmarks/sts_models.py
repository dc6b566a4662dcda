"""The sentence-embedding models of the sts_embedding runs, loaded for timing: the unpruned encoder (no pooler) and
copies physically pruned with run folders' masks (benchmarks/onnx_attention.py, ffn_padding.py,
pruned_side_by_side.py)."""
from __future__ import annotations

import copy
import os
import sys

from arch import bind
from benchmarks.record import ROOT
from benchmarks.sts_embedding import model_dirs
from prune.masks import load_masks
from prune.physical import physically_prune
from tasks.sentence_similarity import EncoderWithoutPooler
from utils.checkpoint import load_model


def run_folder(run: str) -> str:
    """outputs/sts_embedding/RUN (or RUN itself, a path) when it holds masks; else says how to make it and exits 2."""
    folder = run if os.sep in run else os.path.join(ROOT, "outputs", "sts_embedding", run)
    if not os.path.isfile(os.path.join(folder, "head_mask.pt")):
        print(f"error: no masks in {folder}: run that sts_embedding cell first (benchmarks/speed_limit.py's help)",
              file=sys.stderr)
        raise SystemExit(2)
    return folder


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
