"""The benchmark's report: targets (reported, never asserted), a one-line summary, the
JSON file and a chart.

    bench/results/<UTC timestamp>.json   every figure of one run
    bench/results/latest.json            the same, for the latest run
    bench/results/<UTC timestamp>.png    throughput a vs b, latency percentiles, peak RSS
    bench/results/latest.png
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

import orjson

# (name, what, limit, higher is better)
TARGETS = (
    ("routed_ratio", "(b)/(a) throughput, webhook + amplitude + warehouse", 0.6, True),
    ("routed_http_ratio", "(b)/(a) throughput, three HTTP destinations", 0.6, True),
    ("latency_p99_ms", "(c) p99 append -> sink at 10k ev/s, with the warehouse (ms)",
     150.0, False),
    ("latency_http_p99_ms", "(c) p99 append -> sink at 10k ev/s, HTTP only (ms)", 150.0, False),
    ("routed_peak_rss_mb", "(d) peak RSS while routing, with the warehouse (MB)", 200.0, False),
    ("routed_http_peak_rss_mb", "(d) peak RSS while routing, HTTP only (MB)", 200.0, False),
    ("latency_peak_rss_mb", "(d) peak RSS under the live stream (MB)", 200.0, False),
    ("dead_peak_rss_mb", "(d) peak RSS, a dead destination, with the warehouse (MB)",
     300.0, False),
    ("dead_http_peak_rss_mb", "(d) peak RSS, a dead destination, HTTP only (MB)", 300.0, False),
)


def host() -> dict[str, Any]:
    with open("/proc/loadavg") as f:
        load = [float(x) for x in f.read().split()[:3]]
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_at_start": load}


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    raw = (report.get("raw_consume") or {}).get("events_per_s")
    out: dict[str, float | None] = {}
    for phase in ("routed", "routed_http"):
        run = report.get(phase) or {}
        rate = run.get("events_per_s")
        out[f"{phase}_ratio"] = round(rate / raw, 3) if raw and rate else None
        out[f"{phase}_peak_rss_mb"] = run.get("peak_rss_mb")
    for phase in ("latency", "latency_http"):
        out[f"{phase}_p99_ms"] = (report.get(phase) or {}).get("p99_ms")
    out["latency_peak_rss_mb"] = max(
        (v for v in ((report.get(p) or {}).get("peak_rss_mb") for p in ("latency", "latency_http"))
         if v is not None), default=None)
    for phase in ("dead", "dead_http"):
        out[f"{phase}_peak_rss_mb"] = (report.get(phase) or {}).get("peak_rss_mb")
    return out


def judge(report: dict[str, Any]) -> list[dict[str, Any]]:
    values = figures(report)
    out = []
    for key, what, limit, higher in TARGETS:
        value = values.get(key)
        met = None if value is None else (value >= limit if higher else value <= limit)
        out.append({"name": key, "what": what, "target": (">= " if higher else "<= ") +
                    f"{limit:g}", "value": value, "met": met})
    return out


def summary(report: dict[str, Any]) -> str:
    raw = report.get("raw_consume") or {}
    values = figures(report)
    targets = report.get("targets") or []
    met = sum(1 for t in targets if t["met"])
    judged = sum(1 for t in targets if t["met"] is not None)

    def k(value: Any) -> str:
        return f"{value / 1000:.1f}k" if isinstance(value, int | float) else "-"

    parts = [f"raw {k(raw.get('events_per_s'))} ev/s"]
    for phase, label in (("routed", "routed"), ("routed_http", "routed http-only")):
        run = report.get(phase)
        if run:
            parts.append(f"{label} {k(run.get('events_per_s'))} ev/s "
                         f"(x{values[phase + '_ratio']}, {k(run.get('events_per_cpu_s'))} "
                         f"ev/CPU-s, {run.get('peak_rss_mb'):.0f} MB)")
    for phase, label in (("latency", "p50/p99"), ("latency_http", "http-only p50/p99")):
        live = report.get(phase)
        if live:
            parts.append(f"{label} {live.get('p50_ms')}/{live.get('p99_ms')} ms")
    for phase, label in (("dead", "dead-destination RSS"), ("dead_http", "http-only")):
        dead = report.get(phase)
        if dead:
            parts.append(f"{label} {dead.get('peak_rss_mb'):.0f} MB")
    parts.append(f"targets met {met}/{judged}")
    return "bench: " + " | ".join(parts)


def write(report: dict[str, Any], results_dir: Path, stamp: str, chart: bool = True) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}.json"
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    path.write_bytes(data + b"\n")
    shutil.copyfile(path, results_dir / "latest.json")
    if chart:
        png = results_dir / f"{stamp}.png"
        draw(report, png)
        shutil.copyfile(png, results_dir / "latest.png")
    return path


def draw(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    raw = report.get("raw_consume") or {}
    bars = [("(a) raw consume\n+ decode", raw, "#999999"),
            ("(b) router:\nwebhook, amplitude,\n" + report["options"]["warehouse"],
             report.get("routed") or {}, "#3b7dd8")]
    if report.get("routed_http"):
        bars.append(("(b) router:\nthree HTTP\ndestinations", report["routed_http"], "#6baed6"))
    rates = [(run.get("events_per_s") or 0) / 1000 for _, run, _ in bars]
    drawn = ax1.bar([b[0] for b in bars], rates, color=[b[2] for b in bars])
    ax1.bar_label(drawn, fmt="%.1fk")
    if rates[0]:
        ax1.axhline(0.6 * rates[0], color="#d62728", linestyle="--", label="target: 0.6 x (a)")
        ax1.legend(loc="upper right", fontsize=8)
    ax1.set_ylabel("events / s (thousands)")
    ax1.set_title(f"Throughput, {report['options']['events']:,} events, 6 partitions")

    groups: dict[str, dict[str, Any]] = {}
    for phase, suffix in (("latency", ""), ("latency_http", "\n(HTTP only)")):
        for name, d in ((report.get(phase) or {}).get("destinations") or {}).items():
            if d.get("measured_at", "").startswith("sink"):
                groups[name + suffix] = d
    width = 0.27
    for i, q in enumerate(("p50", "p99", "max")):
        xs = [j + (i - 1) * width for j in range(len(groups))]
        drawn = ax2.bar(xs, [d.get(q) or 0 for d in groups.values()], width, label=q)
        ax2.bar_label(drawn, fmt="%.0f", fontsize=7)
    ax2.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax2.axhline(150, color="#d62728", linestyle="--", label="p99 target 150 ms")
    ax2.set_ylabel("ms, Kafka append -> received at the sink")
    rate = (report.get("latency") or {}).get("achieved_rate", 0)
    ax2.set_title(f"Latency at {rate:,} events/s")
    ax2.legend(loc="upper right", fontsize=8)

    for phase, label, colour in (("routed", "(b) with the warehouse", "#3b7dd8"),
                                 ("routed_http", "(b) HTTP only", "#6baed6"),
                                 ("dead", "(d) Amplitude dead", "#ff7f0e"),
                                 ("dead_http", "(d) Amplitude dead, HTTP only", "#fdae6b")):
        series = (report.get(phase) or {}).get("rss_series") or []
        if series:
            ax3.plot([t for t, _ in series], [m for _, m in series], label=label, color=colour)
    ax3.axhline(200, color="#d62728", linestyle="--", label="200 MB target")
    ax3.axhline(300, color="#d62728", linestyle=":", label="300 MB (dead destination)")
    ax3.set_xlabel("seconds since the router started")
    ax3.set_ylabel("RSS (MB)")
    ax3.set_title("Router resident memory")
    ax3.legend(loc="upper left", fontsize=7)

    fig.suptitle(summary(report).removeprefix("bench: "), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
