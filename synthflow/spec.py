"""The pipeline spec: one YAML file declares one synthetic dataset.

Every model refuses unknown keys. `load_spec` turns pydantic's error locations back into YAML line numbers so an
error reads `assets/math.yaml:14: generate.sampling.temperature: Input should be a valid number`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from synthflow import registry
from synthflow._version import __version__
from synthflow.templates import TemplateStr, unknown_names


def _invalid(problems: list[tuple[tuple[Any, ...], str, dict[str, Any]]]) -> ValidationError:
    """Errors at locations below the field being validated, so the message points at the offending key's line."""
    return ValidationError.from_exception_data(
        "spec",
        [
            InitErrorDetails(
                type=PydanticCustomError("spec", "{message}", {"message": msg, **ctx}), loc=loc, input=None
            )
            for loc, msg, ctx in problems
        ],
    )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ColumnType = Literal["string", "integer", "float", "boolean"]


class ColumnSpec(Strict):
    """One column of the seed (and of the generated rows) with its constraints."""

    name: str
    type: ColumnType = "string"
    nullable: bool = False
    description: str | None = None
    min: float | None = None
    max: float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    regex: str | None = None
    isin: list[Any] | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from e
        return v


SourceFormat = Literal["jsonl", "csv", "parquet"]


class DataSourceSpec(Strict):
    """Where rows come from: a local path (relative to the spec file), any fsspec URL, or `hf://datasets/ID`."""

    source: str
    format: SourceFormat | None = None  # inferred from the file suffix when left out
    split: str = "train"  # for Hugging Face dataset ids


class SeedSpec(DataSourceSpec):
    columns: list[ColumnSpec] = Field(min_length=1)
    id_column: str | None = None  # a stable row id; rows are numbered when left out
    text: list[str] | str  # column(s) joined into the text that is embedded and deduplicated

    @model_validator(mode="after")
    def _columns_known(self) -> SeedSpec:
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate column names: {sorted(dupes)}")
        for col in self.text_columns:
            if col not in names:
                raise ValueError(f"text column {col!r} is not among the declared columns {names}")
        if self.id_column is not None and self.id_column not in names:
            raise ValueError(f"id_column {self.id_column!r} is not among the declared columns {names}")
        return self

    @property
    def text_columns(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


class RealSpec(DataSourceSpec):
    """Real data that keeps arriving. With `partitioned`, `source` is a template with `{round}` / `{partition}`."""

    partitioned: bool = False


class RoundsSpec(Strict):
    cron: str = "0 0 * * *"  # one round a day by default
    start: str = "2026-01-01"
    timezone: str = "UTC"
    # Declarative automation: on_seed_change starts the next round when the seed's data version changes.
    automation: Literal["none", "on_seed_change"] = "none"

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, v: str) -> str:
        from croniter import croniter

        fields = v.split()
        if len(fields) != 5:
            raise ValueError("cron must have five fields, e.g. '0 0 * * *'")
        # Value by value, so the message says which field is out of range, not just that the cron is bad.
        bad = [
            f"{name} {value!r} is not valid ({allowed})"
            for i, (value, (name, allowed)) in enumerate(zip(fields, _CRON_FIELDS, strict=True))
            if not croniter.is_valid(" ".join(value if j == i else "*" for j in range(5)))
        ]
        if bad or not croniter.is_valid(v):
            raise ValueError("; ".join(bad) or f"{v!r} is not a valid cron expression")
        return v

    @field_validator("start")
    @classmethod
    def _start_is_a_date(cls, v: str) -> str:
        try:
            start_datetime(v)
        except ValueError:
            raise ValueError(
                "start must be a date (2026-01-01) or a date and time (2026-01-01 06:00)"
            ) from None
        return v


_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-6 or SUN-SAT"),
)


def start_datetime(start: str) -> datetime.datetime:
    """`rounds.start` as a datetime: a plain date, an ISO date-time, or Dagster's `%Y-%m-%d-%H:%M`."""
    try:
        return datetime.datetime.fromisoformat(start)
    except ValueError:
        return datetime.datetime.strptime(start, "%Y-%m-%d-%H:%M")


