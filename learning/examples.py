"""Turn validated rows into token examples with loss masks, and batch them.

Three rules drive this module:
* instruction and chat rows are trained on the response only (prompt tokens get label
  -100), otherwise the model wastes capacity learning to write questions;
* plain text is packed into full ``max_length`` blocks, so no compute goes to padding;
* batches come from a seeded per-epoch permutation and a cursor, which is all the state
  a checkpoint needs to resume the exact same data order.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import torch
from fedswarm.learning.data_files import BadRow, Row, held_out_count
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class Example:
    """Token ids and labels of equal length; label -100 means "no loss here"."""

    input_ids: list[int]
    labels: list[int]


def instruction_prompt(instruction: str, input_text: str | None) -> str:
    """The Alpaca-style prompt; documented in docs/learning.md so users can match it."""
    prompt = f"### Instruction:\n{instruction.strip()}\n\n"
    if input_text and input_text.strip():
        prompt += f"### Input:\n{input_text.strip()}\n\n"
    return prompt + "### Response:\n"


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def _eos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _encode_instruction(row: Row, tokenizer: PreTrainedTokenizerBase) -> Example:
    prompt = _bos(tokenizer) + _ids(
        tokenizer, instruction_prompt(row.fields["instruction"], row.fields.get("input")))
    response = _ids(tokenizer, row.fields["output"].strip()) + _eos(tokenizer)
    return Example(prompt + response, [IGNORE_INDEX] * len(prompt) + response)


def _render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
                 add_generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    return str(text)


def _encode_chat(row: Row, tokenizer: PreTrainedTokenizerBase) -> Example:
    """Render with the tokenizer's chat template; label only the assistant turns.

    Each assistant turn's span is found by rendering the conversation up to the turn
    (with the generation prompt) and up to its end, and tokenising those prefixes.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; use 'text' or 'instruction' rows")
    messages = [{"role": m["role"], "content": m["content"]} for m in row.fields["messages"]]
    ids = _ids(tokenizer, _render_chat(tokenizer, messages, False))
    labels = [IGNORE_INDEX] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, _render_chat(tokenizer, messages[:i], True)))
        end = len(_ids(tokenizer, _render_chat(tokenizer, messages[: i + 1], False)))
        labels[start:end] = ids[start:end]
    return Example(ids, labels)


def encode_supervised(rows: list[Row], tokenizer: PreTrainedTokenizerBase,
                      max_length: int) -> tuple[list[Example], list[BadRow]]:
    """Encode instruction/chat rows, truncating to ``max_length``.

    A row whose response is entirely cut off by truncation teaches nothing and is
    reported as a bad row rather than silently kept.
    """
    examples: list[Example] = []
    bad: list[BadRow] = []
    for row in rows:
        try:
            ex = _encode_instruction(row, tokenizer) if row.format == "instruction" \
                else _encode_chat(row, tokenizer)
        except (ValueError, TypeError, KeyError) as exc:
            bad.append(BadRow(row.path, row.line, f"cannot encode: {exc}"))
            continue
        ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        if all(label == IGNORE_INDEX for label in ex.labels[1:]):
            bad.append(BadRow(row.path, row.line,
                              f"response does not fit in max_length={max_length} tokens"))
            continue
        examples.append(ex)
    for b in bad:
        log.warning("skipping bad row %s", b)
    return examples, bad


def encode_text(rows: list[Row], tokenizer: PreTrainedTokenizerBase, max_length: int,
                packing: bool) -> list[Example]:
    """Encode text rows; packed into contiguous blocks, or one truncated example per row.

    When packing, the tail shorter than a block is dropped unless it is all there is.
    """
    docs = [_bos(tokenizer) + _ids(tokenizer, row.fields["text"]) + _eos(tokenizer)
            for row in rows]
    if not packing:
        return [Example(d[:max_length], d[:max_length]) for d in docs]
    stream = [t for d in docs for t in d]
    blocks = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    if len(blocks) > 1 and len(blocks[-1]) < max_length:
        blocks.pop()
    return [Example(b, list(b)) for b in blocks]


def split_rows(rows: list[Row], eval_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Deterministic train/eval split at row level (before packing, so no block leaks)."""
    n_eval = held_out_count(len(rows), eval_fraction)
    if n_eval == 0:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    eval_ids = set(order[:n_eval])
    return ([r for i, r in enumerate(rows) if i not in eval_ids],
            [r for i, r in enumerate(rows) if i in eval_ids])


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding gets attention 0 and label -100."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class BatchStream:
    """Endless shuffled batches; (epoch, cursor) is its whole state.

    Each epoch's order is a permutation seeded by (seed, epoch), so restoring the two
    integers from a checkpoint replays exactly the batches an uninterrupted run sees.
    """

    def __init__(self, examples: list[Example], batch_size: int, seed: int, pad_id: int) -> None:
        if not examples:
            raise ValueError("BatchStream needs at least one example")
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.epoch = 0
        self.cursor = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self) -> dict[str, torch.Tensor]:
        chosen: list[Example] = []
        while len(chosen) < self.batch_size:
            if self.cursor >= len(self._order):
                self.epoch += 1
                self.cursor = 0
                self._order = self._permutation(self.epoch)
            chosen.append(self.examples[self._order[self.cursor]])
            self.cursor += 1
        return collate(chosen, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self._order = self._permutation(self.epoch)


def eval_batches(examples: list[Example], batch_size: int, pad_id: int,
                 limit: int | None) -> list[dict[str, torch.Tensor]]:
    """Fixed, unshuffled eval batches so every round's eval loss is comparable."""
    batches = [collate(examples[i:i + batch_size], pad_id)
               for i in range(0, len(examples), batch_size)]
    return batches if limit is None else batches[:limit]
