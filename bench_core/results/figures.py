"""Figure machinery of the leaderboard plots (:mod:`bench_core.results.plotting` draws them):
matplotlib on the Agg backend, entry styles, labels, panels, legends and saving as PNG + SVG."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_core.errors import UntiedError

MAX_PANELS = 12
BAND_ALPHA = 0.18


@dataclass
class Plot:
    """One figure: its file stem, a one-line caption and the files written."""

    name: str
    caption: str
    files: list[Path] = field(default_factory=list)


def pyplot():
    """matplotlib's pyplot on the Agg backend, with reproducible SVG output."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - a dependency, but say how to get it
        raise UntiedError("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"svg.hashsalt": "untied-bench", "svg.fonttype": "none",
                                "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def as_number(x: Any) -> float:
    return float("nan") if x is None else float(x)


class Figures:
    """Styles, labels and figure layout shared by every plot of one leaderboard."""

    def __init__(self, plan: Any, out_dir: Path, formats: tuple[str, ...]) -> None:
        self.plt, self.plan, self.spec = pyplot(), plan, plan.spec
        self.out_dir, self.formats = out_dir, formats
        order = sorted({(t.entry_index, t.entry, t.is_baseline) for t in plan.tasks})
        palette = [c for i, c in enumerate(self.plt.get_cmap("tab10").colors) if i != 7]
        self.styles: dict[str, dict[str, Any]] = {}
        for k, (_, entry, baseline) in enumerate(order):
            self.styles[entry] = (
                {"color": "black", "linestyle": "--", "marker": "s", "linewidth": 2.2,
                 "label": f"{entry} (baseline)"} if baseline else
                {"color": palette[k % len(palette)], "linestyle": "-", "marker": "o",
                 "linewidth": 1.6, "label": entry})

    def label(self, key: str, scaled: bool = False) -> str:
        """The spec's label of ``key`` (which states any display scale), else the key, with
        the scale of a scaled metric."""
        if key in self.spec.labels:
            return self.spec.labels[key]
        return f"{key} (× {self.spec.scale:g})" if scaled and self.spec.scale != 1 else key

    def panels(self, n: int, title: str, square: bool = False):
        """A figure of ``n`` panels (``square``: one square panel, e.g. ours vs the paper)."""
        ncols = 2 if n in (2, 4) else min(3, n)
        nrows = math.ceil(n / ncols)
        size = (7.5, 7.8) if square else (max(7.5, 4.6 * ncols), 3.3 * nrows + 1.6)
        fig, axes = self.plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                      figsize=size)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        fig.suptitle(f"{title}\n{self.spec.title}\nleaderboard {self.plan.name}, profile "
                     f"{self.plan.profile}", fontsize=10)
        return fig, list(axes.flat[:n])

    def bounds(self, metric: str, scale: float = 1.0) -> tuple[float | None, float | None]:
        """The range a metric's values cannot leave (:func:`bench_core.specs.metrics.value_range`),
        in displayed units: ± std bands are clipped to it (an accuracy band never passes 1)."""
        from bench_core.specs.metrics import value_range

        low, high = value_range(metric)
        return (None if low is None else low * scale, None if high is None else high * scale)

    def line(self, ax, entry: str, x, mean, std=None,
             bounds: tuple[float | None, float | None] = (None, None)) -> None:
        """The mean as a line and ± std as a band, clipped to ``bounds``."""
        style = self.styles.get(entry, {"label": entry})
        ax.plot(x, mean, markersize=4, markevery=max(1, len(x) // 12), **style)
        if std is not None:
            low, high = bounds
            lo = [m - s if not math.isnan(s) else m for m, s in zip(mean, std)]
            hi = [m + s if not math.isnan(s) else m for m, s in zip(mean, std)]
            if low is not None:
                lo = [max(v, low) for v in lo]
            if high is not None:
                hi = [min(v, high) for v in hi]
            ax.fill_between(x, lo, hi, color=style.get("color"), alpha=BAND_ALPHA, linewidth=0)

    def save(self, fig, name: str, caption: str, entries: list[str], *, band: bool = True,
             paper: bool = False, extra: list[Any] = ()) -> Plot:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Line2D([], [], markersize=4, **self.styles[e]) for e in self.styles
                   if e in entries] + list(extra)
        if band:
            handles.append(Patch(color="grey", alpha=0.35, label="± 1 std over seeds"))
        if paper:
            handles.append(Line2D([], [], color="grey", marker="*", linestyle="none",
                                  markersize=10, label="paper's value"))
        fig.legend(handles=handles, loc="outside lower center", fontsize="small",
                   ncols=min(4, len(handles)), frameon=False)
        plot = Plot(name, caption)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for fmt in self.formats:
            path = self.out_dir / f"{name}.{fmt}"
            fig.savefig(path, dpi=90, metadata={"Date": None} if fmt == "svg" else None)
            plot.files.append(path)
        self.plt.close(fig)
        return plot

    def chunks(self, keys: list[Any]) -> list[tuple[str, list[Any]]]:
        """Panels split into figures of at most MAX_PANELS: (file suffix, keys)."""
        parts = [keys[i:i + MAX_PANELS] for i in range(0, len(keys), MAX_PANELS)] or [[]]
        return [("" if len(parts) == 1 else f"-{i + 1}", part) for i, part in enumerate(parts)]


def varying_axes(cells: list[dict[str, Any]]) -> list[str]:
    """Grid keys that take more than one value over ``cells`` (first-seen order)."""
    keys = list(dict.fromkeys(k for c in cells for k in c))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cells}) > 1]


def cell_caption(figs: Figures, cell: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{figs.label(k)} = {as_text(cell.get(k))}" for k in keys) or "all runs"
