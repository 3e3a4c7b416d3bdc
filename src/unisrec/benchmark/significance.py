"""Per-user metrics and the paired t-test behind Table 3's "*" (docs/benchmark.md "Significance").

The paper (Table 3 caption): "'*' denotes that the improvements are significant at the level of
0.01 with paired t-test". Here the pairs are the test users: each user has one value of a metric
under model A and one under model B (full ranking, one target per user), and the test asks whether
the mean per-user difference is above zero.

Direction: H1 is "the better model is higher", so the model with the higher mean goes first and
the test is one-sided with ``alternative="greater"``. RecBole's ``significance_test.py`` calls
``ttest_rel(ours, baseline, alternative="less")`` for higher-is-better metrics, which tests
"ours is *lower*" -- the opposite hypothesis; this module does not copy that.

Seeds: a model trained with several seeds contributes, per user, the mean of that user's value over
its seeds (so the pairs stay the test users; a model with more seeds is not favoured by more pairs).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from unisrec.errors import UserError


def per_user_metric(ranks: Any, metric: str) -> np.ndarray:
    """One value per user of ``metric`` (``recall@K`` or ``ndcg@K``) from 0-based target ranks.

    Recall@K (= hit@K with one target per user) is 1 if rank < K; NDCG@K is 1/log2(rank + 2) if
    rank < K, else 0 -- the per-user terms whose mean is ``unisrec.evaluation.metrics.metrics_from_ranks``."""
    kind, _, k_text = metric.partition("@")
    if kind not in ("recall", "ndcg") or not k_text.isdigit():
        raise ValueError(f"metric must be recall@K or ndcg@K, got {metric!r}")
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    hit = r < int(k_text)
    return hit.astype(np.float64) if kind == "recall" else np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)


def seed_averaged(rank_arrays: Sequence[Any], metric: str) -> np.ndarray:
    """Per-user ``metric`` averaged over a model's seeds (one ranks array per seed, same users)."""
    if not rank_arrays:
        raise ValueError("no ranks")
    values = [per_user_metric(r, metric) for r in rank_arrays]
    if len({len(v) for v in values}) != 1:
        raise UserError(f"the seeds' rank files hold different numbers of users ({sorted({len(v) for v in values})})")
    return np.mean(values, axis=0)


def paired_ttest_greater(better: np.ndarray, worse: np.ndarray) -> tuple[float, float]:
    """(t, one-sided p) of the paired t-test with H1: mean(better - worse) > 0.

    t = mean(d) / (sd(d) / sqrt(n)) with d = better - worse and sd the sample standard deviation
    (n - 1); p = P(T_{n-1} >= t). Uses ``scipy.stats.ttest_rel(better, worse, alternative="greater")``.
    All differences zero (identical models): t = 0, p = 1 (no evidence either way)."""
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - scipy ships with the package's dependencies
        raise UserError("significance tests need scipy (pip install scipy)") from None
    better, worse = np.asarray(better, np.float64), np.asarray(worse, np.float64)
    if better.shape != worse.shape or better.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of the same length, got {better.shape} and {worse.shape}")
    if len(better) < 2:
        raise ValueError("a paired t-test needs at least 2 pairs")
    d = better - worse
    if not np.any(d != d[0]):  # constant differences: sd = 0
        if d[0] == 0:
            return 0.0, 1.0
        return (math.inf, 0.0) if d[0] > 0 else (-math.inf, 1.0)
    res = stats.ttest_rel(better, worse, alternative="greater")
    return float(res.statistic), float(res.pvalue)


def compare(label_a: str, values_a: np.ndarray, label_b: str, values_b: np.ndarray, alpha: float = 0.01) -> dict[str, Any]:
    """Paired test between two models' per-user values, oriented so the higher mean is "better".

    Returns ``{"better", "worse", "mean_better", "mean_worse", "t", "p", "n_users", "significant"}``
    where ``significant`` = p < ``alpha`` (the paper's 0.01)."""
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    if len(a) != len(b):
        raise UserError(f"{label_a} and {label_b} were tested on different users ({len(a)} vs {len(b)}); same dataset?")
    if a.mean() >= b.mean():
        better, worse, vb, vw = label_a, label_b, a, b
    else:
        better, worse, vb, vw = label_b, label_a, b, a
    t, p = paired_ttest_greater(vb, vw)
    return {"better": better, "worse": worse, "mean_better": float(vb.mean()), "mean_worse": float(vw.mean()),
            "t": t, "p": p, "n_users": int(len(a)), "significant": bool(p < alpha)}
