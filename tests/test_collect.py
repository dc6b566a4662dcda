"""scripts/collect.py on fake run folders, and scripts/sweep.sh with a stub in place of main.py."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from prune.options import PruneOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECT = os.path.join(REPO, "scripts", "collect.py")
SWEEP = os.path.join(REPO, "scripts", "sweep.sh")
FIGURES = ["accuracy_vs_macs.png", "speedup_vs_macs.png", "kept_per_layer.png", "seconds_per_stage.png"]


def _load_collect():
    """The collector's pieces under one name: run folders -> rows (scripts/sweep_rows.py), tables
    (scripts/sweep_tables.py), variant names (prune/options.py); scripts/collect.py is the command over them."""
    from types import SimpleNamespace
    from prune.options import variant_name
    from scripts import sweep_rows, sweep_tables
    return SimpleNamespace(variant_name=variant_name, run_row=sweep_rows.run_row, collect=sweep_rows.collect,
                           ablation_tables=sweep_tables.ablation_tables, ablation_csv=sweep_tables.ablation_csv)


def _args(constraint, seed, method="kwon", rearrange=True, rescale=True, importance="fisher", output_dir=""):
    return {"task_name": "sst2", "ckpt_dir": "checkpoints/minilm-movie-sst2", "model_name": None,
            "data_dir": "data/movie-sst2", "output_dir": output_dir, "metric": "mac", "constraint": constraint,
            "num_samples": 2048, "seed": seed, "device": "cpu", "max_seq_length": 64, "doc_stride": 128,
            "batch_size": 32, "rearrange": rearrange, "rescale": rescale, "importance": importance,
            "method": method, "teacher": "schedule", "ridge": 0.1, "eval_stages": False,
            "overwrite": False, "mha_lut": None, "ffn_lut": None, "save_pruned": None,
            "speed_batch_size": 32, "speed_seq_len": 128}


def _results(args, accuracy, speedup=None, seconds=None, stages=None):
    c = args["constraint"]
    heads = [12, 11, 10, 8, 6, 3] if c < 0.6 else [12, 12, 12, 11, 10, 8]
    neurons = [1400, 1200, 900, 500, 200, 60] if c < 0.6 else [1536, 1500, 1300, 1000, 700, 300]
    results = {
        "task": "sst2", "primary_metric": "accuracy",
        "metric_before": {"accuracy": 0.9}, "metric_after": {"accuracy": accuracy},
        "metric_stages": {k: {"accuracy": v} for k, v in (stages or {}).items()},
        "constraint": c, "method": args["method"], "teacher": args["teacher"],
        "mac_ratio": c - 0.001, "seq_len_for_macs": 26.6,
        "seconds": seconds or {"gradients": 10.0, "search": 0.1, "rearrange": 1.0, "mask_tuning": 20.0,
                               "pruning_total": 31.1, "evaluate_once": 5.0, "wall_total": 50.0},
        "peak_memory_mb": {"rss": 1500.0, "gpu": None},
        "heads_kept_per_layer": heads, "neurons_kept_per_layer": neurons,
        "mask_tuning": [], "device": "cpu",
        "data": {"num_samples_used": 2048},
    }
    if speedup is not None:
        results["pruned_model"] = {"path": "pruned_model", "metric": {"accuracy": accuracy},
                                   "measured_speedup": speedup, "heads_per_layer": heads,
                                   "neurons_per_layer": neurons}
    return results


def _fake_run(root, rel, args, results=None):
    folder = root / rel
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "log.txt").write_text("log\n")
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))
    return folder


def _run_collect(root, out, *extra):
    return subprocess.run([sys.executable, "-m", "scripts.collect", str(root), "--out", str(out), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sweep_root(tmp_path):
    root = tmp_path / "sweep"
    base = "minilm-movie-sst2/sst2"
    a = _args(0.5, 0)
    _fake_run(root, f"{base}/kwon/c0.5/seed_0", a, _results(a, 0.80, speedup=1.7))
    a = _args(0.5, 1)
    _fake_run(root, f"{base}/kwon/c0.5/seed_1", a, _results(a, 0.84, speedup=1.8))
    a = _args(0.7, 0)
    _fake_run(root, f"{base}/kwon/c0.7/seed_0", a, _results(a, 0.88, speedup=1.3))
    a = _args(0.5, 0, method="lsq")
    _fake_run(root, f"{base}/lsq/c0.5/seed_0", a,
              _results(a, 0.86, seconds={"gradients": 10.0, "search": 0.1, "rearrange": 1.0, "mask_tuning": 30.0,
                                         "pruning_total": 41.1, "wall_total": 60.0}))
    _fake_run(root, f"{base}/lsq/c0.7/seed_0", _args(0.7, 0, method="lsq"))       # unfinished: no results.json
    return root


def test_collect_writes_rows_means_and_figures(sweep_root, tmp_path):
    out = tmp_path / "figs"
    proc = _run_collect(sweep_root, out)
    assert proc.returncode == 0, proc.stderr

    rows = _read_csv(sweep_root / "summary.csv")
    assert len(rows) == 4
    assert [(r["variant"], r["constraint"], r["seed"]) for r in rows] == [
        ("kwon", "0.5", "0"), ("kwon", "0.5", "1"), ("kwon", "0.7", "0"), ("lsq", "0.5", "0")]
    first = rows[0]
    assert first["task"] == "sst2" and first["model"] == "minilm-movie-sst2" and first["method"] == "kwon"
    assert float(first["metric_before"]) == pytest.approx(0.9)
    assert float(first["metric_after"]) == pytest.approx(0.8)
    assert float(first["metric_delta"]) == pytest.approx(-0.1)
    assert float(first["mac_ratio"]) == pytest.approx(0.499)
    assert float(first["measured_speedup"]) == pytest.approx(1.7)
    assert float(first["seconds_mask_tuning"]) == pytest.approx(20.0)
    assert float(first["peak_rss_mb"]) == pytest.approx(1500.0)
    assert rows[3]["measured_speedup"] == ""           # no --save_pruned: empty, not an error

    means = {(m["variant"], m["constraint"]): m for m in _read_csv(sweep_root / "summary_mean.csv")}
    assert set(means) == {("kwon", "0.5"), ("kwon", "0.7"), ("lsq", "0.5")}
    kwon = means[("kwon", "0.5")]
    assert kwon["n_seeds"] == "2"
    assert float(kwon["metric_after_mean"]) == pytest.approx(0.82)
    assert float(kwon["metric_after_std"]) == pytest.approx(0.0282843, rel=1e-4)
    assert float(kwon["measured_speedup_mean"]) == pytest.approx(1.75)
    assert float(means[("lsq", "0.5")]["seconds_mask_tuning_mean"]) == pytest.approx(30.0)

    md = (sweep_root / "summary.md").read_text()
    assert "Unfinished" in md and os.path.join("lsq", "c0.7", "seed_0") in md
    assert "0.8200 ± 0.0283" in md
    assert "## Mean over seeds" in proc.stdout                 # the table is printed too
    assert "## Ablation" in md
    with open(sweep_root / "summary.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[-4:] == ["run_dir", "stage_teacher", "stage_search", "stage_rearrange"]   # appended
    assert rows[0]["stage_search"] == ""                       # no --eval_stages in this fixture
    ablation = {r["constraint"]: r for r in _read_csv(sweep_root / "ablation.csv")}
    assert float(ablation["0.5"]["kwon"]) == pytest.approx(0.82) and ablation["0.5"]["kwon_n"] == "2"
    assert float(ablation["0.5"]["lsq"]) == pytest.approx(0.86) and ablation["0.7"]["lsq"] == ""
    assert ablation["0.5"]["search"] == "" and ablation["0.5"]["search_source"] == ""
    for name in FIGURES:
        assert (out / name).is_file() and (out / name).stat().st_size > 1000, name


def test_collect_tolerates_partial_roots(tmp_path):
    root = tmp_path / "partial"
    a = _args(0.6, 0, method="lsq")
    _fake_run(root, "m/sst2/lsq/c0.6/seed_0", a, _results(a, 0.85))            # no measured speedup
    _fake_run(root, "m/sst2/lsq/c0.4/seed_0", _args(0.4, 0, method="lsq"))    # unfinished
    broken = _fake_run(root, "m/sst2/lsq/c0.5/seed_0", _args(0.5, 0, method="lsq"))
    (broken / "results.json").write_text("{not json")                           # unreadable = unfinished
    out = tmp_path / "figs"
    proc = _run_collect(root, out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(_read_csv(root / "summary.csv")) == 1
    md = (root / "summary.md").read_text()
    assert "c0.4" in md and "c0.5" in md
    assert not (out / "speedup_vs_macs.png").exists()          # nothing to plot: skipped, not an empty figure
    for name in ("accuracy_vs_macs.png", "kept_per_layer.png", "seconds_per_stage.png"):
        assert (out / name).stat().st_size > 1000

    empty = tmp_path / "empty"
    (empty / "x").mkdir(parents=True)
    (empty / "x" / "log.txt").write_text("")
    proc = _run_collect(empty, tmp_path / "figs2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(_read_csv(empty / "summary.csv")) == 0


def test_variant_names_follow_the_flags():
    collect = _load_collect()
    name = lambda **kw: collect.variant_name(_args(0.5, 0, **kw))  # noqa: E731
    assert name() == "kwon"
    assert name(method="lsq") == "lsq"
    assert name(rearrange=False, rescale=False) == "search"
    assert name(rescale=False) == "rearrange"
    assert name(importance="magnitude") == "magnitude"
    assert name(importance="random") == "random"
    assert name(method="lsq", importance="random") == "lsq-random"
    assert name(rearrange=False) == "kwon-norearrange"
    options = PruneOptions(0.5)                 # the defaults (main.py's flags take theirs from here): no suffix
    defaults = {m: {"teacher": options.teacher, "teacher_exponent": options.teacher_exponent} for m in ("kwon", "lsq")}
    for method in ("kwon", "lsq"):
        args = _args(0.5, 0, method=method)
        args["teacher"] = defaults[method]["teacher"]
        assert collect.variant_name(args) == method
        args["teacher"] = "full" if defaults[method]["teacher"] == "schedule" else "schedule"
        assert collect.variant_name(args) == f"{method}-teacher_{args['teacher']}"
    args = _args(0.5, 0, method="lsq")
    args["ridge"] = 12.5
    assert collect.variant_name(args) == "lsq-ridge12.5"
    args = _args(0.5, 0, method="lsq")
    args["gradient_batches"] = "random"
    assert collect.variant_name(args) == "lsq-random_batches"
    args["gradient_batches"] = "sorted"
    assert collect.variant_name(args) == "lsq"
    args["teacher_exponent"] = defaults["lsq"]["teacher_exponent"]
    assert collect.variant_name(args) == "lsq"
    args["teacher_exponent"] = 0.9
    assert collect.variant_name(args) == "lsq-teacher_exp0.9"


def test_collector_keeps_search_head_refit_and_default_runs_apart(tmp_path):
    """Runs that differ in any option get different variants: the name comes from the options that differ from
    PruneOptions' defaults (args.json of the real parser, no variant in results.json: the collector derives it)."""
    import main
    from dataclasses import asdict
    collect = _load_collect()
    flag_sets = {"default": [], "uniform": ["--search", "uniform"], "nohead": ["--no_head_refit"],
                 "both": ["--search", "uniform", "--no_head_refit"]}
    variants = {}
    for label, flags in flag_sets.items():
        cfg = main.config_from_args(["--task_name", "sst2", "--ckpt_dir", "ckpt", "--constraint", "0.5", *flags])
        args = json.loads(json.dumps(asdict(cfg)))
        folder = _fake_run(tmp_path, label, args, _results({"constraint": 0.5, "method": cfg.prune.method,
                                                             "teacher": cfg.prune.teacher}, 0.8))
        variants[label] = collect.run_row(str(folder), str(tmp_path))["variant"]
    assert variants == {"default": "lsq", "uniform": "lsq-search_uniform", "nohead": "lsq-nohead",
                        "both": "lsq-search_uniform-nohead"}
    # and what main.py itself writes into results.json agrees with the collector's derivation
    from prune.options import differences, variant_name
    cfg = main.config_from_args(["--task_name", "sst2", "--ckpt_dir", "ckpt", "--constraint", "0.5",
                                 "--search", "uniform"])
    assert variant_name(differences(cfg.prune, gradient_batches=cfg.gradient_batches)) == "lsq-search_uniform"


