"""RecBole / UniSRec-release atomic files -> Dataset, keeping the split exactly as given.

A folder holds ``X.train.inter`` (optional), ``X.valid.inter``, ``X.test.inter`` with header
``user_id:token  item_id_list:token_seq  item_id:token`` (history oldest first, capped at 50),
the item text as ``X.text`` (``item_id:token  text:token_seq``) or ``X.item`` (item id + text columns,
e.g. ``title:token_seq``), and optionally ``X.item2index`` / ``X.user2index`` (``raw id<TAB>index``).
With ``item2index`` the tokens in the .inter files are 0-based indices and the raw ids (ASINs) are
kept as item ids; our 1-based item index is the file's index + 1, so every file index maps back.

Sequences are rebuilt vectorised: with a train file, user u's sequence is the first item of its
shortest train history, its train targets in order, then the valid and test targets (the whole
sequence, beyond the 50-item cap). Without one (e.g. Games), it is the test history + test target,
extended by one older item taken from the valid history when both are capped. The rebuilt dataset
is then checked against every row of every file: each row must come out exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.data.build import PrepareOptions, describe_inputs, preparing, write_prepared
from unisrec.data.cleaning import is_empty_text
from unisrec.data.dataset import Dataset
from unisrec.data.records import BadRecords, InputError
from unisrec.data.tables import Column, RawTable, check_file, read_csv_table

INTER_COLUMNS = [Column("user_id*"), Column("item_id_list*", required=False), Column("item_id*")]


def find_stem(folder: Path, stem: str | None) -> str:
    if not folder.is_dir():
        raise InputError(f"--input {folder} is not a folder (give the folder holding X.test.inter, X.text, ...)")
    if stem:
        return stem
    stems = sorted(p.name[: -len(".test.inter")] for p in folder.glob("*.test.inter"))
    if len(stems) != 1:
        found = ", ".join(stems) or "none"
        raise InputError(f"{folder}: expected exactly one X.test.inter file (found: {found}); pick one with --stem")
    return stems[0]


def read_two_columns(path: Path, bad: BadRecords) -> tuple[pa.Array, pa.Array]:
    """``raw id<TAB>index`` map files (no header)."""
    t = read_csv_table(path, [Column("raw"), Column("index", "float")], bad, names=["raw", "index"], delimiter="\t", quote_char=False)
    idx = t.columns["index"]
    if not np.array_equal(np.sort(idx), np.arange(len(idx))):
        raise InputError(f"{path}: indices must be 0..{len(idx) - 1}, each once")
    order = np.argsort(idx, kind="stable")
    return t.columns["raw"].take(pa.array(order)), pa.array(np.arange(len(idx)).astype(str))


def read_item_text(path: Path, bad: BadRecords) -> tuple[pa.Array, list[str], RawTable]:
    """Item ids and texts of ``X.text`` / ``X.item``: the ``item_id`` column and every other column
    joined by a space (RecBole reads these files split on tabs, so no quoting)."""
    with open(path, "rb") as fh:
        header = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n").split("\t")
    id_cols = [h for h in header if h.split(":")[0] == "item_id"]
    if not id_cols or len(header) < 2:
        raise InputError(f"{path}, line 1: expected an item_id column and at least one text column; the header has: {', '.join(header)}")
    text_cols = [h for h in header if h != id_cols[0]]
    t = read_csv_table(path, [Column(id_cols[0])] + [Column(h, required=False) for h in text_cols], bad,
                       delimiter="\t", quote_char=False)
    ids = t.columns[id_cols[0]]
    parts = [pc.utf8_trim_whitespace(t.columns[h]).to_pylist() for h in text_cols]
    texts = [" ".join(p for p in ps if p) for ps in zip(*parts)]
    return ids, texts, t


def read_inter(path: Path, bad: BadRecords) -> dict:
    """One .inter file: user tokens, flattened history tokens + per-row counts, target tokens."""
    t = read_csv_table(path, INTER_COLUMNS, bad, delimiter="\t", quote_char=False)
    lists = pc.split_pattern(t.columns["item_id_list"], " ")
    parents = pc.list_parent_indices(lists).to_numpy()
    values = pc.list_flatten(lists)
    nonempty = pc.not_equal(values, "").to_numpy(zero_copy_only=False)
    counts = np.bincount(parents[nonempty], minlength=len(t))
    return {"table": t, "users": t.columns["user_id"], "hist": values.filter(pa.array(nonempty)), "hist_len": counts,
            "targets": t.columns["item_id"]}


def _codes(tokens: pa.Array, vocabulary: pa.Array, where, what: str) -> np.ndarray:
    """Position of every token in ``vocabulary``; an unknown token is an error naming its row."""
    pos = pc.index_in(tokens, value_set=vocabulary)
    missing = pos.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        k = int(np.argmax(missing))
        raise InputError(f"{where(k)}: unknown {what} {tokens[k].as_py()!r}")
    return pos.to_numpy(zero_copy_only=False).astype(np.int64)


def _rows_of(inter: dict) -> np.ndarray:
    """Row index owning each flattened history token."""
    return np.repeat(np.arange(len(inter["hist_len"])), inter["hist_len"])


_FILTER_OPTIONS = ("min_user", "min_item", "duplicates", "ties", "tie_seed")


def prepare_atomic(
    input: str | Path,
    output: str | Path | None = None,
    *,
    stem: str | None = None,
    options: PrepareOptions | None = None,
    **option_values: Any,
) -> Dataset:
    """Import atomic files (see module docstring); saves to ``output`` if given.

    Keyword arguments (``name``, ``max_history``, ``on_bad_lines``, ``force``) are
    :class:`PrepareOptions` fields; the filtering ones do not apply (the split is given)."""
    given = sorted(set(option_values) & set(_FILTER_OPTIONS))
    if given:
        raise TypeError(f"prepare_atomic keeps the given split; it takes no {', '.join(given)}")
    opts = PrepareOptions.build(output, options, **option_values)
    folder = Path(input)
    stem = find_stem(folder, stem)
    files = {k: folder / f"{stem}.{k}" for k in ("train.inter", "valid.inter", "test.inter", "text", "item", "item2index", "user2index")}
    inputs = {k.replace(".", "_"): p for k, p in files.items() if p.is_file()}
    with preparing(opts, inputs):
        bad = BadRecords(opts.on_bad_lines)
        item_ids, item_tokens, item_texts = _read_catalogue(files, stem, bad)
        user_ids = user_tokens = None
        if files["user2index"].is_file():
            user_ids, user_tokens = read_two_columns(check_file(files["user2index"], "user2index"), bad)
        check_file(files["test.inter"], "test")
        splits = {"test": read_inter(files["test.inter"], bad),
                  "valid": read_inter(check_file(files["valid.inter"], "valid"), bad) if files["valid.inter"].is_file() else None,
                  "train": read_inter(files["train.inter"], bad) if files["train.inter"].is_file() else None}
        if user_tokens is None:  # users = test-file rows, in order
            user_ids = user_tokens = splits["test"]["users"]
        pos_of = _user_positions(splits, files, user_tokens, item_tokens)
        test, valid, train = splits["test"], splits["valid"], splits["train"]
        seq_user, seq_key, seq_item = _rebuild(test, valid, train, pos_of, opts.max_history)
        order = np.lexsort((seq_key, seq_user))
        offsets = np.zeros(len(test["u"]) + 1, dtype=np.int64)
        np.cumsum(np.bincount(seq_user, minlength=len(test["u"])), out=offsets[1:])
        ds = Dataset(
            name=opts.dataset_name(stem),
            item_ids=item_ids.to_pylist(),
            item_texts=item_texts,
            user_ids=user_ids.take(pa.array(test["u"])).to_pylist(),
            seq_offsets=offsets,
            seq_items=seq_item[order].astype(np.int32),
            manifest={
                "source": "atomic",
                "inputs": describe_inputs(**inputs),
                "options": {"stem": stem, **opts.record(kcore=False)},
                "split": {"protocol": "leave-one-out", "given": True, "max_history": opts.max_history,
                          "note": "split taken from the .inter files as given; every row checked to be reproduced"},
                "filters": [],
                "dropped": bad.as_dict(),
                "bad_line_examples": dict(sorted(bad.examples.items())),
                "rebuilt_from": "train+valid+test" if train is not None else "valid+test",
            },
        )
        for split, inter in splits.items():
            if inter is not None:
                _check_split(ds, split, inter, pos_of, opts.max_history)
        return write_prepared(ds, opts, inputs)


def _read_catalogue(files: dict[str, Path], stem: str, bad: BadRecords) -> tuple[pa.Array, pa.Array, list[str]]:
    """(item ids, the item tokens the .inter files use, item texts): our item k+1 <-> file index k
    (with item2index) or the k-th row of the text file."""
    text_file = files["text"] if files["text"].is_file() else files["item"]
    check_file(text_file, f"item text ({stem}.text or {stem}.item)")
    raw_items, texts, text_table = read_item_text(text_file, bad)
    for k in [k for k, s in enumerate(texts) if is_empty_text(s)]:
        bad.bad("empty_text", text_table.where(k), f"item {raw_items[k].as_py()!r} has an empty text")
    if not files["item2index"].is_file():
        return raw_items, raw_items, texts
    item_ids, item_tokens = read_two_columns(check_file(files["item2index"], "item2index"), bad)
    text_pos = pc.index_in(item_ids, value_set=raw_items).to_numpy(zero_copy_only=False)
    lacking = np.isnan(text_pos) if text_pos.dtype.kind == "f" else np.zeros(len(item_ids), bool)
    if lacking.any():
        k = int(np.argmax(lacking))
        raise InputError(f"{text_file}: no text for item {item_ids[k].as_py()!r} of {files['item2index'].name}")
    return item_ids, item_tokens, [texts[int(p)] for p in text_pos]


def _user_positions(splits: dict, files: dict[str, Path], user_tokens: pa.Array, item_tokens: pa.Array) -> np.ndarray:
    """Codes every split's rows (``u``, ``t``, ``h``) and returns, per user code, its dataset
    position (the order of the test file; -1 for users without a test row)."""
    for inter in splits.values():
        if inter is None:
            continue
        tab = inter["table"]
        inter["u"] = _codes(inter["users"], user_tokens, tab.where, "user")
        inter["t"] = _codes(inter["targets"], item_tokens, tab.where, "item") + 1
        hist_rows = _rows_of(inter)
        inter["h"] = _codes(inter["hist"], item_tokens, lambda k, tab=tab, rows=hist_rows: tab.where(int(rows[k])), "item") + 1
    test = splits["test"]
    if len(np.unique(test["u"])) != len(test["u"]):
        raise InputError(f"{files['test.inter']}: a user has more than one test row")
    pos_of = np.full(len(user_tokens), -1, dtype=np.int64)
    pos_of[test["u"]] = np.arange(len(test["u"]))
    for split in ("valid", "train"):
        inter = splits[split]
        if inter is not None and (pos_of[inter["u"]] < 0).any():
            k = int(np.argmax(pos_of[inter["u"]] < 0))
            raise InputError(f"{inter['table'].where(k)}: user {inter['users'][k].as_py()!r} has no test row")
    return pos_of


def _rebuild(test, valid, train, pos_of, cap):
    """(dataset user, position key, item) of every sequence element, from the given rows."""
    tu = pos_of[test["u"]]
    n = len(tu)
    if train is not None:
        n_train = np.bincount(pos_of[train["u"]], minlength=n)
    else:
        n_train = np.zeros(n, dtype=np.int64)
    parts_u, parts_k, parts_i = [], [], []
    with_train = n_train > 0
    # users without train rows: test history + test target
    rows = np.flatnonzero(~with_train[tu])
    hist_row = _rows_of(test)
    starts = np.concatenate([[0], np.cumsum(test["hist_len"])])
    sel = ~with_train[tu[hist_row]]
    rank = np.arange(len(hist_row)) - starts[hist_row]
    extend = np.zeros(n, dtype=bool)
    if valid is not None and train is None:
        # both histories capped: the valid history holds one item older than the test history
        vrow_of_user = np.full(n, -1)
        vrow_of_user[pos_of[valid["u"]]] = np.arange(len(valid["u"]))
        vr = vrow_of_user[tu]
        vstarts = np.concatenate([[0], np.cumsum(valid["hist_len"])])
        extend = (test["hist_len"] == cap) & (vr >= 0) & (valid["hist_len"][np.maximum(vr, 0)] == cap)
        rows_ext = np.flatnonzero(extend)
        parts_u.append(tu[rows_ext]); parts_k.append(np.zeros(len(rows_ext), dtype=np.int64))
        parts_i.append(valid["h"][vstarts[vr[rows_ext]]])
    parts_u.append(tu[hist_row[sel]]); parts_k.append(rank[sel] + 1); parts_i.append(test["h"][sel])
    parts_u.append(tu[rows]); parts_k.append(test["hist_len"][rows] + 1); parts_i.append(test["t"][rows])
    if train is not None and with_train.any():
        tr_u = pos_of[train["u"]]
        # train rows of a user in ascending target position: by history length, then by file order
        # in the direction the file uses (the release writes the longest prefix first)
        direction = _train_direction(tr_u, train["hist_len"])
        tr_order = np.lexsort((direction * np.arange(len(tr_u)), train["hist_len"], tr_u))
        first_in_user = np.ones(len(tr_order), dtype=bool)
        first_in_user[1:] = tr_u[tr_order][1:] != tr_u[tr_order][:-1]
        rank_tr = np.arange(len(tr_order)) - np.maximum.accumulate(np.where(first_in_user, np.arange(len(tr_order)), 0))
        tr_starts = np.concatenate([[0], np.cumsum(train["hist_len"])])
        firsts = tr_order[first_in_user]
        parts_u.append(tr_u[firsts]); parts_k.append(np.zeros(len(firsts), dtype=np.int64))
        parts_i.append(train["h"][tr_starts[firsts]])
        parts_u.append(tr_u[tr_order]); parts_k.append(rank_tr + 1); parts_i.append(train["t"][tr_order])
        # valid and test targets close the sequence
        users_t = np.flatnonzero(with_train)
        vrow_of_user = np.full(n, -1)
        if valid is None:
            raise InputError("a train file needs a valid file beside it")
        vrow_of_user[pos_of[valid["u"]]] = np.arange(len(valid["u"]))
        if (vrow_of_user[users_t] < 0).any():
            u = int(users_t[np.argmax(vrow_of_user[users_t] < 0)])
            raise InputError(f"user {test['users'][int(np.flatnonzero(tu == u)[0])].as_py()!r} has train rows but no valid row")
        trow_of_user = np.full(n, -1)
        trow_of_user[tu] = np.arange(n)
        parts_u += [users_t, users_t]
        parts_k += [n_train[users_t] + 1, n_train[users_t] + 2]
        parts_i += [valid["t"][vrow_of_user[users_t]], test["t"][trow_of_user[users_t]]]
    return np.concatenate(parts_u), np.concatenate(parts_k), np.concatenate(parts_i)


def _train_direction(users: np.ndarray, lengths: np.ndarray) -> int:
    """+1 if a user's train rows run from short to long history in the file, -1 otherwise."""
    same = users[1:] == users[:-1]
    diff = np.sign(lengths[1:] - lengths[:-1])[same]
    diff = diff[diff != 0]
    return -1 if len(diff) and diff[0] < 0 else 1


