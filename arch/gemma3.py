"""Gemma 3 (text; `Gemma3ForCausalLM`, model_type gemma3_text): Llama's paths and grouped-query attention, with
three differences the facts carry or the algorithm never sees. A norm sits between each output projection and
its residual add (`post_attention_layernorm`, `post_feedforward_layernorm`: the fits aim through them, see
prune/targets.py), so the FFN's residual is the input of `pre_feedforward_layernorm`. Queries and keys get an
RMSNorm over the head size (shared by all heads: nothing to slice). Sliding-window and global layers get their
own masks and rotary tables (each block's call is recorded: arch/hooks.layer_calls). GeGLU and the scaled
embeddings change nothing here."""
from arch.base import Family
from arch.registry import register

GEMMA3 = register(["gemma3_text"], Family(
    layers="layers",
    attention="self_attn", attention_outputs=2,
    query="self_attn.q_proj", key="self_attn.k_proj", value="self_attn.v_proj", attn_out="self_attn.o_proj",
    ffn_inputs=("mlp.gate_proj", "mlp.up_proj"), ffn_out="mlp.down_proj",
    ffn_residual="pre_feedforward_layernorm",
    attn_out_norm="post_attention_layernorm", ffn_out_norm="post_feedforward_layernorm",
    num_heads_attr="num_attention_heads", num_kv_heads_attr="num_key_value_heads", head_dim_attr="head_dim",
    hidden_attr="hidden_size", ffn_attr="intermediate_size", num_layers_attr="num_hidden_layers",
    classifier_token="last", forward_kwargs=(("use_cache", False),), kv_group_attr="num_key_value_groups",
))
