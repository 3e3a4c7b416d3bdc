"""UniSRec network: adaptor shapes and gates, training-only noise, masking, causal attention."""

import torch

from unisrec.models.adaptor import MoEAdaptor
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.unisrec import UniSRec, UniSRecConfig


def small(mode="inductive", n_items=12, text_dim=10):
    torch.manual_seed(0)
    cfg = config_from_dict(UniSRecConfig, dict(text_dim=text_dim, hidden_size=16, inner_size=16, n_experts=3, mode=mode, num_items=n_items, max_seq_length=8))
    m = UniSRec(cfg)
    feats = torch.randn(n_items + 1, text_dim)
    feats[0] = 0
    m.set_item_features(feats)
    return m


def test_adaptor_shapes_and_gates_sum_to_one():
    torch.manual_seed(0)
    ad = MoEAdaptor(text_dim=10, hidden_size=7, n_experts=4)
    with torch.no_grad():
        ad.w_gate.normal_()
        ad.w_noise.normal_()
    x = torch.randn(3, 5, 10)
    assert ad(x).shape == (3, 5, 7)
    for mode in (True, False):
        ad.train(mode)
        g = ad.gate(x)
        assert g.shape == (3, 5, 4)
        torch.testing.assert_close(g.sum(-1), torch.ones(3, 5))
        assert (g >= 0).all()


def test_whitening_computed_as_xw_minus_bw_is_eq2_values_and_gradients():
    """ParametricWhitening computes dropout(x) W - b W; it must equal Eq. (2) (x - b) W, with the same
    gradients for W and b (dropout off so both formulas see the same input)."""
    from unisrec.models.adaptor import ParametricWhitening

    torch.manual_seed(3)
    pw = ParametricWhitening(12, 5, dropout=0.0).train()
    torch.nn.init.normal_(pw.bias, std=0.5)
    x = torch.randn(40, 12)
    out = pw(x)
    ref = (x - pw.bias) @ pw.linear.weight.T
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn_like(out)
    gw, gb = torch.autograd.grad((out * g).sum(), [pw.linear.weight, pw.bias])
    rw, rb = torch.autograd.grad((((x - pw.bias) @ pw.linear.weight.T) * g).sum(), [pw.linear.weight, pw.bias])
    assert torch.allclose(gw, rw, atol=1e-5) and torch.allclose(gb, rb, atol=1e-5) and gb.abs().sum() > 0


def test_noise_only_in_training():
    torch.manual_seed(0)
    ad = MoEAdaptor(text_dim=10, hidden_size=7, n_experts=4, dropout=0.0)
    with torch.no_grad():
        ad.w_gate.normal_()
        ad.w_noise.normal_()
    x = torch.randn(6, 10)
    ad.eval()
    torch.testing.assert_close(ad.gate(x), ad.gate(x))
    torch.testing.assert_close(ad(x), ad(x))
    ad.train()
    assert not torch.allclose(ad.gate(x), ad.gate(x))


def test_padding_never_recommended_and_scores_cover_catalogue():
    for mode in ("inductive", "transductive"):
        m = small(mode).eval()
        seq = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])
        logits = m(seq, torch.tensor([3, 1]))
        assert logits.shape == (2, 13)
        assert torch.isneginf(logits[:, 0]).all() and torch.isfinite(logits[:, 1:]).all()
        assert (logits.argmax(1) != 0).all()
        # cosine / temperature is bounded by 1 / 0.07
        assert logits[:, 1:].abs().max() <= 1 / 0.07 + 1e-4


def test_causal_attention_and_padding_do_not_leak():
    m = small().eval()
    table = m.item_representations()
    seq = torch.tensor([[1, 2, 3, 4, 5]])
    out = m.encoder.forward_all(table[seq], torch.tensor([5]))
    changed = seq.clone()
    changed[0, 3] = 9  # a later item
    out2 = m.encoder.forward_all(table[changed], torch.tensor([5]))
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3], out2[:, 3])
    # whatever sits in padding positions does not change the sequence representation
    a = m.sequence_representation(torch.tensor([[1, 2, 0, 0]]), torch.tensor([2]))
    b = m.sequence_representation(torch.tensor([[1, 2, 7, 8]]), torch.tensor([2]))
    torch.testing.assert_close(a, b)
    # and a shorter width (batch padded to its longest) gives the same result
    c = m.sequence_representation(torch.tensor([[1, 2]]), torch.tensor([2]))
    torch.testing.assert_close(a, c)


def test_gathered_item_table_equals_per_position_adaptation():
    m = small("transductive").eval()
    seq = torch.tensor([[3, 1, 2, 0], [5, 6, 0, 0]])
    lens = torch.tensor([3, 2])
    table = m.item_representations()
    torch.testing.assert_close(m.sequence_representation(seq, lens, table), m.sequence_representation(seq, lens))


def test_freeze_for_transfer_leaves_adaptor_and_norm_trainable():
    m = small("transductive")
    m.freeze_for_transfer()
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("encoder.layers", "encoder.position_embedding")) for n in frozen)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any(n.startswith("adaptor") for n in trainable)
    assert "encoder.norm.weight" in trainable and "item_id_embedding.weight" in trainable


def test_item_table_from_features_equals_item_representations():
    """Serving's chunked item table is the model's own Eq. (3)/(12), for both modes and any chunk."""
    for mode in ("inductive", "transductive"):
        m = small(mode=mode).eval()
        with torch.no_grad():
            ref = m.item_representations()
        feats = m.item_features.numpy()
        for chunk in (1, 5, 1000):
            torch.testing.assert_close(m.item_table_from_features(feats, chunk=chunk), ref)
        if mode == "transductive":  # a row marked -1 (a new item) gets no ID embedding
            ids = torch.arange(feats.shape[0])
            ids[3] = -1
            got = m.item_table_from_features(feats, item_ids=ids)
            torch.testing.assert_close(got[3], m.adaptor(m.item_features[3:4])[0])
