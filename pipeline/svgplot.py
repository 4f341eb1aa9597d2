"""Small, readable SVG charts written directly (no plotting library, no script, no network).

Contract: each chart function returns one ``<svg>`` element as a string, drawn in a
``WIDTH`` x height coordinate box and scaled to the page's width (at most
``WIDTH`` px), with a ``<title>`` naming it for screen readers. Text is never
smaller than ``MIN_FONT`` px at full width, so a person reads every label without
zooming. Colours are the Okabe-Ito palette (safe for colour-blind readers). Labels
are escaped. The charts: :func:`bars` (grouped horizontal bars), :func:`lines`
(one line per series), :func:`histogram`, :func:`scatter` (with the y = x line) and
:func:`timeline` (one bar per item on a shared time axis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 900
MIN_FONT = 13
FONT = 14
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
LEFT, RIGHT, TOP, BOTTOM = 90, 30, 40, 60


def nice_ticks(lo: float, hi: float, n: int = 6, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k; at
    least 1 for ``integer`` counts)."""
    if hi <= lo:
        hi = lo + 1
    raw = max((hi - lo) / max(1, n), 1.0 if integer else 0.0)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def fmt_number(v: float) -> str:
    """A tick label: 1,200 / 1.5k / 2.5M / 0.25."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 1 or v == 0:
        return f"{v:,.10g}"
    return f"{v:.3g}"


@dataclass
class Frame:
    """The plotting area of a chart and its two linear axes."""

    height: int
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    left: int = LEFT

    @property
    def plot_w(self) -> float:
        return WIDTH - self.left - RIGHT

    @property
    def plot_h(self) -> float:
        return self.height - TOP - BOTTOM

    def x(self, v: float) -> float:
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo or 1) * self.plot_w

    def y(self, v: float) -> float:
        return TOP + self.plot_h - (v - self.y_lo) / (self.y_hi - self.y_lo or 1) * self.plot_h


def _open(height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'style="max-width:{WIDTH}px" role="img" aria-label="{escape(title)}" '
        f'font-family="DejaVu Sans, Arial, sans-serif" font-size="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]


def _text(x: float, y: float, s: str, anchor: str = "middle", size: int = FONT, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{max(size, MIN_FONT)}"'
            f"{extra}>{escape(s)}</text>")


def _axes(f: Frame, x_label: str, y_label: str, x_ticks: Sequence[float] | None,
          y_ticks: Sequence[float] | None) -> list[str]:
    out = []
    bottom, right = TOP + f.plot_h, f.left + f.plot_w
    for t in y_ticks or ():
        y = f.y(t)
        out.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        out.append(_text(f.left - 8, y + 5, fmt_number(t), "end"))
    for t in x_ticks or ():
        x = f.x(t)
        out.append(f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 6:.1f}" stroke="#444"/>')
        out.append(_text(x, bottom + 22, fmt_number(t)))
    out.append(f'<line x1="{f.left}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="#444"/>')
    out.append(f'<line x1="{f.left}" y1="{TOP}" x2="{f.left}" y2="{bottom:.1f}" stroke="#444"/>')
    out.append(_text(f.left + f.plot_w / 2, f.height - 12, x_label))
    cy = TOP + f.plot_h / 2
    out.append(_text(18, cy, y_label, extra=f' transform="rotate(-90 18 {cy:.1f})"'))
    return out


def legend(items: Sequence[tuple[str, str]], y: float = 22, x: float = LEFT) -> list[str]:
    """Colour swatches and names in one row above the plot."""
    out = []
    for name, colour in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 11:.1f}" width="14" height="14" fill="{colour}"/>')
        out.append(_text(x + 20, y + 1, name, "start"))
        x += 40 + 8.5 * len(name)
    return out


def bars(groups: Sequence[str], series: Mapping[str, Sequence[float]], title: str, x_label: str) -> str:
    """Horizontal bars: one block per group (a sample), one bar per series (a variant
    type) in it, each labelled with its value."""
    n_series = max(1, len(series))
    bar_h = 18
    block = bar_h * n_series + 14
    left = max(LEFT, 30 + int(8.5 * max((len(g) for g in groups), default=4)))
    height = TOP + BOTTOM + block * max(1, len(groups))
    hi = max((v for vals in series.values() for v in vals), default=1) or 1
    f = Frame(height, 0, hi * 1.15, 0, 1, left=left)
    out = _open(height, title)
    out += _axes(f, x_label, "", nice_ticks(0, hi * 1.1, integer=True), None)
    for gi, group in enumerate(groups):
        top = TOP + gi * block + 7
        out.append(_text(left - 8, top + block / 2, group, "end"))
        for si, (name, vals) in enumerate(series.items()):
            v = vals[gi]
            y = top + si * bar_h
            w = f.x(v) - f.x(0)
            tip = escape(f"{group} {name}: {v:,.10g}")
            out.append(f'<rect x="{f.x(0):.1f}" y="{y:.1f}" width="{w:.1f}" height="{bar_h - 3}" '
                       f'fill="{PALETTE[si % len(PALETTE)]}"><title>{tip}</title></rect>')
            out.append(_text(f.x(v) + 5, y + bar_h - 5, f"{v:,.10g}", "start", MIN_FONT))
    out += legend([(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(series)], x=left)
    out.append("</svg>")
    return "\n".join(out)


def lines(series: Mapping[str, Sequence[tuple[float, float]]], title: str, x_label: str, y_label: str,
          height: int = 340) -> str:
    """One line (with points) per series of (x, y) pairs."""
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in series.values() for _, y in pts] or [0, 1]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(0, max(ys), integer=all(float(y).is_integer() for y in ys))
    f = Frame(height, x_ticks[0], x_ticks[-1], 0, y_ticks[-1])
    out = _open(height, title)
    out += _axes(f, x_label, y_label, x_ticks, y_ticks)
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3" fill="{colour}">'
                       f"<title>{escape(f'{name}: {x:g} -> {y:g}')}</title></circle>")
    out += legend([(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(series)])
    out.append("</svg>")
    return "\n".join(out)


def histogram(values: Sequence[float], title: str, x_label: str, y_label: str = "functions",
              n_bins: int = 20, mark_from: float | None = None, height: int = 320) -> str:
    """Counts of ``values`` in equal bins; bins at or beyond ``mark_from`` (stragglers) in
    a second colour, with a dashed line at ``mark_from``."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / n_bins
    counts = [0] * n_bins
    for v in values:
        counts[min(n_bins - 1, int((v - lo) / width))] += 1
    # The straggler line is always in view, even with no function beyond it.
    x_ticks = nice_ticks(lo, max(hi, mark_from * 1.05) if mark_from is not None else hi)
    y_ticks = nice_ticks(0, max(counts) or 1, integer=True)
    f = Frame(height, min(x_ticks[0], lo), x_ticks[-1], 0, y_ticks[-1])
    out = _open(height, title)
    out += _axes(f, x_label, y_label, x_ticks, y_ticks)
    for i, c in enumerate(counts):
        b_lo = lo + i * width
        colour = PALETTE[5] if mark_from is not None and b_lo + width > mark_from else PALETTE[0]
        x0, x1 = f.x(b_lo), f.x(b_lo + width)
        out.append(f'<rect x="{x0:.1f}" y="{f.y(c):.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
                   f'height="{f.y(0) - f.y(c):.1f}" fill="{colour}">'
                   f"<title>{escape(f'{b_lo:.3g}-{b_lo + width:.3g}: {c}')}</title></rect>")
    if mark_from is not None:
        x = f.x(mark_from)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + f.plot_h:.1f}" stroke="#D55E00" '
                   'stroke-dasharray="6 4" stroke-width="2"/>')
        out += legend([("functions", PALETTE[0]), (f"stragglers (beyond the dashed line, {mark_from:.3g})",
                                                    PALETTE[5])])
    out.append("</svg>")
    return "\n".join(out)


