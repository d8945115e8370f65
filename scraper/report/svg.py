"""A histogram (scraper.report.bins) as inline SVG: one bar per bin with its count above it and its bounds in a
tooltip; each bar's group carries data-lo, data-hi and data-count, so a reader (or a test) can check the drawing
against the data."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 12, 20, 40


def edge_text(value: float) -> str:
    """An edge as written in the page and its attributes: 100.0 -> "100", 0.30000 -> "0.3"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def histogram_svg(hist: dict, name: str, unit: str) -> str:
    """The SVG of `hist` ({"edges", "counts", "values"}); `name` marks its bars (data-histogram), `unit` labels
    the horizontal axis."""
    counts, edges = hist["counts"], hist["edges"]
    width = (WIDTH - LEFT - RIGHT) / len(counts)
    tallest = max(counts) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="histogram" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(f"{name}: {unit}")}">']
    parts += [bar(name, edges[i], edges[i + 1], count, LEFT + i * width, width, tallest)
              for i, count in enumerate(counts)]
    parts += axis(edges, width, unit)
    return "".join(parts + ["</svg>"])


def bar(name: str, low: float, high: float, count: int, x: float, width: float, tallest: int) -> str:
    plot = HEIGHT - TOP - BOTTOM
    height = round(plot * count / tallest, 2)
    y = HEIGHT - BOTTOM - height
    label = f'<text x="{x + width / 2:.1f}" y="{y - 4:.1f}" class="count">{count}</text>' if count else ""
    return (f'<g class="bar" data-histogram="{escape(name)}" data-lo="{edge_text(low)}" data-hi="{edge_text(high)}" '
            f'data-count="{count}"><title>{edge_text(low)} to {edge_text(high)}: {count}</title>'
            f'<rect x="{x + 1:.1f}" y="{y:.2f}" width="{max(width - 2, 1):.1f}" height="{height}"/>{label}</g>')


def axis(edges: list, width: float, unit: str) -> list:
    """The baseline, every edge's value under it (every other one when there are many), the unit's label."""
    base = HEIGHT - BOTTOM
    step = 1 if len(edges) <= 14 else 2
    parts = [f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" class="axis"/>']
    parts += [f'<text x="{LEFT + i * width:.1f}" y="{base + 14}" class="tick">{edge_text(edge)}</text>'
              for i, edge in enumerate(edges) if i % step == 0]
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{HEIGHT - 6}" class="unit">{escape(unit)}</text>')
    return parts
