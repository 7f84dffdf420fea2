"""ClickHouse errors, classified once by their named codes, for the API and the CLI alike.

ClickHouse tells us *what* failed (a numeric code with a stable name, listed in
ClickHouse's `ErrorCodes.cpp`); this module decides *whose fault* it is and what a caller
may read. A caller's mistake (bad SQL in `q=`, a type mismatch, `throwIf`) is a 4xx; a
query stopped by one of the configured limits is its own kind (the caller can narrow the
query); a timeout is 408; anything else is ours (5xx) and its text stays in the log.

`public_message` keeps the first sentence of the error and drops what may reveal
internals: the query text ClickHouse quotes back (`In scope SELECT ...`, `While
processing ...`), expression dumps, stack traces and the server version.
"""

from __future__ import annotations

import enum
import re

__all__ = ("ERROR_CODES", "DbErrorKind", "classify", "error_code", "error_name", "public_message")


class DbErrorKind(enum.Enum):
    CALLER = "caller"  # the query or its input is wrong: 400
    LIMIT = "limit"  # a configured read limit stopped the query: 400, names the limit
    TIMEOUT = "timeout"  # max_execution_time or our deadline: 408
    BUSY = "busy"  # too many queries at once: 429
    OURS = "ours"  # anything else: 500, details only in the log


#: ClickHouse error names (its ErrorCodes.cpp) and numbers, for every error classified here.
#: Errors are matched by name; the number is what clickhouse-connect reports.
ERROR_CODES: dict[str, int] = {
    "CANNOT_PARSE_TEXT": 6,
    "NUMBER_OF_COLUMNS_DOESNT_MATCH": 20,
    "CANNOT_PARSE_QUOTED_STRING": 26,
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27,
    "TOO_MANY_ARGUMENTS_FOR_FUNCTION": 34,
    "TOO_FEW_ARGUMENTS_FOR_FUNCTION": 35,
    "BAD_ARGUMENTS": 36,
    "CANNOT_PARSE_DATE": 38,
    "CANNOT_PARSE_DATETIME": 41,
    "NUMBER_OF_ARGUMENTS_DOESNT_MATCH": 42,
    "ILLEGAL_TYPE_OF_ARGUMENT": 43,
    "ILLEGAL_COLUMN": 44,
    "UNKNOWN_FUNCTION": 46,
    "UNKNOWN_IDENTIFIER": 47,
    "NOT_IMPLEMENTED": 48,
    "TYPE_MISMATCH": 53,
    "UNKNOWN_TABLE": 60,
    "SYNTAX_ERROR": 62,
    "ARGUMENT_OUT_OF_BOUND": 69,
    "CANNOT_CONVERT_TYPE": 70,
    "CANNOT_PARSE_NUMBER": 72,
    "INCORRECT_QUERY": 80,
    "UNKNOWN_DATABASE": 81,
    "INCORRECT_DATA": 117,
    "TOO_LARGE_ARRAY_SIZE": 128,
    "CANNOT_READ_ARRAY_FROM_TEXT": 130,
    "TOO_LARGE_STRING_SIZE": 131,
    "ILLEGAL_DIVISION": 153,
    "TOO_MANY_ROWS": 158,
    "TIMEOUT_EXCEEDED": 159,
    "TOO_SLOW": 160,
    "READONLY": 164,
    "TOO_DEEP_AST": 167,
    "TOO_BIG_AST": 168,
    "MULTIPLE_EXPRESSIONS_FOR_ALIAS": 179,
    "ILLEGAL_AGGREGATION": 184,
    "SIZES_OF_ARRAYS_DONT_MATCH": 190,
    "TOO_MANY_SIMULTANEOUS_QUERIES": 202,
    "NOT_AN_AGGREGATE": 215,
    "MEMORY_LIMIT_EXCEEDED": 241,
    "TOO_DEEP_RECURSION": 306,
    "TOO_MANY_BYTES": 307,
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE": 321,
    "AMBIGUOUS_COLUMN_NAME": 352,
    "NO_COMMON_TYPE": 386,
    "QUERY_WAS_CANCELLED": 394,
    "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO": 395,
    "TOO_MANY_ROWS_OR_BYTES": 396,
    "DECIMAL_OVERFLOW": 407,
    "UNKNOWN_QUERY_PARAMETER": 456,
    "BAD_QUERY_PARAMETER": 457,
    "ACCESS_DENIED": 497,
}
_NAMES = {code: name for name, code in ERROR_CODES.items()}

