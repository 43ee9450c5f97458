"""Data validation: profiles, the data contract (pandera), reports, quarantine, class balance, gaps.

One validation layer for the whole course. Each dataset's **data contract** is declared as data in
``mlops_lab/specs/<dataset>.yaml``: per column a type, allowed values or a range, and a rule name;
rules across columns; quality warnings. :class:`Contract` turns it into a pandera schema and
validates *lazily* (every violation, not the first), and :class:`Report` lists each offending value
as column, rule, row and a sentence. The same contract travels inside every logged model
(:meth:`Contract.to_dict`, in MLflow's model metadata), and the validating gateway checks each
request value with :meth:`Contract.problem`, which words a violation exactly as the training-time
report does.

A batch that breaks the contract is **quarantined** (:func:`accept_batch`): its rows and its report
are kept on disk under ``<workspace>/quarantine/``, it is never trained on, and nothing is dropped.

Why some code by hand: pandera validates whole frames (about 3 ms per call here), too slow for a
server that scores one row in microseconds, so :meth:`Contract.problem` checks single values
against the same declared rules; a test holds the two to the same verdicts and words.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

SPEC_DIR = Path(__file__).parent / "specs"
_TYPE_WORDS = {"integer": "integers", "number": "numbers", "string": "text", "datetime": "timestamps"}


def profile(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per column: dtype, missing cells, distinct values, min/max (numeric) or top value."""
    rows = []
    for column in frame.columns:
        series = frame[column]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        rows.append({
            "column": column,
            "dtype": str(series.dtype),
            "missing": int(series.isna().sum()),
            "distinct": int(series.nunique()),
            "min": series.min() if numeric else None,
            "max": series.max() if numeric else None,
            "top": None if numeric or series.dropna().empty else str(series.mode().iloc[0]),
        })
    return pd.DataFrame(rows).set_index("column")


class ContractError(ValueError):
    """A contract cannot be read, or was asked about a column it does not have."""


class BatchRejected(ValueError):
    """A batch broke the data contract: it was quarantined (``path``) with its ``report``."""

    def __init__(self, report: "Report", path: Path) -> None:
        super().__init__(f"{report.name}: {report.verdict()} The batch was quarantined in {path} "
                         "with its report; it was not used.")
        self.report = report
        self.path = path


