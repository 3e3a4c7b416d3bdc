"""A small SYNTHETIC multi-domain shop, generated deterministically: the offline default.

Nothing here is real data. It exists so that `unisrec quickstart` (and the tests) can run the whole
pipeline -- prepare, encode, pre-train on source domains, fine-tune on a target domain -- on a
fresh machine with no download, and so that transfer through item text is *visible*.

What is generated, per domain (one folder each, in the raw format ``unisrec prepare table`` reads):

- ``items.csv``  (item_id, text): Amazon-like texts "title. categories. brand." such as
  ``"Acme blue wave ceramic dog bowl. Pet Supplies Dogs Feeding. Acme."``.
- ``interactions.csv`` (user_id, item_id, timestamp): one row per purchase, unix seconds.

How users behave -- the same rules in every domain, expressed only through words that every domain
shares, so a model pre-trained on the source domains can carry them to the target through the text:

- Every item has a *theme*: a colour + motif word pair ("blue wave", "green pine", ...). Themes form
  a fixed cycle; from one purchase to the next a user advances to the next theme of the cycle
  (``P_ADVANCE``), stays on the same theme (``P_STAY``) or returns to their own favourite theme.
- Every user is loyal to one *brand* (brands sell in every domain): with ``P_BRAND`` the next item
  is of that brand (when the domain has one of that theme), otherwise any brand.
- Within these constraints items are drawn by a Zipf popularity, so popularity alone is a weak
  baseline; a user never buys the same item twice.
The product words (dog bowl, frying pan, tent, notebook) differ per domain: only themes and
brands carry across. The target domain ("Office Products") has few users, so a model trained on it
from scratch sees little data, while one pre-trained on the three large source domains has
already learned the cycle and the loyalty.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------ vocabulary
# Cycle order matters: a user's next theme is usually the next one in this list (wrapping around).
THEMES = (
    ("blue", "wave"),
    ("green", "pine"),
    ("orange", "sunset"),
    ("white", "snowflake"),
    ("purple", "galaxy"),
    ("red", "cherry"),
    ("black", "midnight"),
    ("yellow", "daisy"),
    ("pink", "flamingo"),
    ("brown", "desert"),
)
BRANDS = ("Acme", "Northwind", "Zenith", "Bluebird", "Oakridge", "Sparrow", "Lumina", "Ironclad")
MATERIALS = (
    "ceramic", "stainless steel", "cotton", "bamboo", "silicone", "plastic",
    "leather", "wooden", "canvas", "glass", "nylon", "wool",
)
# domain -> ((category path, (product nouns ...)), ...)
CATALOGUES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "Pet Supplies": (
        ("Dogs Feeding", ("dog bowl", "dog food container", "slow feeder")),
        ("Dogs Toys", ("dog chew toy", "dog rope toy", "fetch ball")),
        ("Dogs Collars", ("dog collar", "dog leash", "dog harness")),
        ("Cats Toys", ("cat feather wand", "cat scratching post", "cat tunnel")),
        ("Cats Litter", ("cat litter box", "litter mat", "litter scoop")),
        ("Fish Aquariums", ("aquarium", "aquarium filter", "fish net")),
        ("Birds Cages", ("bird cage", "bird perch", "bird feeder")),
    ),
    "Home & Kitchen": (
        ("Kitchen Cookware", ("frying pan", "saucepan", "dutch oven")),
        ("Kitchen Utensils", ("spatula", "whisk", "ladle")),
        ("Kitchen Storage", ("storage jar", "bread box", "spice rack")),
        ("Bedding", ("pillow", "duvet cover", "throw blanket")),
        ("Bath", ("bath towel", "bath mat", "shower curtain")),
        ("Home Decor", ("vase", "scented candle", "wall clock", "picture frame")),
    ),
    "Sports & Outdoors": (
        ("Camping", ("tent", "sleeping bag", "camping lantern", "camp chair")),
        ("Fitness", ("yoga mat", "dumbbell", "resistance band", "jump rope")),
        ("Cycling", ("bike helmet", "water bottle", "cycling gloves")),
        ("Water Sports", ("swim goggles", "beach towel", "kayak paddle")),
    ),
    "Office Products": (
        ("Writing", ("fountain pen", "notebook", "pencil case")),
        ("Desk Accessories", ("desk organizer", "desk lamp", "mouse pad")),
        ("Paper", ("sticky notes", "daily planner", "envelope set")),
        ("Bags", ("backpack", "laptop sleeve", "messenger bag")),
    ),
}


@dataclass(frozen=True)
class DomainSpec:
    folder: str  # output folder name, also the prefix of raw ids
    category: str  # key of CATALOGUES
    n_users: int
    n_items: int
    role: str  # "source" (pre-training) or "target" (fine-tuning)


# Sizes of the default: three large source domains and a small target, so that transfer matters.
DEFAULT_DOMAINS = (
    DomainSpec("pets", "Pet Supplies", 1000, 200, "source"),
    DomainSpec("home", "Home & Kitchen", 1000, 200, "source"),
    DomainSpec("sports", "Sports & Outdoors", 1000, 200, "source"),
    DomainSpec("office", "Office Products", 150, 120, "target"),
)
# A few-second version for tests and smoke runs.
TINY_DOMAINS = (
    DomainSpec("pets", "Pet Supplies", 150, 50, "source"),
    DomainSpec("home", "Home & Kitchen", 150, 50, "source"),
    DomainSpec("office", "Office Products", 80, 40, "target"),
)

# ------------------------------------------------------------- behaviour knobs
P_ADVANCE = 0.7  # next theme = successor in the cycle
P_STAY = 0.15  # next theme = same theme; otherwise (0.15) the user's favourite theme
P_BRAND = 0.75  # next item from the user's favourite brand (if the domain has one in that theme)
MIN_LEN, MEAN_EXTRA_LEN, MAX_LEN = 5, 5.0, 30  # sequence length = MIN_LEN + geometric, capped
ZIPF_ITEMS = 0.8  # item popularity exponent within a theme
START_TIME = 1_500_000_000  # 2017-07-14, unix seconds


def domain_seed(seed: int, folder: str) -> np.random.Generator:
    """A generator per (seed, domain) so that domains do not depend on each other's sizes."""
    return np.random.default_rng([seed, *folder.encode()])