#: the query or its input is wrong: the caller can fix it
_CALLER = frozenset(
    {
        "CANNOT_PARSE_TEXT",
        "NUMBER_OF_COLUMNS_DOESNT_MATCH",
        "CANNOT_PARSE_QUOTED_STRING",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        "TOO_MANY_ARGUMENTS_FOR_FUNCTION",
        "TOO_FEW_ARGUMENTS_FOR_FUNCTION",
        "BAD_ARGUMENTS",
        "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME",
        "NUMBER_OF_ARGUMENTS_DOESNT_MATCH",
        "ILLEGAL_TYPE_OF_ARGUMENT",
        "ILLEGAL_COLUMN",
        "UNKNOWN_FUNCTION",
        "UNKNOWN_IDENTIFIER",
        "NOT_IMPLEMENTED",
        "TYPE_MISMATCH",
        "UNKNOWN_TABLE",
        "SYNTAX_ERROR",
        "ARGUMENT_OUT_OF_BOUND",
        "CANNOT_CONVERT_TYPE",
        "CANNOT_PARSE_NUMBER",
        "INCORRECT_QUERY",
        "UNKNOWN_DATABASE",
        "INCORRECT_DATA",
        "TOO_LARGE_ARRAY_SIZE",
        "CANNOT_READ_ARRAY_FROM_TEXT",
        "TOO_LARGE_STRING_SIZE",
        "ILLEGAL_DIVISION",
        "TOO_SLOW",
        "READONLY",
        "TOO_DEEP_AST",
        "TOO_BIG_AST",
        "MULTIPLE_EXPRESSIONS_FOR_ALIAS",
        "ILLEGAL_AGGREGATION",
        "SIZES_OF_ARRAYS_DONT_MATCH",
        "NOT_AN_AGGREGATE",
        "TOO_DEEP_RECURSION",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        "AMBIGUOUS_COLUMN_NAME",
        "NO_COMMON_TYPE",
        "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
        "DECIMAL_OVERFLOW",
        "UNKNOWN_QUERY_PARAMETER",
        "BAD_QUERY_PARAMETER",
        "ACCESS_DENIED",
    }
)
#: a configured read limit stopped the query: what the caller reads (docs/limits.md)
_LIMITS = {
    "TOO_MANY_ROWS": "the query reads too many rows (query_max_rows_to_read)",
    "MEMORY_LIMIT_EXCEEDED": "the query needs too much memory (query_max_memory_bytes)",
    "TOO_MANY_BYTES": "the query reads too many bytes (query_max_bytes_to_read)",
    "TOO_MANY_ROWS_OR_BYTES": "the result is too large (max_result_rows / max_result_bytes)",
}
_TIMEOUT = frozenset({"TIMEOUT_EXCEEDED", "QUERY_WAS_CANCELLED"})
_BUSY = frozenset({"TOO_MANY_SIMULTANEOUS_QUERIES"})

_CODE = re.compile(r"Code:\s*(\d+)")
_PREFIX = re.compile(r"^(?:Code:\s*\d+\.\s*)?(?:DB::Exception:\s*)?")
# Where ClickHouse starts quoting the query or its plan back; cut the message there.
_CUT = re.compile(
    r"(?i)(:\s*while executing|\.?\s*in scope\b|\.?\s*while processing\b|: in query:|"
    r"\s*\(version \d|\.\s*stack trace|, while reading|\s*:\s*'FUNCTION|"
    r"\.?\s*Maybe you meant|\s*\(at row \d)"
)
_SYNTAX = re.compile(r"(?i)^syntax error")
_POSITION = re.compile(r"at position (\d+)")
_MAX_MESSAGE = 240


def error_code(exc: BaseException) -> int:
    """The ClickHouse error code of `exc` (0 when it carries none)."""
    code = getattr(exc, "code", None)
    if code:
        return int(code)
    match = _CODE.search(str(exc))
    return int(match[1]) if match else 0


def error_name(exc: BaseException) -> str:
    """ClickHouse's name of the error (`TIMEOUT_EXCEEDED`), or '' when unknown here."""
    return _NAMES.get(error_code(exc), "")


def classify(exc: BaseException) -> DbErrorKind:
    name = error_name(exc)
    if name in _LIMITS:
        return DbErrorKind.LIMIT
    if name in _TIMEOUT:
        return DbErrorKind.TIMEOUT
    if name in _BUSY:
        return DbErrorKind.BUSY
    if name in _CALLER:
        return DbErrorKind.CALLER
    return DbErrorKind.OURS


def public_message(exc: BaseException) -> str:
    """What a caller may read of `exc`: one sentence, no query text, no internals."""
    name = error_name(exc)
    if name in _LIMITS:
        return _LIMITS[name]
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "unknown error"
    # clickhouse-connect repeats 'Code: N. DB::Exception:' when it wraps the engine's text
    while True:
        stripped = _PREFIX.sub("", first, count=1)
        if stripped == first:
            break
        first = stripped
    if _SYNTAX.match(first):
        position = _POSITION.search(first)
        return f"syntax error at position {position[1]}" if position else "syntax error"
    cut = _CUT.search(first)
    if cut:
        first = first[: cut.start()]
    first = re.sub(r"\s*\([A-Z_]+\)\s*$", "", first).rstrip(" .:")
    if len(first) > _MAX_MESSAGE:
        first = first[: _MAX_MESSAGE - 3] + "..."
    return first or "query failed"
