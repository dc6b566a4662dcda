"""Llama and the decoders that share its layout: pre-RMSNorm blocks, rotary attention with grouped
key/value heads, a gated (SwiGLU) MLP. The attention residual is the block input; the MLP's is the
input of post_attention_layernorm (the sum after attention), not the MLP's normalised input."""
from arch.base import Family
from arch.registry import register

LLAMA_LIKE = register(["llama", "mistral", "qwen2", "qwen3"], Family(
    layers="layers",
    attention="self_attn", attention_outputs=2,
    query="self_attn.q_proj", key="self_attn.k_proj", value="self_attn.v_proj", attn_out="self_attn.o_proj",
    ffn_inputs=("mlp.gate_proj", "mlp.up_proj"), ffn_out="mlp.down_proj",
    ffn_residual="post_attention_layernorm",
    num_heads_attr="num_attention_heads", num_kv_heads_attr="num_key_value_heads", head_dim_attr="head_dim",
    hidden_attr="hidden_size", ffn_attr="intermediate_size", num_layers_attr="num_hidden_layers",
    classifier_token="last", forward_kwargs=(("use_cache", False),), kv_group_attr="num_key_value_groups",
))
