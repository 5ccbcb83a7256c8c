"""Cleaning rules for canonical event logs; every change is counted in the DataQualityReport."""

from __future__ import annotations

import copy
import csv
import functools
import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import InvalidEventLog
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)

TimestampPolicy = Literal["drop", "impute", "error"]
SOURCE = "source"
SOURCE_CASE_ID = "source_case_id"
_SPACES = re.compile(r"\s+")
_STR = pd.array([], dtype="str").dtype


def load_activity_map(path: str | Path) -> dict[str, str]:
    """An activity relabelling {old: new} from a JSON object or a two-column CSV (old,new; header optional)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidEventLog("activity map file does not exist", file=str(p))
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidEventLog(f"activity map is not valid JSON: {exc.msg}", file=str(p), row=exc.lineno) from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise InvalidEventLog("activity map JSON must be an object {old label: new label}", file=str(p))
        return {str(k): v for k, v in data.items()}
    out: dict[str, str] = {}
    rows = list(csv.reader(text.splitlines()))
    for i, row in enumerate(rows, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise InvalidEventLog(f"activity map rows need exactly 2 fields (old,new), got {len(row)}",
                                  file=str(p), row=i)
        old, new = row[0].strip(), row[1].strip()
        if i == 1 and old.lower() in {"old", "from", "source", "activity"}:
            continue  # header
        out[old] = new
    return out


def _normalise_label(label: str) -> str:
    return _SPACES.sub(" ", label.strip())


def _first_occurrence_mask(df: pd.DataFrame) -> np.ndarray:
    """True for rows that are not an exact repeat of an earlier row.

    Exact repeats must share case, activity and time, so only rows whose (case, activity, time) key occurs
    more than once are compared on every column; wide logs then cost about as much as narrow ones.
    """
    key = pl.DataFrame({
        "c": pl.from_pandas(df[CASE_ID].astype("str")),
        "a": pl.from_pandas(df[ACTIVITY].astype("str")),
        "t": pd.DatetimeIndex(df[TIMESTAMP]).asi8,
    })
    # rows whose key hash repeats are the candidates (a hash collision only adds a candidate; the exact
    # comparison below decides), which is far cheaper than hashing the string key columns as a struct
    shared = key.hash_rows().is_duplicated().to_numpy()
    keep = np.ones(len(df), dtype=bool)
    if shared.any():
        pos = np.flatnonzero(shared)
        keep[pos] = ~df.iloc[pos].duplicated(keep="first").to_numpy()
    return keep


def detect_case_attributes(df: pd.DataFrame, *, exclude: tuple[str, ...] = CANONICAL_COLUMNS) -> list[str]:
    """Columns whose value never changes within a case (missing counts as a value)."""
    cols = [c for c in df.columns if c not in exclude and c not in (SOURCE, SOURCE_CASE_ID)]
    if not cols or df.empty:
        return []
    case_codes = pd.factorize(df[CASE_ID])[0]
    # group rows of a case together (stable), then compare each row with the previous one of the same case
    order = np.argsort(case_codes, kind="stable")
    sc = case_codes[order]
    same_case = sc[1:] == sc[:-1]
    out = []
    for col in cols:
        vcodes = pd.factorize(df[col], use_na_sentinel=False)[0][order]
        if not np.any(same_case & (vcodes[1:] != vcodes[:-1])):
            out.append(col)
    return out


def _impute_timestamps(df: pd.DataFrame) -> pd.Series:
    """Missing timestamps from the previous event of the same case (file order), else the next one."""
    g = df.groupby(CASE_ID, sort=False, observed=True)[TIMESTAMP]
    return df[TIMESTAMP].fillna(g.ffill()).fillna(g.bfill())


def _ascending(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether each string is greater than the one before (so the values are distinct and in sorted order)."""
    n = len(values)
    return n < 2 or bool(pc.all(pc.less(values.slice(0, n - 1), values.slice(1))).as_py())


# rows of a column checked for ascending runs before the whole of it is
_RUN_HEAD = 1000


