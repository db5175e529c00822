"""The signed envelope: every way a message can be wrong raises its specific error."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import pytest
from fedswarm.secagg.errors import (
    ContextMismatchError,
    MessageFormatError,
    ProtocolViolationError,
    ReplayError,
    SecAggError,
    SignatureError,
    TamperedPayloadError,
    UnexpectedStepError,
    VectorShapeError,
)
from fedswarm.secagg.inbox import Roles
from fedswarm.secagg.messages import RoundBinding, Step, decode_message, encode_message
from fedswarm.secagg.payloads import ResultPayload, SumPayload, UploadPayload
from fedswarm.secagg.signing import Ed25519Signer, verifier_from_keys
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ALICE = Ed25519Signer.generate("alice")
BOB = Ed25519Signer.generate("bob")
MALLORY = Ed25519Signer.generate("mallory")
VERIFY = verifier_from_keys({"alice": ALICE.verify_key, "bob": BOB.verify_key})
BINDING = RoundBinding("fed", "group", 7)
CTX = hashlib.sha256(b"context").digest()


def message(
    binding: RoundBinding = BINDING, ctx: bytes = CTX, payload: bytes = b"payload"
) -> bytes:
    return encode_message(ALICE, binding, Step.KEYS, "bob", ctx, payload)


def test_valid_message_round_trips():
    decoded = decode_message(message(), BINDING, "bob", VERIFY, CTX)
    assert decoded.sender == "alice" and decoded.payload == b"payload"
    assert decoded.step is Step.KEYS


def test_tampered_payload_raises_tampered_payload_error():
    data = bytearray(message())
    data[-65] ^= 0x01  # last payload byte, just before the signature
    with pytest.raises(TamperedPayloadError):
        decode_message(bytes(data), BINDING, "bob", VERIFY, CTX)


def test_forged_header_raises_signature_error():
    data = bytearray(message())
    data[8] ^= 0x01  # inside the round number
    with pytest.raises(SignatureError):
        decode_message(bytes(data), BINDING, "bob", VERIFY, CTX)


def test_message_signed_by_another_key_raises_signature_error():
    forged = encode_message(
        Ed25519Signer(ALICE.peer_id, MALLORY._key), BINDING, Step.KEYS, "bob", CTX, b"x"
    )
    with pytest.raises(SignatureError):
        decode_message(forged, BINDING, "bob", VERIFY, CTX)


@pytest.mark.parametrize(
    "other",
    [
        RoundBinding("fed", "group", 6),
        RoundBinding("fed", "other", 7),
        RoundBinding("x", "group", 7),
    ],
)
def test_replay_from_other_round_group_or_federation_raises_replay_error(other):
    with pytest.raises(ReplayError):
        decode_message(message(binding=other), BINDING, "bob", VERIFY, CTX)


def test_ciphertext_under_another_context_raises_context_mismatch():
    other_ctx = hashlib.sha256(b"another key").digest()
    with pytest.raises(ContextMismatchError):
        decode_message(message(ctx=other_ctx), BINDING, "bob", VERIFY, CTX)


def test_an_abort_is_accepted_from_a_role_that_never_received_the_context():
    # an aggregator that lost the decryptor's context must still end its members' waits;
    # everything else stays bound to the context
    no_ctx = bytes(32)
    abort = encode_message(ALICE, BINDING, Step.ABORT, "bob", no_ctx, b"why")
    assert decode_message(abort, BINDING, "bob", VERIFY, CTX).step is Step.ABORT
    with pytest.raises(ContextMismatchError):
        decode_message(message(ctx=no_ctx), BINDING, "bob", VERIFY, CTX)
    with pytest.raises(ReplayError):  # still bound to its round and group
        decode_message(encode_message(ALICE, RoundBinding("fed", "group", 8), Step.ABORT, "bob",
                                      no_ctx, b"why"), BINDING, "bob", VERIFY, CTX)


def test_message_for_someone_else_is_a_protocol_violation():
    with pytest.raises(ProtocolViolationError):
        decode_message(message(), BINDING, "carol", VERIFY, CTX)


@pytest.mark.parametrize("cut", [0, 10, 60, 100])
def test_truncated_message_raises_format_error(cut):
    data = message()
    with pytest.raises(MessageFormatError):
        decode_message(data[: len(data) - 1 - cut], BINDING, "bob", VERIFY, CTX)


def test_trailing_bytes_raise_format_error():
    with pytest.raises(MessageFormatError):
        decode_message(message() + b"\0", BINDING, "bob", VERIFY, CTX)


def test_wrong_step_for_role_raises_unexpected_step():
    roles = Roles(frozenset({"a", "d", "m"}), aggregator="a", decryptor="d")
    with pytest.raises(UnexpectedStepError):
        roles.check(Step.UPLOAD, "m", "d")  # uploads go to the aggregator only
    with pytest.raises(UnexpectedStepError):
        roles.check(Step.CONTEXT, "m", "a")  # only the decryptor publishes a context
    with pytest.raises(UnexpectedStepError):
        roles.check(Step.RESULT, "a", "m")
    roles.check(Step.UPLOAD, "m", "a")


def test_wrong_length_vectors_raise_vector_shape_error():
    upload = UploadPayload(("a", "b"), 5000, [b"c1"]).encode()  # 5000 values need 2 chunks
    with pytest.raises(VectorShapeError):
        UploadPayload.decode(upload, 4096)
    summed = SumPayload(bytes(32), 9000, [b"1", b"2"]).encode()
    with pytest.raises(VectorShapeError):
        SumPayload.decode(summed, 4096)
    result = ResultPayload(("a",), (), 1.0, np.zeros(4, np.float32)).encode()
    with pytest.raises(VectorShapeError):
        ResultPayload.decode(result[:-4])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=300), st.binary(max_size=8))
def test_fuzzed_messages_only_ever_raise_secagg_errors(junk, position, splice):
    base = message()
    candidates = [junk, base[:position] + splice + base[position + len(splice) :], base[:position]]
    for data in candidates:
        with contextlib.suppress(SecAggError):
            decode_message(data, BINDING, "bob", VERIFY, CTX)
