"""Short answers (numbers, fractions, percentages, expressions) parsed from model text and compared with sympy.

Shared by the math_answer and self_consistency verifiers. Generated text is untrusted: sympy's parser evaluates
Python, so a string reaches it only after it is reduced to digits, operators, parentheses, single-letter symbols
and a few known function names, with exponents bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import sympy
from sympy.core.function import AppliedUndef
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)


@dataclass(frozen=True)
class Answer:
    text: str  # the part of the input the value came from, for reasons a person reads
    value: sympy.Expr
    percent: bool = False  # written with %: 25% matches both 25 and 0.25

    def __str__(self) -> str:
        return self.text


_MAX_EXPR_CHARS = 200
_MAX_EXPONENT = 1000  # 9^9^9 must never reach sympy's evaluator
_NAMES = {"sqrt": sympy.sqrt, "pi": sympy.pi}
_TRANSFORMS = (*standard_transformations, implicit_multiplication_application, convert_xor)

# A number as people write it: 1,234.5 / -3 / 0.75 / 3/4 / .5, with an optional percent sign.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|\.\d+)\s*%?")
_HASH_MARK = re.compile(r"####\s*(.+?)\s*$", re.S)
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*[:=]?\s*(.+?)(?:\.\s|\.?\s*$|\n)", re.I | re.S
)
_UNICODE = str.maketrans({"−": "-", "–": "-", "×": "*", "÷": "/", "·": "*", "π": "pi", "√": "sqrt", "°": ""})


def parse_answer(value: object) -> Answer | None:
    """The answer a field states: `42`, `3/4`, `25%`, `$1,200`, `x = 2\\sqrt{3}`, `#### 7`, `\\boxed{5}`, `12 apples`."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Answer(str(value), sympy.Integer(value))
    if isinstance(value, float):
        return (
            None if not math.isfinite(value) else Answer(format(value, ".15g"), sympy.Rational(repr(value)))
        )
    text = str(value).strip()
    if not text:
        return None
    segment = _marked_segment(text) or text
    found = _expression(segment)
    if found is None and not _looks_like_math(segment):
        found = _last_number(segment)  # prose around a number: "12 apples"
    return found


def final_value(solution: object) -> Answer | None:
    """The result a worked solution arrives at: a marked answer (####, \\boxed, "the answer is"), else the right-hand
    side of the last `=` in the last sentence that has one, else the last number in the text."""
    if solution is None:
        return None
    text = str(solution).strip()
    marked = _marked_segment(text)
    if marked:
        return _expression(marked) or _last_number(marked)
    for sentence in reversed([s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]):
        if "=" in sentence:
            found = _expression(sentence.rsplit("=", 1)[1])
            if found is not None:
                return found
            break
    return _last_number(text)


def equivalent(a: Answer, b: Answer, rel_tol: float = 1e-6) -> bool:
    """Equal as numbers (within rel_tol) or symbolically; a percentage also matches its fraction."""
    return any(_equal(x, y, rel_tol) for x in _readings(a) for y in _readings(b))


def answers_agree(x: object, y: object, rel_tol: float = 1e-6) -> bool:
    """Two stated answers agree: as math when both parse, or as normalized text (multiple choice, words)."""
    ax, ay = parse_answer(x), parse_answer(y)
    if ax is not None and ay is not None and equivalent(ax, ay, rel_tol):
        return True
    return normalize_text_answer(x) == normalize_text_answer(y) != ""


def normalize_text_answer(value: object) -> str:
    s = "" if value is None else str(value)
    s = _marked_segment(s) or s
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    return re.sub(r"\s+", " ", s.strip().strip("$").strip().rstrip(".").strip()).casefold()


def _readings(a: Answer) -> list[sympy.Expr]:
    return [a.value, a.value / 100] if a.percent else [a.value]


def _equal(x: sympy.Expr, y: sympy.Expr, rel_tol: float) -> bool:
    try:
        if x.is_number and y.is_number:
            cx, cy = complex(sympy.N(x, 30)), complex(sympy.N(y, 30))
            return abs(cx - cy) <= max(rel_tol * max(abs(cx), abs(cy)), 1e-12)
        return sympy.simplify(x - y) == 0
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, sympy.SympifyError):
        return False


def _marked_segment(text: str) -> str | None:
    m = _HASH_MARK.search(text)
    if m:
        return m.group(1).strip()
    boxed = _last_braced(text, r"\boxed")
    if boxed is not None:
        return boxed
    matches = list(_ANSWER_IS.finditer(text))
    return matches[-1].group(1).strip() if matches else None


def _last_braced(text: str, command: str) -> str | None:
    """Content of the last `command{...}` with balanced braces."""
    start = text.rfind(command + "{")
    if start < 0:
        return None
    content = _braced_at(text, start + len(command))
    return content[0] if content else None


def _braced_at(text: str, i: int) -> tuple[str, int] | None:
    """(content, index after the closing brace) for the group opening at text[i] == '{'."""
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return None


