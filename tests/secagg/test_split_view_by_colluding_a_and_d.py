"""A split view by the aggregator A and the decryptor D together recovers no honest update.

issue #19, attack 3: in a group of six (t = 4), A shows half of the four honest members
the survivor set {A, D, H1, H2} and the other half {A, D, H3, H4}; A and D confirm each
half's view to that half. A member that waits only for the CONFIRMs of its own view, and
counts A and D towards t, reveals seed shares for its half and mask-key shares for the
other half. Then, for every honest member, A and D hold t shares of both its self-mask
seed and its mask key, and D can strip every mask from the member's ciphertext (which A
holds). Measured before the CONFIRM fix: every honest update recovered, for k = 4, 5, 8.

Here A and D run the product's session code with their transports rewritten (what
modified code would send), and keep everything they see. After the round the test plays
the colluding attacker: it reconstructs whatever secrets the collected shares allow,
decrypts each honest member's upload with D's secret key, removes the masks and compares
what comes out with the member's real update. No honest update may be recovered
(|correlation| < 0.1 or nothing reconstructable), and every honest session must end in
a secure-aggregation error, not a result.

This is at the session level (in one process, over the in-memory transport) because
six real daemons in one secure group cost more than the CI budget of the real-daemon
hostile suite (``tests/reliability/test_hostile_members_against_real_daemons.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from fedswarm.secagg.chunks import read_prefix
from fedswarm.secagg.errors import SecAggError
from fedswarm.secagg.he import decrypt_chunks
from fedswarm.secagg.masking import (
    apply_masks,
    derive_mask_key,
    pairwise_secret,
    pairwise_sign,
    public_key_of,
    self_mask_commitment,
)
from fedswarm.secagg.messages import Message, Step, decode_message, encode_message, peek_binding
from fedswarm.secagg.payloads import (
    MASK_KEY_SHARE,
    SEED_SHARE,
    DigestPayload,
    SurvivorsPayload,
    UnmaskPayload,
    UploadPayload,
)
from fedswarm.secagg.quantise import QuantisationGrid, decode_sum, validate_update
from fedswarm.secagg.roles import assign_roles
from fedswarm.secagg.session import AggregationResult, _Session, run_secure_aggregation
from fedswarm.secagg.shamir import Share, reconstruct_secret, threshold_for

from .conftest import SMALL_PARAMS, Group, MemoryTransport, random_updates

N_PARAMS = 600
TIMEOUT = 2.0


@dataclass
class Collusion:
    """What A and D agree on and what they collect (they share it out of band)."""

    group: Group
    views: dict[str, bytes]  # honest member -> the survivors payload shown to it
    received: dict[str, list[bytes]] = field(default_factory=dict)  # by A, by D

    def digest_for(self, recipient: str) -> bytes | None:
        view = self.views.get(recipient)
        return None if view is None else hashlib.sha256(view).digest()


class ColludingTransport(MemoryTransport):
    """A's or D's transport: shows each honest member its own view, keeps what arrives."""

    def __init__(self, collusion: Collusion, me: str) -> None:
        super().__init__(collusion.group.network, me, None)
        self.collusion = collusion

    async def send(self, recipient: str, data: bytes) -> None:
        binding, step, _ = peek_binding(data)
        replacement: bytes | None = None
        if step is Step.SURVIVORS and recipient in self.collusion.views:
            replacement = self.collusion.views[recipient]
        elif step is Step.CONFIRM and recipient in self.collusion.views:
            digest = self.collusion.digest_for(recipient)
            assert digest is not None
            replacement = DigestPayload(digest).encode()
        if replacement is not None:
            group = self.collusion.group
            message = decode_message(data, binding, recipient, group.verify)
            data = encode_message(group.signers[self.me], binding, step, recipient,
                                  message.context_hash, replacement)
        await super().send(recipient, data)

    async def receive(self, timeout: float) -> tuple[str, bytes]:
        sender, data = await super().receive(timeout)
        self.collusion.received.setdefault(self.me, []).append(data)
        return sender, data


def _decode_all(group: Group, messages: list[bytes], recipient: str,
                step: Step) -> list[Message]:
    """The signature-checked messages of ``step`` among those ``recipient`` received."""
    out = []
    for data in messages:
        binding, found, _ = peek_binding(data)
        if found is step:
            out.append(decode_message(data, binding, recipient, group.verify))
    return out


def _recover(
    victim: str, a: _Session, d: _Session, uploads: dict[str, UploadPayload],
    unmasks: list[UnmaskPayload],
) -> np.ndarray | None:
    """Everything A and D can do with what they hold: the victim's update, or None."""
    t = threshold_for(len(a.spec.members))
    shares: dict[int, list[Share]] = {SEED_SHARE: [], MASK_KEY_SHARE: []}
    for holder in (a, d):  # A's and D's own shares of the victim's secrets
        bundle = holder.vault._bundles.get(victim)
        if bundle is not None:
            shares[SEED_SHARE].append(bundle.seed_share)
            shares[MASK_KEY_SHARE].append(bundle.mask_key_share)
    for unmask in unmasks:
        for item in unmask.shares:
            if item.owner == victim:
                shares[item.kind].append(item.share)
    distinct = {kind: {s.x: s for s in found} for kind, found in shares.items()}
    if min(len(found) for found in distinct.values()) < t or victim not in uploads:
        return None
    binding = d._mask_binding()
    seed = reconstruct_secret(list(distinct[SEED_SHARE].values()), t)
    mask_key = reconstruct_secret(list(distinct[MASK_KEY_SHARE].values()), t)
    keys = d.keys[victim]
    assert self_mask_commitment(seed, binding) == keys.seed_commitment
    assert public_key_of(mask_key) == keys.mask_public_key
    grid = QuantisationGrid.for_group(SMALL_PARAMS, len(a.spec.members))
    upload = uploads[victim]
    values = decrypt_chunks(d.secret_context, [bytes(c) for c in upload.chunks],
                            upload.n_values, grid.plain_modulus)
    masks = [(derive_mask_key(seed, binding, b"self"), -1)]
    for peer in upload.mask_set:
        if peer != victim:
            secret = pairwise_secret(mask_key, d.keys[peer].mask_public_key)
            masks.append((derive_mask_key(secret, binding, b"pair"), -pairwise_sign(victim, peer)))
    apply_masks(values, masks, grid.plain_modulus)
    update, _weight = decode_sum(values, grid)
    return update


