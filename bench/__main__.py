"""`python -m bench [NAME ...] [OPTIONS]`: run the benchmarks (all by default), print each table, fail if any
criterion fails. Options after one name go to that benchmark (`python -m bench collapse --d 20 --T 200`)."""

from __future__ import annotations

import importlib
import sys
import time

SUITES = ("cpu_model", "generation", "resume", "diversity", "collapse", "scale")


def main(argv: list[str]) -> int:
    """Names first, then options: `python -m bench collapse --d 20 --T 200` runs collapse.main(["--d", ...])."""
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:split] or list(SUITES), argv[split:]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    if options and len(names) != 1:
        print("options go to one benchmark: name it first (python -m bench collapse --d 20)", file=sys.stderr)
        return 2
    sys.argv = sys.argv[:1]  # suites that read sys.argv themselves see no options
    failed = []
    for name in names:
        print(f"\n=== bench/{name}.py ===", flush=True)
        start = time.perf_counter()
        try:
            suite = importlib.import_module(f"bench.{name}")
            code = suite.main(options) if options else suite.main()
        except SystemExit as e:
            code = e.code
        print(f"--- {name}: {'ok' if not code else 'FAILED'} in {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks with failing criteria: {', '.join(failed)}")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
