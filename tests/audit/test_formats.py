"""Line formats: the block fast path agrees with the strict line-by-line reading; time values."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.audit.formats import LineParser, parse_time

_FIELD = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\n\r\\'), max_size=30)
_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.:-_[]", min_size=1, max_size=20)
_STAMP = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
    lambda t: t.strftime("%d/%b/%Y:%H:%M:%S +0000")
)


@st.composite
def _nginx_line(draw: st.DrawFn) -> tuple[str, tuple[str, str | None, str | None]]:
    peer = draw(_TOKEN)
    user = draw(st.one_of(st.just("-"), _TOKEN))
    xff = draw(st.one_of(st.just("-"), _FIELD))
    line = (
        f'{peer} - {user} [{draw(_STAMP)}] "{draw(_FIELD)}" 200 {draw(st.integers(0, 10**6))} '
        f'"{draw(_FIELD)}" "{draw(_FIELD)}" "{xff}"'
    )
    return line, (peer, None if user == "-" else user, None if xff in ("-", "") else xff)


@settings(max_examples=60, deadline=None)
@given(st.lists(_nginx_line(), min_size=1, max_size=40))
def test_block_equals_line_by_line(
    lines: list[tuple[str, tuple[str, str | None, str | None]]],
) -> None:
    """A block parsed at once gives each line's peer, user, XFF and time as parsed alone."""
    text = "".join(f"{line}\n" for line, _ in lines)
    block = LineParser("nginx").parse(text, 1)
    assert block.failed == []
    for k, (line, (peer, user, xff)) in enumerate(lines):
        alone = LineParser("nginx").parse(line + "\n", 1)
        assert (alone.peer, alone.user, alone.xff) == ([peer], [user], [xff])
        assert (block.peer[k], block.user[k], block.xff[k], block.at[k]) == (
            peer,
            user,
            xff,
            alone.at[0],
        )
        assert block.minute[k] == alone.at[0] - alone.at[0] % 60  # type: ignore[operator]


def test_escaped_quotes_fall_back_to_the_strict_reading() -> None:
    """Apache's escaped quotes inside a field break the quote count: read line by line."""
    apache = '1.2.3.4 - - [01/Mar/2026:10:00:00 +0000] "GET /\\"x\\" HTTP/1.1" 200 1 "-" "a\\"b"\n'
    rows = LineParser("combined").parse(apache * 3, 1)
    assert rows.peer == ["1.2.3.4"] * 3
    assert rows.failed == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1772359200, 1772359200.0),
        (1772359200123, 1772359200.123),
        ("1772359200", 1772359200.0),
        ("2026-03-01T10:00:00Z", 1772359200.0),
        ("2026-03-01T11:00:00+01:00", 1772359200.0),
        ("2026-03-01 10:00:00", 1772359200.0),
        ("01/Mar/2026:10:00:00 +0000", 1772359200.0),
        ("01/Mar/2026:03:00:00 -0700", 1772359200.0),
        ("01/Foo/2026:10:00:00 +0000", None),
        ("yesterday", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        ("inf", None),
        ({"t": 1}, None),
    ],
)
def test_parse_time(value: object, expected: float | None) -> None:
    """Numbers, milliseconds, ISO 8601 and nginx time; anything else is None, never an error."""
    got = parse_time(value)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert math.isclose(got, expected)
