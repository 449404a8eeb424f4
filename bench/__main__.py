"""``python -m bench``: run the benchmark and write reports/bench/ (see ``--help``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness import MODES, run_bench, run_experiments, write_json
from bench.report import Results, evaluate_targets, summary_markdown
from bench.servers import CONTESTANTS, Placement, choose_placement
from services.common.logs import log_event, setup_logging

logger = logging.getLogger("bench")


def _cpus(text: str) -> frozenset[int]:
    try:
        return frozenset(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated CPU list") from None


def _ports(text: str) -> dict[str, int]:
    try:
        trio_port, uvloop_port = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not TRIO_PORT,UVLOOP_PORT") from None
    return {"trio": trio_port, "uvloop": uvloop_port}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench", description="Side-by-side echo server benchmark; writes OUT/."
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--target", choices=("local", "compose"), default="local")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        help="comma-separated contestant keys: " + ", ".join(c.key for c in CONTESTANTS),
    )
    parser.add_argument("--server-cpus", type=_cpus, help="e.g. 0 (default: first CPU)")
    parser.add_argument("--client-cpus", type=_cpus, help="e.g. 1 (default: second CPU)")
    parser.add_argument(
        "--compose-ports",
        type=_ports,
        default={"trio": 9001, "uvloop": 9002},
        help="published ports of the trio and uvloop services (default 9001,9002)",
    )
    parser.add_argument(
        "--experiments",
        choices=("auto", "run", "include", "skip"),
        default="include",
        help="worker experiments: run first always (run), only when their results are "
        "missing (auto), just include existing results (include, default) or leave out (skip)",
    )
    parser.add_argument("--repeats", type=int, help="rounds per grid point (ABBA; default: mode's)")
    parser.add_argument("--duration-s", type=float, help="measured window per run, s")
    parser.add_argument("--warmup-s", type=float, help="warm-up per run, s")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    setup_logging("info")
    mode = MODES[args.mode]
    overrides = {
        "repeats": args.repeats,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
    }
    for name, value in overrides.items():
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    mode = dataclasses.replace(mode, **{k: v for k, v in overrides.items() if v is not None})
    placement: Placement | None = None
    if args.server_cpus or args.client_cpus:
        placement = choose_placement(args.server_cpus, args.client_cpus)
    note = run_experiments(args.experiments)
    results = run_bench(
        mode,
        experiments=args.experiments != "skip",
        notes=[note] if note else [],
        target=args.target,
        out_dir=args.out,
        only=args.only,
        placement=placement,
        compose_ports=args.compose_ports,
    )
    results["targets"] = [v.to_json() for v in evaluate_targets(Results(results))]
    write_json(results, args.out / "results.json")
    plots: list[str] = []
    if not args.no_plots:
        from bench.plots import write_plots  # noqa: PLC0415 - matplotlib is slow to import

        plots = write_plots(results, args.out)
    (args.out / "summary.md").write_text(summary_markdown(results, args.out, plots))
    for v in results["targets"]:
        log_event(logger, "target", name=v["target"], status=v["status"])
    log_event(logger, "bench_done", out=str(args.out), elapsed_s=results["meta"]["elapsed_s"])
    measured = {c["contestant"] for c in results["cells"]}
    if not measured:
        print("bench: error: no contestant could be measured (see notes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
