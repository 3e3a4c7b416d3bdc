"""Reading raw interaction/item tables (CSV, TSV, Parquet; optionally .gz) into typed Arrow columns.

Fast path: ``pyarrow.csv`` (C++), every column read as bytes and converted in bulk. Only when a
conversion fails do we look for the offending rows (vectorised) to report or skip them, so a clean
file pays nothing for the checks. Row numbers are mapped back to physical file lines for messages.
"""

from __future__ import annotations

import codecs
import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unisrec.data.records import BadRecords, InputError, LineMap

_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")


@dataclass(frozen=True)
class Column:
    """A column to read: ``kind`` is ``str`` (UTF-8 text), ``float`` or ``time`` (-> float64 seconds).

    ``required``: an empty value is a bad record (reason ``missing_value``); ``option`` names the CLI
    option that picks the column, for messages."""

    name: str
    kind: str = "str"
    required: bool = True
    option: str | None = None


@dataclass
class RawTable:
    """Converted columns, the parse-row index of every kept row, and where each row came from."""

    path: Path
    columns: dict[str, np.ndarray | pa.Array]
    rows: np.ndarray
    lines: LineMap | None  # None for Parquet/xlsx (records, not lines)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, k: int) -> str:
        row = int(self.rows[k])
        if self.lines is None:
            return f"{self.path}, record {row + 1}"
        return f"{self.path}, line {self.lines.line(row)}"


def table_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zst"):
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".csv", ".tsv", ".txt", ".inter", ".item"):
        return "tsv" if ext in (".tsv", ".inter", ".item") else "csv"
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext in (".xlsx",):
        return "xlsx"
    raise InputError(f"{path}: cannot tell the table format from the extension {ext or '(none)'}; use .csv, .tsv or .parquet")


def check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    return path


def read_bytes(path: Path, first_line: bool = False) -> bytes:
    """The (decompressed) bytes of a plain or ``.gz`` file, or only its first line; a truncated
    or non-gzip ``.gz`` is an InputError naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return fh.readline() if first_line else fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: truncated or corrupt compressed file, or not gzip despite the .gz name ({exc})") from None


def _first_line(path: Path, encoding: str) -> str:
    """The header line; a UTF-8 byte-order mark is not part of the first column's name."""
    line = read_bytes(path, first_line=True)
    if line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8):]
    return line.decode(encoding, errors="replace").rstrip("\r\n")


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it, else an InputError naming the option."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"--encoding {encoding!r} is not a known text encoding (e.g. utf-8, latin-1, cp1252)") from None
    return encoding


def _arrow_error(path: Path, exc: Exception) -> InputError:
    msg = str(exc)
    if "gzip" in msg.lower() or "compressed" in msg.lower() or "zlib" in msg.lower() or isinstance(exc, EOFError):
        return InputError(f"{path}: truncated or corrupt compressed file ({msg.splitlines()[0]})")
    if "Empty CSV file" in msg:
        return InputError(f"{path}: the file is empty (no header, no rows)")
    return InputError(f"{path}: cannot parse ({msg.splitlines()[0]})")


def read_csv_table(path: Path, columns: list[Column], bad: BadRecords, *, names: list[str] | None = None,
                   delimiter: str | None = None, encoding: str = "utf8", quote_char: str | bool = '"') -> RawTable:
    """Read ``columns`` of a delimited file. ``names``: the column names of a header-less file."""
    import pyarrow.csv as pacsv

    path = check_file(path, "input")
    requested = [c.name.rstrip("*") for c in columns]
    if delimiter is None:
        delimiter = "\t" if table_format(path) == "tsv" else ","
    if names is None:
        header = _first_line(path, "latin-1" if encoding != "utf8" else "utf8").split(delimiter)
        header = [h.strip().strip('"') for h in header]
        if names is None and any(c.name.endswith("*") for c in columns):
            columns = [resolve_prefix(c, header, path) for c in columns]
        missing = [c for c in columns if c.name not in header]
        if missing:
            hint = "; ".join(f"{c.name!r}" + (f" (set it with {c.option})" if c.option else "") for c in missing)
            raise InputError(f"{path}, line 1: missing column {hint}; the header has: {', '.join(header)}")
    wanted = [c.name for c in columns]
    skipped: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        skipped.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}: {row.text[:80]!r}"))
        return "skip" if bad.on_bad_lines == "skip" else "error"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24, encoding=encoding,
                                           column_names=names),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=quote_char, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types={n: pa.binary() for n in wanted},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError, EOFError, LookupError) as exc:
        if skipped and bad.on_bad_lines == "error":
            line, problem = skipped[-1]
            bad.bad("malformed_csv", f"{path}, line {line}", f"malformed line ({problem})")
        raise _arrow_error(path, exc) from None
    for line, problem in skipped:
        bad.bad("malformed_csv", f"{path}, line {line}", f"malformed line ({problem})")
    lines = LineMap(header=0 if names is not None else 1, skipped=[line for line, _ in skipped])
    raw = {n: table.column(n).combine_chunks() for n in wanted}
    tab = convert_columns(path, raw, columns, bad, lines)
    tab.columns = {req: tab.columns[c.name] for req, c in zip(requested, columns)}
    return tab


