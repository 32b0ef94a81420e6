#!/usr/bin/env python3
"""One figure of one case in a pairbench report, for the scripts/vs_* measurements, which set it
beside another program's. The case is the one whose name starts with PREFIX; the figure is the
case's FIELD (gbs, gflops, samples_per_s). A report may list more cases than the one measured
(a GPU's case skipped beside the CPU's), so the case is found by name, never by position.
Usage: case_figure.py REPORT PREFIX FIELD. Prints the figure; where no case or several match, or
the one that matches did not run or has no such figure (or 0 of it), one line and exit 1 (2: a
report that cannot be read)."""
import sys

import pbreport


def figure(doc, prefix, field):
    """The FIELD of the one case whose name starts with prefix, or ValueError saying why not."""
    cases = [c for c in doc["pairbench"]["cases"] if c["name"].startswith(prefix)]
    if len(cases) != 1:
        found = ", ".join(c["name"] for c in cases[:3]) + (", ..." if len(cases) > 3 else "")
        raise ValueError(f"{len(cases)} cases named {prefix}... in the report"
                         + (f" ({found})" if cases else "") + ", where one was expected")
    c = cases[0]
    if c["status"] != "ok":
        how = {"skipped": "was skipped", "error": "failed"}.get(c["status"], c["status"])
        raise ValueError(f"{c['name']} {how}: {c.get('message', 'no message')}")
    if isinstance(c.get(field), bool) or not isinstance(c.get(field), (int, float)):
        raise ValueError(f"{c['name']} has no {field}")
    if not c[field] > 0:  # a figure its metric does not count (a copy's GFLOP/s)
        raise ValueError(f"{c['name']}'s {field} is {c[field]}: not a figure it measures")
    return c[field]


USAGE = "usage: case_figure.py REPORT PREFIX FIELD"


def main(argv):
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(USAGE)
        return 0
    if len(argv) != 4:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        doc = pbreport.load(argv[1])
    except pbreport.ReportError as e:
        print(f"case_figure.py: {e}", file=sys.stderr)
        return 2
    try:
        print(figure(doc, argv[2], argv[3]))
    except ValueError as e:
        print(f"case_figure.py: {argv[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    pbreport.run(lambda: main(sys.argv))
