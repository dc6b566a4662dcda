"""The MPNet family (shared relative position bias) and the sentence-embedding similarity task (stsb_embedding)."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from transformers import AutoModel, MPNetConfig

import main
from arch import bind
from arch.hooks import apply_masks
from dataset.errors import DataError
from evaluate.similarity import (cosine_regression_loss, embed, pair_cosines, predict_cosines, pool,
                                 teacher_agreement_loss)
from prune.cost import mac_cost_of
from prune.fisher import collect_mask_grads
from prune.physical import physically_pruned_copy
from prune.weight_updates import HEAD, load_weight_updates, swapped_weights
from tasks import registry
from tasks.base import DataRequest
from tasks.sentence_similarity import model_pooling, pair_batches
from tests.tiny import save_tiny_checkpoint, with_strong_position_bias

L, H, F = 3, 4, 37
PAIRS = [("a man is playing a guitar", "a man plays the guitar", 4.8),
         ("a woman is slicing an onion", "a man is riding a horse", 0.2),
         ("two dogs run on the beach", "dogs are running along the shore", 4.0),
         ("the cat sleeps on the sofa", "a child reads a book", 0.6),
         ("a plane is taking off", "an airplane departs", 4.2),
         ("people walk in the park", "someone cooks dinner", 1.0)]


def _config(vocab=100):
    return MPNetConfig(vocab_size=vocab, hidden_size=32, num_attention_heads=H, intermediate_size=F,
                       num_hidden_layers=L, max_position_embeddings=130)


def _encoder(seed=0, vocab=100):
    torch.manual_seed(seed)
    return with_strong_position_bias(AutoModel.from_config(_config(vocab), add_pooling_layer=False)).eval()


def _batch(model, pairs=3, length=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (2 * pairs, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[3, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([4.5, 1.0, 3.0][:pairs])}


def _masks():
    """Layer 0: no heads; layer 1 keeps heads 1 and 3 (so it needs slices 1 and 3 of the shared position bias);
    uneven widths and scales."""
    gen = torch.Generator().manual_seed(2)
    head = torch.rand(L, H, generator=gen) + 0.5
    neuron = torch.randn(L, F, generator=gen)
    head[0] = 0
    head[1, [0, 2]] = 0
    neuron[2, ::2] = 0
    return head, neuron


def test_mean_pooling_counts_real_tokens_only():
    hidden = torch.arange(12.0).reshape(1, 3, 4).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])


def test_pruned_embeddings_equal_masked_ones_and_mac_count_matches_the_linears():
    model = _encoder()
    batch = _batch(model)
    head, neuron = _masks()
    with torch.no_grad(), apply_masks(bind(model), head, neuron):
        expected = embed(model, batch, "mean")
    pruned, shapes = physically_pruned_copy(model, head, neuron)
    assert shapes["heads_per_layer"] == [0, 2, 4]
    with torch.no_grad():
        assert torch.allclose(embed(pruned, batch, "mean"), expected, atol=1e-5)
    seq = 9
    macs = 0.0
    arch = bind(pruned)
    for i in range(L):
        linears = [*arch.qkv(i), arch.attn_out(i), *arch.ffn_inputs(i), arch.ffn_out(i)]
        macs += seq * sum(m.in_features * m.out_features for m in linears) + 2 * seq * seq * arch.qkv(i)[0].out_features
    assert mac_cost_of(bind(model), seq).of_masks(head, neuron) == pytest.approx(macs)


def test_metric_is_spearman_of_the_pairs_cosines(tmp_path):
    tok = _tokenizer(tmp_path)
    model = _encoder(vocab=tok.vocab_size)
    rows = [{"texts": (a, b), "label": s} for a, b, s in PAIRS]
    batches, order, _ = pair_batches(rows, tok, 32, pairs_per_batch=4, sort_by_length=True)
    got = predict_cosines(model, bind(model), batches, order, "mean").numpy()
    direct = []
    with torch.no_grad():
        for a, b, _ in PAIRS:
            ea, eb = (embed(model, dict(tok([t], return_tensors="pt")), "mean")[0] for t in (a, b))
            direct.append(float(torch.nn.functional.cosine_similarity(ea, eb, dim=0)))
    assert np.allclose(got, direct, atol=1e-5)
    gold = [s for *_, s in PAIRS]
    from evaluate.glue import compute_glue_metrics
    metrics = compute_glue_metrics("stsb", got, gold)
    assert metrics["spearmanr"] == pytest.approx(spearmanr(direct, gold).statistic, abs=1e-6)
    assert metrics["pearson"] == pytest.approx(pearsonr(direct, gold).statistic, abs=1e-5)


def test_losses_and_their_gradients():
    model = _encoder()
    batch = _batch(model)
    with torch.no_grad():
        cos = pair_cosines(embed(model, batch, "mean"))
        assert float(cosine_regression_loss(model, batch, "mean")) == pytest.approx(
            float(((cos - batch["labels"] / 5) ** 2).mean()), rel=1e-5)
    arch = bind(model)
    for loss in (cosine_regression_loss, teacher_agreement_loss):
        heads, neurons = collect_mask_grads(model, arch, [batch], lambda m, b: loss(m, b, "mean"))
        # the label-free loss is taken at the teacher itself and must still give every unit a gradient
        assert (heads.abs().sum(0) > 0).all() and (neurons.abs().sum(0) > 0).float().mean() > 0.9


def test_pooling_comes_from_the_sentence_transformers_config(tmp_path):
    config = _config()
    config._name_or_path = str(tmp_path)
    assert model_pooling(config)[0] == "mean"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                    "pooling_mode_mean_tokens": False}))
    assert model_pooling(config)[0] == "cls"
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(DataError, match="pooling_mode_max_tokens"):
        model_pooling(config)


def _tokenizer(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tok_ckpt", AutoModel, lambda vocab: _config(vocab))
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def mpnet_ckpt(tmp_path_factory):
    def config(vocab):
        return _config(vocab)
    return save_tiny_checkpoint(tmp_path_factory.mktemp("mpnet"), AutoModel, config)


@pytest.fixture(scope="module")
def stsb_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("glue") / "STS-B"
    folder.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for name, reps in (("train.tsv", 5), ("dev.tsv", 2)):
        lines = [header] + [f"{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\t{a}\t{b}\t{s}"
                            for i, (a, b, s) in enumerate(PAIRS * reps)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return str(folder.parent)


def test_main_prunes_a_sentence_embedding_model_and_saves_it(mpnet_ckpt, stsb_dir, tmp_path):
    out, saved = tmp_path / "run", tmp_path / "model"
    argv = ["--task_name", "stsb_embedding", "--ckpt_dir", mpnet_ckpt, "--data_dir", stsb_dir, "--constraint", "0.5",
            "--num_samples", "24", "--batch_size", "4", "--output_dir", str(out), "--device", "cpu",
            "--save_pruned", str(saved)]
    assert main.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["primary_metric"] == "spearmanr" and results["mac_ratio"] <= 0.5
    assert results["data"]["pooling"] == "mean" and results["data"]["similarity_loss"] == "gold"
    assert not any(e.get("layer") == "head" for e in results["mask_tuning"])   # no pooler, no head to refit
    assert results["pruned_model"]["metric"]["spearmanr"] == pytest.approx(results["metric_after"]["spearmanr"],
                                                                           abs=1e-4)
    config = json.loads((saved / "config.json").read_text())
    assert config["pruned_shapes"]["removed"] == ["pooler"]
    model, info = AutoModel.from_pretrained(str(saved), trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    rows = [{"texts": (a, b), "label": s} for a, b, s in PAIRS]
    from transformers import AutoTokenizer
    batches, order, _ = pair_batches(rows, AutoTokenizer.from_pretrained(str(saved)), 32, 8, True)
    original = AutoModel.from_pretrained(mpnet_ckpt, add_pooling_layer=False).eval()
    masks = torch.load(out / "head_mask.pt"), torch.load(out / "neuron_mask.pt")
    updates = load_weight_updates(str(out / "weight_updates.pt"))
    assert updates and not any(layer == HEAD for layer, _ in updates)
    with swapped_weights(bind(original), updates):
        expected = predict_cosines(original, bind(original), batches, order, "mean", *masks)
    assert torch.allclose(predict_cosines(model, bind(model), batches, order, "mean"), expected, atol=1e-5)

    again = tmp_path / "teacher"
    assert main.main(argv[:-4] + ["--output_dir", str(again), "--similarity_loss", "teacher"]) == 0
    assert json.loads((again / "results.json").read_text())["data"]["similarity_loss"] == "teacher"


def test_similarity_loss_is_refused_by_other_tasks(capsys):
    with pytest.raises(SystemExit) as e:
        main.config_from_args(["--task_name", "sst2", "--ckpt_dir", "x", "--constraint", "0.5",
                               "--similarity_loss", "teacher"])
    assert e.value.code == 2 and "--similarity_loss does not apply to --task_name sst2" in capsys.readouterr().err


def test_task_reads_its_default_loss():
    task = registry.get("stsb_embedding")
    assert task.check_request(DataRequest("stsb_embedding", 8, 0, 32)) == []
    assert task.check_request(DataRequest("stsb_embedding", 8, 0, 32, similarity_loss="teacher")) == []
    assert task.check_request(DataRequest("stsb_embedding", 8, 0, 32, eval_file="x.txt"))   # a flag it ignores
