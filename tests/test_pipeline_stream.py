"""Micro-batches gathered into complete months for the batch pipeline (lesson 14's streaming case)."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops_lab import datasets
from mlops_lab.pipeline import definitions, workflow
from mlops_lab.pipeline.stream import Accumulator
from mlops_lab.pipeline.workflow import PipelineError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def days():
    """January and the first days of February, one micro-batch per day."""
    bikes = datasets.load_bikeshare()
    part = bikes[bikes["timestamp"] < "2011-02-04"]
    return [day for _, day in part.groupby(part["timestamp"].dt.date)]


def test_a_month_is_handed_over_whole_once_the_stream_passes_it(days, home):
    stream = Accumulator()
    january = [d for d in days if d["timestamp"].iloc[0].month == 1]
    for day in january:
        assert stream.add(day) == []  # January is still open
    assert definitions.waiting_batches() == []
    assert stream.pending().set_index("month")["rows"].to_dict() == {"2011-01": sum(map(len, january))}
    [written] = stream.add(days[len(january)])  # the first hour of February closes January
    assert written.name == "2011-01.parquet" and definitions.waiting_batches() == [written]
    expected = pd.concat(january, ignore_index=True)
    got = workflow.read_batch(written)
    assert workflow.batch_digest(got) == workflow.batch_digest(workflow.read_batch_frame(expected))
    assert workflow.batch_months(got) == ["2011-01"]
    assert stream.sent() == ["2011-01"] and list(stream.pending()["month"]) == ["2011-02"]
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]  # no half-written file left


def test_a_micro_batch_delivered_twice_adds_nothing(days, home):
    stream = Accumulator()
    stream.add(days[0])
    stream.add(days[0])
    stream.add(pd.concat([days[0].tail(3), days[1]]))
    assert stream.pending()["rows"].tolist() == [len(days[0]) + len(days[1])]


def test_the_same_hour_with_other_values_refuses_the_whole_micro_batch(days, home):
    stream = Accumulator()
    stream.add(days[0])
    changed = pd.concat([days[0].head(1).assign(bikers=999, registered=999 - days[0]["casual"].iloc[0]), days[1]])
    with pytest.raises(PipelineError, match="arrived twice with different values"):
        stream.add(changed)
    assert stream.pending()["rows"].tolist() == [len(days[0])]  # day 2 was not kept either


def test_late_rows_for_a_month_already_handed_over_are_refused(days, home):
    stream = Accumulator()
    for day in days[:32]:
        stream.add(day)
    assert stream.sent() == ["2011-01"]
    with pytest.raises(PipelineError, match="already handed over as a batch: late rows are refused"):
        stream.add(pd.concat([days[5], days[32]]))
    assert stream.pending()["rows"].tolist() == [len(days[31])]


@pytest.mark.parametrize("frame, words", [(pd.DataFrame({"a": [1]}), "needs a 'timestamp' column"),
                                          (pd.DataFrame({"timestamp": []}), "is empty")])
def test_malformed_micro_batches_are_refused(frame, words, home):
    with pytest.raises(PipelineError, match=words):
        Accumulator().add(frame)
