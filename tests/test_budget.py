"""Token and money budgets (generate.budget, profile prices): validation, the round's stop and its reason, the
pipeline's total across rounds through a real Dagster instance, and the running cost on the progress reporter.

The generator is the real smoke model (transformers on CPU): its token counts are what it reports, and the tests
read them back from the candidates table instead of assuming any, so no double is needed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest

import synthflow
from synthflow.dagster.assets import PipelineKeys
from synthflow.profiles import ProfileError, load_profile
from synthflow.progress import listening, note_of, reporter
from synthflow.spec import Price, SpecError, load_spec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.budget import MAX_TOKENS, MAX_USD, PIPELINE_BUDGET_CHECK, PIPELINE_MAX_USD, SPEND_META
from synthflow.stages.seed import load_seed
from synthflow.stages.session import RoundReads, RoundSession
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.test_pipeline import small_spec

BATCH = 4
PRICE = Price(input_per_mtok=1000.0, output_per_mtok=2000.0)  # dear, so a few candidates cost dollars


def _budget_spec(project: Path, budget: str):
    """Many rows wanted (the smoke model's random text rarely passes), small batches, short completions, and
    `budget` as generate.budget: only a budget limit can end the round before its 60 candidates."""
    return small_spec(
        project,
        **{
            "rows_per_round: 12": "rows_per_round: 50",
            "candidate_budget: 36": f"candidate_budget: 60\n  budget: {budget}",
            "batch_size: 12": f"batch_size: {BATCH}",
            "max_tokens: 400": "max_tokens: 24",
        },
    )


def _light_round(spec, generator, prices=None, progress=None):
    """Round 1 in light mode: nothing stored, the seed as the real data."""
    seed = load_seed(spec.seed, spec.base_dir)
    store = Store(f"memory://budget-{uuid.uuid4().hex}")
    session = RoundSession(spec, store, spec.name, ["r1"], persist=False, checks=None, plots=False, keep_cache=False)
    reads = RoundReads(seed, real_rows(seed, [c.name for c in spec.seed.columns], 0), None, None)
    return session.run(reads, generators={"generator": lambda: generator}, prices=prices, progress=progress)


def _batch_tokens(cands) -> list[int]:
    tokens = (cands["prompt_tokens"] + cands["completion_tokens"]).tolist()
    return [sum(tokens[i : i + BATCH]) for i in range(0, len(tokens), BATCH)]


def test_the_round_stops_at_max_tokens_and_says_so(project, smoke_generator):
    spec = _budget_spec(project, "{round: {max_tokens: 2500}}")
    result = _light_round(spec, smoke_generator)
    cov, cands = result.coverage, result.output.candidates
    batches = _batch_tokens(cands)
    assert cov["stop_reason"] == MAX_TOKENS, cov["stop_reason"]
    assert len(cands) < 60 and len(batches) >= 2
    # Charged with what the generator reported; stopped after the first batch that reached the limit.
    assert cov["round_tokens"] == sum(batches) == cov["pipeline_tokens"]
    assert sum(batches[:-1]) < 2500 <= sum(batches)
    assert cov["round_cost_usd"] == 0.0  # no price given: a local model
    assert cov["budget"] == {"round_max_tokens": 2500}


def test_the_round_stops_at_max_usd_at_the_profile_price_and_reports_the_cost(project, smoke_generator):
    spec = _budget_spec(project, "{round: {max_usd: 2.0}}")
    seen: list[tuple[str, int, int]] = []
    with listening(lambda label, done, total: seen.append((note_of(label), done, total))):
        result = _light_round(
            spec, smoke_generator, prices={"generator": PRICE}, progress=reporter("budget test", lambda m: None)
        )
    cov, cands = result.coverage, result.output.candidates
    costs = [
        PRICE.cost(int(p), int(c))
        for p, c in zip(cands["prompt_tokens"], cands["completion_tokens"], strict=True)
    ]
    per_batch = [sum(costs[i : i + BATCH]) for i in range(0, len(costs), BATCH)]
    assert cov["stop_reason"] == MAX_USD
    assert sum(per_batch[:-1]) < 2.0 <= sum(per_batch)
    assert cov["round_cost_usd"] == pytest.approx(sum(costs), abs=1e-5)
    assert cov["cost_by_generator"]["generator"]["usd"] == pytest.approx(sum(costs), abs=1e-5)
    # The progress bar's listeners saw the running cost after each batch.
    notes = [n for n, _, _ in seen if n]
    assert notes and notes[-1].startswith(f"{cov['round_tokens']:,} tok $")


def test_prices_and_budgets_are_validated_with_file_line_and_field(tmp_path, project):
    (tmp_path / "resources").mkdir()
    prof = tmp_path / "resources" / "priced.yaml"
    prof.write_text(
        "generators:\n  generator:\n    backend: smoke\n    price:\n      input_per_mtok: -1\n"
        "      output_per_mtok: 0.6\n      cached_per_mtok: 0.1\n"
    )
    with pytest.raises(ProfileError) as e:
        load_profile("priced", tmp_path)
    problems = {(line, field): msg for line, field, msg in e.value.problems}
    assert "greater than or equal to 0" in problems[(5, "generators.generator.price.input_per_mtok")]
    assert (7, "generators.generator.price.cached_per_mtok") in problems
    assert str(prof) in str(e.value)
    # The earlier per-1k form still reads, converted; a bad value in it names its own line; both forms at once: no.
    prof.write_text("generators:\n  generator:\n    backend: smoke\n    prices:\n      prompt_per_1k: 0.1\n")
    assert load_profile("priced", tmp_path).generators["generator"].price == Price(input_per_mtok=100.0)
    prof.write_text("generators:\n  generator:\n    backend: smoke\n    prices:\n      completion_per_1k: -2\n")
    with pytest.raises(ProfileError) as e:
        load_profile("priced", tmp_path)
    [(line, field, msg)] = e.value.problems
    assert (line, field) == (5, "generators.generator.prices.completion_per_1k") and "greater than" in msg
    prof.write_text(
        "generators:\n  generator:\n    backend: smoke\n    price: {input_per_mtok: 1}\n"
        "    prices: {prompt_per_1k: 0.1}\n"
    )
    with pytest.raises(ProfileError) as e:
        load_profile("priced", tmp_path)
    assert "not both" in str(e.value)
    prof.write_text("generators:\n  generator:\n    backend: smoke\n    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n")
    assert load_profile("priced", tmp_path).generators["generator"].price == Price(
        input_per_mtok=0.15, output_per_mtok=0.6
    )
    assert load_profile("smoke", project).generators["judge"].price == Price()  # 0 by default

    path = project / "assets" / "math_word_problems.yaml"
    text = path.read_text().replace(
        "  candidate_budget: 36\n", "  candidate_budget: 36\n  budget:\n    round: {max_usd: -1}\n    pipline: {}\n"
    )
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    lines = text.splitlines()
    problems = {field: (line, msg) for line, field, msg in e.value.problems}
    assert problems["generate.budget.round.max_usd"][0] == lines.index("    round: {max_usd: -1}") + 1
    assert "greater than 0" in problems["generate.budget.round.max_usd"][1]
    assert problems["generate.budget.pipline"] == (
        lines.index("    pipline: {}") + 1,
        "unknown key (not part of the spec; check the spelling)",
    )


def _priced_smoke_profile(project: Path) -> None:
    path = project / "resources" / "smoke.yaml"
    text = path.read_text()
    old = "  generator:\n    backend: smoke\n"
    assert old in text
    path.write_text(
        text.replace(old, old + f"    price: {{input_per_mtok: {PRICE.input_per_mtok}, output_per_mtok: {PRICE.output_per_mtok}}}\n")
    )


@pytest.mark.slow
def test_the_pipeline_budget_adds_up_recorded_rounds_and_its_check_fails_when_passed(project):
    """Round 1 stops at its own max_usd within the pipeline's; round 2 reads round 1's recorded cost, stops at the
    pipeline's max_usd, and the pipeline_budget check on p/coverage fails. The second run leaves the seed alone."""
    _priced_smoke_profile(project)
    spec = _budget_spec(project, "{round: {max_usd: 6.0}, pipeline: {max_usd: 9.0}}")
    keys = PipelineKeys(spec, ())
    defs = synthflow.build_pipeline_defs(spec, profile="smoke", project_root=project)
    round_keys = [keys.key(n) for n in ("candidates", "verified", "coverage", "training_set")]
    store = Store(load_profile("smoke", project).store_root())
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        checks, covs = [], []
        for part in ("2026-01-01", "2026-01-02"):
            res = materialize(defs, instance, round_keys, part, raise_on_error=False)
            assert res.success, failure_text(res)
            checks.append({e.check_name: e for e in res.get_asset_check_evaluations()})
            covs.append(store.read(spec.name, "coverage", part).iloc[0])
            mats = {e.asset_key: e.materialization for e in res.get_asset_materialization_events()}
            assert keys.key("seed") not in mats  # the second round's run did not re-run the seed either
            meta = mats[keys.key("coverage")].metadata
            assert meta["pipeline_cost_usd"].value == pytest.approx(covs[-1]["pipeline_cost_usd"])
            assert mats[keys.key("candidates")].metadata["round_cost_usd"].value == covs[-1]["round_cost_usd"]
        first, second = covs
        assert first["stop_reason"] == MAX_USD and 6.0 <= first["round_cost_usd"] <= 9.0
        assert checks[0][PIPELINE_BUDGET_CHECK].passed
        # Round 2 starts from what round 1 recorded in its coverage version, not from a recomputation.
        rec = store.latest(spec.name, "coverage", "2026-01-01")
        assert rec.meta[SPEND_META]["usd"] == pytest.approx(first["round_cost_usd"])
        assert second["stop_reason"] == PIPELINE_MAX_USD
        assert second["pipeline_cost_usd"] == pytest.approx(first["round_cost_usd"] + second["round_cost_usd"])
        assert second["round_cost_usd"] < 6.0 < 9.0 < second["pipeline_cost_usd"]
        failed = checks[1][PIPELINE_BUDGET_CHECK]
        assert not failed.passed
        assert "> max_usd $9" in failed.metadata["over"].value
        seeds = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=keys.key("seed")), limit=10)
        assert len(seeds.records) == 1