def resolve_prefix(col: Column, header: list[str], path: Path) -> Column:
    """A column named ``"prefix*"`` matches the header field ``prefix`` or ``prefix:type`` (RecBole)."""
    if not col.name.endswith("*"):
        return col
    stem = col.name[:-1]
    for h in header:
        if h == stem or h.split(":")[0] == stem:
            return Column(h, col.kind, col.required, col.option)
    raise InputError(f"{path}, line 1: missing column {stem!r}; the header has: {', '.join(header)}")


def read_parquet_table(path: Path, columns: list[Column], bad: BadRecords) -> RawTable:
    import pyarrow.parquet as pq

    path = check_file(path, "input")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in columns if c.name not in schema.names]
    if missing:
        hint = "; ".join(f"{c.name!r}" + (f" (set it with {c.option})" if c.option else "") for c in missing)
        raise InputError(f"{path}: missing column {hint}; the file has: {', '.join(schema.names)}")
    table = pq.read_table(path, columns=[c.name for c in columns])
    raw = {c.name: table.column(c.name).combine_chunks() for c in columns}
    return convert_columns(path, raw, columns, bad, None)


def read_any_table(path: Path, columns: list[Column], bad: BadRecords, **csv_options) -> RawTable:
    fmt = table_format(Path(path))
    if fmt == "parquet":
        return read_parquet_table(Path(path), columns, bad)
    if fmt == "xlsx":
        raise InputError(f"{path}: .xlsx is read only by `prepare online-retail`; save the sheet as CSV")
    return read_csv_table(Path(path), columns, bad, **csv_options)


# ------------------------------------------------------------------------------------- conversion
def convert_columns(path: Path, raw: dict[str, pa.Array], columns: list[Column], bad: BadRecords,
                    lines: LineMap | None) -> RawTable:
    """Convert raw columns to their kinds; bad values are reported (error) or their rows dropped."""
    n = len(next(iter(raw.values()))) if raw else 0
    tab = RawTable(path, {}, np.arange(n, dtype=np.int64), lines)
    keep = np.ones(n, dtype=bool)
    out: dict[str, object] = {}
    for col in columns:
        arr = raw[col.name]
        if col.kind == "str":
            arr, ok = _to_utf8(arr)
            _report(tab, bad, ~ok & keep, "non_utf8", f"column {col.name!r} is not valid UTF-8 text", raw[col.name])
            keep &= ok
            if col.required:
                empty = _is_empty(arr)
                _report(tab, bad, empty & keep, "missing_value", f"empty {col.name!r}", arr)
                keep &= ~empty
        elif col.kind in ("float", "time"):
            values, ok = _to_number(arr) if col.kind == "float" else _to_time(arr)
            missing = _is_empty(arr)
            what = "number" if col.kind == "float" else "timestamp (unix seconds or a date-time)"
            if col.required:
                _report(tab, bad, missing & keep, "missing_value", f"empty {col.name!r}", arr)
                keep &= ~missing
            _report(tab, bad, ~ok & ~missing & keep, f"bad_{'timestamp' if col.kind == 'time' else 'number'}",
                    f"column {col.name!r} is not a {what}", arr)
            keep &= ok | (missing & (not col.required))
            arr = values
        else:
            raise ValueError(col.kind)
        out[col.name] = arr
    if not keep.all():
        idx = np.flatnonzero(keep)
        out = {k: (v.take(pa.array(idx)) if isinstance(v, pa.Array) else v[idx]) for k, v in out.items()}
        tab.rows = tab.rows[idx]
    tab.columns = out
    return tab


def _report(tab: RawTable, bad: BadRecords, mask: np.ndarray, kind: str, problem: str, raw: pa.Array) -> None:
    """Report the rows in ``mask`` (the first one named, with its value) as bad records of ``kind``."""
    if mask.any():
        first = int(np.argmax(mask))
        value = raw[first].as_py()
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="backslashreplace")
        bad.bad(kind, tab.where(first), f"{problem}: {str(value)[:80]!r}", count=int(mask.sum()))


