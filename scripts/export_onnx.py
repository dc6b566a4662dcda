"""Write model.onnx into a folder saved by save_pruned (main.py --save_pruned), checked against PyTorch.

    python -m scripts.export_onnx --pruned_dir outputs/.../pruned_model

The graph has dynamic batch and sequence axes (inputs input_ids, attention_mask and, where the
model takes them, token_type_ids; outputs logits, or start_logits and end_logits). It is run in
ONNX Runtime on random batches of the --batch_sizes x --seq_lens shapes (one row half padding)
and compared with the PyTorch model; the report (max abs difference, tolerance 1e-4) is printed
as JSON. --fuse fuses the graph into ONNX Runtime's transformer kernels (one Attention node per
layer, export/onnx_fuse.py); such a graph runs only in ONNX Runtime.
model.onnx is written in a temporary folder inside --pruned_dir and renamed into place: an interrupted export leaves
the earlier model.onnx or none (a rerun removes the temporary folder and says so); an existing model.onnx is
replaced only with --overwrite, and two exports into one folder are serialised by a lock.
Exit status 0: within tolerance; 1: not; 2: a bad folder or missing package; 130/143: Ctrl-C/SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from export.hf_load import load_pruned
from export.onnx import ONNX_FILE, example_inputs, export_and_check, missing_packages, remove_stale_stages
from run.folder import claimed_outputs
from run.safety import writing
from run.script_guard import check_model_folder, guarded_main

log = logging.getLogger("export_onnx")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pruned_dir", required=True, help="a folder written by save_pruned")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seq_lens", type=int, nargs="+", default=[8, 128])
    p.add_argument("--fuse", action="store_true", help="fuse into ONNX Runtime's transformer kernels")
    p.add_argument("--overwrite", action="store_true", help="replace a model.onnx already in --pruned_dir")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if missing_packages():
        print(f"error: the ONNX export needs {', '.join(missing_packages())}: "
              f"pip install {' '.join(missing_packages())}", file=sys.stderr)
        return 2
    return guarded_main(lambda: _checked_export(args), "the ONNX export")


def _checked_export(args) -> int:
    check_model_folder(args.pruned_dir, "--pruned_dir")
    target = os.path.join(args.pruned_dir, ONNX_FILE)
    with claimed_outputs([target], f"--pruned_dir '{args.pruned_dir}' (its {ONNX_FILE})", args.overwrite,
                         "written by main.py --export onnx or an earlier export"):
        for path in remove_stale_stages(args.pruned_dir):
            log.warning("removed %s, left by an ONNX export that was interrupted", path)
        model = load_pruned(args.pruned_dir)
        with writing(f"{ONNX_FILE}", args.pruned_dir):
            return _export(args, model, export_and_check, example_inputs)


def _export(args, model, export_and_check, example_inputs) -> int:
    # RoBERTa-like position ids start after the padding index, so leave two positions spare
    longest = (getattr(model.config, "max_position_embeddings", None) or max(args.seq_lens) + 2) - 2
    shapes = [(b, min(s, longest)) for b in args.batch_sizes for s in args.seq_lens]
    batches = [example_inputs(model, b, s, seed=i + 1) for i, (b, s) in enumerate(shapes)]
    report = export_and_check(model, args.pruned_dir, batches, fuse=args.fuse)
    report["checked_shapes"] = shapes
    print(json.dumps(report, indent=1))
    return 0 if report["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
