"""``Range`` headers as hubproxy reads them: one range, the end clipped, suffixes, and the errors."""

from __future__ import annotations

import pytest

from hubproxy.hub.errors import HubError
from hubproxy.hub.serving import parse_range

SIZE = 1000


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-0", (0, 1)), ("bytes=0-999", (0, 1000)), ("bytes=10-5000", (10, 1000)),
    ("bytes=500-", (500, 1000)), ("bytes=-10", (990, 1000)), ("bytes=-5000", (0, 1000)), ("bytes=999-", (999, 1000)),
    (" bytes = 1 - 2 ", (1, 3)), ("bytes=0-" + "9" * 40, (0, 1000)), ("bytes=-" + "9" * 40, (0, 1000)),
    ("bytes=0007-0009", (7, 10)),
])
def test_satisfiable(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(("header", "status", "code"), [
    ("bytes=1000-", 416, "RangeNotSatisfiable"), ("bytes=" + "9" * 40 + "-", 416, "RangeNotSatisfiable"),
    ("bytes=-0", 416, "RangeNotSatisfiable"), ("bytes=a-b", 400, "InvalidRange"), ("bytes=0-1,5-6", 400, "InvalidRange"),
    ("items=0-1", 400, "InvalidRange"), ("bytes=5-2", 400, "InvalidRange"), ("bytes=-", 400, "InvalidRange"),
    ("bytes=\u0663-4", 400, "InvalidRange"),
])
def test_refused(header: str, status: int, code: str) -> None:
    with pytest.raises(HubError) as caught:
        parse_range(header, SIZE)
    assert (caught.value.status, caught.value.code) == (status, code)
    if status == 416:
        assert caught.value.headers["Content-Range"] == f"bytes */{SIZE}"


def test_an_empty_file_has_no_satisfiable_range() -> None:
    with pytest.raises(HubError):
        parse_range("bytes=0-", 0)
    assert parse_range(None, 0) is None
