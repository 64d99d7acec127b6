"""Building a round's training set from real rows, earlier rounds and this round's accepted synthetic rows.

Why accumulate by default: training on model outputs alone collapses models; keeping every real row and adding
synthetic rows across rounds bounds the error (Gerstgrasser et al., COLM 2024). The other policies exist for
ablations and fixed budgets:

- `accumulate`: every real row known at round r plus every synthetic row of rounds <= r.
- `replace`: only what round r brought: its synthetic rows and the real rows that arrived in round r (fresh real
  data when p/real is partitioned by round; none otherwise). This is the "replace" of the model-collapse papers,
  where each generation is trained on the previous generation's output alone.
- `accumulate_subsample`: a fixed number of rows a round (`subsample_size`, default: as many as there are real
  rows), drawn from the accumulated pool (real + synthetic of rounds <= r) stratified by source and round, so every
  round keeps its share (Kazdan et al., ICML 2025).

`group_by` names columns that split the table into independent loops (e.g. `run` when one pipeline carries many
independent runs of an experiment): every policy, budget and real fraction then holds within each group.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synthflow.registry import policies
from synthflow.spec import AccumulateSpec, PipelineSpec

PROVENANCE_COLUMNS = [
    "_id",
    "_source",
    "_round",
    "_model",
    "_model_version",
    "_prompt_hash",
    "_exemplar_ids",
    "_scores",
]
# Only on pipelines with generate.columns (stages/columns/dag.py makes them); real rows leave them empty.
COLUMN_PROVENANCE = ["_column_provenance", "_parent_id"]
_STRATA = ["_source", "_round"]
# DataFrame.attrs key: the training set is the previous one (its first n rows) followed by new rows only.
APPENDED_TO = "synthflow.appended_to_previous"


class AccumulationError(ValueError):
    pass


def real_rows(real: pd.DataFrame, data_columns: list[str], round_index: int) -> pd.DataFrame:
    """Real rows with provenance. `_round` is the round they arrived in (0 for the seed / initial real data)."""
    out = real[[c for c in data_columns if c in real.columns]].copy()
    out["_id"] = real["_id"].astype(str).values
    out["_text"] = real["_text"].values
    out["_source"] = "real"
    out["_round"] = real["_round"].astype(int).values if "_round" in real.columns else round_index
    for col in ("_model", "_model_version", "_prompt_hash", "_exemplar_ids", "_scores"):
        # Missing text, typed as text: concatenating with the synthetic rows then stays a cheap Arrow append.
        out[col] = pd.Series(None, index=out.index, dtype="str")
    return out


def synthetic_rows(
    verified: pd.DataFrame,
    data_columns: list[str],
    verifier_names: list[str],
    model_version: str | None = None,
) -> pd.DataFrame:
    """Accepted rows with provenance; `_scores` is a JSON object of every verifier's score (plain text, so it
    survives any export format)."""
    acc = verified[verified["accepted"]]
    out = acc[[c for c in data_columns if c in acc.columns]].copy()
    out["_id"] = acc["candidate_id"].astype(str).values
    out["_text"] = acc["_text"].values
    out["_source"] = "synthetic"
    out["_round"] = acc["round"].astype(int).values
    out["_model"] = acc["model"].values
    out["_model_version"] = pd.Series(model_version, index=out.index, dtype="str")
    out["_prompt_hash"] = acc["prompt_hash"].values
    out["_exemplar_ids"] = acc["exemplar_ids"].values
    out["_scores"] = _scores_json(acc, verifier_names)
    for col in COLUMN_PROVENANCE:  # column DAG rows: per llm column model and prompt hash; the row sampled from
        if col.removeprefix("_") in acc.columns:
            out[col] = pd.Series(acc[col.removeprefix("_")].values, index=out.index, dtype="str")
    return out


def _scores_json(acc: pd.DataFrame, verifier_names: list[str]) -> list[str] | str:
    cols = [(n, f"{n}_score") for n in verifier_names if f"{n}_score" in acc.columns]
    if not cols:
        return "{}"
    values = [pd.to_numeric(acc[c], errors="coerce").to_numpy(dtype=float) for _, c in cols]
    names = sorted(range(len(cols)), key=lambda i: cols[i][0])
    rows = zip(*values, strict=True)
    return [json.dumps({cols[i][0]: float(r[i]) for i in names if not np.isnan(r[i])}) for r in rows]


@dataclass(frozen=True)
class PolicyInputs:
    """What a policy chooses the training set of round r from (see build_training_set)."""

    spec: AccumulateSpec
    real: pd.DataFrame
    previous: pd.DataFrame | None
    new_synthetic: pd.DataFrame
    round_index: int
    groups: list[str]
    rng: np.random.Generator
    pool: pd.DataFrame | None = None

    @property
    def old_synthetic(self) -> pd.DataFrame:
        """The synthetic rows of the previous training set."""
        return _synthetic(self.previous, self.new_synthetic)


@dataclass(frozen=True)
class Policy:
    """An accumulation policy: `select` returns round r's training set (real rows first, with provenance).

    `description` is the sentence the dataset card gives; `reads_pool` asks for every synthetic row accepted so
    far (PolicyInputs.pool); `keeps_previous_rows` promises that the previous training set is kept whole, which
    the `keeps_previous_rows` asset check holds it to. build_training_set refuses duplicate ids unless the policy
    says it checks them itself (`checks_ids`, for policies that can check only the new rows).
    """

    select: Callable[[PolicyInputs], pd.DataFrame]
    description: str = ""
    reads_pool: bool = False
    keeps_previous_rows: bool = False
    checks_ids: bool = False


def register_policy(name: str, description: str, **flags: bool):
    """Decorator for `select(inputs) -> DataFrame`; a plugin's `synthflow.policies` entry point names the module
    (or the plain function, which is registered with its docstring as the description)."""

    def deco(select: Callable[[PolicyInputs], pd.DataFrame]):
        policies.register(name, Policy(select, description, **flags))
        return select

    return deco


def _adopt(name: str, obj: object) -> Policy | None:
    if isinstance(obj, Policy):
        return obj
    return Policy(obj, description=(obj.__doc__ or "").strip()) if callable(obj) else None


policies.adopt = _adopt


def build_training_set(
    policy: AccumulateSpec,
    *,
    real: pd.DataFrame,
    previous: pd.DataFrame | None,
    new_synthetic: pd.DataFrame,
    round_index: int,
    seed: int = 0,
    group_by: Sequence[str] = (),
    pool: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The training set of round r, chosen by the spec's policy (a name in synthflow.registry.policies).

    real: every real row known at this round (with provenance; `_round` = the round it arrived in).
    previous: the training set of round r-1 (None in round 1).
    pool: every synthetic row accepted in rounds < r, kept or not; only policies that `reads_pool` get it.
    """
    groups = list(group_by)
    for col in groups:
        for name, frame in (("real", real), ("new synthetic", new_synthetic)):
            if len(frame) and col not in frame.columns:
                raise AccumulationError(f"group_by column {col!r} is missing from the {name} rows")
    rule: Policy = policies.get(policy.policy)
    inputs = PolicyInputs(
        spec=policy,
        real=real,
        previous=previous,
        new_synthetic=new_synthetic,
        round_index=round_index,
        groups=groups,
        rng=np.random.default_rng([seed, round_index, 7]),
        pool=pool if rule.reads_pool else None,
    )
    out = rule.select(inputs)
    return out if rule.checks_ids else _unique(out)