def make_items(spec: DomainSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The domain's catalogue: unique (product, theme, brand, material) combinations with text."""
    products = [(cat, noun) for cat, nouns in CATALOGUES[spec.category] for noun in nouns]
    n_combos = len(products) * len(THEMES) * len(BRANDS) * len(MATERIALS)
    if spec.n_items > n_combos:
        raise ValueError(f"{spec.folder}: at most {n_combos} distinct items")
    # every theme gets the same number of items (+-1), so the cycle is never blocked
    theme = np.arange(spec.n_items) % len(THEMES)
    rng.shuffle(theme)
    combo = rng.choice(n_combos // len(THEMES), size=spec.n_items, replace=False)
    # combos are unique per theme only; re-draw until (theme, combo) pairs are unique overall
    key = theme * n_combos + combo
    while len(np.unique(key)) < len(key):
        dup = np.ones(len(key), bool)
        dup[np.unique(key, return_index=True)[1]] = False
        combo[dup] = rng.choice(n_combos // len(THEMES), size=int(dup.sum()))
        key = theme * n_combos + combo
    product, rest = np.divmod(combo, len(BRANDS) * len(MATERIALS))
    brand, material = np.divmod(rest, len(MATERIALS))
    prefix = spec.folder[:3].upper()
    ids = np.array([f"{prefix}{k:05d}" for k in range(1, spec.n_items + 1)])
    texts = []
    for p, t, b, m in zip(product, theme, brand, material):
        cat, noun = products[p]
        colour, motif = THEMES[t]
        texts.append(f"{BRANDS[b]} {colour} {motif} {MATERIALS[m]} {noun}. {spec.category} {cat}. {BRANDS[b]}.")
    # popularity: a Zipf weight from a random rank, so popular items are spread over themes
    popularity = 1.0 / (1.0 + rng.permutation(spec.n_items)) ** ZIPF_ITEMS
    return {"item_id": ids, "text": np.array(texts), "theme": theme, "brand": brand, "popularity": popularity}


def _group_sampler(groups: np.ndarray, weights: np.ndarray, n_groups: int):
    """Vectorised weighted sampling of one item per row from a given group (inverse CDF).

    Returns ``sample(group_per_row, uniforms) -> item index`` and the number of items per group.
    """
    order = np.argsort(groups, kind="stable")
    cum = np.cumsum(weights[order])
    counts = np.bincount(groups, minlength=n_groups)
    ends = np.cumsum(counts)
    starts = ends - counts
    lo = np.where(counts > 0, np.concatenate([[0.0], cum])[starts], 0.0)
    hi = np.where(counts > 0, cum[np.maximum(ends - 1, 0)], 0.0)

    def sample(group: np.ndarray, u: np.ndarray) -> np.ndarray:
        target = lo[group] + u * (hi[group] - lo[group])
        pos = np.searchsorted(cum, target, side="right")
        pos = np.clip(pos, starts[group], ends[group] - 1)
        return order[pos]

    return sample, counts


def make_sequences(spec: DomainSpec, items: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user index per purchase, item index per purchase), ordered by user then time.

    One step at a time for all users at once (steps <= MAX_LEN): no loop over users.
    """
    n_users, n_themes, n_brands = spec.n_users, len(THEMES), len(BRANDS)
    lengths = np.minimum(MIN_LEN + rng.geometric(1.0 / (1.0 + MEAN_EXTRA_LEN), n_users) - 1, MAX_LEN)
    fav_theme = rng.integers(n_themes, size=n_users)
    brand_pop = 1.0 / np.arange(1, n_brands + 1) ** 0.5
    fav_brand = rng.choice(n_brands, size=n_users, p=brand_pop / brand_pop.sum())
    by_theme, _ = _group_sampler(items["theme"], items["popularity"], n_themes)
    tb = items["theme"] * n_brands + items["brand"]
    by_theme_brand, tb_counts = _group_sampler(tb, items["popularity"], n_themes * n_brands)

    seen = np.zeros((n_users, len(items["item_id"])), dtype=bool)
    picks = np.zeros((n_users, MAX_LEN), dtype=np.int64)
    theme = rng.integers(n_themes, size=n_users)  # first purchase: any theme
    for step in range(MAX_LEN):
        if step > 0:
            r = rng.random(n_users)
            theme = np.where(r < P_ADVANCE, (theme + 1) % n_themes, np.where(r < P_ADVANCE + P_STAY, theme, fav_theme))
        chosen = np.full(n_users, -1)
        pending = np.arange(n_users)
        for attempt in range(20):  # re-draw the few users who picked an item they already own
            if len(pending) == 0:
                break
            group = theme[pending] * n_brands + fav_brand[pending]
            use_brand = (rng.random(len(pending)) < P_BRAND) & (tb_counts[group] > 0) & (attempt < 10)
            u = rng.random(len(pending))
            cand = np.where(use_brand, by_theme_brand(group, u), by_theme(theme[pending], u))
            fresh = ~seen[pending, cand]
            chosen[pending[fresh]] = cand[fresh]
            pending = pending[~fresh]
        if len(pending):  # theme exhausted for these users: any unseen item
            for user in pending:  # rare (long sequences in small tiny catalogues)
                chosen[user] = rng.choice(np.nonzero(~seen[user])[0])
        seen[np.arange(n_users), chosen] = True
        picks[:, step] = chosen
    keep = np.arange(MAX_LEN)[None, :] < lengths[:, None]
    users = np.repeat(np.arange(n_users), lengths)
    return users, picks[keep]


def write_domain(spec: DomainSpec, folder: Path, seed: int) -> Path:
    """Generate one domain and write ``items.csv`` and ``interactions.csv`` into ``folder``."""
    rng = domain_seed(seed, spec.folder)
    items = make_items(spec, rng)
    users, picks = make_sequences(spec, items, rng)
    # timestamps: each user starts somewhere in a year, then buys every 1-30 days
    start = START_TIME + rng.integers(0, 365 * 86400, size=spec.n_users)
    gaps = rng.integers(86400, 30 * 86400, size=len(users))
    first = np.r_[True, users[1:] != users[:-1]]
    gaps[first] = 0
    seg = np.cumsum(first) - 1
    csum = np.cumsum(gaps)
    times = start[users] + csum - csum[np.nonzero(first)[0]][seg]
    # rows in time order across users (as a real log), ties kept in generation order
    order = np.lexsort((np.arange(len(users)), times))
    folder.mkdir(parents=True, exist_ok=True)
    prefix = spec.folder[:3].upper()
    user_ids = np.char.add(f"{prefix}-U", np.char.zfill(users.astype(str), 5))
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "text"])
        w.writerows(zip(items["item_id"].tolist(), items["text"].tolist()))
    with open(folder / "interactions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "item_id", "timestamp"])
        w.writerows(zip(user_ids[order].tolist(), items["item_id"][picks[order]].tolist(), times[order].tolist()))
    return folder


def generate_synthetic(output_dir: str | Path, seed: int = 0, tiny: bool = False) -> dict[str, Path]:
    """Write the synthetic shop under ``output_dir``; returns {domain folder name: folder path}.

    Same ``seed`` -> byte-identical files. Source domains come first, the target last; see
    :func:`domain_roles`. ``tiny=True`` writes a few-hundred-user version for tests.
    """
    output_dir = Path(output_dir)
    specs = TINY_DOMAINS if tiny else DEFAULT_DOMAINS
    out = {spec.folder: write_domain(spec, output_dir / spec.folder, seed) for spec in specs}
    readme = output_dir / "README.txt"
    readme.write_text(
        "SYNTHETIC data generated by unisrec.data.synthetic (not real purchases).\n"
        f"seed={seed} tiny={tiny}\n"
        + "".join(f"{s.folder}: {s.category}, {s.n_users} users, {s.n_items} items, {s.role}\n" for s in specs)
    )
    return out


def domain_roles(tiny: bool = False) -> dict[str, str]:
    """{domain folder: "source" | "target"} of the default (or tiny) synthetic shop."""
    return {s.folder: s.role for s in (TINY_DOMAINS if tiny else DEFAULT_DOMAINS)}
