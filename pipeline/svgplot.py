"""Small, readable SVG charts written directly (no plotting library, no script, no network).

Contract: each chart function returns one ``<svg>`` element as a string, drawn in a
``WIDTH`` x height coordinate box and scaled to the page's width (at most
``WIDTH`` px), with a ``<title>`` naming it for screen readers. Text is never
smaller than ``MIN_FONT`` px at full width, so a person reads every label without
zooming. Colours are the Okabe-Ito palette (safe for colour-blind readers). Labels
are escaped. The charts: :func:`bars` (grouped horizontal bars), :func:`lines`
(one line per series), :func:`histogram`, :func:`scatter` (with the y = x line),
:func:`timeline` (one bar per item on a shared time axis), :func:`depth_panels` (small
multiples: one log-scale depth profile along the genome per sample) and
:func:`heatmap` (a grid of coloured cells with row and column labels; the caller
splits wide grids into blocks of at most :func:`heatmap_capacity` columns, so that
every label stays readable). Sequential data use :data:`VIRIDIS` (also safe for
colour-blind readers, and ordered in lightness).
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
# Viridis in 7 steps, light to dark: a sequential scale ordered in lightness.
VIRIDIS = ("#fde725", "#8fd744", "#35b779", "#21918c", "#31688e", "#443983", "#440154")
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


def _legend_width(name: str) -> float:
    return 40 + 8.5 * len(name)


def legend_rows(items: Sequence[tuple[str, str]], x: float = LEFT) -> list[list[tuple[str, str]]]:
    """``items`` in rows that fit in the chart's width from ``x`` (as :func:`legend` draws them)."""
    rows: list[list[tuple[str, str]]] = [[]]
    used = 0.0
    for item in items:
        w = _legend_width(item[0])
        if rows[-1] and x + used + w > WIDTH - 10:
            rows.append([])
            used = 0.0
        rows[-1].append(item)
        used += w
    return rows


def _swatch_legend(rows: Sequence[Sequence[tuple[str, str]]], y: float, x: float,
                   marks: Mapping[str, str] | None = None) -> list[str]:
    """Legend rows from ``y`` (24 px apart), each swatch outlined (white ones show too);
    ``marks``: the names whose swatch is crossed, with the colour of the stroke."""
    out = []
    for i, row in enumerate(rows):
        xi, yy = x, y + 24 * i
        for name, colour in row:
            out.append(f'<rect x="{xi:.1f}" y="{yy - 11:.1f}" width="14" height="14" fill="{colour}" '
                       'stroke="#444" stroke-width="0.5"/>')
            if marks and name in marks:
                out.append(f'<path d="M{xi + 1:.1f},{yy + 2:.1f}l12,-12" stroke="{marks[name]}" stroke-width="2"/>')
            out.append(_text(xi + 20, yy + 1, name, "start"))
            xi += _legend_width(name)
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


# -- depth along the genome, one panel per sample --------------------------------------
@dataclass
class DepthProfile:
    """One sample's depth along the genome, binned: ``bins`` of (start, end, mean depth,
    low) in genome coordinates (contigs end to end), ``low`` when a position of the bin
    is below the threshold. ``note``: a short summary shown beside the name if it fits;
    ``label``: the panel's tooltip."""

    name: str
    bins: Sequence[tuple[float, float, float, bool]]
    note: str = ""
    label: str = ""


def _panel_columns(n: int) -> int:
    return 1 if n <= 3 else 2 if n <= 12 else 3 if n <= 48 else 4


def _shorten(s: str, chars: int) -> str:
    return s if len(s) <= chars else s[: max(1, chars - 1)] + "…"


def _merge_bins(bins: Sequence[tuple[float, float, float, bool]],
                k: int) -> Sequence[tuple[float, float, float, bool]]:
    """Every ``k`` neighbouring bins as one (no more points than a narrow panel shows):
    the mean weighted by width, low if any is."""
    if k <= 1:
        return bins
    out = []
    for i in range(0, len(bins), k):
        group = bins[i : i + k]
        width = sum(hi - lo for lo, hi, _, _ in group) or 1
        out.append((group[0][0], group[-1][1], sum((hi - lo) * d for lo, hi, d, _ in group) / width,
                    any(low for *_, low in group)))
    return out


