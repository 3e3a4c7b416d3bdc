"""Chronological per-user ordering with a deterministic tie-break, and the CSR sequence layout."""

from __future__ import annotations

import numpy as np


TIE_ORDERS = ("input-order", "shuffle")


def chronological_order(users: np.ndarray, times: np.ndarray, shuffle_seed: int | None = None) -> np.ndarray:
    """Row indices sorted by (user, time), ties broken by original row order.

    ``np.lexsort`` is a stable sort, so rows with equal (user, time) keep their input order: the
    deterministic tie-break docs/protocol.md "Data protocol" asks for (the release sorted a Python ``set``, so its order of
    same-time items changed from run to run). With ``shuffle_seed`` ties get a random order that
    the seed fixes: the release's protocol, made repeatable. It matters where whole sequences
    share one time, as Online Retail's invoices do: there the input order (the order the lines
    were keyed in) is itself a strong signal that the shuffled order hides.
    """
    if shuffle_seed is None:
        return np.lexsort((times, users))
    noise = np.random.default_rng(shuffle_seed).permutation(len(users))
    return np.lexsort((noise, times, users))


def renumber_first_seen(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense new codes 0..k-1 numbered by first appearance in ``codes``.

    Returns (new code of each element, original code of each new code).
    """
    uniq, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.argsort(first, kind="stable")  # new code -> position in uniq
    new_of_uniq = np.empty_like(rank)
    new_of_uniq[rank] = np.arange(len(rank))
    return new_of_uniq[inverse.reshape(-1)], uniq[rank]


def build_sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray, shuffle_seed: int | None = None):
    """Turn kept interactions into the dataset's CSR sequences.

    ``users``: user codes whose numeric order is the user order wanted in the dataset (e.g. order of
    first appearance in the input). Returns ``(user_codes, item_codes, offsets, seq_items)``:
    the original user code of each dataset user, the original item code of each dataset item (item
    index k+1 <-> ``item_codes[k]``; items are numbered by first appearance in the ordered sequences,
    as the release numbers them), CSR offsets (int64) and 1-based item indices (int32).
    """
    order = chronological_order(users, times, shuffle_seed)
    u_sorted, i_sorted = users[order], items[order]
    user_new, user_codes = renumber_first_seen(u_sorted)
    item_new, item_codes = renumber_first_seen(i_sorted)
    offsets = np.zeros(len(user_codes) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_new, minlength=len(user_codes)), out=offsets[1:])
    return user_codes, item_codes, offsets, (item_new + 1).astype(np.int32)
