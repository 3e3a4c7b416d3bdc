"""`unisrec benchmark`: the grid runner (skip, resume, unknown models), the paired t-test, the report."""

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from unisrec.benchmark import paper, runner
from unisrec.benchmark.archive import archive_runs
from unisrec.benchmark.report import build_report, fmt_cell, rank_marks, render_markdown
from unisrec.benchmark.significance import compare, paired_ttest_greater, per_user_metric, seed_averaged
from unisrec.benchmark.spec import load_spec, spec_from_dict, subset
from unisrec.cli import main
from unisrec.data.dataset import Dataset
from unisrec.data.output import lock_holder
from unisrec.errors import UserError
from unisrec.evaluation.metrics import metrics_from_ranks

from test_finetune import make_toy

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs=2, batch_size=64, hidden_size=16, inner_size=16, n_layers=1, lr=3e-3, eval_batch_size=64, device="cpu")


def toy_spec(data: Path, **over):
    raw = {
        "name": "toy_grid",
        "datasets": {"toy": str(data)},
        "seeds": [1, 2],
        "options": dict(TINY),
        "models": {
            "SASRec": {"model": "sasrec"},
            "UniSRec_t": {"model": "finetune", "mode": "inductive", "n_experts": 2},
            "Later": {"model": "not_registered_yet"},
        },
    }
    raw.update(over)
    return spec_from_dict(raw)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path, n_users=120)
    return path


@pytest.fixture(scope="module")
def grid(toy, tmp_path_factory):
    """The tiny grid run once in this process: (spec, runs dir, summary, messages)."""
    runs = tmp_path_factory.mktemp("runs")
    said = []
    summary = runner.run_benchmark(toy_spec(toy), runs, threads=1, isolate=False, say=said.append)
    return toy_spec(toy), runs, summary, said


# ------------------------------------------------------------------------------- runner
def test_grid_trains_every_cell_and_saves_ranks(grid, toy):
    spec, runs, summary, said = grid
    status = {(c["model"], c["seed"]): c["status"] for c in summary["cells"]}
    assert status == {("SASRec", 1): "finished", ("SASRec", 2): "finished", ("UniSRec_t", 1): "finished",
                      ("UniSRec_t", 2): "finished", ("Later", 1): "unavailable", ("Later", 2): "unavailable"}
    assert any("not_registered_yet" in s and "not registered" in s for s in said)
    n_test = len(Dataset.load(toy).examples("test")[2])
    for model in ("SASRec", "UniSRec_t"):
        for seed in (1, 2):
            cell = runs / "toy" / model / f"seed{seed}"
            metrics = json.loads((cell / "metrics.json").read_text())
            assert metrics["seed"] == seed and metrics["epochs_run"] == 2
            ranks = np.load(cell / "test_ranks.npy")
            assert ranks.dtype == np.int32 and ranks.shape == (n_test,)
            # the saved ranks reproduce the test metrics (per-user values average to them)
            assert metrics_from_ranks(ranks, [10, 50]) == pytest.approx(metrics["test"])
            assert per_user_metric(ranks, "ndcg@10").mean() == pytest.approx(metrics["test"]["ndcg@10"])
            assert np.load(cell / "valid_ranks.npy").dtype == np.int32
            # exposure: every test user's top 10, counted per item (padding never recommended)
            exposure = np.load(cell / "test_exposure.npy")
            assert exposure.dtype == np.int32 and exposure.shape == (Dataset.load(toy).num_items + 1,)
            assert exposure.sum() == 10 * n_test and exposure[0] == 0 and exposure.max() <= n_test
    # seeds differ, so the runs differ
    a, b = (np.load(runs / "toy" / "SASRec" / f"seed{s}" / "test_ranks.npy") for s in (1, 2))
    assert not np.array_equal(a, b)
    saved = json.loads((runs / "benchmark.json").read_text())
    assert saved["finished"] == 4 and saved["spec"]["model_order"] == ["SASRec", "UniSRec_t", "Later"]
    cmd = next(c["command"] for c in saved["cells"] if c["model"] == "UniSRec_t")
    assert cmd.startswith("unisrec finetune ") and "--mode inductive" in cmd and "--seed 1" in cmd


def test_second_run_skips_finished_cells(grid, monkeypatch):
    spec, runs, _, _ = grid
    before = {p: p.stat().st_mtime_ns for p in runs.glob("toy/*/seed*/metrics.json")}
    assert len(before) == 4

    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(runner, "train_cell", no_training)
    said = []
    summary = runner.run_benchmark(spec, runs, threads=1, isolate=False, say=said.append)
    assert [c["status"] for c in summary["cells"] if c["model"] != "Later"] == ["skipped"] * 4
    assert sum(s.endswith("finished before, skipped") for s in said) == 4
    assert {p: p.stat().st_mtime_ns for p in runs.glob("toy/*/seed*/metrics.json")} == before
    assert summary["finished"] == 4


def test_finished_cell_trained_with_other_options_is_reported_stale_never_retrained(grid, toy, monkeypatch):
    spec, runs, _, _ = grid
    files = {p: p.read_bytes() for p in runs.glob("toy/*/seed*/*") if p.is_file()}

    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(runner, "train_cell", no_training)
    said = []
    changed = toy_spec(toy, options={**TINY, "lr": 1e-2})  # the spec now asks for another learning rate
    summary = runner.run_benchmark(changed, runs, threads=1, isolate=False, say=said.append)
    stale = {(c["model"], c["seed"]): c["message"] for c in summary["cells"] if c["status"] == "stale"}
    assert set(stale) == {("SASRec", 1), ("SASRec", 2), ("UniSRec_t", 1), ("UniSRec_t", 2)}
    assert all(m.endswith("lr 0.003 -> 0.01") for m in stale.values()), stale
    assert sum("other options than the spec's (lr 0.003 -> 0.01); not retrained" in s for s in said) == 4
    assert {p: p.read_bytes() for p in runs.glob("toy/*/seed*/*") if p.is_file()} == files  # nothing rewritten or deleted
    report = render_markdown(build_report(runs))
    assert report.count("finished before with other options: lr 0.003 -> 0.01") == 4
    # an option the cells' config.json does not record (added after they ran) counts as its default
    for cfg_file in runs.glob("toy/SASRec/seed*/config.json"):
        stored = json.loads(cfg_file.read_text())
        assert stored["training"].pop("precision") == "float32"
        cfg_file.write_text(json.dumps(stored))
    bf16 = toy_spec(toy, options={**TINY, "precision": "bfloat16"})
    summary = runner.run_benchmark(bf16, runs, threads=1, isolate=False, say=said.append)
    stale = {(c["model"], c["seed"]): c["message"] for c in summary["cells"] if c["status"] == "stale"}
    assert set(stale) == {("SASRec", 1), ("SASRec", 2), ("UniSRec_t", 1), ("UniSRec_t", 2)}
    assert all(m.endswith("precision 'float32' -> 'bfloat16'") for m in stale.values()), stale
    # "auto" is each machine's pick: a cell that ran in either precision was run as asked
    auto = toy_spec(toy, options={**TINY, "precision": "auto"})
    summary = runner.run_benchmark(auto, runs, threads=1, isolate=False, say=said.append)
    assert {c["status"] for c in summary["cells"] if c["model"] != "Later"} == {"skipped"}
    # the spec the cells were trained with: skipped again, nothing flagged (restores the summary for later tests)
    summary = runner.run_benchmark(spec, runs, threads=1, isolate=False, say=said.append)
    assert {c["status"] for c in summary["cells"] if c["model"] != "Later"} == {"skipped"}
    assert "other options" not in render_markdown(build_report(runs))