def test_llm_judge_calls_count_towards_the_round_budget_at_the_judges_price(project, smoke_generator):
    """The python backend's rows cost no tokens; the smoke model judging them does, at the judge's own price, and
    those tokens alone reach the round's max_tokens."""
    from synthflow.generators.python_backend import PythonGenerator

    (project / "assets" / "data" / "words.jsonl").write_text('{"text": "one seed sentence"}\n')
    path = project / "assets" / "words.yaml"
    path.write_text(
        "name: words\n"
        "seed:\n  source: data/words.jsonl\n  text: text\n  columns:\n    - {name: text, type: string}\n"
        "generate:\n  generator: words\n  prompt: write\n  few_shot: 0\n"
        "  output_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n"
        "  rows_per_round: 8\n  candidate_budget: 16\n  budget: {round: {max_tokens: 500}}\n"
        "verify:\n  - type: llm_judge\n    judge: judge\n    max_tokens: 16\n"
        "diversity:\n  enabled: false\n"
    )
    spec = load_spec(path)
    seed = load_seed(spec.seed, spec.base_dir)
    session = RoundSession(
        spec, Store(f"memory://budget-{uuid.uuid4().hex}"), spec.name, ["r1"], persist=False, plots=False,
        keep_cache=False,
    )  # fmt: skip
    words = PythonGenerator("tests.test_preview:words")
    result = session.run(
        RoundReads(seed, real_rows(seed, ["text"], 0), None, None),
        generators={"words": lambda: words, "judge": lambda: smoke_generator},
        prices={"judge": PRICE},
    )
    cov = result.coverage
    judge = cov["cost_by_generator"]["judge"]
    assert judge["prompt_tokens"] > 0 and judge["completion_tokens"] > 0
    assert cov["cost_by_generator"]["words"]["usd"] == 0.0
    assert cov["round_tokens"] == judge["prompt_tokens"] + judge["completion_tokens"] >= 500
    assert cov["round_cost_usd"] == pytest.approx(PRICE.cost(judge["prompt_tokens"], judge["completion_tokens"]), abs=1e-5)
    assert cov["stop_reason"] == MAX_TOKENS and len(result.output.candidates) == 8  # one block, then the stop


