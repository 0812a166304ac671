"""
chart.py - the benchmark's results as an SVG chart (hand-written SVG, standard library only).

One panel per workload: every measured system as a horizontal bar of records/s, labelled with
its records/s and its ratio to the limit (the Sequin Stream consumer's bar in its own colour), and
the limit (what Postgres itself needs to write the same rows) as a dashed vertical line.  Each panel has its own scale: wide records are several
times slower per record than narrow ones, and the comparison that matters is within a workload.
"""

import math
from xml.sax.saxutils import escape

WIDTH = 1000
LABEL_W = 250          # system names, right-aligned before the bars
BAR_X = LABEL_W + 10
BAR_W = 540            # the axis, up to the first round number above the fastest system or the limit
ROW_H = 26
BAR_H = 17
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

COLORS = {"sequin_sync": "#1f77b4", "stream": "#17becf", "ceiling": "#8c8c8c", "external": "#e3a23b",
          "limit": "#c0392b"}


def _fmt(n):
    return "{:,}".format(int(round(n)))


def _nice_step(span, ticks=5):
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _text(x, y, s, size=13, anchor="start", weight="normal", fill="#222", extra=""):
    return ('<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" font-weight="%s" fill="%s"%s>%s</text>'
            % (x, y, size, anchor, weight, fill, extra, escape(s)))


def _panel(name, w, runs, y):
    """One workload's panel at height y; returns (svg elements, height used)."""
    out = []
    limit = next((r for r in runs if r["system"] == "limit"), None)
    bars = [r for r in runs if r["system"] != "limit"]
    top = max([r["records_per_s"] for r in runs] or [1])
    step = _nice_step(top)
    axis_max = step * math.ceil(top / step)
    scale = BAR_W / axis_max
    title = "%s: %s records (%s ids x 2 versions), ~%s B each, %s" % (
        name, _fmt(w["records"]), _fmt(w["ids"]), _fmt(w["bytes_per_record"]), w["collection"])
    out.append(_text(20, y + 18, title, size=15, weight="bold"))
    out.append(_text(20, y + 36, w.get("table_note", ""), size=12, fill="#555"))
    y0 = y + 64
    height = len(bars) * ROW_H
    # grid and axis
    v = 0.0
    while v <= axis_max * 1.0001:
        x = BAR_X + v * scale
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e6e6e6"/>' % (x, y0 - 4, x, y0 + height))
        out.append(_text(x, y0 + height + 15, _fmt(v), size=11, anchor="middle", fill="#777"))
        v += step
    for i, r in enumerate(bars):
        ry = y0 + i * ROW_H
        length = max(r["records_per_s"] * scale, 1)
        color = COLORS["stream"] if r.get("protocol") == "stream" else COLORS.get(r["system"], "#999")
        out.append(_text(LABEL_W, ry + BAR_H - 4, r["label"], anchor="end",
                         weight="bold" if r["label"] == "sequin_sync" else "normal"))
        out.append('<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="%s" rx="2"><title>%s</title></rect>' % (
            BAR_X, ry, length, BAR_H, color, escape("%s: %s records/s" % (r["label"], _fmt(r["records_per_s"])))))
        value = "%s/s" % _fmt(r["records_per_s"])
        if limit:
            value += "   %.2f\u00d7 limit" % (r["records_per_s"] / limit["records_per_s"])
        if not r["check"]["ok"]:
            value += "  CHECK FAILED"
        out.append(_text(BAR_X + length + 6, ry + BAR_H - 4, value, size=12))
    if limit:
        x = BAR_X + limit["records_per_s"] * scale
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" '
                   'stroke-dasharray="6,4"/>' % (x, y0 - 8, x, y0 + height + 2, COLORS["limit"]))
        out.append(_text(x, y0 - 11, "limit %s/s" % _fmt(limit["records_per_s"]), size=12, anchor="middle",
                         weight="bold", fill=COLORS["limit"]))
    return out, 64 + height + 40


def render_svg(res):
    """The whole chart as an SVG document (text)."""
    body = []
    m = res["machine"]
    y = 0
    body.append(_text(20, 28, "sequin_sync throughput, records/s (higher is better)", size=18, weight="bold"))
    sub = "%s; %d cores, %s; %s; commit %s" % (
        res["started_at"], m["nproc"], m["cpu_model"], res["postgres"]["version"], (m.get("git_commit") or "?")[:12])
    if res["options"].get("repeat", 1) > 1:
        sub += "; best of %d" % res["options"]["repeat"]
    body.append(_text(20, 48, sub, size=12, fill="#555"))
    y = 62
    for name, w in res["workloads"].items():
        runs = [r for r in res["runs"] if r["workload"] == name]
        if not runs:
            continue
        els, h = _panel(name, w, runs, y)
        body.extend(els)
        y += h
    notes = ["Dashed line: the limit, the extension's own INSERT ... ON CONFLICT ... WHERE statement fed from typed "
             "rows already in the server,",
             "one transaction per batch of 1000: what Postgres itself must do to write these rows. "
             "Ceiling: Postgres' upsert from the batch's JSON (jsonb_array_elements).",
             "Every run starts from an empty table and ends with the same content (checked)."]
    for i, line in enumerate(notes):
        body.append(_text(20, y + 4 + 16 * i, line, size=11, fill="#555"))
    y += 4 + 16 * len(notes)
    legend_x = 20
    for key, label in (("sequin_sync", "sequin_sync"), ("stream", "sequin_sync, Sequin Stream consumer"),
                       ("ceiling", "Postgres upsert from JSON"),
                       ("external", "external Python worker")):
        body.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (legend_x, y + 2, COLORS[key]))
        body.append(_text(legend_x + 18, y + 12, label, size=12))
        legend_x += 40 + 8 * len(label)
    height = y + 26
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="%s">\n<rect width="100%%" height="100%%" fill="white"/>\n%s\n</svg>\n'
            % (WIDTH, height, WIDTH, height, escape(FONT, {"'": "&apos;"}), "\n".join(body)))
