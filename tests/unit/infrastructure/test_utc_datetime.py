"""UtcDateTime's own SQLite processors write and read exactly SQLAlchemy's DATETIME text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from gateway.db import UtcDateTime


class _Composed(TypeDecorator[datetime]):
    """UtcDateTime as SQLAlchemy composes it by itself (the reference)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else value.replace(tzinfo=UTC)


DIALECT = sqlite.dialect()
FAST_BIND = UtcDateTime()._cached_bind_processor(DIALECT)
FAST_READ = UtcDateTime()._cached_result_processor(DIALECT, None)
REF_BIND = _Composed()._cached_bind_processor(DIALECT)
REF_READ = _Composed()._cached_result_processor(DIALECT, None)

aware = st.builds(
    lambda naive, minutes: naive.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(-14 * 60, 14 * 60),
)


@settings(max_examples=500)
@given(aware)
def test_the_stored_text_and_the_value_read_back_are_sqlalchemys(value: datetime) -> None:
    assert FAST_BIND is not None and REF_BIND is not None
    assert FAST_READ is not None and REF_READ is not None
    text = FAST_BIND(value)
    assert text == REF_BIND(value)
    assert FAST_READ(text) == REF_READ(text) == value


@pytest.mark.parametrize("text", ["2025-03-14 09:30:00", "2025-03-14 09:30:00.5"])
def test_text_written_by_others_reads_as_sqlalchemy_reads_it(text: str) -> None:
    assert FAST_READ is not None and REF_READ is not None
    assert FAST_READ(text) == REF_READ(text)


def test_naive_values_and_none() -> None:
    assert FAST_BIND is not None and FAST_READ is not None
    with pytest.raises(ValueError, match="naive"):
        FAST_BIND(datetime(2025, 1, 1))
    assert FAST_BIND(None) is None and FAST_READ(None) is None
