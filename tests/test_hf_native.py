"""Saved pruned folders open with plain HuggingFace calls (trust_remote_code) and give the masked model's outputs."""
import json
import os

import pytest
import torch
from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertTokenizer,
                          XLMRobertaConfig, pipeline)

from evaluate.predict import predict_logits
from prune.physical import physically_prune
from tests.tiny import random_batch, tiny_config, with_strong_position_bias
from arch import bind
from export.hf_native import MODELING_FILE, SHAPES_KEY, record_shapes
from arch.hooks import apply_masks
from export.hf_load import load_pruned
from export.hf_folder import PrunedModelError, save_pruned

L, H, F = 3, 4, 37
FAMILIES = ["bert", "roberta", "distilbert", "electra", "xlm-roberta", "mpnet"]


def _model(family, qa=False):
    torch.manual_seed(0)
    if family == "xlm-roberta":
        config = XLMRobertaConfig(hidden_size=32, num_attention_heads=H, intermediate_size=F, num_hidden_layers=L,
                                  vocab_size=100, max_position_embeddings=64, pad_token_id=1, num_labels=2)
    else:
        config = tiny_config(family, layers=L)
    cls = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
    return with_strong_position_bias(cls.from_config(config)).eval()


def _masks():
    """Layer 0: no heads. Layer 1: no neurons. Uneven widths and non-binary (some negative) scales."""
    gen = torch.Generator().manual_seed(2)
    head = torch.rand(L, H, generator=gen) * 1.5 + 0.3
    neuron = torch.randn(L, F, generator=gen) * 3
    head[0] = 0
    head[1, [0, 2]] = 0
    head[2, 3] = 0
    neuron[1] = 0
    neuron[0, ::3] = 0
    neuron[2, 5:30] = 0
    return head, neuron


def _outputs(model, batch, masks=None):
    keys = ("start_logits", "end_logits") if "QuestionAnswering" in type(model).__name__ else ("logits",)
    with torch.no_grad(), apply_masks(bind(model), *(masks or (None, None))):
        out = model(**batch)
    return torch.cat([out[k] for k in keys], -1)


def _saved(family, path, qa=False, tokenizer=None):
    """(masked model's outputs on a batch, the batch) after pruning a tiny model and saving it to path."""
    model = _model(family, qa)
    batch = random_batch(model, with_labels=False)
    masks = _masks()
    expected = _outputs(model, batch, masks)
    shapes = physically_prune(model, bind(model), *masks)
    save_pruned(model, tokenizer, str(path), shapes)
    return expected, batch


def _from_pretrained(cls, path):
    model, info = cls.from_pretrained(str(path), trust_remote_code=True, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert not info["mismatched_keys"] and not info["error_msgs"]
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_from_pretrained_gives_masked_logits(family, tmp_path):
    path = tmp_path / f"native_{family}"          # the module cache is keyed by folder name
    expected, batch = _saved(family, path)
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {"AutoModelForSequenceClassification":
                                  f"modeling_pruned.Pruned{config['architectures'][0]}"}
    assert config[SHAPES_KEY]["no_heads"] and config[SHAPES_KEY]["linears"]
    assert (path / MODELING_FILE).is_file()

    model = _from_pretrained(AutoModelForSequenceClassification, path)
    assert not model.training
    assert torch.allclose(_outputs(model, batch), expected, atol=1e-5)
    assert torch.allclose(_outputs(load_pruned(str(path)), batch), expected, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_question_answering_folder(family, tmp_path):
    path = tmp_path / f"native_qa_{family}"
    expected, batch = _saved(family, path, qa=True)
    assert "AutoModelForQuestionAnswering" in json.loads((path / "config.json").read_text())["auto_map"]
    model = _from_pretrained(AutoModelForQuestionAnswering, path)
    assert torch.allclose(_outputs(model, batch), expected, atol=1e-5)


def test_resaving_a_loaded_model_keeps_it_native(tmp_path):
    expected, batch = _saved("bert", tmp_path / "native_first")
    loaded = _from_pretrained(AutoModelForSequenceClassification, tmp_path / "native_first")
    info = json.loads((tmp_path / "native_first" / "pruning.json").read_text())
    save_pruned(loaded, None, str(tmp_path / "native_second"), info)
    config = json.loads((tmp_path / "native_second" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    again = _from_pretrained(AutoModelForSequenceClassification, tmp_path / "native_second")
    assert torch.allclose(_outputs(again, batch), expected, atol=1e-5)


def test_unpruned_model_records_nothing():
    assert record_shapes(_model("bert")) == {"linears": {}, "no_heads": {}, "attrs": {}}


def test_wrong_record_is_not_loaded_silently(tmp_path):
    path = tmp_path / "native_wrong"
    _saved("bert", path)
    config = json.loads((path / "config.json").read_text())
    config[SHAPES_KEY]["linears"]["bert.encoder.layer.2.intermediate.dense"][1] += 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="size|shape|mismatch"):
        AutoModelForSequenceClassification.from_pretrained(str(path), trust_remote_code=True)
    with pytest.raises(Exception, match="size mismatch|do not match"):
        load_pruned(str(path))


def test_load_pruned_reads_folders_saved_before_the_record(tmp_path):
    path = tmp_path / "legacy"
    expected, batch = _saved("distilbert", path)
    config = json.loads((path / "config.json").read_text())
    del config[SHAPES_KEY], config["auto_map"]
    (path / "config.json").write_text(json.dumps(config))
    os.remove(path / MODELING_FILE)
    assert torch.allclose(_outputs(load_pruned(str(path)), batch), expected, atol=1e-5)


def test_load_pruned_checks_record_against_pruning_json(tmp_path):
    path = tmp_path / "native_disagree"
    _saved("bert", path)
    info = json.loads((path / "pruning.json").read_text())
    info["heads_per_layer"][2], info["kept_heads"][2] = 1, [0]     # consistent in itself, not with the record
    (path / "pruning.json").write_text(json.dumps(info))
    with pytest.raises(PrunedModelError, match="do not match"):
        load_pruned(str(path))


def _tokenizer(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 100)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    return BertTokenizer(str(tmp_path / "vocab.txt"))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pipeline_label_matches_project_prediction(family, tmp_path):
    tokenizer = _tokenizer(tmp_path)
    model = _model(family)
    masks = _masks()
    texts = ["w12 w40 w7", "w99 w5 w5 w31 w64 w8", "w77", "w20 w21 w22 w23 w24 w25 w26 w27 w28"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    logits = predict_logits(model, bind(model), [batch], list(range(len(texts))), *masks)
    shapes = physically_prune(model, bind(model), *masks)
    path = tmp_path / f"native_pipe_{family}"
    save_pruned(model, tokenizer, str(path), shapes)

    classify = pipeline("text-classification", model=str(path), trust_remote_code=True)
    got = classify(texts)
    probs = logits.softmax(-1)
    for row, p in zip(got, probs):
        assert row["label"] == model.config.id2label[int(p.argmax())]
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-5)
