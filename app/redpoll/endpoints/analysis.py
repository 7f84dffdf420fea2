"""What a rendered endpoint query depends on besides its parameters: for the result cache.

An answer may be reused only while the query would return the same bytes. Given the
same SQL and parameter values, that holds unless the query reads

* tables that were written since (`tables`: the result cache keys by their versions),
* the clock (`clock`: `now()`, `today()` ... have one-second resolution, so the cache
  keys by the current second as well),
* its own query id (`query_id`: `queryID()` is replaced by a bound parameter, so each
  response can carry an id of its own; see `substitute_query_id`),
* or anything else that differs per call (`volatile`: `rand()`, `now64()`,
  `generateUUIDv4()`, `dictGet()`, `joinGet()` (which read tables by a string name) ...):
  not cacheable exactly.

Function names are found on sqlglot's tokens (a name followed by `(`), so names inside
strings or comments do not count; tables on sqlglot's parse. Both run once per rendered
SQL text (values are placeholders, so one template shape is one text) and are memoized.
"""

from __future__ import annotations

import dataclasses
import functools

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import ParseError, TokenError

__all__ = (
    "CLOCK_FUNCTIONS",
    "QUERY_ID_FUNCTIONS",
    "QUERY_ID_PARAM",
    "Analysis",
    "FunctionClasses",
    "analyze",
    "known",
    "substitute_query_id",
)

#: the query parameter `queryID()` becomes (templates bind `p_*` names only)
QUERY_ID_PARAM = "redpoll_query_id"
#: functions returning the query's id: replaced by `{redpoll_query_id:String}`
QUERY_ID_FUNCTIONS = frozenset(
    {"queryid", "query_id", "initialqueryid", "initial_query_id", "currentqueryid"}
    | {"current_query_id"}
)
#: functions of the clock with one-second (or coarser) resolution, lower case
CLOCK_FUNCTIONS = frozenset(
    {
        "now",
        "today",
        "yesterday",
        "curdate",
        "current_date",
        "current_timestamp",
        "localtime",
        "localtimestamp",
        "utctimestamp",
        "utc_timestamp",
        "nowinblock",
        "initialquerystarttime",
        "initial_query_start_time",
    }
)
#: functions ClickHouse lists as not deterministic whose value is nevertheless the same
#: for every query of one server and read client (lower case)
SERVER_CONSTANTS = frozenset(
    {
        "arrayjoin",
        "currentdatabase",
        "current_database",
        "database",
        "schema",
        "currentschemas",
        "current_schemas",
        "currentuser",
        "current_user",
        "user",
        "session_user",
        "authuser",
        "authenticateduser",
        "currentprofiles",
        "currentroles",
        "defaultprofiles",
        "defaultroles",
        "enabledprofiles",
        "enabledroles",
        "hostname",
        "fqdn",
        "fullhostname",
        "version",
        "revision",
        "buildid",
        "timezone",
        "servertimezone",
        "serveruuid",
        "getsetting",
        "getsettingordefault",
        "getserversetting",
        "getmergetreesetting",
        "getmacro",
        "shardnum",
        "shardcount",
        "tcpport",
        "getserverport",
        "isconstant",
        "tocolumntypename",
        "dumpcolumnstructure",
    }
)
#: used when the server cannot list its non-deterministic functions (lower-case prefixes)
_FALLBACK_VOLATILE_PREFIXES = (
    "rand",
    "generate",
    "now64",
    "nowinblock64",
    "dictget",
    "dicthas",
    "dictisin",
    "joinget",
    "file",
    "uptime",
    "blocknumber",
    "rownumberin",
    "runningconcurrency",
    "fuzzbits",
    "ai",
)
_CALLABLE_TOKENS = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


