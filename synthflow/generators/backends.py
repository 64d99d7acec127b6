"""Generator backends by name (synthflow.registry.backends), and the model that checks each backend's options.

A profile's `options:` are keyword arguments of the backend's constructor, so the options model is derived from
that constructor's signature: an option added to a backend is accepted (and type-checked) with no edit here.

Built-in backends are named by "module:Class" and their module is NOT imported to check a profile: the signature is
read from the module's source with `ast`. Importing them would cost 1.5 s for transformers (torch), 0.8 s for
openai and 0.6 s for ray on every profile load (`dg list defs`, `synthflow validate`); reading the source costs
milliseconds. A plugin's backend is an object already imported, so its signature comes from `inspect`. A test
checks that both readings agree for every built-in backend.
"""

from __future__ import annotations

import ast
import builtins
import collections.abc
import difflib
import functools
import importlib
import importlib.util
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError

from synthflow.generators.base import Generator
from synthflow.registry import backends

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Option:
    """One keyword argument of a backend constructor, as a profile option."""

    name: str
    annotation: Any = (
        Any  # a type, or Any where the annotation cannot be resolved without importing the backend
    )
    default: Any = _EMPTY  # _EMPTY: required; `...`: has a default that is not a literal


@dataclass(frozen=True)
class Backend:
    """How to build one backend from a profile entry.

    constructor: the class (or factory) called as `constructor(model, **options)`, or "module:Class" for a
    built-in, imported only when a generator is made. `model`: a fixed model name (the smoke backend ignores the
    profile's). `renames`: profile option -> constructor argument, where the constructor's own name would be
    confusing in a profile (ray's `engine`, since `backend` already names the ray backend itself).
    """

    constructor: Callable[..., Generator] | str
    model: str | None = None
    renames: Mapping[str, str] = field(default_factory=dict)
    # An option holding another backend's options -> the option naming that backend (ray: backend_options, engine).
    nested: Mapping[str, str] = field(default_factory=dict)
    # Where the constructor's `**kwargs` go ("module:Class", constructors or dataclasses): their parameter names are
    # the other options it takes (vLLM's engine arguments). Read from source; when a target is not installed, any
    # other option passes, and the backend itself refuses a wrong one.
    kwargs_to: tuple[str, ...] = ()

    def create(self, model: str, options: Mapping[str, Any]) -> Generator:
        kwargs = {self.renames.get(k, k): v for k, v in options.items()}
        return self._resolve()(self.model or model, **kwargs)

    def _resolve(self) -> Callable[..., Generator]:
        if isinstance(self.constructor, str):
            module, _, name = self.constructor.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.constructor

    def options(self) -> tuple[list[Option], bool]:
        """The profile options and whether the constructor takes any other keyword (`**kwargs`)."""
        if isinstance(self.constructor, str):
            params, extra = _options_from_source(self.constructor)
        else:
            params, extra = _options_from_signature(self.constructor)
        back = {v: k for k, v in self.renames.items()}
        return [Option(back.get(o.name, o.name), o.annotation, o.default) for o in params], extra

    @functools.cached_property
    def options_model(self) -> type[BaseModel]:
        """A pydantic model of the options; unknown keys are refused unless the constructor takes `**kwargs`."""
        params, extra = self.options()
        if extra and self.kwargs_to:
            forwarded = _forwarded_names(self.kwargs_to)
            if forwarded is not None:
                own = {o.name for o in params}
                # `model` is the constructor's own first argument, never an option.
                params += [Option(n, Any, ...) for n in sorted(forwarded - own - {"model"})]
                extra = False
        fields: dict[str, Any] = {}
        for o in params:
            # Defaults are not validated; a non-literal one (`...`) only makes the option optional.
            fields[o.name] = (
                o.annotation,
                ... if o.default is _EMPTY else (None if o.default is ... else o.default),
            )
        config = ConfigDict(extra="allow" if extra else "forbid", arbitrary_types_allowed=True)
        return create_model("BackendOptions", __config__=config, **fields)


