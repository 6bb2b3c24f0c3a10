"""The latency lookup table: one row per op key, plus the measurement protocol as metadata.

On disk it is Parquet (metadata in the Arrow schema metadata under `mnv3-nas.latency`) or
CSV on request (metadata in a JSON sidecar `TABLE.csv.meta.json`). A table is extended in
place: every measured pass of every op is a row update, saved atomically (temp file +
rename) every few seconds and when a build stops for any reason, so an interrupted build
keeps what it measured and the next build measures only what is missing.

Row columns:
  key, kind, input_shapes (JSON), lat_ms (the table value: best pass of the statistic),
  passes, pass_ms (JSON list, the statistic of each pass), min_ms, p10_ms, median_ms,
  mean_ms, std_ms (all from the best pass), runs, other_load (cores used by other
  processes during the best pass), measured_at (UTC, last pass).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from search_space.errors import UserError

SCHEMA = "mnv3-nas/latency-table"
SCHEMA_VERSION = 1
META_KEY = b"mnv3-nas.latency"
PRECISIONS = ("float32", "int8")
COLUMNS = [
    "key", "kind", "input_shapes", "lat_ms", "passes", "pass_ms",
    "min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms", "runs", "other_load", "measured_at",
]
NUMERIC = ["lat_ms", "min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms", "other_load"]
# Metadata that must agree before two measurements may share a table.
PROTOCOL_KEYS = ("precision", "statistic", "threads", "runs", "warmup", "runtime", "runtime_version", "cpu")
# Metadata that says which flag sets it, for error messages.
_FLAG = {"precision": "--int8 / no --int8", "statistic": "--statistic", "threads": "--threads",
         "runs": "--runs", "warmup": "--warmup", "runtime_version": "runtime version", "cpu": "CPU",
         "runtime": "--runtime"}


def _shapes_json(shapes) -> str:
    return json.dumps([list(map(int, s)) for s in shapes], separators=(",", ":"))


def table_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("parquet", "csv"):
            raise UserError(f"--format {fmt!r}: expected parquet or csv")
        return fmt
    return "csv" if path.suffix.lower() == ".csv" else "parquet"


def sidecar(path: Path) -> Path:
    return Path(str(path) + ".meta.json")


class LatencyTable:
    """Per-op latencies (ms) with the protocol that measured them."""

    def __init__(self, meta: dict, rows: Iterable[dict] = (), path: str | Path | None = None) -> None:
        self.meta = dict(meta)
        self.meta.setdefault("schema", SCHEMA)
        self.meta.setdefault("version", SCHEMA_VERSION)
        self.meta.setdefault("calibration", None)
        self._rows: dict[str, dict] = {}
        for r in rows:
            self._rows[r["key"]] = dict(r)
        self.path = Path(path) if path else None

    # ---- lookup ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def keys(self) -> list[str]:
        return list(self._rows)

    def row(self, key: str) -> dict:
        return self._rows[key]

    def ms(self, key: str) -> float:
        return float(self._rows[key]["lat_ms"])

    def passes(self, key: str) -> int:
        r = self._rows.get(key)
        return int(r["passes"]) if r else 0

    def missing(self, keys: Iterable[str], passes: int = 1) -> list[str]:
        """Keys (in order, without repeats) with fewer than `passes` measured passes."""
        seen, out = set(), []
        for k in keys:
            if k not in seen:
                seen.add(k)
                if self.passes(k) < passes:
                    out.append(k)
        return out

    def lookup(self) -> dict[str, float]:
        """key -> lat_ms, for fast repeated predictions."""
        return {k: float(r["lat_ms"]) for k, r in self._rows.items()}

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "float32")

    @property
    def calibration(self) -> dict | None:
        return self.meta.get("calibration")

    @property
    def df(self) -> pd.DataFrame:
        df = pd.DataFrame([self._rows[k] for k in self._rows], columns=COLUMNS)
        return df.astype({"passes": "int64", "runs": "int64", **{c: "float64" for c in NUMERIC}}) if len(df) else df

    # ---- updates -----------------------------------------------------------------------
    def add_pass(self, key: str, kind: str, input_shapes, stats: dict, statistic_col: str,
                 measured_at: str) -> dict:
        """Record one measured pass of an op; the row keeps the best pass."""
        value = float(stats[statistic_col])
        r = self._rows.get(key)
        if r is None:
            r = {"key": key, "kind": kind, "input_shapes": _shapes_json(input_shapes), "passes": 0,
                 "pass_ms": "[]", "lat_ms": math.inf}
            self._rows[key] = r
        values = json.loads(r["pass_ms"]) + [round(value, 6)]
        r["pass_ms"] = json.dumps(values)
        r["passes"] = len(values)
        if value <= r["lat_ms"]:
            r["lat_ms"] = value
            for c in ("min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms"):
                r[c] = float(stats[c])
            r["runs"] = int(stats["runs"])
            r["other_load"] = float(stats.get("other_load", float("nan")))
        r["measured_at"] = measured_at
        return r

    def set_row(self, row: dict) -> None:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row for {row.get('key')!r} lacks {missing}")
        self._rows[row["key"]] = {c: row[c] for c in COLUMNS}

    def check_compatible(self, meta: dict, path: str | Path | None = None) -> None:
        """Raise UserError if `meta` describes a different protocol than this table's."""
        where = path or self.path or "table"
        for k in PROTOCOL_KEYS:
            mine, theirs = self.meta.get(k), meta.get(k)
            if mine is not None and theirs is not None and mine != theirs:
                raise UserError(
                    f"{where}: table was measured with {k} = {mine!r}, this run uses {theirs!r} "
                    f"({_FLAG.get(k, k)}); use another --out table or the table's setting"
                )

    # ---- disk --------------------------------------------------------------------------
    def save(self, path: str | Path | None = None, fmt: str | None = None) -> Path:
        path = Path(path or self.path)
        if path is None:
            raise ValueError("no path to save the table to")
        fmt = table_format(path, fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        import datetime as dt

        self.meta["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.meta["n_ops"] = len(self)
        meta_json = json.dumps(self.meta, sort_keys=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        df = self.df
        try:
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                tab = pa.Table.from_pandas(df, preserve_index=False)
                tab = tab.replace_schema_metadata({**(tab.schema.metadata or {}), META_KEY: meta_json.encode()})
                pq.write_table(tab, tmp)
                os.replace(tmp, path)
            else:
                df.to_csv(tmp, index=False)
                side, stmp = sidecar(path), sidecar(tmp)
                stmp.write_text(json.dumps(self.meta, indent=1, sort_keys=True) + "\n")
                os.replace(stmp, side)
                os.replace(tmp, path)
        finally:
            for t in (tmp, sidecar(tmp)):
                if t.exists():
                    t.unlink()
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such latency table (make one with `nas latency build --space large --out {path}`)")
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a latency table file")
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == b"PAR1":
            df, meta = _read_parquet(path)
        else:
            df, meta = _read_csv(path)
        _check_meta(meta, path)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"{path}: not a latency table: missing column(s) {', '.join(missing)}")
        if len(df):
            try:
                df = df.astype({"passes": "int64", "runs": "int64", **{c: "float64" for c in NUMERIC}})
            except (ValueError, TypeError):
                raise UserError(f"{path}: corrupt latency table: non-numeric latency values") from None
            if df["key"].duplicated().any():
                dup = df.loc[df["key"].duplicated(), "key"].iloc[0]
                raise UserError(f"{path}: corrupt latency table: key {dup!r} appears twice")
            bad = ~np.isfinite(df["lat_ms"].to_numpy()) | (df["lat_ms"].to_numpy() <= 0)
            if bad.any():
                raise UserError(f"{path}: corrupt latency table: bad lat_ms for key {df.loc[bad, 'key'].iloc[0]!r}")
        rows = df[COLUMNS].to_dict("records")
        for r in rows:
            r["key"], r["kind"], r["pass_ms"] = str(r["key"]), str(r["kind"]), str(r["pass_ms"])
            r["input_shapes"], r["measured_at"] = str(r["input_shapes"]), str(r["measured_at"])
        return cls(meta, rows, path)

    @classmethod
    def load_or_new(cls, path: str | Path, meta: dict) -> "LatencyTable":
        """Open `path` to extend it (protocol must match `meta`), or start a new table there."""
        path = Path(path)
        if path.exists():
            table = cls.load(path)
            table.check_compatible(meta, path)
            for k, v in meta.items():
                if k not in table.meta or table.meta[k] in (None, "", []):
                    table.meta[k] = v
            return table
        return cls(meta, (), path)


def _read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        tab = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(f"{path}: corrupt latency table (cannot read Parquet: {str(exc).splitlines()[0][:120]})") from None
    raw = (tab.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise UserError(f"{path}: not a latency table (Parquet file without {META_KEY.decode()} metadata)")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: corrupt latency table (unreadable metadata)") from None
    return tab.to_pandas(), meta


def _read_csv(path: Path) -> tuple[pd.DataFrame, dict]:
    side = sidecar(path)
    try:
        df = pd.read_csv(path, dtype={"key": str, "kind": str, "input_shapes": str, "pass_ms": str, "measured_at": str},
                         keep_default_na=False, na_values={c: ["", "nan", "NaN"] for c in NUMERIC})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a latency table (neither Parquet nor a readable CSV: {exc.__class__.__name__})") from None
    if not side.exists():
        if "pass" in df.columns and "key" in df.columns and "lat_ms" not in df.columns:
            raise UserError(f"{path}: this is a runner CSV, not a table; turn it into one with `nas latency import`")
        raise UserError(f"{path}: not a latency table (CSV without its metadata file {side.name})")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise UserError(f"{side}: corrupt latency table metadata (not JSON)") from None
    return df, meta


def _check_meta(meta, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{path}: not a latency table (schema {got!r}, expected {SCHEMA!r})")
    if meta.get("version") != SCHEMA_VERSION:
        raise UserError(f"{path}: latency table version {meta.get('version')!r}; this build reads version {SCHEMA_VERSION}")
    if meta.get("precision", "float32") not in PRECISIONS:
        raise UserError(f"{path}: corrupt latency table: precision {meta.get('precision')!r}")
