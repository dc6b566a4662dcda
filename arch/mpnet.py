"""MPNet (all-mpnet-base-v2 and its fine-tunes): post-LayerNorm encoder blocks like BERT, with two differences
the facts below carry. The query, key, value and output Linears all live in `attention.attn`. And the relative
position bias is computed once per forward by the encoder, one slice per head, and handed to every layer: a
layer that keeps fewer heads must read only its kept heads' slices (`head_inputs`; prune/physical.py installs
the slicing, and a saved folder re-installs it from its record)."""
from arch.base import Family
from arch.registry import register

MPNET = register(["mpnet"], Family(
    layers="encoder.layer",
    attention="attention.attn", attention_outputs=1,
    query="attention.attn.q", key="attention.attn.k", value="attention.attn.v", attn_out="attention.attn.o",
    ffn_inputs=("intermediate.dense",), ffn_out="output.dense",
    ffn_residual="intermediate.dense",        # the FFN's input is also its residual (post-LN)
    ffn_add_norm="output.LayerNorm",
    num_heads_attr="num_attention_heads", hidden_attr="hidden_size",
    ffn_attr="intermediate_size", num_layers_attr="num_hidden_layers",
    head_count_attrs=("num_attention_heads",), head_width_attrs=("all_head_size",),
    head_inputs=(("position_bias", 2),),      # MPNetAttention calls attn(hidden, mask, position_bias, ...)
))
