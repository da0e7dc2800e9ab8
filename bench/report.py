#!/usr/bin/env python3
"""Turns the runs of bench/compare-etcd.sh into results.md, results.json and two SVG plots.

Usage: bench/report.py bench/results

Reads, for each measured system, `runs-<system>.jsonl` (one `ordo bench --json` line per
cell) and `meta-<system>.json` (version, load average, start time), and writes:
  results.json    every cell with its system's metadata;
  results.md      the table (system, workload, clients, ops/s, p50, p99, p99.9) and, when
                  both systems were measured, Ordo's figures relative to etcd's;
  throughput.svg  ops/s against clients, one panel per workload;
  latency.svg     p99 latency against clients, one panel per workload;
and puts the table into bench/README.md between its result markers.
Standard library only; the SVG is written by hand.
"""

import json
import math
import os
import sys
from datetime import datetime, timezone

SYSTEM_ORDER = ["ordo", "etcd"]
COLORS = {"ordo": "#d9480f", "etcd": "#1c7ed6"}
WORKLOAD_TITLES = {
    "put": "put (256-byte values)",
    "get": "get (linearizable)",
    "txn": "txn (compare-and-put)",
    "mixed": "mixed",
}


def load(results_dir):
    systems = {}
    cells = []
    for name in sorted(os.listdir(results_dir)):
        path = os.path.join(results_dir, name)
        if name.startswith("meta-") and name.endswith(".json"):
            with open(path) as f:
                meta = json.load(f)
            systems[meta["system"]] = meta
        elif name.startswith("runs-") and name.endswith(".jsonl"):
            system = name[len("runs-") : -len(".jsonl")]
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        cell = json.loads(line)
                        cell["system"] = system
                        cells.append(cell)
    cells = [c for c in cells if c["system"] in systems]
    cells.sort(key=lambda c: (system_rank(c["system"]), workload_rank(c["workload"]), c["clients"]))
    return systems, cells


def workload_rank(workload):
    order = list(WORKLOAD_TITLES)
    return order.index(workload) if workload in order else len(order)


def system_rank(system):
    return SYSTEM_ORDER.index(system) if system in SYSTEM_ORDER else len(SYSTEM_ORDER)


def ms(us):
    return "%.2f" % (us / 1000.0)


def workloads_of(cells):
    seen = []
    for c in cells:
        if c["workload"] not in seen:
            seen.append(c["workload"])
    return sorted(seen, key=workload_rank)


