"""The synthetic multi-domain default: deterministic, well-formed, and carrying the promised patterns."""

import csv
import hashlib

import numpy as np
import pytest

from unisrec.data.synthetic import BRANDS, THEMES, domain_roles, generate_synthetic


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.csv"))}


def read(folder):
    with open(folder / "items.csv", newline="") as fh:
        items = list(csv.DictReader(fh))
    with open(folder / "interactions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return items, rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return root, generate_synthetic(root, seed=0, tiny=True)


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    root, dirs = tiny
    again = generate_synthetic(tmp_path / "a", seed=0, tiny=True)
    other = generate_synthetic(tmp_path / "b", seed=1, tiny=True)
    for name in dirs:
        assert digest(dirs[name]) == digest(again[name])
        assert digest(dirs[name]) != digest(other[name])


def test_tables_have_the_prepare_table_columns(tiny):
    _, dirs = tiny
    assert list(dirs) == list(domain_roles(tiny=True))
    assert "target" in domain_roles(tiny=True).values()
    all_ids = set()
    for folder in dirs.values():
        items, rows = read(folder)
        assert list(items[0]) == ["item_id", "text"] and list(rows[0]) == ["user_id", "item_id", "timestamp"]
        ids = {r["item_id"] for r in items}
        assert len(ids) == len(items) and not (ids & all_ids)  # unique, and distinct across domains
        all_ids |= ids
        assert len({r["text"] for r in items}) == len(items)
        assert {r["item_id"] for r in rows} <= ids
        ts = np.array([int(r["timestamp"]) for r in rows])
        assert (np.diff(ts) >= 0).all()  # a log in time order
        pairs = {(r["user_id"], r["item_id"]) for r in rows}
        assert len(pairs) == len(rows)  # nobody buys the same item twice
        per_user = np.unique([r["user_id"] for r in rows], return_counts=True)[1]
        assert per_user.min() >= 5  # survives the default 5-core on users


def _sequences(folder):
    items, rows = read(folder)
    text = {r["item_id"]: r["text"] for r in items}
    seqs = {}
    for r in rows:  # rows are in time order
        seqs.setdefault(r["user_id"], []).append(text[r["item_id"]])
    return seqs


def theme_of(text):
    return next(k for k, (colour, motif) in enumerate(THEMES) if f" {colour} {motif} " in text)


def brand_of(text):
    return text.rsplit(". ", 1)[1].rstrip(".")


def test_texts_read_like_products():
    # the default catalogue, not the tiny one: every text is "Brand theme material noun. Category path. Brand."
    from unisrec.data.synthetic import DEFAULT_DOMAINS, domain_seed, make_items

    spec = DEFAULT_DOMAINS[0]
    items = make_items(spec, domain_seed(0, spec.folder))
    for t in items["text"][:50]:
        assert t.count(". ") == 2 and t.endswith(".")
        assert t.split(" ")[0] in BRANDS and brand_of(t) == t.split(" ")[0]
        assert spec.category in t
        theme_of(t)  # has exactly a known theme phrase


def modal_share(brand_seqs):
    """Mean over users of the share of their purchases from their most frequent brand."""
    return float(np.mean([np.unique(b, return_counts=True)[1].max() / len(b) for b in brand_seqs]))


def test_sequences_follow_the_cross_domain_rules(tmp_path):
    """The theme cycle and brand loyalty are there in every default domain, far above chance."""
    dirs = generate_synthetic(tmp_path, seed=0)  # the default sizes (well under a second)
    rng = np.random.default_rng(0)
    for folder in dirs.values():
        advance = total = 0
        brands = []
        for seq in _sequences(folder).values():
            th = [theme_of(t) for t in seq]
            advance += sum((b - a) % len(THEMES) == 1 for a, b in zip(th, th[1:]))
            total += len(seq) - 1
            brands.append([brand_of(t) for t in seq])
        assert advance / total > 4 / len(THEMES)  # chance: 1 / 10
        # loyalty: compare with the same users' purchases with brands shuffled across the domain
        flat = np.concatenate(brands)
        cuts = np.cumsum([len(b) for b in brands])[:-1]
        shuffled = np.split(rng.permutation(flat), cuts)
        assert modal_share(brands) > modal_share(shuffled) + 0.1
