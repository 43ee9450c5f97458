"""Figures the notebooks show: the course map and a few data plots. Each returns the Figure."""

from __future__ import annotations

import pandas as pd

STAGES = [
    ("Initiation", "00-01"),
    ("Data &\nfeatures", "02"),
    ("Experiment-\nation", "03-04"),
    ("Evaluation", "05"),
    ("Validation", "06"),
    ("Packaging", "07"),
    ("Registry", "08"),
    ("Deployment", "09-12"),
    ("Monitoring", "13"),
    ("Retraining", "14"),
]
"""The lifecycle stages in course order, with the notebooks that teach each."""


def course_map(highlight: str | None = None):
    """The ML lifecycle as a loop of stages with their notebook numbers; ``highlight`` one stage."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 2.8))
    ax.set_xlim(-0.2, len(STAGES) * 1.1)
    ax.set_ylim(-1.3, 0.65)
    ax.axis("off")
    for i, (stage, notebooks) in enumerate(STAGES):
        x = i * 1.1
        on = highlight is not None and highlight.lower() in stage.lower().replace("\n", "").replace("-", "")
        ax.add_patch(FancyBboxPatch((x, -0.4), 0.9, 0.8, boxstyle="round,pad=0.05",
                                    facecolor="#f4a261" if on else "#e9f1f7", edgecolor="#264653"))
        ax.text(x + 0.45, 0.08, stage, ha="center", va="center", fontsize=8.5)
        ax.text(x + 0.45, -0.28, notebooks, ha="center", va="center", fontsize=7.5, color="#555")
        if i < len(STAGES) - 1:
            ax.add_patch(FancyArrowPatch((x + 0.95, 0), (x + 1.05, 0), arrowstyle="->", mutation_scale=10))
    last = (len(STAGES) - 1) * 1.1 + 0.45
    ax.add_patch(FancyArrowPatch((last, -0.5), (0.45, -0.5), connectionstyle="arc3,rad=-0.07",
                                 arrowstyle="->", mutation_scale=12, color="#2a9d8f"))
    ax.text(last / 2 + 0.2, -1.1, "new data arrives: monitor, retrain, validate, promote again",
            ha="center", fontsize=8.5, color="#2a9d8f")
    ax.set_title("The ML lifecycle this course walks (notebook numbers under each stage)", fontsize=10)
    fig.tight_layout()
    return fig


def histograms(frame: pd.DataFrame, columns: list[str], by: str | None = None, bins: int = 30):
    """One histogram per numeric column, split by ``by`` (e.g. the target) when given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3))
    axes = [axes] if len(columns) == 1 else list(axes)
    for ax, column in zip(axes, columns):
        if by is None:
            ax.hist(frame[column], bins=bins, color="#457b9d")
        else:
            for value, part in frame.groupby(by, observed=True):
                ax.hist(part[column], bins=bins, alpha=0.6, label=f"{by}={value}")
            ax.legend(fontsize=8)
        ax.set_title(column, fontsize=10)
    fig.tight_layout()
    return fig


def demand_over_time(bikes: pd.DataFrame):
    """Daily Bikeshare rentals over 2011 (left) and the average demand by hour of day (right)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    daily = bikes.set_index("timestamp")["bikers"].resample("D").sum()
    left.plot(daily.index, daily.values, color="#264653", lw=0.8)
    left.set_title("Rentals per day, 2011", fontsize=10)
    by_hour = bikes.groupby(["workingday", "hr"])["bikers"].mean().unstack(0)
    right.plot(by_hour.index, by_hour[1], label="working day")
    right.plot(by_hour.index, by_hour[0], label="weekend / holiday")
    right.set_title("Mean rentals by hour", fontsize=10)
    right.set_xlabel("hour")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion(y_true, y_pred, labels=(0, 1), names=("bad (0)", "good (1)"), title: str = "Confusion matrix"):
    """A confusion matrix with counts, rows = truth, columns = prediction."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=list(labels), display_labels=list(names),
                                            ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def metric_bars(table: pd.DataFrame, metric: str, label: str, lower_is_better: bool = False):
    """A horizontal bar per run (``label`` column) for one ``metric`` column, best at the top."""
    import matplotlib.pyplot as plt

    data = table.sort_values(metric, ascending=not lower_is_better)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(data) + 1))
    ax.barh(data[label].astype(str), data[metric], color="#2a9d8f")
    for y, value in enumerate(data[metric]):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    ax.set_xlabel(metric + (" (lower is better)" if lower_is_better else ""))
    fig.tight_layout()
    return fig