def test_a_field_an_older_directory_lacks_compares_as_the_value_the_model_names_for_it(grid, monkeypatch):
    """A model whose field's default changed behaviour (RecGURU's ``cdsrec``) names, through
    ``upgrade_config``, what older directories ran with: such a finished cell is stale even though the
    spec leaves the option at its default, and the loader builds the older model from it."""
    from unisrec.models.sasrec import SASRec

    spec, runs, _, _ = grid
    cfg_files = sorted(runs.glob("toy/SASRec/seed*/config.json"))
    originals = {f: f.read_text() for f in cfg_files}
    monkeypatch.setattr(runner, "train_cell", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    legacy = classmethod(lambda cls, recorded: recorded if "hidden_dropout" in recorded.get("encoder", {})
                         else {**recorded, "encoder": {**recorded["encoder"], "hidden_dropout": 0.125}})
    monkeypatch.setattr(SASRec, "upgrade_config", legacy)
    try:
        summary = runner.run_benchmark(spec, runs, threads=1, isolate=False, say=lambda s: None)
        assert {c["status"] for c in summary["cells"] if c["model"] == "SASRec"} == {"skipped"}  # recorded: compared as is
        for f in cfg_files:  # as a directory written before the field existed
            stored = json.loads(f.read_text())
            want = stored["model"]["encoder"].pop("hidden_dropout")
            f.write_text(json.dumps(stored))
        summary = runner.run_benchmark(spec, runs, threads=1, isolate=False, say=lambda s: None)
        stale = {c["seed"]: c["message"] for c in summary["cells"] if c["model"] == "SASRec" and c["status"] == "stale"}
        assert set(stale) == {1, 2} and all(m.endswith(f"hidden_dropout 0.125 -> {want}") for m in stale.values()), stale
        assert SASRec.from_pretrained(cfg_files[0].parent).config.encoder.hidden_dropout == 0.125
    finally:
        for f, text in originals.items():
            f.write_text(text)
        runner.run_benchmark(spec, runs, threads=1, isolate=False, say=lambda s: None)  # restores the summary


def test_interrupted_cell_resumes_in_a_subprocess(grid, toy, tmp_path):
    """A cell cut after epoch 1 (resume state, no metrics.json) is resumed, not restarted, and ends
    where the uninterrupted run of the same seed ended."""
    spec, runs, _, _ = grid
    only = subset(spec, models=["SASRec"], seeds=[1])
    cell = tmp_path / "toy" / "SASRec" / "seed1"
    one_epoch = spec_from_dict({"datasets": {"toy": str(toy)}, "seeds": [1], "options": {**TINY, "epochs": 1},
                                "models": {"SASRec": {"model": "sasrec"}}})
    runner.run_benchmark(one_epoch, tmp_path, threads=1, isolate=False, say=lambda s: None)
    (cell / "metrics.json").unlink()  # as if the process had died after epoch 1
    assert runner.cell_state(cell) == "interrupted"
    said = []
    summary = runner.run_benchmark(spec, tmp_path, threads=1, isolate=True, only=only, say=said.append)
    status = {(c["model"], c["seed"]): c["status"] for c in summary["cells"]}
    assert status[("SASRec", 1)] == "resumed" and status[("SASRec", 2)] == "not selected"
    assert any("resuming" in s for s in said)
    log = (cell.parent / "seed1.log").read_text()
    assert "resuming" in log
    assert [r["epoch"] for r in map(json.loads, (cell / "training_log.jsonl").read_text().splitlines())] == [1, 2]
    full = json.loads((runs / "toy" / "SASRec" / "seed1" / "metrics.json").read_text())
    resumed = json.loads((cell / "metrics.json").read_text())
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def _wait(condition, seconds: float, what: str):
    end = time.time() + seconds
    while time.time() < end:
        if (value := condition()):
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def _endless_cell_in_a_subprocess(toy, tmp_path, stdout):
    """`unisrec benchmark run` of one SASRec cell that would train ~forever, in its own session, once
    two epochs are logged: (grid path, runs dir, the cell's folder, the run's Popen)."""
    import yaml

    spec = {"name": "toy_endless", "datasets": {"toy": str(toy)}, "seeds": [1],
            "options": {**TINY, "epochs": 100000, "patience": 100000}, "models": {"SASRec": {"model": "sasrec"}}}
    path, runs = tmp_path / "grid.yaml", tmp_path / "runs"
    path.write_text(yaml.safe_dump(spec))
    cell = runs / "toy" / "SASRec" / "seed1"
    run = subprocess.Popen([sys.executable, "-m", "unisrec", "benchmark", "run", str(path), "--runs", str(runs), "--threads", "1"],
                           stdout=stdout, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait(lambda: (cell / "training_log.jsonl").is_file() and (cell / "training_log.jsonl").read_text().count("\n") >= 2,
              120, "two epochs")
    except AssertionError:
        os.killpg(run.pid, signal.SIGKILL)
        raise
    return path, runs, cell, run


def test_a_cell_never_trains_in_two_processes_and_its_worker_stops_with_its_run(toy, tmp_path):
    """The campaign bug this guards against: `benchmark run` killed, its worker training on; a second
    `benchmark run` resumed the same cell in a second process and the two corrupted its checkpoints."""
    path, runs, cell, first = _endless_cell_in_a_subprocess(toy, tmp_path, stdout=subprocess.DEVNULL)
    worker = None
    try:
        worker = int(lock_holder(cell))
        assert worker != first.pid  # the worker subprocess trains and holds the cell

        said = []
        summary = runner.run_benchmark(load_spec(path), runs, threads=1, isolate=False, say=said.append)
        assert summary["cells"][0]["status"] == "running" and f"pid {worker}" in summary["cells"][0]["message"]
        assert any("not started again" in s for s in said)
        assert re.search(r"after epoch \d+; best valid 0\.\d{4} at epoch \d+", summary["cells"][0]["message"])
        model = load_spec(path).models["SASRec"]
        with pytest.raises(UserError, match=f"pid {worker}"):  # `unisrec train --resume` into it is refused too
            runner.train_cell(model, toy, cell, 1, threads=1)

        first.kill()  # SIGKILL: the run cannot tell its worker anything
        first.wait()
        _wait(lambda: lock_holder(cell) is None, 30, "the orphaned worker to stop")
    finally:
        for pid in (first.pid, worker):
            try:
                os.kill(pid, signal.SIGKILL) if pid else None
            except ProcessLookupError:
                pass
    summary = runner.run_benchmark(load_spec(path), runs, threads=1, isolate=False, finalize=True, say=lambda s: None)
    assert summary["cells"][0]["status"] == "resumed"
    records = [json.loads(line) for line in (cell / "training_log.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in records]
    assert epochs == list(range(1, len(epochs) + 1))  # one trainer: every epoch once, in order
    # the orphan stopped at a step (SIGTERM): its last record may be a partial epoch, which --finalize leaves
    complete = [r["epoch"] for r in records if not r["partial"]]
    assert json.loads((cell / "metrics.json").read_text())["epochs_run"] == complete[-1]


@pytest.mark.parametrize("whom", ["worker", "run", "process group", "ctrl-c"])
def test_a_sigterm_stops_a_cell_at_a_step_with_its_resume_state_and_the_next_run_resumes(toy, tmp_path, whom):
    """What ending a sitting does (`kill -TERM` to the lanes' process group, to the run, or a batch
    system's pre-emption of the worker): the worker finishes its step, writes the resume state and
    exits 143; the cell is "stopped"; a signalled run starts no further cell, waits for its workers
    (nothing still writes when it exits) and exits 143 itself; the next run continues the cell with
    every epoch trained once."""
    path, runs, cell, run = _endless_cell_in_a_subprocess(toy, tmp_path, stdout=subprocess.PIPE)
    try:
        worker = int(lock_holder(cell))
        if whom == "worker":
            os.kill(worker, signal.SIGTERM)
        elif whom == "run":
            run.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C reaches the whole foreground group, as `kill -- -PGID` does
            os.killpg(run.pid, signal.SIGINT if whom == "ctrl-c" else signal.SIGTERM)
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # a stopped cell is not a failed one; a stopped run says it stopped
    assert run.returncode == {"worker": 0, "ctrl-c": 128 + signal.SIGINT}.get(whom, 128 + signal.SIGTERM), out
    assert lock_holder(cell) is None  # the worker has ended by the time the run has
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    summary = json.loads((runs / "benchmark.json").read_text())
    assert summary["cells"][0]["status"] == "stopped" and "resume state written" in summary["cells"][0]["message"]
    log = (cell.parent / "seed1.log").read_text()
    assert f"stopped by {'SIGINT' if whom == 'ctrl-c' else 'SIGTERM'}" in log and "Traceback" not in log
    assert runner.cell_state(cell) == "interrupted"
    summary = runner.run_benchmark(load_spec(path), runs, threads=1, isolate=False, finalize=True, say=lambda s: None)
    assert summary["cells"][0]["status"] == "resumed"
    epochs = [r["epoch"] for r in map(json.loads, (cell / "training_log.jsonl").read_text().splitlines())]
    assert sorted(set(epochs)) == list(range(1, epochs[-1] + 1))  # nothing skipped; a stopped epoch's two parts logged


def test_a_signal_in_process_stops_the_cell_and_starts_no_other(toy, tmp_path, monkeypatch):
    from unisrec.errors import Stopped
    from unisrec.training.supervised import SupervisedTask

    original, calls = SupervisedTask.step_loss, {"n": 0}

    def signalled(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(SupervisedTask, "step_loss", signalled)
    spec = toy_spec(toy, models={"SASRec": {"model": "sasrec"}})
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Stopped):
            runner.run_benchmark(spec, tmp_path, threads=1, isolate=False, say=lambda s: None)
    finally:
        signal.signal(signal.SIGTERM, before)
    status = {c["seed"]: c["status"] for c in json.loads((tmp_path / "benchmark.json").read_text())["cells"]}
    assert status == {1: "stopped", 2: "not started"} and calls["n"] == 3
    assert runner.cell_state(tmp_path / "toy" / "SASRec" / "seed1") == "interrupted"


def test_a_worker_whose_run_is_already_gone_does_not_train():
    with pytest.raises(SystemExit, match="has ended"):
        runner.stop_with_parent(os.getppid() + 1 if os.getppid() != 1 else 2)


def test_a_pretrain_cell_is_resumed_archived_and_only_finished_is_a_from_for_finetuning(tmp_path, monkeypatch, capsys):
    from test_pretrain import make_domain

    target, source = make_domain(tmp_path / "t", "t"), make_domain(tmp_path / "s", "s", seed=1)
    arch = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_experts": 2}
    pre = lambda epochs: spec_from_dict({  # noqa: E731
        "name": "pre", "datasets": {"t": str(target)}, "seeds": [1],
        "options": {"epochs": epochs, "batch_size": 64, "device": "cpu", **arch},
        "models": {"PT": {"model": "pretrain", "source": [str(source)]}}})
    runs = tmp_path / "runs"
    ckpt = runs / "t" / "PT" / "seed1"
    fine = spec_from_dict({"name": "fine", "datasets": {"s": str(source)}, "seeds": [1],
                           "options": {"epochs": 1, "batch_size": 64, "eval_batch_size": 64, "device": "cpu"},
                           "models": {"UniSRec": {"model": "finetune", "from": str(ckpt)}}})

    summary = runner.run_benchmark(pre(1), runs, threads=1, isolate=False, say=lambda s: None)
    cell = summary["cells"][0]
    assert cell["status"] == "finished" and cell["command"].startswith(f"unisrec pretrain {target} {source} --output")
    assert json.loads((ckpt / "done.json").read_text())["stop_reason"] == "max_epochs"
    (ckpt / "done.json").unlink()  # as if the sitting had ended during epoch 2
    summary = runner.run_benchmark(fine, tmp_path / "fine", threads=1, isolate=False, say=lambda s: None)
    assert summary["cells"][0]["status"] == "unavailable" and "has not finished" in summary["cells"][0]["message"]

    summary = runner.run_benchmark(pre(2), runs, threads=1, isolate=False, say=lambda s: None)
    assert summary["cells"][0]["status"] == "resumed"
    assert [r["epoch"] for r in map(json.loads, (ckpt / "training_log.jsonl").read_text().splitlines())] == [1, 2]
    assert json.loads((ckpt / "done.json").read_text())["epochs_done"] == 2
    assert runner.run_benchmark(pre(2), runs, isolate=False, say=lambda s: None)["cells"][0]["status"] == "skipped"

    summary = runner.run_benchmark(fine, tmp_path / "fine", threads=1, isolate=False, say=lambda s: None)
    assert summary["cells"][0]["status"] == "finished"
    assert summary["cells"][0]["command"].startswith(f"unisrec finetune {source} --output") and f"--from {ckpt}" in summary["cells"][0]["command"]

    monkeypatch.chdir(tmp_path)
    archive_runs(runs, tmp_path / "arch")
    kept = sorted(str(p.relative_to(tmp_path / "arch")) for p in (tmp_path / "arch").rglob("*") if p.is_file())
    assert kept == ["benchmark.json", "t/PT/seed1/config.json", "t/PT/seed1/done.json", "t/PT/seed1/training_log.jsonl"]
    assert json.loads((tmp_path / "arch" / "benchmark.json").read_text())["cells"][0]["pretraining"]["epochs_done"] == 2
    capsys.readouterr()
    assert main(["benchmark", "report", str(tmp_path / "arch")]) == 0  # no test metrics: the checkpoints' table
    page = capsys.readouterr().out
    assert re.search(r"\| PT \| 1 \| 2\.00 \| \d+ \| max_epochs \| \d+\.\d{4} \|", page) and "No finished runs" not in page

    # with --checkpoints the archive keeps the checkpoint's weights too, and a cell fine-tunes from the archived copy
    assert main(["benchmark", "archive", str(runs), "--out", str(tmp_path / "arch2"), "--checkpoints"]) == 0
    archived = tmp_path / "arch2" / "t" / "PT" / "seed1"
    assert (archived / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert not list((tmp_path / "arch2").glob("*/*/seed1/resume*"))
    fine2 = spec_from_dict({"name": "fine2", "datasets": {"s": str(source)}, "seeds": [1],
                            "options": {"epochs": 1, "batch_size": 64, "eval_batch_size": 64, "device": "cpu"},
                            "models": {"UniSRec": {"model": "finetune", "from": str(archived)}}})
    summary = runner.run_benchmark(fine2, tmp_path / "fine2", threads=1, isolate=False, say=lambda s: None)
    assert summary["cells"][0]["status"] == "finished", summary["cells"][0]


def test_zero_shot_and_popularity_cells_rank_without_training(tmp_path, monkeypatch, capsys):
    """The ablation's "w/o fine-tuning" and the popularity floor as cells: their ranks are exactly what
    `unisrec evaluate` gives, the checkpoint is only read, every seed is alike, and the report and the
    archive carry them like trained cells."""
    import hashlib

    from test_pretrain import make_domain

    from unisrec.evaluation.cli import evaluate_dir
    from unisrec.models.popularity import evaluate_popularity

    target, source = make_domain(tmp_path / "t", "t"), make_domain(tmp_path / "s", "s", seed=1)
    pre = spec_from_dict({"name": "pre", "datasets": {"s": str(source)}, "seeds": [1],
                          "options": {"epochs": 1, "batch_size": 64, "device": "cpu", "hidden_size": 16, "inner_size": 16,
                                      "n_layers": 1, "n_experts": 2},
                          "models": {"PT": {"model": "pretrain"}}})
    runner.run_benchmark(pre, tmp_path / "pre", threads=1, isolate=False, say=lambda s: None)
    ckpt = tmp_path / "pre" / "s" / "PT" / "seed1"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.iterdir() if p.is_file()}
    spec = spec_from_dict({"name": "abl", "datasets": {"t": str(target)}, "seeds": [1, 2],
                           "options": {"epochs": 300, "mode": "inductive", "device": "cpu"},  # training options: ignored
                           "models": {"w-o FT": {"model": "zero-shot", "from": str(ckpt)},
                                      "Popularity": {"model": "popularity"}}})
    runs = tmp_path / "runs"
    summary = runner.run_benchmark(spec, runs, threads=1, isolate=False, say=lambda s: None)
    assert [c["status"] for c in summary["cells"]] == ["finished"] * 4
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.iterdir() if p.is_file()} == before
    zs = {seed: json.loads((runs / "t" / "w-o_FT" / f"seed{seed}" / "metrics.json").read_text()) for seed in (1, 2)}
    assert zs[1]["test"] == zs[2]["test"] == pytest.approx(evaluate_dir(str(ckpt), "test", (10, 50), str(target), "cpu"))
    ranks = np.load(runs / "t" / "w-o_FT" / "seed1" / "test_ranks.npy")
    assert metrics_from_ranks(ranks) == pytest.approx(zs[1]["test"]) and len(ranks) == Dataset.load(target).num_users
    pop = json.loads((runs / "t" / "Popularity" / "seed2" / "metrics.json").read_text())
    assert pop["test"] == pytest.approx(evaluate_popularity(Dataset.load(target), "test"))
    assert pop["valid"] == pytest.approx(evaluate_popularity(Dataset.load(target), "valid"))
    assert summary["cells"][0]["command"] == f"unisrec evaluate {ckpt} --dataset {target} --json"
    monkeypatch.chdir(tmp_path)  # checkpoint and dataset inside the current folder: shown relative (no machine paths)
    summary = runner.run_benchmark(spec, runs, threads=1, isolate=False, say=lambda s: None)
    assert summary["cells"][0]["command"] == "unisrec evaluate pre/s/PT/seed1 --dataset t --json"
    assert summary["spec"]["models"]["w-o FT"]["from"] == "pre/s/PT/seed1"
    capsys.readouterr()
    assert main(["evaluate", "--popularity", "--dataset", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(pop["test"])
    assert main(["evaluate", "--popularity"]) == 2 and "give --dataset" in capsys.readouterr().err
    # a second run skips them; the archive and the report carry them
    assert {c["status"] for c in runner.run_benchmark(spec, runs, isolate=False, say=lambda s: None)["cells"]} == {"skipped"}
    import shutil  # ... but not when `from:` now names another checkpoint: the zero-shot cells are stale
    shutil.copytree(ckpt, tmp_path / "pre" / "s" / "PT2" / "seed1")
    moved = spec_from_dict({"name": "abl", "datasets": {"t": str(target)}, "seeds": [1, 2],
                            "models": {"w-o FT": {"model": "zero-shot", "from": str(tmp_path / "pre" / "s" / "PT2" / "seed1")}}})
    assert [c["status"] for c in runner.run_benchmark(moved, runs, isolate=False, say=lambda s: None)["cells"]] == ["stale"] * 2
    monkeypatch.chdir(tmp_path)
    archive_runs(runs, tmp_path / "arch")
    assert sorted(p.name for p in (tmp_path / "arch" / "t" / "Popularity" / "seed1").iterdir()) == [
        "config.json", "metrics.json", "test_exposure.npy", "test_ranks.npy"]
    # popularity recommends the same 10 items to everyone; zero-shot spreads its lists by text
    n_test = len(ranks)
    pop_exposure = np.load(runs / "t" / "Popularity" / "seed1" / "test_exposure.npy")
    assert sorted(set(pop_exposure.tolist())) == [0, n_test] and (pop_exposure == n_test).sum() == 10
    zs_exposure = np.load(runs / "t" / "w-o_FT" / "seed1" / "test_exposure.npy")
    assert zs_exposure.sum() == 10 * n_test and (zs_exposure > 0).sum() > 10
    page = render_markdown(build_report(tmp_path / "arch"))
    assert "| Popularity | 1 | – (no training) | popularity: no training |" in page
    with pytest.raises(UserError, match="zero-shot evaluates the model directory named in 'from'"):
        spec_from_dict({"datasets": {"t": str(target)}, "models": {"Z": {"model": "zero-shot"}}})
    with pytest.raises(UserError, match="trains nothing; it takes only device, eval_batch_size, threads, not lr"):
        spec_from_dict({"datasets": {"t": str(target)}, "models": {"P": {"model": "popularity", "lr": 0.1}}})
    with pytest.raises(UserError, match="takes no 'from'"):
        spec_from_dict({"datasets": {"t": str(target)}, "models": {"P": {"model": "popularity", "from": str(ckpt)}}})


def test_output_into_a_closed_pipe_ends_quietly(toy, tmp_path):
    """`unisrec benchmark run ... --dry-run | head -1`: no traceback when the reader has gone."""
    import yaml

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"toy": str(toy)}, "seeds": [1, 2, 3], "models": {"SASRec": {"model": "sasrec"}}}))
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "unisrec", "benchmark", "run", str(path), "--runs", str(tmp_path / "r"), "--dry-run"],
                          stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr, proc.stderr


