"""The mailbox files letters by round, refuses old rounds and bounds each sender."""

from __future__ import annotations

import pytest
from fedswarm.federation.mailbox import MAX_ROUNDS_AHEAD, Letter, Mailbox, MailboxRejected


async def test_letter_for_current_round_is_delivered() -> None:
    box = Mailbox(max_bytes_per_sender_per_round=100)
    box.advance(3)
    box.put(Letter("a", 3, "k", b"hello"))
    letter = await box.get("k", 3, timeout=1)
    assert letter.payload == b"hello"


async def test_letter_from_an_old_round_is_refused_as_replay() -> None:
    box = Mailbox(max_bytes_per_sender_per_round=100)
    box.advance(5)
    with pytest.raises(MailboxRejected) as info:
        box.put(Letter("a", 4, "k", b"x"))
    assert info.value.reason == "old_round"


async def test_letter_far_in_the_future_is_refused() -> None:
    box = Mailbox(max_bytes_per_sender_per_round=100)
    box.advance(1)
    box.put(Letter("a", 1 + MAX_ROUNDS_AHEAD, "k", b"x"))
    with pytest.raises(MailboxRejected) as info:
        box.put(Letter("a", 3 + MAX_ROUNDS_AHEAD, "k", b"x"))
    assert info.value.reason == "future_round"


async def test_sender_quota_per_round_is_enforced() -> None:
    box = Mailbox(max_bytes_per_sender_per_round=10)
    box.put(Letter("a", 0, "k", b"12345678"))
    with pytest.raises(MailboxRejected) as info:
        box.put(Letter("a", 0, "k", b"123"))
    assert info.value.reason == "over_quota"
    box.put(Letter("b", 0, "k", b"123"))  # another sender has its own quota


async def test_advancing_drops_old_letters() -> None:
    box = Mailbox(max_bytes_per_sender_per_round=100)
    box.put(Letter("a", 0, "k", b"x"))
    box.advance(1)
    assert box.drain("k", 0) == []


async def test_get_times_out_when_nothing_arrives() -> None:
    box = Mailbox(max_bytes_per_sender_per_round=100)
    with pytest.raises(TimeoutError):
        await box.get("k", 0, timeout=0.05)


async def test_collect_takes_one_letter_per_expected_sender_and_rejects_the_rest() -> None:
    import time

    box = Mailbox(max_bytes_per_sender_per_round=100)
    for sender, payload in [("a", b"1"), ("x", b"2"), ("a", b"3"), ("b", b"4")]:
        box.put(Letter(sender, 0, "k", payload))
    rejected: list[str] = []
    letters = [
        letter
        async for letter in box.collect(
            "k", 0, {"a", "b"}, time.monotonic() + 1, lambda peer, why: rejected.append(peer)
        )
    ]
    assert [(x.sender, x.payload) for x in letters] == [("a", b"1"), ("b", b"4")]
    assert rejected == ["x", "a"]


async def test_collect_stops_at_the_deadline_with_senders_missing() -> None:
    import time

    box = Mailbox(max_bytes_per_sender_per_round=100)
    box.put(Letter("a", 0, "k", b"1"))
    started = time.monotonic()
    letters = [x async for x in box.collect("k", 0, {"a", "b"}, started + 0.2, lambda *_: None)]
    assert [x.sender for x in letters] == ["a"]
