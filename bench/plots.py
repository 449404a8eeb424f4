"""PNG plots of a results document (matplotlib, Agg backend: no display needed).

One figure per quantity (throughput, CPU per request, p99 latency); in each,
one panel per message size, connection counts on the x axis and one bar per
contestant, with the range over repeats as an error bar.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display

import matplotlib.pyplot as plt

from bench.report import Results, size_label

# (file name, summary figure, axis label, scale factor) for each plot.
PLOTS = (
    ("throughput.png", "req_per_s", "requests per second (thousands)", 1e-3),
    ("cpu_per_request.png", "cpu_us_per_req", "server CPU per request (µs)", 1.0),
    ("latency_p99.png", "p99_us", "p99 latency (µs)", 1.0),
)

# Wide enough for nine bars per group to stay readable.
FIGURE_WIDTH_PER_PANEL = 6.0
FIGURE_HEIGHT = 4.8


def _stat(cell: dict[str, Any] | None, figure: str, stat: str) -> float:
    if cell is None:
        return math.nan
    value = cell["summary"].get(figure, {}).get(stat)
    return float(value) if isinstance(value, int | float) else math.nan


def write_plots(doc: dict[str, Any], out_dir: Path) -> list[str]:
    """Write every plot into ``out_dir``; returns the file names written."""
    r = Results(doc)
    contestants = r.measured()
    cells = {(c["contestant"], c["size"], c["connections"]): c for c in doc["cells"]}
    cmap = plt.get_cmap("tab10")
    written = []
    for name, figure, ylabel, scale in PLOTS:
        fig, axes = plt.subplots(
            1,
            len(r.sizes),
            figsize=(FIGURE_WIDTH_PER_PANEL * len(r.sizes), FIGURE_HEIGHT),
            squeeze=False,
        )
        width = 0.8 / max(1, len(contestants))
        for ax, size in zip(axes[0], r.sizes, strict=True):
            for i, c in enumerate(contestants):
                xs, ys, lo, hi = [], [], [], []
                for j, conns in enumerate(r.connections):
                    cell = cells.get((c["key"], size, conns))
                    med = _stat(cell, figure, "median") * scale
                    if math.isnan(med):
                        continue
                    xs.append(j + (i - (len(contestants) - 1) / 2) * width)
                    ys.append(med)
                    lo.append(max(0.0, med - _stat(cell, figure, "min") * scale))
                    hi.append(max(0.0, _stat(cell, figure, "max") * scale - med))
                ax.bar(
                    xs,
                    ys,
                    width,
                    yerr=[lo, hi],
                    capsize=2,
                    label=c["label"],
                    color=cmap(i % 10),
                    hatch="//" if c["kind"] == "project" else None,
                    edgecolor="black",
                    linewidth=0.4,
                )
            ax.set_xticks(range(len(r.connections)), [f"{n} conn" for n in r.connections])
            ax.set_title(size_label(size))
            ax.set_ylabel(ylabel)
            ax.grid(axis="y", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8)
        m = r.meta
        fig.suptitle(
            f"{ylabel}: {m['mode']} run {m['date'][:10]}, {m['machine']['nproc']} CPUs "
            f"({m['machine']['cpu_model']}), median and range of "
            f"{m['settings']['repeats']} repeats",
            fontsize=10,
        )
        fig.tight_layout(rect=(0, 0.12, 1, 0.95))
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(name)
    return written
