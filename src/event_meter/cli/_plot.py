"""Terminal charts of a series: ``plotext`` when installed, else unicode block bars.

``plotext`` is optional (the ``cli`` extra). Both its 5.x module API
(``plt.plot``/``plt.build``) and its 6.x figure API (``plt.figure.signal``)
are supported. The block chart needs nothing and is what ``demo`` draws
without the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Final

__all__ = ["PIP_LINE", "block_chart", "load_plotext", "plotext_chart", "series_chart"]

PIP_LINE: Final = 'pip install "event-meter[cli]"'
BLOCKS: Final = " ▁▂▃▄▅▆▇█"
WIDTH: Final = 78
HEIGHT: Final = 16


def load_plotext() -> ModuleType | None:
    """The ``plotext`` module, or None when the ``cli`` extra is not installed."""
    try:
        return importlib.import_module("plotext")
    except ImportError:
        return None


def _time_label(bucket: str) -> str:
    """``2026-05-06T10:15:00Z`` -> ``10:15`` (the date is in the title)."""
    return bucket[11:16] if len(bucket) >= 16 else bucket


def _ticks(count: int) -> list[int]:
    """Up to five evenly spaced positions, first and last included."""
    if count <= 1:
        return [0] if count else []
    steps = min(4, count - 1)
    return sorted({round(i * (count - 1) / steps) for i in range(steps + 1)})


def series_chart(rows: Sequence[Mapping[str, Any]], title: str, *, color: bool) -> str:
    """The count per bucket: plotext when installed, else block bars."""
    plt = load_plotext()
    if plt is None:
        return block_chart(rows, title)
    return plotext_chart(plt, rows, title, color=color)


def plotext_chart(
    plt: ModuleType, rows: Sequence[Mapping[str, Any]], title: str, *, color: bool
) -> str:
    """A line chart of ``count`` per bucket, built by plotext as text."""
    xs = list(range(1, len(rows) + 1))
    counts = [int(row.get("count", 0)) for row in rows]
    ticks = [xs[i] for i in _ticks(len(rows))]
    labels = [_time_label(str(rows[i - 1]["bucket"])) for i in ticks]
    if hasattr(plt, "plot"):  # plotext 5.x: one module-level figure
        plt.clear_figure()
        plt.plotsize(WIDTH, HEIGHT)
        plt.theme("pro" if color else "clear")
        plt.title(title)
        plt.plot(xs, counts)
        plt.xticks(ticks, labels)
        text = str(plt.build())
        return text if color else str(plt.uncolorize(text))
    figure: Any = plt.figure  # plotext 6.x: the master figure
    figure.clear()
    figure.plot_size(WIDTH, HEIGHT)
    figure.theme("default" if color else "colorless")
    figure.title(title)
    signal = figure.signal(xs, counts)
    signal.lines()
    figure.draw(signal)
    figure.ruler(0).ticks(ticks, labels)
    return str(figure.build().string(colorless=not color))


def block_chart(rows: Sequence[Mapping[str, Any]], title: str, height: int = 8) -> str:
    """Vertical bars of ``count`` per bucket in unicode eighth blocks, with axes."""
    counts = [int(row.get("count", 0)) for row in rows]
    top = max(counts, default=0)
    scale = top or 1
    eighths = [round(count * height * 8 / scale) for count in counts]
    label_width = len(f"{top:,}")
    lines = [title]
    for level in range(height - 1, -1, -1):
        cells = "".join(BLOCKS[max(0, min(8, e - level * 8))] for e in eighths)
        if level == height - 1:
            axis = f"{top:,}".rjust(label_width)
        elif level == 0:
            axis = "0".rjust(label_width)
        else:
            axis = " " * label_width
        lines.append(f"{axis} ┤{cells}".rstrip())
    lines.append(" " * label_width + " └" + "─" * len(counts))
    lines.append(" " * (label_width + 2) + _x_labels(rows))
    return "\n".join(lines) + "\n"


def _x_labels(rows: Sequence[Mapping[str, Any]]) -> str:
    """Time labels under the bars, each starting at its column when it fits."""
    line = ""
    for position in _ticks(len(rows)):
        label = _time_label(str(rows[position]["bucket"]))
        start = max(position - len(label) + 1, 0) if position == len(rows) - 1 else position
        if start >= len(line) + (1 if line else 0):
            line = line.ljust(start) + label
    return line
