"""Fine-tuning / SASRec training end to end on small generated data (seconds, CPU)."""

import json

import numpy as np
import pytest
import torch

from unisrec.data.dataset import Dataset
from unisrec.errors import UserError
from unisrec.models.checkpoint import config_from_dict
from unisrec.models.sasrec import SASRecConfig
from unisrec.models.unisrec import UniSRecConfig
from unisrec.training.batching import train_windows
from unisrec.training.config import TrainConfig
from unisrec.training.finetune import finetune as finetune_model
from unisrec.training.supervised import train_model

N_ITEMS = 40


def make_toy(path, n_items=N_ITEMS, n_users=240, dim=16, seed=0):
    """Users mostly walk a cycle i -> i+1 (80%), else jump at random; items have random 'text' vectors."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        s = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(5, 12)) - 1):
            s.append(s[-1] % n_items + 1 if rng.random() < 0.8 else int(rng.integers(1, n_items + 1)))
        seqs.append(s)
    lens = [len(s) for s in seqs]
    ds = Dataset(
        name="toy",
        item_ids=[f"i{k}" for k in range(1, n_items + 1)],
        item_texts=[f"item {k}." for k in range(1, n_items + 1)],
        user_ids=[f"u{k}" for k in range(n_users)],
        seq_offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        seq_items=np.concatenate(seqs).astype(np.int32),
    )
    ds.save(path)
    feats = np.zeros((n_items + 1, dim), np.float32)
    feats[1:] = rng.normal(size=(n_items, dim))
    (path / "features").mkdir()
    np.save(path / "features" / "rand.npy", feats)
    ds = Dataset.load(path)
    ds.update_manifest(features={"rand": {"file": "features/rand.npy", "dim": dim, "encoder": "random"}}, default_features="rand")
    return ds


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    make_toy(path)
    return path


def cfg(**kw):
    """(training options, model options) of a small run; model options are the flat flag names."""
    base = dict(epochs=4, batch_size=64, hidden_size=16, inner_size=16, n_experts=2, lr=3e-3, progress=False, threads=1, eval_batch_size=64)
    base.update(kw)
    train = {k: v for k, v in base.items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**train), {k: v for k, v in base.items() if k not in train}


def finetune(data, output, config, pretrained=None, resume=False):
    train, model = config
    return finetune_model(data, output, train, config_from_dict(UniSRecConfig, model), pretrained=pretrained, resume=resume)


def train_sasrec(data, output, config, resume=False):
    train, model = config
    model.pop("n_experts", None)
    return train_model("sasrec", data, output, train, config_from_dict(SASRecConfig, model), resume=resume)


def test_training_beats_random_and_round_trips(toy, tmp_path):
    from unisrec.evaluation.cli import evaluate_dir

    metrics = finetune(toy, tmp_path / "m", cfg(mode="transductive", epochs=6))
    # a random ranking of 40 items has recall@10 = 0.25 and ndcg@10 ~ 0.11
    assert metrics["test"]["recall@10"] > 0.6 and metrics["test"]["ndcg@10"] > 0.3
    log = [json.loads(line) for line in (tmp_path / "m" / "training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7))
    assert {"epoch", "loss", "seconds", "valid"} <= set(log[0]) and "ndcg@10" in log[0]["valid"]
    assert log[-1]["loss"] < log[0]["loss"]
    # the saved best checkpoint, reloaded, gives exactly the recorded metrics
    assert evaluate_dir(str(tmp_path / "m"), "test", (10, 50)) == metrics["test"]
    assert evaluate_dir(str(tmp_path / "m"), "valid", (10, 50)) == metrics["valid"]
    best = max(log, key=lambda r: r["valid"]["ndcg@10"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["valid"] == pytest.approx(best["valid"])


def test_sasrec_every_position_learns(toy, tmp_path):
    metrics = train_sasrec(toy, tmp_path / "s", cfg(batching="every-position", epochs=6, lr=5e-3))
    assert metrics["test"]["recall@10"] > 0.6


def test_transfer_freezes_transformer_and_positions(toy, tmp_path):
    from safetensors.torch import load_file

    from unisrec.models.unisrec import UniSRec, UniSRecConfig

    torch.manual_seed(1)
    pre = UniSRec(config_from_dict(UniSRecConfig, dict(text_dim=16, hidden_size=16, inner_size=16, n_experts=2)))
    pre.save_pretrained(tmp_path / "pre")
    finetune(toy, tmp_path / "ft", cfg(mode="transductive", epochs=2), pretrained=tmp_path / "pre")
    before, after = load_file(str(tmp_path / "pre" / "model.safetensors")), load_file(str(tmp_path / "ft" / "model.safetensors"))
    frozen = [k for k in before if k.startswith(("encoder.layers", "encoder.position_embedding"))]
    assert frozen
    for k in frozen:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert not torch.equal(after["adaptor.w_gate"], before["adaptor.w_gate"])
    assert not torch.equal(after["encoder.norm.weight"], before["encoder.norm.weight"])
    assert "item_id_embedding.weight" in after


def test_text_dim_mismatch_is_a_user_error(toy, tmp_path):
    from unisrec.models.unisrec import UniSRec, UniSRecConfig

    UniSRec(config_from_dict(UniSRecConfig, dict(text_dim=24, hidden_size=16, inner_size=16, n_experts=2))).save_pretrained(tmp_path / "pre")
    with pytest.raises(UserError, match="24-d"):
        finetune(toy, tmp_path / "ft", cfg(), pretrained=tmp_path / "pre")


def test_resume_continues_exactly(toy, tmp_path):
    full = finetune(toy, tmp_path / "full", cfg(epochs=3))
    finetune(toy, tmp_path / "part", cfg(epochs=2))
    with pytest.raises(UserError, match="--resume"):
        finetune(toy, tmp_path / "part", cfg(epochs=3))
    resumed = finetune(toy, tmp_path / "part", cfg(epochs=3), resume=True)
    read = lambda p: [json.loads(x) for x in (p / "training_log.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = read(tmp_path / "full"), read(tmp_path / "part")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def test_every_position_windows_cover_each_target_once():
    seqs = [list(range(1, 9)), list(range(10, 10 + 30))]  # lengths 8 and 30
    lens = [len(s) for s in seqs]
    ds = Dataset("w", [str(i) for i in range(1, 40)], [""] * 39, ["a", "b"],
                 np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), np.concatenate(seqs).astype(np.int32))
    inputs, wlen, targets, counted = train_windows(ds, max_history=10, stride=5)
    # faithful training targets: positions 1..len-3 of each user
    _, _, faithful = ds.examples("train", 10)
    assert sorted(targets[counted].tolist()) == sorted(faithful.tolist())
    # first window of user 0: inputs 1..5 predict 2..6
    assert inputs[0, :5].tolist() == [1, 2, 3, 4, 5] and targets[0, :5].tolist() == [2, 3, 4, 5, 6]
    # every counted target after a user's first window sees at least `stride` earlier items
    history = np.broadcast_to(np.arange(1, 11)[None, :], counted.shape)
    first_window = np.zeros(len(wlen), bool)
    first_window[[0, 1]] = True  # user 0 has one window, user 1's first window is row 1
    assert history[counted & ~first_window[:, None]].min() >= 5
    # each target's inputs end right before it (the item before a target is its predecessor here)
    assert (inputs[counted] == targets[counted] - 1).all()


def test_cli_train_then_evaluate_json(toy, tmp_path, capsys):
    from unisrec.cli import main

    out = tmp_path / "cli"
    args = ["--output", str(out), "--epochs", "1", "--hidden-size", "16", "--inner-size", "16",
            "--batch-size", "64", "--progress", "false", "--threads", "1"]
    assert main(["train", "sasrec", str(toy), *args, "--batching", "every-position"]) == 0
    assert json.loads((out / "config.json").read_text())["training"]["batching"] == "every-position"
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--split", "valid"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "metrics.json").read_text())["valid"]
    # typed modes: argparse refuses a bad value with the valid choices (exit 2), as --help lists them
    for command in (["finetune", str(toy), "--mode"], ["train", "sasrec", str(toy), "--batching"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "bogus", "--output", str(tmp_path / "x")])
        assert exit_.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    # the Python API refuses it too, with the config's own message
    with pytest.raises(ValueError, match="mode must be inductive or transductive"):
        UniSRecConfig(mode="bogus")


def test_grouped_step_equals_padded_release_step(toy):
    """Length groups + gathered item table give the release's loss (padded to 50, adapted per position)."""
    import torch.nn.functional as F

    from unisrec.models.unisrec import UniSRec, UniSRecConfig
    from unisrec.training.batching import LastItemBatching

    ds = Dataset.load(toy)
    hist, lens, tgt = ds.examples("train", 50)
    torch.manual_seed(0)
    m = UniSRec(config_from_dict(UniSRecConfig, dict(text_dim=16, hidden_size=16, inner_size=16, n_experts=2, mode="transductive", num_items=ds.num_items)))
    m.set_item_features(torch.from_numpy(np.array(ds.features())))
    m.eval()  # no dropout / gate noise: the two computations must agree exactly
    ours, _ = LastItemBatching(ds, 50, 64).loss(m, np.arange(len(tgt)), "cpu")
    seq = torch.from_numpy(hist)
    s = m.encoder(m.item_representations(seq), torch.from_numpy(lens))
    release = F.cross_entropy(m.scores(s, m.item_representations()), torch.from_numpy(tgt))
    torch.testing.assert_close(ours, release, rtol=1e-5, atol=1e-6)


