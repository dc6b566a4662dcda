"""The figures of a sweep: metric and speed-up against MACs, units kept per layer, seconds per stage
(scripts/collect.py; matplotlib is imported only here, and only when a figure is drawn)."""
from __future__ import annotations

import math
import os

from scripts.sweep_rows import DEFAULT_VARIANTS, STAGES, VARIANT_LABELS, mean_of, read_json, task_groups, variant_key

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib  # figures only: its import takes seconds, the tables do not need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def _panels(plt, count: int, width: float = 5.5, height: float = 4.2, max_cols: int = 3):
    cols = min(count, max_cols)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def plot_metric_vs_macs(plt, means: list[dict], path: str) -> str | None:
    groups = {k: v for k, v in task_groups(means).items()
              if any(m["mac_ratio_mean"] is not None and m["metric_after_mean"] is not None for m in v)}
    if not groups:
        return None
    fig, axes = _panels(plt, len(groups))
    for ax, ((task, model), group) in zip(axes, sorted(groups.items(), key=lambda kv: str(kv[0]))):
        metric = group[0]["primary_metric"] or "metric"
        variants = sorted({m["variant"] for m in group}, key=variant_key)
        for variant in variants:
            pts = sorted((m for m in group if m["variant"] == variant and m["mac_ratio_mean"] is not None
                          and m["metric_after_mean"] is not None), key=lambda m: m["mac_ratio_mean"])
            if not pts:
                continue
            ax.errorbar([m["mac_ratio_mean"] for m in pts], [m["metric_after_mean"] for m in pts],
                        yerr=[m["metric_after_std"] or 0 for m in pts], marker="o", markersize=4, capsize=3,
                        label=_label(variant))
        before = mean_of(m["metric_before"] for m in group)
        if before is not None:
            ax.axhline(before, color="black", linestyle="--", linewidth=1, label=f"unpruned ({before:.4f})")
        ax.set_xlabel("MAC ratio (heads + FFN, kept / original)")
        ax.set_ylabel(f"dev {metric} after pruning")
        ax.set_title(f"{task} — {model}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_speedup_vs_macs(plt, rows: list[dict], means: list[dict], path: str) -> str | None:
    pts = [r for r in rows if r["measured_speedup"] is not None and r["mac_ratio"] is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    multi = len({(r["task"], r["model"]) for r in pts}) > 1
    keys = sorted({(r["task"], r["model"], r["variant"]) for r in pts},
                  key=lambda k: (str(k[0]), str(k[1]), variant_key(k[2])))
    for key in keys:        # every run as a point, the mean over seeds as the line
        line = ax.plot(*zip(*sorted((m["mac_ratio_mean"], m["measured_speedup_mean"]) for m in means
                                    if (m["task"], m["model"], m["variant"]) == key
                                    and m["measured_speedup_mean"] is not None and m["mac_ratio_mean"] is not None)),
                       marker="o", markersize=4, linestyle="-",
                       label=_label(key[2]) + (f" ({key[0]}, {key[1]})" if multi else ""))[0]
        sel = [r for r in pts if (r["task"], r["model"], r["variant"]) == key]
        if len(sel) > len({r["constraint"] for r in sel}):
            ax.scatter([r["mac_ratio"] for r in sel], [r["measured_speedup"] for r in sel], s=10, alpha=0.4,
                       color=line.get_color())
    lo = min(r["mac_ratio"] for r in pts)
    xs = [lo + (1 - lo) * i / 50 for i in range(51)]
    ax.plot(xs, [1 / x for x in xs], color="grey", linestyle=":", label="ideal: 1 / MAC ratio")
    ax.axhline(1.0, color="black", linewidth=0.8)
    shapes = sorted({(str(r["_speed"].get("device", r["device"])), r["_speed"].get("batch_size"),
                      r["_speed"].get("seq_len"), r["_speed"].get("threads")) for r in pts}, key=str)
    described = "; ".join(f"{d}" + (f", batch {b} x {s} tokens" if b and s else "") + (f", {t} threads" if t else "")
                          for d, b, s, t in shapes[:3]) + ("; ..." if len(shapes) > 3 else "")
    ax.set_xlabel("MAC ratio (heads + FFN, kept / original)")
    ax.set_ylabel("measured speedup of the pruned model")
    ax.set_title(f"measured speedup ({described})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def choose_heatmap_runs(rows: list[dict], heatmap_run: str | None) -> tuple[list[dict], str]:
    """The runs shown in the heat map and a title."""
    usable = [r for r in rows if r["_heads"] and r["_neurons"]]
    if heatmap_run:
        target = os.path.realpath(heatmap_run)
        chosen = [r for r in usable if os.path.realpath(r["_folder"]) == target]
        if not chosen:
            raise SystemExit(f"--heatmap_run {heatmap_run}: not a finished run under the root")
        r = chosen[0]
        return chosen, f"{r['task']} — {r['model']} — {r['variant']}, seed {r['seed']} ({r['run_dir']})"
    if not usable:
        return [], ""
    variants = {r["variant"] for r in usable}
    variant = next((v for v in DEFAULT_VARIANTS if v in variants), None) or sorted(variants, key=variant_key)[0]
    first = min((r for r in usable if r["variant"] == variant),
                key=lambda r: (str(r["task"]), str(r["model"]), r["constraint"] or 0,
                               r["seed"] if isinstance(r["seed"], int) else -1))
    seed = first["seed"]
    chosen = [r for r in usable if r["variant"] == variant and r["seed"] == seed and r["task"] == first["task"]
              and r["model"] == first["model"]]
    chosen.sort(key=lambda r: r["constraint"] or 0)
    return chosen, f"{first['task']} — {first['model']} — {variant}, seed {seed}"


def plot_kept_per_layer(plt, rows: list[dict], path: str, heatmap_run: str | None = None,
                        num_heads: int | None = None, ffn_dim: int | None = None) -> str | None:
    chosen, title = choose_heatmap_runs(rows, heatmap_run)
    if not chosen:
        return None
    # the unpruned sizes: from the checkpoint's config.json when it is reachable, else the largest count seen
    sizes = _model_sizes(chosen[0])
    num_heads = num_heads or sizes.get("heads") or max(max(r["_heads"]) for r in chosen) or 1
    ffn_dim = ffn_dim or sizes.get("ffn") or max(max(r["_neurons"]) for r in chosen) or 1
    layers = max(len(r["_heads"]) for r in chosen)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(3.5, 0.55 * layers + 1) + 2.5, 0.5 * len(chosen) + 2.2),
                             squeeze=False)
    labels = [f"c={r['constraint']:g} (MAC {r['mac_ratio']:.2f})" if r["mac_ratio"] is not None
              else f"c={r['constraint']:g}" for r in chosen]
    image = None
    for ax, key, total, what in ((axes[0][0], "_heads", num_heads, f"heads kept (of {num_heads})"),
                                 (axes[0][1], "_neurons", ffn_dim, f"FFN neurons kept (of {ffn_dim})")):
        counts = [list(r[key]) + [0] * (layers - len(r[key])) for r in chosen]
        frac = [[c / total for c in line] for line in counts]
        image = ax.imshow(frac, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for i, line in enumerate(counts):
            for j, c in enumerate(line):
                ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                        color="black" if frac[i][j] > 0.6 else "white")
        ax.set_xticks(range(layers))
        ax.set_xticklabels([str(j) for j in range(layers)])
        ax.set_xlabel("layer")
        ax.set_yticks(range(len(chosen)))
        ax.set_yticklabels(labels if key == "_heads" else [""] * len(chosen))
        ax.set_title(what)
    fig.colorbar(image, ax=[axes[0][0], axes[0][1]], fraction=0.03, pad=0.02, label="fraction kept")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _model_sizes(row: dict) -> dict:
    args = read_json(os.path.join(row["_folder"], "args.json")) or {}
    ckpt = args.get("ckpt_dir")
    if not ckpt:
        return {}
    for base in ("", REPO, os.path.dirname(row["_folder"])):
        config = read_json(os.path.join(base, ckpt, "config.json"))
        if config:
            heads = config.get("num_attention_heads", config.get("n_heads"))
            ffn = config.get("intermediate_size", config.get("hidden_dim"))
            return {"heads": heads, "ffn": ffn}
    return {}


def plot_seconds_per_stage(plt, means: list[dict], path: str) -> str | None:
    usable = [m for m in means if any(m[f"seconds_{s}_mean"] is not None for s in STAGES)]
    if not usable:
        return None
    keys = sorted({(m["task"], m["model"], m["variant"]) for m in usable},
                  key=lambda k: (str(k[0]), str(k[1]), variant_key(k[2])))
    multi = len({(k[0], k[1]) for k in keys}) > 1
    fig, axes = _panels(plt, len(keys), width=4.6, height=3.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = max(sum(m[f"seconds_{s}_mean"] or 0 for s in STAGES) for m in usable)
    for ax, key in zip(axes, keys):
        group = sorted((m for m in usable if (m["task"], m["model"], m["variant"]) == key),
                       key=lambda m: m["constraint"] or 0)
        xs = range(len(group))
        bottom = [0.0] * len(group)
        for color, stage in zip(colors, STAGES):
            heights = [m[f"seconds_{stage}_mean"] or 0.0 for m in group]
            ax.bar(xs, heights, bottom=bottom, color=color, label=stage.replace("_", " "), width=0.7)
            bottom = [b + h for b, h in zip(bottom, heights)]
        for x, total in zip(xs, bottom):
            ax.text(x, total, f"{total:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{m['constraint']:g}" for m in group])
        ax.set_xlabel("constraint")
        ax.set_ylabel("seconds (mean over seeds)")
        ax.set_ylim(0, top * 1.12 or 1)
        ax.set_title(_label(key[2]) + (f"\n{key[0]} — {key[1]}" if multi else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(STAGES), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_figures(rows: list[dict], means: list[dict], out: str, heatmap_run: str | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    plt = _pyplot()
    made = {}
    for name, fn in (("accuracy_vs_macs.png", lambda p: plot_metric_vs_macs(plt, means, p)),
                     ("speedup_vs_macs.png", lambda p: plot_speedup_vs_macs(plt, rows, means, p)),
                     ("kept_per_layer.png", lambda p: plot_kept_per_layer(plt, rows, p, heatmap_run)),
                     ("seconds_per_stage.png", lambda p: plot_seconds_per_stage(plt, means, p))):
        made[name] = fn(os.path.join(out, name))
    return made


