"""Word-boundary markers of a tokenizer, detected from the tokenizer itself.

Tokenizers spell "this token starts a word" differently: byte-level BPE writes a
leading ``Ġ`` (its byte-to-unicode image of a space), sentencepiece-style tokenizers a
leading ``▁``, WordPiece marks the opposite case with a ``##`` continuation prefix. To
compare tokens across tokenizers we rewrite every token into one canonical spelling:
plain text, a leading space for a word start, invalid UTF-8 bytes as ``<0xNN>``.

The markers are found by running the tokenizer's own normaliser and pre-tokeniser on
probe strings, never from a table of known tokenizer classes, so a new tokenizer family
works as long as it behaves like one of these.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fedswarm.learning.fedmkt.errors import UnsupportedTokenizerError
from tokenizers import Tokenizer

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_HEX_ERRORS = "fedmkt-hexbytes"


def _hex_bytes(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: spell each undecodable byte as ``<0xNN>``."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(f"<0x{b:02X}>" for b in bad), error.end


codecs.register_error(_HEX_ERRORS, _hex_bytes)


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """Inverse of the byte-to-unicode table that byte-level pre-tokenisers apply.

    It is the public definition of the byte-level encoding (printable bytes map to
    themselves, the others to U+0100 onwards), needed to turn ``Ġ`` back into a space.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            code_points.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(byte_values, code_points, strict=True)}


@dataclass(frozen=True)
class BoundaryStyle:
    """How one tokenizer spells word boundaries and bytes in its token strings."""

    word_start_marker: str | None = None
    continuation_marker: str | None = None
    byte_level: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "word_start_marker": self.word_start_marker,
                "continuation_marker": self.continuation_marker,
                "byte_level": self.byte_level,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> BoundaryStyle:
        """Parse :meth:`to_json` output; raises ``ValueError`` on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("boundary style must be a JSON object")
        start = data.get("word_start_marker")
        cont = data.get("continuation_marker")
        byte_level = data.get("byte_level")
        if start is not None and (not isinstance(start, str) or not start):
            raise ValueError("word_start_marker must be a non-empty string or null")
        if cont is not None and (not isinstance(cont, str) or not cont):
            raise ValueError("continuation_marker must be a non-empty string or null")
        if not isinstance(byte_level, bool):
            raise ValueError("byte_level must be a boolean")
        return cls(word_start_marker=start, continuation_marker=cont, byte_level=byte_level)


def backend_of(tokenizer: Any) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer (or itself)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    raise UnsupportedTokenizerError(
        f"{type(tokenizer).__name__} has no fast tokenizers backend; FedMKT needs one to "
        "read its vocabulary and word-boundary markers"
    )


def _surface(backend: Tokenizer, text: str) -> str:
    """What the tokenizer's normaliser and pre-tokeniser make of ``text``, joined."""
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is not None:
        return "".join(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return text


def _inserted_text(with_space: str, without_space: str) -> str:
    """The text ``with_space`` has where ``without_space`` has none (common ends removed)."""
    prefix = 0
    while (
        prefix < min(len(with_space), len(without_space))
        and with_space[prefix] == without_space[prefix]
    ):
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(with_space), len(without_space)) - prefix
        and with_space[-1 - suffix] == without_space[-1 - suffix]
    ):
        suffix += 1
    return with_space[prefix : len(with_space) - suffix]


def detect_boundary_style(tokenizer: Any) -> BoundaryStyle:
    """Find the tokenizer's word-start marker, continuation marker and byte-level flag.

    * word start: compare the surface of ``"a a"`` with ``"aa"``; what the first has in
      between is the marker (``Ġ``, ``▁``, a plain space, or nothing when the
      pre-tokeniser drops spaces, as WordPiece's does);
    * continuation: the model's (or decoder's) ``continuing_subword_prefix``/``prefix``;
    * byte level: the surface of ``"é"`` is its UTF-8 bytes in the byte-level alphabet.
    """
    backend = backend_of(tokenizer)
    marker = _inserted_text(_surface(backend, "a a"), _surface(backend, "aa")) or None
    byte_level = False
    char_of_byte = {b: char for char, b in byte_level_alphabet().items()}
    byte_image = "".join(char_of_byte[b] for b in "é".encode())
    if _surface(backend, "é").endswith(byte_image):
        byte_level = True
    continuation = getattr(backend.model, "continuing_subword_prefix", None)
    if not continuation and backend.decoder is not None:
        continuation = getattr(backend.decoder, "prefix", None)
    return BoundaryStyle(
        word_start_marker=marker,
        continuation_marker=continuation or None,
        byte_level=byte_level,
    )


def normalise_token(token: str, style: BoundaryStyle) -> str:
    """Rewrite one token string into the canonical, tokenizer-independent spelling.

    Word starts get one leading space, continuation markers disappear, byte-level and
    ``<0xNN>`` byte-fallback tokens become the text their bytes spell (or ``<0xNN>``
    for bytes that are not valid UTF-8 alone), and the result is NFC-normalised.
    """
    fallback = _BYTE_FALLBACK.match(token)
    if fallback is not None:
        return bytes([int(fallback.group(1), 16)]).decode("utf-8", errors=_HEX_ERRORS)
    if style.byte_level:
        alphabet = byte_level_alphabet()
        if all(char in alphabet for char in token):
            raw = bytes(alphabet[char] for char in token)
            text = raw.decode("utf-8", errors=_HEX_ERRORS)
            return unicodedata.normalize("NFC", text)
        return unicodedata.normalize("NFC", token)  # a special token such as <|endoftext|>
    text = token
    if style.continuation_marker and text.startswith(style.continuation_marker):
        text = text[len(style.continuation_marker) :]
    elif style.continuation_marker and not style.word_start_marker:
        text = " " + text  # WordPiece: every piece without "##" starts a word
    if style.word_start_marker and style.word_start_marker != " ":
        text = text.replace(style.word_start_marker, " ")
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class TokenizerCard:
    """A tokenizer's vocabulary (token strings in id order) and its boundary style.

    This is all a peer needs of another peer's tokenizer to map and align tokens.
    """

    tokens: tuple[str, ...]
    style: BoundaryStyle

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenizerCard:
        backend = backend_of(tokenizer)
        size = backend.get_vocab_size(with_added_tokens=True)
        tokens = [backend.id_to_token(i) or "" for i in range(size)]
        return cls(tokens=tuple(tokens), style=detect_boundary_style(tokenizer))

    def __len__(self) -> int:
        return len(self.tokens)

    def normalised(self) -> list[str]:
        return [normalise_token(t, self.style) for t in self.tokens]

    def sha256(self) -> str:
        """Identity of the vocabulary + style, used as the mapping cache key."""
        digest = hashlib.sha256(b"fedswarm-vocab-v1")
        digest.update(self.style.to_json().encode("utf-8"))
        for token in self.tokens:
            data = token.encode("utf-8", errors="surrogatepass")
            digest.update(struct.pack(">I", len(data)))
            digest.update(data)
        return digest.hexdigest()


def normalise_tokens(tokens: Sequence[str], style: BoundaryStyle) -> list[str]:
    return [normalise_token(t, style) for t in tokens]
