"""Run one sandbox from a process of its own, as whichever user started it, and print the result as JSON.

tests/test_sandbox.py starts it as root and, through setpriv, as an unprivileged user, so attacks on "the parent"
hit this process and not pytest. It loads sandbox.py by path: that module needs only the standard library, so the
driver skips the package imports (pandas) and starts in a fraction of a second.

Usage: python tests/sandbox_driver.py '{"code": "...", "limits": {...}, "isolation": "sandbox"}'
Prints a line `@@started@@` first, then one JSON line: the SandboxResult's fields, or {"exception", "message"}.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import sys
from pathlib import Path

SANDBOX = Path(__file__).resolve().parent.parent / "synthflow" / "stages" / "verifiers" / "sandbox.py"


def main() -> None:
    job = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location("synthflow_sandbox_under_test", SANDBOX)
    assert spec is not None and spec.loader is not None
    sandbox = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sandbox
    spec.loader.exec_module(sandbox)
    known = {f.name for f in dataclasses.fields(sandbox.Limits)}
    limits = sandbox.Limits(**{k: v for k, v in job.get("limits", {}).items() if k in known})
    kwargs = {"files": job.get("files"), "args": job.get("args", []), "limits": limits}
    if "isolation" in inspect.signature(sandbox.run_python).parameters:
        kwargs["isolation"] = job.get("isolation", "sandbox")
    print("@@started@@", flush=True)
    try:
        out = dataclasses.asdict(sandbox.run_python(job["code"], **kwargs))
    except Exception as e:  # noqa: BLE001  (the test reads what went wrong)
        out = {"exception": type(e).__name__, "message": str(e)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
