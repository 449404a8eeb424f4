"""bench.report and bench.harness output: target verdicts, summary, README block, JSON."""

from __future__ import annotations

import json
import math

import pytest

from bench.harness import load_experiments, summarize_cell, write_json
from bench.report import (
    README_BEGIN,
    README_END,
    Results,
    evaluate_targets,
    readme_block,
    summary_markdown,
    update_readme,
)

KEYS = {
    # key: (runtime, kind, reference)
    "trio_service": ("trio", "project", "trio_tutorial"),
    "uvloop_service": ("uvloop", "project", "protocol_uvloop"),
    "uvloop_service_asyncio": ("asyncio", "project", "protocol_asyncio"),
    "trio_tutorial": ("trio", "reference", None),
    "protocol_uvloop": ("uvloop", "reference", None),
    "protocol_asyncio": ("asyncio", "reference", None),
    "c_epoll": ("c", "ceiling", None),
}


def make_doc(figures, sizes=(1024, 102400), conns=(4,)):
    """A results document whose every run has the given (req/s, CPU us/req) per key."""
    cells = []
    for key, (rps, cpu) in figures.items():
        for size in sizes:
            for n in conns:
                runs = [
                    {
                        "req_per_s": rps * f,
                        "mib_per_s": rps * f * size / 2**20,
                        "cpu_us_per_req": cpu * f,
                        "server_busy": 0.5,
                        "client_busy": 0.9,
                        "p50_us": 50.0,
                        "p99_us": 90.0,
                        "p999_us": 120.0,
                    }
                    for f in (0.99, 1.0, 1.01)
                ]
                cells.append(
                    {
                        "contestant": key,
                        "size": size,
                        "connections": n,
                        "runs": runs,
                        "summary": summarize_cell(runs),
                        "latency_all_runs": {"p50_us": 50.0, "p99_us": 90.0, "p999_us": 120.0},
                    }
                )
    return {
        "schema": 1,
        "meta": {
            "date": "2026-01-02T03:04:05+00:00",
            "mode": "quick",
            "target": "local",
            "elapsed_s": 60.0,
            "machine": {
                "nproc": 2,
                "cpu_model": "Test CPU",
                "kernel": "6.1",
                "mem_gib": 8.0,
                "loadavg_start": [0.1, 0.1, 0.1],
                "loadavg_end": [0.2, 0.1, 0.1],
            },
            "versions": {"python": "3.11.7", "trio": "0.35.0", "uvloop": "0.23.0"},
            "placement": {"server_cpus": [0], "client_cpus": [1], "note": "pinned"},
            "settings": {
                "sizes": list(sizes),
                "connections": list(conns),
                "warmup_s": 0.2,
                "duration_s": 1.0,
                "repeats": 3,
                "max_client_processes": 4,
                "clk_tck": 100,
            },
            "notes": ["pinned"],
        },
        "contestants": [
            {
                "key": k,
                "label": k.replace("_", " "),
                "runtime": rt,
                "kind": kind,
                "reference": ref,
                "status": "ok",
                "note": "",
            }
            for k, (rt, kind, ref) in KEYS.items()
            if k in figures
        ],
        "cells": cells,
        "experiments": {"present": False, "note": "not run"},
    }


FIGURES = {
    "trio_service": (30_000.0, 20.0),  # x0.952 of the tutorial: met both trio targets
    "trio_tutorial": (28_000.0, 21.0),
    "uvloop_service": (60_000.0, 11.0),  # x1.10 of bare Protocol: missed by 10%
    "protocol_uvloop": (65_000.0, 10.0),
    "uvloop_service_asyncio": (55_000.0, 12.6),  # x1.05 exactly: met (limit inclusive)
    "protocol_asyncio": (58_000.0, 12.0),
    "c_epoll": (80_000.0, 5.0),  # uvloop service reaches x0.75 of C: missed
}


