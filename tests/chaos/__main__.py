"""``python -m tests.chaos [--events 1000000] [--json]``: the full chaos run, as a table."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.chaos.driver import Chaos, ChaosPlan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    defaults = ChaosPlan()
    for name, value in defaults.__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    plan = ChaosPlan(**{k: getattr(args, k) for k in defaults.__dict__})
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="agentledger-chaos-"))
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    report = Chaos(plan, workdir, say=say).run()
    rows = [("faults injected", report["faults_injected"]),
            ("events produced", report["events_produced"]),
            ("events landed (distinct)", report["events_distinct"]),
            ("events lost", report["events_lost"]),
            ("duplicates visible (FINAL)", report["duplicates_visible"]),
            ("bad messages", report["bad_messages"]),
            ("bad messages accounted", report["bad_accounted"])]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        say(f"{label:<{width}}  {value:>12,}")
    if args.json:
        print(json.dumps(report))
    ok = (report["events_lost"] == 0 and report["duplicates_visible"] == 0
          and report["bad_accounted"] == report["bad_messages"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