@register_policy(
    "accumulate",
    "Every real row is kept and synthetic rows accumulate across rounds; nothing is replaced. "
    "Training on model outputs alone collapses models (Shumailov et al., Nature 2024); keeping real "
    "data and accumulating synthetic data bounds the damage (Gerstgrasser et al., COLM 2024).",
    keeps_previous_rows=True,
    checks_ids=True,
)
def _accumulate(i: PolicyInputs) -> pd.DataFrame:
    if i.spec.min_real_fraction <= 0 and _starts_with(i.previous, i.real):
        # The common case, kept cheap for pools of millions of rows: r-1 already holds these real rows first and
        # its ids were checked when it was built (and by the unique_ids asset check), so only the new ids are
        # checked here, against each other and the real rows. Earlier synthetic ids cannot recur: a row's id is
        # its request's key, which includes the round.
        _unique(pd.concat([i.real["_id"], i.new_synthetic["_id"]], ignore_index=True))
        out = pd.concat([i.previous, i.new_synthetic], ignore_index=True)
        out.attrs[APPENDED_TO] = len(i.previous)
        return out
    synth = _enforce_real_fraction(i.spec, i.real, i.old_synthetic, i.new_synthetic, i.groups, i.rng)
    return _unique(pd.concat([i.real, synth], ignore_index=True))


