"""models.dropout: torch's dropout distribution from cheaper CPU masks (see its module docstring)."""
from __future__ import annotations

import pytest
import torch
from scipy import stats

from unisrec.models.dropout import LANES, Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_drop_share_and_scale_match_p_and_keep_the_expectation(p):
    torch.manual_seed(0)
    n = 2_000_000
    y = dropout(torch.ones(n), p)
    dropped = int((y == 0).sum())
    k = round(p * LANES)
    assert abs(k / LANES - p) < 1e-5
    # the dropped count is Binomial(n, k / LANES): two-sided test at 1e-4 (a wrong threshold or a biased lane fails)
    assert stats.binomtest(dropped, n, k / LANES).pvalue > 1e-4
    kept = y[y != 0]
    assert torch.all(kept == LANES / (LANES - k))  # one scale for every kept element, E[y] = 1 exactly
    assert abs(float(y.double().mean()) - 1.0) < 5 * (p / (1 - p) / n) ** 0.5


def test_neighbouring_elements_are_dropped_independently():
    # the four lanes of one 64-bit word must not move together: P(both of a pair dropped) = p^2
    torch.manual_seed(1)
    d = (dropout(torch.ones(4_000_000), 0.5) == 0).view(-1, 4)
    for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
        both = int((d[:, a] & d[:, b]).sum())
        assert stats.binomtest(both, d.shape[0], 0.25).pvalue > 1e-4


def test_gradient_is_the_mask_times_the_scale_and_eval_is_the_identity():
    torch.manual_seed(2)
    x = torch.randn(64, 50, 30, requires_grad=True)
    y = dropout(x, 0.5)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (y != 0).float() * 2.0)
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert dropout(x, 0.0) is x


def test_same_seed_same_masks_and_dtype_kept():
    x = torch.randn(300, 384).to(torch.bfloat16)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    b = dropout(x, 0.2)
    assert torch.equal(a, b) and a.dtype == torch.bfloat16
    assert not torch.equal(a, dropout(x, 0.2))  # the generator moved on


def test_a_module_that_trained_with_it_has_the_same_state_dict_keys():
    from unisrec.models.adaptor import MoEAdaptor

    keys = set(MoEAdaptor(384, 300).state_dict())
    assert not any("dropout" in k for k in keys)
