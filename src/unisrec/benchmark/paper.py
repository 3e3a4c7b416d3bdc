"""The paper's Table 3 (test set), the one copy of these numbers in the repository.

Hou et al., "Towards Universal Sequence Representation Learning for Recommender Systems", KDD
2022, Table 3: Recall@10, NDCG@10, Recall@50, NDCG@50 of every model on the six target domains,
full ranking over all items, leave-one-out. docs/protocol.md ("Reference numbers") shows a subset
of this table and ``tests/test_benchmark.py`` checks it equals these values; ``benchmarks/benchlib.py``
imports them from here.

Keys: dataset names as ``unisrec prepare`` folders are called (``scientific``, ``online_retail``,
...) and model names as registered (``sasrec``, ``bert4rec``, ``fdsa``, ``s3rec``, ``zesrec``;
``ccdr``, ``recguru``), with ``unisrec_t`` = UniSRec_t (inductive, text only) and ``unisrec_t_id``
= UniSRec_t+ID (transductive). The paper's UniSRec rows are pre-trained on five Amazon domains and
fine-tuned; its baselines are "after hyper-parameter tuning, best on validation".
"""

from __future__ import annotations

METRICS: tuple[str, ...] = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
MODELS: tuple[str, ...] = ("sasrec", "bert4rec", "fdsa", "s3rec", "ccdr", "recguru", "zesrec", "unisrec_t", "unisrec_t_id")
# the paper's UniSRec variants (the "proposed" columns); the rest are baselines
PROPOSED: tuple[str, ...] = ("unisrec_t", "unisrec_t_id")
# a `unisrec finetune` mode -> the paper's column for it
MODE_MODELS: dict[str, str] = {"inductive": "unisrec_t", "transductive": "unisrec_t_id"}

# dataset -> metric -> one value per model, in MODELS order (transcribed from the paper's Table 3)
_TABLE3: dict[str, dict[str, tuple[float, ...]]] = {
    "scientific": {
        "recall@10": (0.1080, 0.0488, 0.0899, 0.0525, 0.0695, 0.1023, 0.0851, 0.1188, 0.1235),
        "ndcg@10": (0.0553, 0.0243, 0.0580, 0.0275, 0.0340, 0.0572, 0.0475, 0.0641, 0.0634),
        "recall@50": (0.2042, 0.1185, 0.1732, 0.1418, 0.1647, 0.2022, 0.1746, 0.2394, 0.2473),
        "ndcg@50": (0.0760, 0.0393, 0.0759, 0.0468, 0.0546, 0.0786, 0.0670, 0.0903, 0.0904),
    },
    "pantry": {
        "recall@10": (0.0501, 0.0308, 0.0395, 0.0444, 0.0408, 0.0469, 0.0454, 0.0636, 0.0693),
        "ndcg@10": (0.0218, 0.0152, 0.0209, 0.0214, 0.0203, 0.0209, 0.0230, 0.0306, 0.0311),
        "recall@50": (0.1322, 0.1030, 0.1151, 0.1315, 0.1262, 0.1269, 0.1141, 0.1658, 0.1827),
        "ndcg@50": (0.0394, 0.0305, 0.0370, 0.0400, 0.0385, 0.0379, 0.0378, 0.0527, 0.0556),
    },
    "instruments": {
        "recall@10": (0.1118, 0.0813, 0.1070, 0.1056, 0.0848, 0.1113, 0.0783, 0.1189, 0.1267),
        "ndcg@10": (0.0612, 0.0620, 0.0796, 0.0713, 0.0451, 0.0681, 0.0497, 0.0680, 0.0748),
        "recall@50": (0.2106, 0.1454, 0.1890, 0.1927, 0.1753, 0.2068, 0.1387, 0.2255, 0.2387),
        "ndcg@50": (0.0826, 0.0756, 0.0972, 0.0901, 0.0647, 0.0887, 0.0627, 0.0912, 0.0991),
    },
    "arts": {
        "recall@10": (0.1108, 0.0722, 0.1002, 0.1003, 0.0671, 0.1084, 0.0664, 0.1066, 0.1239),
        "ndcg@10": (0.0587, 0.0479, 0.0714, 0.0601, 0.0348, 0.0651, 0.0375, 0.0586, 0.0712),
        "recall@50": (0.2030, 0.1367, 0.1779, 0.1888, 0.1478, 0.1979, 0.1323, 0.2049, 0.2347),
        "ndcg@50": (0.0788, 0.0619, 0.0883, 0.0793, 0.0523, 0.0845, 0.0518, 0.0799, 0.0955),
    },
    "office": {
        "recall@10": (0.1056, 0.0825, 0.1118, 0.1030, 0.0549, 0.1145, 0.0641, 0.1013, 0.1280),
        "ndcg@10": (0.0710, 0.0634, 0.0868, 0.0653, 0.0290, 0.0768, 0.0391, 0.0619, 0.0831),
        "recall@50": (0.1627, 0.1227, 0.1665, 0.1613, 0.1095, 0.1757, 0.1113, 0.1702, 0.2016),
        "ndcg@50": (0.0835, 0.0721, 0.0987, 0.0780, 0.0409, 0.0901, 0.0493, 0.0769, 0.0991),
    },
    "online_retail": {
        "recall@10": (0.1460, 0.1349, 0.1490, 0.1418, 0.1347, 0.1467, 0.1103, 0.1449, 0.1537),
        "ndcg@10": (0.0675, 0.0653, 0.0719, 0.0654, 0.0620, 0.0658, 0.0535, 0.0677, 0.0724),
        "recall@50": (0.3872, 0.3540, 0.3802, 0.3702, 0.3587, 0.3885, 0.2750, 0.3604, 0.3885),
        "ndcg@50": (0.1201, 0.1131, 0.1223, 0.1154, 0.1108, 0.1188, 0.0896, 0.1149, 0.1239),
    },
}

