"""A lineage drawn as SVG on the service, with no renderer to install or fetch.

The lineage's graph is small and layered (dataset → run → checkpoint →
evals → decisions), so a plain layered layout does: each node's column is
its longest path from a source, nodes of a column are stacked, edges are
curves from a box's right side to the next box's left side. Text is
escaped; colours are presentation attributes (the pages' Content-Security-
Policy allows no inline style).
"""

from __future__ import annotations

from html import escape

Nodes = list[tuple[str, list[str]]]
Edges = list[tuple[str, str, str, bool]]

CHAR_WIDTH = 7.0
LINE_HEIGHT = 16
PADDING = 10
COLUMN_GAP = 70
ROW_GAP = 18
MARGIN = 20
MAX_LABEL = 60

FILLS = {
    "dataset": "#e8f0fe",
    "run": "#e6f4ea",
    "checkpoint": "#fef7e0",
    "eval": "#f3e8fd",
    "decision": "#fce8e6",
}


def _kind(node: str) -> str:
    return node.rstrip("0123456789")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _columns(nodes: Nodes, edges: Edges) -> dict[str, int]:
    """Each node's column: the length of the longest path to it from a source."""
    column = {node: 0 for node, _ in nodes}
    for _ in range(len(nodes)):  # a DAG settles in at most as many rounds as nodes
        changed = False
        for source, target, _label, _dashed in edges:
            if source in column and target in column and column[target] < column[source] + 1:
                column[target] = column[source] + 1
                changed = True
        if not changed:
            break
    return column


def lineage_svg(nodes: Nodes, edges: Edges, *, title: str = "") -> str:
    """The graph as a standalone SVG document (`title`: a note shown when it is empty)."""
    if not nodes:
        width = max(240, round(len(title) * CHAR_WIDTH) + 2 * MARGIN)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60" '
            f'viewBox="0 0 {width} 60" role="img" aria-label="{escape(title)}">'
            f'<text x="{MARGIN}" y="35" font-family="sans-serif" font-size="13" '
            f'fill="#555">{escape(title)}</text></svg>'
        )
    labels = {node: [_clip(line) for line in lines] for node, lines in nodes}
    size = {
        node: (
            max(len(line) for line in lines) * CHAR_WIDTH + 2 * PADDING,
            len(lines) * LINE_HEIGHT + 2 * PADDING,
        )
        for node, lines in labels.items()
    }
    column = _columns(nodes, edges)
    columns: dict[int, list[str]] = {}
    for node, _ in nodes:
        columns.setdefault(column[node], []).append(node)
    heights = {
        c: sum(size[n][1] for n in members) + ROW_GAP * (len(members) - 1)
        for c, members in columns.items()
    }
    total_height = max(heights.values()) + 2 * MARGIN
    place: dict[str, tuple[float, float]] = {}
    x = float(MARGIN)
    for c in sorted(columns):
        y = MARGIN + (total_height - 2 * MARGIN - heights[c]) / 2
        for node in columns[c]:
            place[node] = (x, y)
            y += size[node][1] + ROW_GAP
        x += max(size[n][0] for n in columns[c]) + COLUMN_GAP
    total_width = x - COLUMN_GAP + MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width:.0f}" '
        f'height="{total_height:.0f}" viewBox="0 0 {total_width:.0f} {total_height:.0f}" '
        'role="img" aria-label="lineage graph" font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#5f6368"/></marker></defs>',
    ]
    for source, target, label, dashed in edges:
        if source not in place or target not in place:
            continue
        (sx, sy), (tx, ty) = place[source], place[target]
        x1, y1 = sx + size[source][0], sy + size[source][1] / 2
        x2, y2 = tx, ty + size[target][1] / 2
        bend = max(30.0, (x2 - x1) / 2)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        parts.append(
            f'<path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, '
            f'{x2:.1f} {y2:.1f}" fill="none" stroke="#5f6368" stroke-width="1.3"{dash} '
            'marker-end="url(#arrow)"/>'
        )
        parts.append(
            f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 4:.1f}" text-anchor="middle" '
            f'font-size="10" fill="#5f6368">{escape(label)}</text>'
        )
    for node, lines in labels.items():
        nx, ny = place[node]
        box_width, box_height = size[node]
        fill = FILLS.get(_kind(node), "#ffffff")
        stroke = "#188038" if node == "checkpoint" and "DEPLOYABLE" in lines else "#80868b"
        parts.append(f'<g id="node-{escape(node)}">')
        parts.append(
            f'<rect x="{nx:.1f}" y="{ny:.1f}" width="{box_width:.1f}" height="{box_height:.1f}" '
            f'rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        )
        for i, line in enumerate(lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            parts.append(
                f'<text x="{nx + PADDING:.1f}" y="{ny + PADDING + (i + 0.8) * LINE_HEIGHT:.1f}" '
                f'fill="#202124"{weight}>{escape(line)}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)
