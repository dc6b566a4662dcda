"""DistilBERT: BERT's block under other names, the attention output inside the attention module."""
from arch.base import Family
from arch.registry import register

DISTILBERT = register(["distilbert"], Family(
    layers="transformer.layer",
    attention="attention", attention_outputs=2,
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin", attn_out="attention.out_lin",
    ffn_inputs=("ffn.lin1",), ffn_out="ffn.lin2",
    ffn_residual="ffn.lin1",
    ffn_add_norm="output_layer_norm",
    num_heads_attr="n_heads", hidden_attr="dim", ffn_attr="hidden_dim", num_layers_attr="n_layers",
    head_count_attrs=("n_heads",),
))
