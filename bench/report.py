"""Turns ``results.json`` into ``summary.md``, the target verdicts and the README table.

Everything here reads the results document only (no measuring), so a report can
be rebuilt from a saved run: ``python -m bench.report reports/bench/results.json``.
``--readme README.md`` also rewrites the results block of the README's bench
section (between ``<!-- bench:results -->`` and ``<!-- /bench:results -->``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import CONTESTANTS
from bench.stats import ratio

# Target 1 (issue 6): a project server's CPU per request within 5% of its runtime's
# minimal reference: its features must be nearly free.
FEATURE_TOLERANCE = 1.05

# Target 2: the uvloop service within 15% of the C ceiling at 1 KiB, in req/s.
CEILING_FRACTION = 0.85

# Target 3: the trio service at least as cheap (CPU per request) as the tutorial shape.
TRIO_TUTORIAL_LIMIT = 1.00

# Message size of target 2.
SMALL = 1024

# Markers of the generated block inside the README's bench section.
README_BEGIN = "<!-- bench:results -->"
README_END = "<!-- /bench:results -->"

# The summary figure the CPU targets compare.
CPU = "cpu_us_per_req"

PROJECT_REFERENCES = (
    ("trio_service", "trio_tutorial"),
    ("uvloop_service", "protocol_uvloop"),
    ("uvloop_service_asyncio", "protocol_asyncio"),
)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


class Results:
    """Read access to a results document: medians per (contestant, size, connections)."""

    def __init__(self, doc: dict[str, Any]):
        if doc.get("schema") != 1:
            raise ValueError(f"unsupported results schema {doc.get('schema')!r}")
        self.doc = doc
        self.meta: dict[str, Any] = doc["meta"]
        self.contestants: list[dict[str, Any]] = doc["contestants"]
        self._cells = {(c["contestant"], c["size"], c["connections"]): c for c in doc["cells"]}
        self.sizes: list[int] = self.meta["settings"]["sizes"]
        self.connections: list[int] = self.meta["settings"]["connections"]

    def label(self, key: str) -> str:
        """The contestant's label from the document, else from the known contestants."""
        known = {c.key: c.label for c in CONTESTANTS}
        return next((c["label"] for c in self.contestants if c["key"] == key), known.get(key, key))

    def measured(self) -> list[dict[str, Any]]:
        """Contestants with at least one cell, in document order."""
        keys = {k for k, _, _ in self._cells}
        return [c for c in self.contestants if c["key"] in keys]

    def has(self, key: str) -> bool:
        return any(k == key for k, _, _ in self._cells)

    def median(self, key: str, size: int, conns: int, figure: str) -> float:
        cell = self._cells.get((key, size, conns))
        if cell is None:
            return math.nan
        return _num(cell["summary"].get(figure, {}).get("median"))

    def cv(self, key: str, size: int, conns: int, figure: str) -> float:
        cell = self._cells.get((key, size, conns))
        if cell is None:
            return math.nan
        return _num(cell["summary"].get(figure, {}).get("cv"))

    def latency(self, key: str, size: int, conns: int, figure: str) -> float:
        cell = self._cells.get((key, size, conns))
        return math.nan if cell is None else _num(cell["latency_all_runs"].get(figure))

    def reference_of(self, key: str) -> str | None:
        ref = next((c.get("reference") for c in self.contestants if c["key"] == key), None)
        return ref if isinstance(ref, str) else None

    def points(self) -> list[tuple[int, int]]:
        return [(s, n) for s in self.sizes for n in self.connections]


