"""python -m tests.storm --operations 100000: a long storm; writes its figures to RELIABILITY.md.

Run from the repository root (the servers it starts import `reservations` the same way the
command does)."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from tests.storm.cluster import PrivatePostgres
from tests.storm.nemesis import FAULT_KINDS, PGBOUNCER_FAULTS, REPLICA_FAULTS
from tests.storm.report import render
from tests.storm.resettle import resettle
from tests.storm.run import StormResult, run_storm
from tests.storm.workload import StormConfig

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.storm", description=__doc__)
    parser.add_argument("--operations", type=int, default=None, help="stop after this many")
    parser.add_argument("--duration", type=float, default=None, help="or after this many s")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=15.0, help="seconds")
    parser.add_argument("--crash-after-commit", default="0.002", help="probability or 'off'")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument(
        "--no-replica",
        action="store_true",
        help="no streaming replica (and none of its faults): every read is the primary's",
    )
    parser.add_argument(
        "--no-pgbouncer",
        action="store_true",
        help="no PgBouncer (and none of its faults): the API reaches PostgreSQL directly",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and history here")
    parser.add_argument("--note", default="", help="a paragraph to put under the title")
    parser.add_argument(
        "--render-from",
        type=Path,
        default=None,
        help="write the report again from a kept history.jsonl, running nothing",
    )
    parser.add_argument(
        "--recheck",
        type=Path,
        default=None,
        help="a directory kept with --keep: start its PostgreSQL again, run the checker over "
        "its history and database, and write the report",
    )
    parser.add_argument(
        "--resettle",
        type=Path,
        default=None,
        help="a directory kept with --keep: settle the unknown outcomes it left, check again "
        "and write the report (tests/storm/resettle.py)",
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "RELIABILITY.md", help="'-' for stdout only"
    )
    args = parser.parse_args(argv)
    if args.resettle is not None:
        kept = resettle(args.resettle)
        print(json.dumps(kept.figures, indent=2))
        if kept.verdict.violations:
            print(kept.verdict.details(), file=sys.stderr)
        if str(args.output) != "-":
            args.output.write_text(render(kept, kept.figures["command"], note=args.note))
            print(f"wrote {args.output}")
        return 1 if kept.verdict.violations or kept.verdict.unsettled else 0
    if args.recheck is not None:
        return recheck(args.recheck, args.output, args.note)
    if args.render_from is not None:
        kept = StormResult.load(args.render_from)
        args.output.write_text(render(kept, kept.figures["command"], note=args.note))
        print(f"wrote {args.output}")
        return 0
    if args.operations is None and args.duration is None:
        parser.error("give --operations or --duration")
    faults = tuple(
        f
        for f in FAULT_KINDS
        if not (args.no_replica and f in REPLICA_FAULTS)
        and not (args.no_pgbouncer and f in PGBOUNCER_FAULTS)
    )
    config = StormConfig(
        clients=args.clients,
        duration=args.duration,
        operations=args.operations,
        seed=args.seed,
        fault_every=args.fault_every,
        faults=faults,
        replica=not args.no_replica,
        pgbouncer=not args.no_pgbouncer,
        days=args.days,
        crash_after_commit=None if args.crash_after_commit == "off" else args.crash_after_commit,
    )
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="rsv-storm-"))
    try:
        result = run_storm(config, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    command = "python -m tests.storm " + " ".join(
        shlex.quote(a) for a in _without_note(argv or sys.argv[1:])
    )
    result.figures["command"] = command
    if args.keep:
        result.dump(workdir / "history.jsonl")
    print(json.dumps(result.figures, indent=2))
    if result.verdict.violations:
        print(result.verdict.details(), file=sys.stderr)
    if str(args.output) != "-":
        args.output.write_text(render(result, command, note=args.note))
        print(f"wrote {args.output}")
    return 1 if result.verdict.violations or result.verdict.unsettled else 0


def _without_note(argv: list[str]) -> list[str]:
    """The command as run, less the --note text (it is in the report already)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


def recheck(workdir: Path, output: Path, note: str) -> int:
    kept = StormResult.load(workdir / "history.jsonl")
    postgres = PrivatePostgres.reopen(workdir / "pg")
    postgres.start()
    try:
        kept.recheck(postgres.url("storm"))
    finally:
        postgres.stop()
    kept.dump(workdir / "history.jsonl")
    print(json.dumps(kept.figures["checker"], indent=2))
    if kept.verdict.violations:
        print(kept.verdict.details(), file=sys.stderr)
    if str(output) != "-":
        output.write_text(render(kept, kept.figures["command"], note=note))
        print(f"wrote {output}")
    return 1 if kept.verdict.violations or kept.verdict.unsettled else 0


if __name__ == "__main__":
    sys.exit(main())
