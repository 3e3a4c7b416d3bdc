"""models.encoder.attention: the written-out CPU training path is scaled_dot_product_attention's function."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unisrec.models import encoder
from unisrec.models.encoder import attention, causal_padding_mask, padding_mask


def _inputs(seed: int, b: int = 6, h: int = 2, l: int = 9, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, l, d, generator=g, requires_grad=True) for _ in range(3))
    lengths = torch.tensor([1, 3, 9, 5, 2, 7][:b])
    return q, k, v, lengths


@pytest.mark.parametrize("causal", [True, False])
def test_written_out_path_equals_the_fused_call_in_values_and_gradients(monkeypatch, causal):
    # dropout as the identity: what is left is the attention function itself
    monkeypatch.setattr(encoder, "dropout", lambda x, p: x)
    q, k, v, lengths = _inputs(0)
    mask = causal_padding_mask(lengths, 9) if causal else padding_mask(lengths, 9)
    ours = attention(q, k, v, mask, dropout_p=0.5)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
    # under bfloat16 autocast the output keeps the inputs' dtype and stays near the float32 values
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, dropout_p=0.5)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=3e-2, atol=3e-2)


def test_dropout_keeps_the_expectation_and_masked_keys_get_nothing():
    q, k, v, lengths = _inputs(1)
    mask = causal_padding_mask(lengths, 9)
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).detach()
    torch.manual_seed(0)
    draws = torch.stack([attention(q, k, v, mask, dropout_p=0.5).detach() for _ in range(3000)])
    assert not torch.equal(draws[0], draws[1])  # dropout is on
    # E[dropout(w)] = w: the mean of 3,000 draws is within a few standard errors of the exact output
    err = (draws.mean(0) - exact).abs().max()
    assert float(err) < 6 * float(draws.std(0).max()) / 3000**0.5
    # a masked key (after the query, or padding) has no influence, dropout or not: change them all
    allowed = mask.expand(6, 2, 9, 9)
    masked_any = ~allowed.any(dim=2, keepdim=True).transpose(-1, -2)  # keys no query may attend: padding
    k2 = torch.where(masked_any, torch.randn_like(k) * 100, k)
    v2 = torch.where(masked_any, torch.randn_like(v) * 100, v)
    torch.manual_seed(5)
    a = attention(q, k, v, mask, dropout_p=0.5)
    torch.manual_seed(5)
    b = attention(q, k2, v2, mask, dropout_p=0.5)
    torch.testing.assert_close(a, b)
    # and gradients reach no value row a query may not attend
    (gv,) = torch.autograd.grad(a.sum(), (v,))
    assert torch.all(gv[masked_any.expand_as(gv)] == 0)


def test_causal_training_output_never_depends_on_later_items():
    # the encoder in training mode (dropout on, written-out path): output j is a function of items 0..j
    torch.manual_seed(3)
    enc = encoder.SequenceEncoder(encoder.EncoderConfig(hidden_size=16, n_heads=2, inner_size=24, max_seq_length=8))
    enc.train()
    x = torch.randn(3, 8, 16)
    lengths = torch.tensor([8, 8, 8])
    later = x.clone()
    later[:, 5:] = torch.randn(3, 3, 16)
    torch.manual_seed(9)
    a = enc.forward_all(x, lengths)
    torch.manual_seed(9)
    b = enc.forward_all(later, lengths)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])
