"""The round's accepted rows against the seed: the MMD distance and the collapse signals, and the collapse check.

`max_mmd` is one of session.COVERAGE_GATES (on p/coverage's `mmd`); `collapse_warning` blocks the training set.

Both sides are seeded subsamples of the same size (at most `diversity.reference_rows`): the seed's sample is drawn
with the pipeline's sampling seed alone, so every round is measured against the same seed rows and a trend is not
the noise of a new reference; the round's sample with (seed, round). Only the seed sample is embedded here (the
round's rows were embedded by the planner already), so a round costs one encode of at most reference_rows texts
and O(reference_rows^2 d) arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from synthflow.spec import PipelineSpec
from synthflow.stages.diversity import collapse_warning as cw
from synthflow.stages.diversity.mmd import mmd2_unbiased, sample_positions

MMD = "mmd"  # p/coverage key: unbiased MMD^2 of this round's accepted rows vs the seed
COLLAPSE_CHECK = cw.CHECK


def round_figures(planner: Any, spec: PipelineSpec, round_index: int) -> dict[str, Any]:
    """`mmd`, `mmd_rows` and `collapse_<signal>` for p/coverage; empty without a seed map (no embedder) or with
    fewer than 2 accepted rows."""
    if not hasattr(planner, "round_rows"):
        return {}
    vectors, labels, texts = planner.round_rows()
    n_seed = len(planner.seed_map.labels)
    size = min(len(vectors), n_seed, spec.diversity.reference_rows)
    if size < 2:
        return {}
    seed = spec.generate.sampling.seed
    # A prefix of one fixed permutation: the same seed rows every round (and nested ones if the size changes).
    ref_pos = np.sort(np.random.default_rng([seed, 0, 17]).permutation(n_seed)[:size])
    ref_vec, ref_lab, ref_txt = planner.seed_rows(ref_pos)
    pick = sample_positions(len(vectors), size, np.random.default_rng([seed, round_index, 17]))
    syn_vec, syn_lab, syn_txt = vectors[pick], labels[pick], [texts[i] for i in pick]
    out: dict[str, Any] = {MMD: round(mmd2_unbiased(syn_vec, ref_vec), 6), "mmd_rows": int(size)}
    signals = cw.round_signals(
        syn_vec,
        ref_vec,
        synthetic_labels=syn_lab,
        reference_labels=ref_lab,
        synthetic_texts=syn_txt,
        reference_texts=ref_txt,
    )
    out.update({cw.key(s): v for s, v in signals.items()})
    return out


def collapse_check(
    spec: PipelineSpec, coverage: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]]
) -> tuple[bool, dict[str, Any]] | None:
    """(passed, metadata) of the blocking `collapse_warning` check, or None when it is off. `earlier`: the stored
    coverage records of the rounds before this one (oldest first; the last window - 1 are enough)."""
    cfg = spec.diversity.collapse_warning
    if not cfg.enabled:
        return None
    history = [*earlier, coverage][-cfg.window :]
    return cw.check(history, window=cfg.window, min_decline=cfg.min_decline, signals=cfg.signals)
