"""Iterative k-core filtering of an interaction list (docs/protocol.md "Data protocol")."""

from __future__ import annotations

import numpy as np


def kcore_filter(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> tuple[np.ndarray, int]:
    """Keep-mask of the interactions that survive the (min_user, min_item)-core, and the rounds taken.

    Each round drops every interaction whose user has fewer than ``min_user`` or whose item has fewer
    than ``min_item`` interactions among those still kept (both sides at once, as the release does),
    until a round drops nothing: a fixed point, so every kept user and item meets its threshold.
    ``users``/``items`` are dense non-negative integer codes; counting is ``np.bincount``.
    """
    keep = np.ones(len(users), dtype=bool)
    if len(users) == 0 or (min_user <= 1 and min_item <= 1):
        return keep, 0
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    rounds = 0
    while True:
        rounds += 1
        u, i = users[keep], items[keep]
        user_ok = np.bincount(u, minlength=n_users) >= min_user
        item_ok = np.bincount(i, minlength=n_items) >= min_item
        ok = user_ok[u] & item_ok[i]
        if ok.all():
            return keep, rounds
        kept_rows = np.flatnonzero(keep)
        keep[kept_rows[~ok]] = False
