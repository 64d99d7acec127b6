"""`static:NAME` embedders (synthflow.static_embedding): a token table distilled from the shipped MiniLM weights,
cached once under SYNTHFLOW_HOME, behind the same Embedder as the transformer."""

from __future__ import annotations

import numpy as np
import pytest

from synthflow import static_embedding
from synthflow.embedding import Embedder
from synthflow.profiles import ProfileError, load_profile
from tests.test_verifiers_decontaminate import BENCH, CLEAN, PARAPHRASES

STATIC = "static:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def static(minilm) -> Embedder:
    emb = Embedder(STATIC, device="cpu")
    _ = emb.dim
    return emb


def test_the_table_is_distilled_once_and_loads_from_the_cache(static, monkeypatch):
    assert static.model_id == "static:sentence-transformers/all-MiniLM-L6-v2"
    assert static.dim == static_embedding.DEFAULT_DIMS
    folders = list(static_embedding.static_models_dir().iterdir())
    assert [f.name.startswith("sentence-transformers_all-MiniLM-L6-v2-256-") for f in folders] == [True]

    def no_second_distillation(*a, **k):
        raise AssertionError("distilled again instead of loading the cached table")

    monkeypatch.setattr(static_embedding, "distill", no_second_distillation)
    again = Embedder("static:sentence-transformers/all-MiniLM-L6-v2", device="cpu")  # the other spelling
    texts = ["Tom has 3 apples and eats one.", "The telescope found a comet."]
    assert np.allclose(again.encode(texts), static.encode(texts), atol=1e-6)


def test_vectors_are_unit_rows_and_cached_apart_from_the_transformers(static, minilm):
    text = "A farmer has 12 cows and buys 5 more."
    v = static.encode([text, text, ""])
    assert v.shape == (3, 256) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[:2], axis=1), 1.0, atol=1e-5)
    assert static.key(text) != minilm.key(text)  # one cache URL can hold both models' vectors


def test_paraphrases_score_above_unrelated_rows(static):
    """The decontamination test's planted paraphrases against its clean on-topic rows: the static table keeps them
    apart on the median (MiniLM itself: 0.909 vs 0.572), though the ranges touch (0.872-0.878)."""
    bench = static.encode(BENCH)
    para = [float(static.encode([t])[0] @ bench[i]) for i, t in PARAPHRASES]
    clean = (static.encode(CLEAN) @ bench.T).max(axis=1)
    assert np.median(para) >= 0.88 and np.median(clean) <= 0.82
    assert np.median(para) - np.median(clean) >= 0.08


def test_a_profile_naming_no_model_after_static_is_an_error_with_file_line_and_field(tmp_path):
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "fast.yaml").write_text(
        "name: fast\ngenerators:\n  generator:\n    backend: smoke\nembedders:\n  embedder:\n    model: 'static:'\n"
    )
    with pytest.raises(ProfileError) as err:
        load_profile("fast", project_root=tmp_path)
    text = str(err.value)
    assert "fast.yaml:7" in text and "embedders.embedder.model" in text and "after 'static:'" in text