def test_finalize_tests_interrupted_cells_where_they_stopped(toy, tmp_path):
    spec = toy_spec(toy, models={"SASRec": {"model": "sasrec"}})
    one_epoch = toy_spec(toy, models={"SASRec": {"model": "sasrec"}}, seeds=[2], options={**TINY, "epochs": 1})
    runner.run_benchmark(one_epoch, tmp_path, threads=1, isolate=False, say=lambda s: None)
    cell = tmp_path / "toy" / "SASRec" / "seed2"
    (cell / "metrics.json").unlink()
    summary = runner.run_benchmark(spec, tmp_path, threads=1, isolate=False, finalize=True, say=lambda s: None)
    assert [c["status"] for c in summary["cells"]] == ["not started", "resumed"]
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["stop_reason"] != "early_stopping"
    assert not (tmp_path / "toy" / "SASRec" / "seed1").exists()


def test_bad_options_and_spec_errors(toy, tmp_path):
    bad = toy_spec(toy, models={"SASRec": {"model": "sasrec", "n_expertz": 2}})
    with pytest.raises(UserError, match="SASRec.*n_expertz"):
        runner.run_benchmark(bad, tmp_path, isolate=False, say=lambda s: None)
    with pytest.raises(UserError, match="seed"):
        toy_spec(toy, models={"A": {"model": "sasrec", "seed": 3}})
    with pytest.raises(UserError, match=r"same folder: 'A B', 'A_B' -> A_B \(spaces become _\)"):
        toy_spec(toy, models={"A B": "sasrec", "A_B": "sasrec", "C": "sasrec"})
    with pytest.raises(UserError, match="finetune"):
        toy_spec(toy, models={"A": {"model": "sasrec", "unfreeze_all": True}})
    with pytest.raises(UserError, match="same thing"):
        toy_spec(toy, models={"A": {"model": "sasrec", "from": "x", "init_from": "y"}})
    with pytest.raises(UserError, match="--models"):
        subset(toy_spec(toy), models=["Nope"])
    missing = toy_spec(toy, datasets={"gone": "no/such/folder"}, models={"SASRec": "sasrec"})
    summary = runner.run_benchmark(missing, tmp_path, isolate=False, say=lambda s: None)
    assert {c["status"] for c in summary["cells"]} == {"unavailable"}