def test_a_column_dag_charges_each_llm_column_at_its_own_generators_price(tmp_path, smoke_generator):
    """`question` is written by the default generator and `answer` by the judge (both the smoke model here): each
    column's reported tokens are charged to its own generator, at that generator's price."""
    from synthflow.spec import parse_spec
    from synthflow.stages.budget import BudgetMeter
    from synthflow.stages.cache import ResultCache
    from synthflow.stages.round import RoundInputs, run_round
    from tests.test_columns import LLM_COLUMNS, spec_text

    spec = parse_spec(spec_text(LLM_COLUMNS), str(tmp_path / "s.yaml"))
    judge_price = Price(input_per_mtok=5.0, output_per_mtok=50.0)
    meter = BudgetMeter(spec, {"generator": PRICE, "judge": judge_price})
    seed = load_seed(spec.seed, spec.base_dir)
    out = run_round(
        RoundInputs(
            spec=spec,
            round_index=1,
            seed=seed,
            real=real_rows(seed, [c.name for c in spec.seed.columns], 0),
            previous=None,
            generator=smoke_generator,
            cache=ResultCache(Store(str(tmp_path / "store")), spec.name),
            generators={"judge": smoke_generator},
            meter=meter,
        )
    )
    cols, by_gen = out.coverage["columns"], out.coverage["cost_by_generator"]
    for column, generator, price in (("question", "generator", PRICE), ("answer", "judge", judge_price)):
        tokens = (cols[column]["prompt_tokens"], cols[column]["completion_tokens"])
        assert tokens[0] > 0
        assert (by_gen[generator]["prompt_tokens"], by_gen[generator]["completion_tokens"]) == tokens
        assert by_gen[generator]["usd"] == pytest.approx(price.cost(*tokens), abs=1e-5)
    assert out.coverage["round_tokens"] == sum(
        c.get("prompt_tokens", 0) + c.get("completion_tokens", 0) for c in cols.values()
    )
