"""Streaming into the batch pipeline: micro-batches gathered until a month is complete.

Rows arrive an hour or a day at a time (a queue consumer, a nightly export). Retraining works on
whole months, so :class:`Accumulator` keeps the rows of each open month on disk and hands a month
to the inbox as one batch file once it is complete: when rows of a later month arrive (the
stream's watermark has passed it). The file is written under a hidden name and renamed, so the
inbox sensor never sees half a month.

What a stream does wrong is refused or absorbed, never silently merged: a micro-batch delivered
twice (at-least-once delivery) adds nothing; the same hour with different values, or rows for a
month already handed over (late data), refuse the whole micro-batch with a message, and nothing of
it is kept. Written by hand: a few dozen lines over pandas and Parquet; a streaming engine (Kafka
Streams, Flink, Spark Structured Streaming) does this with windows and watermarks at scale, which
this course does not need to run on one laptop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mlops_lab.pipeline.workflow import PipelineError, month_key, read_batch_frame


class Accumulator:
    """Micro-batches in, complete months out (as files in ``inbox``)."""

    def __init__(self, inbox: Path | None = None, folder: Path | None = None) -> None:
        from mlops_lab.config import workspace

        self.inbox = Path(inbox) if inbox else workspace() / "pipeline" / "inbox"
        self.folder = Path(folder) if folder else workspace() / "pipeline" / "stream"
        self.pending_dir = self.folder / "pending"
        self.sent_path = self.folder / "sent.json"

    def sent(self) -> list[str]:
        """The months already handed to the inbox, oldest first."""
        return json.loads(self.sent_path.read_text()) if self.sent_path.is_file() else []

    def _open(self, month: str) -> pd.DataFrame | None:
        path = self.pending_dir / f"{month}.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    def pending(self) -> pd.DataFrame:
        """The open months: rows so far, first and last hour."""
        rows = []
        for path in sorted(self.pending_dir.glob("*.parquet")) if self.pending_dir.is_dir() else []:
            frame = pd.read_parquet(path)
            rows.append({"month": path.stem, "rows": len(frame), "first": frame["timestamp"].min(),
                         "last": frame["timestamp"].max()})
        return pd.DataFrame(rows, columns=["month", "rows", "first", "last"])

    def add(self, frame: pd.DataFrame) -> list[Path]:
        """Take one micro-batch; the batch files of the months it completed (often none)."""
        if "timestamp" not in frame.columns:
            raise PipelineError("a micro-batch needs a 'timestamp' column")
        if frame.empty:
            raise PipelineError("the micro-batch is empty")
        frame = read_batch_frame(frame)
        months = frame["timestamp"].map(month_key)
        sent = self.sent()
        late = sorted(set(months) & set(sent))
        if late:
            count = int(months.isin(late).sum())
            raise PipelineError(f"{count} rows for {', '.join(late)}, already handed over as a batch: late rows "
                                "are refused (the micro-batch was not kept)")
        merged = {}
        for month, part in frame.groupby(months, sort=True):
            before = self._open(month)
            combined = part if before is None else pd.concat([before, part], ignore_index=True)
            duplicated = combined[combined.duplicated("timestamp", keep=False)]
            if len(duplicated) and len(duplicated.drop_duplicates()) != duplicated["timestamp"].nunique():
                hour = duplicated["timestamp"].iloc[0]
                raise PipelineError(f"the hour {hour} arrived twice with different values: the micro-batch was "
                                    "not kept (send a correction as its own batch after the month, or fix the source)")
            merged[month] = combined.drop_duplicates().sort_values("timestamp").reset_index(drop=True)
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        for month, combined in merged.items():  # only once every month of the micro-batch is accepted
            tmp = self.pending_dir / f".{month}.parquet.tmp"
            combined.to_parquet(tmp, index=False)
            tmp.replace(self.pending_dir / f"{month}.parquet")
        return self._flush(max(months))

    def _flush(self, watermark: str) -> list[Path]:
        """Hand every open month older than the watermark's month to the inbox."""
        written = []
        self.inbox.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.pending_dir.glob("*.parquet")):
            month = path.stem
            if month >= watermark:
                continue
            target = self.inbox / f"{month}.parquet"
            hidden = self.inbox / f".{month}.parquet.tmp"
            pd.read_parquet(path).to_parquet(hidden, index=False)
            hidden.replace(target)  # appears whole, or not at all
            self.sent_path.write_text(json.dumps(self.sent() + [month]))
            path.unlink()
            written.append(target)
        return written
