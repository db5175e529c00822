"""``fedswarm status`` for a person: rounded losses, this daemon marked as itself."""

from __future__ import annotations

from fedswarm.daemon.cli import status_lines
from fedswarm.daemon.wording import plural

OVERVIEW = {
    "org": "bank-a", "federation_id": "fed", "peer_id": "12D3KooWself", "state": "training",
    "round": 2, "rounds_completed": 1, "rounds_target": 3,
    "secure_aggregation": "bfv-mask-shamir-v2", "eval_loss_start": 0.8312345678,
    "eval_loss_last": 0.71999999, "peers_up": 0, "device": "cpu",
}
PEERS = [
    {"org": "bank-a", "peer_id": "12D3KooWself", "is_self": True, "up": True, "round": 2},
    {"org": "clinic-b", "peer_id": "12D3KooWother", "is_self": False, "up": False,
     "round": None},
]


def test_losses_are_rounded_and_rounds_show_the_target() -> None:
    text = "\n".join(status_lines(OVERVIEW, PEERS))
    assert "0.8312 at start, 0.7200 now" in text
    assert "0.8312345678" not in text
    assert "rounds done" in text and "1 of 3" in text


def test_self_is_marked_self_and_peers_up_counts_the_others() -> None:
    lines = status_lines(OVERVIEW, PEERS)
    assert any(line.startswith("peers up") and line.endswith("0 of 1 other member")
               for line in lines), lines
    assert any(line.startswith("  self bank-a") for line in lines), lines
    assert any(line.startswith("  down clinic-b") and "round -" in line for line in lines)


def test_plural_says_one_member_and_two_members() -> None:
    assert plural(1, "member") == "1 member"
    assert plural(2, "member") == "2 members"
    assert plural(0, "round") == "0 rounds"
