"""Known-answer tests of the prepare building blocks: cleaning, k-core, ordering, de-duplication."""

import random
from collections import defaultdict

import numpy as np

from unisrec.data.build import duplicate_rows
from unisrec.data.cleaning import amazon_item_text, clean_field, is_empty_text, online_retail_text
from unisrec.data.kcore import kcore_filter
from unisrec.data.records import LineMap
from unisrec.data.sequences import build_sequences, chronological_order


def test_clean_field_known_answers():
    assert clean_field('Foo &amp; "Bar"\nBaz\r') == "Foo & BarBaz."
    assert clean_field("Sanding Roll...") == "Sanding Roll."
    assert clean_field("no dot") == "no dot."
    assert clean_field(["Industrial & Scientific", "Lab"]) == "Industrial & Scientific Lab."
    assert clean_field("") == "."  # the release turns an empty field into "."
    assert clean_field("&quot;quoted&quot; 5&#39;&#39;") == "quoted 5''."


def test_clean_field_2000_char_rule():
    # the release empties a field whose cleaned form (final "." included) reaches 2,000 characters
    assert clean_field("a" * 1998) == "a" * 1998 + "."
    assert clean_field("a" * 1999) == ""
    assert clean_field("a" * 1999 + "....") == ""


def test_amazon_item_text_fields_and_order():
    rec = {"brand": "PORTER-CABLE", "title": "Roll, 80 Grit..", "category": ["Industrial", "Abrasives"], "price": "$3"}
    assert amazon_item_text(rec) == "Roll, 80 Grit. Industrial Abrasives. PORTER-CABLE."
    # a missing field is left out; an empty one gives "." (as in the release's Scientific.text)
    assert amazon_item_text({"title": "T", "category": [], "brand": "B"}) == "T. . B."
    assert amazon_item_text({"title": "T"}) == "T."
    assert is_empty_text(amazon_item_text({"category": [], "brand": ""}))
    assert not is_empty_text("T.")


def test_online_retail_text():
    assert online_retail_text("  WHITE HANGING Heart T-LIGHT HOLDER ") == "white hanging heart t-light holder."


def test_kcore_needs_several_rounds():
    #            u0-a u0-b u1-a u1-b u2-b u2-c u3-c
    users = np.array([0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 0, 1, 1, 2, 2])
    keep, rounds = kcore_filter(users, items, 2, 2)
    # round 1 drops u3 (1 item); then c has 1 user -> u2-c goes; then u2 has 1 item -> u2-b goes
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert rounds == 4  # three rounds that drop something + the round that confirms the fixed point


def _kcore_reference(pairs, k_user, k_item):
    """The release's dictionary-based algorithm, to cross-check the vectorised one."""
    inters = list(pairs)
    while True:
        uc, ic = defaultdict(int), defaultdict(int)
        for u, i in inters:
            uc[u] += 1
            ic[i] += 1
        new = [(u, i) for u, i in inters if uc[u] >= k_user and ic[i] >= k_item]
        if len(new) == len(inters):
            return set(new)
        inters = new


def test_kcore_matches_reference_on_random_data():
    rng = random.Random(0)
    pairs = [(rng.randrange(60), int(rng.paretovariate(1.2)) % 80) for _ in range(900)]
    users, items = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    keep, _ = kcore_filter(users, items, 5, 4)
    got = {(int(u), int(i)) for u, i in zip(users[keep], items[keep])}
    assert got == _kcore_reference(pairs, 5, 4)
    assert len(got) > 0
    uc = np.bincount(users[keep]); ic = np.bincount(items[keep])
    assert uc[uc > 0].min() >= 5 and ic[ic > 0].min() >= 4


def test_ties_broken_by_input_row_order():
    users = np.array([1, 0, 0, 0, 1])
    times = np.array([5, 7, 3, 7, 5])
    assert chronological_order(users, times).tolist() == [2, 1, 3, 0, 4]


def test_shuffled_ties_keep_time_order_and_repeat_for_a_seed():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 5, size=400)
    times = rng.integers(0, 4, size=400)  # many ties
    a = chronological_order(users, times, shuffle_seed=7)
    assert sorted(a.tolist()) == list(range(400))
    key = users[a] * 10 + times[a]
    assert np.all(np.diff(key) >= 0)  # still ordered by (user, time)
    assert a.tolist() == chronological_order(users, times, shuffle_seed=7).tolist()
    assert a.tolist() != chronological_order(users, times, shuffle_seed=8).tolist()
    assert a.tolist() != chronological_order(users, times).tolist()
    # no ties: every seed gives the one chronological order
    t = np.arange(400)[::-1]
    assert chronological_order(users, t, shuffle_seed=3).tolist() == chronological_order(users, t).tolist()


def test_build_sequences_numbers_items_by_first_appearance():
    users = np.array([0, 1, 0, 1, 0])
    items = np.array([7, 9, 8, 7, 7])
    times = np.array([1, 1, 2, 0, 3])
    user_codes, item_codes, offsets, seq = build_sequences(users, items, times)
    assert user_codes.tolist() == [0, 1]
    assert item_codes.tolist() == [7, 8, 9]  # user 0: 7, 8, 7; user 1: 7 (t=0), 9
    assert offsets.tolist() == [0, 3, 5]
    assert seq.tolist() == [1, 2, 1, 1, 3]


def test_duplicate_rows_keeps_first():
    a = np.array([1, 2, 1, 1, 2])
    b = np.array([5, 5, 5, 6, 5])
    dup, earlier = duplicate_rows([a, b])
    assert dup.tolist() == [False, False, True, False, True]
    assert earlier[2] == 0 and earlier[4] == 1


def test_line_map_skips_bad_lines():
    m = LineMap(header=1, skipped=[3, 4, 7])
    # data rows live on lines 2, 5, 6, 8, ...
    assert [m.line(k) for k in range(4)] == [2, 5, 6, 8]