def scatter(points: Sequence[tuple[float, float, str]], title: str, x_label: str, y_label: str,
            height: int = 420) -> str:
    """Points (x, y, label) on equal axes from 0, with the y = x line (dashed)."""
    hi = max([max(x, y) for x, y, _ in points] or [1])
    ticks = nice_ticks(0, hi)
    f = Frame(height, 0, ticks[-1], 0, ticks[-1])
    out = _open(height, title)
    out += _axes(f, x_label, y_label, ticks, ticks)
    out.append(f'<line x1="{f.x(0):.1f}" y1="{f.y(0):.1f}" x2="{f.x(ticks[-1]):.1f}" y2="{f.y(ticks[-1]):.1f}" '
               'stroke="#888" stroke-dasharray="6 4"/>')
    for x, y, label in points:
        out.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="4" fill="{PALETTE[0]}" fill-opacity="0.7">'
                   f"<title>{escape(label)}</title></circle>")
    out += legend([("region", PALETTE[0]), ("actual = planned", "#888")])
    out.append("</svg>")
    return "\n".join(out)


@dataclass
class Span:
    """One bar of a timeline: ``row`` (an item), from ``start`` for ``seconds``, in ``colour``."""

    row: int
    start: float
    seconds: float
    colour: str
    label: str
    outline: str | None = None


def timeline(spans: Sequence[Span], rows: int, title: str, kinds: Sequence[tuple[str, str]],
             x_label: str = "seconds since the fan-out started") -> str:
    """One row per item, its bars on a shared time axis; ``kinds`` is the legend."""
    row_h = min(16.0, 480 / max(1, rows))  # thousands of functions still fit in 480 px
    height = int(TOP + BOTTOM + row_h * max(1, rows)) + 10
    hi = max([s.start + s.seconds for s in spans] or [1])
    ticks = nice_ticks(0, hi)
    f = Frame(height, 0, ticks[-1], 0, 1)
    out = _open(height, title)
    out += _axes(f, x_label, "functions", ticks, None)
    for s in spans:
        y = TOP + 5 + s.row * row_h
        w = max(1.0, f.x(s.start + s.seconds) - f.x(s.start))
        stroke = f' stroke="{s.outline}" stroke-width="2"' if s.outline else ""
        bar_h = max(row_h * 0.8, row_h - 1.5)
        out.append(f'<rect x="{f.x(s.start):.1f}" y="{y:.2f}" width="{w:.1f}" height="{bar_h:.2f}" '
                   f'fill="{s.colour}"{stroke}><title>{escape(s.label)}</title></rect>')
    out += legend(kinds)
    out.append("</svg>")
    return "\n".join(out)