def predicted_vs_actual(y_true, y_pred, title: str = "Predicted vs actual"):
    """Scatter of predictions against the truth, with the perfect-prediction diagonal."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.scatter(y_true, y_pred, s=4, alpha=0.4, color="#264653")
    top = max(float(max(y_true)), float(max(y_pred)))
    ax.plot([0, top], [0, top], color="#e76f51", lw=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def cost_curve(table: pd.DataFrame):
    """Average cost and approval rate against the decision threshold (from ``cost_by_threshold``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.plot(table["threshold"], table["cost"], marker="o", color="#e76f51", label="cost per applicant")
    best = table.loc[table["cost"].idxmin()]
    ax.axvline(best["threshold"], color="#999", ls="--", lw=1)
    ax.set_xlabel("approve when P(good) >= threshold")
    ax.set_ylabel("cost per applicant")
    twin = ax.twinx()
    twin.plot(table["threshold"], table["approval_rate"], color="#457b9d", label="approval rate")
    twin.set_ylabel("approval rate")
    fig.legend(loc="upper center", fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def group_rates(by_group: dict[str, pd.DataFrame], title: str = ""):
    """Selection rate, TPR and FPR per group, one panel per protected attribute (fairlearn output)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_group), figsize=(5 * len(by_group), 2.8), squeeze=False)
    for ax, (attr, table) in zip(axes[0], by_group.items()):
        table[["selection_rate", "tpr", "fpr"]].plot.bar(ax=ax, rot=0, width=0.75,
                                                          color=["#2a9d8f", "#457b9d", "#e76f51"])
        ax.set_title(f"by {attr}", fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_xlabel("")
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def history_vs_target(frame: pd.DataFrame, features: list[str], target: str = "bikers"):
    """One scatter per history feature against the target, with the correlation in the title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(features), figsize=(4 * len(features), 3.2), sharey=True)
    axes = [axes] if len(features) == 1 else list(axes)
    for ax, column in zip(axes, features):
        part = frame[[column, target]].dropna()
        ax.scatter(part[column], part[target], s=4, alpha=0.3, color="#457b9d")
        ax.set_title(f"{column}\ncorrelation {part[column].corr(part[target]):.2f}", fontsize=9)
        ax.set_xlabel(column, fontsize=8)
    axes[0].set_ylabel(f"{target} (this hour)")
    fig.tight_layout()
    return fig


def latency_histograms(samples: dict[str, list[float]], unit: str = "ms", title: str = "Latency"):
    """Overlaid histograms (log-scaled x) of latency samples, one per method, with p50 and p99 marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = [np.asarray(v, dtype=float) for v in samples.values()]
    low = max(min(v.min() for v in values), 1e-4)
    bins = np.geomspace(low, max(v.max() for v in values) * 1.01, 40)
    for (name, v), color in zip(samples.items(), ["#457b9d", "#e76f51", "#2a9d8f", "#8d99ae"]):
        p50, p99 = np.percentile(v, [50, 99])
        ax.hist(v, bins=bins, alpha=0.55, color=color, label=f"{name}: p50 {p50:.3g}, p99 {p99:.3g} {unit}")
        ax.axvline(p99, color=color, linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"latency ({unit}, log scale); dashed: p99")
    ax.set_ylabel("lookups")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def drift_heatmap(scores: pd.DataFrame, *, threshold: float | None = None, label: str = "PSI",
                  title: str = "Drift per feature and window"):
    """Features (rows) x windows (columns) coloured by a drift score, each cell written out;
    cells at or above ``threshold`` are framed (the monitor's line for "material")."""
    import matplotlib.pyplot as plt
    import numpy as np

    values = scores.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.62 * scores.shape[1] + 2), 0.42 * scores.shape[0] + 1.4))
    ceiling = max(1.0, float(np.nanmax(values))) if np.isfinite(values).any() else 1.0
    image = ax.imshow(np.clip(values, 0, ceiling), cmap="Reds", vmin=0, vmax=ceiling, aspect="auto")
    ax.set_xticks(range(scores.shape[1]), [str(c) for c in scores.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(scores.shape[0]), [str(i) for i in scores.index], fontsize=8)
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 * ceiling else "black")
            if threshold is not None and value >= threshold:
                ax.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#1d3557", lw=1.5))
    fig.colorbar(image, ax=ax, label=label + (f" (framed: >= {threshold:g})" if threshold is not None else ""))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def error_over_time(timeline: pd.DataFrame, *, error: str = "error", baseline: float | None = None,
                    states: list[str] | None = None, ratio: float | None = None, label: str = "error",
                    title: str = "Model error per window"):
    """The model's error per window, the baseline (and ``ratio`` x baseline, the alert line), and
    markers where an alert was pending (open) or firing (filled)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    x = range(len(timeline))
    ax.plot(x, timeline[error], marker="o", color="#457b9d", label=label)
    if baseline is not None:
        ax.axhline(baseline, color="#2a9d8f", linestyle="--", linewidth=1, label=f"baseline {baseline:.3g}")
        if ratio is not None:
            ax.axhline(ratio * baseline, color="#e63946", linestyle=":", linewidth=1,
                       label=f"alert line {ratio:g} x baseline")
    if states is not None:
        top = float(timeline[error].max()) * 1.08
        for i, state in enumerate(states):
            if state == "firing":
                ax.scatter(i, top, marker="v", color="#e63946", s=60, zorder=3)
            elif state == "pending":
                ax.scatter(i, top, marker="v", facecolors="none", edgecolors="#e63946", s=60, zorder=3)
        ax.scatter([], [], marker="v", color="#e63946", label="alert firing")
        ax.scatter([], [], marker="v", facecolors="none", edgecolors="#e63946", label="alert pending")
    ax.set_xticks(list(x), [str(i) for i in timeline.index], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def retraining_replay(results: pd.DataFrame, *, labels: dict[str, str] | None = None,
                      title: str = "Error production saw, month by month, under each retraining policy"):
    """Production MAE per month for each policy (``results`` from the pipeline's replay), with a
    triangle where that month's run promoted a new champion (it serves from the next month on)."""
    import matplotlib.pyplot as plt

    colours = {"never": "#6c757d", "always": "#457b9d", "drift": "#e76f51"}
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    results = results.dropna(subset=["production_mae"])  # the first batch: no champion served it yet
    months = sorted(results["month"].unique())
    for policy, part in results.groupby("policy", sort=False):
        part = part.set_index("month").reindex(months)
        x = range(len(months))
        colour = colours.get(policy, None)
        ax.plot(x, part["production_mae"], marker="o", markersize=4, color=colour,
                label=(labels or {}).get(policy, policy))
        promoted = [i for i, decision in enumerate(part["decision"]) if decision == "promoted"]
        ax.scatter(promoted, part["production_mae"].iloc[promoted], marker="^", s=70, color=colour,
                   edgecolors="black", linewidths=0.6, zorder=3)
    ax.scatter([], [], marker="^", color="white", edgecolors="black", label="promotion\n(serves next month)")
    ax.set_xticks(list(range(len(months))), months, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("MAE (riders per hour)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def throughput(table: pd.DataFrame, title: str = "Batch scoring throughput"):
    """Rows per second (log scale) of each scoring ``method`` at each input size (``rows``): grouped
    bars, labelled with the ratio to the first method (the baseline)."""
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = sorted(table["rows"].unique())
    methods = list(dict.fromkeys(table["method"]))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, (method, color) in enumerate(zip(methods, ["#8d99ae", "#457b9d", "#e9c46a", "#2a9d8f", "#e76f51"])):
        rows = table[table["method"] == method].set_index("rows").reindex(sizes)
        x = np.arange(len(sizes)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, rows["rows_per_s"], width, color=color, label=method)
        base = table[table["method"] == methods[0]].set_index("rows").reindex(sizes)["rows_per_s"]
        for xi, value, ratio in zip(x, rows["rows_per_s"], rows["rows_per_s"] / base):
            ax.text(xi, value, f"{ratio:.2g}x", ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(sizes)), [f"{s:,} rows" for s in sizes])
    ax.set_ylabel("rows per second (log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