def verdicts_by_prefix(doc):
    return {v.name.split(" (")[0].split(" within")[0]: v for v in evaluate_targets(Results(doc))}


def test_targets_met_and_missed_with_the_points_and_amounts():
    v = evaluate_targets(Results(make_doc(FIGURES)))
    status = [x.status for x in v]
    assert status == ["met", "missed", "met", "missed", "met"]
    uvloop = v[1]
    assert [m.split(":")[0] for m in uvloop.misses] == ["1 KiB x 4 conns", "100 KiB x 4 conns"]
    assert "+10.0%" in uvloop.misses[0] and "11.00 vs 10.00" in uvloop.misses[0]
    assert "x0.750 of C" in v[3].detail and "x0.812" in v[3].detail  # bare Protocol shown too


def test_targets_not_evaluated_when_a_contestant_is_missing():
    figures = {k: f for k, f in FIGURES.items() if k != "trio_service"}
    v = evaluate_targets(Results(make_doc(figures)))
    assert v[0].status == "not evaluated"
    assert v[0].detail == "trio echo (project) was not measured"
    assert v[-1].status == "not evaluated"


def test_summary_has_tables_ratios_machine_and_experiments_note(tmp_path):
    text = summary_markdown(make_doc(FIGURES), tmp_path, ["throughput.png"])
    assert "2 CPUs, Test CPU" in text and "trio 0.35.0" in text and "uvloop 0.23.0" in text
    assert "| trio service | 30.0k (29.3 MiB/s) x0.38 |" in text
    assert "| uvloop service | 11.00 x1.10 ref x2.20 C |" in text
    assert "MISSED" in text and "![throughput.png](throughput.png)" in text
    assert "Not included: not run." in text


def test_experiments_are_rendered_when_present(tmp_path):
    exp_dir = tmp_path / "reports" / "experiments"
    exp_dir.mkdir(parents=True)
    data = {"cpu_bound": [{"mode": "thread", "seconds": 2.0}, {"mode": "process", "seconds": 1.1}]}
    (exp_dir / "results.json").write_text(json.dumps(data))
    (exp_dir / "cpu.png").write_bytes(b"\x89PNG")
    doc = make_doc(FIGURES)
    doc["experiments"] = load_experiments(tmp_path)
    out_dir = tmp_path / "reports" / "bench"
    text = summary_markdown(doc, out_dir)
    assert "| mode | seconds |" in text and "| process | 1.1 |" in text
    assert "(../experiments/cpu.png)" in text
    assert load_experiments(tmp_path / "nowhere")["present"] is False


def test_readme_block_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{README_BEGIN}\nold table\n{README_END}\nafter\n")
    update_readme(readme, readme_block(make_doc(FIGURES)))
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{README_END}\nafter\n")
    assert "old table" not in text and "Quick run of 2026-01-02" in text
    assert "| uvloop service | 60.0k (x0.75) | 11.00 (x1.10) |" in text
    assert "Plots: `reports/bench/throughput.png`" in text
    embedded = readme_block(make_doc(FIGURES), ["throughput.png"], "bench/results")
    assert embedded.endswith("![throughput.png](bench/results/throughput.png)")
    readme.write_text("no markers")
    with pytest.raises(ValueError):
        update_readme(readme, "x")


def test_readme_block_says_where_c_is_no_ceiling():
    assert "no ceiling" not in readme_block(make_doc(FIGURES))
    figures = {**FIGURES, "c_epoll": (50_000.0, 5.0)}  # the uvloop service does x1.30 of C
    block = readme_block(make_doc(figures))
    assert "At 1 KiB (up to x1.30), 100 KiB (up to x1.30) other servers beat the C" in block


def test_results_json_is_strict_json(tmp_path):
    path = tmp_path / "out" / "results.json"
    write_json({"a": math.nan, "b": [1.5, math.inf], "c": {"d": (1, 2)}}, path)

    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=reject) == {
        "a": None,
        "b": [1.5, None],
        "c": {"d": [1, 2]},
    }
