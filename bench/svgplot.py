"""A line plot as an SVG document, hand-written so the scale run's plots need no matplotlib."""

import math

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def ticks(lo: float, hi: float, k: int = 5) -> list[float]:
    """Round tick values from lo to hi, about k of them."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / k
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t, out = 0.0, []
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            out.append(round(t, 6))
        t += step
    return out


def svg_plot(
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict,
    hlines: dict | None = None,
    w: int = 640,
    h: int = 400,
) -> str:
    """A line plot as an SVG document. series: {label: [(x, y), ...]}; hlines: {label: y}."""
    pts = [p for s in series.values() for p in s]
    xs = [p[0] for p in pts] or [0, 1]
    ys = [p[1] for p in pts] + list((hlines or {}).values()) or [0, 1]
    x0, x1 = 0.0, max(xs) or 1.0
    y0, y1 = 0.0, (max(ys) or 1.0) * 1.05
    L, R, T, B = 70, 20, 40, 50

    def sx(x):
        return L + (x - x0) / (x1 - x0) * (w - L - R)

    def sy(y):
        return h - B - (y - y0) / (y1 - y0) * (h - T - B)

    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">{xlabel}</text>',
        f'<text x="15" y="{h / 2}" text-anchor="middle" transform="rotate(-90 15 {h / 2})">'
        f"{ylabel}</text>",
    ]
    for t in ticks(x0, x1):
        o.append(f'<line x1="{sx(t):.1f}" y1="{T}" x2="{sx(t):.1f}" y2="{h - B}" stroke="#eee"/>')
        o.append(f'<text x="{sx(t):.1f}" y="{h - B + 15}" text-anchor="middle">{t:g}</text>')
    for t in ticks(y0, y1):
        o.append(f'<line x1="{L}" y1="{sy(t):.1f}" x2="{w - R}" y2="{sy(t):.1f}" stroke="#eee"/>')
        o.append(f'<text x="{L - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    o.append(
        f'<rect x="{L}" y="{T}" width="{w - L - R}" height="{h - T - B}" fill="none" '
        'stroke="black"/>'
    )
    for k, (label, s) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        o.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{L + 10}" y="{T + 15 + 14 * k}" fill="{c}">{label}</text>')
    for label, y in (hlines or {}).items():
        o.append(
            f'<line x1="{L}" y1="{sy(y):.1f}" x2="{w - R}" y2="{sy(y):.1f}" stroke="red" '
            'stroke-dasharray="4 3"/>'
        )
        o.append(
            f'<text x="{w - R - 5}" y="{sy(y) - 4:.1f}" text-anchor="end" fill="red">{label}</text>'
        )
    o.append("</svg>")
    return "\n".join(o) + "\n"