class SamplingSpec(Strict):
    temperature: float = Field(default=0.8, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = -1
    max_tokens: int = Field(default=512, ge=1)
    stop: list[str] = Field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = 0  # base seed; each request gets its own derived seed


class ColumnDef(BaseModel):
    """One entry of `generate.columns`: `name`, `type` (a column type of synthflow.registry.columns) and that
    type's keys, checked by the type's own parameter model (docs/columns.md)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: str

    @property
    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, **(self.model_extra or {})}

    def checked(self) -> Any:
        return registry.columns.get(self.type).params.model_validate(self.entry)


class Price(Strict):
    """What one profile generator costs, in USD per million tokens (profile `generators.<name>.price`).
    0 by default: a local model costs nothing per token."""

    input_per_mtok: float = Field(default=0.0, ge=0)  # prompt tokens
    output_per_mtok: float = Field(default=0.0, ge=0)  # completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


class BudgetLimits(Strict):
    """Token and money limits of a round or of the whole pipeline (None: no limit)."""

    max_tokens: int | None = Field(default=None, ge=1)  # prompt + completion tokens, LLM verifiers included
    max_usd: float | None = Field(default=None, gt=0)  # at the profile's prices


class BudgetSpec(Strict):
    """`generate.budget`: `round` limits each round, `pipeline` the sum over every round (stages/budget.py)."""

    round: BudgetLimits = BudgetLimits()
    pipeline: BudgetLimits = BudgetLimits()


class GenerateSpec(Strict):
    generator: str = "generator"  # name of a generator in the resource profile (the default of llm columns)
    system: TemplateStr | None = None
    # Jinja2 (sandboxed); sees `exemplars` (list of seed rows) and `round`. The single-step form: prompt +
    # output_schema, shorthand for one structured llm column whose fields are the row's columns.
    prompt: TemplateStr | None = None
    few_shot: int = Field(default=3, ge=0)
    # JSON schema of one generated row. With `columns` it is derived from them (every column they fill).
    output_schema: dict[str, Any] | None = None
    columns: list[ColumnDef] | None = Field(default=None, min_length=1)  # the DAG of columns (docs/columns.md)
    rows_per_round: int = Field(default=20, ge=1)  # accepted rows wanted per round
    candidate_budget: int | None = Field(default=None, ge=1)  # most candidates a round may generate
    budget: BudgetSpec = BudgetSpec()  # tokens and USD per round and per pipeline, beside the candidate count
    batch_size: int = Field(default=16, ge=1)  # candidates per generate -> verify step inside a round
    overlap: bool = True  # batch k+1 generates while batch k is verified (docs/architecture.md, The round loop)
    store_every: int = Field(default=8, ge=1)  # results per compacted cache chunk; each result is logged as it arrives (docs/generation.md)
    sampling: SamplingSpec = SamplingSpec()


    @field_validator("output_schema")
    @classmethod
    def _schema_is_object(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(v)
        except jsonschema.SchemaError as e:
            raise _invalid([(tuple(e.path), f"not a valid JSON schema: {e.message}", {})]) from None
        if v.get("type") != "object" or not v.get("properties"):
            raise ValueError("output_schema must be an object schema with properties")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> GenerateSpec:
        if self.columns is None:
            missing = [((f,), "Field required", {}) for f in ("prompt", "output_schema") if getattr(self, f) is None]
            if missing:
                raise _invalid(missing)
            return self
        given = [
            ((f,), f"give {f} on an llm column of `columns`, not beside them", {})
            for f in ("prompt", "system", "output_schema")
            if getattr(self, f) is not None
        ]
        if given:
            raise _invalid(given)
        # The row schema the verifiers, the training-set check and the stores read: every column filled.
        object.__setattr__(self, "output_schema", column_row_schema(self.columns))
        return self

    @property
    def candidate_limit(self) -> int:
        return self.candidate_budget or 4 * self.rows_per_round

    @property
    def generators_used(self) -> list[str]:
        """The profile generators generation calls: the default and each llm column's own."""
        out = [self.generator]
        for c in self.columns or ():
            out += [g for g in c.checked().generators() if g not in out]
        return out


def column_row_schema(columns: list[ColumnDef]) -> dict[str, Any]:
    """Each column checked by its type's model (errors at the column's own key), then the JSON schema of a
    row: every table column the columns fill. Names must be unique, and so must the table columns."""
    problems: list[tuple[tuple[Any, ...], str, dict[str, Any]]] = []
    props: dict[str, Any] = {}
    required: list[str] = []
    owner: dict[str, str] = {}
    for i, col in enumerate(columns):
        try:
            params = col.checked()
        except registry.RegistryError as e:
            problems.append((("columns", i, "type"), str(e), {}))
            continue
        except ValidationError as e:
            for err in e.errors():
                msg = "unknown key (not part of this column type)" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append((("columns", i, *err["loc"]), msg.removeprefix("Value error, "), {}))
            continue
        for name, schema in params.produces().items():
            if name in owner:
                problems.append(
                    (("columns", i, "name"), f"column {name!r} is already filled by column {owner[name]!r}", {})
                )
            owner[name] = col.name
            props[name] = schema
        required += params.required() if hasattr(params, "required") else list(params.produces())
    if problems:
        raise _invalid(problems)
    return {"type": "object", "properties": props, "required": required}


class VerifierSpec(BaseModel):
    """One step of the verify chain: `type` picks the verifier, the other keys are its parameters.

    Parameters are checked by the verifier type's own model, found by name in synthflow.registry (built-ins and
    plugins alike), so adding a verifier never touches this file and the spec imports no verifier.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    name: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        return self.name or self.type

    def checked_params(self) -> BaseModel:
        """The parameters, validated by the verifier type's model. The ValueError names the verifier and the
        parameter; its context is pydantic's error, whose location says where the parameter is."""
        params_model = registry.verifiers.get(self.type).params
        try:
            return params_model.model_validate(self.params)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"verifier {self.label!r} ({self.type}): {where}: {msg}") from None


