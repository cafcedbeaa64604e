"""``upstream/recent.py``: what the upstream said a moment ago, for a few seconds."""

from __future__ import annotations

import time

from hubproxy.upstream.recent import Recent


def test_a_value_is_kept_for_its_seconds_only() -> None:
    recent: Recent[str] = Recent(0.05)
    recent.put("a", "url-a")
    assert recent.get("a") == "url-a"
    time.sleep(0.06)
    assert recent.get("a") is None


def test_take_gives_a_value_once() -> None:
    recent: Recent[str] = Recent(60)
    recent.put("a", "url-a")
    assert recent.take("a") == "url-a"
    assert recent.take("a") is None
    assert recent.get("a") is None


def test_putting_again_renews_and_the_oldest_go_first() -> None:
    recent: Recent[int] = Recent(60, limit=2)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.put("a", 3)  # renewed: now the newest
    recent.put("c", 4)  # over the limit: "b", the oldest, goes
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (3, None, 4)
