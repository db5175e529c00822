"""Structured logging: JSON lines for pipes and the journal, text for terminals."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fedswarm.daemon.errors import ConfigError
from fedswarm.daemon.logging_setup import (
    NOISY_LOGGERS,
    RepeatFilter,
    configure_logging,
    set_level,
)

_CHILD = """
import logging
from fedswarm.daemon.logging_setup import configure_logging
configure_logging("info")
logging.getLogger("fedswarm.daemon.service").info("round done", extra={"round": 7, "peer": "12D3x"})
"""


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)
    logging.captureWarnings(False)


def _child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("FEDSWARM_LOG_FORMAT", "JOURNAL_STREAM")
    }
    env.update(extra)
    return env


def test_piped_stderr_gets_one_json_object_per_line_with_extras() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=_child_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "info"
    assert entry["logger"] == "fedswarm.daemon.service"
    assert entry["msg"] == "round done"
    assert entry["round"] == 7
    assert entry["peer"] == "12D3x"
    assert entry["ts"].endswith("Z")


def test_terminal_stderr_gets_human_readable_text() -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env=_child_env(),
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(leader)
    text = b"".join(chunks).decode("utf-8").strip()
    assert not text.startswith("{")
    assert "INFO" in text
    assert "fedswarm.daemon.service: round done" in text
    assert "round=7" in text and "peer=12D3x" in text


def test_environment_can_force_text_output_on_a_pipe() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        env=_child_env(FEDSWARM_LOG_FORMAT="text"),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "round done round=7" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_journal_stream_gets_syslog_priority_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """When stderr is the journal, '<4>' lets journald record the level."""
    stream = io.StringIO()
    # Point $JOURNAL_STREAM at a real file whose descriptor the stream claims.
    with open(os.devnull, "w") as devnull:
        info = os.fstat(devnull.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        configure_logging("info", json_output=True, stream=_FilenoStream(stream, devnull.fileno()))
        logging.getLogger("fedswarm.test").warning("disk almost full")
    line = stream.getvalue().strip()
    assert line.startswith("<4>{"), line
    assert json.loads(line[3:])["msg"] == "disk almost full"


class _FilenoStream(io.StringIO):
    """A text stream that claims another file's descriptor (for the journal check)."""

    def __init__(self, target: io.StringIO, fd: int) -> None:
        super().__init__()
        self._target, self._fd = target, fd

    def write(self, s: str) -> int:
        return self._target.write(s)

    def fileno(self) -> int:
        return self._fd


def test_configuring_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", json_output=True, stream=first)
    configure_logging("info", json_output=True, stream=second)
    logging.getLogger("fedswarm.test").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().strip().splitlines()) == 1


def test_set_level_changes_what_is_emitted() -> None:
    stream = io.StringIO()
    configure_logging("warning", json_output=True, stream=stream)
    log = logging.getLogger("fedswarm.test")
    log.info("hidden")
    set_level("debug")
    log.debug("shown")
    messages = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert messages == ["shown"]


def test_noisy_third_party_loggers_stay_at_warning_even_in_debug() -> None:
    stream = io.StringIO()
    configure_logging("debug", json_output=True, stream=stream)
    logging.getLogger("libp2p.pubsub").info("chatter")
    logging.getLogger("transformers.modeling_utils").info("chatter")
    logging.getLogger("urllib3.connectionpool").debug("chatter")
    logging.getLogger("libp2p").warning("real problem")
    messages = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert messages == ["real problem"]


