"""What ``fedswarm demo`` prints while it works: a heartbeat while building, short round lines.

Why a thread for the build: the first (cold) demo builds its model for a minute or
more, and some of that (importing torch, training the tokenizer) has no steps to
report from. A ticker that prints the latest status every few seconds means the
operator never stares at a silent terminal wondering whether it hung.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

#: Seconds between two heartbeat lines while the model builds (the issue asks for <= 5 s).
TICK_S = 4.0


class Ticker:
    """Prints ``prefix + latest status + elapsed seconds`` every ``interval_s`` until closed.

    ``update`` may be called from any thread, as often as every training step; only the
    ticker thread prints, so the output is at most one line per interval.
    """

    def __init__(self, prefix: str, echo: Callable[[str], None], *, first: str = "starting",
                 interval_s: float = TICK_S) -> None:
        self.prefix = prefix
        self.echo = echo
        self.interval_s = interval_s
        self._status = first
        self._started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-ticker", daemon=True)

    def update(self, status: str) -> None:
        self._status = status

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=2 * self.interval_s)

    def _loop(self) -> None:
        while not self._done.wait(self.interval_s):
            elapsed = time.monotonic() - self._started
            self.echo(f"{self.prefix}{self._status} ({elapsed:.0f} s)")


def round_label(status: dict[str, Any] | None, rounds: int) -> str:
    """One peer as "round R/N state": R is the round it is in, not the rounds it finished."""
    if status is None:
        return "starting"
    state = str(status.get("state", "?"))
    finished = int(status.get("last_finished_round", status.get("rounds_completed", 0)) or 0)
    if state in ("done", "stopping", "stopped"):
        return f"done {min(finished, rounds)}/{rounds}"
    current = int(status.get("round", 0) or 0)
    if state in ("starting", "loading", "waiting_for_peers") or current == 0:
        return state.replace("_", " ")
    return f"round {min(current, rounds)}/{rounds} {state.replace('_', ' ')}"


def progress_line(statuses: list[dict[str, Any] | None], rounds: int) -> str:
    """Every peer's round and phase, grouped: "round 2/3 training ×4 · round 2/3 grouping ×2".

    Grouping keeps the line short whatever the number of peers (one cell per peer was
    150 characters for six).
    """
    counts = Counter(round_label(s, rounds) for s in statuses)
    cells = [label if n == 1 else f"{label} ×{n}" for label, n in sorted(counts.items())]
    return " · ".join(cells)


class RoundProgress:
    """Prints the progress line when the peers' rounds change, and phase changes sparingly.

    A peer changes phase several times a round; with six peers one line per change was
    35 lines for a demo. A new round (or a peer starting or finishing) is shown at once;
    a change of phase only when ``min_gap_s`` passed since the last line. ``finish``
    prints the final state if it was held back.
    """

    def __init__(self, rounds: int, echo: Callable[[str], None], *, min_gap_s: float = 15.0
                 ) -> None:
        self.rounds = rounds
        self.echo = echo
        self.min_gap_s = min_gap_s
        self._started = time.monotonic()
        self._shown = ""
        self._shown_stage: frozenset[str] = frozenset()
        self._shown_at = float("-inf")
        self._pending = ""

    def show(self, statuses: list[dict[str, Any] | None]) -> None:
        line = progress_line(statuses, self.rounds)
        if line == self._shown:
            self._pending = ""
            return
        stage = frozenset(_stage(round_label(s, self.rounds)) for s in statuses)
        now = time.monotonic()
        if stage == self._shown_stage and now - self._shown_at < self.min_gap_s:
            self._pending = line
            return
        self._print(line, stage, now)

    def finish(self) -> None:
        if self._pending:
            self._print(self._pending, self._shown_stage, time.monotonic())

    def _print(self, line: str, stage: frozenset[str], now: float) -> None:
        self.echo(f"  {now - self._started:5.0f} s  {line}")
        self._shown, self._shown_stage, self._shown_at, self._pending = line, stage, now, ""


def _stage(label: str) -> str:
    """A label without its phase: "round 2/3 training" -> "round 2/3"."""
    return " ".join(label.split(" ")[:2]) if label.startswith(("round ", "done ")) else label
