"""The collapse early warning: its signals and trend rule, validated on the collapse study's Gaussian arms
(fires on `replace` within a few rounds, quiet on `accumulate` over 30), and the blocking check through a real
Dagster instance on a small text pipeline whose python-backend generator narrows under `replace`."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

import synthflow
from synthflow.collapse.loop import LoopConfig
from synthflow.collapse.warning import watch_loop
from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys
from synthflow.spec import load_spec
from synthflow.stages.diversity import collapse_warning as cw
from synthflow.stages.session import FAILED_REASONS, failed_checks
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize


def _records(values: dict[str, list[float]]) -> list[dict]:
    n = len(next(iter(values.values())))
    return [{"round": r + 1, **{cw.key(s): v[r] for s, v in values.items()}} for r in range(n)]


def test_trend_fires_only_on_a_fall_below_the_seed():
    falling = _records({"vendi": [0.95, 0.9, 0.8, 0.72, 0.65]})
    passed, meta = cw.check(falling, window=5, min_decline=0.15)
    assert not passed and meta["narrowing"] == "vendi"
    assert "vendi 0.950, 0.900, 0.800, 0.720, 0.650 (rounds 1-5" in meta["reason"]
    # The same fall while still as varied as the seed: not collapse.
    high = _records({"vendi": [1.5, 1.4, 1.3, 1.2, 1.1]})
    assert cw.check(high, window=5, min_decline=0.15)[0]
    # Low but flat (a generator that was always narrower than its seed) and noisy: no trend, no warning.
    flat = _records({"vendi": [0.6, 0.62, 0.59, 0.61, 0.6], "spread": [0.9, 0.85, 0.92, 0.88, 0.9]})
    assert cw.check(flat, window=5, min_decline=0.15)[0]
    # Too few rounds to judge; a signal with a gap is left out.
    passed, meta = cw.check(falling[:4], window=5, min_decline=0.15)
    assert passed and "nothing to judge yet" in meta["note"]
    gap = [dict(r) for r in falling]
    gap[2][cw.key("vendi")] = float("nan")
    assert cw.check(gap, window=5, min_decline=0.15)[1]["narrowing"] == "none"


def test_spec_option_defaults_off_and_needs_embeddings(tmp_path):
    body = (
        "name: x\nseed: {source: s.jsonl, text: t, columns: [{name: t, type: string}]}\n"
        "generate: {prompt: p, output_schema: {type: object, properties: {t: {type: string}}, required: [t]}}\n"
    )
    (tmp_path / "a.yaml").write_text(body)
    cfg = load_spec(tmp_path / "a.yaml").diversity.collapse_warning
    assert not cfg.enabled and cfg.window == 5 and cfg.min_decline == 0.15 and cfg.signals == list(cw.SIGNALS)
    (tmp_path / "b.yaml").write_text(body + "diversity:\n  enabled: false\n  collapse_warning: {enabled: true}\n")
    with pytest.raises(ValueError, match=r"b.yaml:5: diversity: collapse_warning.enabled is measured on embeddings"):
        load_spec(tmp_path / "b.yaml")


def test_signals_are_ratios_to_the_seed():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 16))
    same = rng.standard_normal((200, 16))
    narrow = ref[:1] + 0.1 * rng.standard_normal((200, 16))  # every row near one seed row
    lab_ref, lab_same, lab_narrow = np.arange(200) % 8, np.arange(200) % 8, np.zeros(200, int)
    words = [f"w{i}" for i in range(400)]
    texts_ref = [" ".join(rng.choice(words, 6)) for _ in range(200)]
    texts_narrow = [" ".join(words[:6])] * 200
    eq = cw.round_signals(same, ref, synthetic_labels=lab_same, reference_labels=lab_ref,
                          synthetic_texts=texts_ref, reference_texts=texts_ref)
    lo = cw.round_signals(narrow, ref, synthetic_labels=lab_narrow, reference_labels=lab_ref,
                          synthetic_texts=texts_narrow, reference_texts=texts_ref)
    assert set(eq) == set(cw.SIGNALS)
    assert all(0.9 < eq[s] <= 1.1 for s in cw.SIGNALS)
    assert lo["cluster_reach"] == 1 / 8 and lo["spread"] < 0.5 and lo["vendi"] < 0.5 and lo["distinct_2"] < 0.01


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", ["replace", "accumulate"])
def test_study_fires_on_replace_and_stays_quiet_on_accumulate(policy, seed):
    """The study's Gaussian arm (M=20, 20 runs) through RoundSession's light mode, the check (defaults: window 5,
    min_decline 0.15) after every round on the stored records of the last 5 rounds."""
    w = watch_loop(LoopConfig("gaussian", policy, runs=20, rows=20, generations=31, seed=seed))
    assert len(w.records) == 30
    if policy == "replace":
        assert w.fired_at is not None and w.fired_at <= 10, w.records
        passed, meta = w.verdicts[w.fired_at - 1]
        assert "narrowing" in meta["reason"] and meta["narrowing"] != "none"
    else:
        assert w.fired_at is None, [v[1] for v in w.verdicts if not v[0]]
        assert min(r[cw.key("spread")] for r in w.records) > 0.8


SEED_TOPICS = {
    "weather": ["rain", "snow", "wind", "fog", "sun", "hail", "storm", "frost", "heat", "cloud"],
    "cooking": ["bread", "soup", "rice", "pasta", "curry", "salad", "cake", "stew", "pie", "noodles"],
    "sport": ["tennis", "rugby", "chess", "rowing", "judo", "golf", "hockey", "cricket", "boxing", "skiing"],
    "music": ["violin", "drums", "piano", "flute", "cello", "guitar", "harp", "trumpet", "organ", "banjo"],
    "travel": ["train", "ferry", "plane", "bus", "bicycle", "tram", "taxi", "subway", "ship", "coach"],
    "garden": ["roses", "tulips", "carrots", "beans", "moss", "ferns", "apples", "herbs", "lilies", "onions"],
}

SPEC = """
name: narrowing_texts
seed:
  source: data/narrowing_seed.jsonl
  text: text
  columns:
    - {name: text, type: string}