def test_from_starts_a_trained_model_from_another_run_and_a_missing_one_is_skipped(grid, toy, tmp_path):
    _, runs, _, _ = grid
    source = runs / "toy" / "SASRec" / "seed1"
    spec = toy_spec(toy, seeds=[1], options={**TINY, "epochs": 1},
                    models={"Transferred": {"model": "sasrec", "from": str(source)},
                            "Missing": {"model": "sasrec", "from": str(tmp_path / "never_trained")}})
    said = []
    summary = runner.run_benchmark(spec, tmp_path / "runs", threads=1, isolate=False, say=said.append)
    status = {c["model"]: c["status"] for c in summary["cells"]}
    assert status == {"Transferred": "finished", "Missing": "unavailable"}
    assert any("never_trained" in s and "not found" in s for s in said)
    stored = json.loads((tmp_path / "runs" / "toy" / "Transferred" / "seed1" / "config.json").read_text())
    assert stored["training"]["init_from"] == str(source)
    cmd = next(c["command"] for c in summary["cells"] if c["model"] == "Transferred")
    assert f"--init-from {source}" in cmd and "--from " not in cmd
    # a finished cell stays finished when the checkpoint it started from is deleted afterwards
    moved = source.with_name("moved_away")
    source.rename(moved)
    try:
        again = runner.run_benchmark(spec, tmp_path / "runs", threads=1, isolate=False, say=lambda s: None)
    finally:
        moved.rename(source)
    assert {c["model"]: c["status"] for c in again["cells"]} == {"Transferred": "skipped", "Missing": "unavailable"}
    # pointed at another checkpoint, the finished cell is stale (reported, never silently reused or retrained)
    other = toy_spec(toy, seeds=[1], options={**TINY, "epochs": 1},
                     models={"Transferred": {"model": "sasrec", "from": str(runs / "toy" / "SASRec" / "seed2")}})
    said = []
    cell = runner.run_benchmark(other, tmp_path / "runs", threads=1, isolate=False, say=said.append)["cells"][0]
    assert cell["status"] == "stale" and "from " in cell["message"] and "seed2" in cell["message"], cell
    # archived with --checkpoints, a trained (not pre-training) cell keeps its weights and is a `from` again
    assert main(["benchmark", "archive", str(runs), "--out", str(tmp_path / "arch"), "--checkpoints"]) == 0
    archived = tmp_path / "arch" / "toy" / "SASRec" / "seed1"
    assert (archived / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    spec2 = toy_spec(toy, seeds=[1], options={**TINY, "epochs": 1}, models={"Again": {"model": "sasrec", "from": str(archived)}})
    assert runner.run_benchmark(spec2, tmp_path / "runs2", threads=1, isolate=False, say=lambda s: None)["cells"][0]["status"] == "finished"


def test_a_model_restricted_to_some_datasets_has_cells_on_those_only(toy, tmp_path):
    spec = spec_from_dict({"datasets": {"a": str(toy), "b": str(toy)}, "seeds": [1, 2],
                           "models": {"Both": {"model": "sasrec"}, "OnlyB": {"model": "sasrec", "datasets": "b"}}})
    names = [c.name for c in runner.cells(spec, tmp_path)]
    assert names == ["a/Both/seed1", "a/Both/seed2", "b/Both/seed1", "b/OnlyB/seed1", "b/Both/seed2", "b/OnlyB/seed2"]
    assert spec.to_dict()["models"]["OnlyB"]["datasets"] == ["b"] and "datasets" not in spec.to_dict()["models"]["Both"]
    assert "datasets" not in spec.models["OnlyB"].options  # an entry key, not a training option
    with pytest.raises(UserError, match="OnlyB.datasets names c, not a dataset of the spec"):
        spec_from_dict({"datasets": {"a": str(toy)}, "models": {"OnlyB": {"model": "sasrec", "datasets": ["c"]}}})


def test_spec_defaults_paper_columns_and_roles(toy):
    spec = spec_from_dict({"datasets": {"online_retail_shuffled": str(toy)},
                           "models": {"S": "sasrec", "T": {"model": "finetune", "mode": "transductive"},
                                      "B": "bert4rec", "X": "mystery", "C": {"model": "ccdr", "role": "control"},
                                      "D": {"model": "ccdr", "role": "control", "paper": "ccdr"}}})
    assert spec.datasets["online_retail_shuffled"].paper == "online_retail"
    assert [(m.paper, m.role) for m in spec.models.values()] == [
        ("sasrec", "baseline"), ("unisrec_t_id", "ours"), ("bert4rec", "baseline"), (None, "baseline"),
        (None, "control"), ("ccdr", "control")]
    assert spec.seeds == (2020,)


def test_shipped_specs_load():
    for name in ("table3_scientific", "table3_online_retail"):
        spec = load_spec(ROOT / "configs" / "benchmarks" / f"{name}.yaml")
        assert spec.seeds == (2020, 2021, 2022)
        assert {"SASRec", "UniSRec_t", "UniSRec_t+ID"} <= set(spec.models)
        assert spec.models["UniSRec_t+ID"].options["mode"] == "transductive"
    assert load_spec(ROOT / "configs/benchmarks/table3_online_retail.yaml").datasets["online_retail_shuffled"].paper == "online_retail"
    # every entry of every shipped spec names options its model knows (a typo would only show when the cell ran)
    for path in sorted((ROOT / "configs" / "benchmarks").glob("*.yaml")):
        spec = load_spec(path)
        for entry in spec.models.values():
            if entry.trains_nothing:  # zero-shot / popularity: no training options
                continue
            train, _ = runner.cell_configs(entry, spec.seeds[0], threads=1)
            assert train.init_from == (entry.pretrained if not entry.is_finetune else None), (path.name, entry.label)


# ------------------------------------------------------------------------- significance
def test_per_user_metrics_known_answer():
    ranks = np.array([0, 1, 9, 10, 49, 50])
    assert per_user_metric(ranks, "recall@10").tolist() == [1, 1, 1, 0, 0, 0]
    assert per_user_metric(ranks, "recall@50").tolist() == [1, 1, 1, 1, 1, 0]
    assert per_user_metric(ranks, "ndcg@10") == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(11), 0, 0, 0])
    for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"):
        assert per_user_metric(ranks, k).mean() == pytest.approx(metrics_from_ranks(ranks)[k])
    # two seeds: the per-user mean over seeds
    assert seed_averaged([[0, 20], [20, 0]], "recall@10").tolist() == [0.5, 0.5]