@register_policy(
    "replace",
    "Each round's synthetic rows replace the previous round's. Beware: replacing data with model "
    "outputs is the regime in which models collapse (Shumailov et al., Nature 2024).",
)
def _replace(i: PolicyInputs) -> pd.DataFrame:
    real_now = i.real[i.real["_round"] == i.round_index]
    synth = _enforce_real_fraction(
        i.spec, real_now, i.old_synthetic.iloc[0:0], i.new_synthetic, i.groups, i.rng
    )
    return pd.concat([real_now, synth], ignore_index=True)


@register_policy(
    "accumulate_subsample",
    "Every real row is kept; synthetic rows accumulate across rounds, subsampled per round to a fixed size.",
    reads_pool=True,
)
def _accumulate_subsample(i: PolicyInputs) -> pd.DataFrame:
    real_now, synth = _subsample(i.spec, i.real, i.old_synthetic, i.new_synthetic, i.pool, i.groups, i.rng)
    return pd.concat([real_now, synth], ignore_index=True)


def appended_rows(previous: pd.DataFrame | None, training_set: pd.DataFrame) -> pd.DataFrame | None:
    """The rows `training_set` adds to `previous` when a policy built it as `previous` followed by new rows (the
    accumulate policy's common case), else None. What lets the store append them instead of rewriting the set."""
    n = training_set.attrs.get(APPENDED_TO)
    if previous is None or n is None or n != len(previous) or len(training_set) < n:
        return None
    return training_set.iloc[n:].reset_index(drop=True)


