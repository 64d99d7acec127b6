"""Static embeddings distilled from a sentence-transformers model: `embedder: {model: "static:all-MiniLM-L6-v2"}`.

A transformer embedder costs milliseconds of CPU per row; on a machine whose cores also serve the generator
(vLLM on CPU, or a small GPU box with few cores) the verifiers' embedding then takes longer than generation, and
the generator waits. A static model is a table of one vector per token: a row's embedding is the mean of its
tokens' vectors, about a thousand times less work. The table is distilled from the named model the way model2vec
does it (Tulkens & van Dongen 2024): every vocabulary token is embedded alone by the model, the vectors are
reduced by PCA, and frequent tokens are weighted down (Zipf). That needs no download and no training data; the
result is cached once under `$SYNTHFLOW_HOME/static-embedders/` and loads in well under a second.

Quality is below the model it comes from (it sees words, not their order), which is fine for near-duplicate and
seed-copy detection and for coverage statistics, less so for fine semantic search. Thresholds calibrated on the
transformer do not carry over: a static model's cosines run higher for related texts (docs/diversity.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from synthflow.paths import state_dir

STATIC_PREFIX = "static:"
# Bump when the recipe changes: the cached folder's name follows it, so an old table is never loaded for a new one.
RECIPE_VERSION = 1
DEFAULT_DIMS = 256
_MARKER = ".synthflow-static-build"


def is_static(model: str) -> bool:
    return model.startswith(STATIC_PREFIX)


def base_model(model: str) -> str:
    """`static:NAME` -> NAME, the sentence-transformers model the table is distilled from."""
    name = model[len(STATIC_PREFIX) :]
    if not name:
        raise ValueError(f"embedder model {model!r}: name the model to distill after 'static:'")
    return name


def static_models_dir() -> Path:
    return state_dir() / "static-embedders"


def _recipe(base_id: str, dims: int) -> dict[str, Any]:
    return {
        "base": base_id,
        "dims": dims,
        "pooling": "mean of [CLS] token [SEP]",
        "zipf": True,
        "v": RECIPE_VERSION,
    }


def distill(transformer: Any, dims: int = DEFAULT_DIMS, batch_size: int = 1024) -> tuple[Any, np.ndarray]:
    """(tokenizer, weights) of the static model distilled from a loaded SentenceTransformer.

    Each token id t is run as [CLS] t [SEP] and mean-pooled, which is what the model does to a one-word text;
    PCA to `dims` (centred, so the common direction every token shares is removed); then row i is scaled by
    log(1 + i), since WordPiece/BPE vocabularies list frequent tokens first (model2vec's Zipf weighting).
    """
    import torch

    first = transformer[0]
    hf_tokenizer = first.tokenizer
    model = first.auto_model
    vocab = len(hf_tokenizer)
    cls_id, sep_id = hf_tokenizer.cls_token_id, hf_tokenizer.sep_token_id
    if cls_id is None or sep_id is None:  # BPE models without BERT's specials: bos/eos, or nothing
        cls_id, sep_id = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id
    wrap = [i for i in (cls_id,) if i is not None], [i for i in (sep_id,) if i is not None]
    out = np.empty((vocab, model.config.hidden_size), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, vocab, batch_size):
            ids = torch.arange(start, min(vocab, start + batch_size)).unsqueeze(1)
            parts = (
                [torch.full((len(ids), 1), i) for i in wrap[0]]
                + [ids]
                + [torch.full((len(ids), 1), i) for i in wrap[1]]
            )
            batch = torch.cat(parts, dim=1).to(model.device)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            out[start : start + len(ids)] = hidden.mean(dim=1).float().cpu().numpy()
    centred = out - out.mean(axis=0)
    dims = min(dims, centred.shape[1])
    # Components from the covariance (hidden x hidden), cheaper than an SVD of the whole vocabulary.
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)
    weights = centred @ eigvec[:, np.argsort(eigval)[::-1][:dims]]
    weights *= np.log1p(np.arange(vocab, dtype=np.float32))[:, None]
    return hf_tokenizer.backend_tokenizer, weights.astype(np.float32)


def _folder(base_id: str, dims: int) -> Path:
    recipe = json.dumps(_recipe(base_id, dims), sort_keys=True)
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in base_id)
    return static_models_dir() / f"{slug}-{dims}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"


def _complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def load_static(base_source: str, base_id: str, device: str, dims: int = DEFAULT_DIMS) -> Any:
    """The static SentenceTransformer for `static:NAME`, distilled on first use (tens of seconds on a CPU) and
    cached; `base_source` is what SentenceTransformer loads the base model from (synthflow.embedding)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    from synthflow.folders import publish_folder
    from synthflow.quiet import no_load_bars

    def build(tmp: Path) -> None:
        with no_load_bars():
            base = SentenceTransformer(base_source, device=device)
        tokenizer, weights = distill(base, dims)
        static = SentenceTransformer(
            modules=[StaticEmbedding(tokenizer, embedding_weights=weights)], device="cpu"
        )
        static.save(str(tmp))
        (tmp / _MARKER).write_text(json.dumps(_recipe(base_id, dims), sort_keys=True))

    folder = publish_folder(_folder(base_id, dims), build, _complete)
    with no_load_bars():
        return SentenceTransformer(str(folder), device=device)