rounds:
  cron: "0 0 * * *"
  start: "2026-01-01"
generate:
  generator: narrow
  prompt: Write one sentence like the examples, round {{ round }}.
  few_shot: 0
  output_schema:
    type: object
    properties: {text: {type: string}}
    required: [text]
  rows_per_round: 40
  candidate_budget: 40
  sampling: {seed: 3}
verify: []
diversity:
  clusters: 6
  collapse_warning: {enabled: true, window: 3}
  max_mmd: 10.0
accumulate:
  policy: replace
"""

# The generator double: a "model" refitted on its own last round and sampled mode-seeking (counts squared), the
# sharpening that loses the tails first; under `replace` it sees only its own output, so its rows narrow.
GENERATOR = '''
import numpy as np
import pandas as pd


def generate(ctx):
    counts = ctx.training_set["text"].value_counts()
    p = counts.to_numpy(dtype=float) ** 2
    picks = ctx.rng.choice(len(counts), ctx.n, p=p / p.sum())
    return pd.DataFrame({"text": counts.index.to_numpy()[picks]})
'''


def _text_project(project: Path):
    rows = [
        f"In the {topic} club we talked about {w} all afternoon."
        if i % 2
        else f"My notes on {topic}: {w} is what I like most."
        for topic, words in SEED_TOPICS.items()
        for i, w in enumerate(words)
    ]
    (project / "assets" / "data" / "narrowing_seed.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in rows)
    )
    (project / "assets" / "narrowing.py").write_text(GENERATOR)
    path = project / "assets" / "narrowing_texts.yaml"
    path.write_text(SPEC)
    smoke = (project / "resources" / "smoke.yaml").read_text()
    (project / "resources" / "narrow.yaml").write_text(
        smoke.replace(
            "generators:\n",
            "generators:\n  narrow:\n    backend: python\n    model: narrowing:generate\n"
            f"    options:\n      search_path: [{project / 'assets'}]\n",
            1,
        )
    )
    return load_spec(path)


@pytest.mark.slow
def test_blocking_check_stops_a_narrowing_pipeline_through_dagster(project, minilm):
    spec = _text_project(project)
    keys = PipelineKeys(spec, ())
    defs = synthflow.build_pipeline_defs(spec, profile="narrow", project_root=project)
    store = Store(str(project / "store"))
    parts = [f"2026-01-0{i}" for i in range(1, 6)]
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        fired = None
        for r, part in enumerate(parts, start=1):
            res = materialize(defs, instance, [keys.key(n) for n in ROUND_OUTPUTS], part, raise_on_error=False)
            checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
            cov = store.read(spec.name, "coverage", part).iloc[0]
            assert cov[cw.key("vendi")] > 0 and cov["mmd"] > -0.05 and cov["mmd_rows"] == 40
            # the real-vs-synthetic distance gate is a Dagster asset check on p/coverage, with the figure
            assert checks["max_mmd"].passed and checks["max_mmd"].metadata["value"].value == pytest.approx(cov["mmd"])
            if not checks["collapse_warning"].passed:
                fired = r
                break
            assert res.success, failure_text(res)
        assert fired is not None and fired <= 4, "the narrowing generator was not caught"
        rec = store.latest(spec.name, "training_set", parts[fired - 1])
        assert failed_checks(rec) == ["collapse_warning"]
        reason = rec.meta[FAILED_REASONS]["collapse_warning"]
        meta = checks["collapse_warning"].metadata
        named = meta["narrowing"].text.split(", ")
        assert named and all(s in cw.SIGNALS for s in named)
        assert all(s in reason for s in named)

        # The next round refuses to run on it, naming the check and the narrowing signal(s).
        res = materialize(defs, instance, [keys.key(n) for n in ROUND_OUTPUTS], parts[fired], raise_on_error=False)
        assert not res.success
        text = failure_text(res)
        assert "failed its blocking check 'collapse_warning'" in text
        assert all(s in text for s in named), text
        print(f"collapse_warning fired at round {fired}: {reason}")