# ----------------------------------------------------------------------------------------------
# the ablation table
# ----------------------------------------------------------------------------------------------

def _ablation_root(tmp_path, search_runs=False):
    """kwon (with --eval_stages scores) at 0.5 over seeds 0-2 and at 0.7; lsq and magnitude at 0.5;
    with search_runs, real search runs at 0.5 (seeds 0 and 1)."""
    root = tmp_path / "ablation"
    base = "minilm-movie-sst2/sst2"
    for seed, acc, search, rearrange in ((0, 0.86, 0.80, 0.83), (1, 0.865, 0.81, 0.84), (2, 0.8625, 0.82, 0.85)):
        a = _args(0.5, seed)
        _fake_run(root, f"{base}/kwon/c0.5/seed_{seed}", a,
                  _results(a, acc, stages={"teacher": 0.89, "search": search, "rearrange": rearrange}))
    a = _args(0.7, 0)
    _fake_run(root, f"{base}/kwon/c0.7/seed_0", a, _results(a, 0.88, stages={"search": 0.85, "rearrange": 0.87}))
    a = _args(0.5, 0, method="lsq")
    _fake_run(root, f"{base}/lsq/c0.5/seed_0", a, _results(a, 0.87))
    a = _args(0.5, 0, importance="magnitude")
    _fake_run(root, f"{base}/magnitude/c0.5/seed_0", a, _results(a, 0.70))
    if search_runs:
        for seed, acc in ((0, 0.79), (1, 0.80)):
            a = _args(0.5, seed, rearrange=False, rescale=False)
            _fake_run(root, f"{base}/search/c0.5/seed_{seed}", a, _results(a, acc))
    collect = _load_collect()
    rows, _ = collect.collect(str(root))
    return collect, rows, root


