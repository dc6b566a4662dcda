"""Tiny random models of every supported family, for fast CPU tests."""
import torch
from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertConfig,
                          DistilBertConfig, ElectraConfig, RobertaConfig)

FAMILIES = ["bert", "roberta", "distilbert", "electra"]


def tiny_config(family: str, num_labels: int = 2, vocab_size: int = 100, layers: int = 3):
    common = dict(vocab_size=vocab_size, num_labels=num_labels, max_position_embeddings=64)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_heads=4, hidden_dim=37, n_layers=layers, **common)
    cls = {"bert": BertConfig, "roberta": RobertaConfig, "electra": ElectraConfig}[family]
    extra = {"embedding_size": 32} if family == "electra" else {}
    return cls(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=layers,
               pad_token_id=1 if family == "roberta" else 0, **extra, **common)


def tiny_model(family: str = "bert", num_labels: int = 2, qa: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    config = tiny_config(family, num_labels, **kw)
    cls = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
    model = cls.from_config(config)
    return model.eval()


def random_batch(model, batch=3, length=9, seed=0, with_labels=True):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, model.config.vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 3:] = 0           # one padded row
    out = {"input_ids": ids, "attention_mask": mask}
    if with_labels:
        if model.config.num_labels == 1:
            out["labels"] = torch.rand(batch, generator=gen)
        else:
            out["labels"] = torch.randint(0, model.config.num_labels, (batch,), generator=gen)
    return out
