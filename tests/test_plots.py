import json

import pytest

from unisrec.errors import UserError
from unisrec.evaluation.plots import plot_training_curves, read_training_log


def write_log(folder, rows):
    folder.mkdir(parents=True)
    (folder / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plot_two_runs_writes_png(tmp_path):
    a = write_log(tmp_path / "a", [{"epoch": e, "loss": 5.0 / e, "seconds": 1.0, "valid": {"ndcg@10": 0.01 * e}} for e in range(1, 6)])
    b = write_log(tmp_path / "b", [{"epoch": e, "loss": 6.0 / e, "seconds": 1.0, "valid": {"ndcg@10": 0.02 * e}} for e in range(1, 4)])
    out = plot_training_curves({"scratch": a, "pre-trained": b}, tmp_path / "plots" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # a real figure, not an empty canvas
    assert not list(out.parent.glob(".*tmp*"))  # temporary file renamed away


def test_read_log_rejects_bad_line_with_location(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "training_log.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n{oops\n')
    with pytest.raises(UserError, match=r"training_log.jsonl, line 2"):
        read_training_log(d)


def test_missing_log_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="training_log.jsonl does not exist"):
        plot_training_curves({"x": tmp_path}, tmp_path / "p.png")


def test_epochs_without_validation_are_skipped(tmp_path):
    a = write_log(tmp_path / "a", [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0, "valid": {"ndcg@10": 0.1}}])
    assert [r["epoch"] for r in read_training_log(a)] == [1, 2]
    assert plot_training_curves({"a": a}, tmp_path / "p.png").is_file()