class CollapseWarningSpec(Strict):
    """`diversity.collapse_warning`: a blocking training-set check that fails when the round's rows narrow against
    the seed over the last `window` rounds (stages/diversity/collapse_warning.py). Off by default: the signals are
    always recorded in p/coverage, but a check that stops a pipeline on a statistical trend is one to opt into."""

    enabled: bool = False
    window: int = Field(default=5, ge=3)  # rounds the trend is fitted over (this one included)
    min_decline: float = Field(default=0.15, gt=0, lt=1)  # fitted fall over the window, and distance below the seed
    signals: list[Literal["spread", "cluster_reach", "vendi", "distinct_2"]] = Field(
        default_factory=lambda: ["spread", "cluster_reach", "vendi", "distinct_2"], min_length=1
    )


class DiversitySpec(Strict):
    """Embedding-space coverage. The round machinery reads these; the diversity stages define the metrics."""

    enabled: bool = True  # off: no embeddings, uniform exemplars, no semantic metrics (e.g. numeric pipelines)
    embedder: str = "embedder"  # name of an embedder in the resource profile
    clusters: int | None = Field(
        default=None, ge=1
    )  # k for the seed map; chosen from the seed size when left out
    target: Literal["seed", "uniform"] | dict[str, float] = "seed"
    exploration: float = Field(default=0.1, ge=0, le=1)
    near_duplicate_threshold: float = Field(default=0.95, gt=0, le=1)
    seed_copy_threshold: float = Field(default=0.9, gt=0, le=1)
    min_vendi: float | None = None
    max_kl: float | None = None
    max_under_covered: int | None = None
    # Real-vs-synthetic distance: unbiased MMD^2 (RBF kernel) of the round's accepted rows against the seed
    # (stages/diversity/mmd.py); both sides subsampled (seeded) to at most reference_rows rows.
    max_mmd: float | None = Field(default=None, ge=0)
    reference_rows: int = Field(default=512, ge=2)
    collapse_warning: CollapseWarningSpec = CollapseWarningSpec()

    @model_validator(mode="after")
    def _embedding_gates_need_embeddings(self) -> DiversitySpec:
        # Both are measured on embeddings; with diversity off they could never be measured, so never judged.
        if not self.enabled and (self.collapse_warning.enabled or self.max_mmd is not None):
            what = "collapse_warning.enabled" if self.collapse_warning.enabled else "max_mmd"
            raise ValueError(f"{what} is measured on embeddings; it needs diversity.enabled: true")
        return self


class AccumulateSpec(Strict):
    policy: str = "accumulate"  # a name in synthflow.registry.policies (built-ins: stages/accumulate.py)
    min_real_fraction: float = Field(default=0.0, ge=0, le=1)
    on_low_real_fraction: Literal["fail", "subsample"] = "fail"
    subsample_size: int | None = Field(default=None, ge=1)  # rows per round for accumulate_subsample

    @field_validator("policy")
    @classmethod
    def _policy_known(cls, v: str) -> str:
        registry.policies.get(v)  # RegistryError (a ValueError) lists the known policies
        return v


