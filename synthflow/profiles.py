"""Resource profiles: which generators, embedders and store a pipeline runs with (resources/<name>.yaml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from synthflow.generators.backends import check_options, get_backend
from synthflow.paths import state_dir
from synthflow.spec import Price, SpecError, _field_path, _line_of, load_yaml
from synthflow.static_embedding import base_model, is_static

DEFAULT_PROFILE = "local"


class ProfileError(SpecError):
    """A resource profile that cannot be used (file, line and field, like a spec error)."""

    header = "invalid resource profile"


class ProfileNotFound(ProfileError):
    header = ""  # one line: which profile, where it was looked for, which exist


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PricesPer1k(_Strict):
    """The earlier price form, USD per 1,000 tokens (`prices: {prompt_per_1k, completion_per_1k}`)."""

    prompt_per_1k: float = Field(default=0.0, ge=0)
    completion_per_1k: float = Field(default=0.0, ge=0)

    def as_price(self) -> Price:
        return Price(input_per_mtok=self.prompt_per_1k * 1000, output_per_mtok=self.completion_per_1k * 1000)


class GeneratorProfile(_Strict):
    backend: str  # transformers | vllm | openai | smoke | python | ray
    model: str = "smoke"
    fallback: str | None = None  # "smoke": run on the smoke model when `model` cannot be loaded
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the backend's constructor
    # USD per million tokens, what generate.budget's max_usd and the round's cost are counted at; 0: local model.
    price: Price = Price()
    prices: PricesPer1k | None = None  # the earlier form, per 1k tokens: read as `price`

    @model_validator(mode="after")
    def _prices_as_price(self) -> GeneratorProfile:
        # Profiles written before `price` keep working: same money, the unit converted.
        if self.prices is not None:
            if "price" in self.model_fields_set:
                raise ValueError("give `price` (USD per million tokens) or the earlier `prices` (per 1k), not both")
            object.__setattr__(self, "price", self.prices.as_price())
        return self

    @field_validator("backend")
    @classmethod
    def _backend_known(cls, v: str) -> str:
        get_backend(v)  # RegistryError (a ValueError) lists the known backends
        return v

    @field_validator("options")
    @classmethod
    def _options_fit_the_backend(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Checked against the backend constructor's signature without importing the backend (backends.py);
        # pydantic nests the error under `options`, so it points at the misspelled key's line.
        if "backend" in info.data:
            check_options(info.data["backend"], v)
        return v


class EmbedderProfile(_Strict):
    model: str = "all-MiniLM-L6-v2"  # a sentence-transformers name, hub id or path; `static:NAME` distills NAME
    batch_size: int = 64
    device: str = "auto"

    @field_validator("model")
    @classmethod
    def _static_names_a_model(cls, v: str) -> str:
        if is_static(v):
            base_model(v)  # ValueError: nothing after `static:`
        return v


class StoreProfile(_Strict):
    root: str = ""  # empty: <state dir>/store


class Profile(_Strict):
    name: str = DEFAULT_PROFILE
    description: str = ""
    store: StoreProfile = StoreProfile()
    generators: dict[str, GeneratorProfile] = Field(
        default_factory=lambda: {"generator": GeneratorProfile(backend="smoke")}
    )
    embedders: dict[str, EmbedderProfile] = Field(default_factory=lambda: {"embedder": EmbedderProfile()})
    gpus: int = Field(default=1, ge=0)  # size of the `gpu` concurrency pool this deployment has

    def store_root(self) -> str:
        root = self.store.root or str(state_dir() / "store")
        if "://" in root or Path(root).is_absolute():
            return root
        return str(Path(root).resolve())


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above `start` that has resources/ (the project of a spec), else the working folder."""
    start = start.resolve()
    return next((d for d in (start, *start.parents) if (d / "resources").is_dir()), Path.cwd())


def profiles_dir(project_root: Path | None = None) -> Path:
    return (project_root or Path.cwd()) / "resources"


def load_profile(name: str | None = None, project_root: Path | None = None) -> Profile:
    """Load resources/<name>.yaml (name from SYNTHFLOW_PROFILE, default `local`)."""
    name = name or os.environ.get("SYNTHFLOW_PROFILE") or DEFAULT_PROFILE
    path = profiles_dir(project_root) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profiles_dir(project_root).glob("*.yaml"))
        raise ProfileNotFound(str(path), [(None, "", f"no resource profile named {name!r}; known: {known}")])
    text = path.read_text()
    try:
        node, data = load_yaml(text, str(path))
    except SpecError as e:
        raise ProfileError(e.path, e.problems) from None
    if data is not None and not isinstance(data, dict):
        raise ProfileError(str(path), [(1, "", "a resource profile must be a YAML mapping (store:, generators: ...)")])
    try:
        profile = Profile.model_validate({"name": name, **(data or {})})
    except ValidationError as e:
        raise ProfileError(
            str(path),
            [
                (_line_of(node, tuple(x["loc"])), _field_path(tuple(x["loc"])), x["msg"].removeprefix("Value error, "))
                for x in e.errors()
            ],
        ) from None
    root = profile.store.root
    if root and "://" not in root and not Path(root).is_absolute():
        # Relative to the project, not to wherever the command runs, so store and Dagster instance stay together.
        absolute = str(((project_root or Path.cwd()) / root).resolve())
        profile = profile.model_copy(update={"store": profile.store.model_copy(update={"root": absolute})})
    return profile