@dataclasses.dataclass(frozen=True)
class FunctionClasses:
    """The functions whose value differs per call, as the server lists them (lower case).

    `volatile=None`: the server did not say (an old ClickHouse); a built-in list of
    prefixes stands in.
    """

    volatile: frozenset[str] | None = None

    def is_volatile(self, name: str) -> bool:
        lowered = name.lower()
        if lowered in QUERY_ID_FUNCTIONS or lowered in CLOCK_FUNCTIONS:
            return False
        if lowered in SERVER_CONSTANTS:
            return False
        if self.volatile is None:
            return lowered.startswith(_FALLBACK_VOLATILE_PREFIXES)
        return lowered in self.volatile


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What an answer depends on besides its SQL text and parameter values."""

    tables: frozenset[str] = frozenset()
    clock: bool = False
    query_id: bool = False
    volatile: tuple[str, ...] = ()  # the per-call functions found, for the reason
    error: str = ""  # the SQL could not be read: not cacheable

    def merge(self, other: Analysis) -> Analysis:
        return Analysis(
            self.tables | other.tables,
            self.clock or other.clock,
            self.query_id or other.query_id,
            tuple(sorted(set(self.volatile) | set(other.volatile))),
            self.error or other.error,
        )


def _calls(sql: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of every `name(` in `sql`; `end` is the index after `)` of an
    empty argument list, else -1. Raises TokenError."""
    tokens = ClickHouse().tokenize(sql)  # a tokenizer per call: it keeps state
    out = []
    for i, token in enumerate(tokens[:-1]):
        if tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        if token.token_type in _CALLABLE_TOKENS or token.text.isidentifier():
            end = -1
            if i + 2 < len(tokens) and tokens[i + 2].token_type == TokenType.R_PAREN:
                end = tokens[i + 2].end + 1
            out.append((token.text, token.start, end))
    # keywords spelled without parentheses that read the clock
    out.extend(
        (token.text, token.start, -1)
        for token in tokens
        if token.token_type in (TokenType.CURRENT_DATE, TokenType.CURRENT_TIMESTAMP)
    )
    return out


def _functions(sql: str, classes: FunctionClasses) -> Analysis:
    try:
        calls = _calls(sql)
    except TokenError as exc:
        return Analysis(error=f"cannot tokenize: {exc}")
    clock = query_id = False
    volatile: set[str] = set()
    for name, _, end in calls:
        lowered = name.lower()
        if lowered in CLOCK_FUNCTIONS:
            clock = True
        elif lowered in QUERY_ID_FUNCTIONS:
            if end > 0:  # `queryID()`: `substitute_query_id` replaces it
                query_id = True
            else:  # a form it would not replace: the answer carries ClickHouse's id
                volatile.add(name)
        elif classes.is_volatile(name):
            volatile.add(name)
    return Analysis(clock=clock, query_id=query_id, volatile=tuple(sorted(volatile)))


def _tables(sql: str) -> frozenset[str]:
    """Tables the query names (CTE names and table functions left out), as
    `clickhouse/views.py` reads a view's SELECT."""
    root = sqlglot.parse_one(sql, dialect="clickhouse")
    ctes = {cte.alias_or_name for cte in root.find_all(exp.CTE)}
    return frozenset(
        t.name
        for t in root.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier) and t.name and (t.db or t.name not in ctes)
    )


#: texts `analyze` has seen (bounded): their analysis is a dictionary lookup
_SEEN: set[tuple[str, FunctionClasses]] = set()


def known(sql: str, classes: FunctionClasses) -> bool:
    """True when `analyze(sql, classes)` is memoized (cheap enough for the event loop)."""
    return (sql, classes) in _SEEN


def analyze(sql: str, classes: FunctionClasses, *, tables: bool = True) -> Analysis:
    """Analyse rendered SQL (memoized per text). `tables=False`: functions only (a
    caller's `q`, which reads only the endpoint's result)."""
    found = _analyze(sql, classes, tables)
    if tables:
        if len(_SEEN) > 4096:
            _SEEN.clear()
        _SEEN.add((sql, classes))
    return found


@functools.lru_cache(maxsize=4096)
def _analyze(sql: str, classes: FunctionClasses, tables: bool) -> Analysis:
    found = _functions(sql, classes)
    if found.error or not tables:
        return found
    try:
        names = _tables(sql)
    except (ParseError, TokenError, RecursionError) as exc:
        return dataclasses.replace(found, error=f"cannot parse: {str(exc)[:200]}")
    return dataclasses.replace(found, tables=names)


@functools.lru_cache(maxsize=4096)
def substitute_query_id(sql: str) -> str:
    """`sql` with every `queryID()` (and its aliases) replaced by the placeholder
    `{redpoll_query_id:String}`, so Redpoll knows the id an answer carries and can give
    each response served from the cache an id of its own."""
    try:
        calls = _calls(sql)
    except TokenError:
        return sql
    spans = [
        (start, end) for name, start, end in calls if end > 0 and name.lower() in QUERY_ID_FUNCTIONS
    ]
    if not spans:
        return sql
    pieces, last = [], 0
    for start, end in sorted(spans):
        pieces += [sql[last:start], f"{{{QUERY_ID_PARAM}:String}}"]
        last = end
    pieces.append(sql[last:])
    return "".join(pieces)