class ExportSpec(Strict):
    # hf / parquet: every column, as a dataset or Parquet. messages / dpo / alpaca: the columns TRL's SFT and DPO
    # trainers read (docs/columns.md), stored as a dataset (Parquet when the URL ends in .parquet); raw: every column.
    format: Literal["hf", "parquet", "messages", "dpo", "alpaca", "raw"] = "hf"
    url: str | None = None  # fsspec URL for save_to_disk / Parquet
    hub_repo: str | None = None  # push_to_hub target; token from the HF_TOKEN environment variable
    private: bool = True
    # Which columns the training layouts read; inferred from generate.columns when left out.
    prompt: str | None = None  # the user turn (messages) / instruction (alpaca) / prompt (dpo)
    response: str | None = None  # the assistant turn / output
    messages: str | None = None  # a conversation column: the whole dialogue
    preference: str | None = None  # a preference column: prompt, chosen, rejected
    system: str | None = None  # a system message put first in every `messages` row

    @property
    def layout(self) -> str:
        return "raw" if self.format in ("hf", "parquet") else self.format

    @property
    def storage(self) -> Literal["hf", "parquet"]:
        return "parquet" if self.format == "parquet" or (self.url or "").endswith(".parquet") else "hf"


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    seed: SeedSpec
    real: RealSpec | None = None
    rounds: RoundsSpec = RoundsSpec()
    generate: GenerateSpec
    verify: list[VerifierSpec] = Field(default_factory=lambda: [VerifierSpec(type="schema")])
    diversity: DiversitySpec = DiversitySpec()
    accumulate: AccumulateSpec = AccumulateSpec()
    export: ExportSpec | None = None

    # Set by load_spec; not part of the YAML.
    model_config = ConfigDict(extra="forbid", frozen=True)
    source_path: str | None = Field(default=None, exclude=True)

    @field_validator("verify")
    @classmethod
    def _verifiers_known(cls, v: list[VerifierSpec]) -> list[VerifierSpec]:
        labels = [s.label for s in v]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise ValueError(
                f"verifier names must be unique; give `name:` to repeated types: {sorted(dupes)}"
            )
        problems = []
        for i, spec in enumerate(v):
            try:
                spec.checked_params()
            except ValueError as e:
                # validate_params says which parameter; its pydantic error (the context) says where it is.
                inner = e.__context__
                sub = tuple(inner.errors()[0]["loc"]) if isinstance(inner, ValidationError) else ()
                problems.append(((i, *sub), str(e), {}))
        if problems:
            raise _invalid(problems)
        return v

    @model_validator(mode="after")
    def _template_names_known(self) -> PipelineSpec:
        columns = [c.name for c in self.seed.columns]
        problems = [
            (("generate", field), msg, {"template_line": line})
            for field in ("system", "prompt")
            if getattr(self.generate, field)
            for line, msg in unknown_names(
                getattr(self.generate, field), PROMPT_NAMES, {"exemplars": columns}
            )
        ]
        if problems:
            raise _invalid(problems)
        return self

    @model_validator(mode="after")
    def _columns_graph(self) -> PipelineSpec:
        """Every name a column's template reads is an earlier (or later) column or a prompt name; no cycles."""
        from synthflow.column_graph import CycleError, field_refs, order, template_refs

        cols = self.generate.columns or []
        params = {c.name: c.checked() for c in cols}
        seed_columns = [c.name for c in self.seed.columns]
        structured = {n: p.fields() for n, p in params.items() if p.fields() is not None}
        problems = []
        deps: dict[str, list[str]] = {}
        for i, (name, p) in enumerate(params.items()):
            deps[name] = [d for d in p.reads() if d in params]
            for d in p.reads():
                if d not in params:
                    problems.append(
                        (("generate", "columns", i), f"reads column {d!r}, which is not among {sorted(params)}", {})
                    )
            for field, source in p.templates().items():
                loc = ("generate", "columns", i, field)
                for ref, line in template_refs(source).items():
                    if ref in params and ref != name:
                        deps[name].append(ref)
                    elif ref not in PROMPT_NAMES:
                        what = "itself" if ref == name else "not a column"
                        problems.append(
                            (loc, f"template uses {ref!r}, {what}; it sees the columns {sorted(params)} "
                             f"and {list(PROMPT_NAMES)}", {"template_line": line})
                        )
                for line, msg in [
                    *unknown_names(source, [*params, *PROMPT_NAMES], {"exemplars": seed_columns}),
                    *field_refs(source, structured),
                ]:
                    if "which it is not given" not in msg:
                        problems.append((loc, msg, {"template_line": line}))
        produced = set(self.generate.output_schema["properties"]) if params else set()
        for key in ("prompt", "response", "messages", "preference") if params and self.export else ():
            named = getattr(self.export, key)
            known = set(params) if key in ("messages", "preference") else produced
            if named is not None and named not in known:
                problems.append((("export", key), f"{named!r} is not a column of generate.columns: {sorted(known)}", {}))
        dpo = params and self.export and self.export.format == "dpo" and self.export.preference is None
        if dpo and not any(p.type == "preference" for p in params.values()):
            problems.append((("export", "format"), "dpo needs a preference column in generate.columns", {}))
        for text in self.seed.text_columns if params else ():
            if text not in params:
                problems.append(
                    (("seed", "text"), f"generated rows take their text from a column of generate.columns; "
                     f"{text!r} is none of {sorted(params)}", {})
                )
        try:
            order(deps)
        except CycleError as e:
            first = list(params).index(e.cycle[0])
            problems.append((("generate", "columns", first, "name"), str(e), {}))
        if problems:
            raise _invalid(problems)
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.source_path).parent if self.source_path else Path.cwd()

    @property
    def output_columns(self) -> list[str]:
        return list(self.generate.output_schema["properties"])

    def section_hash(self, *sections: str) -> str:
        """Hash of the named spec sections: the code_version of the assets that read them."""
        data = {s: self.model_dump(mode="json").get(s) for s in sections}
        blob = json.dumps({"synthflow": __version__, **data}, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# The names generate.system and generate.prompt are rendered with (stages/prompts.py, build_request).
PROMPT_NAMES = ("exemplars", "round", "cluster")


class SpecError(ValueError):
    """A spec that cannot be used; the message names file, line and field for each problem."""

    header = "invalid pipeline spec"  # the first line of the message; empty: the problems alone

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]):
        self.path = path
        self.problems = problems
        lines = [
            f"{path}{f':{line}' if line else ''}: {f'{field}: ' if field else ''}{msg}"
            for line, field, msg in problems
        ]
        super().__init__("\n".join(([self.header] if self.header else []) + lines))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree; the deepest node found gives the line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                # The key itself may be the problem (an unknown key): point at the key.
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            isinstance(part, str)
            and part.startswith("function-")
            or part in {"str", "dict[str,float]", "list[str]"}
        ):
            continue  # pydantic's union-branch markers say nothing to a user
        else:
            out += ("." if out else "") + str(part)
    return out