# --------------------------------------------------------------------------- formatting


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def fmt_rate(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def fmt_num(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def fmt_ratio(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"x{value:.{digits}f}"


def fmt_pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 100:.1f}%"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- targets


@dataclass
class Verdict:
    """One target: met, missed or not evaluated, with the worst point and every miss."""

    name: str
    status: str  # "met", "missed", "not evaluated"
    detail: str
    misses: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "status": self.status,
            "detail": self.detail,
            "misses": self.misses,
        }


def _cpu_ratio_verdict(r: Results, name: str, key: str, ref: str, limit: float) -> Verdict:
    if not (r.has(key) and r.has(ref)):
        missing = key if not r.has(key) else ref
        return Verdict(name, "not evaluated", f"{r.label(missing)} was not measured", [])
    ratios = []
    for size, conns in r.points():
        value = ratio(
            r.median(key, size, conns, "cpu_us_per_req"),
            r.median(ref, size, conns, "cpu_us_per_req"),
        )
        if not math.isnan(value):
            ratios.append((value, size, conns))
    if not ratios:
        return Verdict(name, "not evaluated", "no CPU figures (see notes)", [])
    misses = [
        f"{size_label(s)} x {n} conns: x{v:.3f} ({(v - 1) * 100:+.1f}%, "
        f"{r.median(key, s, n, CPU):.2f} vs {r.median(ref, s, n, CPU):.2f} µs)"
        for v, s, n in ratios
        if v > limit
    ]
    worst, ws, wn = max(ratios)
    best, bs, bn = min(ratios)
    detail = (
        f"CPU/request vs {r.label(ref)}: worst x{worst:.3f} at {size_label(ws)} x {wn}, "
        f"best x{best:.3f} at {size_label(bs)} x {bn} (limit x{limit:.2f})"
    )
    return Verdict(name, "missed" if misses else "met", detail, misses)


def _ceiling_verdict(r: Results) -> Verdict:
    name = "uvloop service within 15% of the C ceiling at 1 KiB (req/s)"
    key, c = "uvloop_service", "c_epoll"
    if not (r.has(key) and r.has(c)) or SMALL not in r.sizes:
        return Verdict(name, "not evaluated", "uvloop service, C ceiling or 1 KiB not measured", [])
    misses, parts = [], []
    for conns in r.connections:
        value = ratio(
            r.median(key, SMALL, conns, "req_per_s"), r.median(c, SMALL, conns, "req_per_s")
        )
        bare = ratio(
            r.median("protocol_uvloop", SMALL, conns, "req_per_s"),
            r.median(c, SMALL, conns, "req_per_s"),
        )
        cpu = ratio(
            r.median(key, SMALL, conns, "cpu_us_per_req"),
            r.median(c, SMALL, conns, "cpu_us_per_req"),
        )
        text = (
            f"1 KiB x {conns} conns: req/s {fmt_ratio(value, 3)} of C "
            f"(bare Protocol on uvloop {fmt_ratio(bare, 3)}); CPU/request {fmt_ratio(cpu)} of C"
        )
        parts.append(text)
        if not math.isnan(value) and value < CEILING_FRACTION:
            misses.append(text)
    return Verdict(name, "missed" if misses else "met", "; ".join(parts), misses)


def evaluate_targets(r: Results) -> list[Verdict]:
    """The issue's targets, each met/missed/not evaluated with where and by how much."""
    verdicts = [
        _cpu_ratio_verdict(
            r,
            f"{r.label(key)} within 5% of {r.label(ref)} (CPU/request)",
            key,
            ref,
            FEATURE_TOLERANCE,
        )
        for key, ref in PROJECT_REFERENCES
    ]
    verdicts.append(_ceiling_verdict(r))
    verdicts.append(
        _cpu_ratio_verdict(
            r,
            "trio service at least as cheap as the tutorial shape (CPU/request)",
            "trio_service",
            "trio_tutorial",
            TRIO_TUTORIAL_LIMIT,
        )
    )
    return verdicts


# --------------------------------------------------------------------------- summary.md


def _header(r: Results) -> list[str]:
    m = r.meta
    mach, ver, st = m["machine"], m["versions"], m["settings"]
    load0 = ", ".join(f"{x:.2f}" for x in mach.get("loadavg_start", []))
    load1 = ", ".join(f"{x:.2f}" for x in mach.get("loadavg_end", []))
    return [
        f"# Echo server benchmark: {m['mode']} run, target {m['target']}",
        "",
        f"- Date: {m['date']} (took {m['elapsed_s']:.0f} s)",
        f"- Machine: {mach['nproc']} CPUs, {mach['cpu_model']}, {mach['mem_gib']} GiB, "
        f"Linux {mach['kernel']}; load average at start {load0}, at end {load1}",
        f"- Versions: Python {ver['python']}, trio {ver['trio']}, uvloop {ver['uvloop']}",
        f"- Method: {m['placement']['note']}; {st['repeats']} repeats per cell in ABBA order "
        f"(forward, backward, ...); {st['warmup_s']} s warm-up + {st['duration_s']} s measured "
        f"per run; up to {st['max_client_processes']} client processes (blocking sockets, "
        "TCP_NODELAY, strict ping-pong, every echo checked byte for byte).",
        _quietness(r),
        "- Figures are medians over repeats. CPU/request = the server process's user+sys "
        f"time (/proc/<pid>/stat, {st['clk_tck']} ticks/s) over the measured window divided "
        "by the requests completed in it: the fair comparison when the client is the limit. "
        "MiB/s counts payload one way.",
        "",
    ]


# Other load (CPUs used by anything but the benchmark) above which a run counts as shared.
QUIET_LIMIT = 0.1


def _quietness(r: Results) -> str:
    """One line on how much else ran on the machine during the measured windows."""
    other = [_num(run.get("other_load")) for c in r.doc["cells"] for run in c["runs"]]
    other = sorted(x for x in other if not math.isnan(x))  # NaN (failed runs) would spoil the sort
    if not other:
        return "- Machine quietness: not measured"
    steal = [_num(run.get("steal")) for c in r.doc["cells"] for run in c["runs"]]
    steal = [x for x in steal if not math.isnan(x)]
    median = other[len(other) // 2]
    shared = sum(1 for x in other if x > QUIET_LIMIT)
    if shared == 0:
        verdict = "quiet"
    elif median <= QUIET_LIMIT and shared <= len(other) // 4:
        verdict = (
            f"mostly quiet: {shared} of {len(other)} runs had more than {QUIET_LIMIT} CPUs of "
            "other load (per cell in the spread table)"
        )
    else:
        verdict = (
            f"SHARED: {shared} of {len(other)} runs had more than {QUIET_LIMIT} CPUs of other "
            "load; differences of a few percent are noise here, rerun on a quiet machine"
        )
    return (
        f"- Machine quietness: other load (CPU time of everything but the server and the "
        f"clients, incl. unattributed kernel work) median {median:.2f} CPUs, max "
        f"{other[-1]:.2f}; steal max {max(steal, default=0.0):.2f}: {verdict}."
    )


def _throughput_tables(r: Results, keys: list[str]) -> list[str]:
    out = ["## Throughput", "", "req/s (MiB/s) and ratio to the C ceiling (xC).", ""]
    for size in r.sizes:
        rows = []
        for key in keys:
            cells = [r.label(key)]
            for conns in r.connections:
                rps = r.median(key, size, conns, "req_per_s")
                mib = r.median(key, size, conns, "mib_per_s")
                vs_c = ratio(rps, r.median("c_epoll", size, conns, "req_per_s"))
                cells.append(f"{fmt_rate(rps)} ({fmt_num(mib)} MiB/s) {fmt_ratio(vs_c)}")
            rows.append(cells)
        out += [f"### {size_label(size)}", ""]
        out += [*table(["server", *(f"{n} conn" for n in r.connections)], rows), ""]
    return out


def _cpu_tables(r: Results, keys: list[str]) -> list[str]:
    out = [
        "## Server CPU per request",
        "",
        "µs per request; xref = ratio to the runtime's minimal reference (trio tutorial "
        "shape for trio, bare Protocol for each asyncio loop), xC = ratio to the C ceiling. "
        "Lower is better.",
        "",
    ]
    for size in r.sizes:
        rows = []
        for key in keys:
            ref = r.reference_of(key)
            cells = [r.label(key)]
            for conns in r.connections:
                cpu = r.median(key, size, conns, "cpu_us_per_req")
                parts = [fmt_num(cpu, 2)]
                if ref:
                    parts.append(
                        fmt_ratio(ratio(cpu, r.median(ref, size, conns, "cpu_us_per_req"))) + " ref"
                    )
                parts.append(
                    fmt_ratio(ratio(cpu, r.median("c_epoll", size, conns, "cpu_us_per_req"))) + " C"
                )
                cells.append(" ".join(parts))
            rows.append(cells)
        out += [f"### {size_label(size)}", ""]
        out += [*table(["server", *(f"{n} conn" for n in r.connections)], rows), ""]
    return out


def _latency_tables(r: Results, keys: list[str]) -> list[str]:
    out = ["## Latency", "", "µs per request, p50 / p99 / p99.9 over all measured runs.", ""]
    for size in r.sizes:
        rows = [
            [r.label(key)]
            + [
                " / ".join(
                    fmt_num(r.latency(key, size, n, f), 0) for f in ("p50_us", "p99_us", "p999_us")
                )
                for n in r.connections
            ]
            for key in keys
        ]
        out += [f"### {size_label(size)}", ""]
        out += [*table(["server", *(f"{n} conn" for n in r.connections)], rows), ""]
    return out


def _spread_table(r: Results, keys: list[str]) -> list[str]:
    out = [
        "## Spread and bottleneck",
        "",
        "Per grid point: coefficient of variation over repeats of req/s and of CPU/request, "
        "then how busy the server, the clients and everything else were (CPUs; 1.00 = one "
        "CPU fully used). A server well below 1.00 while the clients are near 1.00 means the "
        "client was the limit; other load above ~0.1 means the machine was shared.",
        "",
    ]
    header = ["server", *(f"{size_label(s)} x {n}" for s, n in r.points())]
    rows = []
    for key in keys:
        cells = [r.label(key)]
        for s, n in r.points():
            cvs = f"{fmt_pct(r.cv(key, s, n, 'req_per_s'))} / {fmt_pct(r.cv(key, s, n, CPU))}"
            busy = (
                f"{fmt_num(r.median(key, s, n, 'server_busy'), 2)}"
                f" / {fmt_num(r.median(key, s, n, 'client_busy'), 2)}"
                f" / {fmt_num(r.median(key, s, n, 'other_load'), 2)}"
            )
            cells.append(f"{cvs} · {busy}")
        rows.append(cells)
    return out + table(header, rows) + [""]


def _compose_section(r: Results) -> list[str]:
    pairs = [
        (f"compose_{rt}_proxy", f"compose_{rt}_direct")
        for rt in ("trio", "uvloop")
        if r.has(f"compose_{rt}_proxy")
    ]
    if not pairs:
        return []
    out = [
        "## Docker's port proxy",
        "",
        "A published port on 127.0.0.1 is served by docker-proxy (a userland process that "
        "copies each byte in and out again); the container's bridge IP skips it. Same "
        "container, same client; proxy CPU is docker-proxy's own user+sys per request.",
        "",
    ]
    rows = []
    for proxy, direct in pairs:
        for s, n in r.points():
            p_rps = r.median(proxy, s, n, "req_per_s")
            d_rps = r.median(direct, s, n, "req_per_s")
            rows.append(
                [
                    r.label(proxy).split(" (")[0],
                    f"{size_label(s)} x {n}",
                    fmt_rate(d_rps),
                    fmt_rate(p_rps),
                    fmt_ratio(ratio(p_rps, d_rps)),
                    fmt_num(r.median(direct, s, n, "cpu_us_per_req"), 2),
                    fmt_num(r.median(proxy, s, n, "cpu_us_per_req"), 2),
                    fmt_num(r.median(proxy, s, n, "proxy_cpu_us_per_req"), 2),
                ]
            )
    header = [
        "server",
        "point",
        "req/s direct",
        "req/s via proxy",
        "proxy/direct",
        "server µs/req direct",
        "server µs/req via proxy",
        "docker-proxy µs/req",
    ]
    return out + table(header, rows) + [""]


def _json_to_markdown(data: Any, depth: int = 0) -> list[str]:
    """Render JSON of unknown shape readably.

    A dict's scalar entries become one key/value table and its other entries
    sub-headings; a list of flat dicts becomes a table; a list of scalars a
    bullet list; anything deeper than a few levels a JSON code block.
    """
    scalar = (str, int, float, bool, type(None))
    if depth > 3:
        return ["```", json.dumps(data, indent=1)[:2000], "```", ""]
    if isinstance(data, dict):
        flat = [(k, v) for k, v in data.items() if isinstance(v, scalar)]
        out = [*table(["key", "value"], [[str(k), _cell(v)] for k, v in flat]), ""] if flat else []
        for k, v in data.items():
            if not isinstance(v, scalar):
                out += [f"{'#' * min(3 + depth, 6)} {k}", "", *_json_to_markdown(v, depth + 1)]
        return out
    if isinstance(data, list) and all(isinstance(x, scalar) for x in data):
        return [*(f"- {_cell(x)}" for x in data), ""]
    if isinstance(data, list) and all(isinstance(x, dict) for x in data):
        cols = list(dict.fromkeys(k for x in data for k in x))
        if all(isinstance(v, scalar) for x in data for v in x.values()):
            return [*table(cols, [[_cell(x.get(c)) for c in cols] for x in data]), ""]
    return ["```", json.dumps(data, indent=1)[:2000], "```", ""]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v).replace("|", "\\|")


def _experiments_section(r: Results, out_dir: Path) -> list[str]:
    exp = r.doc.get("experiments") or {}
    out = ["## Worker experiments (unsync: threads vs processes vs async)", ""]
    if not exp.get("present"):
        return [*out, f"Not included: {exp.get('note', 'no experiment results')}.", ""]
    out += [
        f"From `{exp['path']}` (written by `python -m services.unsync_worker.experiments`).",
        "",
    ]
    out += _json_to_markdown(exp["data"])
    exp_dir = Path(exp["path"]).parent
    for png in exp.get("pngs", []):
        rel = _relpath(exp_dir / png, out_dir)
        out += [f"![{png}]({rel})", ""]
    return out


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve())


