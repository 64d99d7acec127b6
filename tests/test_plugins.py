"""Extension points: a separate distribution adds a verifier, a generator backend and an accumulation policy through
entry points, and specs and profiles use them with no edit to synthflow.

The plugin is a real distribution, built and pip-installed into this venv by a fixture and uninstalled afterwards.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthflow import registry
from synthflow.generators import make_generator
from synthflow.profiles import ProfileError, load_profile
from synthflow.spec import SpecError, parse_spec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.cache import ResultCache
from synthflow.stages.round import RoundInputs, run_round
from synthflow.stages.seed import load_seed
from synthflow.store import Store

pytestmark = pytest.mark.slow  # pip builds and installs a distribution

DIST = "synthflow-demo-plugin"
MODULE = "synthflow_demo_plugin"

PLUGIN_PYPROJECT = f"""
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "0.0.1"

[tool.setuptools]
py-modules = ["{MODULE}"]

# A module whose import registers the verifier, a function and a class registered as they are.
[project.entry-points."synthflow.verifiers"]
ends_with = "{MODULE}"

[project.entry-points."synthflow.policies"]
newest_only = "{MODULE}:newest_only"

[project.entry-points."synthflow.backends"]
canned = "{MODULE}:CannedGenerator"
"""

PLUGIN_MODULE = '''
"""A synthflow plugin: one verifier, one accumulation policy, one generator backend."""

from __future__ import annotations

import pandas as pd

from synthflow.generators.base import GenerationResult
from synthflow.stages.verifiers.base import verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register


class EndsWithParams(VerifierParams):
    column: str
    suffix: str = "?"


@register("ends_with", EndsWithParams)
def ends_with(name, params):
    def verify(rows, ctx):
        ok = rows[params.column].astype(str).str.endswith(params.suffix)
        return verdicts(rows.index, ok, reason=f"{params.column} does not end with {params.suffix!r}")

    verify.name = name
    return verify


def newest_only(inputs):
    """Every real row and only this round's synthetic rows."""
    return pd.concat([inputs.real, inputs.new_synthetic], ignore_index=True)


class CannedGenerator:
    """Answers the i-th request with answers[i % len(answers)]."""

    def __init__(self, model: str, *, answers: list[str], label: str = "canned") -> None:
        self._answers, self._label, self._n = answers, label, 0

    @property
    def model_id(self):
        return "canned"

    @property
    def label(self):
        return self._label

    def generate(self, requests, progress=None):
        for req in requests:
            text = self._answers[self._n % len(self._answers)]
            self._n += 1
            yield req, GenerationResult(key=req.key(self.model_id), text=text, model=self.model_id)

    def close(self):
        pass