def markdown(systems, cells):
    out = []
    out.append("| system | workload | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        workload = c["workload"]
        if c.get("consistency") == "l":
            workload += " (l)"
        elif c.get("consistency") == "s":
            workload += " (s)"
        out.append(
            "| %s | %s | %d | %.0f | %s | %s | %s | %d |"
            % (
                c["system"],
                workload,
                c["clients"],
                c["ops_per_s"],
                ms(c["latency_us_p50"]),
                ms(c["latency_us_p99"]),
                ms(c["latency_us_p999"]),
                c["errors"],
            )
        )
    if "ordo" in systems and "etcd" in systems:
        by_key = {(c["system"], c["workload"], c["clients"]): c for c in cells}
        rows = []
        for c in cells:
            if c["system"] != "ordo":
                continue
            etcd = by_key.get(("etcd", c["workload"], c["clients"]))
            if not etcd or etcd["ops_per_s"] <= 0 or etcd["latency_us_p99"] <= 0:
                continue
            rows.append(
                "| %s | %d | %.2f× | %.2f× |"
                % (
                    c["workload"],
                    c["clients"],
                    c["ops_per_s"] / etcd["ops_per_s"],
                    c["latency_us_p99"] / etcd["latency_us_p99"],
                )
            )
        if rows:
            out.append("")
            out.append("Ordo relative to etcd (throughput: higher is better; p99: lower is better):")
            out.append("")
            out.append("| workload | clients | ops/s ratio | p99 ratio |")
            out.append("|---|---:|---:|---:|")
            out.extend(rows)
    out.append("")
    for system in sorted(systems, key=system_rank):
        m = systems[system]
        out.append(
            "- %s: %s; measured %s; load average at start %s on %d CPUs; connections to the %s."
            % (
                system,
                m["version"],
                m["started_utc"],
                m["loadavg_at_start"],
                m["cpus"],
                "leader" if m["target"] == "leader" else "leader and followers",
            )
        )
    for system in SYSTEM_ORDER:
        if system not in systems:
            out.append("- %s: not measured in these results." % system)
    return "\n".join(out) + "\n"


def nice_max(value):
    """A round axis maximum at or above value."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return candidate
    return 10 ** (exponent + 1)


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chart(cells, metric, title, y_label, scale):
    """An SVG with one panel per workload: metric against clients, one line per system."""
    workloads = workloads_of(cells)
    systems = sorted({c["system"] for c in cells}, key=system_rank)
    panel_w, panel_h = 420, 300
    margin_l, margin_r, margin_t, margin_b = 70, 20, 60, 50
    width = max(1, len(workloads)) * (panel_w + margin_l + margin_r)
    height = panel_h + margin_t + margin_b + 30
    svg = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
        'font-family="sans-serif" font-size="12">' % (width, height),
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>' % (margin_l, esc(title)),
    ]
    for p, workload in enumerate(workloads):
        ox = p * (panel_w + margin_l + margin_r) + margin_l
        oy = margin_t
        mine = [c for c in cells if c["workload"] == workload]
        clients = sorted({c["clients"] for c in mine})
        y_max = nice_max(max([c[metric] * scale for c in mine] + [0]))

        def x_of(n):
            if len(clients) == 1:
                return ox + panel_w / 2
            return ox + panel_w * clients.index(n) / (len(clients) - 1)

        def y_of(v):
            return oy + panel_h - panel_h * v / y_max

        svg.append(
            '<text x="%d" y="%d" font-size="14">%s</text>'
            % (ox, oy - 12, esc(WORKLOAD_TITLES.get(workload, workload)))
        )
        for i in range(6):
            v = y_max * i / 5
            y = y_of(v)
            svg.append(
                '<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e9ecef"/>'
                % (ox, y, ox + panel_w, y)
            )
            svg.append(
                '<text x="%d" y="%.1f" text-anchor="end">%s</text>'
                % (ox - 6, y + 4, ("%g" % round(v, 2)))
            )
        svg.append(
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#495057"/>'
            % (ox, oy + panel_h, ox + panel_w, oy + panel_h)
        )
        svg.append(
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#495057"/>' % (ox, oy, ox, oy + panel_h)
        )
        for n in clients:
            svg.append(
                '<text x="%.1f" y="%d" text-anchor="middle">%d</text>'
                % (x_of(n), oy + panel_h + 18, n)
            )
        svg.append(
            '<text x="%.1f" y="%d" text-anchor="middle">clients</text>'
            % (ox + panel_w / 2, oy + panel_h + 38)
        )
        svg.append(
            '<text transform="translate(%d,%.1f) rotate(-90)" text-anchor="middle">%s</text>'
            % (ox - 52, oy + panel_h / 2, esc(y_label))
        )
        for system in systems:
            points = sorted(
                (c["clients"], c[metric] * scale) for c in mine if c["system"] == system
            )
            if not points:
                continue
            color = COLORS.get(system, "#495057")
            path = " ".join("%.1f,%.1f" % (x_of(n), y_of(v)) for n, v in points)
            svg.append(
                '<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>' % (path, color)
            )
            for n, v in points:
                svg.append(
                    '<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s, %d clients: %s</title>'
                    "</circle>" % (x_of(n), y_of(v), color, system, n, "%g" % round(v, 2))
                )
    legend_x = margin_l
    legend_y = height - 12
    for i, system in enumerate(systems):
        x = legend_x + i * 110
        svg.append(
            '<rect x="%d" y="%d" width="14" height="4" fill="%s"/>'
            % (x, legend_y - 6, COLORS.get(system, "#495057"))
        )
        svg.append('<text x="%d" y="%d">%s</text>' % (x + 20, legend_y, esc(system)))
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


README_BEGIN = "<!-- results:begin (written by bench/report.py) -->"
README_END = "<!-- results:end -->"


def update_readme(path, table):
    """Replaces the text between the result markers of bench/README.md, if both are there."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return
    text = text[: begin + len(README_BEGIN)] + "\n" + table + text[end:]
    with open(path, "w") as f:
        f.write(text)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    results_dir = sys.argv[1]
    systems, cells = load(results_dir)
    if not cells:
        sys.exit("report.py: no runs in %s; run bench/compare-etcd.sh first" % results_dir)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump({"generated_utc": generated, "systems": systems, "cells": cells}, f, indent=1)
        f.write("\n")
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write(markdown(systems, cells))
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.samefile(results_dir, os.path.join(here, "results")):
        update_readme(os.path.join(here, "README.md"), markdown(systems, cells))
    with open(os.path.join(results_dir, "throughput.svg"), "w") as f:
        f.write(chart(cells, "ops_per_s", "Throughput (three members, fsync before ack)", "ops/s", 1.0))
    with open(os.path.join(results_dir, "latency.svg"), "w") as f:
        f.write(chart(cells, "latency_us_p99", "p99 latency (three members, fsync before ack)", "p99 ms", 0.001))


if __name__ == "__main__":
    main()