@dataclass(frozen=True)
class ColumnRule:
    """What one column of the contract must hold."""

    column: str
    type: str  # integer, number, string, datetime
    rule: str
    allowed: tuple | None = None
    range: tuple[float, float] | None = None
    unique: bool = False
    increasing: bool = False
    target: bool = False

    @property
    def says(self) -> str:
        """The rule in words (the same sentence in every report and every refusal)."""
        if self.allowed is not None:
            return f"{self.column} is one of {', '.join(map(str, self.allowed))}"
        if self.range is not None:
            return f"{self.column} is between {_num(self.range[0])} and {_num(self.range[1])}"
        if self.unique or self.increasing:
            return f"each {self.column} appears once, in increasing order"
        return f"{self.column} holds {_TYPE_WORDS[self.type]}"

    def breaks(self, value: Any) -> bool:
        """True when a present, well-typed ``value`` breaks this column's allowed values or range."""
        if self.allowed is not None:
            return value not in self.allowed
        if self.range is not None:
            return not (self.range[0] <= value <= self.range[1])
        return False


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Contract:
    """A dataset's data contract: column rules, rules across columns, quality warnings.

    Load one with :func:`contract` (``contract("german_credit")``); :meth:`schema` is the pandera
    schema, :meth:`validate` the lazy report, :meth:`problem` the single-value check servers use.
    """

    name: str
    version: int
    columns: dict[str, ColumnRule]
    row_rules: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    # -- reading and writing -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict) -> "Contract":
        """A contract from its declared form (a spec file's content, or :meth:`to_dict`'s output)."""
        try:
            columns = {}
            for column, raw in spec["contract"].items():
                kind = raw["type"]
                if kind not in _TYPE_WORDS:
                    raise ContractError(f"column {column!r}: unknown type {kind!r}; use one of {sorted(_TYPE_WORDS)}")
                default = f"{column}_allowed" if "allowed" in raw else f"{column}_range" if "range" in raw \
                    else f"{column}_type"
                columns[column] = ColumnRule(
                    column, kind, raw.get("rule", default),
                    tuple(raw["allowed"]) if "allowed" in raw else None,
                    tuple(raw["range"]) if "range" in raw else None,
                    bool(raw.get("unique", False)), bool(raw.get("increasing", False)), bool(raw.get("target", False)))
            return cls(str(spec["name"]), int(spec.get("version", 1)), columns,
                       list(spec.get("row_rules", [])), list(spec.get("warnings", [])))
        except (KeyError, TypeError) as exc:
            raise ContractError(f"a data contract needs 'name' and 'contract' with a 'type' per column: {exc!r}") from exc

    def to_dict(self) -> dict:
        """The declared form, JSON-able: what a logged model carries in its metadata."""
        columns = {}
        for c in self.columns.values():
            entry: dict[str, Any] = {"type": c.type, "rule": c.rule}
            if c.allowed is not None:
                entry["allowed"] = list(c.allowed)
            if c.range is not None:
                entry["range"] = list(c.range)
            entry.update({k: True for k in ("unique", "increasing", "target") if getattr(c, k)})
            columns[c.column] = entry
        return {"name": self.name, "version": self.version, "contract": columns,
                "row_rules": self.row_rules, "warnings": self.warnings}

    def inputs(self, columns: list[str] | None = None) -> "Contract":
        """The contract of a model's input: no target columns, no rules across them, no warnings;
        restricted to ``columns`` (a model's signature) when given."""
        keep = {c: r for c, r in self.columns.items() if not r.target and (columns is None or c in columns)}
        return Contract(self.name, self.version, keep)

    def says(self, rule: str) -> str:
        """A rule in words; a rule shared by several columns names them all."""
        columns = [c for c in self.columns.values() if c.rule == rule]
        if len(columns) > 1:
            first = columns[0]
            names = ", ".join(c.column for c in columns)
            if first.range is not None:
                return f"{names} are between {_num(first.range[0])} and {_num(first.range[1])}"
            return f"{names} each keep their rule"
        if columns:
            return columns[0].says
        fixed = {"no_empty_cells": "no cell is empty", "not_empty": "the batch has rows"}
        others = {r["rule"]: r["says"] for r in [*self.row_rules, *self.warnings]}
        return fixed.get(rule) or others.get(rule) or rule.replace("_", " ")

    @property
    def rules(self) -> list[str]:
        """Rule names in the order a report lists them."""
        names = ["no_empty_cells"] + [c.rule for c in self.columns.values()]
        names += [r["rule"] for r in self.row_rules] + [w["rule"] for w in self.warnings]
        return list(dict.fromkeys(names))

    # -- single values (servers) -------------------------------------------------------------
    def problem(self, column: str, value: Any) -> str | None:
        """``None`` if ``value`` is allowed in ``column``, else the sentence a report gives for it.

        ``value`` is already of the column's type (servers check types first); a missing value is
        the server's own concern. The sentence is :func:`violation`'s: the same words as training.
        """
        rule = self.columns.get(column)
        if rule is None:
            raise ContractError(f"the contract {self.name!r} has no column {column!r}")
        if value is None or (isinstance(value, float) and math.isnan(value)) or not rule.breaks(value):
            return None
        return violation(column, rule.rule, value, rule.says, rule.allowed)

    def violations(self, frame: pd.DataFrame) -> list[dict]:
        """Every value of ``frame`` its columns' rules forbid, row by row (the fast path for
        requests: no schema is built), in a report's words; a missing value breaks
        ``no_empty_cells``. Rows are numbered by position; columns the contract does not know, and
        types, are the caller's concern (a signature checks them)."""
        found = []
        columns = [c for c in frame.columns if c in self.columns]
        for row, values in enumerate(frame[columns].itertuples(index=False, name=None)):
            for column, value in zip(columns, values):
                value = value.item() if hasattr(value, "item") else value  # NumPy scalars as Python's
                if _is_missing(value):
                    found.append({"row": row, "column": column, "value": None, "rule": "no_empty_cells",
                                  "message": f"column '{column}': the value is missing"})
                    continue
                message = self.problem(column, value)
                if message is not None:
                    found.append({"row": row, "column": column, "value": value,
                                  "rule": self.columns[column].rule, "message": message})
        return found

    # -- frames (training, batches) ----------------------------------------------------------
    def schema(self):
        """The pandera ``DataFrameSchema`` of this contract (every column required, no missing values)."""
        import pandera.pandas as pa

        columns = {}
        for c in self.columns.values():
            checks = []
            if c.allowed is not None:
                checks.append(pa.Check.isin(list(c.allowed), name=c.rule))
            if c.range is not None:
                checks.append(pa.Check.in_range(*c.range, name=c.rule))
            if c.increasing:
                checks.append(pa.Check(lambda s: (s > s.shift()) | s.shift().isna(), name=c.rule))
            columns[c.column] = pa.Column(_pandera_type(c.type), checks=checks, nullable=False,
                                          unique=c.unique, coerce=False)
        frame_checks = [_row_check(r) for r in self.row_rules]
        return pa.DataFrameSchema(columns, checks=frame_checks, name=self.name, strict=False)

    def validate(self, frame: pd.DataFrame, name: str | None = None) -> "Report":
        """Check every row against the contract and the warnings; never raises for bad data."""
        import pandera.errors

        name = name or frame.attrs.get("name") or self.name
        original, frame = frame, frame.reset_index(drop=True)  # rows are reported by position
        failures: list[dict] = []
        if frame.empty:
            failures.append(_failure(None, None, "not_empty", None, "the batch has no rows"))
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.schema().validate(frame, lazy=True)
            except pandera.errors.SchemaErrors as errors:
                failures += self._read_failures(errors.failure_cases, frame)
            failures += self._warnings(frame)
        table = pd.DataFrame(failures, columns=_FAILURE_COLUMNS)
        table["row"] = table["row"].astype("Int64")
        return Report(name, self, original, table, len(frame))

    def _read_failures(self, cases: pd.DataFrame, frame: pd.DataFrame) -> list[dict]:
        out: list[dict] = []
        row_rules = {r["rule"]: r for r in self.row_rules}
        for case in cases.itertuples(index=False):
            column, check, value = case.column, str(case.check), case.failure_case
            row = None if pd.isna(case.index) else case.index
            if check == "column_in_dataframe":
                missing = str(value)
                rule = self.columns[missing].rule if missing in self.columns else "columns"
                out.append(_failure(missing, None, rule, None,
                                    f"column '{missing}' is missing" + _suggest(missing, frame.columns)))
            elif check == "not_nullable":
                out.append(_failure(column, row, "no_empty_cells", None, f"column '{column}': the value is missing"))
            elif check.startswith("dtype("):
                rule = self.columns[column]
                found = str(frame[column].dtype) if column in frame else "?"
                out.append(_failure(column, None, f"{column}_type", None,
                                    f"column '{column}': expected {_TYPE_WORDS[rule.type]}, got dtype {found}"))
            elif check == "field_uniqueness":
                rule = self.columns[column]
                out.append(_failure(column, row, rule.rule, value, f"column '{column}': {value} appears more than once "
                                                                   f"(rule {rule.rule}: {rule.says})"))
            elif check in row_rules:
                if row is not None and not any(f["rule"] == check and f["row"] == row for f in out):
                    out.append(_failure(None, row, check, None, f"row {row} breaks rule {check} ({row_rules[check]['says']})"))
            elif column in self.columns:
                rule = self.columns[column]
                if rule.increasing and not rule.allowed and not rule.range:
                    out.append(_failure(column, row, rule.rule, frame[column].get(row, value) if row is not None else value,
                                        f"column '{column}': {_value(frame[column].get(row)) if row is not None else 'a value'} "
                                        f"does not come after the row above it (rule {rule.rule}: {rule.says})"))
                elif _is_missing(value):
                    continue  # reported by not_nullable
                elif row is None:  # the check could not run, e.g. text in a number column
                    if not any(f["column"] == column and f["rule"].endswith("_type") for f in out):
                        out.append(_failure(column, None, rule.rule, None, f"column '{column}': cannot check rule "
                                            f"{rule.rule} ({rule.says}): the values have the wrong type"))
                else:
                    out.append(_failure(column, row, rule.rule, value,
                                        violation(column, rule.rule, value, rule.says, rule.allowed)))
            else:
                out.append(_failure(column, row, check, value, f"column '{column}': {value!r} fails {check}"))
        # a dtype failure is reported once per column, not once per row
        seen, unique = set(), []
        for f in out:
            key = (f["column"], f["rule"]) if f["row"] is None else id(f)
            if key not in seen:
                seen.add(key)
                unique.append(f)
        return unique

    def _warnings(self, frame: pd.DataFrame) -> list[dict]:
        out = []
        for w in self.warnings:
            present = [c for c in w["columns"] if c in frame.columns]
            if not present:
                continue
            bad = frame[present].astype(str).eq(str(w["not"])).any(axis=1)
            for row in frame.index[bad]:
                out.append(_failure(None, row, w["rule"], None, f"row {row}: {w['says']} fails (warning)", warning=True))
        return out


