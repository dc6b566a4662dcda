"""scripts/finetune.py on a tiny random BERT, and scripts/make_movie_sst2.py."""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from scripts import finetune as ft  # noqa: E402
from scripts import make_movie_sst2 as movie  # noqa: E402

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "movie", "film", "plot", "was", "is",
         "a", "an", "story", "cast", "cat", "dog", "sat", "ran", "on", "mat", "park"]
POSITIVE, NEGATIVE = ["good", "great", "fine"], ["bad", "awful", "poor"]
FILLER = ["the movie was", "a film is", "the plot was", "the story is", "the cast was", "an movie is"]
TINY_RECIPE = {"max_steps": 64, "lr": 3e-3, "batch_size": 16, "max_length": 16, "seed": 0}


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A random 2-layer BERT encoder (no classifier) saved with a tiny WordPiece tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)}
    # transformers 5 takes `vocab=` (a dict or a file); the old `vocab_file=` is silently ignored.
    tokenizer = BertTokenizerFast(vocab=vocab)
    assert tokenizer("good film")["input_ids"] == [vocab[t] for t in ("[CLS]", "good", "film", "[SEP]")]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _write_tsv(path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sentiment_rows(n: int, rng: np.random.Generator) -> list[list]:
    rows = []
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append([f"{rng.choice(FILLER)} {word}", label])
    return rows


def _similarity_rows(n: int, rng: np.random.Generator) -> list[list]:
    """Identical pairs score 5, pairs about different things score 0."""
    a_side, b_side = ["the cat sat on the mat", "the dog ran", "a cat ran"], ["the movie was good", "a film is bad"]
    rows = []
    for i in range(n):
        first = rng.choice(a_side)
        similar = i % 2 == 0
        rows.append([first, first if similar else rng.choice(b_side), 5.0 if similar else 0.0])
    return rows


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("glue")
    rng = np.random.default_rng(0)
    _write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"], _sentiment_rows(96, rng))
    _write_tsv(root / "SST-2" / "dev.tsv", ["sentence", "label"], _sentiment_rows(40, rng))
    return str(root)


@pytest.fixture(scope="module")
def stsb_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("stsb")
    rng = np.random.default_rng(1)
    header = ["sentence1", "sentence2", "score"]
    _write_tsv(folder / "train.tsv", header, _similarity_rows(96, rng))
    _write_tsv(folder / "dev.tsv", header, _similarity_rows(40, rng))
    return str(folder)


@pytest.fixture(scope="module")
def sst2_run(tiny_encoder, sst2_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "sst2-ckpt")
    result = ft.finetune("sst2", out, data_dir=sst2_dir, model_dir=tiny_encoder, **TINY_RECIPE)
    return out, result


# ----------------------------------------------------------------------------- fine-tuning

def test_classification_checkpoint_is_complete(sst2_run):
    out, result = sst2_run
    assert not result["cached"]
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer_config.json", ft.RESULT_FILE} <= files
    assert "tokenizer.json" in files or "vocab.txt" in files
    assert os.listdir(os.path.dirname(out)) == ["sst2-ckpt"]   # no temporary folder left behind
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["problem_type"] == "single_label_classification"
    stored = json.loads(open(os.path.join(out, ft.RESULT_FILE)).read())
    assert {k: stored["recipe"][k] for k in TINY_RECIPE} == TINY_RECIPE
    assert stored["steps"] == TINY_RECIPE["max_steps"] and stored["seconds"] > 0
    assert set(stored["dev_metrics"]) >= {"accuracy"}


def test_classification_learns(sst2_run):
    out, result = sst2_run
    curve = result["loss_curve"]
    assert np.mean(curve[-3:]) < np.mean(curve[:3]) - 0.1, curve
    assert result["dev_metrics"]["accuracy"] >= 0.8, result["dev_metrics"]


def test_checkpoint_loads_with_repo_loader(sst2_run):
    from utils.checkpoint import load_model, load_tokenizer
    out, _ = sst2_run
    model = load_model(out, "classification")   # raises when the classifier weights are missing
    tokenizer = load_tokenizer(out, None)
    batch = tokenizer(["the movie was great", "the movie was awful"], return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    assert predicted == [1, 0]


def test_same_recipe_is_cached(sst2_run, tiny_encoder, sst2_dir, capsys):
    out, first = sst2_run
    weights = os.path.join(out, "model.safetensors")
    mtime = os.stat(weights).st_mtime_ns
    ft.main(["--task_name", "sst2", "--data_dir", sst2_dir, "--model_dir", tiny_encoder, "--output_dir", out,
             *[f"--{k}={v}" for k, v in TINY_RECIPE.items()]])
    assert "cached" in capsys.readouterr().out
    assert os.stat(weights).st_mtime_ns == mtime
    again = ft.finetune("sst2", out, data_dir=sst2_dir, model_dir=tiny_encoder, **TINY_RECIPE)
    assert again["cached"] and again["dev_metrics"] == first["dev_metrics"]


def test_other_recipe_retrains(tiny_encoder, sst2_dir, tmp_path):
    out = str(tmp_path / "ckpt")
    first = ft.finetune("sst2", out, data_dir=sst2_dir, model_dir=tiny_encoder, max_steps=2, batch_size=8,
                        max_length=16)
    second = ft.finetune("sst2", out, data_dir=sst2_dir, model_dir=tiny_encoder, max_steps=3, batch_size=8,
                         max_length=16)
    assert not first["cached"] and not second["cached"]
    assert json.loads(open(os.path.join(out, ft.RESULT_FILE)).read())["steps"] == 3
    assert os.listdir(tmp_path) == ["ckpt"]   # no temporary or old folders left behind


def test_regression_stsb(tiny_encoder, stsb_dir, tmp_path):
    out = str(tmp_path / "stsb-ckpt")
    recipe = {**TINY_RECIPE, "max_length": 24}
    result = ft.finetune("stsb", out, data_dir=stsb_dir, model_dir=tiny_encoder, **recipe)
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["problem_type"] == "regression"
    assert len(config["id2label"]) == 1
    curve = result["loss_curve"]
    assert np.mean(curve[-3:]) < np.mean(curve[:3]), curve
    assert set(result["dev_metrics"]) >= {"pearson"}
    assert all(np.isfinite(v) for v in result["dev_metrics"].values())
    assert result["dev_metrics"]["pearson"] > 0.5, result["dev_metrics"]


def test_refuses_to_overwrite_foreign_folder(tiny_encoder, sst2_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ft.FinetuneError, match="refusing to overwrite"):
        ft.finetune("sst2", str(tmp_path), data_dir=sst2_dir, model_dir=tiny_encoder, max_steps=1)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_bad_inputs_name_the_fix(tiny_encoder, sst2_dir, tmp_path):
    with pytest.raises(ft.FinetuneError, match="--model_dir"):
        ft.finetune("sst2", str(tmp_path / "a"), data_dir=sst2_dir, model_dir=str(tmp_path / "missing"))
    with pytest.raises(ft.FinetuneError, match="--lr"):
        ft.finetune("sst2", str(tmp_path / "b"), data_dir=sst2_dir, model_dir=tiny_encoder, lr=0)
    with pytest.raises(ft.DataError, match="unknown task"):
        ft.finetune("nope", str(tmp_path / "c"), data_dir=sst2_dir, model_dir=tiny_encoder)


# ----------------------------------------------------------------------------- movie-sst2 data

GROUND_TRUTH = ("1\t2.5\tA fine film.\r\n2\t0.0\tNeutral.\r\n3\t-1.25\tA \"bad\" one\u2019s plot.\r\n"
                + "".join(f"{i}\t{(-1) ** i * 0.5}\tSentence {i}.\r\n" for i in range(4, 2010))
                + "2010\t1.0\tLast line without newline.")


def _fake_sdist(path) -> str:
    """An sdist shaped like vaderSentiment's: the ground truth inside a nested tarball."""
    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        add(tar, f"hutto_ICWSM_2014/{movie.GROUND_TRUTH_NAME}", GROUND_TRUTH.encode("utf-8"))
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    return str(path)


def test_parse_ground_truth_conventions():
    rows = movie.parse_ground_truth(GROUND_TRUTH)
    assert len(rows) == 2009                         # the zero-rated line is dropped
    assert rows[0] == ("A fine film.", 1)
    assert rows[1] == ("A \"bad\" one\u2019s plot.", 0)   # verbatim, no quoting or cleanup
    assert rows[-1] == ("Last line without newline.", 1)
    assert movie.format_tsv(rows[:2]) == "sentence\tlabel\nA fine film.\t1\nA \"bad\" one\u2019s plot.\t0\n".encode()


def test_build_from_sdist_is_atomic_and_cached(tmp_path):
    sdist = _fake_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")
    out = tmp_path / "movie"
    assert movie.build_movie_sst2(str(out), sdist) == str(out)
    assert sorted(os.listdir(out)) == ["dev.tsv", "train.tsv"]
    dev = (out / "dev.tsv").read_text().splitlines()
    train = (out / "train.tsv").read_text().splitlines()
    assert len(dev) == movie.DEV_SIZE + 1 and len(train) == 2009 - movie.DEV_SIZE + 1
    (out / "dev.tsv").write_text("edited")
    movie.build_movie_sst2(str(out), sdist)                 # existing files are kept
    assert (out / "dev.tsv").read_text() == "edited"
    movie.build_movie_sst2(str(out), sdist, force=True)
    assert (out / "dev.tsv").read_text().splitlines() == dev


def test_bad_sdist_names_the_fix(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(movie.MovieDataError, match="--sdist"):
        movie.build_movie_sst2(str(tmp_path / "out"), str(bogus))
    assert not (tmp_path / "out").exists()


def _benchmark_dir() -> str | None:
    for shared in ("/work/shared", os.path.join(REPO_ROOT, "..", "shared")):
        folder = os.path.join(shared, "benchmark", "movie-sst2")
        if os.path.isfile(os.path.join(folder, "train.tsv")) and os.path.isfile(os.path.join(folder, "dev.tsv")):
            return folder
    return None


def _vader_sdist(tmp_path) -> str | None:
    """VADER_SDIST when set, otherwise whatever pip can download (None when offline)."""
    env = os.environ.get("VADER_SDIST")
    if env:
        return env if os.path.isfile(env) else None
    try:
        return movie.download_sdist(str(tmp_path), timeout_s=15)
    except movie.MovieDataError:
        return None


def test_build_matches_benchmark_bytes(tmp_path):
    benchmark = _benchmark_dir()
    if benchmark is None:
        pytest.skip("no shared/benchmark/movie-sst2 to compare with")
    sdist = _vader_sdist(tmp_path)
    if sdist is None:
        pytest.skip("vaderSentiment 3.3.2 sdist unavailable (set VADER_SDIST or allow pip download)")
    out = movie.build_movie_sst2(str(tmp_path / "movie-sst2"), sdist)
    for name in ("train.tsv", "dev.tsv"):
        with open(os.path.join(out, name), "rb") as ours, open(os.path.join(benchmark, name), "rb") as ref:
            assert ours.read() == ref.read(), f"{name} differs from {benchmark}/{name}"
