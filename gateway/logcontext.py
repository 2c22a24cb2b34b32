"""Log records that say which request, PvP and mint they concern, as text or JSON lines, with
secrets kept out.

- :func:`bound` puts fields (``request_id``, ``uetr``, ``pvp_id``, ``mint_id``) in a context
  variable for the duration of a block; every record logged inside it carries them. The HTTP
  edge binds the request id, the PvP service the UETR and PvP id of the message it applies, the
  stablecoin service the id of the mint it drives. A context variable follows the work onto
  the worker threads litestar runs sync handlers on (anyio copies the context).
- :class:`JsonFormatter` writes one JSON object per line: ``ts``, ``level``, ``logger``,
  ``msg``, the bound fields, ``exc`` for a traceback (``dt-gateway --log-format json``).
- :class:`Redactor` (installed on the handler by :func:`configure`) takes secrets out of
  every record, text or JSON, before it is written: API key tokens and webhook secrets by
  their shape, bearer credentials and PEM private keys by theirs, and the configured secrets
  (chain keys, the collateral log key, tokens) by value. Code should never log a secret; this
  is the net under that rule, and the tests check both.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from functools import wraps
from inspect import signature
from typing import Any, Literal, ParamSpec, TypeVar

FIELDS = ("request_id", "uetr", "pvp_id", "mint_id")
"""The fields a record may carry from its context, in the order JSON lines show them."""

LogFormat = Literal["text", "json"]

_fields: ContextVar[dict[str, str] | None] = ContextVar("dtg_log_fields", default=None)

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Records logged inside the block carry ``fields`` (None values are left out)."""
    current = _fields.get()
    given = {k: v for k, v in fields.items() if v is not None}
    token = _fields.set({**current, **given} if current else given)
    try:
        yield
    finally:
        _fields.reset(token)


def push(**fields: str) -> Token[dict[str, str] | None]:
    """:func:`bound` without a context manager, for the HTTP edge's hot path: bind ``fields``
    until :func:`pop` is given the token back."""
    current = _fields.get()
    return _fields.set({**current, **fields} if current else fields)


def pop(token: Token[dict[str, str] | None]) -> None:
    _fields.reset(token)


def current() -> dict[str, str]:
    """The fields bound here (a copy)."""
    return dict(_fields.get() or {})


def binds(field: str, parameter: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the function's argument ``parameter`` (default: ``field``) is bound as
    ``field`` while it runs, e.g. ``@binds("mint_id")`` on a function taking ``mint_id``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name = parameter or field
        position = list(signature(fn).parameters).index(name)

        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            value = kwargs.get(name, args[position] if position < len(args) else None)
            with bound(**{field: None if value is None else str(value)}):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (as attributes, for any formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # dtg_<key id>_<secret>: keep the id (it names the key), drop the secret.
    (re.compile(r"\b(dtg_[0-9a-f]{8,32}_)[A-Za-z0-9_\-]{8,}"), r"\1[REDACTED]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_\-]{8,}"), "whsec_[REDACTED]"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]{8,}"), r"\1[REDACTED]"),
    (
        re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|$)", re.S),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"PRIVATE\+KEY\+[^\s\"']+"), "PRIVATE+KEY+[REDACTED]"),
)


class Redactor(logging.Filter):
    """Replaces secrets in a record's message, arguments and traceback (see the module
    docstring). ``secrets``: values to remove wherever they appear (at least 8 characters); a
    hex key is removed in either case, with or without its ``0x``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._plain: set[str] = set()
        self._hexes: set[str] = set()
        self._values: list[str] = []
        self._hex: re.Pattern[str] | None = None
        self.add(secrets)

    @property
    def secrets(self) -> list[str]:
        return sorted(self._plain | self._hexes, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            s = s.strip()
            if len(s) < 8:
                continue
            bare = s[2:] if s[:2] in ("0x", "0X") else s
            if re.fullmatch(r"[0-9a-fA-F]{32,}", bare):
                self._hexes.add(bare.lower())
            else:
                self._plain.add(s)
        self._values = sorted(self._plain, key=len, reverse=True)
        hexes = sorted(self._hexes, key=len, reverse=True)
        self._hex = re.compile(r"(?i)(?:0x)?(?:" + "|".join(hexes) + ")") if hexes else None

    def clean(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "[REDACTED]")
        if self._hex is not None:
            text = self._hex.sub("[REDACTED]", text)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.clean(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, the
    bound fields present, ``thread``, and ``exc`` with the traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        out["thread"] = record.threadName
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with the bound fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None)]
        if not extra:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} [{' '.join(extra)}]{sep}{tail}"


def default_format(command: str | None, stream: Any = None) -> LogFormat:
    """JSON for ``serve`` whose log does not go to a terminal (a service manager, a file, a
    container runtime collects it); text otherwise."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    terminal = bool(isatty()) if callable(isatty) else False
    return "json" if command == "serve" and not terminal else "text"


def configure(
    level: str,
    fmt: LogFormat,
    secrets: Iterable[str] = (),
    stream: Any = None,
) -> logging.Handler:
    """Send every record of the process to ``stream`` (stderr) in ``fmt``, with the bound
    fields and without secrets; returns the handler. Replaces the handler an earlier call
    installed; a handler someone else put on the root logger (a test runner's) stays."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(Redactor(secrets))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


_HANDLER = "dt-gateway"


def add_secrets(secrets: Iterable[str]) -> None:
    """Remove these values too from everything the root logger's handlers write (settings
    are read after logging is set up)."""
    extra = list(secrets)
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, Redactor):
                f.add(extra)


__all__ = [
    "FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "Redactor",
    "TextFormatter",
    "add_secrets",
    "binds",
    "bound",
    "configure",
    "current",
    "default_format",
    "pop",
    "push",
]
