"""The sandboxed template language of endpoint files (Tinybird-compatible functions).

Jinja2 shapes the SQL; values never enter it. A typed function such as `Int32(x, 10)`
validates and converts the request value, records it as a ClickHouse query parameter and
renders only the placeholder `{p_x:Int32}`. Identifier helpers (`column`, `columns`,
`symbol`) accept only allow-listed names and render them back-quoted. Everything a
template may call is in `FUNCTIONS`; the environment has no other globals, a short list of
filters, `StrictUndefined`, and the immutable sandbox (no `_` attributes, no mutation).

A template can print (`{{ ... }}`) only what these functions return, plain numbers and
`None` (as NULL): printing a raw request value is an error, so nothing user-typed can
reach the SQL text by accident.

Render state lives in a `ContextVar` set by `render_template`, never in the template's
own namespace, so a template cannot reach it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from redpoll.errors import ParameterError, RedpollError

__all__ = (
    "FUNCTIONS",
    "SCALAR_TYPES",
    "TYPE_FUNCTIONS",
    "Arg",
    "ArgList",
    "RenderState",
    "TemplateError",
    "convert_value",
    "make_environment",
    "render_template",
)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_INT_BITS = {
    **{f"Int{b}": (b, True) for b in (8, 16, 32, 64, 128, 256)},
    **{f"UInt{b}": (b, False) for b in (8, 16, 32, 64, 128, 256)},
}
SCALAR_TYPES = (
    "String",
    "Boolean",
    *_INT_BITS,
    "Float32",
    "Float64",
    "Date",
    "DateTime",
    "DateTime64",
)
_ALIASES = {"Int": "Int32", "Integer": "Int32", "bool": "Boolean"}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_RANGES = {
    "Date": (datetime(1970, 1, 1), datetime(2149, 6, 6, 23, 59, 59)),
    "DateTime": (datetime(1970, 1, 1), datetime(2106, 2, 7, 6, 28, 15)),
    "DateTime64": (datetime(1900, 1, 1), datetime(2299, 12, 31, 23, 59, 59, 999999)),
}


class TemplateError(RedpollError):
    """The endpoint file itself is wrong (a bug for its author, not the caller): 500."""

    status = 500

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class Arg(str):
    """A request value as the template sees it: a `str` that knows its parameter name."""

    param_name: str

    def __new__(cls, value: str, name: str) -> Arg:
        obj = super().__new__(cls, value)
        obj.param_name = name
        return obj


class ArgList(list):  # type: ignore[type-arg]
    """A parameter given several times (`?x=1&x=2`): a list of `Arg` with one name."""

    def __init__(self, values: Iterable[Any], name: str) -> None:
        super().__init__(Arg(str(v), name) for v in values)
        self.param_name = name


class _Sql:
    """Mixin for values that may be printed: `_sql` is the text they render to."""

    _sql: str


class _Str(str, _Sql):
    pass


class _Int(int, _Sql):
    pass


class _Float(float, _Sql):
    pass


class _List(list, _Sql):  # type: ignore[type-arg]
    pass


def _typed(base: type, value: Any, sql: str) -> Any:
    obj = base(value)
    obj._sql = sql
    return obj


@dataclasses.dataclass
class RenderState:
    """Per-render bookkeeping: collected parameter values and the identifier allow-list."""

    check: bool = False  # load-time render: missing values are fine, error() is a no-op
    identifiers: frozenset[str] | None = None  # None: syntax-only check (first load pass)
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    types: dict[str, str] = dataclasses.field(default_factory=dict)
    used_identifiers: set[str] = dataclasses.field(default_factory=set)
    errors: list[str] = dataclasses.field(default_factory=list)

    def bind(self, name: str, ch_type: str, value: Any) -> str:
        """Register a value and return its placeholder, reusing an identical binding."""
        base = f"p_{name}"
        key, n = base, 1
        while key in self.parameters:
            if self.types[key] == ch_type and self.parameters[key] == value:
                return f"{{{key}:{ch_type}}}"
            n += 1
            key = f"{base}_{n}"
        self.parameters[key] = value
        self.types[key] = ch_type
        return f"{{{key}:{ch_type}}}"


_STATE: contextvars.ContextVar[RenderState] = contextvars.ContextVar("redpoll_render_state")


def _state() -> RenderState:
    return _STATE.get()


def _name_of(x: Any, fn: str) -> str:
    if isinstance(x, (Arg, ArgList)):
        return x.param_name
    if isinstance(x, Undefined):
        return str(x._undefined_name)
    raise TemplateError(f"the first argument of {fn}() must be a request parameter name, got {x!r}")


def _missing(x: Any) -> bool:
    return x is None or isinstance(x, Undefined)


# --- value conversion -----------------------------------------------------------------


def convert_value(type_name: str, raw: Any, name: str) -> tuple[Any, str]:
    """Validate `raw` as `type_name`; return (value to bind, ClickHouse type).

    Raises:
        ParameterError: naming the parameter, when the value does not fit the type.
    """
    type_name = _ALIASES.get(type_name, type_name)

    def bad(why: str = "") -> ParameterError:
        shown = raw if len(str(raw)) <= 60 else str(raw)[:57] + "..."
        return ParameterError(
            f"Error validating '{shown}' to type {type_name} for parameter '{name}'"
            + (f": {why}" if why else "")
        )

    if isinstance(raw, (list, tuple)):
        raise ParameterError(f"Parameter '{name}' was given more than once")
    if type_name == "String":
        if isinstance(raw, (dict, bool)):
            raise bad()
        return str(raw), "String"
    if type_name in _INT_BITS:
        bits, signed = _INT_BITS[type_name]
        if isinstance(raw, bool) or not (isinstance(raw, int) or _INT_RE.match(str(raw))):
            raise bad()
        value = int(raw)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if not lo <= value <= hi:
            raise bad(f"out of range [{lo}, {hi}]")
        return value, type_name
    if type_name in ("Float32", "Float64"):
        if isinstance(raw, bool) or not (
            isinstance(raw, (int, float)) or _FLOAT_RE.match(str(raw))
        ):
            raise bad()
        number = float(raw)
        if not math.isfinite(number):
            raise bad("not finite")
        return number, type_name
    if type_name == "Boolean":
        text = str(raw).strip().lower()
        if text in ("1", "true"):
            return True, "Bool"
        if text in ("0", "false"):
            return False, "Bool"
        raise bad("use true/false or 1/0")
    if type_name in ("Date", "DateTime", "DateTime64"):
        return _convert_datetime(type_name, str(raw).strip(), bad)
    raise TemplateError(f"unknown parameter type {type_name!r}")


def _convert_datetime(
    type_name: str, text: str, bad: Callable[..., ParameterError]
) -> tuple[str, str]:
    if type_name == "Date":
        if not _DATE_RE.match(text):
            raise bad("expected YYYY-MM-DD")
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise bad(str(exc)) from None
    else:
        if not _DATETIME_RE.match(text):
            raise bad("expected YYYY-MM-DD hh:mm:ss")
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise bad(str(exc)) from None
    tz = ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
        tz = "'UTC'"
    lo, hi = _RANGES[type_name]
    if not lo <= value <= hi:
        raise bad(f"out of range [{lo}, {hi}]")
    if type_name == "Date":
        return value.date().isoformat(), "Date"
    if type_name == "DateTime":
        return value.strftime("%Y-%m-%d %H:%M:%S"), f"DateTime({tz})" if tz else "DateTime"
    ch = "DateTime64(6, 'UTC')" if tz else "DateTime64(6)"
    return value.strftime("%Y-%m-%d %H:%M:%S.%f"), ch


def _check_bounds(name: str, value: Any, enum: Any, min_: Any, max_: Any, type_name: str) -> None:
    if enum is not None:
        allowed = [convert_value(type_name, e, name)[0] for e in enum]
        if value not in allowed:
            raise ParameterError(f"Parameter '{name}' must be one of {list(enum)}, got '{value}'")
    if min_ is not None and value < convert_value(type_name, min_, name)[0]:
        raise ParameterError(f"Parameter '{name}' must be >= {min_}, got {value}")
    if max_ is not None and value > convert_value(type_name, max_, name)[0]:
        raise ParameterError(f"Parameter '{name}' must be <= {max_}, got {value}")


_DUMMY = {
    "String": "",
    "Boolean": False,
    "Date": "1970-01-02",
    "DateTime": "1970-01-02 00:00:00",
    "DateTime64": "1970-01-02 00:00:00",
}


def _make_scalar(type_name: str) -> Callable[..., Any]:
    canonical = _ALIASES.get(type_name, type_name)

    def typed(
        x: Any = None,
        default: Any = None,
        description: str | None = None,
        required: bool | None = None,
        example: Any = None,
        enum: Any = None,
        min: Any = None,
        max: Any = None,
        defined: bool = True,
        format: Any = None,
    ) -> Any:
        state = _state()
        name = _name_of(x, type_name)
        raw: Any = None if _missing(x) else x
        if raw is None:
            if required and not state.check:
                raise ParameterError(f"Required parameter '{name}' is not defined")
            raw = default
        if raw is None:
            if state.check:
                raw = example if example is not None else _DUMMY.get(canonical, 0)
                value, ch_type = convert_value(canonical, raw, name)
                return _wrap(canonical, value, state.bind(name, ch_type, None))
            if not defined:
                return None
            raise ParameterError(f"Required parameter '{name}' ({canonical}) is not defined")
        value, ch_type = convert_value(canonical, raw, name)
        _check_bounds(name, value, enum, min, max, canonical)
        return _wrap(canonical, value, state.bind(name, ch_type, value))

    typed.__name__ = type_name
    return typed


def _wrap(type_name: str, value: Any, sql: str) -> Any:
    if isinstance(value, bool):
        return _typed(_Int, int(value), sql)
    if isinstance(value, int):
        return _typed(_Int, value, sql)
    if isinstance(value, float):
        return _typed(_Float, value, sql)
    return _typed(_Str, value, sql)


def array(
    x: Any = None,
    _type: str = "String",
    default: Any = None,
    description: str | None = None,
    required: bool | None = None,
    example: Any = None,
    enum: Any = None,
    min: Any = None,
    max: Any = None,
    defined: bool = True,
    format: Any = None,
) -> Any:
    """`Array(x, 'Int32', default='1,2')`: a comma-separated or repeated parameter."""
    state = _state()
    name = _name_of(x, "Array")
    inner = _ALIASES.get(_type, _type)
    if inner not in SCALAR_TYPES:
        raise TemplateError(f"Array(): unsupported element type {_type!r}")
    raw: Any = None if _missing(x) else x
    if raw is None:
        if required and not state.check:
            raise ParameterError(f"Required parameter '{name}' is not defined")
        raw = default
    if raw is None:
        if state.check:
            raw = example if example is not None else []
        elif not defined:
            return None
        else:
            raise ParameterError(f"Required parameter '{name}' (Array({inner})) is not defined")
    items = list(raw) if isinstance(raw, (list, tuple)) else _split(str(raw), ",")
    values = []
    for item in items:
        value, _ = convert_value(inner, item, name)
        _check_bounds(name, value, enum, min, max, inner)
        values.append(value)
    ch_type = f"Array({_ch_name(inner)})"
    placeholder = state.bind(name, ch_type, None if state.check else values)
    return _typed(_List, values, placeholder)


def _ch_name(type_name: str) -> str:
    return {"Boolean": "Bool", "DateTime64": "DateTime64(6)"}.get(type_name, type_name)


def _split(text: str, sep: str) -> list[str]:
    if text.strip() == "":
        return []
    return [s.strip() for s in text.split(sep)]


# --- helpers --------------------------------------------------------------------------


def defined(x: Any = None) -> bool:
    """True when the request carried the parameter (an empty value counts)."""
    return not _missing(x)


def _quote_ident(name: str) -> str:
    return ".".join(
        "`" + part.replace("\\", "\\\\").replace("`", "\\`") + "`" for part in name.split(".")
    )


def _identifier(value: Any, name: str, enum: Any, *, from_default: bool) -> str:
    state = _state()
    text = str(value).strip()
    allowed = frozenset(str(e) for e in enum) if enum is not None else state.identifiers
    ok = IDENTIFIER.match(text) is not None and (allowed is None or text in allowed)
    if not ok:
        if from_default:
            raise TemplateError(f"default identifier {text!r} is not a known column")
        raise ParameterError(f"Invalid column name '{text}' for parameter '{name}'")
    if from_default and enum is None:
        state.used_identifiers.add(text)
    return text


def column(x: Any = None, default: str | None = None, enum: Any = None) -> Any:
    """`column(sort_by, 'ts')`: one allow-listed column name, back-quoted."""
    name = _name_of(x, "column")
    if _missing(x):
        if default is None and _state().check:
            return _typed(_Str, "", "`placeholder`")
        if default is None:
            raise ParameterError(f"Required parameter '{name}' is not defined")
        text = _identifier(default, name, enum, from_default=True)
    else:
        text = _identifier(x, name, enum, from_default=False)
    return _typed(_Str, text, _quote_ident(text))


def columns(
    x: Any = None, default: str | None = None, fn: str | None = None, enum: Any = None
) -> Any:
    """`columns(cols, 'a,b')`: a comma-separated list of allow-listed columns."""
    name = _name_of(x, "columns")
    from_default = _missing(x)
    if from_default:
        if default is None and _state().check:
            return _typed(_Str, "", "`placeholder`")
        if default is None:
            raise ParameterError(f"Required parameter '{name}' is not defined")
        raw = default
    else:
        raw = x
    if isinstance(raw, list):
        raw = ",".join(raw)
    names = [_identifier(c, name, enum, from_default=from_default) for c in _split(str(raw), ",")]
    if not names:
        raise ParameterError(f"Parameter '{name}' needs at least one column")
    if fn is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(fn)):
        raise TemplateError(f"columns(): invalid function name {fn!r}")
    parts = [
        f"{fn}({_quote_ident(c)}) AS {_quote_ident(c)}" if fn else _quote_ident(c) for c in names
    ]
    return _typed(_Str, ",".join(names), ", ".join(parts))


def symbol(x: Any = None, quote: str = "`", enum: Any = None) -> Any:
    """`symbol(x)`: like `column(x)` without a default."""
    name = _name_of(x, "symbol")
    if _missing(x) and _state().check:
        return _typed(_Str, "", "`placeholder`")
    if _missing(x):
        raise ParameterError(f"Required parameter '{name}' is not defined")
    text = _identifier(x, name, enum, from_default=False)
    return _typed(_Str, text, _quote_ident(text))


_SQL_AND_OPS = {"in": "IN", "not_in": "NOT IN", "gt": ">", "lt": "<", "gte": ">=", "lte": "<="}


def sql_and(**conditions: Any) -> Any:
    """`sql_and(a=Int32(a, defined=False), b__in=Array(b, 'String', defined=False))`."""
    parts = []
    for key, value in conditions.items():
        if value is None:
            continue
        col, _, op = key.rpartition("__") if "__" in key else (key, "", "")
        if op and op not in _SQL_AND_OPS:
            raise TemplateError(f"sql_and(): operator {op!r} not supported")
        if not IDENTIFIER.match(col):
            raise TemplateError(f"sql_and(): invalid column {col!r}")
        if not isinstance(value, _Sql):
            raise TemplateError(f"sql_and(): the value for {key} must come from a typed function")
        parts.append(f"{_quote_ident(col)} {_SQL_AND_OPS.get(op, '=')} {value._sql}")
    return _typed(_Str, "", " AND ".join(parts) if parts else "1")


def split_to_array(x: Any = None, default: str = "", separator: str = ",") -> list[Arg]:
    """Split a parameter into a list of values (each still bound to the parameter name)."""
    name = _name_of(x, "split_to_array")
    if isinstance(x, ArgList):
        return list(x)
    raw = default if _missing(x) else x
    return [Arg(s, name) for s in _split(str(raw), separator)]


def error(message: str, code: int = 400) -> str:
    """`{{ error('x is required') }}`: answer the request with this message."""
    state = _state()
    if state.check:
        state.errors.append(str(message))
        return cast(str, _typed(_Str, "", ""))
    status = int(code) if 400 <= int(code) < 500 else 400
    raise RedpollError(str(message), status=status)


def enumerate_with_last(items: Iterable[Any]) -> list[tuple[bool, Any]]:
    items = list(items)
    return [(i == len(items) - 1, v) for i, v in enumerate(items)]


TYPE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: _make_scalar(name) for name in (*SCALAR_TYPES, "Int", "Integer", "bool")
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    **TYPE_FUNCTIONS,
    "Array": array,
    "defined": defined,
    "column": column,
    "columns": columns,
    "symbol": symbol,
    "sql_and": sql_and,
    "split_to_array": split_to_array,
    "error": error,
    "custom_error": error,
    "enumerate_with_last": enumerate_with_last,
}
_FILTERS = ("length", "lower", "upper", "trim", "first", "last", "default", "int", "float")


def _finalize(value: Any) -> str:
    if isinstance(value, _Sql):
        return value._sql
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)) and not isinstance(value, str):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, Undefined):
        value.__str__()  # StrictUndefined raises a clear "x is undefined"
    if isinstance(value, Arg):
        raise TemplateError(
            f"parameter '{value.param_name}' is printed raw; use a typed function, "
            f"e.g. {{{{ String({value.param_name}) }}}}"
        )
    raise TemplateError(f"only typed functions and numbers can be printed, not {value!r}")


def make_environment() -> ImmutableSandboxedEnvironment:
    """The one environment endpoint templates compile in."""
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
        extensions=[],
    )
    env.globals.clear()
    env.globals.update(FUNCTIONS)
    env.filters = {k: v for k, v in env.filters.items() if k in _FILTERS}
    return env


def render_template(template: Any, args: Mapping[str, Any], state: RenderState) -> str:
    """Render with `state` active; request args must already be `Arg`/`ArgList`."""
    token = _STATE.set(state)
    try:
        return str(template.render(**args))
    finally:
        _STATE.reset(token)


def to_args(params: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Wrap the request values of the template's parameters (`names`), dropping the rest."""
    out: dict[str, Any] = {}
    for name in names:
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, (list, tuple)):
            out[name] = ArgList(value, name) if len(value) != 1 else Arg(str(value[0]), name)
        elif value is None:
            continue
        elif isinstance(value, bool):
            out[name] = Arg("true" if value else "false", name)
        else:
            out[name] = Arg(str(value), name)
    return out
