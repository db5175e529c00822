"""What a peer learns about the public set from its model, and its wire format.

Per public example we keep the input token ids, and per prediction position (position
``t`` predicts token ``t + 1``, so an example of ``L`` tokens has ``L - 1`` rows) the
top-k token ids and their logits, plus the example's mean cross-entropy. Together with
the sender's vocabulary (token strings) and boundary style, that is everything a peer
with a different tokenizer needs to build soft targets.

The wire format is a numpy ``.npz`` archive of flat arrays (never pickle): decoding a
hostile blob can only fail with :class:`KnowledgeFormatError`, and its uncompressed
size is checked before anything is inflated.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fedswarm.learning.fedmkt.boundary import BoundaryStyle, TokenizerCard
from fedswarm.learning.fedmkt.errors import (
    KnowledgeFormatError,
    KnowledgeNonFiniteError,
    KnowledgePublicSetMismatchError,
    KnowledgeShapeError,
    KnowledgeVocabRangeError,
)

KNOWLEDGE_FORMAT_VERSION = 1
#: Refuse blobs that would inflate beyond this many bytes.
MAX_DECODED_BYTES = 1024 * 1024 * 1024
_FIELDS = (
    "version",
    "public_sha256",
    "input_ids",
    "input_offsets",
    "topk_ids",
    "topk_logits",
    "mean_ce",
    "vocab_lengths",
    "vocab_utf8",
    "style",
)


@dataclass(frozen=True)
class ExampleKnowledge:
    """One public example as seen by one model."""

    input_ids: np.ndarray  # [L] int32, the sender's tokenisation of the text
    topk_ids: np.ndarray  # [L - 1, k] int32, sender's vocabulary
    topk_logits: np.ndarray  # [L - 1, k] float16, descending per row
    mean_ce: float  # mean next-token cross-entropy over the L - 1 predictions


@dataclass(frozen=True)
class PublicKnowledge:
    """A model's knowledge of the whole public set, plus its tokenizer card."""

    public_sha256: str
    examples: tuple[ExampleKnowledge, ...]
    tokenizer: TokenizerCard

    @property
    def top_k(self) -> int:
        for example in self.examples:
            return int(example.topk_ids.shape[1])
        return 0

    def encode(self) -> bytes:
        """Serialise into a compressed ``.npz`` archive of flat arrays."""
        lengths = [len(e.input_ids) for e in self.examples]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        k = self.top_k
        vocab_bytes = [t.encode("utf-8", errors="surrogatepass") for t in self.tokenizer.tokens]

        def stack(arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
            if not arrays:
                return np.zeros((0, k), dtype=dtype)
            return np.concatenate(arrays).astype(dtype, copy=False)

        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            version=np.array([KNOWLEDGE_FORMAT_VERSION], dtype=np.int32),
            public_sha256=np.frombuffer(self.public_sha256.encode("ascii"), dtype=np.uint8),
            input_ids=np.concatenate([e.input_ids for e in self.examples]).astype(np.int32)
            if self.examples
            else np.zeros(0, dtype=np.int32),
            input_offsets=offsets,
            topk_ids=stack([e.topk_ids for e in self.examples], np.int32),
            topk_logits=stack([e.topk_logits for e in self.examples], np.float16),
            mean_ce=np.array([e.mean_ce for e in self.examples], dtype=np.float32),
            vocab_lengths=np.array([len(b) for b in vocab_bytes], dtype=np.int32),
            vocab_utf8=np.frombuffer(b"".join(vocab_bytes), dtype=np.uint8),
            style=np.frombuffer(self.tokenizer.style.to_json().encode("utf-8"), dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def decode(cls, blob: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> PublicKnowledge:
        """Parse :meth:`encode` output; any malformation raises :class:`KnowledgeFormatError`.

        This checks structure only; call :meth:`validate` for value checks.
        """
        arrays = _read_archive(blob, max_decoded_bytes)
        try:
            return _from_arrays(arrays)
        except KnowledgeFormatError:
            raise
        except (ValueError, TypeError, IndexError, UnicodeDecodeError, OverflowError) as exc:
            raise KnowledgeFormatError(f"malformed knowledge archive: {exc}") from exc

    def validate(
        self,
        vocab_size: int | None = None,
        expected_public_sha256: str | None = None,
        expected_examples: int | None = None,
    ) -> None:
        """Check values received from a peer before they are trusted.

        Raises a :class:`KnowledgeError` subclass naming the first problem: another
        public set, wrong example count or shapes, non-finite numbers, or token ids
        outside the sender's vocabulary (``vocab_size``, default its card's size).
        """
        if expected_public_sha256 is not None and self.public_sha256 != expected_public_sha256:
            raise KnowledgePublicSetMismatchError(
                f"knowledge was computed over public set {self.public_sha256}, "
                f"expected {expected_public_sha256}"
            )
        if expected_examples is not None and len(self.examples) != expected_examples:
            raise KnowledgeShapeError(
                f"knowledge covers {len(self.examples)} examples, expected {expected_examples}"
            )
        size = len(self.tokenizer) if vocab_size is None else vocab_size
        k = self.top_k
        for index, example in enumerate(self.examples):
            _validate_example(index, example, k, size)


def _validate_example(index: int, example: ExampleKnowledge, k: int, vocab_size: int) -> None:
    where = f"example {index}"
    ids = example.input_ids
    if ids.ndim != 1:
        raise KnowledgeShapeError(f"{where}: input ids must be 1-D, got shape {ids.shape}")
    rows = max(len(ids) - 1, 0)
    for name, array in (("top-k ids", example.topk_ids), ("top-k logits", example.topk_logits)):
        if array.shape != (rows, k):
            raise KnowledgeShapeError(
                f"{where}: {name} shape {array.shape}, expected ({rows}, {k})"
            )
    if k < 1:
        raise KnowledgeShapeError(f"{where}: top-k must be at least 1")
    if not np.isfinite(example.topk_logits).all():
        raise KnowledgeNonFiniteError(f"{where}: logits contain NaN or infinity")
    if not np.isfinite(example.mean_ce) or example.mean_ce < 0:
        raise KnowledgeNonFiniteError(f"{where}: mean cross-entropy {example.mean_ce} is invalid")
    for name, array in (("input ids", ids), ("top-k ids", example.topk_ids)):
        if array.size and (int(array.min()) < 0 or int(array.max()) >= vocab_size):
            raise KnowledgeVocabRangeError(
                f"{where}: {name} outside the vocabulary [0, {vocab_size})"
            )


def _read_archive(blob: bytes, max_decoded_bytes: int) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            total = sum(info.file_size for info in archive.infolist())
            if total > max_decoded_bytes:
                raise KnowledgeFormatError(
                    f"knowledge archive inflates to {total} bytes, over {max_decoded_bytes}"
                )
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            missing = [name for name in _FIELDS if name not in archive.files]
            if missing:
                raise KnowledgeFormatError(f"knowledge archive lacks fields {missing}")
            return {name: np.asarray(archive[name]) for name in _FIELDS}
    except KnowledgeFormatError:
        raise
    except Exception as exc:  # zip/npy parsing has many failure types; all mean "bad blob"
        raise KnowledgeFormatError(f"cannot decode knowledge archive: {exc}") from exc


def _expect(arrays: dict[str, np.ndarray], name: str, dtype: Any, ndim: int) -> np.ndarray:
    array = arrays[name]
    if array.dtype != np.dtype(dtype) or array.ndim != ndim:
        raise KnowledgeFormatError(
            f"field {name}: expected {np.dtype(dtype)} with {ndim} dims, "
            f"got {array.dtype} with shape {array.shape}"
        )
    return array


def _from_arrays(arrays: dict[str, np.ndarray]) -> PublicKnowledge:
    version = _expect(arrays, "version", np.int32, 1)
    if version.shape != (1,) or int(version[0]) != KNOWLEDGE_FORMAT_VERSION:
        raise KnowledgeFormatError(f"unsupported knowledge format version {version.tolist()}")
    public_sha256 = bytes(_expect(arrays, "public_sha256", np.uint8, 1)).decode("ascii")
    input_ids = _expect(arrays, "input_ids", np.int32, 1)
    offsets = _expect(arrays, "input_offsets", np.int64, 1)
    topk_ids = _expect(arrays, "topk_ids", np.int32, 2)
    topk_logits = _expect(arrays, "topk_logits", np.float16, 2)
    mean_ce = _expect(arrays, "mean_ce", np.float32, 1)
    vocab_lengths = _expect(arrays, "vocab_lengths", np.int32, 1)
    vocab_utf8 = bytes(_expect(arrays, "vocab_utf8", np.uint8, 1))
    style = BoundaryStyle.from_json(bytes(_expect(arrays, "style", np.uint8, 1)).decode("utf-8"))

    count = len(mean_ce)
    if len(offsets) != count + 1 or (count and offsets[0] != 0):
        raise KnowledgeFormatError("input offsets do not match the number of examples")
    if np.any(np.diff(offsets) < 0) or int(offsets[-1]) != len(input_ids):
        raise KnowledgeFormatError("input offsets are not a partition of the input ids")
    if topk_ids.shape != topk_logits.shape:
        raise KnowledgeFormatError("top-k ids and logits differ in shape")
    lengths = np.diff(offsets)
    rows = np.maximum(lengths - 1, 0)
    if int(rows.sum()) != topk_ids.shape[0]:
        raise KnowledgeFormatError("top-k rows do not match the input lengths")
    if np.any(vocab_lengths < 0) or int(vocab_lengths.sum()) != len(vocab_utf8):
        raise KnowledgeFormatError("vocabulary lengths do not match the vocabulary bytes")

    tokens: list[str] = []
    start = 0
    for length in vocab_lengths.tolist():
        tokens.append(vocab_utf8[start : start + length].decode("utf-8", errors="surrogatepass"))
        start += length

    examples: list[ExampleKnowledge] = []
    row = 0
    for index in range(count):
        begin, end = int(offsets[index]), int(offsets[index + 1])
        n_rows = int(rows[index])
        examples.append(
            ExampleKnowledge(
                input_ids=input_ids[begin:end],
                topk_ids=topk_ids[row : row + n_rows],
                topk_logits=topk_logits[row : row + n_rows],
                mean_ce=float(mean_ce[index]),
            )
        )
        row += n_rows
    return PublicKnowledge(
        public_sha256=public_sha256,
        examples=tuple(examples),
        tokenizer=TokenizerCard(tokens=tuple(tokens), style=style),
    )


def tokenize_public(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length`` (special tokens included)."""
    ids: list[list[int]] = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        ids.append([int(i) for i in encoded])
    return ids


@torch.no_grad()
def compute_public_knowledge(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    public_sha256: str,
    top_k: int = 32,
    max_length: int = 128,
    batch_size: int = 8,
) -> PublicKnowledge:
    """Run ``model`` over the public texts (batched, no grad) and keep its top-k.

    Only ``[batch, length, k]`` is kept per batch; the full logits of a batch are the
    model's own activations and are dropped right after.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    all_ids = tokenize_public(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples: list[ExampleKnowledge] = []
    try:
        for start in range(0, len(all_ids), batch_size):
            batch = all_ids[start : start + batch_size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[row, : len(ids)] = 1
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device)
            ).logits.float()
            k = min(top_k, logits.shape[-1])
            values, indices = logits.topk(k, dim=-1)
            log_norm = torch.logsumexp(logits, dim=-1)
            for row, ids in enumerate(batch):
                n = len(ids)
                targets = input_ids[row, 1:n].to(device)
                if n > 1:
                    gold = logits[row, : n - 1].gather(-1, targets[:, None])[:, 0]
                    mean_ce = float((log_norm[row, : n - 1] - gold).mean())
                else:
                    mean_ce = 0.0
                examples.append(
                    ExampleKnowledge(
                        input_ids=np.asarray(ids, dtype=np.int32),
                        topk_ids=indices[row, : max(n - 1, 0)].cpu().numpy().astype(np.int32),
                        topk_logits=values[row, : max(n - 1, 0)].cpu().numpy().astype(np.float16),
                        mean_ce=mean_ce,
                    )
                )
    finally:
        model.train(was_training)
    return PublicKnowledge(
        public_sha256=public_sha256,
        examples=tuple(examples),
        tokenizer=TokenizerCard.from_tokenizer(tokenizer),
    )
