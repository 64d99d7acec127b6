"""Backend options: one model per backend, derived from its constructor, checked when a profile loads.

The shipped profiles are the fixtures: each is copied into a temporary project and broken in one place.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from synthflow import registry
from synthflow.generators.backends import Backend, _options_from_signature, _options_from_source
from synthflow.profiles import ProfileError, load_profile

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = ["transformers", "smoke", "vllm", "openai", "openai_batch", "python", "ray"]
HEAVY = ["torch", "transformers", "vllm", "openai", "ray"]


def _project(tmp_path: Path, profile: str, old: str, new: str) -> Path:
    (tmp_path / "resources").mkdir()
    text = (ROOT / "resources" / f"{profile}.yaml").read_text()
    assert text.count(old) >= 1, f"{old!r} is not in resources/{profile}.yaml"
    (tmp_path / "resources" / f"{profile}.yaml").write_text(text.replace(old, new, 1))
    return tmp_path


def _line(tmp_path: Path, profile: str, text: str) -> int:
    lines = (tmp_path / "resources" / f"{profile}.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize("profile", ["local", "gpu", "endpoint", "ray", "smoke"])
def test_every_shipped_profile_passes(profile: str) -> None:
    load_profile(profile, ROOT)


def test_a_misspelled_option_names_the_file_line_and_field(tmp_path: Path) -> None:
    _project(tmp_path, "local", "      batch_size: 12", "      batch_sise: 12")
    with pytest.raises(ProfileError) as e:
        load_profile("local", tmp_path)
    line = _line(tmp_path, "local", "batch_sise")
    msg = str(e.value)
    assert f"resources/local.yaml:{line}: generators.generator.options.batch_sise: not an option of the " in msg
    assert "transformers backend; its options: batch_invariant, batch_size, device, dtype" in msg


def test_an_option_of_the_wrong_type_names_its_line(tmp_path: Path) -> None:
    _project(tmp_path, "endpoint", "max_concurrency: 64", "max_concurrency: eight")
    with pytest.raises(ProfileError) as e:
        load_profile("endpoint", tmp_path)
    line = _line(tmp_path, "endpoint", "max_concurrency: eight")
    assert f"endpoint.yaml:{line}: generators.generator.options.max_concurrency: Input should be a valid integer" in str(
        e.value
    )


def test_ray_checks_its_engines_options_too(tmp_path: Path) -> None:
    _project(tmp_path, "ray", "        max_model_len: 8192", "        max_model_length: 8192")
    with pytest.raises(ProfileError) as e:
        load_profile("ray", tmp_path)
    line = _line(tmp_path, "ray", "max_model_length")
    assert (
        f"ray.yaml:{line}: generators.generator.options.backend_options.max_model_length: not an option of the vllm "
        "backend; did you mean max_model_len" in str(e.value)
    )


def test_vllm_options_include_the_engine_arguments_it_passes_on(tmp_path: Path) -> None:
    """VLLMGenerator hands `**engine_kwargs` to vllm.LLM / EngineArgs: their names are options too, read from vLLM's
    source without importing it."""
    _project(tmp_path, "gpu", "      gpu_memory_utilization: 0.9", "      gpu_memory_utilisation: 0.9")
    with pytest.raises(ProfileError) as e:
        load_profile("gpu", tmp_path)
    line = _line(tmp_path, "gpu", "gpu_memory_utilisation")
    assert f"gpu.yaml:{line}: generators.generator.options.gpu_memory_utilisation: not an option of the vllm" in str(
        e.value
    )
    assert "did you mean gpu_memory_utilization" in str(e.value)
    fields = registry.backends.get("vllm").options_model.model_fields
    assert {"max_num_seqs", "enable_prefix_caching", "kv_cache_gib"} <= set(fields)


def test_an_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    _project(tmp_path, "gpu", "backend: vllm", "backend: vlm")
    with pytest.raises(ProfileError) as e:
        load_profile("gpu", tmp_path)
    line = _line(tmp_path, "gpu", "backend: vlm")
    assert f"gpu.yaml:{line}: generators.generator.backend: unknown generator backend 'vlm'; known: " in str(e.value)
    assert "openai, openai_batch, python, ray, smoke, transformers, vllm" in str(e.value)


def test_checking_every_profile_imports_no_backend() -> None:
    """Reading constructor signatures from source keeps torch, vLLM, openai and ray out of a profile load."""
    code = textwrap.dedent(
        f"""
        import json, sys, time
        t = time.perf_counter()
        from synthflow.profiles import load_profile
        for p in ["local", "gpu", "endpoint", "ray", "smoke"]:
            load_profile(p)
        print(json.dumps({{"seconds": time.perf_counter() - t, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"five profiles checked in {report['seconds']:.2f} s")
    assert report["heavy"] == []


@pytest.mark.parametrize("name", BUILTINS)
def test_the_source_reading_agrees_with_inspect(name: str) -> None:
    backend: Backend = registry.backends.get(name)
    module, _, cls = backend.constructor.partition(":")
    from_source, extra_source = _options_from_source(backend.constructor)
    from_inspect, extra_inspect = _options_from_signature(getattr(importlib.import_module(module), cls))
    assert extra_source == extra_inspect
    assert [o.name for o in from_source] == [o.name for o in from_inspect]
    for s, i in zip(from_source, from_inspect, strict=True):
        assert s.default == i.default or s.default is ..., (s, i)
        # Annotations naming something of the backend's own module are Any here; the backend checks those.
        assert s.annotation == i.annotation or s.annotation is Any, (s, i)


def test_a_new_constructor_option_is_picked_up_without_an_edit(tmp_path: Path, monkeypatch) -> None:
    mod = tmp_path / "growing_backend.py"
    src = "class G:\n    def __init__(self, model: str, *, temperature: float = 0.5) -> None: ...\n"
    mod.write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list(Backend("growing_backend:G").options_model.model_fields) == ["temperature"]
    mod.write_text(src.replace("temperature: float = 0.5", "temperature: float = 0.5, beams: int = 1"))
    grown = Backend("growing_backend:G").options_model
    assert list(grown.model_fields) == ["temperature", "beams"]
    with pytest.raises(ValueError, match="beams"):
        grown.model_validate({"beams": "many"})
    assert "growing_backend" not in sys.modules  # read, never imported