@pytest.mark.parametrize("k", [4, 5, 6, 8])
async def test_a_and_d_showing_two_views_recover_no_honest_update(
    k: int, pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    group = Group(k, round_=11, group_id=f"split-view-{k}")
    a, d = assign_roles(group.members, group.spec.round, group.spec.group_id)
    honest = [m for m in group.members if m not in (a, d)]
    halves = (honest[: len(honest) // 2], honest[len(honest) // 2:])
    views = {}
    for half in halves:
        survivors = SurvivorsPayload(tuple(sorted((a, d, *half))), group.members).encode()
        views.update(dict.fromkeys(half, survivors))
    collusion = Collusion(group, views)
    updates = dict(zip(group.members, random_updates(k, N_PARAMS, seed=19), strict=True))

    def session(member: str) -> _Session:
        return _Session(group.spec, group.signers[member], group.verify,
                        validate_update(updates[member]), 1.0,
                        ColludingTransport(collusion, member), SMALL_PARAMS, TIMEOUT, pool)

    colluders = {a: session(a), d: session(d)}
    tasks = [
        colluders[m].run() if m in colluders else run_secure_aggregation(
            group.spec, group.signers[m], group.verify, updates[m], 1.0,
            group.network.transport(m), SMALL_PARAMS, step_timeout_s=TIMEOUT, executor=pool,
        )
        for m in group.members
    ]
    outcomes = dict(zip(group.members, await asyncio.gather(*tasks, return_exceptions=True),
                        strict=True))
    # what reached A or D: consumed by their sessions, or still waiting in their queues
    for colluder in (a, d):
        queue = group.network.queues[colluder]
        while not queue.empty():
            collusion.received.setdefault(colluder, []).append(queue.get_nowait()[1])
    # one UPLOAD chunk each at this size: its body after the chunk prefix
    uploads = {m.sender: UploadPayload.decode(read_prefix(m.payload)[2], SMALL_PARAMS.slot_count)
               for m in _decode_all(group, collusion.received.get(a, []), a, Step.UPLOAD)}
    unmasks = [UnmaskPayload.decode(m.payload)
               for m in _decode_all(group, collusion.received.get(d, []), d, Step.UNMASK)]
    assert set(uploads) == set(honest), sorted(uploads)  # A did get every honest ciphertext

    correlations: dict[str, float | None] = {}
    for victim in honest:
        recovered = _recover(victim, colluders[a], colluders[d], uploads, unmasks)
        correlations[victim] = None if recovered is None else float(
            np.corrcoef(recovered.astype(np.float64), updates[victim].astype(np.float64))[0, 1])
    print(f"split view k={k}: unmask answers reaching D {len(unmasks)}; "
          f"correlations {correlations}")
    for victim, corr in correlations.items():
        assert corr is None or abs(corr) < 0.1, (victim, corr)
    for member in honest:
        outcome = outcomes[member]
        assert not isinstance(outcome, AggregationResult), (member, outcome)
        assert isinstance(outcome, SecAggError), (member, repr(outcome))

