"""Collect the run folders of a sweep into tables and figures.

    python -m scripts.collect outputs/sweep [--out figures/] [--heatmap_run RUN_DIR] [--quiet]

Every folder under ROOT that holds results.json (and, normally, args.json) is one finished run;
folders with args.json, log.txt or sweep.log but no results.json are listed as unfinished and
otherwise ignored. Writes into ROOT:

  summary.csv       one row per finished run
  summary_mean.csv  mean (and standard deviation) over seeds per task, model, variant and constraint
  ablation.csv      per task, model and constraint: the mean over seeds (and the number of seeds) of
                    every variant, the ablation steps first (see below)
  summary.md        the ablation tables, both tables above in Markdown, plus the unfinished folders

and, into --out (default: figures/ of the repository), with stable names:

  accuracy_vs_macs.png    primary metric after pruning vs MAC ratio, one line per variant, mean over
                          seeds with the spread as error bars; dashed line: the unpruned model
  speedup_vs_macs.png     measured speedup of the physically pruned model vs MAC ratio (only when some
                          run has pruned_model.measured_speedup, i.e. main.py --save_pruned); dotted: 1/MAC ratio
  kept_per_layer.png      heads and FFN neurons kept per layer (heat map, counts written in the cells)
                          for one variant and seed at every constraint it was run at; default: the
                          default variant (kwon, else lsq, else the first), lowest seed; --heatmap_run
                          picks one run folder instead
  seconds_per_stage.png   seconds per pruning stage (gradients, search, rearrange, mask tuning) per
                          constraint, stacked, one panel per variant, mean over seeds

The variant of a run is derived from its args.json (not from the folder name):
  search       Fisher search only (--no_rearrange --no_mask_tuning)
  rearrange    search + mask rearrangement (--no_mask_tuning)
  kwon         search + rearrangement + the paper's mask tuning (--method kwon)
  lsq          search + rearrangement + least-squares refit (--method lsq)
  magnitude / random   the kwon pipeline with --importance magnitude / random
with suffixes for anything else that differs from these or from main.py's current defaults (e.g.
"lsq-random", "kwon-norearrange", "kwon-teacher_full", "lsq-ridge0.001", "kwon-latency").

The ablation table (summary.md "## Ablation", ablation.csv), one per task and model, one line per
constraint: search only | + rearrangement | + mask tuning (kwon, the paper) | lsq (ours) | any other
variant. "search only" and "+ rearrangement" come from the search / rearrange runs at that constraint;
without them, from the kwon runs' --eval_stages scores of the same masks (results.json metric_stages,
marked * in summary.md, "kwon --eval_stages" in the *_source columns of ablation.csv).
"""

import argparse
import os
import sys

from scripts.sweep_figures import make_figures
from scripts.sweep_rows import COLUMNS, MEAN_COLUMNS, collect, mean_rows
from scripts.sweep_tables import ablation_csv, markdown, write_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="the sweep root (e.g. outputs/sweep)")
    p.add_argument("--out", default=os.path.join(REPO, "figures"), help="folder for the PNG figures")
    p.add_argument("--heatmap_run", default=None, help="run folder for kept_per_layer.png")
    p.add_argument("--no_figures", action="store_true")
    p.add_argument("--quiet", action="store_true", help="do not print summary.md")
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    rows, unfinished = collect(args.root)
    means = mean_rows(rows)
    write_csv(os.path.join(args.root, "summary.csv"), rows, COLUMNS)
    write_csv(os.path.join(args.root, "summary_mean.csv"), means, MEAN_COLUMNS)
    write_csv(os.path.join(args.root, "ablation.csv"), *ablation_csv(rows))
    md = markdown(rows, means, unfinished, args.root)
    with open(os.path.join(args.root, "summary.md"), "w") as f:
        f.write(md)
    if not args.quiet:
        print(md)
    print(f"wrote {os.path.join(args.root, 'summary.csv')}, summary_mean.csv, ablation.csv and summary.md "
          f"({len(rows)} finished, {len(unfinished)} unfinished)")
    if not args.no_figures and rows:
        made = make_figures(rows, means, args.out, args.heatmap_run)
        for name, path in made.items():
            print(f"figure {name}: {path if path else 'skipped (no data for it)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

