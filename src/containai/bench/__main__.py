"""``python -m containai.bench``: measure ContainAI's overheads against their floors, in one run.

    python -m containai.bench                      # every figure, 3 repetitions, full sizes
    python -m containai.bench --quick --json r.json   # one repetition, small sizes (what CI runs)
    python -m containai.bench --only launch,broker --plots docs/benchmarks

Progress goes to stderr, the table to stdout. Everything the run creates carries
``containai-bench.run=<id>`` and is removed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from containai.bench import broker, egress, launch, memory, terminal, workspace
from containai.bench.context import BenchRun
from containai.bench.figures import Figure, Machine, Results, parse_results
from containai.bench.report import render_json, render_results, write_plots

Measure = Callable[[BenchRun], list[Figure]]
FAMILIES: dict[str, Measure] = {
    "version": launch.version,
    "broker": broker.redemptions,
    "launch": launch.launch,
    "workspace": workspace.setup,
    "commit": workspace.commit,
    "egress": egress.throughput,
    "memory": memory.footprint,
    "connect": terminal.connect,
    "concurrent": launch.concurrent,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m containai.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, small sizes (CI)")
    parser.add_argument("--repeat", type=int, help="repetitions of each figure (default 3; 1 with --quick)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"only these families: {', '.join(FAMILIES)}")
    parser.add_argument(
        "--runtime", choices=["docker", "podman"], help="the engine (default: as containai picks)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the results as Markdown")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots (needs containai[bench])")
    parser.add_argument(
        "--from-json", type=Path, metavar="PATH", help="measure nothing: render the results of a past run"
    )
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(FAMILIES)
        if unknown:
            parser.error(
                f"unknown figure families: {', '.join(sorted(unknown))}; known: {', '.join(FAMILIES)}"
            )
    return args


def machine(run: BenchRun) -> Machine:
    version = run.client.version()
    components = [c.get("Name", "") for c in version.get("Components", [])]
    engine = "podman" if any("podman" in name.lower() for name in components) else "docker"
    return Machine(
        nproc=os.cpu_count() or 0,
        memory_mib=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20,
        kernel=platform.release(),
        engine=engine,
        engine_version=str(version.get("Version", "?")),
        python=platform.python_version(),
    )


def publish(args: argparse.Namespace, results: Results) -> int:
    """The table on stdout; the JSON, Markdown and plots where asked. 1 when anything failed."""
    text = render_results(results)
    sys.stdout.write(text)
    if args.json:
        args.json.write_text(render_json(results), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.plots:
        try:
            for path in write_plots(results, args.plots):
                print(f"containai-bench: wrote {path}", file=sys.stderr)
        except ImportError:
            print("containai-bench: no plots: pip install 'containai[bench]' (matplotlib)", file=sys.stderr)
            return 1
    return 1 if results.failures else 0


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return publish(args, parse_results(json.loads(args.from_json.read_text(encoding="utf-8"))))
    repeat = args.repeat or (1 if args.quick else 3)
    families = args.only.split(",") if args.only else list(FAMILIES)
    command = shlex.join(["python", "-m", "containai.bench", *(sys.argv[1:] if argv is None else argv)])
    signal.signal(signal.SIGTERM, _interrupt)  # cleanup runs on SIGTERM as on Ctrl-C
    started = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    run = BenchRun.create(runtime=args.runtime, repeat=repeat, quick=args.quick)
    print(f"containai-bench: run {run.run_id} on {run.base_url}, label {run.scope}", file=sys.stderr)
    figures: list[Figure] = []
    failures: list[str] = []
    try:
        host = machine(run)
        for name in families:
            began = time.perf_counter()
            print(f"containai-bench: {name} ...", file=sys.stderr, flush=True)
            try:
                measured = FAMILIES[name](run)
            except Exception as error:  # one family failing must not lose the others' numbers
                traceback.print_exc(file=sys.stderr)
                failures.append(f"{name}: {type(error).__name__}: {str(error)[-400:]}")
                continue
            figures += measured
            print(f"containai-bench: {name} done in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    except KeyboardInterrupt:
        print("containai-bench: interrupted; removing what this run created", file=sys.stderr)
        left = run.cleanup()
        for line in left:
            print(f"containai-bench: left behind: {line}", file=sys.stderr)
        return 130
    left = run.cleanup()
    failures += [f"cleanup: {line}" for line in left]
    results = Results(
        run_id=run.run_id,
        started=started,
        seconds=time.perf_counter() - start,
        machine=host,
        command=command,
        repeat=repeat,
        quick=args.quick,
        figures=tuple(figures),
        failures=tuple(failures),
    )
    return publish(args, results)


if __name__ == "__main__":
    sys.exit(main())
