"""`synthflow preview`: a few rows generated and verified through the CLI, every verdict printed, an estimate for a
full round, and nothing written to the store or the Dagster instance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from synthflow.cli import main
from synthflow.generators.python_backend import PythonContext
from tests.test_pipeline import small_spec


def words(ctx: PythonContext) -> pd.DataFrame:
    """The python backend's rows for the verdict test: every third row too short for the rules verifier."""
    return pd.DataFrame(
        {"text": [("ok" if (ctx.block * ctx.n + i) % 3 == 0 else "a long enough sentence") for i in range(ctx.n)]}
    )


def _state(project: Path) -> set[str]:
    """Every file under the project and the session's Dagster home: what a preview must leave as it was."""
    roots = [project, Path(os.environ["DAGSTER_HOME"])]
    return {str(p) for r in roots for p in r.rglob("*") if "__pycache__" not in p.parts}


def test_preview_on_the_smoke_profile_prints_rows_verdicts_and_an_estimate_and_writes_nothing(project):
    spec = small_spec(project)
    prof = project / "resources" / "smoke.yaml"
    old = "  generator:\n    backend: smoke\n"
    prof.write_text(prof.read_text().replace(old, old + "    price: {input_per_mtok: 150, output_per_mtok: 600}\n"))
    before = _state(project)
    res = CliRunner().invoke(
        main,
        ["preview", str(project / "assets" / "math_word_problems.yaml"), "-n", "2", "--profile", "smoke",
         "--project-root", str(project)],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    out = res.output
    print(out)
    assert "#1 " in out and ("ACCEPTED" in out or "REJECTED by" in out)
    # Each candidate shows its verdicts: parse's, or each verifier that saw it, and those that did not run.
    assert "parse: rejected:" in out or "schema: accepted" in out
    assert "estimate for a full round (4 rows wanted" in out
    for line in ("candidates ", "requests ", "tokens ", "time ", "cost ", "stops at "):
        assert f"\n  {line}" in out, line
    cost = next(ln for ln in out.splitlines() if ln.startswith("  cost "))
    assert cost != "  cost        $0.0000 at the profile's prices"  # priced: the estimate has a cost
    assert "nothing was written" in out
    assert _state(project) == before, sorted(_state(project) - before)
    assert not (project / "store").exists()
    del spec


def test_preview_prints_every_verifiers_verdict_with_its_reason(project):
    """The python backend gives controlled rows: the rules verifier rejects the short ones, naming why."""
    (project / "assets" / "data" / "words.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in ["one seed sentence here", "another seed sentence"]) + "\n"
    )
    (project / "assets" / "words.yaml").write_text(
        "name: words\n"
        "seed:\n  source: data/words.jsonl\n  text: text\n  columns:\n    - {name: text, type: string}\n"
        "generate:\n  generator: words\n  prompt: write\n  few_shot: 0\n"
        "  output_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n"
        "  rows_per_round: 10\n  candidate_budget: 20\n"
        "verify:\n  - type: schema\n  - type: rules\n    lengths:\n      text: {min_chars: 5}\n"
        "diversity:\n  enabled: false\n"
    )
    (project / "resources" / "words.yaml").write_text(
        f"store:\n  root: {project / 'store'}\n"
        "generators:\n  words:\n    backend: python\n    model: tests.test_preview:words\n"
        "    price: {input_per_mtok: 1.0, output_per_mtok: 1.0}\n"
    )
    res = CliRunner().invoke(
        main, ["preview", str(project / "assets" / "words.yaml"), "-n", "4", "-p", "words"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    out = res.output
    # Blocks of 4 rows: 2 pass in the first, 3 in the second, of which one is past the quota of 4.
    assert "preview: 8 candidates, 4 accepted" in out, out
    assert "#8 REJECTED by quota" in out
    assert "#1 REJECTED by rules\n  text: ok\n  schema: accepted\n  rules: rejected: text" in out, out
    assert "#2 ACCEPTED\n  text: a long enough sentence\n  schema: accepted\n  rules: accepted" in out, out
    # 5 of 8 passed every verifier (the quota's row too): 10 rows need 16 candidates, within the budget of 20.
    assert "  candidates  16 (expected accepted rows: 10)" in out
    assert "  stops at    rows" in out
    assert not (project / "store").exists()


def test_preview_of_a_bad_spec_names_file_line_and_field(project):
    path = project / "assets" / "math_word_problems.yaml"
    text = path.read_text().replace("  rows_per_round: 12\n", "  rows_per_round: 12\n  budget: {round: {max_usd: 0}}\n")
    path.write_text(text)
    res = CliRunner().invoke(main, ["preview", str(path), "--profile", "smoke", "--project-root", str(project)])
    assert res.exit_code == 2
    line = text.splitlines().index("  budget: {round: {max_usd: 0}}") + 1
    assert f"{path}:{line}: generate.budget.round.max_usd: Input should be greater than 0" in res.output