def _is_empty(arr: pa.Array) -> np.ndarray:
    if pa.types.is_string(arr.type) or pa.types.is_binary(arr.type) or pa.types.is_large_string(arr.type):
        lengths = pc.binary_length(arr)
        return pc.fill_null(pc.equal(lengths, 0), True).to_numpy(zero_copy_only=False)
    return arr.is_null().to_numpy(zero_copy_only=False)


def _to_utf8(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Binary -> string, with a mask of the rows that are valid UTF-8 (invalid ones become "")."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr, np.ones(len(arr), dtype=bool)
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        return pc.cast(arr, pa.string()), np.ones(len(arr), dtype=bool)  # e.g. integer ids in Parquet
    ok = np.ones(len(arr), dtype=bool)
    view = arr.view(pa.string() if pa.types.is_binary(arr.type) else pa.large_string())
    start = 0
    while True:  # each failure names one bad index; clean files validate once
        try:
            view.slice(start).validate(full=True)
            break
        except pa.ArrowInvalid as exc:
            m = re.search(r"string index (\d+)", str(exc))
            if not m:
                raise
            k = start + int(m.group(1))
            ok[k] = False
            start = k + 1
    if not ok.all():
        arr = pc.if_else(pa.array(ok), arr, pa.scalar(b"", arr.type))
        view = arr.view(pa.string() if pa.types.is_binary(arr.type) else pa.large_string())
    return view, ok


def _to_number(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return pc.fill_null(pc.cast(arr, pa.float64()), 0.0).to_numpy(), ~arr.is_null().to_numpy(zero_copy_only=False)
    text = arr.view(pa.string()) if pa.types.is_binary(arr.type) else arr
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False), np.ones(len(arr), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    ok = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(ok), text, pa.scalar("0"))
    return pc.cast(pc.utf8_trim_whitespace(cleaned), pa.float64()).to_numpy(zero_copy_only=False), ok


_ISO = r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*$"
_ISO_ZONED = r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})\s*$"


def _to_time(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds (finite numbers) or date-times (Arrow timestamps, ISO 8601 with optional
    fraction and zone -- ``Z`` or ``+01:00``, converted to UTC -- and other common text formats) ->
    float64 seconds, with the mask of rows that parsed. NaN and infinite numbers do not parse."""
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        secs = pc.cast(pc.cast(arr, pa.timestamp("us")), pa.int64())
        ok = ~arr.is_null().to_numpy(zero_copy_only=False)
        return pc.fill_null(secs, 0).to_numpy().astype(np.float64) / 1e6, ok
    values, ok = _to_number(arr)
    if ok.all() or ok.mean() >= 0.5:
        return values, ok & np.isfinite(values)
    text = arr.view(pa.string()) if pa.types.is_binary(arr.type) else arr
    text = pc.utf8_trim_whitespace(text)
    secs = np.zeros(len(arr), dtype=np.float64)
    ok = np.zeros(len(arr), dtype=bool)
    for pattern, unit in ((_ISO, pa.timestamp("us")), (_ISO_ZONED, pa.timestamp("us", "UTC"))):
        rows = np.flatnonzero(pc.fill_null(pc.match_substring_regex(text, pattern), False).to_numpy(zero_copy_only=False))
        if len(rows):
            got, parsed = _cast_times(text.take(pa.array(rows)), unit)
            secs[rows[parsed]], ok[rows[parsed]] = got[parsed], True
    rest = np.flatnonzero(~ok)
    if len(rest):
        sub = text.take(pa.array(rest))
        parsed = None
        for fmt in DATETIME_FORMATS:
            attempt = pc.strptime(sub, format=fmt, unit="s", error_is_null=True)
            parsed = attempt if parsed is None else pc.coalesce(parsed, attempt)
        good = ~parsed.is_null().to_numpy(zero_copy_only=False)
        secs[rest[good]] = pc.fill_null(pc.cast(parsed, pa.int64()), 0).to_numpy()[good].astype(np.float64)
        ok[rest[good]] = True
    return secs, ok


def _cast_times(text: pa.Array, unit: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 strings -> float64 seconds and a mask of those that parsed (a cast fails as a
    whole, so a batch with an impossible date, e.g. month 13, is parsed one value at a time)."""
    try:
        us = pc.cast(pc.cast(text, unit), pa.int64()).to_numpy(zero_copy_only=False)
        return us.astype(np.float64) / 1e6, np.ones(len(text), dtype=bool)
    except pa.ArrowInvalid:
        out, ok = np.zeros(len(text)), np.zeros(len(text), dtype=bool)
        for k in range(len(text)):
            try:
                out[k] = pc.cast(pc.cast(text.slice(k, 1), unit), pa.int64())[0].as_py() / 1e6
                ok[k] = True
            except pa.ArrowInvalid:
                pass
        return out, ok