def depth_panels(profiles: Sequence[DepthProfile], length: float, title: str, threshold: float,
                 contigs: Sequence[tuple[str, float]] = (), x_label: str = "position along the genome (bp)",
                 threshold_label: str = "threshold") -> str:
    """Small multiples: one panel per profile (1 to 4 columns, by how many), each the
    depth along the genome on a shared log scale (decades), with a dashed line at
    ``threshold`` and, under the panel, a vermillion mark wherever a bin is ``low``.
    ``contigs``: (name, start) of each contig, drawn as thin separators."""
    n = max(1, len(profiles))
    cols = _panel_columns(n)
    rows = -(-n // cols)
    left, right, gap = 64, 16, 18
    pw = (WIDTH - left - right - gap * (cols - 1)) / cols
    ph = {1: 84, 2: 66, 3: 54}.get(cols, 44)
    head, strip, below = 18, 8, 12 if cols < 4 else 8
    block = head + ph + strip + below
    leg = legend_rows([("mean depth per bin", PALETTE[4]), (f"{threshold_label} (dashed)", PALETTE[5]),
                       ("a position below it in the bin (marked under the panel)", PALETTE[5])], x=left)
    top = 20 + 24 * len(leg)
    height = int(top + rows * block + 52)
    peak = max([b[2] for p in profiles for b in p.bins] + [threshold, 10])
    decades = max(1, math.ceil(math.log10(peak)))
    step = math.ceil(16 / (ph / decades))  # decade labels at least 16 px apart
    out = _open(height, title)
    for i, row in enumerate(leg):
        out += legend(row, 22 + 24 * i, left)
    x_ticks = nice_ticks(0, length, n=max(2, int(pw // 70)))
    x_ticks = [t for t in x_ticks if t <= length]
    last_row = {c: max(r for r in range(rows) if r * cols + c < n) for c in range(min(cols, n))}
    for i, prof in enumerate(profiles):
        r, c = divmod(i, cols)
        x0 = left + c * (pw + gap)
        y_top = top + r * block + head
        base = y_top + ph

        def px(v: float, x0: float = x0) -> float:
            return x0 + v / (length or 1) * pw

        def py(d: float, base: float = base) -> float:
            return base - min(decades, math.log10(max(d, 1.0))) / decades * ph

        chars = int(pw // 8.2)
        name = _shorten(prof.name, chars)
        bins = _merge_bins(prof.bins, max(1, math.ceil(len(prof.bins) / (2 * pw))))
        g = [f"<g><title>{escape(prof.label or prof.name)}</title>"]
        g.append(_text(x0, y_top - 5, name, "start", MIN_FONT, ' font-weight="bold"'))
        if prof.note and len(name) + len(prof.note) + 2 <= chars:
            g.append(_text(x0 + pw, y_top - 5, prof.note, "end", MIN_FONT, ' fill="#444"'))
        g.append(f'<rect x="{x0:.1f}" y="{y_top:.1f}" width="{pw:.1f}" height="{ph}" fill="#ffffff" '
                 'stroke="#c8c8c8"/>')
        for d in range(0, decades + 1):
            y = py(10.0**d)
            g.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x0 + pw:.1f}" y2="{y:.1f}" stroke="#eeeeee"/>')
            if c == 0 and d % step == 0:
                g.append(_text(x0 - 6, y + 5, fmt_number(10.0**d), "end", MIN_FONT))
        for _, start in contigs:
            if start > 0:
                g.append(f'<line x1="{px(start):.1f}" y1="{y_top:.1f}" x2="{px(start):.1f}" y2="{base:.1f}" '
                         'stroke="#888" stroke-dasharray="2 2"/>')
        if bins:
            path = [f"M{px(bins[0][0]):.1f},{base:.1f}"]
            for _lo, b_hi, mean, _ in bins:
                path.append(f"V{py(mean):.1f}H{px(b_hi):.1f}")
            path.append(f"V{base:.1f}Z")
            g.append(f'<path d="{"".join(path)}" fill="{PALETTE[4]}" fill-opacity="0.55" stroke="{PALETTE[0]}" '
                     'stroke-width="0.8"/>')
        runs: list[list[float]] = []
        for b_lo, b_hi, _, low in bins:
            if low:
                if runs and runs[-1][1] >= b_lo:
                    runs[-1][1] = b_hi
                else:
                    runs.append([b_lo, b_hi])
        for lo, hi in runs:
            g.append(f'<rect x="{px(lo):.1f}" y="{base + 2:.1f}" width="{max(1.0, px(hi) - px(lo)):.1f}" '
                     f'height="{strip - 3}" fill="{PALETTE[5]}"/>')
        yt = py(threshold)
        g.append(f'<line x1="{x0:.1f}" y1="{yt:.1f}" x2="{x0 + pw:.1f}" y2="{yt:.1f}" stroke="{PALETTE[5]}" '
                 'stroke-dasharray="5 3" stroke-width="1.2"/>')
        if last_row.get(c) == r:
            for t in x_ticks:
                x = px(t)
                g.append(f'<line x1="{x:.1f}" y1="{base + strip:.1f}" x2="{x:.1f}" y2="{base + strip + 4:.1f}" '
                         'stroke="#444"/>')
                g.append(_text(x, base + strip + 18, fmt_number(t), "middle", MIN_FONT))
        g.append("</g>")
        out += g
    out.append(_text(left + (WIDTH - left - right) / 2, height - 10, x_label))
    cy = top + rows * block / 2
    out.append(_text(18, cy, "depth (log scale)", extra=f' transform="rotate(-90 18 {cy:.1f})"'))
    out.append("</svg>")
    return "\n".join(out)


# -- heatmaps ---------------------------------------------------------------------------
HEAT_CELL = 14  # the narrowest column (and row) that still takes a 13 px label
HEAT_ROW_LABEL_MAX = 260


@dataclass
class Cell:
    """One cell of a heatmap: its colour, its tooltip and, if ``mark``, a diagonal
    stroke of that colour across it."""

    fill: str
    label: str
    mark: str | None = None


def _row_label_width(rows: Sequence[str]) -> float:
    return min(HEAT_ROW_LABEL_MAX, max(60.0, 16 + 8.2 * max((len(r) for r in rows), default=4)))


def heatmap_capacity(rows: Sequence[str]) -> int:
    """How many columns a heatmap with these row labels takes with every column labelled."""
    return max(1, int((WIDTH - _row_label_width(rows) - 16) // HEAT_CELL))


def heatmap(rows: Sequence[str], cols: Sequence[str], cells: Mapping[tuple[int, int], Cell], title: str,
            legend_items: Sequence[tuple[str, str]] = (), marks: Mapping[str, str] | None = None,
            empty: str = "#ffffff", col_tips: Sequence[str] | None = None) -> str:
    """A grid, one row per ``rows`` label and one column per ``cols`` label (written
    upwards above the grid), ``cells[(row, column)]`` coloured (the others ``empty``);
    columns from 14 to 24 px wide (give at most :func:`heatmap_capacity` columns),
    rows 14 or 16 px. ``legend_items`` (name, colour) above, ``marks`` the names whose
    swatch is crossed. ``col_tips``: a tooltip per column label."""
    left = _row_label_width(rows)
    cw = max(float(HEAT_CELL) if len(cols) <= heatmap_capacity(rows) else 4.0,
             min(24.0, (WIDTH - left - 16) / max(1, len(cols))))
    rh = 16 if len(rows) <= 40 else HEAT_CELL
    leg = legend_rows(legend_items, x=left) if legend_items else []
    label_chars = max((len(c) for c in cols), default=1)
    grid_top = 16 + 24 * len(leg) + min(220, 12 + 8 * label_chars)
    height = int(grid_top + rh * max(1, len(rows)) + 16)
    out = _open(height, title)
    out += _swatch_legend(leg, 22, left, marks)
    gw, gh = cw * len(cols), rh * len(rows)
    out.append(f'<rect x="{left:.1f}" y="{grid_top:.1f}" width="{gw:.1f}" height="{gh:.1f}" fill="{empty}"/>')
    for ci in range(1, len(cols)):
        x = left + ci * cw
        out.append(f'<line x1="{x:.1f}" y1="{grid_top:.1f}" x2="{x:.1f}" y2="{grid_top + gh:.1f}" stroke="#e4e4e4"/>')
    for ri in range(1, len(rows)):
        y = grid_top + ri * rh
        out.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + gw:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
    for (ri, ci), cell in sorted(cells.items()):
        x, y = left + ci * cw, grid_top + ri * rh
        out.append(f'<rect x="{x + 0.5:.1f}" y="{y + 0.5:.1f}" width="{cw - 1:.1f}" height="{rh - 1}" '
                   f'fill="{cell.fill}"><title>{escape(cell.label)}</title></rect>')
        if cell.mark:
            out.append(f'<path d="M{x + 1.5:.1f},{y + rh - 1.5:.1f}L{x + cw - 1.5:.1f},{y + 1.5:.1f}" '
                       f'stroke="{cell.mark}" stroke-width="1.6"/>')
    out.append(f'<rect x="{left:.1f}" y="{grid_top:.1f}" width="{gw:.1f}" height="{gh:.1f}" fill="none" '
               'stroke="#888"/>')
    chars = int((left - 12) // 8.2)
    for ri, name in enumerate(rows):
        ty = grid_top + ri * rh + rh / 2 + 5
        out.append(f'<text x="{left - 6:.1f}" y="{ty:.1f}" text-anchor="end" font-size="{MIN_FONT}">'
                   f"<title>{escape(name)}</title>{escape(_shorten(name, chars))}</text>")
    for ci, name in enumerate(cols):
        x, y = left + ci * cw + cw / 2 + 4.5, grid_top - 5
        tip = f"<title>{escape(col_tips[ci])}</title>" if col_tips else ""
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="start" font-size="{MIN_FONT}" '
                   f'transform="rotate(-90 {x:.1f} {y:.1f})">{tip}{escape(_shorten(name, 26))}</text>')
    out.append("</svg>")
    return "\n".join(out)
