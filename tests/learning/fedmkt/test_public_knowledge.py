"""Knowledge is computed batched, survives the wire, and bad knowledge is rejected."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import numpy as np
import pytest
import torch
from fedswarm.learning.fedmkt.errors import (
    KnowledgeFormatError,
    KnowledgeNonFiniteError,
    KnowledgePublicSetMismatchError,
    KnowledgeShapeError,
    KnowledgeVocabRangeError,
)
from fedswarm.learning.fedmkt.knowledge import (
    ExampleKnowledge,
    PublicKnowledge,
    compute_public_knowledge,
)
from fedswarm.learning.fedmkt.public_data import PublicDataset
from fedswarm.learning.fedmkt.trainer import accept_peer_knowledge, evaluate_lm_loss
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXTS = ["the cat sat on the mat", "café owners", "a", "hello world, hello tokenizer again"]


@pytest.fixture(scope="module")
def public() -> PublicDataset:
    return PublicDataset.from_texts(TEXTS)


@pytest.fixture(scope="module")
def knowledge(tiny_model_and_tokenizer, public: PublicDataset) -> PublicKnowledge:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny_model_and_tokenizer
    return compute_public_knowledge(
        model, tokenizer, public.texts, public.sha256, top_k=5, batch_size=3
    )


def _replace_example(knowledge: PublicKnowledge, index: int, **changes: object) -> PublicKnowledge:
    examples = list(knowledge.examples)
    examples[index] = dataclasses.replace(examples[index], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(knowledge, examples=tuple(examples))


def test_knowledge_shapes_dtypes_and_sorted_top_k(knowledge: PublicKnowledge) -> None:
    assert len(knowledge.examples) == len(TEXTS)
    for example in knowledge.examples:
        rows = len(example.input_ids) - 1
        assert example.topk_ids.shape == (rows, 5) and example.topk_ids.dtype == np.int32
        assert example.topk_logits.shape == (rows, 5) and example.topk_logits.dtype == np.float16
        assert np.all(np.diff(example.topk_logits.astype(np.float32), axis=-1) <= 0)
    knowledge.validate()


def test_batched_mean_ce_matches_unbatched_evaluation(
    tiny_model_and_tokenizer,
    knowledge: PublicKnowledge,  # type: ignore[no-untyped-def]
) -> None:
    model, tokenizer = tiny_model_and_tokenizer
    first = evaluate_lm_loss(model, tokenizer, [TEXTS[0]])
    assert knowledge.examples[0].mean_ce == pytest.approx(first, rel=1e-4)


def test_top_1_is_the_argmax_of_the_full_logits(
    tiny_model_and_tokenizer,
    knowledge: PublicKnowledge,  # type: ignore[no-untyped-def]
) -> None:
    model, _ = tiny_model_and_tokenizer
    ids = torch.tensor([knowledge.examples[3].input_ids.tolist()])
    with torch.no_grad():
        argmax = model(input_ids=ids).logits[0, :-1].argmax(-1)
    assert knowledge.examples[3].topk_ids[:, 0].tolist() == argmax.tolist()


def test_encode_decode_round_trip(knowledge: PublicKnowledge) -> None:
    decoded = PublicKnowledge.decode(knowledge.encode())
    assert decoded.public_sha256 == knowledge.public_sha256
    assert decoded.tokenizer == knowledge.tokenizer
    for got, sent in zip(decoded.examples, knowledge.examples, strict=True):
        assert np.array_equal(got.input_ids, sent.input_ids)
        assert np.array_equal(got.topk_ids, sent.topk_ids)
        assert np.array_equal(got.topk_logits, sent.topk_logits)
        assert got.mean_ce == pytest.approx(sent.mean_ce)
    decoded.validate()


def test_nan_logits_are_rejected(knowledge: PublicKnowledge) -> None:
    logits = knowledge.examples[0].topk_logits.copy()
    logits[1, 2] = np.nan
    with pytest.raises(KnowledgeNonFiniteError, match="example 0"):
        _replace_example(knowledge, 0, topk_logits=logits).validate()


def test_infinite_cross_entropy_is_rejected(knowledge: PublicKnowledge) -> None:
    with pytest.raises(KnowledgeNonFiniteError):
        _replace_example(knowledge, 1, mean_ce=float("inf")).validate()


def test_wrong_shape_is_rejected(knowledge: PublicKnowledge) -> None:
    ids = knowledge.examples[0].topk_ids[:, :3]
    with pytest.raises(KnowledgeShapeError, match="shape"):
        _replace_example(knowledge, 0, topk_ids=ids).validate()
    with pytest.raises(KnowledgeShapeError, match="expected 9"):
        knowledge.validate(expected_examples=9)


def test_out_of_vocabulary_ids_are_rejected(knowledge: PublicKnowledge) -> None:
    ids = knowledge.examples[0].topk_ids.copy()
    ids[0, 0] = len(knowledge.tokenizer)
    with pytest.raises(KnowledgeVocabRangeError):
        _replace_example(knowledge, 0, topk_ids=ids).validate()
    negative = knowledge.examples[0].input_ids.copy()
    negative[0] = -1
    with pytest.raises(KnowledgeVocabRangeError):
        _replace_example(knowledge, 0, input_ids=negative).validate()


def test_other_public_set_is_rejected(knowledge: PublicKnowledge) -> None:
    with pytest.raises(KnowledgePublicSetMismatchError):
        knowledge.validate(expected_public_sha256="f" * 64)


def test_truncated_blob_raises_format_error(knowledge: PublicKnowledge) -> None:
    blob = knowledge.encode()
    for cut in (0, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(KnowledgeFormatError):
            PublicKnowledge.decode(blob[:cut])


def test_archive_inflating_past_the_limit_is_refused(knowledge: PublicKnowledge) -> None:
    with pytest.raises(KnowledgeFormatError, match="inflates"):
        PublicKnowledge.decode(knowledge.encode(), max_decoded_bytes=100)


def test_archive_with_pickled_object_field_is_refused(knowledge: PublicKnowledge) -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(knowledge.encode())) as source,
        zipfile.ZipFile(buffer, "w") as target,
    ):
        for info in source.infolist():
            if info.filename != "mean_ce.npy":
                target.writestr(info, source.read(info))
        object_array = io.BytesIO()
        np.save(object_array, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
        target.writestr("mean_ce.npy", object_array.getvalue())
    with pytest.raises(KnowledgeFormatError):
        PublicKnowledge.decode(buffer.getvalue())


def test_bad_peer_is_dropped_and_good_peer_kept(
    knowledge: PublicKnowledge, public: PublicDataset
) -> None:
    logits = knowledge.examples[0].topk_logits.copy()
    logits[0, 0] = np.inf
    bad = _replace_example(knowledge, 0, topk_logits=logits)
    accepted, rejected = accept_peer_knowledge(
        {"good": knowledge.encode(), "bad": bad.encode(), "junk": b"\x00garbage"}, public
    )
    assert len(accepted) == 1 and set(rejected) == {"bad", "junk"}
    assert "infinity" in rejected["bad"]


def test_example_with_one_token_has_no_rows(knowledge: PublicKnowledge) -> None:
    short = knowledge.examples[2]
    assert isinstance(short, ExampleKnowledge)
    assert short.topk_ids.shape[0] == len(short.input_ids) - 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_blobs_only_ever_raise_format_errors(
    knowledge: PublicKnowledge, data: st.DataObject
) -> None:
    blob = bytearray(knowledge.encode())
    mode = data.draw(st.sampled_from(["random", "flip", "splice"]))
    if mode == "random":
        fuzzed = data.draw(st.binary(max_size=512))
    elif mode == "flip":
        for position in data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=8)):
            blob[position] ^= data.draw(st.integers(1, 255))
        fuzzed = bytes(blob)
    else:
        start = data.draw(st.integers(0, len(blob)))
        fuzzed = bytes(blob[:start]) + data.draw(st.binary(max_size=64)) + bytes(blob[start:])
    try:
        decoded = PublicKnowledge.decode(fuzzed)
    except KnowledgeFormatError:
        return
    try:
        decoded.validate()
    except (KnowledgeShapeError, KnowledgeNonFiniteError, KnowledgeVocabRangeError):
        return