_FAILURE_COLUMNS = ["column", "row", "rule", "value", "message", "warning"]


def _failure(column, row, rule, value, message, warning: bool = False) -> dict:
    return {"column": column, "row": row, "rule": rule, "value": value, "message": message, "warning": warning}


def _is_missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _value(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return repr(value.item() if hasattr(value, "item") else value)


def closest(name: str, choices) -> str | None:
    """The one of ``choices`` closest to ``name``, or None: the course's "did you mean" hints."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return match[0] if match else None


def _suggest(name: str, choices) -> str:
    match = closest(name, choices)
    return f" (did you mean '{match}'?)" if match else ""


def describe_violations(violations: list[dict], limit: int = 5) -> str:
    """A refusal's message: the first ``limit`` problems as ``row R, <the report's sentence>``.

    ``violations`` are ``{"row", "message", ...}`` dicts (:meth:`Contract.violations`, or the
    gateway's own). One wording wherever a request is refused for its values."""
    shown = "; ".join(f"row {v['row']}, {v['message']}" for v in violations[:limit])
    more = f" (first {limit} of {len(violations)} problems shown)" if len(violations) > limit else ""
    return shown + more


def violation(column: str, rule: str, value: Any, says: str, allowed: tuple | None = None) -> str:
    """The sentence for a value that breaks a rule: the same in a training report and a refusal."""
    hint = _suggest(value, allowed) if allowed is not None and isinstance(value, str) else ""
    return f"column '{column}': {_value(value)} breaks rule {rule} ({says}){hint}"


def _row_check(rule: dict):
    import pandera.pandas as pa

    if "sum" in rule:
        total, parts = rule["sum"]["total"], rule["sum"]["parts"]
        return pa.Check(lambda f: f[total] == f[parts].sum(axis=1), name=rule["rule"])
    raise ContractError(f"unknown row rule {rule!r}: the course knows 'sum'")


def _pandera_type(kind: str):
    """The pandera dtype of a contract type; text is checked by its allowed values, not a dtype
    (pandas holds it as object or category)."""
    import pandera.pandas as pa

    return {"integer": pa.Int64, "number": pa.Float64, "string": None, "datetime": pa.Timestamp}[kind]


@dataclass
class Report:
    """What :meth:`Contract.validate` found: one row per offending value in :attr:`failures`."""

    name: str
    contract: Contract
    frame: pd.DataFrame
    failures: pd.DataFrame
    rows: int

    @property
    def errors(self) -> pd.DataFrame:
        """Violations of the contract (warnings left out)."""
        return self.failures[~self.failures["warning"].astype(bool)]

    @property
    def passed(self) -> bool:
        """True when nothing breaks the contract (warnings do not count)."""
        return self.errors.empty

    @property
    def bad_rows(self) -> list[int]:
        """Positions (0 = the first row) of the rows that break the contract, as every message counts them."""
        return sorted({int(r) for r in self.errors["row"] if r is not None and not _is_missing(r)})

    def summary(self) -> pd.DataFrame:
        """One row per rule: what it says, whether it passed, how many rows break it."""
        rows = []
        for rule in dict.fromkeys([*self.contract.rules, *self.failures["rule"]]):
            if rule == "not_empty" and self.rows:
                continue
            hits = self.failures[self.failures["rule"] == rule]
            count = hits["row"].dropna().nunique()
            detail = "" if hits.empty else f"{count} rows" if count else hits["message"].iloc[0]
            rows.append({"rule": rule, "description": self.contract.says(rule), "passed": hits.empty, "detail": detail})
        return pd.DataFrame(rows).set_index("rule")

    def verdict(self) -> str:
        """One sentence: passed, or how many violations of which rules."""
        if self.passed:
            return f"{self.rows} rows pass the {self.contract.name} contract v{self.contract.version}."
        rules = self.errors["rule"].value_counts()
        listed = ", ".join(f"{rule} ({n})" for rule, n in rules.items())
        return f"{len(self.errors)} violations of the {self.contract.name} contract v{self.contract.version}: {listed}."

    def to_dict(self) -> dict:
        """The report as JSON-able data (what quarantine writes beside the rows)."""
        failures = self.failures.astype(object).where(self.failures.notna(), None)
        return {"name": self.name, "contract": self.contract.name, "version": self.contract.version,
                "rows": self.rows, "passed": self.passed, "verdict": self.verdict(),
                "failures": [{k: (_json_value(v)) for k, v in row.items()} for row in failures.to_dict("records")]}

    def to_markdown(self) -> str:
        """The report as a readable page: the verdict, then every violation."""
        lines = [f"# Validation report: {self.name}", "", self.verdict(), "",
                 "| row | column | rule | message |", "|---|---|---|---|"]
        for f in self.failures.itertuples():
            lines.append(f"| {'' if _is_missing(f.row) else f.row} | {f.column or ''} | {f.rule} | {f.message} |")
        return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def contract(name: str) -> Contract:
    """The data contract of a shipped dataset: ``"german_credit"`` or ``"bikeshare_hourly_2011"``."""
    import yaml

    path = SPEC_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
        raise ContractError(f"no data contract named {name!r}; the course has {known}")
    return Contract.from_dict(yaml.safe_load(path.read_text()))


def run_rules(frame: pd.DataFrame, rules: Contract | str) -> pd.DataFrame:
    """Lesson 01's table: one row per rule of the contract, passed or not, and how many rows break it."""
    rules = contract(rules) if isinstance(rules, str) else rules
    return rules.validate(frame).summary()


def quarantine_dir() -> Path:
    """Where rejected batches are kept: ``<workspace>/quarantine``."""
    from mlops_lab.config import workspace

    return workspace() / "quarantine"


def quarantine(report: Report) -> Path:
    """Keep a rejected batch on disk: every row (``rows.csv``: ``row`` as the report counts them, the
    batch's own ``index``, every column) and its report (JSON and Markdown)."""
    from mlops_lab.datasets import digest

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", report.name).strip("-.") or "batch"
    folder = quarantine_dir() / f"{safe}-{stamp}-{digest(report.frame)}"
    folder.mkdir(parents=True, exist_ok=True)
    # ``row`` is the position the report names; ``index`` keeps the batch's own labels
    report.frame.reset_index(names="index").to_csv(folder / "rows.csv", index=True, index_label="row")
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (folder / "report.md").write_text(report.to_markdown())
    return folder


def quarantined() -> pd.DataFrame:
    """The batches in quarantine: folder, name, rows and verdict."""
    rows = []
    for path in sorted(quarantine_dir().glob("*/report.json")) if quarantine_dir().is_dir() else []:
        report = json.loads(path.read_text())
        rows.append({"folder": path.parent.name, "name": report["name"], "rows": report["rows"],
                     "verdict": report["verdict"]})
    return pd.DataFrame(rows, columns=["folder", "name", "rows", "verdict"])


def accept_batch(frame: pd.DataFrame, rules: Contract | str, name: str | None = None) -> pd.DataFrame:
    """``frame`` unchanged if it keeps the contract; otherwise quarantine it and raise :class:`BatchRejected`."""
    rules = contract(rules) if isinstance(rules, str) else rules
    report = rules.validate(frame, name=name)
    if not report.passed:
        raise BatchRejected(report, quarantine(report))
    return frame


def spoil(frame: pd.DataFrame, changes: dict[tuple[int, str], Any]) -> pd.DataFrame:
    """A copy of ``frame`` with the cells ``{(row position, column): value}`` changed: a broken batch
    to practise on. Category columns become plain text first, so any value can be written."""
    out = frame.reset_index(drop=True).copy()
    for (row, column), value in changes.items():
        if column not in out.columns:
            raise ContractError(f"spoil: no column {column!r} in the frame")
        if not 0 <= row < len(out):
            raise ContractError(f"spoil: row {row} is outside the frame's {len(out)} rows (0 to {len(out) - 1})")
        if isinstance(out[column].dtype, pd.CategoricalDtype):
            out[column] = out[column].astype(object)
        if value is None or isinstance(value, float) and not pd.api.types.is_float_dtype(out[column]):
            if pd.api.types.is_integer_dtype(out[column]):
                out[column] = out[column].astype("float64")
        out.loc[row, column] = value
    return out


def class_balance(target: pd.Series) -> pd.DataFrame:
    """Counts and shares of each class of a classification target."""
    counts = target.value_counts().sort_index()
    return pd.DataFrame({"count": counts, "share": (counts / counts.sum()).round(3)})


def missing_hours(frame: pd.DataFrame, timestamp: str = "timestamp") -> pd.DataFrame:
    """Hours absent from an hourly series, counted per month (a stream's gaps are quality issues too)."""
    stamps = pd.DatetimeIndex(frame[timestamp])
    expected = pd.date_range(stamps.min().normalize(), stamps.max().normalize() + pd.Timedelta(hours=23), freq="h")
    absent = expected.difference(stamps)
    per_month = pd.Series(absent.month, dtype="int64").value_counts().reindex(range(1, 13), fill_value=0)
    return pd.DataFrame({"expected_hours": pd.Series(expected.month).value_counts().sort_index(),
                         "missing_hours": per_month}).rename_axis("month")