'''

SPEC = """
name: plug
seed:
  source: seed.jsonl
  text: question
  columns: [{name: question}]
generate:
  prompt: "Ask a question."
  output_schema: {type: object, properties: {question: {type: string}}, required: [question]}
  rows_per_round: 2
  candidate_budget: 4
  batch_size: 4
verify:
  - type: schema
  - type: ends_with
    column: question
diversity: {enabled: false}
accumulate: {policy: newest_only}
"""

PROFILE = """
generators:
  generator:
    backend: canned
    options:
      answers: ['{"question": "Why is the sky blue?"}', '{"question": "Tell me a joke."}']
store: {root: store}
"""


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    src = tmp_path_factory.mktemp("plugin")
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", DIST], capture_output=True)
    _pip("install", "--no-deps", "--no-build-isolation", str(src))
    importlib.invalidate_caches()  # the module landed in site-packages after this process started
    try:
        yield DIST
    finally:
        _pip("uninstall", "-y", DIST)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "plugin.yaml").write_text(PROFILE)
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "seed.jsonl").write_text(json.dumps({"question": "What is 2 + 2?"}) + "\n")
    return tmp_path


def test_the_plugin_names_are_known_to_the_registry(plugin: str) -> None:
    assert "ends_with" in registry.verifiers.names()
    assert "newest_only" in registry.policies.names()
    assert "canned" in registry.backends.names()
    # The class was registered as it is: its options come from its signature.
    assert sorted(registry.backends.get("canned").options_model.model_fields) == ["answers", "label"]


def test_a_spec_validates_the_plugin_verifiers_parameters(plugin: str, project: Path) -> None:
    spec = parse_spec(SPEC, str(project / "spec.yaml"))
    assert [v.type for v in spec.verify] == ["schema", "ends_with"]
    assert spec.accumulate.policy == "newest_only"
    bad = SPEC.replace("    column: question", "    column: question\n    sufix: '!'")
    with pytest.raises(SpecError) as e:
        parse_spec(bad, "spec.yaml")
    line = bad.splitlines().index("    sufix: '!'") + 1
    assert f"spec.yaml:{line}: verify[1].sufix: verifier 'ends_with' (ends_with): sufix: unknown parameter" in str(
        e.value
    )


def test_the_cli_validates_the_spec_in_a_fresh_process(plugin: str, project: Path) -> None:
    synthflow = Path(sys.executable).parent / "synthflow"
    ok = subprocess.run([str(synthflow), "validate", "spec.yaml"], cwd=project, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (project / "typo.yaml").write_text(SPEC.replace("type: ends_with", "type: ends_wiht"))
    bad = subprocess.run([str(synthflow), "validate", "typo.yaml"], cwd=project, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "unknown verifier type 'ends_wiht'" in bad.stdout + bad.stderr
    assert "ends_with" in bad.stdout + bad.stderr  # among the known ones


def test_a_profile_checks_the_plugin_backends_options(plugin: str, project: Path) -> None:
    assert load_profile("plugin", project).generators["generator"].backend == "canned"
    typo = PROFILE.replace("      answers:", "      answer:")
    (project / "resources" / "typo.yaml").write_text(typo)
    with pytest.raises(ProfileError) as e:
        load_profile("typo", project)
    line = next(i for i, t in enumerate(typo.splitlines(), 1) if t.startswith("      answer:"))
    msg = str(e.value)
    assert f"typo.yaml:{line}: generators.generator.options.answer: not an option of the canned backend" in msg
    assert "its options: answers, label" in msg


def test_a_round_runs_the_plugin_backend_verifier_and_policy(plugin: str, project: Path) -> None:
    spec = parse_spec(SPEC, str(project / "spec.yaml"))
    prof = load_profile("plugin", project)
    g = prof.generators["generator"]
    gen = make_generator(g.backend, g.model, **g.options)
    seed = load_seed(spec.seed, project)
    real = real_rows(seed, [c.name for c in spec.seed.columns], 0)

    def one_round(r: int, previous):
        return run_round(
            RoundInputs(
                spec=spec,
                round_index=r,
                seed=seed,
                real=real,
                previous=previous,
                generator=gen,
                cache=ResultCache(Store(prof.store_root()), f"plug{r}"),
            )
        )

    first = one_round(1, None)
    verified = first.verified
    # The plugin verifier ran in the chain after the schema: the statement was rejected by it, with its reason.
    rejected = verified[~verified["accepted"]]
    assert set(rejected["rejected_by"]) == {"ends_with"}
    assert set(rejected["reject_reason"]) == {"question does not end with '?'"}
    assert set(verified.loc[verified["accepted"], "question"]) == {"Why is the sky blue?"}
    # The plugin policy built the training set: the real row, then this round's synthetic rows only.
    assert list(first.training_set["_source"]) == ["real", "synthetic", "synthetic"]
    second = one_round(2, first.training_set)
    assert list(second.training_set["_round"]) == [0, 2, 2]


def test_two_rounds_through_dagster_use_the_plugin(plugin: str, project: Path) -> None:
    """The way a code location runs it: assets materialized in a real Dagster instance, round after round."""
    import dagster as dg

    from synthflow.dagster.runner import run_rounds
    from synthflow.spec import load_spec

    spec = load_spec(project / "spec.yaml")
    with dg.instance_for_test() as instance:
        summaries = run_rounds(spec, 2, profile="plugin", project_root=project, instance=instance)
    assert [s.round for s in summaries] == [1, 2]
    # The plugin verifier rejected the statements; the plugin policy kept only the newest round's rows.
    assert all(set(s.rejected_by) == {"ends_with"} for s in summaries), summaries
    assert [(s.real_rows, s.synthetic_rows) for s in summaries] == [(1, 2), (1, 2)]
    assert all(s.generator == "canned" for s in summaries)
