#!/usr/bin/env python3
"""Reads an Autobahn|Testsuite fuzzingclient report and says how it went.

    autobahn-summary.py REPORT_DIR WSTEST_LOG

A case passes when wstest judged its behaviour OK, NON-STRICT (allowed by
the RFC, not its first choice) or INFORMATIONAL (no right answer), and the
close was not FAILED or UNCLEAN. UNIMPLEMENTED (an extension the server does
not offer) is skipped. A case without a result (the server went away) fails.
Prints "N passed, M failed" (", K skipped" when some were) and then every
failed case; exits 0 when none failed, 1 otherwise, 2 without a report.
"""

import json
import re
import sys
from pathlib import Path

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
BAD_CLOSE = {"FAILED", "UNCLEAN"}


def case_order(case):
    return [int(part) for part in case.split(".")]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report, log = Path(sys.argv[1]) / "index.json", Path(sys.argv[2])
    planned = re.search(r"will run (\d+) test cases", log.read_text(errors="replace")) if log.exists() else None
    if not report.exists():
        print(f"autobahn: no report at {report}", file=sys.stderr)
        return 2
    results = {}
    for cases in json.loads(report.read_text()).values():
        results.update(cases)
    if not results:
        print(f"autobahn: the report at {report} holds no case: nothing was tested", file=sys.stderr)
        return 2
    passed, failed, skipped = 0, [], 0
    for case in sorted(results, key=case_order):
        behaviour, close = results[case].get("behavior"), results[case].get("behaviorClose")
        if behaviour == "UNIMPLEMENTED":
            skipped += 1
        elif behaviour in PASSING and close not in BAD_CLOSE:
            passed += 1
        else:
            failed.append(f"  {case}: {behaviour}, close {close}")
    missing = int(planned.group(1)) - len(results) if planned else 0
    print(f"{passed} passed, {len(failed) + max(missing, 0)} failed" + (f", {skipped} skipped" if skipped else ""))
    for failure in failed:
        print(failure)
    if missing > 0:
        print(f"  {missing} cases have no result (the server stopped answering?)")
    return 1 if failed or missing > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