def _md_lines(md):
    """{constraint: cells} of the (single) ablation table, keyed by the header."""
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return header, {cells[0]: dict(zip(header, cells))
                    for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])}


def test_ablation_takes_search_and_rearrange_from_kwon_stages(tmp_path):
    collect, rows, _ = _ablation_root(tmp_path)
    assert rows[0]["stage_search"] == pytest.approx(0.80) and rows[0]["stage_teacher"] == pytest.approx(0.89)
    md = collect.ablation_tables(rows)
    assert md.startswith("## Ablation")
    assert "### sst2 — minilm-movie-sst2 (accuracy, unpruned 0.9000)" in md
    header, lines = _md_lines(md)
    assert header == ["constraint", "search only", "+ rearrangement", "+ mask tuning (kwon, the paper)",
                      "lsq (ours)", "magnitude"]
    assert lines["0.5"]["search only"] == "0.8100 (3)*"
    assert lines["0.5"]["+ rearrangement"] == "0.8400 (3)*"
    assert lines["0.5"]["lsq (ours)"] == "0.8700" and lines["0.5"]["magnitude"] == "0.7000"
    assert lines["0.7"] == {"constraint": "0.7", "search only": "0.8500*", "+ rearrangement": "0.8700*",
                            "+ mask tuning (kwon, the paper)": "0.8800", "lsq (ours)": "", "magnitude": ""}
    assert "* from the kwon runs' --eval_stages evaluation of the same masks" in md


