"""Long-tail analysis (paper Fig. 4): popularity groups, per-group metrics, baseline comparison, plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.evaluation.longtail import (
    assign_groups,
    equal_count_edges,
    group_ranges,
    parse_boundaries,
    popularity_report,
)
from unisrec.evaluation.metrics import metrics_from_ranks
from unisrec.models.popularity import popularity_counts


def test_equal_count_edges_known_answers():
    # ten targets, two at each popularity 0..4: five groups of two
    pop = np.repeat([0, 1, 2, 3, 4], 2)
    assert equal_count_edges(pop, 5) == [0, 1, 2, 3]
    assert group_ranges([0, 1, 2, 3], 4) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    # ties are never split: six targets at 5, two at 9, two at 20 -> cumulative 6, 8, 10;
    # cuts wanted at 2, 4, 6, 8 -> nearest values 5, 5, 5, 9 -> groups 0-5, 6-9, 10-20
    pop = np.array([5] * 6 + [9] * 2 + [20] * 2)
    edges = equal_count_edges(pop, 5)
    assert edges == [5, 9]
    assert group_ranges(edges, 20) == [(0, 5), (6, 9), (10, 20)]
    assert assign_groups(pop, edges).tolist() == [0] * 6 + [1] * 2 + [2] * 2
    # one group: no edge; every value equal: no edge
    assert equal_count_edges(pop, 1) == [] and equal_count_edges(np.full(7, 3), 4) == []


def test_boundaries_parse_and_assign():
    assert parse_boundaries("3,7,15") == [3, 7, 15]
    assert assign_groups(np.array([0, 3, 4, 7, 8, 15, 16, 99]), [3, 7, 15]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for bad in ("", "3,3", "7,3", "-1,2", "a"):
        with pytest.raises(UserError):
            parse_boundaries(bad)


def hand_made(path):
    """Six users; training parts are all but the last two items. Item 1 is bought 5 times in training
    parts, item 2 three times, item 3 once, items 4-6 never (they occur only as valid/test targets)."""
    seqs = [
        [1, 2, 9, 1],  # test target 1 (popularity 5)
        [1, 2, 8, 2],  # test target 2 (3)
        [1, 3, 9, 3],  # test target 3 (1)
        [1, 2, 8, 4],  # test target 4 (0)
        [1, 7, 5],     # test target 5 (0)
        [7, 6],        # one training item (7), test target 6 (0); no validation example
    ]
    ds = Dataset(name="hand", item_ids=[f"i{k}" for k in range(1, 10)], item_texts=[f"item {k}" for k in range(1, 10)],
                 user_ids=[f"u{k}" for k in range(len(seqs))],
                 seq_offsets=np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64),
                 seq_items=np.concatenate(seqs).astype(np.int32))
    ds.save(path)
    return Dataset.load(path)


def test_hand_made_groups_by_training_popularity(tmp_path):
    ds = hand_made(tmp_path / "hand")
    counts = popularity_counts(ds)
    assert counts[1:7].tolist() == [5, 3, 1, 0, 0, 0]  # valid/test targets (9, 8 and the last items) never count
    _, _, targets = ds.examples("test", 5)
    ranks = np.array([0, 3, 12, 60, 7, 1][: len(targets)])
    rep = popularity_report(ranks, targets, counts, ks=(1, 5), edges=[0, 2])
    assert rep["rule"] == "boundaries" and rep["edges"] == [0, 2]
    by_group = {g["group"]: g for g in rep["groups"]}
    assert [by_group[g]["popularity"] for g in (1, 2, 3)] == [[0, 0], [1, 2], [3, 5]]
    target_pop = counts[targets]
    assert by_group[1]["test_interactions"] == int((target_pop == 0).sum())
    assert by_group[2]["test_interactions"] == 1 and by_group[3]["test_interactions"] == 2
    # group 3 = targets 1 (rank 0) and 2 (rank 3): recall@1 = 1/2, recall@5 = 1
    assert by_group[3]["metrics"]["recall@1"] == 0.5 and by_group[3]["metrics"]["recall@5"] == 1.0


def test_groups_partition_users_and_recombine_to_the_overall_metric():
    rng = np.random.default_rng(0)
    n_items, n_users = 300, 2000
    counts = np.concatenate([[0], rng.zipf(1.6, n_items).clip(max=500)]).astype(float)
    targets = rng.integers(1, n_items + 1, n_users)
    ranks = rng.integers(0, 200, n_users)
    base = rng.integers(0, 200, n_users)
    rep = popularity_report(ranks, targets, counts, ks=(10, 50), n_groups=5, baseline_ranks=base)
    groups = rep["groups"]
    assert sum(g["test_interactions"] for g in groups) == n_users
    # the ranges tile 0..max without overlap, and every user's target popularity lies in its group's range
    lows, highs = [g["popularity"][0] for g in groups], [g["popularity"][1] for g in groups]
    assert lows[0] == 0 and highs[-1] == counts[targets].max() and all(h + 1 == lo for h, lo in zip(highs, lows[1:]))
    # roughly equal sizes (ties kept together)
    sizes = [g["test_interactions"] for g in groups]
    assert len(groups) >= 3 and max(sizes) < 0.5 * n_users
    for key in ("overall", "baseline_overall"):
        which = "metrics" if key == "overall" else "baseline"
        for m, v in rep[key].items():
            recombined = sum(g["test_interactions"] * g[which][m] for g in groups if g["test_interactions"]) / n_users
            assert recombined == pytest.approx(v, rel=1e-12, abs=1e-15)
    assert rep["overall"] == metrics_from_ranks(ranks, (10, 50))
    g = groups[0]
    assert g["improvement"]["recall@10"] == pytest.approx(g["metrics"]["recall@10"] / g["baseline"]["recall@10"] - 1)


def test_exposure_report_hand_computed():
    from unisrec.evaluation.longtail import exposure_report

    counts = np.array([0.0, 1, 5, 10, 20])  # training popularity of items 1-4 (0 = padding)
    exposure = np.array([0, 2, 0, 1, 1])  # item 1 in two users' lists, items 3 and 4 in one each
    e = exposure_report(exposure, counts, edges=[5])  # ranges 0-5 (items 1, 2) and 6+ (items 3, 4)
    assert e["slots"] == 4 and e["catalogue_items"] == [2, 2]
    assert e["slot_share"] == [0.5, 0.5]
    assert e["arp"] == pytest.approx((2 * 1 + 10 + 20) / 4)
    assert e["coverage"] == 0.75
    with pytest.raises(ValueError, match="catalogue of 4"):
        exposure_report(np.zeros(3), counts, [5])


def test_cli_by_popularity_json_compare_and_plot(tmp_path, capsys):
    from test_finetune import cfg, finetune, make_toy, train_sasrec

    from unisrec.cli import main
    from unisrec.evaluation.cli import evaluate_dir

    data = tmp_path / "toy"
    make_toy(data)
    finetune(data, tmp_path / "uni", cfg(mode="inductive", epochs=1))
    train_sasrec(data, tmp_path / "sas", cfg(epochs=1))
    png = tmp_path / "fig4.png"
    capsys.readouterr()  # the training output
    rc = main(["evaluate", str(tmp_path / "uni"), "--by-popularity", "--groups", "4", "--compare", str(tmp_path / "sas"),
               "--plot", str(png), "--json", "--device", "cpu"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    # the overall numbers are exactly `unisrec evaluate`'s, for the model and for the baseline
    assert rep["overall"] == evaluate_dir(str(tmp_path / "uni"), "test", (10, 50), device="cpu")
    assert rep["baseline_overall"] == evaluate_dir(str(tmp_path / "sas"), "test", (10, 50), device="cpu")
    assert sum(g["test_interactions"] for g in rep["groups"]) == rep["test_interactions"] == 240
    assert 2 <= len(rep["groups"]) <= 4 and rep["rule"] == "equal-count"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the exposure of both models: every test user's 10 slots, shared out over the same ranges
    for key in ("exposure", "baseline_exposure"):
        assert rep[key]["slots"] == 10 * 240 and sum(rep[key]["slot_share"]) == pytest.approx(1.0)
        assert len(rep[key]["slot_share"]) == len(rep["groups"]) and 0 < rep[key]["coverage"] <= 1
    # the text table names the groups and the improvement column
    assert main(["evaluate", str(tmp_path / "uni"), "--by-popularity", "--boundaries", "20,40", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "0-20" in text and "21-40" in text and "given boundaries" in text
    assert "exposure: share of all top-10 slots" in text and "ARP" in text
