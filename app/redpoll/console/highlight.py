"""SQL syntax highlighting for the console, on the server, with sqlglot's tokenizer.

An endpoint file is SQL with template tags (`{{ ... }}`, `{% ... %}`): the tags are
marked as a whole, the SQL between them is tokenized with the ClickHouse dialect and
every token wrapped in a `<span class>` (colours live in static/console.css, so no
script and no inline style is needed: the console's CSP allows neither).
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape
from sqlglot import Token, TokenType
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import TokenError

__all__ = ("highlight_sql",)

_TEMPLATE_TAG = re.compile(r"(\{\{.*?\}\}|\{%.*?%\})", re.DOTALL)
_COMMENT = re.compile(r"(--[^\n]*|/\*.*?\*/)", re.DOTALL)
_KEYWORDS = frozenset(ClickHouse.Tokenizer.KEYWORDS)
_LITERALS = {TokenType.STRING: "s", TokenType.NUMBER: "n"}


def _span(css: str, text: str) -> str:
    return f'<span class="{css}">{escape(text)}</span>'


def _gap(text: str) -> str:
    """What lies between tokens: whitespace and comments."""
    return "".join(
        _span("c", part) if i % 2 else str(escape(part))
        for i, part in enumerate(_COMMENT.split(text))
    )


def _css(token: Token, following: Token | None) -> str | None:
    if token.token_type in _LITERALS:
        return _LITERALS[token.token_type]
    if token.token_type == TokenType.VAR:
        called = following is not None and following.token_type == TokenType.L_PAREN
        return "f" if called else None
    return "k" if token.text.upper() in _KEYWORDS else None


def _sql(text: str) -> str:
    try:
        tokens = ClickHouse().tokenizer().tokenize(text)
    except TokenError:  # e.g. a string cut by a template tag: show it plain
        return _gap(text)
    out: list[str] = []
    pos = 0
    for i, token in enumerate(tokens):
        out.append(_gap(text[pos : token.start]))
        piece = text[token.start : token.end + 1]
        css = _css(token, tokens[i + 1] if i + 1 < len(tokens) else None)
        out.append(_span(css, piece) if css else str(escape(piece)))
        pos = token.end + 1
    out.append(_gap(text[pos:]))
    return "".join(out)


def highlight_sql(source: str) -> Markup:
    """`source` as escaped HTML with `k` (keyword), `f` (function), `s` (string), `n`
    (number), `c` (comment) and `t` (template tag) spans."""
    parts = _TEMPLATE_TAG.split(source)
    return Markup(
        "".join(_span("t", part) if i % 2 else _sql(part) for i, part in enumerate(parts))
    )