def test_ablation_prefers_search_runs(tmp_path):
    collect, rows, root = _ablation_root(tmp_path, search_runs=True)
    md = collect.ablation_tables(rows)
    header, lines = _md_lines(md)
    assert header[1:5] == ["search only", "+ rearrangement", "+ mask tuning (kwon, the paper)", "lsq (ours)"]
    assert lines["0.5"]["search only"] == "0.7950 (2)"              # the search runs, not kwon's stages
    assert lines["0.5"]["+ rearrangement"] == "0.8400 (3)*"        # no rearrange runs: still kwon's
    assert lines["0.7"]["search only"] == "0.8500*"                # no search run at 0.7
    assert "* from the kwon runs'" in md
    csv_rows, columns = collect.ablation_csv(rows)
    assert columns[:8] == ["task", "model", "primary_metric", "unpruned", "constraint", "search", "search_n",
                           "search_source"]
    by_c = {r["constraint"]: r for r in csv_rows}
    assert by_c[0.5]["search"] == pytest.approx(0.795) and by_c[0.5]["search_source"] == "runs"
    assert by_c[0.5]["rearrange_source"] == "kwon --eval_stages" and by_c[0.5]["rearrange_n"] == 3
    assert by_c[0.7]["search_source"] == "kwon --eval_stages" and "lsq" not in by_c[0.7]

    # through the command line: ablation.csv and the section in summary.md
    proc = _run_collect(root, tmp_path / "figs", "--quiet", "--no_figures")
    assert proc.returncode == 0, proc.stderr
    assert "## Ablation" in (root / "summary.md").read_text()
    written = {r["constraint"]: r for r in _read_csv(root / "ablation.csv")}
    assert written["0.5"]["search_n"] == "2" and written["0.5"]["magnitude"] == "0.7"