def test_paired_ttest_against_hand_computed_p():
    rng = np.random.default_rng(0)
    worse = rng.random(200)
    better = worse + 0.02 + rng.normal(0, 0.1, 200)
    d = better - worse
    t_hand = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p_hand = stats.t.sf(t_hand, df=len(d) - 1)  # P(T_{n-1} >= t): one-sided, "better is higher"
    t, p = paired_ttest_greater(better, worse)
    assert t == pytest.approx(t_hand) and p == pytest.approx(p_hand)
    # a small hand example: d = 1, 2, 3, 4 -> t = 2.5 / (1.2910 / 2) = 3.873, df 3
    t, p = paired_ttest_greater(np.array([1.0, 2, 3, 4]), np.zeros(4))
    assert t == pytest.approx(2.5 / (math.sqrt(5 / 3) / 2)) and p == pytest.approx(stats.t.sf(3.8729833, 3)) and 0.01 < p < 0.02


def test_paired_ttest_direction():
    rng = np.random.default_rng(1)
    base = rng.random(500)
    good = base + 0.05 + rng.normal(0, 0.05, 500)
    _, p_right = paired_ttest_greater(good, base)
    _, p_wrong = paired_ttest_greater(base, good)
    assert p_right < 1e-10 and p_wrong > 1 - 1e-10
    # compare() orients by the means, whichever order it is given
    for args in (("good", good, "base", base), ("base", base, "good", good)):
        res = compare(*args)
        assert res["better"] == "good" and res["significant"] and res["p"] == pytest.approx(p_right)
    # RecBole's alternative="less" with ours first asks whether ours is LOWER: p ~ 1 here
    assert stats.ttest_rel(good, base, alternative="less").pvalue > 0.99
    # identical models: no evidence
    assert paired_ttest_greater(base, base) == (0.0, 1.0)
    assert not compare("a", base, "b", base)["significant"]


