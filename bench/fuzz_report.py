"""How the command line answers hostile input: the fuzz cases of tests/fuzz/, counted.

Runs every listed case and the generated ones (the same derandomized draws as the default test
run; `--more` draws each generator's larger count, as the slow tests do) and prints, per verb
and loader: cases, clear errors (exit 2, one line naming the option, field or file), accepted
(where a case allows exit 0), tracebacks, runs that changed a file that was there (changed)
or left files of a refused run (left), other problems (unclear: another exit status, more lines
or a line that does not name the thing), and the totals. Goal: 0 tracebacks, 0 files changed. Cases known to be defects are counted like the
others and listed at the end with their command lines.

    python bench/fuzz_report.py [--more] [--group NAME ...] [--listed-only] [--show-problems]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from fuzz_cases import GENERATED, GROUPS, KNOWN_DEFECTS, LISTED, explore
from fuzz_harness import Case, Outcome, build_fixtures, problems, run_case, work_folder

COLUMNS = ("cases", "clear", "accepted", "tracebacks", "changed", "left", "unclear")


def tally(case: Case, out: Outcome) -> tuple[str, list[str]]:
    """The column a case's outcome counts in, and its problems."""
    found = problems(case, out)
    if out.traceback:
        return "tracebacks", found
    if any(p.startswith("files changed") for p in found):
        return "changed", found
    if any(p.startswith("left behind") for p in found):
        return "left", found
    if found:
        return "unclear", found
    return ("accepted" if out.code == 0 else "clear"), found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--more", action="store_true", help="the slow tests' larger draws")
    parser.add_argument("--group", action="append", default=[], help="only these groups")
    parser.add_argument("--listed-only", action="store_true", help="no generated cases")
    parser.add_argument("--show-problems", action="store_true", help="one line per bad case")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    counts: dict[str, Counter] = defaultdict(Counter)
    bad: list[tuple[Case, Outcome, list[str]]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-fixtures-") as root:
        fixtures = build_fixtures(Path(root))

        def visit(case: Case) -> None:
            if args.group and case.group not in args.group:
                return
            with work_folder() as work:
                out = run_case(case, fixtures, work)
            column, found = tally(case, out)
            counts[case.group]["cases"] += 1
            counts[case.group][column] += 1
            if found:
                bad.append((case, out, found))

        for case in LISTED:
            if not case.slow or args.more:
                visit(case)
        if not args.listed_only:
            for generator in GENERATED:
                explore(
                    generator, generator.slow_examples if args.more else generator.examples, visit
                )
    seconds = time.perf_counter() - start
    _print_table(counts)
    if args.show_problems:
        for case, out, found in bad:
            print(f"  {case.id}: {'; '.join(found)}\n    nettle {' '.join(map(repr, out.argv))}")
    known = [c for c, _, _ in bad if c.id in KNOWN_DEFECTS]
    print(f"{len(known)} of the bad cases are known defects (strict xfails in the tests)")
    total = Counter()
    for row in counts.values():
        total.update(row)
    print(f"{total['cases']} cases in {seconds:.0f} s")
    print(
        f"goal: 0 tracebacks, 0 files changed; now: {total['tracebacks']} tracebacks, "
        f"{total['changed']} files changed ({total['left']} refusals left files behind)"
    )
    return 0


def _print_table(counts: dict[str, Counter]) -> None:
    width = max(len(g) for g in GROUPS)
    print(f"{'verb / loader':<{width}}  " + "  ".join(f"{c:>10}" for c in COLUMNS))
    total: Counter = Counter()
    for group in GROUPS:
        row = counts.get(group)
        if not row:
            continue
        total.update(row)
        print(f"{group:<{width}}  " + "  ".join(f"{row[c]:>10}" for c in COLUMNS))
    print(f"{'total':<{width}}  " + "  ".join(f"{total[c]:>10}" for c in COLUMNS))


if __name__ == "__main__":
    sys.exit(main())
