"""The quality benchmark's shared public set (``--public-share``).

A public set of the members' domains is a lever against client drift when rounds are far
apart (issue #28). It must be public (no peer's private row, no eval row), pinned by its
hash as ``[data.alignment]`` requires, and mixed into *every* arm: an organisation could
train on public text without federating, so the baselines get it too, or the comparison
would credit the federation with the public set's gain.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fedswarm.learning.fedmkt.public_data import load_public_dataset

from bench import quality, quality_inprocess
from bench.quality_setup import (
    Losses,
    QualityBenchError,
    RunSettings,
    demo_data,
    demo_public_set,
    file_public_set,
)


def _texts(path: Path) -> set[str]:
    return {json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()}


def test_the_demo_public_set_holds_every_peer_domain_and_no_private_or_eval_row(
    tmp_path: Path,
) -> None:
    data = demo_data(tmp_path, 4, seed=0)
    public = demo_public_set(tmp_path, data, rows_per_domain=8, share=0.4)

    texts = _texts(Path(public.path))
    assert len(texts) == 4 * 8
    private = set().union(*(_texts(p.train_path) for p in data.peers))
    held_out = set().union(*(_texts(p.eval_path) for p in data.peers))
    assert not texts & private
    assert not texts & held_out
    assert public.share == 0.4
    load_public_dataset(public.path, expected_sha256=public.sha256)  # raises on a mismatch


def test_a_users_public_file_is_pinned_by_its_hash_and_a_bad_one_is_a_clear_error(
    tmp_path: Path,
) -> None:
    good = tmp_path / "public.jsonl"
    good.write_text('{"text": "a public sentence"}\n{"text": "another one"}\n')
    public = file_public_set(good, 0.25)
    load_public_dataset(public.path, expected_sha256=public.sha256)

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(QualityBenchError, match="--public"):
        file_public_set(bad, 0.25)


def test_user_data_without_a_public_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("alpha", "beta", "gamma"):
        (folder / f"{name}.train.jsonl").write_text('{"text": "private"}\n')
        (folder / f"{name}.eval.jsonl").write_text('{"text": "held out"}\n')
    code = quality.main(["--quick", "--peers", "3", "--data", str(folder), "--public-share",
                         "0.3", "--workdir", str(tmp_path / "work")])
    assert code == 2
    assert "--public FILE" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--public-share", "1.0"], ["--public-share", "-0.1"],
                                  ["--public", "x.jsonl"], ["--public-share", "0.3",
                                                            "--public-rows", "0"]])
def test_public_set_arguments_out_of_range_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        quality.parse_args(["--quick", *argv])


class _RecordingTrainer:
    def __init__(self, calls: list[dict[str, Any]], kwargs: dict[str, Any]) -> None:
        calls.append(kwargs)

    def train(self, steps: int) -> None:
        pass

    def adapter_state(self) -> dict[str, Any]:
        return {}


class _Evaluator:
    def evaluate(self, state: dict[str, Any]) -> Losses:
        return Losses({}, 1.0)


def test_every_arm_trains_with_the_public_set_baselines_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = demo_data(tmp_path, 3, seed=0)
    public = demo_public_set(tmp_path, data, rows_per_domain=4, share=0.3)
    data = replace(data, public=public)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(quality_inprocess, "make_trainer",
                        lambda *args, **kwargs: _RecordingTrainer(calls, kwargs))
    settings = RunSettings(rounds=1, local_steps=1)
    quality_inprocess.run_local_only(tmp_path, settings, data, _Evaluator())  # type: ignore[arg-type]
    quality_inprocess.run_centralised(tmp_path, settings, data, _Evaluator())  # type: ignore[arg-type]

    quality_inprocess.FederatedArm(tmp_path, settings, data, secure=False, group_size=3)

    assert len(calls) == 3 + 1 + 3
    assert all(call["alignment"] is public for call in calls)
