"""Each data format becomes the right tokens, and loss is taken only where it should be."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from fedswarm.learning.data_files import check_has_valid_row, read_rows
from fedswarm.learning.dataset import prepare_data
from fedswarm.learning.errors import DataError
from fedswarm.learning.examples import IGNORE_INDEX, BatchStream, encode_text
from fedswarm.learning.settings import DataSettings
from transformers import AutoTokenizer, PreTrainedTokenizerBase


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(demo_model_dir))


def _write(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def _labelled_text(tokenizer: PreTrainedTokenizerBase, ids: list[int], labels: list[int]) -> str:
    kept = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    return str(tokenizer.decode(kept))


def test_text_rows_are_packed_into_full_blocks_with_loss_everywhere(
        tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    rows = [{"text": f"The wind turbine at Lakeside made {i} megawatts in May."} for i in range(40)]
    data = prepare_data(DataSettings(str(_write(tmp_path / "t.jsonl", rows)), eval_fraction=0.1,
                                     max_length=32), tokenizer, seed=0)
    assert data.format == "text"
    assert data.train_rows == 36 and len(data.eval) > 0
    assert all(len(e.input_ids) == 32 for e in data.train)
    assert all(e.labels == e.input_ids for e in data.train)


def test_text_without_packing_keeps_one_truncated_example_per_row(
        tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    rows, _ = read_rows(_write(tmp_path / "t.jsonl", [{"text": "short"}, {"text": "word " * 100}]),
                        "auto")
    examples = encode_text(rows, tokenizer, max_length=16, packing=False)
    assert len(examples) == 2
    assert len(examples[1].input_ids) == 16 and len(examples[0].input_ids) < 16


def test_instruction_loss_only_on_response(tokenizer: PreTrainedTokenizerBase,
                                           tmp_path: Path) -> None:
    row = {"instruction": "Define duration.", "input": "finance",
           "output": "The sensitivity of a bond price to interest rates."}
    data = prepare_data(DataSettings(str(_write(tmp_path / "i.jsonl", [row])), eval_fraction=0.0),
                        tokenizer, seed=0)
    assert data.format == "instruction"
    (example,) = data.train
    labelled = _labelled_text(tokenizer, example.input_ids, example.labels)
    assert labelled.replace("</s>", "").strip() == row["output"]
    assert "Define duration" in tokenizer.decode(example.input_ids)


def test_chat_loss_only_on_assistant_turns(tokenizer: PreTrainedTokenizerBase,
                                           tmp_path: Path) -> None:
    row = {"messages": [{"role": "system", "content": "You are a harbour master."},
                        {"role": "user", "content": "What is demurrage?"},
                        {"role": "assistant", "content": "A fee for keeping a ship too long."},
                        {"role": "user", "content": "And ballast?"},
                        {"role": "assistant", "content": "Weight carried low in a ship."}]}
    data = prepare_data(DataSettings(str(_write(tmp_path / "c.jsonl", [row])), eval_fraction=0.0),
                        tokenizer, seed=0)
    assert data.format == "chat"
    labelled = _labelled_text(tokenizer, data.train[0].input_ids, data.train[0].labels)
    assert "A fee for keeping a ship too long." in labelled
    assert "Weight carried low in a ship." in labelled
    assert "demurrage" not in labelled and "harbour master" not in labelled
    assert "<|user|>" not in labelled


def test_bad_rows_are_skipped_and_reported_with_file_and_line(
        tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.jsonl", [
        {"text": "good row one"},
        "{not json\n",
        {"text": ""},
        "\n",
        ["a", "list"],
        {"text": "good row two"},
    ])
    rows, bad = read_rows(path, "auto")
    assert [r.fields["text"] for r in rows] == ["good row one", "good row two"]
    assert [b.line for b in bad] == [2, 3, 5]
    assert all(str(path) in str(b) for b in bad)
    assert "invalid JSON" in bad[0].reason


def test_rows_of_another_format_are_bad_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [{"instruction": "a", "output": "b"}, {"text": "c"}])
    rows, bad = read_rows(path, "auto")
    assert len(rows) == 1 and rows[0].format == "instruction"
    assert bad[0].line == 2


def test_file_without_valid_rows_raises_data_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", ["{oops\n", {"text": 3}])
    with pytest.raises(DataError, match=r"bad\.jsonl"):
        read_rows(path, "text")


def test_missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "nope.jsonl", "auto")


def test_parquet_without_pyarrow_raises_clear_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes "import pyarrow" fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pyarrow"):
        read_rows(path, "auto")


def test_parquet_rows_of_each_format_are_read_with_their_row_number(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    text_path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"text": ["first row", "second row"]}), text_path)
    rows, bad = read_rows(text_path, "auto")
    assert [r.format for r in rows] == ["text", "text"] and not bad
    assert [r.line for r in rows] == [1, 2]

    chat_path = tmp_path / "chat.parquet"
    messages = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    pq.write_table(pa.table({"messages": messages}), chat_path)
    rows, bad = read_rows(chat_path, "auto")
    assert rows[0].format == "chat" and not bad

    mixed = tmp_path / "instruction.parquet"
    pq.write_table(pa.table({"instruction": ["a", None], "input": ["", ""], "output": ["b", "c"]}),
                   mixed)
    rows, bad = read_rows(mixed, "instruction")
    assert len(rows) == 1 and bad[0].line == 2 and str(bad[0]).startswith(str(mixed))


def test_corrupt_parquet_raises_data_error_naming_the_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet"):
        read_rows(path, "auto")


def test_response_cut_off_by_truncation_is_reported(tokenizer: PreTrainedTokenizerBase,
                                                    tmp_path: Path) -> None:
    rows = [{"instruction": "word " * 50, "output": "answer"},
            {"instruction": "short", "output": "answer"}]
    data = prepare_data(DataSettings(str(_write(tmp_path / "i.jsonl", rows)), eval_fraction=0.0,
                                     max_length=40), tokenizer, seed=0)
    assert len(data.train) == 1
    assert any(b.line == 1 and "max_length" in b.reason for b in data.bad_rows)


def test_batch_stream_resumes_the_same_order(tokenizer: PreTrainedTokenizerBase,
                                             tmp_path: Path) -> None:
    rows, _ = read_rows(_write(tmp_path / "t.jsonl", [{"text": f"row {i}"} for i in range(7)]),
                        "text")
    examples = encode_text(rows, tokenizer, max_length=16, packing=False)
    a = BatchStream(examples, batch_size=3, seed=5, pad_id=0)
    for _ in range(3):
        a.next_batch()
    b = BatchStream(examples, batch_size=3, seed=5, pad_id=0)
    b.load_state_dict(a.state_dict())
    assert a.next_batch()["input_ids"].tolist() == b.next_batch()["input_ids"].tolist()


def test_invalid_json_reason_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "ctrl.jsonl"
    path.write_text('{"text": "tab\there"}\n{"text": "fine"}\n')
    _rows, bad = read_rows(path, "auto")
    assert bad[0].reason == "invalid JSON: Invalid control character at column 14"


def test_file_without_valid_rows_names_each_rows_problem(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", ["{oops\n", {"text": 3}, {"text": ""}, {"text": 4}])
    with pytest.raises(DataError) as caught:
        read_rows(path, "text")
    message = str(caught.value)
    assert "4 bad rows" in message
    assert "line 1: invalid JSON" in message
    assert "line 2: 'text' must be a non-empty string" in message
    assert "and 1 more" in message
    assert "\n" not in message


def test_check_has_valid_row_stops_at_the_first_valid_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", ["{oops\n", {"instruction": "a", "output": "b"}])
    assert check_has_valid_row(path, "auto") == "instruction"


def test_check_has_valid_row_refuses_a_file_with_none(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "x"}, "{oops\n"])
    with pytest.raises(DataError, match=r"2 bad rows: line 1: no 'text'.*line 2: invalid JSON"):
        check_has_valid_row(path, "auto")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        check_has_valid_row(empty, "auto")
