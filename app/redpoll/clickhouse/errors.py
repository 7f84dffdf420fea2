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

__all__ = ("DbErrorKind", "classify", "error_code", "public_message")


class DbErrorKind(enum.Enum):
    CALLER = "caller"  # the query or its input is wrong: 400
    LIMIT = "limit"  # a configured read limit stopped the query: 400, names the limit
    TIMEOUT = "timeout"  # max_execution_time or our deadline: 408
    BUSY = "busy"  # too many queries at once: 429
    OURS = "ours"  # anything else: 500, details only in the log


_CALLER_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        20,  # NUMBER_OF_COLUMNS_DOESNT_MATCH
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        34,  # TOO_MANY_ARGUMENTS_FOR_FUNCTION
        35,  # TOO_FEW_ARGUMENTS_FOR_FUNCTION
        36,  # BAD_ARGUMENTS
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        42,  # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        44,  # ILLEGAL_COLUMN
        46,  # UNKNOWN_FUNCTION
        47,  # UNKNOWN_IDENTIFIER
        48,  # NOT_IMPLEMENTED
        53,  # TYPE_MISMATCH
        60,  # UNKNOWN_TABLE
        62,  # SYNTAX_ERROR
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        80,  # INCORRECT_QUERY
        81,  # UNKNOWN_DATABASE
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        130,  # CANNOT_READ_ARRAY_FROM_TEXT
        131,  # TOO_LARGE_STRING_SIZE
        153,  # ILLEGAL_DIVISION
        160,  # TOO_SLOW (max_execution_speed estimates, sleepEachRow)
        164,  # READONLY
        167,  # TOO_DEEP_AST
        168,  # TOO_BIG_AST
        179,  # MULTIPLE_EXPRESSIONS_FOR_ALIAS
        184,  # ILLEGAL_AGGREGATION
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        215,  # NOT_AN_AGGREGATE
        306,  # TOO_DEEP_RECURSION
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        352,  # AMBIGUOUS_COLUMN_NAME
        386,  # NO_COMMON_TYPE
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
        407,  # DECIMAL_OVERFLOW
        456,  # UNKNOWN_QUERY_PARAMETER
        457,  # BAD_QUERY_PARAMETER
        497,  # ACCESS_DENIED
    }
)
#: code -> what the caller reads (the setting that sets the limit is in docs/limits.md)
_LIMIT_CODES = {
    158: "the query reads too many rows (query_max_rows_to_read)",  # TOO_MANY_ROWS
    241: "the query needs too much memory (query_max_memory_bytes)",  # MEMORY_LIMIT_EXCEEDED
    307: "the query reads too many bytes (query_max_bytes_to_read)",  # TOO_MANY_BYTES
    396: "the result is too large (max_result_rows / max_result_bytes)",  # TOO_MANY_ROWS_OR_BYTES
}
_TIMEOUT_CODES = frozenset({159, 394})  # TIMEOUT_EXCEEDED, QUERY_WAS_CANCELLED
_BUSY_CODES = frozenset({202})  # TOO_MANY_SIMULTANEOUS_QUERIES

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


def classify(exc: BaseException) -> DbErrorKind:
    code = error_code(exc)
    if code in _LIMIT_CODES:
        return DbErrorKind.LIMIT
    if code in _TIMEOUT_CODES:
        return DbErrorKind.TIMEOUT
    if code in _BUSY_CODES:
        return DbErrorKind.BUSY
    if code in _CALLER_CODES:
        return DbErrorKind.CALLER
    return DbErrorKind.OURS


def public_message(exc: BaseException) -> str:
    """What a caller may read of `exc`: one sentence, no query text, no internals."""
    code = error_code(exc)
    if code in _LIMIT_CODES:
        return _LIMIT_CODES[code]
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