def test_a_sigterm_mid_epoch_finishes_the_step_writes_the_resume_state_and_the_resumed_run_is_exact(toy, tmp_path, monkeypatch):
    import os
    import signal

    from unisrec.errors import Stopped
    from unisrec.training.state import read_run_state
    from unisrec.training.supervised import SupervisedTask

    full = train_sasrec(toy, tmp_path / "full", cfg(epochs=2))
    steps_per_epoch = read_run_state(tmp_path / "full").global_step // 2
    original, calls = SupervisedTask.step_loss, {"n": 0}

    def signalled_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:  # during the third step of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(SupervisedTask, "step_loss", signalled_in_epoch_2)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped, match="--resume") as stopped:  # no mid-epoch checkpoints: the signal writes one
        train_sasrec(toy, tmp_path / "m", cfg(epochs=2, checkpoint_minutes=0.0))
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    # the process is ending: a late SIGTERM (e.g. passed on by a parent) must not kill it mid-report
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    signal.signal(signal.SIGTERM, before)
    assert calls["n"] == steps_per_epoch + 3  # the step in progress finished; no further step started
    state = read_run_state(tmp_path / "m")
    assert (state.epoch, state.step_in_epoch, state.global_step) == (1, 3, steps_per_epoch + 3)
    assert not (tmp_path / "m" / "metrics.json").exists()  # stopped, not finished: nothing tested
    monkeypatch.setattr(SupervisedTask, "step_loss", original)
    resumed = train_sasrec(toy, tmp_path / "m", cfg(epochs=2, checkpoint_minutes=0.0), resume=True)
    assert read_run_state(tmp_path / "m").global_step == 2 * steps_per_epoch
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)  # the same run as the uninterrupted one


