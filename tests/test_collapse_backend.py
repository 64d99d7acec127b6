"""The python generator backend inside run_round: the user-function contract, the table wire format, and the
request cache (rows are served again only for the same fit data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthflow.collapse.loop import LoopConfig, real_data, spec_for
from synthflow.generators import make_generator
from synthflow.generators.base import Generator
from synthflow.generators.python_backend import PythonGenerator, PythonGeneratorError, fit_hash
from synthflow.generators.tables import decode_rows, encode_rows
from synthflow.stages.cache import ResultCache
from synthflow.stages.round import RoundInputs, run_round
from synthflow.store import Store

SEEN: list = []


def recording(ctx):
    """A user function that records what it was given and returns n rows of the run means."""
    SEEN.append(ctx)
    means = ctx.training_set.groupby("run")["y"].mean()
    m = ctx.n // len(means)
    return pd.DataFrame({"run": np.repeat(means.index, m), "y": np.repeat(means.to_numpy(), m)})


def wrong_count(ctx):
    return pd.DataFrame({"run": [0], "y": [1.0]})


def unknown_column(ctx):
    return pd.DataFrame({"run": np.zeros(ctx.n, int), "y": 1.0, "z": 2.0})


def not_a_number(ctx):
    return [{"run": 0, "y": "high"} for _ in range(ctx.n)]


CFG = LoopConfig("gaussian", "accumulate", runs=3, rows=4, generations=3)


def one_round(tmp_path, generator, previous=None, round_index=1, cache_name="p"):
    spec = spec_for(CFG)
    real = real_data(CFG, 0, CFG.rows)
    return run_round(
        RoundInputs(
            spec=spec,
            round_index=round_index,
            seed=real.iloc[0:0],
            real=real,
            previous=previous,
            generator=generator,
            cache=ResultCache(Store(str(tmp_path / "store")), cache_name),
        )
    )


def test_backend_is_registered_and_fits_the_protocol():
    gen = make_generator("python", "synthflow.collapse.gaussian:generate", group_by=["run"])
    assert isinstance(gen, Generator) and isinstance(gen, PythonGenerator)
    assert gen.label == "python:synthflow.collapse.gaussian:generate"
    assert gen.model_id.startswith("python:synthflow.collapse.gaussian:generate@")


def test_the_function_sees_previous_round_real_rows_n_seed_and_params(tmp_path):
    SEEN.clear()
    gen = PythonGenerator(f"{__name__}:recording", group_by=["run"], alpha=2)
    first = one_round(tmp_path, gen)
    ctx = SEEN[-1]
    assert ctx.previous is None and ctx.training_set is ctx.real and len(ctx.real) == 12
    assert (ctx.round_index, ctx.n, ctx.params, ctx.group_by) == (1, 12, {"alpha": 2}, ("run",))
    one_round(tmp_path, gen, previous=first.training_set, round_index=2)
    assert SEEN[-1].previous is first.training_set and SEEN[-1].seed != ctx.seed
    ts = first.training_set
    synth = ts[ts["_source"] == "synthetic"]
    assert len(synth) == 12 and set(synth["_round"]) == {1}
    assert synth["_model"].str.startswith(f"python:{__name__}:recording@").all()
    assert set(synth["_model_version"]) == {gen.model_version}


def test_cached_rows_are_reused_only_for_the_same_fit_data(tmp_path):
    gen = PythonGenerator("synthflow.collapse.gaussian:generate", group_by=["run"])
    first = one_round(tmp_path, gen)
    assert (first.stats.sent, first.stats.from_cache) == (1, 0)
    again = one_round(tmp_path, gen)
    assert (again.stats.sent, again.stats.from_cache) == (0, 1)
    pd.testing.assert_frame_equal(again.training_set, first.training_set)
    # Another training set to fit on is another model: its rows are generated, never served from the cache.
    r2 = one_round(tmp_path, gen, previous=first.training_set, round_index=2)
    changed = first.training_set.copy()
    changed.loc[changed.index[-1], "y"] += 1.0
    other = one_round(tmp_path, gen, previous=changed, round_index=2)
    assert (r2.stats.sent, other.stats.sent) == (1, 1)
    assert r2.candidates["model"].iloc[0] != other.candidates["model"].iloc[0]


def test_fit_hash_covers_data_source_and_round_but_not_provenance():
    ts = real_data(CFG, 0, CFG.rows)
    base = fit_hash(ts)
    relabeled = ts.assign(_id=[f"x{i}" for i in range(len(ts))], _model="other")
    assert fit_hash(relabeled) == base
    assert fit_hash(ts.assign(y=ts["y"] + 1e-12)) != base
    assert fit_hash(ts.assign(_round=1)) != base
    assert fit_hash(ts.assign(_source="synthetic")) != base


def test_model_version_follows_the_parameters():
    a = PythonGenerator("synthflow.collapse.linear:generate", sigma=1.0)
    b = PythonGenerator("synthflow.collapse.linear:generate", sigma=2.0)
    assert a.model_version != b.model_version


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("wrong_count", "returned 1 rows; 12 were asked for"),
        ("unknown_column", r"columns \['z'\] that the spec's output_schema does not declare"),
    ],
)
def test_broken_functions_fail_the_round_with_a_clear_message(tmp_path, target, error):
    with pytest.raises(PythonGeneratorError, match=error):
        one_round(tmp_path, PythonGenerator(f"{__name__}:{target}", group_by=["run"]))


def test_values_of_the_wrong_type_are_rejected_rows(tmp_path):
    out = one_round(tmp_path, PythonGenerator(f"{__name__}:not_a_number", group_by=["run"]))
    assert len(out.accepted) == 0 and out.stop_reason == "budget exhausted"
    assert set(out.rejected["parse_error"]) == {"y: not a valid number"}


def test_unknown_targets_are_named():
    with pytest.raises(PythonGeneratorError, match="cannot import 'no_such_module'"):
        PythonGenerator("no_such_module:f")
    with pytest.raises(PythonGeneratorError, match="expected 'module:function'"):
        PythonGenerator("not a target")


def test_module_beside_the_spec_is_found(tmp_path):
    (tmp_path / "my_gen_mod.py").write_text("def gen(ctx):\n    return [{'run': 0, 'y': 1.0}] * ctx.n\n")
    gen = PythonGenerator("my_gen_mod:gen", search_path=[str(tmp_path)])
    assert gen.label == "python:my_gen_mod:gen"


def test_table_encoding_keeps_every_bit():
    frame = pd.DataFrame(
        {
            "run": np.arange(5),
            "y": [0.1, 1 / 3, -2.5e-300, np.nan, np.inf],
            "name": ["a", "b", None, "d", "e"],
        }
    )
    back = decode_rows(encode_rows(frame))
    np.testing.assert_array_equal(back["run"], frame["run"])
    assert back["y"].iloc[:3].tolist() == frame["y"].iloc[:3].tolist()
    assert np.isnan(back["y"].iloc[3]) and np.isnan(back["y"].iloc[4]), "non-finite values become missing"
    assert back["name"].tolist()[:2] == ["a", "b"] and pd.isna(back["name"].iloc[2])
