"""The feedback loop: what the model was asked, what it answered, and the labels that come later.

The router's inference log (``mlops_lab.deployment.log``) holds one row per answered request,
with the request body and the answer. :func:`requests_frame` turns it into one row per scored
record (the features the model saw and its prediction), parsing bodies with MLflow's own
scoring-server parser, so every input format the servers accept is read the same way here.

Labels arrive later (a loan defaults months after the decision; a demand count after the hour)
and some never arrive. :func:`join_labels` joins them by request id and keeps three counts
apart: labelled rows (performance can be measured on them), pending rows (no label yet: not
wrong, not right), and labels for request ids the log never saw (counted and listed, never
silently dropped: they usually mean the caller sent the wrong id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_lab.deployment.log import InferenceLog, decode_body
from mlops_lab.monitoring.drift import MonitoringError, check_columns


def _records(request, response) -> tuple[pd.DataFrame | tuple | None, list | None]:
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    if not isinstance(request, dict) or not isinstance(response, dict):
        return None, None
    split = request.get("dataframe_split")
    if (len(request) == 1 and isinstance(split, dict) and set(split) == {"columns", "data"}
            and isinstance(split["data"], list) and all(isinstance(r, list) for r in split["data"])):
        # the clients' default format: rows kept as lists and framed in bulk (a DataFrame per request
        # costs about 0.4 ms, far more than the check itself)
        frame = (tuple(split["columns"]), split["data"])
    else:
        try:
            data = infer_and_parse_data(request)
        except Exception:  # noqa: BLE001 (a body the model server refused too: not a scored record)
            return None, None
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    predictions = response.get("predictions")
    size = len(frame[1]) if isinstance(frame, tuple) else len(frame)
    if isinstance(predictions, dict):  # {"predictions": {"column": [...]}}
        predictions = next(iter(predictions.values()), None)
    if not isinstance(predictions, list) or len(predictions) != size:
        return None, None
    return frame, predictions


def requests_frame(log: InferenceLog | pd.DataFrame, *, role: str = "primary",
                   prediction: str = "prediction") -> pd.DataFrame:
    """One row per scored record in the inference log: ``request_id``, ``row`` (its position in the
    request), ``at``, ``variant``, ``version``, the features, and the model's answer in ``prediction``.

    Only answered requests (HTTP 200) count; ``frame.attrs["skipped"]`` says how many logged
    requests were left out because they failed or could not be parsed."""
    if not isinstance(log, (InferenceLog, pd.DataFrame)):
        raise MonitoringError("requests_frame reads an InferenceLog or the DataFrame of InferenceLog.frame(...).")
    table = log.frame(role, parse=True) if isinstance(log, InferenceLog) else log
    check_columns(table, ["request_id", "at", "status", "request", "response"], "inference log")
    if role is not None and "role" in table.columns:
        table = table[table["role"] == role]
    parts, meta, skipped = [], {k: [] for k in ("request_id", "at", "variant", "version", "row", prediction)}, 0
    for entry in table.itertuples(index=False):
        request, response = entry.request, entry.response
        if isinstance(request, str):
            request, response = decode_body(request), decode_body(response)
        frame, predictions = (None, None) if entry.status != 200 else _records(request, response)
        if frame is None:
            skipped += 1
            continue
        size = len(predictions)
        if isinstance(frame, tuple) and parts and isinstance(parts[-1], tuple) and parts[-1][0] == frame[0]:
            parts[-1][1].extend(frame[1])  # same columns as the request before: one block
        else:
            parts.append((frame[0], list(frame[1])) if isinstance(frame, tuple) else frame)
        for key, value in (("request_id", entry.request_id), ("at", entry.at),
                           ("variant", getattr(entry, "variant", None)), ("version", getattr(entry, "version", None))):
            meta[key].extend([value] * size)
        meta["row"].extend(range(size))
        meta[prediction].extend(predictions)
    front = ["request_id", "row", "at", "variant", "version"]
    if parts:  # one concat and one assignment per column: per-request assignments cost 1.6 ms each
        frames = [pd.DataFrame(p[1], columns=list(p[0])) if isinstance(p, tuple) else p for p in parts]
        features = pd.concat(frames, ignore_index=True)
        result = pd.concat([pd.DataFrame({k: meta[k] for k in front}), features.drop(columns=front + [prediction],
                                                                                       errors="ignore")], axis=1)
        result[prediction] = meta[prediction]
    else:
        result = pd.DataFrame(columns=front + [prediction])
    result.attrs["skipped"] = skipped
    return result


@dataclass
class Feedback:
    """Predictions joined with the labels that have arrived.

    ``frame`` has every prediction with ``label``, ``label_at`` and ``delay`` (NaN/NaT while
    pending); ``unknown`` lists the request ids of labels that match no logged prediction."""

    frame: pd.DataFrame
    unknown: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> pd.DataFrame:
        return self.frame[self.frame["label"].notna()]

    @property
    def pending(self) -> int:
        """Predictions whose label has not arrived (yet)."""
        return int(self.frame["label"].isna().sum())

    @property
    def coverage(self) -> float:
        """Share of predictions with a label (NaN for no predictions)."""
        return float(self.frame["label"].notna().mean()) if len(self.frame) else float("nan")

    @property
    def median_delay(self) -> pd.Timedelta:
        """Median time from prediction to label, over the labels that arrived with a time (NaT if none)."""
        delays = self.labelled["delay"].dropna()
        return delays.median() if len(delays) else pd.NaT

    def summary(self) -> str:
        delay = self.median_delay
        if pd.isna(delay):
            delay = "n/a"
        else:  # to the minute once labels take hours (seconds of traffic do not matter then)
            delay = pd.Timedelta(delay)
            delay = str(delay.round("min" if delay > pd.Timedelta("1h") else "s"))
        text = (f"{len(self.labelled)} of {len(self.frame)} predictions labelled ({self.coverage:.0%}), "
                f"{self.pending} pending, median label delay {delay}")
        if self.unknown:
            text += f"; {len(self.unknown)} label(s) for unknown request ids (e.g. {self.unknown[0]!r})"
        return text

    def __repr__(self) -> str:
        return f"<Feedback {self.summary()}>"


def _label_table(labels) -> pd.DataFrame:
    if isinstance(labels, InferenceLog):
        return labels.labels()
    if isinstance(labels, dict):
        labels = pd.Series(labels)
    if isinstance(labels, pd.Series):
        return pd.DataFrame({"request_id": labels.index.astype(str), "label": labels.to_numpy(), "at": pd.NaT})
    if isinstance(labels, pd.DataFrame):
        check_columns(labels, ["request_id", "label"], "labels")
        at = labels["at"] if "at" in labels.columns else pd.NaT
        if "at" in labels.columns and pd.api.types.is_numeric_dtype(labels["at"]):
            raise MonitoringError("labels 'at' holds numbers, not times: pass pd.to_datetime(..., unit='s', utc=True).")
        try:
            at = pd.to_datetime(at, utc=True)
        except (TypeError, ValueError) as error:
            raise MonitoringError(f"labels 'at' cannot be read as times: {error}") from None
        return labels.assign(request_id=labels["request_id"].astype(str), at=at)
    raise MonitoringError("labels must be a dict or Series by request id, a DataFrame with request_id and label "
                          "(and optionally at), or an InferenceLog.")


def join_labels(predictions: pd.DataFrame, labels, *, time: str = "at") -> Feedback:
    """Join labels to predictions by ``request_id`` (the id the router returned in ``X-Request-Id``).

    ``labels``: a dict or Series of label by request id, a DataFrame with ``request_id``, ``label``
    and optionally ``at`` (arrival time), or the :class:`InferenceLog` itself (its ``labels()``). A
    request that scored several rows takes a list of labels, one per row, in order. Raises
    :class:`MonitoringError` when no label matches any prediction (almost always the wrong ids)."""
    check_columns(predictions, ["request_id"], "predictions")
    table = _label_table(labels)
    # the label that arrived last wins (rows without an arrival time count as the oldest)
    table = table.sort_values("at", na_position="first", kind="stable").drop_duplicates("request_id", keep="last")
    known = set(predictions["request_id"].astype(str))
    is_known = table["request_id"].astype(str).isin(known)
    unknown = sorted(table.loc[~is_known, "request_id"].astype(str))
    if len(table) and not is_known.any() and len(predictions):
        raise MonitoringError(f"None of the {len(table)} labels matches a logged request id (e.g. "
                              f"{unknown[0]!r}); labels are joined by the X-Request-Id the router returned.")
    by_id = table[is_known].set_index("request_id")
    frame = predictions.copy()
    rows = frame["row"] if "row" in frame.columns else pd.Series(0, index=frame.index)
    sizes = frame.groupby("request_id")["request_id"].transform("size")
    rows = rows.fillna(0)
    values, arrived = [], []
    for request_id, row, size in zip(frame["request_id"].astype(str), rows, sizes):
        if request_id not in by_id.index:
            values.append(None)
            arrived.append(pd.NaT)
            continue
        label = by_id.at[request_id, "label"]
        if isinstance(label, (list, tuple, np.ndarray)):
            if int(row) >= len(label):  # a window may hold only some of a request's rows: index by row
                raise MonitoringError(f"Request {request_id!r} scored at least {int(row) + 1} rows but got "
                                      f"{len(label)} label(s).")
            label = label[int(row)]
        elif size > 1 or int(row) > 0:
            raise MonitoringError(f"Request {request_id!r} scored several rows: send a list of labels, one per row "
                                  "in order.")
        values.append(label)
        arrived.append(by_id.at[request_id, "at"])
    frame["label"] = pd.Series(values, index=frame.index, dtype=object).where(pd.notna(values), None)
    frame["label_at"] = pd.to_datetime(pd.Series(arrived, index=frame.index), utc=True)
    if time in frame.columns:
        frame["delay"] = frame["label_at"] - pd.to_datetime(frame[time], utc=True)
    else:
        frame["delay"] = pd.NaT
    return Feedback(frame, unknown)
