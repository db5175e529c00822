"""Process-wide logging: JSON lines for machines, readable lines for people.

Why two formats: under systemd (or docker, or a pipe) stderr is read by a
program, and one JSON object per line keeps the round number and peer id as
fields that ``jq`` and log shippers can filter on. At a terminal a person reads
it, so the same fields are appended as ``key=value``.

Why the priority prefix: when stderr is the journal (systemd sets
``$JOURNAL_STREAM``), a ``<N>`` prefix lets journald store each line's level,
so ``journalctl -p warning`` works; journald strips the prefix, so
``journalctl -o cat`` still shows plain JSON.

Callers add fields with ``logger.info("...", extra={"round": 3, "peer": pid})``.

Why a repeat filter: a healthy federation's log should be quiet. A condition that
recurs (a member down, heartbeats queued while we were away, an outsider dialling
again and again) is logged once per window (60 s; ``FEDSWARM_LOG_REPEAT_WINDOW_S``),
and the next line for it after the window carries ``similar_suppressed=N``. The
counters in ``/api/security`` and ``/metrics`` keep the full count. A "condition" is
the logger and the message template, or ``extra={"condition": ...}`` where one
template covers several (each rejection reason is its own).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from .errors import ConfigError

__all__ = [
    "NOISY_LOGGERS",
    "REPEAT_WINDOW_ENV",
    "JsonFormatter",
    "RepeatFilter",
    "TextFormatter",
    "configure_logging",
    "parse_level",
    "set_level",
    "uses_json",
]

NOISY_LOGGERS: tuple[str, ...] = (
    "libp2p",
    "multiaddr",
    "async_service",
    "transformers",
    "urllib3",
    "filelock",
    "huggingface_hub",
    "aiohttp.access",
)
"""Third-party loggers that flood INFO/DEBUG; they stay at WARNING (or quieter)."""

REPEATED_WARNINGS: dict[str, tuple[str, ...]] = {
    # One line per heartbeat queued for a peer that went away: hundreds a minute while
    # the link is down, and the daemon already logs the disconnect once.
    "libp2p.pubsub.gossipsub": ("pending message queue for peer",),
}


EXPECTED_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    # py-libp2p logs every failed dial at ERROR. A member that is not listening yet
    # (start-up) or any more (down) is expected: fedswarm re-dials it with backoff
    # and says so at debug (p2p/connections.py); peers up/down show on the dashboard.
    "libp2p.transport.tcp.tcp": ("Failed to open TCP stream",),
    # An inbound dialler with no multiplexer in common, at ERROR: fedswarm counts it
    # as ``muxer_refused`` and logs its own warning (p2p/refusals.py).
    "libp2p.network.swarm": ("fail to upgrade mux for peer",),
    # A stream to a member that is stopping or restarting: py-libp2p logs ERRORs and
    # then raises to fedswarm, which handles it and says what it meant ("group to X
    # not delivered", a retried blob).
    "libp2p.host.basic_host": ("Failed to open stream to peer",),
    "libp2p.protocol_muxer.multiselect_client": (
        "MultiselectClient handshake: read failed",
        "MultiselectClient handshake: write failed",
    ),
}
"""Third-party records, at any level, that describe normal operation fedswarm handles."""

REPEAT_WINDOW_ENV = "FEDSWARM_LOG_REPEAT_WINDOW_S"
DEFAULT_REPEAT_WINDOW_S = 60.0
_MAX_CONDITIONS = 1024


class RepeatFilter(logging.Filter):
    """At most one WARNING-or-worse record per condition per ``window_s``.

    The first record of a condition passes; later ones within the window are
    counted and dropped; the first one after the window passes with
    ``similar_suppressed`` (how many were dropped) as a field. INFO and DEBUG pass
    untouched: their volume is the log level's business.
    """

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()  # records arrive from the loop, trio and worker threads
        self._conditions: dict[tuple[str, int, str], list[float]] = {}  # -> [start, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.window_s <= 0:
            return True
        condition = getattr(record, "condition", None) or str(record.msg)
        key = (record.name, record.levelno, str(condition))
        now = self._clock()
        with self._lock:
            entry = self._conditions.get(key)
            if entry is not None and now - entry[0] < self.window_s:
                entry[1] += 1
                return False
            dropped = int(entry[1]) if entry is not None else 0
            self._conditions.pop(key, None)
            self._conditions[key] = [now, 0.0]
            if len(self._conditions) > _MAX_CONDITIONS:  # forget the least recent
                del self._conditions[next(iter(self._conditions))]
        if dropped:
            record.similar_suppressed = dropped
        return True


def repeat_window_s() -> float:
    """The repeat filter's window: ``$FEDSWARM_LOG_REPEAT_WINDOW_S`` or 60 s (0: off)."""
    text = os.environ.get(REPEAT_WINDOW_ENV, "").strip()
    if not text:
        return DEFAULT_REPEAT_WINDOW_S
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{REPEAT_WINDOW_ENV}: expected seconds, got {text!r}") from None
    if value < 0:
        raise ConfigError(f"{REPEAT_WINDOW_ENV}: must be >= 0 (0 turns it off)")
    return value