def test_ablation_without_stage_scores_or_fallback_has_no_footnote(tmp_path):
    collect, rows, _ = _ablation_root(tmp_path, search_runs=True)
    for r in rows:
        r["stage_search"] = r["stage_rearrange"] = None
    md = collect.ablation_tables(rows)
    _, lines = _md_lines(md)
    assert lines["0.5"]["search only"] == "0.7950 (2)" and lines["0.5"]["+ rearrangement"] == ""
    assert lines["0.5"]["+ mask tuning (kwon, the paper)"] == "0.8625 (3)"     # mean over the 3 seeds
    assert lines["0.7"]["search only"] == ""
    assert "eval_stages evaluation" not in md


# ----------------------------------------------------------------------------------------------
# scripts/sweep.sh with a stub main.py
# ----------------------------------------------------------------------------------------------

FAKE_MAIN = textwrap.dedent("""
    import json, os, sys
    from dataclasses import asdict
    sys.path.insert(0, {repo!r})
    import main                               # the real parser: the sweep's flags must be valid
    cfg = main.config_from_args(sys.argv[1:])
    with open(os.environ["FAKE_MAIN_CALLS"], "a") as f:
        f.write(json.dumps({{"output_dir": cfg.output_dir, "argv": sys.argv[1:]}}) + "\\n")
    if str(cfg.constraint) in os.environ.get("FAKE_MAIN_FAIL", "").split():
        print("error: made to fail", file=sys.stderr)
        sys.exit(2)
    os.makedirs(cfg.output_dir, exist_ok=True)
    args = asdict(cfg)
    with open(os.path.join(cfg.output_dir, "args.json"), "w") as f:
        json.dump(args, f)
    results = {{"task": cfg.task_name, "primary_metric": "accuracy", "metric_before": {{"accuracy": 0.9}},
               "metric_after": {{"accuracy": 0.5 + cfg.constraint / 2}}, "constraint": cfg.constraint,
               "method": cfg.prune.method, "teacher": cfg.prune.teacher, "mac_ratio": cfg.constraint,
               "seconds": {{"gradients": 1.0, "search": 0.1, "rearrange": 0.2, "mask_tuning": 2.0,
                           "pruning_total": 3.3, "wall_total": 5.0}},
               "peak_memory_mb": {{"rss": 100.0, "gpu": None}},
               "heads_kept_per_layer": [4, 3], "neurons_kept_per_layer": [30, 20], "device": "cpu"}}
    if cfg.eval_stages:
        after = results["metric_after"]["accuracy"]
        results["metric_stages"] = {{"teacher": {{"accuracy": 0.89}}, "search": {{"accuracy": after - 0.1}},
                                    "rearrange": {{"accuracy": after - 0.05}}}}
    with open(os.path.join(cfg.output_dir, "results.json"), "w") as f:
        json.dump(results, f)
""")