def _last_number(text: str) -> Answer | None:
    text = text.translate(_UNICODE)
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    raw = m.group(0).strip()
    # "5-3" ends in the number 3, not -3: a minus right after a value is subtraction.
    before = text[: m.start()].rstrip()
    if raw.startswith("-") and before and (before[-1].isalnum() or before[-1] == ")"):
        raw = raw[1:]
    percent = raw.endswith("%")
    number = raw.rstrip("%").strip().replace(",", "")
    try:
        if "/" in number:
            num, den = (sympy.Rational(p.strip()) for p in number.split("/"))
            if den == 0:
                return None
            value = num / den
        else:
            value = sympy.Rational(number)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return Answer(raw, value, percent)


def _expression(segment: str) -> Answer | None:
    text = segment.strip()
    cleaned, percent = _clean(text)
    if not cleaned:
        return None
    value = _safe_parse(cleaned)
    return None if value is None else Answer(text.strip().rstrip("."), value, percent)


def _clean(text: str) -> tuple[str, bool]:
    """LaTeX and prose decorations stripped: what is left should be a plain expression."""
    s = text.translate(_UNICODE).strip()
    s = s.strip("$").replace("\\$", "").replace("$", "")
    s = _latex_to_plain(s)
    if "=" in s:
        s = s.rsplit("=", 1)[1]  # "x = 5" states 5
    s = s.strip().rstrip(".").strip()
    percent = s.endswith("%")
    s = s.rstrip("%").strip()
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # thousands separators
    return s, percent


def _latex_to_plain(s: str) -> str:
    for cmd in ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ "):
        s = s.replace(cmd, " " if cmd == "\\ " else "")
    s = re.sub(r"\\%", "%", s)
    # Units and words inside \text{} say nothing about the value ("12\text{ cm}").
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{[^{}]*\}", " ", s)
    s = _replace_frac(s)
    s = _replace_sqrt(s)
    s = re.sub(r"\\(?:cdot|times|ast)", "*", s)
    s = s.replace("\\div", "/").replace("\\pi", " pi ")
    s = s.replace("{", "(").replace("}", ")")
    return s


def _replace_frac(s: str) -> str:
    while True:
        m = re.search(r"\\[dt]?frac", s)
        if not m:
            return s
        i = m.end()
        num = _braced_at(s, i)
        if num is None:
            # \frac12 shorthand: two single characters
            if i + 1 < len(s):
                s = s[: m.start()] + f"(({s[i]})/({s[i + 1]}))" + s[i + 2 :]
                continue
            return s
        den = _braced_at(s, num[1])
        if den is None:
            return s
        s = s[: m.start()] + f"(({num[0]})/({den[0]}))" + s[den[1] :]


def _replace_sqrt(s: str) -> str:
    while True:
        m = re.search(r"\\sqrt", s)
        if not m:
            return s
        i = m.end()
        index = None
        if i < len(s) and s[i] == "[":
            close = s.find("]", i)
            if close < 0:
                return s
            index, i = s[i + 1 : close], close + 1
        arg = _braced_at(s, i)
        if arg is None:
            s = s[: m.start()] + "sqrt" + s[i:]
            continue
        inner = f"sqrt({arg[0]})" if index is None else f"(({arg[0]})**(1/({index})))"
        s = s[: m.start()] + inner + s[arg[1] :]


_ALLOWED = re.compile(r"^[0-9A-Za-z+\-*/^().\s]*$")
_WORD = re.compile(r"[A-Za-z]+")


@lru_cache(maxsize=4096)
def _safe_parse(s: str) -> sympy.Expr | None:
    if len(s) > _MAX_EXPR_CHARS or not _ALLOWED.match(s) or not re.search(r"[0-9A-Za-z]", s):
        return None
    # Words other than known functions are prose ("12 apples"), not products of symbols.
    if any(len(w) > 1 and w not in _NAMES for w in _WORD.findall(s)):
        return None
    try:
        expr = parse_expr(
            s, local_dict={}, global_dict=_global_dict(), transformations=_TRANSFORMS, evaluate=False
        )
    except (
        Exception
    ):  # sympy raises a zoo of types for malformed input; any of them means "not an expression"
        return None
    if not isinstance(expr, sympy.Expr) or not _bounded(expr):
        return None
    try:
        value = expr.doit()
    except Exception:
        return None
    return None if value.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan) else value


def _looks_like_math(segment: str) -> bool:
    """Only operators, digits and known names: a formula that failed to parse is not prose with a number in it."""
    cleaned, _ = _clean(segment)
    return bool(_ALLOWED.match(cleaned)) and all(len(w) == 1 or w in _NAMES for w in _WORD.findall(cleaned))


@lru_cache(maxsize=1)
def _global_dict() -> dict:
    names: dict = {}
    exec(
        "from sympy import Add, Mul, Pow, Integer, Float, Rational, Symbol, Function", names
    )  # what the transformations emit
    names.update(_NAMES)
    names["__builtins__"] = {}  # nothing but the names above is reachable from parsed text
    return names


def _bounded(expr: sympy.Expr) -> bool:
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, AppliedUndef):  # f(x): an unknown function is not an answer
            return False
        if isinstance(node, sympy.Pow):
            exp = node.exp
            if not exp.is_number:
                continue
            try:
                if abs(float(sympy.N(exp, 15))) > _MAX_EXPONENT:
                    return False
            except (TypeError, ValueError, OverflowError):
                return False
    return True
