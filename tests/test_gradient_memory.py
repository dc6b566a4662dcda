"""The memory-saving gradient pass (recomputed blocks, chunked LM loss) gives the same mask gradients."""
import torch

from evaluate.perplexity import lm_loss
from prune.fisher import collect_mask_grads
from tests.tiny import lm_batch, random_batch, tiny_decoder, tiny_model
from arch import bind


def _grads(model, batches, **kw):
    heads, neurons = collect_mask_grads(model, bind(model), batches, **kw)
    return heads, neurons


def test_checkpointed_layers_give_the_same_encoder_gradients_and_restore_forward():
    model = tiny_model("bert")
    batches = [random_batch(model, seed=s) for s in range(2)]
    calls = []
    bind(model).attn_out(0).register_forward_hook(lambda *_: calls.append(1))
    plain = _grads(model, batches)
    assert len(calls) == 2
    recomputed = _grads(model, batches, checkpoint_layers=True)
    assert len(calls) == 2 + 4                    # each block ran again in the backward pass
    for a, b in zip(plain, recomputed):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert all("forward" not in layer.__dict__ for layer in bind(model).layers())


def test_chunked_lm_loss_equals_the_model_loss_and_its_gradients():
    model = tiny_decoder("llama")
    batches = [lm_batch(model, length=12, seed=s) for s in range(2)]
    batches[1]["labels"][0, :4] = -100            # ignored positions count as in the model's own loss
    with torch.no_grad():
        for b in batches:
            torch.testing.assert_close(lm_loss(model, b, chunk_tokens=5), model(**b, use_cache=False).loss)
    plain = _grads(model, batches)
    lean = _grads(model, batches, loss_fn=lambda m, b: lm_loss(m, b, chunk_tokens=5), checkpoint_layers=True)
    for a, b in zip(plain, lean):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
