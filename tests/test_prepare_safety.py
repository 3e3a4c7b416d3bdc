"""Where `prepare` may write, and what it never does: delete or replace files it did not create,
leave a half-written dataset, drop feature sets silently, or write beside another writer."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from unisrec.cli import main
from unisrec.data import Dataset, prepare_table
from unisrec.data.output import writer_lock
from unisrec.errors import UserError


def write_inputs(folder, n_users=4, n_items=5, text="item"):
    folder.mkdir(parents=True, exist_ok=True)
    inter = folder / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\n"
                     + "".join(f"u{u},i{(u + k) % n_items},{k}\n" for u in range(n_users) for k in range(n_items)))
    items = folder / "items.csv"
    items.write_text("item_id,text\n" + "".join(f"i{k},{text} {k}\n" for k in range(n_items)))
    return inter, items


def cli_prepare(inter, items, out, capsys, *extra):
    rc = main(["prepare", "table", "--interactions", str(inter), "--items", str(items), "--output", str(out),
               "--min-user", "1", "--min-item", "1", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def add_feature_set(path, name="fake", dim=3):
    """A feature set as `unisrec encode` records it, without loading a model."""
    ds = Dataset.load(path)
    (path / "features").mkdir(exist_ok=True)
    arr = np.arange((ds.num_items + 1) * dim, dtype=np.float32).reshape(ds.num_items + 1, dim)
    np.save(path / "features" / f"{name}.npy", arr)
    ds.update_manifest(features={name: {"file": f"features/{name}.npy", "dim": dim, "encoder": "x"}},
                       default_features=name)
    return arr


def test_folder_of_other_files_is_refused_and_kept_with_force(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("mine")
    before = snapshot(out)
    rc, _, err = cli_prepare(inter, items, out, capsys)
    assert rc == 2 and "not a unisrec dataset" in err and "--force" in err and "Traceback" not in err
    assert snapshot(out) == before
    rc, stdout, err = cli_prepare(inter, items, out, capsys, "--force")
    assert rc == 0, err
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # every file kept, unchanged
    assert Dataset.load(out).num_users == 4
    # now a dataset: re-preparing needs no --force and still keeps the other files
    rc, _, err = cli_prepare(inter, items, out, capsys)
    assert rc == 0, err
    assert {k: snapshot(out)[k] for k in before} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries, no lock left


def test_force_never_replaces_a_file_with_a_dataset_name(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "items.parquet").write_bytes(b"someone else's table")
    rc, _, err = cli_prepare(inter, items, out, capsys, "--force")
    assert rc == 2 and "items.parquet exists and was not written by unisrec" in err
    assert (out / "items.parquet").read_bytes() == b"someone else's table"


def test_output_holding_the_inputs_is_refused_even_with_force(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "raw")
    before = snapshot(tmp_path / "raw")
    for out in (tmp_path / "raw", tmp_path, inter):
        rc, _, err = cli_prepare(inter, items, out, capsys, "--force")
        assert rc == 2 and "Traceback" not in err, err
    assert snapshot(tmp_path / "raw") == before


def test_existing_file_is_refused_not_hidden(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "report.txt"
    out.write_text("keep me")
    rc, _, err = cli_prepare(inter, items, out, capsys, "--force")
    assert rc == 2 and "is an existing file" in err
    assert out.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "report.txt"]


def test_current_folder_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    inter, items = write_inputs(tmp_path / "in")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, _, err = cli_prepare(inter, items, ".", capsys)
    assert rc == 2 and "current folder" in err and err.count("\n") == 1
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in", "work"]


def test_empty_folder_is_used(tmp_path):
    inter, items = write_inputs(tmp_path / "in")
    (tmp_path / "empty").mkdir()
    ds = prepare_table(inter, items, tmp_path / "empty", min_user=1, min_item=1)
    assert Dataset.load(tmp_path / "empty").user_ids == ds.user_ids


def test_reprepare_keeps_features_when_items_unchanged(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "ds"
    assert cli_prepare(inter, items, out, capsys)[0] == 0
    arr = add_feature_set(out)
    rc, stdout, _ = cli_prepare(inter, items, out, capsys, "--ties", "shuffle")
    assert rc == 0 and "kept feature sets (item table unchanged): fake" in stdout
    ds = Dataset.load(out)
    assert ds.manifest["default_features"] == "fake" and "features_dropped" not in ds.manifest
    np.testing.assert_array_equal(ds.features("fake"), arr)


def test_reprepare_with_changed_items_drops_features_and_says_so(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "ds"
    assert cli_prepare(inter, items, out, capsys)[0] == 0
    add_feature_set(out)
    inter2, items2 = write_inputs(tmp_path / "in2", text="renamed item")
    rc, stdout, _ = cli_prepare(inter2, items2, out, capsys)
    assert rc == 0 and "dropped feature sets fake: the item table changed" in stdout
    ds = Dataset.load(out)
    assert ds.manifest["features"] == {} and ds.manifest["features_dropped"]["sets"] == ["fake"]
    with pytest.raises(UserError, match="unisrec encode"):
        ds.features()


def test_disk_full_leaves_the_old_dataset(tmp_path, capsys, monkeypatch):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "ds"
    assert cli_prepare(inter, items, out, capsys)[0] == 0
    before = snapshot(out)
    import unisrec.data.dataset as dataset_mod

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dataset_mod, "write_items_table", full)
    rc, _, err = cli_prepare(inter, items, out, capsys, "--ties", "shuffle")
    assert rc == 2 and "no space left on device" in err and "Traceback" not in err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in"]


def test_read_only_output_folder_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    inter, items = write_inputs(tmp_path / "in")
    import unisrec.data.output as output_mod

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(output_mod.os, "mkdir", denied)
    rc, _, err = cli_prepare(inter, items, tmp_path / "ro" / "ds", capsys)
    assert rc == 2 and "permission denied" in err and "Traceback" not in err


@pytest.mark.parametrize("crash_at", ["exchange", "install"])
def test_crash_before_the_swap_leaves_the_old_dataset(tmp_path, monkeypatch, crash_at):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "ds"
    prepare_table(inter, items, out, min_user=1, min_item=1)
    before = snapshot(out)
    import unisrec.data.output as output_mod

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(output_mod, crash_at, crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_table(inter, items, out, min_user=1, min_item=1, ties="shuffle", tie_seed=3)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in"]


def test_swap_fallback_without_renameat2(tmp_path, monkeypatch):
    import unisrec.data.output as output_mod

    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "ds"
    prepare_table(inter, items, out, min_user=1, min_item=1)
    (out / "mine.txt").write_text("kept")

    class NoLibc:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(output_mod.ctypes, "CDLL", lambda *a, **k: NoLibc())
    ds = prepare_table(inter, items, out, min_user=1, min_item=1, ties="shuffle", tie_seed=3)
    assert (out / "mine.txt").read_text() == "kept"
    assert Dataset.load(out).manifest["split"]["order"] == ds.manifest["split"]["order"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_modes_follow_the_umask(tmp_path, umask):
    inter, items = write_inputs(tmp_path / "in")
    old = os.umask(umask)
    try:
        prepare_table(inter, items, tmp_path / "ds", min_user=1, min_item=1)
    finally:
        os.umask(old)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o777 & ~umask
    for f in (tmp_path / "ds").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from unisrec.data.output import writer_lock
    with writer_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    inter, items = write_inputs(tmp_path / "in")
    out = tmp_path / "ds"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, _, err = cli_prepare(inter, items, out, capsys)
        assert rc == 2 and f"is being written by another unisrec process (pid {holder.pid})" in err
        assert not out.exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert cli_prepare(inter, items, out, capsys)[0] == 0  # released: the next writer goes ahead
    assert not (tmp_path / ".ds.lock").exists()


def test_lock_is_reentrant_in_one_process(tmp_path):
    inter, items = write_inputs(tmp_path / "in")
    with writer_lock(tmp_path / "ds"):
        prepare_table(inter, items, tmp_path / "ds", min_user=1, min_item=1)
        assert (tmp_path / ".ds.lock").exists()
    assert not (tmp_path / ".ds.lock").exists()


def test_manifest_records_options(tmp_path):
    inter, items = write_inputs(tmp_path / "in")
    ds = prepare_table(inter, items, tmp_path / "ds", min_user=1, min_item=1, ties="shuffle", tie_seed=4)
    opts = json.loads((tmp_path / "ds" / "manifest.json").read_text())["options"]
    assert opts["ties"] == "shuffle" and opts["tie_seed"] == 4 and opts["min_user"] == 1
    assert ds.name == "ds"
    with pytest.raises(TypeError, match="min_usr"):
        prepare_table(inter, items, min_usr=1)


def test_export_atomic_replaces_only_its_own_folder(tmp_path, capsys):
    from unisrec.data import export_atomic

    inter, items = write_inputs(tmp_path / "in")
    prepare_table(inter, items, tmp_path / "ds", min_user=1, min_item=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["export-atomic", str(tmp_path / "ds"), str(mine)]) == 2
    assert "holds files export-atomic does not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    out = export_atomic(tmp_path / "ds", tmp_path / "atomic")
    first = snapshot(out)
    assert export_atomic(tmp_path / "ds", tmp_path / "atomic") == out and snapshot(out) == first  # re-export
    with pytest.raises(UserError, match="is or holds the input"):
        export_atomic(tmp_path / "ds", tmp_path / "ds")
    assert Dataset.load(tmp_path / "ds").num_users == 4
