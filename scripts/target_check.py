"""Issue 4's target, checked on benchmark folders: the gain of a strategy over `random` (mean of 5, 10
and 20 %), whether any ratio is resolvably below random, and the 20 % / full-label Dice fraction.

    python scripts/target_check.py docs/results/*_nested [--strategy kmedian[,ca,...]] [--json] [--figure F.png]

Default strategy: `coldseg.DEFAULT_STRATEGY`; several, separated by commas, give one row per strategy
and folder (grouped by strategy). Markdown table on stdout, or one JSON object per row with --json.
Folders without runs of a strategy are reported on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coldseg import DEFAULT_STRATEGY
from coldseg.bench.target import check_folder, markdown, plot_checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--strategy", default=DEFAULT_STRATEGY, help="one strategy, or several separated by commas")
    ap.add_argument("--ratios", default="5,10,20")
    ap.add_argument("--json", action="store_true", help="one JSON object per folder instead of a table")
    ap.add_argument("--figure", type=Path, default=None,
                    help="also write a forest plot (PNG): one panel per dataset, one row per strategy")
    args = ap.parse_args(argv)
    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        ap.error(f"--ratios {args.ratios!r}: give percentages separated by commas, e.g. 5,10,20")
    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    if not strategies:
        ap.error("--strategy: give at least one strategy name")
    checks = []
    for strategy in strategies:
        for folder in args.folders:
            try:
                checks.append(check_folder(folder, strategy, ratios))
            except (ValueError, OSError) as e:
                print(f"skipped: {e}", file=sys.stderr)
    if args.json:
        for c in checks:
            print(json.dumps(c.as_dict(), default=float))
    elif checks:
        print(markdown(checks))
    if args.figure and checks:
        print(f"figure: {plot_checks(args.figure, checks)}", file=sys.stderr)
    return 0 if checks else 1


if __name__ == "__main__":
    sys.exit(main())