def _duplicate_keys(node: yaml.Node | None, where: str = "") -> list[tuple[int | None, str, str]]:
    """Every key given twice in one mapping (PyYAML silently keeps the last), with both lines."""
    out: list[tuple[int | None, str, str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            field = f"{where}.{key.value}" if where else str(key.value)
            line = key.start_mark.line + 1
            if key.value in first:
                out.append((line, field, f"duplicate key: first given on line {first[key.value]}, again on line {line}"))
            else:
                first[key.value] = line
            out += _duplicate_keys(value, field)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, f"{where}[{i}]")
    return out


def load_yaml(text: str, path: str) -> tuple[yaml.Node | None, Any]:
    """The YAML's node tree (for line numbers) and its data; bad YAML and duplicate keys raise SpecError."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SpecError(path, [(mark.line + 1 if mark else None, "", f"not valid YAML: {e}")]) from e
    dupes = _duplicate_keys(node)
    if dupes:
        raise SpecError(path, dupes)
    return node, data


def _template_line(node: yaml.Node | None, loc: tuple[Any, ...], template_line: int) -> int | None:
    """The file line of a template's own line: a block scalar (`prompt: |`) starts on the line after its key."""
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]  # generate.columns[i]
            continue
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if k.value == part), None)
    if not isinstance(node, yaml.ScalarNode):
        return None
    return node.start_mark.line + template_line + (1 if node.style in ("|", ">") else 0)


def parse_spec(text: str, path: str = "<string>") -> PipelineSpec:
    node, data = load_yaml(text, path)
    if not isinstance(data, dict):
        raise SpecError(path, [(1, "", "the spec must be a YAML mapping (name:, seed:, generate: ...)")])
    try:
        return PipelineSpec.model_validate({**data, "source_path": path})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not part of the spec; check the spelling)"
            ctx = err.get("ctx") or {}
            tline = ctx.get("template_line") or getattr(ctx.get("error"), "lineno", None)
            line = _template_line(node, loc, tline) if tline else None
            problems.append((line or _line_of(node, loc), _field_path(loc), msg))
        raise SpecError(path, problems) from None


def load_spec(path: str | Path) -> PipelineSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(str(p), [(None, "", f"cannot read the spec: {e.strerror}")]) from e
    return parse_spec(text, str(p))