class ThirdPartyFilter(logging.Filter):
    """Hold third-party records to WARNING and drop known repeated warnings.

    A filter on our handler, rather than logger levels alone, because py-libp2p creates
    some loggers late and sets their levels itself (its auto-connector logs at INFO every
    ten seconds).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        for prefix in NOISY_LOGGERS:
            if name == prefix or name.startswith(prefix + "."):
                if record.levelno < logging.WARNING:
                    return False
                break
        repeated = REPEATED_WARNINGS.get(name)
        if repeated and record.levelno < logging.ERROR:
            message = str(record.msg)
            return not any(message.startswith(start) for start in repeated)
        expected = EXPECTED_THIRD_PARTY.get(name)
        if expected:
            message = str(record.msg)
            return not any(message.startswith(start) for start in expected)
        return True

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

# syslog priorities for the journal's "<N>" line prefix (see sd-daemon(3)).
_SYSLOG_PRIORITY: dict[int, int] = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

_OWN_HANDLER_ATTRIBUTE = "_fedswarm_handler"


def parse_level(level: str) -> int:
    """Turn "info"/"INFO"/"warning"... into a logging level; ``ConfigError`` if unknown."""
    number = _LEVELS.get(level.strip().lower()) if isinstance(level, str) else None
    if number is None:
        raise ConfigError(f"log level: expected one of {', '.join(_LEVELS)}, got {level!r}")
    return number


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with ``extra=``, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ``extra`` fields, exc."""

    def __init__(self, *, journal_priority: bool = False) -> None:
        super().__init__()
        self.journal_priority = journal_priority

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_extras(record).items():
            # An extra named like a core field must not overwrite it.
            entry[key if key not in entry else f"extra_{key}"] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that is not JSON (a Path, a peer id object) is
        # written as text rather than losing the whole line.
        line = json.dumps(entry, default=str, ensure_ascii=False)
        if self.journal_priority:
            return f"<{_syslog_priority(record.levelno)}>{line}"
        return line


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger: message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        millis = int(record.msecs)
        line = f"{stamp}.{millis:03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = record_extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure_logging(
    level: str,
    *,
    json_output: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Set up the root logger once per process; calling again replaces, never duplicates.

    ``json_output=None`` picks JSON unless stderr is a terminal; the environment
    variable ``FEDSWARM_LOG_FORMAT=json|text`` overrides that guess (useful in a
    container that allocates a tty). ``stream`` defaults to ``sys.stderr``.
    Raises ``ConfigError`` for an unknown level, before changing anything.
    """
    number = parse_level(level)
    window_s = repeat_window_s()
    out = stream if stream is not None else sys.stderr
    use_json = _choose_json(out) if json_output is None else json_output
    formatter: logging.Formatter = (
        JsonFormatter(journal_priority=_is_journal(out)) if use_json else TextFormatter()
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(ThirdPartyFilter())
    handler.addFilter(RepeatFilter(window_s))
    setattr(handler, _OWN_HANDLER_ATTRIBUTE, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OWN_HANDLER_ATTRIBUTE, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    # Python warnings (e.g. from transformers) become log records in the same format.
    logging.captureWarnings(True)
    _quiet_libraries(use_json)
    _apply_level(number)


# Deprecations inside libraries that an operator can neither act on nor avoid: peft
# reads transformers' deprecated ``is_gradient_checkpointing`` on every model load.
_LIBRARY_DEPRECATIONS = ("`is_gradient_checkpointing` is deprecated",)

# multiprocessing's resource tracker (a helper process of the HE pool) outlives a
# daemon killed with ``kill -9 PID``, frees the pool's semaphores as it is meant to,
# and then warns on the daemon's stderr that it had to: a raw, alarming line after
# every such kill that asks nothing of the operator. The tracker takes its warning
# filters from ``sys.warnoptions`` when it is started, so this must run before it is.
_RESOURCE_TRACKER_OPTION = "ignore::UserWarning:multiprocessing.resource_tracker"


def _quiet_libraries(machine_readable: bool) -> None:
    """Keep lines that are not log records, and warnings nobody can act on, out of the log."""
    for message in _LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=FutureWarning)
    if _RESOURCE_TRACKER_OPTION not in sys.warnoptions:
        sys.warnoptions.append(_RESOURCE_TRACKER_OPTION)
    if machine_readable:
        # transformers' "Loading weights" progress bar is raw text in a JSON log.
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()


def uses_json() -> bool:
    """Whether ``configure_logging`` chose JSON lines (False before it was called)."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _OWN_HANDLER_ATTRIBUTE, False):
            return isinstance(handler.formatter, JsonFormatter)
    return False


def set_level(level: str) -> None:
    """Change the log level at run time (the daemon calls this on SIGHUP)."""
    _apply_level(parse_level(level))


def _apply_level(number: int) -> None:
    logging.getLogger().setLevel(number)
    noisy_level = max(number, logging.WARNING)
    for name in NOISY_LOGGERS:
        noisy = logging.getLogger(name)
        noisy.setLevel(noisy_level)
        # py-libp2p sets propagate=False on its loggers at import, which would hide
        # its real warnings from our handler: route them through the root again.
        noisy.propagate = True


def _choose_json(stream: TextIO) -> bool:
    forced = os.environ.get("FEDSWARM_LOG_FORMAT", "").strip().lower()
    if forced == "json":
        return True
    if forced == "text":
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or unusual stream: a machine reads it
        return True


def _is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journald socket systemd named in ``$JOURNAL_STREAM``."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        device_text, inode_text = expected.split(":", 1)
        info = os.fstat(stream.fileno())
        return info.st_dev == int(device_text) and info.st_ino == int(inode_text)
    except (ValueError, OSError, AttributeError):
        return False


def _syslog_priority(levelno: int) -> int:
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return _SYSLOG_PRIORITY[threshold]
    return _SYSLOG_PRIORITY[logging.DEBUG]


def _iso_timestamp(created: float) -> str:
    """UTC, millisecond precision, with a Z: sorts as text and parses everywhere."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int((created % 1) * 1000):03d}Z"