def test_exception_traceback_is_kept_inside_the_json_line() -> None:
    stream = io.StringIO()
    configure_logging("info", json_output=True, stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("fedswarm.test").exception("round failed", extra={"round": 2})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert "RuntimeError: boom" in entry["exc"]
    assert entry["round"] == 2


def test_extras_that_are_not_json_or_clash_with_core_fields_are_kept() -> None:
    stream = io.StringIO()
    configure_logging("info", json_output=True, stream=stream)
    logging.getLogger("fedswarm.test").info("x", extra={"path": object, "ts": "mine"})
    entry = json.loads(stream.getvalue())
    assert entry["path"] == str(object)
    assert entry["extra_ts"] == "mine"
    assert entry["ts"] != "mine"


@pytest.mark.parametrize("bad", ["verbose", "", "INFO!"])
def test_unknown_level_is_a_config_error_and_changes_nothing(bad: str) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    with pytest.raises(ConfigError, match="log level"):
        configure_logging(bad, json_output=True)
    with pytest.raises(ConfigError, match="log level"):
        set_level(bad)
    assert root.handlers == before


def test_json_without_journal_has_no_priority_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")  # some other file: not our stream
    stream = io.StringIO()
    configure_logging("info", json_output=True, stream=stream)
    logging.getLogger("fedswarm.test").warning("plain")
    assert stream.getvalue().startswith("{")


def test_late_created_third_party_logger_with_its_own_info_level_stays_quiet() -> None:
    stream = io.StringIO()
    configure_logging("info", json_output=True, stream=stream)
    late = logging.getLogger("libp2p.network.auto_connector_made_later")
    late.setLevel(logging.INFO)  # as py-libp2p does for its auto-connector
    late.info("AUTO_CONNECTOR_STATE: chatter")
    gossip = logging.getLogger("libp2p.pubsub.gossipsub")
    gossip.warning("pending message queue for peer X exceeded limit (101 > 100)")
    gossip.warning("a different warning")
    logging.getLogger("fedswarm.daemon").info("ours")
    messages = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert messages == ["a different warning", "ours"]


def test_a_repeated_warning_is_logged_once_a_window_then_summarised() -> None:
    now = [0.0]
    repeat = RepeatFilter(60.0, clock=lambda: now[0])
    log = logging.getLogger("fedswarm.test.repeat")

    def passes(message: str, *args: object, **extra: object) -> bool:
        record = log.makeRecord(log.name, logging.WARNING, __file__, 1, message, args, None,
                                extra=extra or None)
        return bool(repeat.filter(record))

    assert passes("peer %s down", "a")
    assert not passes("peer %s down", "b")  # same condition, other peer: held back
    assert passes("round %d aborted", 3)  # another condition is not held back
    assert passes("refused: %s", "x", condition="heartbeat_forged")
    assert passes("refused: %s", "x", condition="heartbeat_stale")  # its own condition
    now[0] = 61.0
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1, "peer %s down", ("c",),
                            None)
    assert repeat.filter(record)
    assert record.similar_suppressed == 1  # type: ignore[attr-defined]
    info = log.makeRecord(log.name, logging.INFO, __file__, 1, "peer %s down", ("d",), None)
    assert repeat.filter(info) and repeat.filter(info)  # INFO is the level's business


def test_libp2p_errors_for_what_fedswarm_handles_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging("info", json_output=True, stream=stream)
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: %s", "x")
    logging.getLogger("libp2p.network.swarm").error("fail to upgrade mux for peer %s", "p")
    logging.getLogger("libp2p.host.basic_host").error("Failed to open stream to peer p:\n ...")
    logging.getLogger("libp2p.network.swarm").error("something else broke")
    messages = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert messages == ["something else broke"]


def test_the_resource_tracker_of_a_killed_daemon_stays_quiet() -> None:
    """The tracker takes its warning filters from ``sys.warnoptions`` when it starts."""
    configure_logging("info", json_output=True, stream=io.StringIO())
    assert "ignore::UserWarning:multiprocessing.resource_tracker" in sys.warnoptions


def test_a_malformed_repeat_window_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSWARM_LOG_REPEAT_WINDOW_S", "a minute")
    with pytest.raises(ConfigError, match="FEDSWARM_LOG_REPEAT_WINDOW_S"):
        configure_logging("info", json_output=True, stream=io.StringIO())