def string_runs(values: pa.Array | pa.ChunkedArray, *, unsorted: bool = False) -> tuple[np.ndarray, pa.Array] | None:
    """(where each run of equal adjacent values starts, the runs' values) of a string column without missing
    values in which every distinct value is one run, as in a log sorted by case; None for any other column.

    The runs must ascend, which proves them distinct; with `unsorted`, runs in another order are accepted once
    their values are checked distinct."""
    n = len(values)
    if n < 2 or values.null_count:
        return None
    change = np.asarray(pc.not_equal(values.slice(1), values.slice(0, n - 1)).to_numpy(zero_copy_only=False),
                        dtype=bool)
    starts = np.flatnonzero(np.r_[True, change])
    heads = values.take(pa.array(starts))
    if isinstance(heads, pa.ChunkedArray):
        heads = heads.combine_chunks()
    if not _ascending(heads) and (not unsorted or len(set(heads.to_pylist())) != len(heads)):
        return None
    return starts, heads


def _run_codes(s: pd.Series) -> tuple[np.ndarray, pd.Index] | None:
    """pd.factorize of a string column without missing values whose equal values sit in one run each, the runs
    in ascending order (a log sorted by case): codes from the run starts, no hashing. None for other columns."""
    if s.dtype != _STR or len(s) < 2:
        return None
    values = s.array.__arrow_array__()
    if values.null_count or not pa.types.is_large_string(values.type) and not pa.types.is_string(values.type):
        return None
    head = values.slice(0, _RUN_HEAD)
    if not bool(pc.all(pc.less_equal(head.slice(0, len(head) - 1), head.slice(1))).as_py()):
        return None  # not even the head ascends: give up before a pass over the column
    runs = string_runs(values)
    if runs is None:
        return None
    starts, heads = runs
    codes = np.repeat(np.arange(len(starts), dtype=np.intp), np.diff(np.r_[starts, len(values)]))
    return codes, pd.Index(pd.array(heads, dtype=_STR))


# Answers of factorize_strings for Arrow-backed string columns, by the column's identity: reading a log (its source
# review) and cleaning it both need the case and activity columns' codes, and an Arrow column never changes. An
# entry goes with its column, and only the latest few are kept.
_factorized: dict[int, tuple[weakref.ref[Any], np.ndarray, pd.Index]] = {}
_FACTORIZED_KEPT = 2
# reading may code columns on a worker thread while another thread looks answers up; re-entrant because a column
# the garbage collector frees while the lock is held drops its entry on the same thread
_factorized_lock = threading.RLock()


def _forget_factorized(key: int, ref: weakref.ref[Any]) -> None:
    with _factorized_lock:
        if key in _factorized and _factorized[key][0] is ref:
            del _factorized[key]


