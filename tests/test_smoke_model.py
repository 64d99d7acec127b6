"""The smoke model: deterministic, idempotent build that transformers loads and whose tokenizer encodes anything."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from synthflow.generators.smoke_model import (
    MARKER_FILE,
    build_smoke_model,
    default_smoke_model_dir,
    is_complete,
)


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_build_is_deterministic_and_replaces_a_partial_build(smoke_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "smoke-model"
    out.mkdir()
    (out / "junk.bin").write_bytes(b"left over by a killed build")  # no marker: not a finished build
    assert build_smoke_model(out, seed=0) == out.resolve()
    assert not (out / "junk.bin").exists()
    assert _digests(out) == _digests(smoke_model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["smoke-model"]  # no temp or stale dirs left behind


def test_rebuild_is_skipped_when_complete(smoke_model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in smoke_model_dir.iterdir()}
    assert build_smoke_model(smoke_model_dir) == smoke_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in smoke_model_dir.iterdir()} == before
    assert is_complete(smoke_model_dir, seed=0)
    assert not is_complete(smoke_model_dir, seed=1)  # another seed means another model
    assert (smoke_model_dir / MARKER_FILE).exists()


def test_default_dir_follows_synthflow_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNTHFLOW_HOME", str(tmp_path))
    assert default_smoke_model_dir() == tmp_path / "smoke-model"
    monkeypatch.delenv("SYNTHFLOW_HOME")
    assert default_smoke_model_dir() == Path(".synthflow") / "smoke-model"


def test_loads_in_transformers(smoke_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smoke_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(smoke_model_dir, local_files_only=True)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (128, 2, 2)
    assert cfg.hidden_size // cfg.num_attention_heads == 64  # what vLLM's CPU attention needs
    assert 2000 <= len(tok) <= 4000 and cfg.vocab_size == len(tok)
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)

    text = 'Tom has 12 apples; {"answer": 3.5, "steps": [1, 2]} — naïve café 日本語 🙂\n\ttabs'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text  # byte-level: any text round-trips

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith(tok.bos_token) and prompt.endswith("<|assistant|>\n")
    assert "<|system|>\nBe brief." in prompt and "<|user|>\nWhat is 2+2?" in prompt
    without = tok.apply_chat_template(chat, add_generation_prompt=False, tokenize=False)
    assert not without.endswith("<|assistant|>\n")

    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 5
    assert torch.isfinite(model(**enc).logits).all()
