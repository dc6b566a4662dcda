"""BERT and the families that share its layout: post-LayerNorm encoder blocks."""
from arch.base import Family
from arch.registry import register

BERT_LIKE = register(["bert", "roberta", "xlm-roberta", "camembert", "electra"], Family(
    layers="encoder.layer",
    attention="attention.self", attention_outputs=2,
    query="attention.self.query", key="attention.self.key", value="attention.self.value",
    attn_out="attention.output.dense",
    ffn_inputs=("intermediate.dense",), ffn_out="output.dense",
    ffn_residual="intermediate.dense",        # the FFN's input is also its residual (post-LN)
    ffn_add_norm="output.LayerNorm",
    num_heads_attr="num_attention_heads", hidden_attr="hidden_size",
    ffn_attr="intermediate_size", num_layers_attr="num_hidden_layers",
    head_count_attrs=("num_attention_heads",), head_width_attrs=("all_head_size",),
))