@pytest.fixture
def sweep_env(tmp_path):
    stub = tmp_path / "fake_main.py"
    stub.write_text(FAKE_MAIN.format(repo=REPO))
    ckpt = tmp_path / "tiny-ckpt"
    ckpt.mkdir()
    env = {**os.environ, "MAIN": f"{sys.executable} {stub}", "PYTHON": sys.executable,
           "CKPT": str(ckpt), "DATA_DIR": str(tmp_path / "data"), "OUT": str(tmp_path / "sweep"),
           "FIG_DIR": str(tmp_path / "figs"), "FAKE_MAIN_CALLS": str(tmp_path / "calls.jsonl"),
           "SEEDS": "0"}
    for key in ("ABLATION", "VARIANTS", "METHODS", "EXTRA", "TASK", "TASKS", "DRY_RUN", "VERBOSE", "MAX_SEQ_LENGTH"):
        env.pop(key, None)
    return env


def _sweep(env, **overrides):
    return subprocess.run(["bash", SWEEP], cwd=REPO, env={**env, **overrides}, capture_output=True, text=True,
                          timeout=600)


def _calls(env):
    path = env["FAKE_MAIN_CALLS"]
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_sweep_skips_finished_runs_and_collects(sweep_env, tmp_path):
    out = tmp_path / "sweep"
    finished = out / "tiny-ckpt" / "sst2" / "kwon" / "c0.5" / "seed_0"
    a = _args(0.5, 0)
    _fake_run(out, os.path.relpath(finished, out), a, _results(a, 0.77))
    before = (finished / "results.json").read_text()

    proc = _sweep(sweep_env, METHODS="kwon", CONSTRAINTS="0.5 0.7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = _calls(sweep_env)
    assert [c["output_dir"] for c in calls] == [str(out / "tiny-ckpt" / "sst2" / "kwon" / "c0.7" / "seed_0")]
    assert "--method" in calls[0]["argv"] and "kwon" in calls[0]["argv"]
    assert "--eval_stages" in calls[0]["argv"]                  # kwon always scores its stages
    assert "--max_seq_length" not in calls[0]["argv"]           # only for the default checkpoint
    assert (finished / "results.json").read_text() == before       # not re-run, not overwritten
    assert "skipped" in proc.stdout
    rows = _read_csv(out / "summary.csv")
    assert sorted((r["constraint"], r["metric_after"]) for r in rows) == [("0.5", "0.77"), ("0.7", "0.85")]
    assert "## Mean over seeds" in proc.stdout
    assert (tmp_path / "figs" / "accuracy_vs_macs.png").stat().st_size > 1000

    # everything finished: a second sweep runs nothing
    proc = _sweep(sweep_env, METHODS="kwon", CONSTRAINTS="0.5 0.7")
    assert proc.returncode == 0 and len(_calls(sweep_env)) == 1


def test_sweep_failure_is_reported_and_resumable(sweep_env, tmp_path):
    proc = _sweep(sweep_env, METHODS="lsq", CONSTRAINTS="0.4 0.6", FAKE_MAIN_FAIL="0.6")
    assert proc.returncode == 1
    assert "FAILED" in proc.stderr
    out = tmp_path / "sweep" / "tiny-ckpt" / "sst2" / "lsq"
    assert (out / "c0.4" / "seed_0" / "results.json").is_file()
    assert not (out / "c0.6" / "seed_0" / "results.json").exists()
    assert "c0.6" in (tmp_path / "sweep" / "summary.md").read_text()      # listed as unfinished
    proc = _sweep(sweep_env, METHODS="lsq", CONSTRAINTS="0.4 0.6")        # resume: only the failed one runs
    assert proc.returncode == 0, proc.stderr
    assert [c["output_dir"].split(os.sep)[-2] for c in _calls(sweep_env)] == ["c0.4", "c0.6", "c0.6"]


def test_sweep_ablation_runs_each_variant_with_its_flags(sweep_env, tmp_path):
    proc = _sweep(sweep_env, ABLATION="1", CONSTRAINTS="0.5", SEEDS="0 1", EXTRA="--num_samples 64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = _calls(sweep_env)
    assert len(calls) == 8
    by_variant = {}
    for c in calls:
        parts = c["output_dir"].split(os.sep)
        by_variant.setdefault(parts[-3], []).append(c["argv"])
        assert c["argv"][-2:] == ["--num_samples", "64"]
    assert list(by_variant) == ["kwon", "lsq", "magnitude", "random"]     # search / rearrange: from kwon
    flags = {v: set(argvs[0]) for v, argvs in by_variant.items()}
    assert not {"--no_rearrange", "--no_mask_tuning"} & flags["kwon"]
    assert "--eval_stages" in flags["kwon"]
    assert not any("--eval_stages" in flags[v] for v in ("lsq", "magnitude", "random"))
    assert "magnitude" in flags["magnitude"] and "random" in flags["random"]
    for v in ("kwon", "magnitude", "random"):
        argv = by_variant[v][0]
        assert argv[argv.index("--method") + 1] == "kwon"
    # collect names each run's variant from its args.json exactly as the sweep named the folder
    for row in _read_csv(tmp_path / "sweep" / "summary.csv"):
        assert row["run_dir"].split(os.sep)[-3] == row["variant"]
    assert len(_read_csv(tmp_path / "sweep" / "summary_mean.csv")) == 4
    # the ablation table has all its columns, search-only and +rearrangement from kwon's stage scores
    (ablation,) = _read_csv(tmp_path / "sweep" / "ablation.csv")
    assert float(ablation["search"]) == pytest.approx(0.65) and ablation["search_n"] == "2"
    assert float(ablation["rearrange"]) == pytest.approx(0.70)
    assert ablation["search_source"] == ablation["rearrange_source"] == "kwon --eval_stages"
    assert float(ablation["kwon"]) == pytest.approx(0.75) and float(ablation["random"]) == pytest.approx(0.75)
    assert "0.6500 (2)*" in (tmp_path / "sweep" / "summary.md").read_text()

    # search and rearrange remain available as variants of their own
    proc = _sweep(sweep_env, ABLATION="1", VARIANTS="search rearrange", CONSTRAINTS="0.5", SEEDS="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = {c["output_dir"].split(os.sep)[-3]: set(c["argv"]) for c in _calls(sweep_env)[8:]}
    assert set(new) == {"search", "rearrange"}
    assert {"--no_rearrange", "--no_mask_tuning"} <= new["search"]
    assert "--no_mask_tuning" in new["rearrange"] and "--no_rearrange" not in new["rearrange"]
    assert not any("--eval_stages" in f for f in new.values())
    (ablation,) = _read_csv(tmp_path / "sweep" / "ablation.csv")
    assert ablation["search_source"] == "runs" and ablation["search_n"] == "1"       # the run now


def test_sweep_rejects_unknown_variant(sweep_env):
    proc = _sweep(sweep_env, METHODS="kwon bogus")
    assert proc.returncode == 2 and "unknown variant 'bogus'" in proc.stderr
    assert _calls(sweep_env) == []
