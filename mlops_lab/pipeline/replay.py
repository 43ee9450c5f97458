"""The year replayed under the three retraining policies, through the real pipeline (lesson 14).

Each policy gets its own registered model (``bike-demand-<policy>``) and experiment; the months go
through the same Dagster job one after the other, exactly as the inbox sensor would send them.
Every run scores the champion on the new month *before* anything is retrained (the error
production saw that month), so the policies are compared on the error users lived with, and on how
many models they trained and promoted to get there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

import pandas as pd

from mlops_lab.pipeline import workflow

POLICIES = ("never", "always", "drift")
LABELS = {"never": "never retrain", "always": "retrain monthly", "drift": "retrain on drift alarm"}


def write_batches(months: Iterable, folder: Path, first: int = 2) -> list[Path]:
    """Write Bikeshare months as batch files: the first ``first`` months as one bootstrap batch
    (the first champion needs a window), then one file per month. The paths, in order."""
    months = list(months)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    head = pd.concat([b.frame for b in months[:first]], ignore_index=True)
    paths.append(folder / f"{workflow.month_key(head['timestamp'].min())}..{workflow.month_key(head['timestamp'].max())}.parquet")
    head.to_parquet(paths[-1], index=False)
    for batch in months[first:]:
        paths.append(folder / f"{workflow.month_key(batch.frame['timestamp'].min())}.parquet")
        batch.frame.to_parquet(paths[-1], index=False)
    return paths


def replay_all(paths: list[Path], policies: Iterable[str] = POLICIES,
               settings: workflow.Settings | None = None) -> pd.DataFrame:
    """:func:`replay` under each policy, one after the other; one row per run, every policy."""
    rows = [row for policy in policies for row in _runs(paths, policy, settings)]
    return pd.DataFrame(rows)


def replay(paths: list[Path], policy: str, settings: workflow.Settings | None = None) -> pd.DataFrame:
    """Run the batches in order under ``policy`` (``never``, ``always`` or ``drift``); one row per run."""
    return pd.DataFrame(_runs(paths, policy, settings))


def _runs(paths: list[Path], policy: str, settings: workflow.Settings | None) -> list[dict]:
    from mlops_lab.pipeline import definitions

    if policy not in POLICIES:
        raise workflow.PipelineError(f"policy must be one of {list(POLICIES)}, not {policy!r}")
    base = settings or workflow.Settings()
    settings = replace(base, retrain_when=policy, model_name=f"{base.model_name}-{policy}",
                       experiment=f"{base.experiment}-{policy}")
    rows = []
    for path in paths:
        summary = definitions.run(path, settings=settings, trigger=f"replay:{policy}")
        rows.append({"policy": policy, "month": summary["months"][-1], "production_mae": summary["scores"].get("production_mae"),
                     "alarm": summary["drift"].get("alarm") if summary["drift"] else None,
                     "decision": summary["decision"], "champion": summary["champion_after"],
                     "challenger_mae": summary["scores"].get("challenger_mae"),
                     "champion_mae": summary["scores"].get("champion_mae"), "reason": summary["reason"]})
    return rows


def compare(results: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: mean production error over the replayed months (after the bootstrap),
    models trained, promotions, months held, and the error of the last month."""
    scored = results.dropna(subset=["production_mae"])
    rows = []
    for policy, part in results.groupby("policy", sort=False):
        mae = scored[scored["policy"] == policy]["production_mae"]
        rows.append({"policy": LABELS.get(policy, policy), "months": len(mae), "mean_mae": round(float(mae.mean()), 1),
                     "worst_mae": round(float(mae.max()), 1),
                     "trained": int(part["decision"].isin(["promoted", "kept", "refused"]).sum()),
                     "promoted": int((part["decision"] == "promoted").sum()),
                     "held": int((part["decision"] == "held").sum())})
    return pd.DataFrame(rows).set_index("policy")