def factorize_strings(s: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """pd.factorize(s) (codes, distinct values in order of appearance). A str column backed by Arrow is coded
    once and its answer (read-only codes) kept while the column lives; when its equal values sit in ascending
    runs (a log sorted by case) the codes come from the runs, without hashing."""
    to_arrow = getattr(s.array, "__arrow_array__", None) if s.dtype == _STR else None
    if to_arrow is None:
        return pd.factorize(s)
    column = to_arrow()
    key = id(column)
    with _factorized_lock:
        memo = _factorized.get(key)
    if memo is not None and memo[0]() is column:
        return memo[1], memo[2]
    runs = _run_codes(s)
    codes, uniques = runs if runs is not None else pd.factorize(s)
    codes.flags.writeable = False
    ref = weakref.ref(column, functools.partial(_forget_factorized, key))
    with _factorized_lock:
        _factorized[key] = (ref, codes, uniques)
        while len(_factorized) > _FACTORIZED_KEPT:
            del _factorized[next(iter(_factorized))]
    return codes, uniques


def _string_codes(s: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes (-1 where missing) into the distinct values of a column read as strings (astype "str")."""
    codes, uniques = factorize_strings(s)
    text = pd.Index(uniques).astype("str")
    if s.dtype == _STR or text.is_unique:  # distinct strings stay distinct
        return codes, text
    # distinct values that read the same as text (1 and "1") are one value
    merged, text = pd.factorize(text)
    return np.where(codes >= 0, merged[codes], -1), pd.Index(text)


def _relabel(labels: pd.api.extensions.ExtensionArray, fn: Callable[[str], str]) -> pd.api.extensions.ExtensionArray:
    return pd.array([fn(str(u)) for u in labels], dtype="str")


def _case_time_order(case_rank: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """Positions that sort rows by case rank, then time, ties in their current order (a stable sort); None when
    the rows are in that order already (most exports are)."""
    if len(t) < 2:
        return None
    # in order when the case rank never falls and the time falls only where the case rank rises (checked on
    # the few rows where it falls, rather than comparing ranks and times on every row)
    if bool(np.all(case_rank[1:] >= case_rank[:-1])):
        falls = np.flatnonzero(t[1:] < t[:-1])
        if bool(np.all(case_rank[falls + 1] > case_rank[falls])):
            return None
    return np.lexsort((t, case_rank))


def _duplicate_rows(df: pd.DataFrame, rows: np.ndarray, order: np.ndarray | None, key: tuple[np.ndarray, ...],
                    set_columns: Callable[[pd.DataFrame, np.ndarray], pd.DataFrame]) -> np.ndarray:
    """Positions among `rows` that repeat an earlier row (file order) in every column.

    Exact repeats share case and time, so they sit next to each other once `rows` are sorted by `order` (case,
    time; None: already sorted); only rows of such runs whose (case, activity, time) key repeats are compared
    on every column.
    """
    case, act, t = key
    sc, st = (case, t) if order is None else (case[order], t[order])
    same = (sc[1:] == sc[:-1]) & (st[1:] == st[:-1])
    if not same.any():
        return np.empty(0, dtype=np.int64)
    in_run = np.zeros(len(sc), dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    idx = np.flatnonzero(in_run) if order is None else np.sort(order[in_run])  # back in file order
    idx = idx[pd.DataFrame({"c": case[idx], "a": act[idx], "t": t[idx]}).duplicated(keep=False).to_numpy()]
    if not len(idx):
        return np.empty(0, dtype=np.int64)
    cand = rows[idx]
    sub = set_columns(df.iloc[cand], cand)
    return cand[sub.duplicated(keep="first").to_numpy()]


def clean(
    log: EventLog,
    *,
    activity_map: Mapping[str, str] | None = None,
    timestamp_policy: TimestampPolicy = "drop",
    drop_duplicates: bool = True,
    normalise_labels: bool = True,
) -> EventLog:
    """Standardised, de-duplicated, time-complete and deterministically ordered copy of a log.

    Order: case, timestamp, then original row position (a stable sort). Every rule adds a fix to the
    quality report, zero counts included, so the report shows what ran.

    The rules work on integer codes of the case and activity columns (labels are rewritten once per distinct
    value) and on row positions; the frame is gathered once at the end, and not at all when no row moves.
    """
    if timestamp_policy not in ("drop", "impute", "error"):
        raise InvalidEventLog(f"timestamp policy must be drop, impute or error, got {timestamp_policy!r}",
                              file=log.name, column=TIMESTAMP)
    # a copy: cleaning the same log twice must not append to the first result's report
    report = copy.deepcopy(log.quality) if log.quality else DataQualityReport(source=log.name, rows_in=len(log.df))
    df = log.df
    if df.empty:
        raise InvalidEventLog("the log holds no events", file=log.name)
    # positions below are positions in the file order
    df = df.reset_index(drop=True)

    case_codes, case_text = _string_codes(df[CASE_ID])
    act_codes, act_text = _string_codes(df[ACTIVITY])
    keep = np.ones(len(df), dtype=bool)
    for codes, text, col, fix in ((case_codes, case_text, CASE_ID, "missing_case_id_dropped"),
                                  (act_codes, act_text, ACTIVITY, "missing_activity_dropped")):
        # a blank value is missing too; code -1 picks the trailing True
        blank = np.append(np.asarray(text.str.strip() == "", dtype=bool), True)
        n_miss = 0
        if blank[:-1].any() or codes.min() < 0:  # else no row is missing a value (most logs): skip the gather
            miss = blank[codes] & keep
            n_miss = int(miss.sum())
            keep &= ~miss
        report.add(fix, n_miss, f"column {col!r}")
    all_kept = bool(keep.all())
    rows = np.arange(len(df)) if all_kept else np.flatnonzero(keep)
    row_acts = act_codes if all_kept else act_codes[rows]

    labels = act_text.array
    relabelled = False
    if normalise_labels:
        norm = _relabel(labels, _normalise_label)
        changed = np.asarray(norm != labels, dtype=bool)
        report.add("activity_whitespace_normalised", int(changed[row_acts].sum()))
        relabelled = relabelled or bool(changed.any())
        labels = norm
    if activity_map:
        amap = dict(activity_map)
        mapped = _relabel(labels, lambda a: amap.get(a, a))
        changed = np.asarray(mapped != labels, dtype=bool)
        present = np.zeros(len(labels), dtype=bool)
        present[row_acts] = True
        unused = sorted(set(activity_map) - set(labels[present]))
        detail = f"{len(activity_map)} rules"
        if unused:
            detail += f"; {len(unused)} never matched: {unused[:5]}"
        report.add("activity_relabelled", int(changed[row_acts].sum()), detail)
        relabelled = relabelled or bool(changed.any())
        labels = mapped
    else:
        report.add("activity_relabelled", 0, "no activity map given")
    final_labels = labels

    def set_columns(part: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
        """Rows at `pos` with the cleaned activity labels and string case ids."""
        if not relabelled and part[ACTIVITY].dtype == _STR:
            act = part[ACTIVITY]
        else:
            act = pd.Series(final_labels.take(act_codes[pos]), index=part.index, name=ACTIVITY)
        return part.assign(**{ACTIVITY: act, CASE_ID: part[CASE_ID].astype("str")})

    # case ids rank in string order (as a sort on the text would put them); activities by their final label
    case_text_arrow = pa.array(case_text.array)
    row_codes = case_codes if all_kept else case_codes[rows]
    if _ascending(case_text_arrow):
        case_rank = np.arange(len(case_text), dtype=np.int64)
        row_case = row_codes  # each code is its rank
    else:
        case_rank = np.empty(len(case_text), dtype=np.int64)
        case_rank[np.asarray(pc.array_sort_indices(case_text_arrow))] = np.arange(len(case_text))
        row_case = case_rank[row_codes]
    t_all = pd.DatetimeIndex(df[TIMESTAMP]).asi8
    row_t = t_all if all_kept else t_all[rows]
    order = _case_time_order(row_case, row_t)

    if drop_duplicates:
        row_final = pd.factorize(final_labels)[0][row_acts] if relabelled else row_acts
        dups = _duplicate_rows(df, rows, order, (row_case, row_final, row_t), set_columns)
        report.add("exact_duplicates_dropped", len(dups), "identical in every column; first kept")
        keep[dups] = False
    else:
        report.add("exact_duplicates_dropped", 0, "duplicate dropping disabled")

    nat = keep & df[TIMESTAMP].isna().to_numpy()
    n_nat = int(nat.sum())
    if timestamp_policy == "error" and n_nat:
        raise InvalidEventLog(
            f"{n_nat} event(s) without a usable timestamp (timestamp policy 'error')",
            file=log.name, row=int(np.flatnonzero(nat)[0]) + 1, column=TIMESTAMP,
        )
    timestamps = None
    if timestamp_policy == "impute" and n_nat:
        kept = np.flatnonzero(keep)
        part = set_columns(df.iloc[kept], kept)
        filled = _impute_timestamps(part)
        report.add("timestamp_imputed", int((nat[kept] & filled.notna().to_numpy()).sum()),
                   "from the previous (else next) event of the same case")
        still = filled.isna().to_numpy()
        report.add("timestamp_unimputable_dropped", int(still.sum()), "case has no timestamped event")
        keep[kept[still]] = False
        timestamps = filled
    else:
        report.add("timestamp_imputed", 0)
        report.add("timestamp_missing_dropped", n_nat)
        keep &= ~nat

    all_kept = bool(keep.all())
    remaining = rows if all_kept else np.flatnonzero(keep)
    if not len(remaining):
        raise InvalidEventLog("no events left after cleaning (see the quality report)", file=log.name)

    if timestamps is not None:
        # imputed times change the order; sort the remaining rows afresh
        t_new = pd.DatetimeIndex(timestamps.loc[remaining]).asi8
        new_order = _case_time_order(case_rank[case_codes[remaining]], t_new)
        final = remaining if new_order is None else remaining[new_order]
    else:
        # dropping rows from a stably sorted sequence leaves it stably sorted
        sorted_rows = rows if order is None else rows[order]
        final = sorted_rows if all_kept else sorted_rows[keep[sorted_rows]]
    moved = int((final != remaining).sum())
    if len(final) == len(df) and not moved:
        out = set_columns(df, final)
    else:
        out = set_columns(df.take(final), final).reset_index(drop=True)
    if timestamps is not None:
        out = out.assign(**{TIMESTAMP: pd.Series(timestamps.loc[final].array, index=out.index)})
    report.add("rows_reordered", moved, "sorted by case, timestamp, original position")

    case_attrs = detect_case_attributes(out)
    report.rows_out = len(out)
    if all_kept:
        report.cases_out = len(case_text)  # no row dropped: every case id is there
    else:
        present_cases = np.zeros(len(case_text), dtype=bool)
        present_cases[case_codes[final]] = True
        report.cases_out = int(present_cases.sum())
    return EventLog(out, name=log.name, case_attributes=case_attrs, quality=report)


def merge_sources(
    *,
    logs: Mapping[str, EventLog],
    link: pd.DataFrame | None = None,
    link_columns: Mapping[str, str] | None = None,
    primary: str | None = None,
    unlinked: Literal["keep", "drop"] = "keep",
    name: str = "merged",
) -> EventLog:
    """One log from several source systems whose case ids a link table ties together.

    `link_columns` names, for each source, the link-table column holding that source's case id
    (e.g. {"helpdesk": "ticket_id", "chat": "conversation_id"}); the `primary` source's id becomes
    the merged case id. Unlinked cases of other sources are kept as "<source>:<id>" or dropped (counted).
    Adds `source` and `source_case_id` columns.
    """
    if not logs:
        raise InvalidEventLog("merge_sources needs at least one log", file=name)
    names = list(logs)
    prim = primary or names[0]
    if prim not in logs:
        raise InvalidEventLog(f"primary source {prim!r} is not among {names}", file=name)
    report = DataQualityReport(source=name, rows_in=sum(len(lg.df) for lg in logs.values()))
    cols = dict(link_columns or {})
    if link is not None:
        for src in names:
            if src not in cols:
                raise InvalidEventLog(f"link_columns lacks source {src!r}", file=name)
            if cols[src] not in link.columns:
                raise InvalidEventLog(f"link table has no column {cols[src]!r}; it has {list(link.columns)}",
                                      file="link table", column=cols[src])
    frames = []
    for src in names:
        df = logs[src].df.copy()
        ids = df[CASE_ID].astype("str")
        df[SOURCE] = src
        df[SOURCE_CASE_ID] = ids
        if src != prim:
            if link is None:
                raise InvalidEventLog("several sources need a link table to be merged", file=name)
            pairs = link[[cols[src], cols[prim]]].dropna().astype("str").drop_duplicates()
            multi = pairs[pairs.duplicated(cols[src], keep=False)]
            if not multi.empty:
                row = int(multi.index[0])
                raise InvalidEventLog(
                    f"{src} case {multi.iloc[0, 0]!r} is linked to several {prim} cases",
                    file="link table", row=row + 1, column=cols[src],
                )
            lookup = dict(zip(pairs[cols[src]], pairs[cols[prim]], strict=True))
            mapped = ids.map(lookup)
            miss = mapped.isna()
            report.add(f"linked_{src}", int((~miss).sum()), f"events of {src} mapped to a {prim} case")
            if unlinked == "drop":
                report.add(f"unlinked_{src}_dropped", int(miss.sum()))
                df = df.loc[~miss.to_numpy()]
                mapped = mapped.loc[~miss]
            else:
                report.add(f"unlinked_{src}_kept", int(miss.sum()), f"case id kept as '{src}:<id>'")
                mapped = mapped.where(~miss, src + ":" + ids)
            df[CASE_ID] = mapped.astype("str")
        else:
            report.add(f"events_{src}", len(df), "primary source")
        frames.append(df)
    merged = pd.concat(frames, ignore_index=True)
    order = {s: i for i, s in enumerate(names)}
    merged["_src_order"] = merged[SOURCE].map(order)
    merged = merged.sort_values([CASE_ID, TIMESTAMP, "_src_order"], kind="mergesort").drop(columns="_src_order")
    merged = merged.reset_index(drop=True)
    report.rows_out = len(merged)
    report.cases_out = int(merged[CASE_ID].nunique())
    attrs = detect_case_attributes(merged)
    return EventLog(merged, name=name, case_attributes=attrs, quality=report)