def summary_markdown(doc: dict[str, Any], out_dir: Path, plots: Sequence[str] = ()) -> str:
    """The whole summary.md for a results document."""
    r = Results(doc)
    keys = [c["key"] for c in r.measured()]
    verdicts = evaluate_targets(r)
    lines = _header(r)
    lines += ["## Targets", ""]
    lines += table(
        ["target", "result", "detail"],
        [[v.name, v.status.upper(), v.detail] for v in verdicts],
    )
    lines.append("")
    for v in verdicts:
        if v.misses:
            lines += [f"Missed points for *{v.name}*:", ""] + [f"- {m}" for m in v.misses] + [""]
    lines += _throughput_tables(r, keys)
    lines += _cpu_tables(r, keys)
    lines += _latency_tables(r, keys)
    lines += _spread_table(r, keys)
    lines += _compose_section(r)
    skipped = [c for c in r.contestants if c["status"] != "ok"]
    if skipped or r.meta["notes"]:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in r.meta["notes"]]
        lines += [
            f"- {c['label']}: {c['status']}: {c['note']}"
            for c in skipped
            if c["note"] not in " ".join(r.meta["notes"])
        ]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += _experiments_section(r, out_dir)
    return "\n".join(lines).rstrip() + "\n"


def readme_block(doc: dict[str, Any], plots: Sequence[str] = (), plots_dir: str = "") -> str:
    """The README's results block: a dated headline table at 4 connections plus verdicts.

    ``plots`` (file names in ``plots_dir``, relative to the README) are embedded as
    images; without them the block points at ``reports/bench/``.
    """
    r = Results(doc)
    m = r.meta
    conns = 4 if 4 in r.connections else r.connections[len(r.connections) // 2]
    header = ["server"]
    for size in r.sizes:
        header += [f"{size_label(size)} req/s (xC)", f"{size_label(size)} CPU µs/req (xref)"]
    rows = []
    for c in r.measured():
        key, ref = c["key"], r.reference_of(c["key"])
        row = [c["label"]]
        for size in r.sizes:
            rps = r.median(key, size, conns, "req_per_s")
            cpu = r.median(key, size, conns, "cpu_us_per_req")
            vs_c = ratio(rps, r.median("c_epoll", size, conns, "req_per_s"))
            row.append(f"{fmt_rate(rps)} ({fmt_ratio(vs_c)})")
            ref_part = (
                f" ({fmt_ratio(ratio(cpu, r.median(ref, size, conns, 'cpu_us_per_req')))})"
                if ref
                else ""
            )
            row.append(fmt_num(cpu, 2) + ref_part)
        rows.append(row)
    mach, ver = m["machine"], m["versions"]
    beaten = _c_beaten(r, conns)
    lines = [
        f"{m['mode'].capitalize()} run of {m['date'][:10]} on {mach['nproc']} CPUs "
        f"({mach['cpu_model']}, Linux {mach['kernel']}), Python {ver['python']}, "
        f"trio {ver['trio']}, uvloop {ver['uvloop']}; {conns} connections, "
        f"medians of {m['settings']['repeats']} ABBA repeats. "
        "Full tables, latency and spread: `reports/bench/summary.md`.",
        "",
        *table(header, rows),
        "",
        *([beaten, ""] if beaten else []),
        _quietness(r).removeprefix("- "),
        "",
        "Targets: " + "; ".join(f"{v.name}: **{v.status}**" for v in evaluate_targets(r)) + ".",
        "",
    ]
    for name in plots:
        lines += [f"![{name}]({plots_dir}/{name})", ""]
    if plots:
        lines.pop()
    else:
        lines.append(
            "Plots: `reports/bench/throughput.png`, `reports/bench/cpu_per_request.png`, "
            "`reports/bench/latency_p99.png`."
        )
    return "\n".join(lines)


# req/s above this multiple of the C server's means it was no ceiling at that size in
# that run: beyond the few percent that separate equal servers on a shared machine.
C_BEATEN_RATIO = 1.10


def _c_beaten(r: Results, conns: int) -> str:
    """A sentence naming the sizes where some server beat the C reference in req/s, or ""."""
    worst = []
    for size in r.sizes:
        c_rps = r.median("c_epoll", size, conns, "req_per_s")
        ratios = [ratio(r.median(c["key"], size, conns, "req_per_s"), c_rps) for c in r.measured()]
        best = max((x for x in ratios if not math.isnan(x)), default=math.nan)
        if not math.isnan(best) and best > C_BEATEN_RATIO:
            worst.append(f"{size_label(size)} (up to {fmt_ratio(best)})")
    if not worst:
        return ""
    return (
        f"At {', '.join(worst)} other servers beat the C reference in req/s: it is no ceiling "
        "there in this run. At large messages the client is the limit and each run falls into "
        "one of two kernel-dependent speeds (see *What the figures mean*), so compare CPU per "
        "request, and min/max in `results.json`, rather than req/s."
    )


# Plots in reading order: the headline figure first.
PLOT_ORDER = ("throughput.png", "cpu_per_request.png", "latency_p99.png")


def _plot_order(name: str) -> tuple[int, str]:
    return (PLOT_ORDER.index(name) if name in PLOT_ORDER else len(PLOT_ORDER), name)


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between the bench results markers; ValueError if they are missing."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: markers {README_BEGIN} ... {README_END} not found")
    new = text[: start + len(README_BEGIN)] + "\n" + block.strip() + "\n" + text[end:]
    readme.write_text(new)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("reports/bench/results.json"))
    parser.add_argument("--readme", type=Path, help="rewrite this README's bench results block")
    parser.add_argument("--note", default="", help="a line to put above the README table")
    parser.add_argument(
        "--publish-plots",
        type=Path,
        metavar="DIR",
        help="with --readme: copy the PNGs here (a tracked folder) and embed them in the README",
    )
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.results.read_text())
        out_dir = args.results.parent
        plots = sorted((p.name for p in out_dir.glob("*.png")), key=_plot_order)
        (out_dir / "summary.md").write_text(summary_markdown(doc, out_dir, plots))
        if args.readme:
            published: list[str] = []
            rel_dir = ""
            if args.publish_plots:
                args.publish_plots.mkdir(parents=True, exist_ok=True)
                for name in plots:
                    shutil.copyfile(out_dir / name, args.publish_plots / name)
                published = plots
                rel_dir = _relpath(args.publish_plots, args.readme.parent)
            block = readme_block(doc, published, rel_dir)
            update_readme(args.readme, f"{args.note}\n\n{block}" if args.note else block)
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out_dir / 'summary.md'}" + (f" and {args.readme}" if args.readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