def _check_split(ds: Dataset, split: str, inter: dict, pos_of: np.ndarray, cap: int) -> None:
    """Every row of the file must equal the example our dataset builds for it."""
    hist, lens, tgt = ds.examples(split, max_history=cap)
    users, _ = ds.split_positions(split)
    fu = pos_of[inter["u"]]
    if split == "train":
        direction = _train_direction(fu, inter["hist_len"])
        order = np.lexsort((direction * np.arange(len(fu)), inter["hist_len"], fu))
    else:
        order = np.argsort(fu, kind="stable")
    tab = inter["table"]
    if len(order) != len(tgt):
        raise InputError(f"{tab.path}: {len(order)} rows, but the sequences rebuilt from the files give {len(tgt)} {split} examples "
                         "(rows missing, duplicated or inconsistent between files)")
    starts = np.concatenate([[0], np.cumsum(inter["hist_len"])])
    file_hist = np.zeros_like(hist)
    cols = np.arange(hist.shape[1])
    fl = inter["hist_len"][order]
    valid = cols[None, :] < np.minimum(fl, cap)[:, None]
    idx = (starts[order] + np.maximum(fl - cap, 0))[:, None] + cols[None, :]
    file_hist[valid] = inter["h"][idx[valid]]
    bad_rows = (fu[order] != users) | (fl != lens) | (inter["t"][order] != tgt) | (file_hist != hist).any(axis=1)
    if bad_rows.any():
        k = int(np.argmax(bad_rows))
        raise InputError(f"{tab.where(int(order[k]))}: this {split} row does not match the sequence rebuilt from the other files")
