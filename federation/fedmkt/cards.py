"""Which FedMKT exchange a group uses this round: secure averaging or clear top-k.

Secure averaging only makes sense when every member's vector means the same thing, i.e.
the members share a tokenizer, public set and support (``PublicSupport.fingerprint``).
A member cannot know that of the others, so each sends a small *card* (blob kind
``fedmkt-card``) to every other member before anything else: its support fingerprint
and the exchange it asks for. The fingerprint reveals no more than the clear exchange
does (which sends the whole vocabulary).

Every member applies the same rule to the cards it received plus its own:

* this member asked for ``secure`` -> ``secure`` only if every card has its fingerprint
  and asks for ``secure``; otherwise the exchange is aborted (``RoundAbortedError``).
  A member that asked for privacy never falls back to sending its predictions in the
  clear: one card (a hostile member's, or a misconfigured one) must not switch it.
* this member asked for ``clear`` -> ``clear``, unless the fingerprints agree and some
  member asks for ``secure`` (that member aborts, so the round is aborted here too).

A heterogeneous group (tokenizers or public-set support differ) therefore runs only
when its members set ``[fedmkt] homogeneous_exchange = "clear"`` (or run without secure
aggregation): mapping and alignment need each sender's own ids.

A member whose card does not arrive in time is simply left out of the decision (the
secure sum then counts it as dropped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import RoundAbortedError
from ..link import FEDMKT_CARD_KIND
from ..mailbox import Mailbox

KIND = FEDMKT_CARD_KIND
MAX_CARD_BYTES = 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

KnowledgeExchange = Literal["secure", "clear"]


class CardError(ValueError):
    """A received card is not a well-formed FedMKT card."""


@dataclass(frozen=True)
class Card:
    """What a member tells its group before the exchange."""

    fingerprint: str  # PublicSupport.fingerprint
    exchange: KnowledgeExchange  # what this member asks for (already "clear" without secagg)

    def encode(self) -> bytes:
        return json.dumps(
            {"v": 1, "fingerprint": self.fingerprint, "exchange": self.exchange},
            sort_keys=True,
        ).encode("ascii")

    @classmethod
    def decode(cls, payload: bytes) -> Card:
        if len(payload) > MAX_CARD_BYTES:
            raise CardError(f"card of {len(payload)} bytes, over {MAX_CARD_BYTES}")
        try:
            data = json.loads(payload.decode("ascii"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CardError(f"card is not ASCII JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("v") != 1:
            raise CardError("card is not a version-1 object")
        fingerprint, exchange = data.get("fingerprint"), data.get("exchange")
        if not isinstance(fingerprint, str) or not _HEX64.match(fingerprint):
            raise CardError("card fingerprint is not 64 hexadecimal characters")
        if exchange not in ("secure", "clear"):
            raise CardError(f"card asks for unknown exchange {exchange!r}")
        return cls(fingerprint=fingerprint, exchange=exchange)


def decide_exchange(me: str, own: Card, cards: dict[str, Card]) -> KnowledgeExchange:
    """The rule of the module docstring; raises ``RoundAbortedError`` rather than downgrade."""
    everyone = {me: own, **cards}
    foreign = sorted(p[-8:] for p, c in cards.items() if c.fingerprint != own.fingerprint)
    if own.exchange == "secure":
        if foreign:
            raise RoundAbortedError(
                "we asked for the secure FedMKT exchange but "
                f"{', '.join(foreign)} announce another tokenizer or public-set support: "
                "a member that asked for secure never falls back to clear (set [fedmkt] "
                'homogeneous_exchange = "clear" on every member of a heterogeneous federation)'
            )
        wanting_clear = sorted(p[-8:] for p, c in cards.items() if c.exchange == "clear")
        if wanting_clear:
            raise RoundAbortedError(
                "we asked for the secure FedMKT exchange but "
                f"{', '.join(wanting_clear)} ask for clear: a member that asked for secure "
                "never falls back to clear; check [fedmkt] homogeneous_exchange and "
                "[federation] secure_aggregation on every member"
            )
        return "secure"
    if foreign:
        return "clear"  # heterogeneous: a secure member among them aborts on its side
    wanting_secure = sorted(p[-8:] for p, c in everyone.items() if c.exchange == "secure")
    if wanting_secure:
        raise RoundAbortedError(
            "group shares one tokenizer but members disagree on the FedMKT exchange "
            f"({', '.join(wanting_secure)} ask for secure): check [fedmkt] "
            "homogeneous_exchange and [federation] secure_aggregation on every member"
        )
    return "clear"


def clear_reason(own: Card, cards: dict[str, Card]) -> str:
    """Why a round that ``decide_exchange`` sent to ``clear`` is clear (for the round note)."""
    if any(c.fingerprint != own.fingerprint for c in cards.values()):
        return "members' tokenizers or public-set support differ"
    return "members asked for clear (homogeneous_exchange or no secure aggregation)"


async def collect_cards(
    mailbox: Mailbox,
    round: int,
    others: Sequence[str],
    deadline: float,
    on_reject: Callable[[str, str], None],
) -> tuple[dict[str, Card], int]:
    """The cards of ``others`` that arrive (well-formed) before ``deadline``, and their bytes."""
    cards: dict[str, Card] = {}
    received = 0
    async for letter in mailbox.collect(KIND, round, others, deadline, on_reject):
        received += len(letter.payload)
        try:
            cards[letter.sender] = Card.decode(letter.payload)
        except CardError as exc:
            on_reject(letter.sender, f"FedMKT card refused: {exc}")
    return cards, received