def test_stop_on_signal_records_the_first_signal_ignores_a_later_sigterm_and_a_second_ctrl_c_stops_at_once():
    import os
    import signal

    from unisrec.training.signals import StopOnSignal

    callers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopOnSignal():  # nothing received: the caller's handlers come back unchanged
        pass
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == callers
    with StopOnSignal() as stop:
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. a benchmark worker's own, when its parent ended: already stopping
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == callers[1]
    signal.signal(signal.SIGTERM, callers[0])


def test_the_cli_stopped_by_sigterm_exits_143_with_its_resume_state_and_resume_finishes(toy, tmp_path):
    """The real thing: a `unisrec train` process, a real SIGTERM, the shell's exit code, --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from unisrec.training.state import read_run_state

    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "unisrec.cli", "train", "sasrec", str(toy), "--output", str(out), "--epochs", "500",
           "--batch-size", "16", "--hidden-size", "16", "--inner-size", "16", "--threads", "1", "--progress", "false",
           "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "resume" / "CURRENT").exists():  # after its first epoch
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped at" in err and "--resume" in err and "Traceback" not in err
    state = read_run_state(out)
    assert state.global_step >= 1 and not (out / "metrics.json").exists()
    done = subprocess.run(cmd[:cmd.index("--epochs") + 1] + [str(state.epoch + 1)] + cmd[cmd.index("--epochs") + 2:] + ["--resume"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == state.epoch + 1


def test_time_limit_never_starts_an_epoch_past_the_cap(toy, tmp_path):
    # a cap shorter than one epoch: exactly one epoch runs, then the best checkpoint is tested
    metrics = train_sasrec(toy, tmp_path / "m", cfg(epochs=50, time_limit_minutes=1e-6))
    assert metrics["stop_reason"] == "time_limit" and metrics["epochs_run"] == 1
    assert (tmp_path / "m" / "metrics.json").is_file()
    # a generous cap changes nothing: the epoch bound ends the run
    metrics = train_sasrec(toy, tmp_path / "n", cfg(epochs=2, time_limit_minutes=60))
    assert metrics["stop_reason"] == "max_epochs" and metrics["epochs_run"] == 2


def test_a_run_killed_mid_epoch_resumes_from_its_mid_epoch_checkpoint_exactly(toy, tmp_path, monkeypatch):
    from unisrec.training.state import read_run_state
    from unisrec.training.supervised import SupervisedTask

    full = train_sasrec(toy, tmp_path / "full", cfg(epochs=2))
    steps_per_epoch = read_run_state(tmp_path / "full").global_step // 2
    assert steps_per_epoch >= 4
    original, calls = SupervisedTask.step_loss, {"n": 0}

    def killed_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:  # two steps into epoch 2
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(SupervisedTask, "step_loss", killed_in_epoch_2)
    for name, minutes in (("kept", 1e-9), ("lost", 0.0)):  # a checkpoint due after every step / at epoch ends only
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            train_sasrec(toy, tmp_path / name, cfg(epochs=2, checkpoint_minutes=minutes))
    monkeypatch.setattr(SupervisedTask, "step_loss", original)
    kept, lost = read_run_state(tmp_path / "kept"), read_run_state(tmp_path / "lost")
    assert (kept.epoch, kept.step_in_epoch, kept.global_step) == (1, 2, steps_per_epoch + 2)
    assert (lost.epoch, lost.step_in_epoch) == (1, 0)  # without it the two steps of epoch 2 are lost
    assert kept.elapsed > lost.elapsed > 0  # the partial epoch's training time is counted
    resumed = train_sasrec(toy, tmp_path / "kept", cfg(epochs=2), resume=True)
    assert read_run_state(tmp_path / "kept").global_step == 2 * steps_per_epoch
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)  # the same run as the uninterrupted one
    assert resumed["best_epoch"] == full["best_epoch"]