def _options_from_signature(constructor: Callable[..., Any]) -> tuple[list[Option], bool]:
    sig = inspect.signature(constructor)  # a class gives its __init__ without `self`
    try:
        hints = typing.get_type_hints(constructor.__init__ if inspect.isclass(constructor) else constructor)
    except Exception:
        hints = {}
    params = list(sig.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if params and params[0].kind in positional:
        params = params[1:]  # the model
    options = [
        Option(p.name, hints.get(p.name, Any), p.default)
        for p in params
        if p.kind in (*positional, inspect.Parameter.KEYWORD_ONLY)
    ]
    return options, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# Names an annotation may use without importing the backend; anything else becomes Any (checked by the backend).
_ANNOTATION_NAMES: dict[str, Any] = {
    **{n: t for n, t in vars(builtins).items() if isinstance(t, type)},
    **{n: getattr(typing, n) for n in ("Any", "Literal", "Optional", "Union")},
    **{n: getattr(collections.abc, n) for n in ("Mapping", "Sequence", "Iterable", "Callable")},
}


def _source_of(module: str) -> Path | None:
    """The file of `module`, found without importing it or its parent packages (vllm's __init__ alone is slow)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.origin:
        return None
    base = Path(spec.origin).parent if rest else Path(spec.origin)
    if not rest:
        return base
    path = base.joinpath(*rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _class_def(target: str) -> ast.ClassDef:
    module, _, qualname = target.partition(":")
    path = _source_of(module)
    if path is None:
        raise ValueError(f"backend module {module!r} is not installed")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == qualname), None)
    if cls is None:
        raise ValueError(f"{target}: no class {qualname} in {path}")
    return cls


def _init_of(cls: ast.ClassDef) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)


def _options_from_source(target: str) -> tuple[list[Option], bool]:
    init = _init_of(_class_def(target))
    if init is None:
        raise ValueError(f"{target}: the class has no __init__")
    a = init.args
    positional = [*a.posonlyargs, *a.args]
    defaults = [_EMPTY] * (len(positional) - len(a.defaults)) + list(a.defaults)
    options = [
        Option(p.arg, _annotation(p.annotation), _default(d))
        for p, d in zip(positional[2:], defaults[2:], strict=True)  # self, model
    ]
    options += [
        Option(p.arg, _annotation(p.annotation), _EMPTY if d is None else _default(d))
        for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
    ]
    return options, a.kwarg is not None


def _forwarded_names(targets: tuple[str, ...]) -> set[str] | None:
    """Parameter names of the constructors (or dataclass fields) that receive a backend's `**kwargs`."""
    names: set[str] = set()
    try:
        for target in targets:
            cls = _class_def(target)
            init = _init_of(cls)
            if init is not None:
                a = init.args
                names |= {p.arg for p in [*a.posonlyargs, *a.args][1:] + a.kwonlyargs}
            else:  # a dataclass: its annotated class attributes
                names |= {
                    n.target.id
                    for n in cls.body
                    if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                }
    except (ValueError, OSError, SyntaxError):
        return None
    return names


def _annotation(node: ast.expr | None) -> Any:
    if node is None:
        return Any
    try:
        return eval(
            compile(ast.Expression(node), "<annotation>", "eval"), {"__builtins__": {}}, _ANNOTATION_NAMES
        )
    except Exception:
        return Any


def _default(node: ast.expr | object) -> Any:
    if not isinstance(node, ast.expr):
        return node
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ...


def _adopt(name: str, obj: object) -> Backend | None:
    if isinstance(obj, Backend):
        return obj
    return Backend(obj) if callable(obj) else None


backends.adopt = _adopt


def register_backend(name: str, backend: Backend) -> Backend:
    return backends.register(name, backend)


def get_backend(name: str) -> Backend:
    return backends.get(name)


def check_options(backend: str, options: Mapping[str, Any]) -> None:
    """Raise pydantic's ValidationError for options the backend's constructor does not take, or of a wrong type.

    Locations are option names, so a profile's loader can point at the line; a misspelled option's message names
    the options the backend has.
    """
    b = get_backend(backend)
    model = b.options_model
    try:
        model.model_validate(dict(options))
    except ValidationError as e:
        raise _errors(
            (
                tuple(err["loc"]),
                _unknown(backend, str(err["loc"][-1]), list(model.model_fields))
                if err["type"] == "extra_forbidden"
                else err["msg"],
                err.get("input"),
            )
            for err in e.errors()
        ) from None
    for key, names_backend in b.nested.items():
        inner = options.get(names_backend, model.model_fields[names_backend].default)
        if key not in options or not isinstance(options[key], Mapping):
            continue
        if not isinstance(inner, str) or inner not in backends:
            known = ", ".join(backends.names())
            raise _errors([((names_backend,), f"not a generator backend; known: {known}", inner)])
        try:
            check_options(inner, options[key])
        except ValidationError as e:
            raise _errors(((key, *err["loc"]), err["msg"], err.get("input")) for err in e.errors()) from None


def _unknown(backend: str, name: str, known: list[str]) -> str:
    msg = f"not an option of the {backend} backend"
    if len(known) <= 20:
        return f"{msg}; its options: {', '.join(sorted(known))}"
    close = difflib.get_close_matches(name, known, n=3)
    return f"{msg}" + (f"; did you mean {' or '.join(close)}?" if close else f" (it has {len(known)} options)")


def _errors(problems: Iterable[tuple[tuple[Any, ...], str, Any]]) -> ValidationError:
    return ValidationError.from_exception_data(
        "options",
        [
            InitErrorDetails(
                type=PydanticCustomError("backend_option", "{message}", {"message": msg}),
                loc=loc,
                input=value,
            )
            for loc, msg, value in problems
        ],
    )


def make_generator(backend: str, model: str, **options: Any) -> Generator:
    return get_backend(backend).create(model, options)


# Built-ins by module path: a profile that uses one backend never imports the others (vLLM alone takes seconds).
_TRANSFORMERS = "synthflow.generators.transformers_backend:TransformersGenerator"
register_backend("transformers", Backend(_TRANSFORMERS))
register_backend("smoke", Backend(_TRANSFORMERS, model="smoke"))
register_backend(
    "vllm",
    Backend(
        "synthflow.generators.vllm_backend:VLLMGenerator",
        kwargs_to=("vllm.entrypoints.llm:LLM", "vllm.engine.arg_utils:EngineArgs"),
    ),
)
register_backend("openai", Backend("synthflow.generators.openai_backend:OpenAIGenerator"))
register_backend("openai_batch", Backend("synthflow.generators.batch_backend:BatchGenerator"))
register_backend("python", Backend("synthflow.generators.python_backend:PythonGenerator"))
register_backend(
    "ray",
    Backend(
        "synthflow.generators.ray_backend:RayGenerator",
        renames={"engine": "backend"},
        nested={"backend_options": "engine"},
    ),
)
