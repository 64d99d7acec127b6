"""`python -m bench [NAME ...]`: run the benchmarks (all by default), print each table, fail if any criterion fails."""

from __future__ import annotations

import importlib
import sys
import time

SUITES = ("cpu_model", "generation", "resume", "diversity", "collapse", "scale")


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
    # Each suite's main() parses its own options from sys.argv; run them with their defaults.
    sys.argv = sys.argv[:1]
    failed = []
    for name in names:
        print(f"\n=== bench/{name}.py ===", flush=True)
        start = time.perf_counter()
        try:
            code = importlib.import_module(f"bench.{name}").main()
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
