"""bench.harness run records and summaries when runs fail, and CPU placement.

A run that fails before its measured window (nothing listening) must still give
a record with every figure, NaN where unknown, so the cell summary and
results.json are written after minutes of benchmarking instead of a KeyError.
"""

from __future__ import annotations

import json
import math
import os

from bench.harness import SUMMARY_FIGURES, run_record, summarize_cell, write_json
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.servers import choose_placement
from bench.stats import LogHistogram
from services.common.ports import free_port

# Keys every record has, whatever happened to the run.
ALWAYS = {"server_cpu_s", "server_busy", "cpu_us_per_req", "other_load", "steal", "req_per_s"}


def failed_before_window() -> LoadResult:
    """A real failed run: nothing listens on the port, so no client ever connects."""
    result = run_load(LoadSpec("127.0.0.1", free_port(), 1024, 2, 0.05, 0.2))
    assert not result.ok and result.window_s == 0.0 and result.cpu_ticks == {}
    return result


def good_run() -> LoadResult:
    hist = LogHistogram()
    hist.add_many([40_000, 50_000, 60_000])
    return LoadResult(
        LoadSpec("127.0.0.1", 1, 1024, 1, 0.0, 1.0),
        requests=3,
        window_s=1.0,
        histogram=hist,
        cpu_ticks={"server": 10, "proxy": 4, "sys_busy": 30, "sys_steal": 0},
        client_cpu_s=0.1,
    )


def test_failed_run_record_has_every_key_as_nan() -> None:
    rec = run_record(failed_before_window(), 0, 0, ["server", "proxy"])
    assert ALWAYS | {"proxy_cpu_s", "proxy_busy", "proxy_cpu_us_per_req"} <= rec.keys()
    for key in ALWAYS | {"proxy_cpu_us_per_req"}:
        assert math.isnan(rec[key]), key
    assert rec["errors"]


def test_summary_skips_failed_runs_and_json_is_written(tmp_path) -> None:
    samplers = ["server", "proxy"]
    runs = [
        run_record(good_run(), 0, 0, samplers),
        run_record(failed_before_window(), 1, 0, samplers),
    ]
    assert runs[0].keys() == runs[1].keys()
    summary = summarize_cell(runs)
    assert set(SUMMARY_FIGURES) <= summary.keys()
    assert summary["req_per_s"]["n"] == 1 and summary["req_per_s"]["median"] == 3.0
    assert summary["server_busy"]["median"] == 0.1  # 10 ticks of 100/s in 1 s
    assert summary["other_load"]["n"] == 1
    # Every run failed: still a summary, with no values.
    assert summarize_cell(runs[1:])["cpu_us_per_req"]["n"] == 0
    # Records read back from results.json (NaN written as null) summarise the same way.
    path = tmp_path / "results.json"
    write_json({"cells": [{"runs": runs, "summary": summary}]}, path)
    loaded = json.loads(path.read_text())["cells"][0]["runs"]
    assert loaded[1]["server_busy"] is None
    assert summarize_cell(loaded)["req_per_s"]["n"] == 1


def test_placement_uses_the_cpus_this_process_may_use() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    placement = choose_placement()
    if len(allowed) < 2:
        assert placement.server is None and placement.client is None
        return
    assert placement.server == frozenset({allowed[0]})
    assert placement.client == frozenset({allowed[1]})