def _unique(out: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    ids = out["_id"] if isinstance(out, pd.DataFrame) else out
    # Arrow's hash kernel is several times faster than a pandas Index over Arrow-backed strings.
    if pc.count_distinct(pa.array(ids, from_pandas=True), mode="all").as_py() != len(ids):
        dupes = sorted(set(ids[ids.duplicated()]))
        raise AccumulationError(f"training set would hold duplicate ids: {dupes[:5]}")
    return out


def _starts_with(previous: pd.DataFrame | None, real: pd.DataFrame) -> bool:
    """Whether `previous` is these real rows (same ids, same order) followed by synthetic rows only."""
    if previous is None or len(previous) < len(real):
        return False
    is_real = previous["_source"] == "real"
    n = len(real)
    return bool(
        is_real.iloc[:n].all()
        and not is_real.iloc[n:].any()
        and (previous["_id"].iloc[:n].to_numpy(dtype=object) == real["_id"].to_numpy(dtype=object)).all()
    )


def _synthetic(previous: pd.DataFrame | None, like: pd.DataFrame) -> pd.DataFrame:
    if previous is None or not len(previous):
        return like.iloc[0:0]
    return previous[previous["_source"] == "synthetic"]


def _group_codes(frames: Sequence[pd.DataFrame], groups: list[str]) -> tuple[list[np.ndarray], list]:
    """Integer group codes for the rows of each frame (one numbering, in sorted key order) and each code's key.

    Hash-based (pd.factorize), so a pool of millions of rows costs milliseconds, not a sort."""
    sizes = [len(f) for f in frames]
    if not groups:
        return [np.zeros(n, dtype=np.int64) for n in sizes], [()]
    combined = np.zeros(sum(sizes), dtype=np.int64)
    uniques = []
    for col in groups:
        values = np.concatenate([f[col].to_numpy() for f in frames])
        code, uniq = pd.factorize(values, sort=True, use_na_sentinel=False)
        combined = combined * len(uniq) + code
        uniques.append(np.asarray(uniq, dtype=object))
    code, uniq = _dense_codes(combined)
    keys = []
    for value in uniq:
        key = []
        for u in reversed(uniques):
            value, i = divmod(int(value), len(u))
            key.append(u[i])
        keys.append(tuple(reversed(key)))
    out, start = [], 0
    for n in sizes:
        out.append(code[start : start + n])
        start += n
    return out, keys


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize(values, sort=True) for arrays of small non-negative integers, by a lookup table instead of a
    hash table (several times faster on pools of millions of rows)."""
    if (
        values.dtype.kind in "iu"
        and len(values)
        and values.min() >= 0
        and values.max() < 8 * len(values) + 1024
    ):
        present = np.bincount(values)
        uniques = np.flatnonzero(present)
        lookup = np.cumsum(present > 0) - 1
        return lookup[values], uniques
    return pd.factorize(values, sort=True)


def _describe(groups: list[str], key: tuple) -> str:
    if not groups:
        return ""
    return " in group " + ", ".join(f"{g}={v}" for g, v in zip(groups, key, strict=True))


# -- min_real_fraction for accumulate and replace ------------------------------------------------------------------


def _enforce_real_fraction(
    policy: AccumulateSpec,
    real: pd.DataFrame,
    old: pd.DataFrame,
    new: pd.DataFrame,
    groups: list[str],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Old then new synthetic rows, cut to what min_real_fraction allows in each group.

    Under accumulate the cut falls on this round's rows first, so the training set of r-1 stays whole whenever it
    can (the `keeps_previous_rows` check).
    """
    synth = pd.concat([old, new], ignore_index=True)
    need = policy.min_real_fraction
    if need <= 0 or not len(synth):
        return synth
    (real_code, synth_code), keys = _group_codes([real, synth], groups)
    n_real = np.bincount(real_code, minlength=len(keys))
    n_synth = np.bincount(synth_code, minlength=len(keys))
    allowed = np.floor(n_real * (1 - need) / need + 1e-9).astype(int) if need < 1 else np.zeros_like(n_real)
    over = np.flatnonzero(n_synth > allowed)
    if not len(over):
        return synth
    if policy.on_low_real_fraction == "fail":
        g = over[0]
        total = n_real[g] + n_synth[g]
        raise AccumulationError(
            f"real rows would be {n_real[g]}/{total} = {n_real[g] / total:.3f} of the training set"
            f"{_describe(groups, keys[g])}, below accumulate.min_real_fraction = {need}; at most {allowed[g]} "
            "synthetic rows fit. Add real data, lower the fraction, or set accumulate.on_low_real_fraction: "
            "subsample" + (f" ({len(over)} groups are short)" if len(over) > 1 else "")
        )
    is_old = np.r_[np.ones(len(old), bool), np.zeros(len(new), bool)]
    keep = ~np.isin(synth_code, over)
    for g in over:
        pos = np.flatnonzero(synth_code == g)
        olds, news = pos[is_old[pos]], pos[~is_old[pos]]
        if len(olds) >= allowed[g]:
            keep[_stratified_positions(synth, olds, int(allowed[g]), rng)] = True
        else:
            keep[olds] = True
            keep[rng.choice(news, int(allowed[g]) - len(olds), replace=False)] = True
    return synth[keep]


def _stratified_positions(frame: pd.DataFrame, pos: np.ndarray, budget: int, rng: np.random.Generator):
    """`budget` of the rows at positions `pos`, spread over their rounds in proportion to the rounds' sizes."""
    rounds = frame["_round"].to_numpy()[pos]
    _, inverse, counts = np.unique(rounds, return_inverse=True, return_counts=True)
    quota = _allocate(counts.astype(float), counts, budget, rng)
    return pos[_take_per_stratum(inverse, quota, rng)]


# -- accumulate_subsample ----------------------------------------------------------------------------------------


def _subsample(
    policy: AccumulateSpec,
    real: pd.DataFrame,
    old: pd.DataFrame,
    new: pd.DataFrame,
    pool: pd.DataFrame | None,
    groups: list[str],
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every step is a vectorized pass over integer codes: the pool reaches millions of rows in long runs, and
    only the kept rows are ever copied."""
    parts = [real, pool if pool is not None else old, new]
    if not sum(len(p) for p in parts):
        return real, new
    gcodes, keys = _group_codes(parts, groups)
    gcode = np.concatenate(gcodes)
    synth = np.concatenate([(p["_source"] != "real").to_numpy(dtype=bool) for p in parts])
    rounds = np.concatenate([p["_round"].to_numpy(dtype=np.int64) for p in parts])
    span = int(rounds.max()) + 1
    code, strata = _dense_codes((gcode * 2 + synth) * span + rounds)
    avail = np.bincount(code, minlength=len(strata))
    s_group, rest = np.divmod(strata, 2 * span)
    is_real = rest // span == 0
    new_n = np.bincount(gcodes[2], minlength=len(keys))
    bounds = np.searchsorted(s_group, np.arange(len(keys) + 1))
    quota = np.zeros(len(strata), dtype=np.int64)
    for g in range(len(keys)):
        sl = slice(bounds[g], bounds[g + 1])
        size, av, real_s = avail[sl].astype(float), avail[sl], is_real[sl]
        if pool is None and len(old):
            # Earlier synthetic strata were already cut in earlier rounds: weigh each at the size of a whole round.
            size[~real_s] = max(float(new_n[g]), float(av[~real_s].max(initial=0)))
        budget = policy.subsample_size or int(av[real_s].sum())
        quota[sl] = _quota_with_real_fraction(policy, size, av, real_s, budget, rng, groups, keys[g])
    keep = _take_per_stratum(code, quota, rng)
    offsets = np.cumsum([0] + [len(p) for p in parts])
    kept = [
        p.iloc[keep[(keep >= a) & (keep < b)] - a]
        for p, a, b in zip(parts, offsets, offsets[1:], strict=False)
    ]
    return kept[0], pd.concat(kept[1:], ignore_index=True)


def _quota_with_real_fraction(
    policy: AccumulateSpec,
    size: np.ndarray,
    avail: np.ndarray,
    is_real: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    groups: list[str],
    key,
) -> np.ndarray:
    budget = min(budget, int(avail.sum()))
    quota = _allocate(size, avail, budget, rng)
    need = policy.min_real_fraction
    if need <= 0 or quota[is_real].sum() >= np.ceil(need * budget - 1e-9):
        return quota
    n_real = int(avail[is_real].sum())
    want_real = int(np.ceil(need * budget - 1e-9))
    if n_real >= want_real:
        real_budget, synth_budget = want_real, budget - want_real
    elif policy.on_low_real_fraction == "fail":
        raise AccumulationError(
            f"a subsample of {budget} rows{_describe(groups, key)} needs {want_real} real rows for "
            f"accumulate.min_real_fraction = {need}, but only {n_real} exist; lower subsample_size or the "
            "fraction, or set accumulate.on_low_real_fraction: subsample"
        )
    else:
        real_budget = n_real
        synth_budget = int(np.floor(n_real * (1 - need) / need + 1e-9)) if need < 1 else 0
    quota = np.zeros(len(size), dtype=int)
    quota[is_real] = _allocate(size[is_real], avail[is_real], real_budget, rng)
    quota[~is_real] = _allocate(size[~is_real], avail[~is_real], synth_budget, rng)
    return quota


def _allocate(size: np.ndarray, avail: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Split `budget` over strata in proportion to `size` (largest remainder, ties broken at random), never
    giving a stratum more than it has; what a full stratum cannot take goes to the others."""
    quota = np.zeros(len(size), dtype=int)
    budget = min(int(budget), int(avail.sum()))
    while budget > 0:
        open_ = quota < avail
        w = np.where(open_, size, 0.0)
        if w.sum() <= 0:
            w = open_.astype(float)
        exact = budget * w / w.sum()
        add = np.floor(exact).astype(int)
        short = budget - int(add.sum())
        if short:
            order = np.lexsort((rng.random(len(size)), -(exact - add)))
            order = order[open_[order]]
            add[order[:short]] += 1
        room = avail - quota
        add = np.minimum(add, room)
        quota += add
        budget -= int(add.sum())
    return quota


def _take_per_stratum(code: np.ndarray, quota: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of a uniform random `quota[c]` rows of every stratum c, in their original order.

    Shuffle, then a stable sort by stratum (a linear-time radix sort for up to 65536 strata): each stratum's rows
    end up together in random order, and it keeps its first quota[c]."""
    perm = rng.permutation(len(code))
    shuffled = code[perm]
    key = shuffled.astype(np.uint16) if len(quota) <= 1 << 16 else shuffled
    order = np.argsort(key, kind="stable")
    sizes = np.bincount(code, minlength=len(quota))
    take = np.minimum(quota, sizes)
    starts = np.cumsum(sizes) - sizes
    firsts = np.cumsum(take) - take
    idx = np.repeat(starts, take) + (np.arange(int(take.sum())) - np.repeat(firsts, take))
    return np.sort(perm[order[idx]])


# -- the training set's schema (for the p/training_set `schema` asset check) -----------------------------------


def schema_problems(training_set: pd.DataFrame, spec: PipelineSpec) -> list[str]:
    """What is wrong with a training set's columns: declared data columns and provenance present, sources and
    rounds valid, synthetic rows fully attributed, output columns of the declared JSON types. Empty when fine."""
    problems = []
    data_columns = [c.name for c in spec.seed.columns] + [c for c in spec.output_columns]
    missing = [
        c for c in dict.fromkeys([*data_columns, *PROVENANCE_COLUMNS]) if c not in training_set.columns
    ]
    if missing:
        problems.append(f"missing columns: {missing}")
    if "_source" in training_set.columns:
        bad = sorted(set(training_set["_source"].dropna()) - {"real", "synthetic"})
        if bad or training_set["_source"].isna().any():
            problems.append(f"_source must be 'real' or 'synthetic', found {bad or ['<missing>']}")
    if "_round" in training_set.columns:
        rounds = training_set["_round"]
        if not pd.api.types.is_integer_dtype(rounds) or (rounds < 0).any():
            problems.append("_round must be a non-negative integer")
    if {"_source", "_model", "_prompt_hash"} <= set(training_set.columns):
        synth = training_set[training_set["_source"] == "synthetic"]
        unattributed = int((synth["_model"].isna() | synth["_prompt_hash"].isna()).sum())
        if unattributed:
            problems.append(f"{unattributed} synthetic rows without _model or _prompt_hash")
    for name, schema in spec.generate.output_schema["properties"].items():
        if name in training_set.columns and not _json_type_fits(training_set[name], schema.get("type")):
            problems.append(
                f"column {name!r} is {training_set[name].dtype}, not the declared {schema.get('type')}"
            )
    return problems


def _json_type_fits(col: pd.Series, kind) -> bool:
    kinds = set(kind) - {"null"} if isinstance(kind, list) else {kind}
    values = col.dropna()
    if not len(values) or None in kinds or len(kinds) != 1:
        return True
    (kind,) = kinds
    if kind == "number":
        return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if kind == "integer":
        return pd.api.types.is_integer_dtype(values) or (
            pd.api.types.is_float_dtype(values) and bool((values % 1 == 0).all())
        )
    if kind == "boolean":
        return pd.api.types.is_bool_dtype(values) or values.map(lambda v: isinstance(v, bool)).all()
    if kind == "string":
        return pd.api.types.is_string_dtype(values) or values.map(lambda v: isinstance(v, str)).all()
    return True