# ------------------------------------------------------------------------------- report
def fake_tree(root: Path) -> Path:
    """A hand-made run tree: baselines SASRec and B, ours U (n = 400 test users, one seed each
    except SASRec with two); U is clearly best on R@10, SASRec second, B third; on N@10 U and
    SASRec differ by one user's rank (not significant)."""
    rng = np.random.default_rng(0)
    n = 400
    ranks = {
        ("SASRec", 1): rng.integers(0, 30, n), ("SASRec", 2): rng.integers(0, 30, n),
        ("B", 1): rng.integers(5, 40, n),
    }
    u = ranks[("SASRec", 1)].copy()
    u[: n // 2] = 0  # half the users at rank 0: much better recall@10
    ranks[("U", 1)] = u
    spec = {"name": "fake", "seeds": [1, 2], "datasets": {"scientific": {"path": "x", "paper": "scientific"}},
            "models": {"SASRec": {"role": "baseline", "paper": "sasrec", "folder": "SASRec"},
                       "B": {"role": "baseline", "paper": None, "folder": "B"},
                       "U": {"role": "ours", "paper": "unisrec_t", "folder": "U"}}}
    cells = []
    for (model, seed), r in ranks.items():
        cell = root / "scientific" / model / f"seed{seed}"
        cell.mkdir(parents=True)
        np.save(cell / "test_ranks.npy", r.astype(np.int32))
        test = metrics_from_ranks(r)
        (cell / "metrics.json").write_text(json.dumps({"test": test, "valid": test, "best_epoch": 3, "epochs_run": 5,
                                                       "stop_reason": "early_stopping", "wall_seconds": 60.0, "seed": seed}))
        (cell / "training_log.jsonl").write_text("".join(
            json.dumps({"epoch": e, "loss": 1.0, "valid": {"ndcg@10": 0.01 * e}}) + "\n" for e in range(1, 6)))
        cells.append({"dataset": "scientific", "model": model, "seed": seed, "command": f"unisrec train {model}"})
    (root / "benchmark.json").write_text(json.dumps({"spec": spec, "cells": cells}))
    return root


def test_report_marks_best_second_star_and_improv(tmp_path):
    runs = fake_tree(tmp_path / "runs")
    result = build_report(runs)
    d = result["datasets"]["scientific"]
    row = d["rows"]["recall@10"]
    m = row["means"]
    assert m["U"] > m["SASRec"] > m["B"]
    assert row["marks"] == {"U": "best", "SASRec": "second", "B": ""}
    assert row["best_baseline"] == "SASRec" and row["improv"] == pytest.approx(m["U"] / m["SASRec"] - 1)
    assert row["significant"] == {"U": True}
    md = render_markdown(result)
    r10 = next(line for line in md.splitlines() if line.startswith("| R@10 |"))
    cells = [c.strip() for c in r10.strip("|").split("|")]
    # columns: Metric, SASRec, paper, B, U (ours), paper, Improv.
    assert cells[1] == f"<u>{m['SASRec']:.4f}</u>" and cells[2] == "0.1080"
    assert cells[3] == f"{m['B']:.4f}"
    assert cells[4] == f"**{m['U']:.4f}**\\*" and cells[5] == "0.1188"
    assert cells[6] == f"{row['improv']:+.2%}"
    # per-user values of SASRec are averaged over its 2 seeds before pairing
    t = next(t for t in d["tests"] if t["metric"] == "recall@10" and {t["better"], t["worse"]} == {"U", "SASRec"})
    assert t["seeds"] == {"U": 1, "SASRec": 2} and t["n_users"] == 400
    assert "± " in md and "(n=2)" in md
    # every rank is below 50, so R@50 ties at 1.0: all bold, no second, no star (no evidence either way)
    r = d["rows"]["recall@50"]
    assert r["marks"] == {"U": "best", "SASRec": "best", "B": "best"} and r["significant"] == {"U": False}
    assert "\\*" not in next(line for line in md.splitlines() if line.startswith("| R@50 |"))


def test_all_pairs_adds_each_untested_pair_once_and_the_cli_flag_reaches_it(tmp_path, capsys):
    runs = fake_tree(tmp_path / "runs")
    pairs = lambda d, k: [frozenset((t["better"], t["worse"])) for t in d["tests"] if t["metric"] == k]  # noqa: E731
    default = build_report(runs)["datasets"]["scientific"]
    everything = build_report(runs, all_pairs=True)["datasets"]["scientific"]
    for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"):
        assert sorted(map(sorted, pairs(everything, k))) == [["B", "SASRec"], ["B", "U"], ["SASRec", "U"]]  # each once
    # R@10: U best, SASRec second, so the two baselines are compared only when asked
    assert frozenset(("SASRec", "B")) not in pairs(default, "recall@10")
    extra = [t for t in everything["tests"] if t["metric"] == "recall@10" and t["kind"] == "pair"]
    assert [frozenset((t["better"], t["worse"])) for t in extra] == [frozenset(("SASRec", "B"))]
    assert everything["rows"] == default["rows"]  # marks, stars and Improv. do not change
    assert main(["benchmark", "report", str(runs), "--all-pairs"]) == 0
    assert "| R@10 | pair | " in capsys.readouterr().out


def test_a_started_cell_that_has_not_finished_is_listed_with_its_curve_and_counted_nowhere(tmp_path):
    runs = fake_tree(tmp_path / "runs")
    before = build_report(runs)["datasets"]["scientific"]
    cell = runs / "scientific" / "B" / "seed2"  # B's second seed: a curve, no metrics.json yet
    cell.mkdir()
    (cell / "training_log.jsonl").write_text("".join(
        json.dumps({"epoch": e, "loss": 1.0, "valid": {"ndcg@10": v}}) + "\n" for e, v in ((1, 0.02), (2, 0.05), (3, 0.04))))
    after = build_report(runs)["datasets"]["scientific"]
    assert after["unfinished"] == [{"model": "B", "seed": 2, "dir": "scientific/B/seed2",
                                    "epochs_logged": 3, "best_valid": 0.05, "best_epoch": 2}]
    assert after["models"]["B"]["seeds"] == [1] and after["rows"] == before["rows"]  # in no mean, mark or test
    md = render_markdown(build_report(runs))
    assert "| B | 2 | 3 | 0.0500 (2) |" in md
    assert before["unfinished"] == [] and "Not finished" not in render_markdown(build_report(fake_tree(tmp_path / "r2")))


def test_a_control_is_tested_against_ours_but_never_ranked_or_the_best_baseline(tmp_path):
    """A control (a baseline with a part switched off) stronger than every baseline must not become
    the "best baseline", take a mark, or be the "second" of the best-vs-second test."""
    runs = fake_tree(tmp_path / "runs")
    cell = runs / "scientific" / "C" / "seed1"
    cell.mkdir(parents=True)
    ranks = np.zeros(400, dtype=np.int32)  # perfect: above U on every metric
    np.save(cell / "test_ranks.npy", ranks)
    test = metrics_from_ranks(ranks)
    (cell / "metrics.json").write_text(json.dumps({"test": test, "valid": test, "best_epoch": 1, "epochs_run": 2,
                                                   "stop_reason": "early_stopping", "wall_seconds": 1.0}))
    summary = json.loads((runs / "benchmark.json").read_text())
    summary["spec"]["models"]["C"] = {"role": "control", "paper": None, "folder": "C"}
    (runs / "benchmark.json").write_text(json.dumps(summary))
    d = build_report(runs)["datasets"]["scientific"]
    row = d["rows"]["recall@10"]
    assert row["means"]["C"] == 1.0 and row["marks"]["C"] == ""
    assert row["marks"]["U"] == "best" and row["best_baseline"] == "SASRec" and row["significant"] == {"U": True}
    kinds = {(t["kind"], t["better"], t["worse"]) for t in d["tests"] if t["metric"] == "recall@10"}
    assert ("ours vs control", "C", "U") in kinds
    assert not any("second" in k and "C" in (b, w) for k, b, w in kinds)
    assert "C (control)" in render_markdown(build_report(runs))


def test_report_without_per_user_ranks_says_so(tmp_path):
    runs = fake_tree(tmp_path / "runs")
    (runs / "scientific" / "B" / "seed1" / "test_ranks.npy").unlink()  # a run from before ranks were saved
    d = build_report(runs)["datasets"]["scientific"]
    t = next(t for t in d["tests"] if t["metric"] == "recall@10" and "B" in (t["better"], t["worse"]))
    assert t["p"] is None and "B" in t["note"] and not t["significant"]
    assert "no per-user ranks" in render_markdown(build_report(runs))


def test_bars_are_the_seed_means_with_every_seed_drawn(tmp_path):
    """Fig. 2 / 3 layout: per metric one bar per model at its seed mean, its seeds as dots, n in the legend."""
    import matplotlib.pyplot as plt

    from unisrec.benchmark.report import BAR_METRICS, bars_figure

    d = build_report(fake_tree(tmp_path / "runs"))
    fig = bars_figure(d, title="Ablation (Fig. 3), Scientific")
    assert fig.get_suptitle() == "Ablation (Fig. 3), Scientific"  # the PNG names its experiment
    ax = fig.axes[0]
    models = d["datasets"]["scientific"]["models"]
    heights = [p.get_height() for p in ax.patches]
    expected = [models[m]["mean"][k] for m in models for k in BAR_METRICS]  # bars drawn model by model
    assert heights == pytest.approx(expected)
    dots = sorted(y for line in ax.lines if line.get_marker() == "." for y in line.get_ydata())
    assert dots == pytest.approx(sorted(v for m in models.values() for k in BAR_METRICS for v in m["seed_values"][k]))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["SASRec (n=2)", "B (n=1)", "U, ours (n=1)"]
    plt.close(fig)


def test_rank_marks_and_format():
    assert rank_marks({"a": 0.3, "b": 0.2, "c": 0.3, "d": 0.1}) == {"a": "best", "b": "second", "c": "best", "d": ""}
    assert fmt_cell(0.12345, "best", True) == "**0.1235**\\*"
    assert fmt_cell(0.1, "second") == "<u>0.1000</u>"


def test_report_cli_writes_markdown_json_png(tmp_path, capsys):
    runs = fake_tree(tmp_path / "runs")
    assert main(["benchmark", "report", str(runs), "--out", str(tmp_path / "out" / "t3")]) == 0
    md = (tmp_path / "out" / "t3.md").read_text()
    assert "## scientific" in md and "t3_scientific_curves.png" in md
    data = json.loads((tmp_path / "out" / "t3.json").read_text())
    assert data["datasets"]["scientific"]["rows"]["ndcg@10"]["marks"]["U"] in ("best", "second")
    assert (tmp_path / "out" / "t3_scientific_curves.png").stat().st_size > 5000
    assert "t3_bars.png" in md and (tmp_path / "out" / "t3_bars.png").stat().st_size > 5000
    assert main(["benchmark", "report", str(runs)]) == 0 and "| R@10 |" in capsys.readouterr().out


def test_run_cli_dry_run(toy, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"datasets: {{toy: {toy}}}\nseeds: [1]\nmodels: {{SASRec: sasrec, X: not_yet}}\n")
    assert main(["benchmark", str(spec), "--runs", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "toy/SASRec/seed1: would start" in out and "not_yet" in out and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------ paper numbers
def test_docs_reference_table_equals_the_package():
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- table3-reference:start -->(.*?)<!-- table3-reference:end -->", text, re.S).group(1)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()[2:]]
    assert len(rows) >= 6
    table = paper.table3()
    for ds, model, *vals in rows:
        assert table[(ds, model)] == tuple(float(v) for v in vals), (ds, model)
    spec = importlib.util.spec_from_file_location("benchlib", ROOT / "benchmarks" / "benchlib.py")
    benchlib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchlib)
    assert benchlib.paper_table3() == table
    assert benchlib.paper_row("online_retail_shuffled", "transductive") == table[("online_retail", "unisrec_t_id")]


def test_paper_table_is_complete():
    table = paper.table3()
    assert len(table) == 6 * 9
    # spot checks against the paper's Table 3
    assert table[("scientific", "unisrec_t_id")] == (0.1235, 0.0634, 0.2473, 0.0904)
    assert table[("online_retail", "fdsa")] == (0.1490, 0.0719, 0.3802, 0.1223)
    assert paper.paper_value("scientific", "inductive", "ndcg@10") == 0.0641
    assert paper.paper_value("scientific", "ccdr", "recall@10") == 0.0695
    assert paper.paper_value("games", "sasrec", "recall@10") is None


def test_summary_is_written_before_and_during_a_campaign(toy, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    seen = []
    real = runner.train_cell

    def spy(model, dataset_dir, output, seed, *a, **k):
        summary = json.loads((runs / "benchmark.json").read_text())  # exists before any cell has finished
        status = {(c["model"], c["seed"]): c["status"] for c in summary["cells"]}
        seen.append((model.label, seed, status[(model.label, seed)], sum(s == "finished" for s in status.values())))
        return real(model, dataset_dir, output, seed, *a, **k)

    monkeypatch.setattr(runner, "train_cell", spy)
    spec = toy_spec(toy, seeds=[1], models={"SASRec": {"model": "sasrec"}, "SASRec-b": {"model": "sasrec", "hidden_size": 8}})
    runner.run_benchmark(spec, runs, threads=1, isolate=False, say=lambda s: None)
    assert seen == [("SASRec", 1, "queued", 0), ("SASRec-b", 1, "queued", 1)]
    assert {c["status"] for c in json.loads((runs / "benchmark.json").read_text())["cells"]} == {"finished"}


# ------------------------------------------------------------------------------- archive


def test_archive_keeps_what_the_report_needs_without_paths_and_restores_a_campaign(grid, tmp_path, monkeypatch):
    spec, runs, _, _ = grid
    monkeypatch.setenv("UNISREC_DATA", str(Path(spec.datasets["toy"].path).parent))
    monkeypatch.chdir(tmp_path)
    (runs / "toy" / "SASRec" / "seed9").mkdir(exist_ok=True)  # a cell that never finished: left out, named
    (runs / "toy" / "SASRec" / "seed9" / "config.json").write_text("{}")
    stage = runs / "toy" / "SASRec" / "seed1" / "pretrain"  # a stage of its own, as S3-Rec's pre-training writes
    (stage / "resume").mkdir(parents=True, exist_ok=True)
    (stage / "training_log.jsonl").write_text(json.dumps({"epoch": 1, "loss": 2.5, "data": str(spec.datasets["toy"].path)}) + "\n")
    (stage / "done.json").write_text(json.dumps({"epochs": 1}))
    (stage / "model.safetensors").write_bytes(b"weights")
    assert main(["benchmark", "archive", str(runs), "--out", "archive"]) == 0
    arch = tmp_path / "archive"
    kept = sorted(str(p.relative_to(arch)) for p in arch.rglob("*") if p.is_file())
    files = sorted(("config.json", "metrics.json", "test_exposure.npy", "test_ranks.npy", "training_log.jsonl"))
    assert kept == ["benchmark.json"] + sorted(
        [f"toy/{m}/seed{s}/{f}" for m in ("SASRec", "UniSRec_t") for s in (1, 2) for f in files]
        + ["toy/SASRec/seed1/pretrain/done.json", "toy/SASRec/seed1/pretrain/training_log.jsonl"])
    assert json.loads((arch / "toy/SASRec/seed1/pretrain/training_log.jsonl").read_text())["data"] == "$UNISREC_DATA/toy"
    for p in arch.rglob("*.json*"):  # no machine paths: the data folder shows as $UNISREC_DATA
        text = p.read_text()
        assert str(tmp_path) not in text and str(runs) not in text and str(spec.datasets["toy"].path) not in text, p
    for p in runs.glob("toy/*/seed[12]/test_ranks.npy"):
        assert np.array_equal(np.load(p), np.load(arch / p.relative_to(runs)))
    # the archive reports exactly like the run tree
    a, b = build_report(runs), build_report(arch)
    assert a["datasets"]["toy"]["tests"] == b["datasets"]["toy"]["tests"] and a["datasets"]["toy"]["tests"]
    assert a["datasets"]["toy"]["rows"] == b["datasets"]["toy"]["rows"]
    # copied back as a run folder, every archived cell counts as finished and nothing retrains
    restored = tmp_path / "restored"
    import shutil
    shutil.copytree(arch, restored)

    def no_training(*a, **k):
        raise AssertionError("an archived cell was trained again")

    monkeypatch.setattr(runner, "train_cell", no_training)
    summary = runner.run_benchmark(spec, restored, threads=1, isolate=False, say=lambda s: None)
    assert [c["status"] for c in summary["cells"] if c["model"] != "Later"] == ["skipped"] * 4
    with pytest.raises(UserError, match="differ"):
        archive_runs(runs, runs)
    # `run --archive`: on a wiped machine (an empty run folder) the archived cells are copied back, not retrained
    wiped = tmp_path / "wiped"
    (wiped / "toy" / "UniSRec_t" / "seed2").mkdir(parents=True)  # a folder already there is never replaced
    said = []
    summary = runner.run_benchmark(spec, wiped, threads=1, isolate=False, say=said.append, archive=arch, dry_run=True)
    assert not (wiped / "toy" / "SASRec").exists()  # a dry run copies nothing
    assert [c["status"] for c in summary["cells"] if c["model"] != "Later"] == ["archived", "archived", "archived", "new"]
    def stand_in(model, dataset_dir, output, seed, *a, **k):  # the one cell left to train (its folder was empty)
        (Path(output) / "metrics.json").write_text("{}")
        return {}

    monkeypatch.setattr(runner, "train_cell", stand_in)
    summary = runner.run_benchmark(spec, wiped, threads=1, isolate=False, say=said.append, archive=arch)
    assert [c["status"] for c in summary["cells"] if c["model"] != "Later"] == ["skipped", "skipped", "skipped", "finished"]
    assert sum("copied back from the archive" in s for s in said) == 3
    for rel in ("toy/SASRec/seed1", "toy/SASRec/seed2", "toy/UniSRec_t/seed1"):
        assert sorted(p.name for p in (wiped / rel).iterdir()) == sorted(p.name for p in (arch / rel).iterdir())
    assert [p.name for p in (wiped / "toy" / "UniSRec_t" / "seed2").iterdir()] == ["metrics.json"]  # the stand-in's


def test_archive_with_spec_writes_the_summary_a_running_campaign_has_not_written_yet(grid, tmp_path, monkeypatch):
    import shutil

    spec, runs, _, _ = grid
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    (copy / "benchmark.json").unlink()  # a campaign still running (or cut off) has not written it
    monkeypatch.setattr(runner, "train_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    archive_runs(copy, tmp_path / "archive", spec)
    summary = json.loads((tmp_path / "archive" / "benchmark.json").read_text())
    assert set(summary["spec"]["models"]) == {"SASRec", "UniSRec_t", "Later"} and summary["finished"] == 4
    # the archive's summary describes the archive: what one `benchmark run` said of a cell (running,
    # not selected...) is not copied, so the committed file does not change with every sitting
    runs_summary = json.loads((copy / "benchmark.json").read_text())
    for c in runs_summary["cells"]:
        c.update(status="not selected", message="being trained by another process (pid 1)", estimated_seconds=9)
    (copy / "benchmark.json").write_text(json.dumps(runs_summary))
    archive_runs(copy, tmp_path / "archive")
    again = json.loads((tmp_path / "archive" / "benchmark.json").read_text())
    assert again == summary
    assert sorted((c["model"], c["status"]) for c in again["cells"]) == [("Later", "not archived")] * 2 + sorted(
        [(m, "finished") for m in ("SASRec", "UniSRec_t") for _ in range(2)])
    assert all("message" not in c and "estimated_seconds" not in c for c in again["cells"])
    assert all((c.get("test") is not None) == (c["status"] == "finished") for c in again["cells"])
    assert build_report(tmp_path / "archive")["datasets"]["toy"]["models"]["UniSRec_t"]["role"] == "ours"


def test_an_archived_cell_keeps_the_command_that_trained_it_when_the_spec_changes_in_a_way_it_accepts(grid, toy, tmp_path, monkeypatch):
    """`precision: bfloat16` -> `auto` leaves finished cells valid (skipped), but the run tree's summary then
    shows the command today's spec would run; the archive keeps the one that made each cell, until the cell
    itself changes (other test metrics: trained again)."""
    import shutil

    spec, runs, _, _ = grid
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    monkeypatch.setattr(runner, "train_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    archive_runs(copy, tmp_path / "archive", spec)
    made = {(c["model"], c["seed"]): c["command"] for c in json.loads((tmp_path / "archive" / "benchmark.json").read_text())["cells"]}
    assert all("--precision" not in made[("SASRec", s)] for s in (1, 2))
    auto = toy_spec(toy, options={**TINY, "precision": "auto"})
    summary = runner.run_benchmark(auto, copy, threads=1, isolate=False, say=lambda s: None)
    assert {c["status"] for c in summary["cells"] if c["model"] != "Later"} == {"skipped"}
    assert all("--precision auto" in c["command"] for c in summary["cells"])  # the run tree: today's spec
    cell = copy / "toy" / "SASRec" / "seed2"  # ... and one cell trained again (other test metrics)
    metrics = json.loads((cell / "metrics.json").read_text())
    metrics["test"] = {k: v / 2 for k, v in metrics["test"].items()}
    (cell / "metrics.json").write_text(json.dumps(metrics))
    archive_runs(copy, tmp_path / "archive", auto)
    kept = {(c["model"], c["seed"]): c["command"] for c in json.loads((tmp_path / "archive" / "benchmark.json").read_text())["cells"]}
    assert kept[("SASRec", 1)] == made[("SASRec", 1)] and kept[("UniSRec_t", 2)] == made[("UniSRec_t", 2)]
    assert "--precision auto" in kept[("SASRec", 2)]


def test_run_with_archive_archives_after_each_cell(toy, tmp_path):
    import yaml

    spec = {"name": "toy_archive", "datasets": {"toy": str(toy)}, "seeds": [1], "options": dict(TINY),
            "models": {"SASRec": {"model": "sasrec"}, "SASRec-b": {"model": "sasrec", "hidden_size": 8}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs, arch = tmp_path / "runs", tmp_path / "arch"
    assert main(["benchmark", "run", str(path), "--runs", str(runs), "--in-process", "--archive", str(arch)]) == 0
    assert sorted(p.parent.parent.name for p in arch.glob("toy/*/seed1/metrics.json")) == ["SASRec", "SASRec-b"]
    assert json.loads((arch / "benchmark.json").read_text())["finished"] == 2
    assert not list(arch.rglob("*.safetensors"))  # no weights in an archive


def test_dry_run_estimates_a_cells_time_from_the_finished_cells_of_its_model(grid, tmp_path, capsys):
    import shutil

    spec, runs, _, _ = grid
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    shutil.rmtree(copy / "toy" / "SASRec" / "seed2")  # one cell still to train
    wall = json.loads((copy / "toy" / "SASRec" / "seed1" / "metrics.json").read_text())["wall_seconds"]
    said = []
    summary = runner.run_benchmark(spec, copy, dry_run=True, say=said.append)
    cell = next(c for c in summary["cells"] if c["model"] == "SASRec" and c["seed"] == 2)
    assert cell["status"] == "new" and cell["estimated_seconds"] == pytest.approx(wall)
    assert any("SASRec/seed2: would start; ~" in s and "1 finished cell of this model" in s for s in said)
    assert not (copy / "toy" / "SASRec" / "seed2").exists()
    import yaml  # the command line sums the estimates

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "toy_grid", "datasets": {"toy": str(spec.datasets["toy"].path)}, "seeds": [1, 2],
                                    "options": dict(TINY), "models": {"SASRec": {"model": "sasrec"}}}))
    shutil.rmtree(copy / "toy" / "SASRec" / "seed1")  # now no finished SASRec cell sets a pace for either
    (copy / "toy" / "SASRec" / "seed9").mkdir(exist_ok=True)  # (another test may have left an unfinished one)
    (copy / "toy" / "SASRec" / "seed9" / "metrics.json").write_text(json.dumps({"wall_seconds": 5400.0}))  # a 1.5-hour cell
    capsys.readouterr()
    assert main(["benchmark", "run", str(path), "--runs", str(copy), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimated cell time: ~3.0 h for 2 of the 2 cells to train" in out


def test_an_unfinished_cell_says_when_early_stopping_can_end_it_at_the_soonest(tmp_path):
    """Best at epoch 8 with patience 10: it cannot stop before epoch 18; 2.5 epochs of 100 steps are done,
    so >= 15.5 more epochs at the median of its last five complete epochs (training + validation)."""
    from unisrec.training.state import EarlyStopping, RunState

    run = RunState(epoch=2, step_in_epoch=50, global_step=250, early_stopping=EarlyStopping(10, 0.05, 8, 0),
                   config={"train": {"epochs": 300}})
    log = [{"epoch": e, "seconds": s, "eval_seconds": 10.0, "partial": False} for e, s in enumerate([900, 90, 100, 110, 120, 130], 1)]
    log.append({"epoch": 7, "seconds": 5000.0, "partial": True})  # a partial epoch is not a pace
    (tmp_path / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    pace = runner.epoch_seconds(tmp_path)
    assert pace == 120.0  # median of 100..140: the first, slow epoch is out of the last five
    said = runner.earliest_end(run, pace)
    assert said == f"ends after epoch 18 at the soonest (patience 10): >= 15.5 more epochs, ~{15.5 * 120 / 3600:.1f} h at its recent 120 s per epoch"
    run.config["train"]["epochs"] = 12  # the epoch limit comes first
    assert runner.earliest_end(run, None) == "ends after epoch 12 at the soonest (its epoch limit): >= 9.5 more epochs"
    # a stage without validation runs to its own limit; a run at its end, or never validated, says nothing
    stage = RunState(epoch=3, global_step=30, config={"train": {"epochs": 300}})
    assert runner.earliest_end(stage, 60.0, limit=10) == "ends after epoch 10 (its epoch limit): 7.0 more epochs, ~0.1 h at its recent 60 s per epoch"
    assert runner.earliest_end(stage, 60.0) == "ends after epoch 300 (its epoch limit): 297.0 more epochs, ~5.0 h at its recent 60 s per epoch"
    assert runner.earliest_end(RunState(epoch=18, global_step=1800, early_stopping=EarlyStopping(10, 0.05, 8, 10)), 60.0) == ""
    assert runner.earliest_end(RunState(), None) == "" and runner.epoch_seconds(tmp_path / "none") is None
