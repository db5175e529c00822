"""The small-message benchmark sends real messages both ways over one connection and
reports what each cost, beside a bare py-libp2p stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import p2p_messages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_both_methods_deliver_every_message_and_report_their_cost(tmp_path: Path) -> None:
    result = asyncio.run(p2p_messages.run(messages=40, blocks=2, payload_bytes=300))
    for method in p2p_messages.METHODS:
        row = result["methods"][method]
        assert len(row["blocks"]) == 2
        assert row["cpu_ms_per_message"] > 0
        assert row["wall_ms_per_message"] > 0
    summary = result["summary"]
    assert summary["fedswarm_over_bare_cpu"] == pytest.approx(
        summary["fedswarm_cpu_ms_per_message"] / summary["bare_cpu_ms_per_message"])
    # the header frame (signed JSON) rides with every payload
    assert result["wire_bytes_per_message"] > 300 + 64
    assert "fedswarm / bare CPU" in p2p_messages.table(result)
    assert result["machine"]["versions"]["libp2p"]


def test_the_command_writes_json_and_refuses_nonsense(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "messages.json"
    assert p2p_messages.main(["--messages", "10", "--blocks", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["benchmark"] == "p2p_messages"
    assert "CPU ms/msg" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        p2p_messages.main(["--messages", "0"])
