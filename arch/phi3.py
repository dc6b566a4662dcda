"""Phi-3 (`Phi3ForCausalLM`, model_type phi3): Llama's block with fused projections. `qkv_proj` holds the query,
key and value rows as three row blocks, `gate_up_proj` the gate and up rows as two: the family names each fused
path once per role it holds, in row order (arch/base.py). The attention splits its fused output at
`config.num_attention_heads * head_dim` and keeps `num_key_value_heads` on the module: a pruned layer gets both
counts of its own. The residual dropouts change nothing here."""
from arch.base import Family
from arch.registry import register

PHI3 = register(["phi3"], Family(
    layers="layers",
    attention="self_attn", attention_outputs=2,
    query="self_attn.qkv_proj", key="self_attn.qkv_proj", value="self_attn.qkv_proj", attn_out="self_attn.o_proj",
    ffn_inputs=("mlp.gate_up_proj", "mlp.gate_up_proj"), ffn_out="mlp.down_proj",
    ffn_residual="post_attention_layernorm",
    num_heads_attr="num_attention_heads", num_kv_heads_attr="num_key_value_heads", head_dim_attr="head_dim",
    hidden_attr="hidden_size", ffn_attr="intermediate_size", num_layers_attr="num_hidden_layers",
    classifier_token="last", forward_kwargs=(("use_cache", False),), kv_group_attr="num_key_value_groups",
    kv_count_attrs=("num_key_value_heads",), config_head_count="num_attention_heads",
))