# "*" in the paper: the UniSRec cells it marks significant (p < 0.01, paired t-test), per dataset
PAPER_SIGNIFICANT: dict[str, dict[str, tuple[str, ...]]] = {
    "scientific": {m: ("unisrec_t", "unisrec_t_id") for m in METRICS},
    "pantry": {m: ("unisrec_t", "unisrec_t_id") for m in METRICS},
    "instruments": {"recall@10": ("unisrec_t", "unisrec_t_id"), "ndcg@10": ("unisrec_t_id",),
                    "recall@50": ("unisrec_t", "unisrec_t_id"), "ndcg@50": ("unisrec_t_id",)},
    "arts": {"recall@10": ("unisrec_t_id",), "ndcg@10": (), "recall@50": ("unisrec_t", "unisrec_t_id"), "ndcg@50": ("unisrec_t_id",)},
    "office": {"recall@10": ("unisrec_t_id",), "ndcg@10": (), "recall@50": ("unisrec_t_id",), "ndcg@50": ()},
    "online_retail": {"recall@10": ("unisrec_t_id",), "ndcg@10": (), "recall@50": (), "ndcg@50": ("unisrec_t_id",)},
}


def table3() -> dict[tuple[str, str], tuple[float, float, float, float]]:
    """{(dataset, model): (R@10, N@10, R@50, N@50)} for every cell of the paper's Table 3."""
    out: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for dataset, by_metric in _TABLE3.items():
        for i, model in enumerate(MODELS):
            out[(dataset, model)] = tuple(by_metric[m][i] for m in METRICS)  # type: ignore[assignment]
    return out


def paper_dataset(name: str) -> str:
    """The paper's name for a dataset folder: ``online_retail_shuffled`` (the same data prepared
    with ``--ties shuffle``) is ``online_retail``."""
    return name.removesuffix("_shuffled")


def paper_value(dataset: str, model: str, metric: str) -> float | None:
    """The paper's number for one cell, or None when the paper has no such dataset/model/metric."""
    row = table3().get((paper_dataset(dataset), MODE_MODELS.get(model, model)))
    return None if row is None or metric not in METRICS else row[METRICS.index(metric)]
