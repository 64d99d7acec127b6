"""The one registry: built-in names, errors that list what is known, and entry points that fail to deliver."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthflow import registry
from synthflow.registry import Registry, RegistryError
from synthflow.spec import SpecError, parse_spec
from tests.verifier_kit import MATH_SPEC


def test_the_builtins_are_registered() -> None:
    assert {"schema", "llm_judge", "python", "dedup"} <= set(registry.verifiers.names())
    assert {"transformers", "smoke", "vllm", "openai", "python", "ray"} <= set(registry.backends.names())
    assert {"accumulate", "replace", "accumulate_subsample"} <= set(registry.policies.names())


def test_policies_say_what_they_read_and_keep() -> None:
    accumulate, subsample, replace = (registry.policies.get(n) for n in ("accumulate", "accumulate_subsample", "replace"))
    assert accumulate.keeps_previous_rows and not accumulate.reads_pool
    assert subsample.reads_pool and not subsample.keeps_previous_rows
    assert not replace.keeps_previous_rows and "collapse" in replace.description


def test_an_unknown_policy_names_its_line_and_the_known_ones() -> None:
    text = MATH_SPEC + "accumulate:\n  policy: acumulate\n"
    with pytest.raises(SpecError) as e:
        parse_spec(text, "p.yaml")
    line = text.splitlines().index("  policy: acumulate") + 1
    assert f"p.yaml:{line}: accumulate.policy: unknown accumulation policy 'acumulate'; known: accumulate, " in str(
        e.value
    )


def _distribution(root: Path, group: str, entries: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees one: a dist-info folder on sys.path."""
    info = root / "fake_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


def test_entry_points_that_fail_to_deliver_say_which_distribution(tmp_path: Path, monkeypatch) -> None:
    group = "synthflow.test_registry"
    _distribution(tmp_path, group, {"broken": "no_such_module_for_synthflow", "silent": "json", "good": "fake_mod"})
    (tmp_path / "fake_mod.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget", group, ())
    assert reg.names() == ["broken", "good", "silent"]  # listed without loading any of them
    with pytest.raises(RegistryError, match=r"widget 'broken': the entry point .*fake-plugin 0.1.* failed to load"):
        reg.get("broken")
    with pytest.raises(RegistryError, match=r"widget 'silent': loading the entry point .* did not register 'silent'"):
        reg.get("silent")
    reg.adopt = lambda name, obj: getattr(obj, "VALUE", None)
    assert reg.get("good") == 42
    with pytest.raises(RegistryError, match=r"unknown widget 'nope'; known: broken, good, silent"):
        reg.get("nope")
