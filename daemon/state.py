"""The daemon's durable state: one SQLite database (WAL) under the state directory.

It records what an operator and a restart need: the round log, per-step and
per-round metrics, messages rejected and why, generation samples and events.
The schema carries a version; ``MIGRATIONS`` upgrades older files in place, one
transaction per step, so an upgrade interrupted mid-way leaves the previous
version intact. (Version 1 also creates a ``peers`` table that nothing reads or
writes any more: the dashboard's peer list comes from the live roster and
membership.)

Writes are small (one row per event) and run on the caller's thread; the
connection is shared under a lock so the dashboard's reads and the round loop's
writes never interleave inside one transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DiskFullError, StateError

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE rounds (
        round INTEGER PRIMARY KEY,
        status TEXT NOT NULL,              -- in_progress | complete | aborted | local_only
        started_at REAL NOT NULL,
        finished_at REAL,
        group_id TEXT,
        members TEXT,                      -- JSON list of peer ids
        aggregator TEXT,
        decryptor TEXT,
        survivors TEXT,                    -- JSON list
        dropped TEXT,                      -- JSON list
        protocol TEXT,
        train_loss REAL,
        eval_loss_before REAL,
        eval_loss_after REAL,
        train_s REAL,
        aggregate_s REAL,
        apply_s REAL,
        bytes_sent INTEGER,
        bytes_received INTEGER,
        adapter_fingerprint TEXT,
        staleness INTEGER,
        note TEXT
    );
    CREATE TABLE step_metrics (
        ts REAL NOT NULL,
        round INTEGER NOT NULL,
        step INTEGER NOT NULL,
        loss REAL NOT NULL
    );
    CREATE TABLE peers (
        peer_id TEXT PRIMARY KEY,
        org TEXT,
        addrs TEXT,
        last_seen REAL,
        round INTEGER,
        state TEXT,
        fingerprint TEXT,
        latency_ms REAL,
        version TEXT
    );
    CREATE TABLE rejected (
        ts REAL NOT NULL,
        peer_id TEXT,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE samples (
        round INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL
    );
    CREATE TABLE events (
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # Where a round's "apply" time went (apply, eval, samples, checkpoint, ...): JSON.
    2: """
    ALTER TABLE rounds ADD COLUMN apply_parts TEXT;
    """,
    # DP-SGD steps, written *before* they are taken (docs/privacy.md): the privacy
    # accountant's whole input, so a restart never forgets a spent step.
    3: """
    CREATE TABLE privacy_spend (
        ts REAL NOT NULL,
        round INTEGER NOT NULL,
        steps INTEGER NOT NULL,
        noise_multiplier REAL NOT NULL,
        sample_rate REAL NOT NULL
    );
    """,
    # [eval]: the sets scored after a round (docs/safety.md), one row per set and round.
    4: """
    CREATE TABLE round_eval (
        round INTEGER NOT NULL,
        ts REAL NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,                -- set | refusal
        format TEXT,
        rows INTEGER NOT NULL,
        loss REAL,
        perplexity REAL,
        exact_match REAL,
        rouge_l REAL,
        refusal_rate REAL
    );
    CREATE INDEX round_eval_round ON round_eval (round);
    """,
    # Group-level DP releases (one per round this member's change entered a group sum),
    # at the effective noise multiplier, written before the upload (docs/privacy.md).
    5: """
    CREATE TABLE group_privacy_spend (
        ts REAL NOT NULL,
        round INTEGER NOT NULL,
        noise_multiplier REAL NOT NULL
    );
    """,
}

ROUND_EVAL_COLUMNS = ("name", "path", "kind", "format", "rows", "loss", "perplexity",
                      "exact_match", "rouge_l", "refusal_rate")

ROUND_COLUMNS = (
    "round",
    "status",
    "started_at",
    "finished_at",
    "group_id",
    "members",
    "aggregator",
    "decryptor",
    "survivors",
    "dropped",
    "protocol",
    "train_loss",
    "eval_loss_before",
    "eval_loss_after",
    "train_s",
    "aggregate_s",
    "apply_s",
    "apply_parts",
    "bytes_sent",
    "bytes_received",
    "adapter_fingerprint",
    "staleness",
    "note",
)
_JSON_COLUMNS = {"members", "survivors", "dropped", "apply_parts"}


@dataclass
class RoundRecord:
    """One row of the round log, as the dashboard and ``fedswarm status`` show it."""

    round: int
    status: str
    started_at: float
    finished_at: float | None = None
    group_id: str | None = None
    members: list[str] | None = None
    aggregator: str | None = None
    decryptor: str | None = None
    survivors: list[str] | None = None
    dropped: list[str] | None = None
    protocol: str | None = None
    train_loss: float | None = None
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    train_s: float | None = None
    aggregate_s: float | None = None
    apply_s: float | None = None
    # seconds per part of apply_s: apply, gate_eval, eval, samples, checkpoint, publish
    apply_parts: dict[str, float] | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    adapter_fingerprint: str | None = None
    staleness: int | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ROUND_COLUMNS}


class StateStore:
    """SQLite-backed state. Open with ``StateStore.open(state_dir)``."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> StateStore:
        """Open (creating and migrating as needed) ``state_dir/fedswarm.sqlite``."""
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(
                f"{state_dir}: cannot create state directory ({exc.strerror})"
            ) from None
        path = state_dir / "fedswarm.sqlite"
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open state database ({exc})") from None
        store = cls(db, path)
        store._migrate()
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: written by a newer fedswarm (schema {current} > {SCHEMA_VERSION}); "
                "upgrade fedswarm or restore a backup"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self._transaction() as db:
                db.executescript_in_tx(MIGRATIONS[version])  # type: ignore[attr-defined]
                db.execute(f"PRAGMA user_version={version}")

    def integrity_ok(self) -> bool:
        """Run SQLite's own integrity check (used by tests and the soak benchmark)."""
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    @contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        with self._lock:
            tx = _Tx(self._db)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield tx
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                if "full" in str(exc).lower():
                    raise DiskFullError(f"{self.path}: disk full while writing state") from None
                raise StateError(f"{self.path}: {exc}") from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    # -- rounds ---------------------------------------------------------------------------

    def begin_round(self, round: int) -> None:
        """Mark ``round`` as in progress (replacing an earlier interrupted attempt)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO rounds (round, status, started_at) VALUES (?, ?, ?)",
                (round, "in_progress", time.time()),
            )

    def update_round(self, round: int, **fields: Any) -> None:
        unknown = set(fields) - set(ROUND_COLUMNS)
        if unknown:
            raise ValueError(f"unknown round fields: {sorted(unknown)}")
        if not fields:
            return
        names = sorted(fields)
        values = [json.dumps(fields[n]) if n in _JSON_COLUMNS else fields[n] for n in names]
        assignments = ", ".join(f"{n} = ?" for n in names)
        with self._transaction() as db:
            db.execute(f"UPDATE rounds SET {assignments} WHERE round = ?", (*values, round))

    def rounds(self, limit: int = 1000) -> list[RoundRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(ROUND_COLUMNS)} FROM rounds ORDER BY round DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [self._round_from_row(row) for row in reversed(rows)]

    def round_status_counts(self) -> dict[str, int]:
        """How many rounds ended in each status (all of them, not a window)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM rounds GROUP BY status"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def secure_aggregation_totals(self, protocol: str) -> tuple[int, float]:
        """(rounds, seconds) spent in ``protocol`` over the whole log."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(aggregate_s), 0) FROM rounds WHERE protocol = ?",
                (protocol,),
            ).fetchone()
        return int(row[0]), float(row[1])

    def last_finished_round(self) -> int:
        """The highest round whose result was applied (complete or local-only), else 0."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(round) FROM rounds "
                "WHERE status IN ('complete', 'local_only', 'aborted', 'caught_up', 'recovered')"
            ).fetchone()
        return int(row[0] or 0)

    def mark_interrupted_rounds(self) -> list[int]:
        """Roll back rounds left ``in_progress`` by a crash; returns their numbers."""
        with self._transaction() as db:
            rows = db.execute("SELECT round FROM rounds WHERE status = 'in_progress'").fetchall()
            db.execute(
                "UPDATE rounds SET status = 'rolled_back', note = 'interrupted by a restart' "
                "WHERE status = 'in_progress'"
            )
        return [int(r[0]) for r in rows]

    def mark_recovered(self, round: int) -> bool:
        """A round whose checkpoint made it to disk but whose record did not (a crash in
        between) is finished after all: relabel it from ``rolled_back``. Returns whether it was."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE rounds SET status = 'recovered', note = ? "
                "WHERE round = ? AND status = 'rolled_back'",
                ("checkpoint written before a crash; its record was completed at restart", round),
            )
        return cursor.rowcount > 0

    def round_record(self, round: int) -> RoundRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(ROUND_COLUMNS)} FROM rounds WHERE round = ?", (round,)
            ).fetchone()
        return None if row is None else self._round_from_row(row)

    @staticmethod
    def _round_from_row(row: tuple[Any, ...]) -> RoundRecord:
        values = dict(zip(ROUND_COLUMNS, row, strict=True))
        for name in _JSON_COLUMNS:
            if values[name] is not None:
                values[name] = json.loads(values[name])
        return RoundRecord(**values)

    # -- metrics, rejections, samples -----------------------------------------------------

    def add_step_metric(self, round: int, step: int, loss: float) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO step_metrics (ts, round, step, loss) VALUES (?, ?, ?, ?)",
                (time.time(), round, step, loss),
            )

    def step_metrics(self, limit: int = 5000) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, round, step, loss FROM step_metrics ORDER BY rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"ts": r[0], "round": r[1], "step": r[2], "loss": r[3]} for r in reversed(rows)]

    def add_rejection(self, peer_id: str | None, kind: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rejected (ts, peer_id, kind, reason) VALUES (?, ?, ?, ?)",
                (time.time(), peer_id, kind, reason[:500]),
            )

    def rejections(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, peer_id, kind, reason FROM rejected ORDER BY rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"ts": r[0], "peer_id": r[1], "kind": r[2], "reason": r[3]} for r in rows]

    def rejection_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT kind, COUNT(*) FROM rejected GROUP BY kind").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def add_samples(self, round: int, samples: list[tuple[str, str]]) -> None:
        with self._transaction() as db:
            for prompt, output in samples:
                db.execute(
                    "INSERT INTO samples (round, prompt, output) VALUES (?, ?, ?)",
                    (round, prompt, output),
                )

    def samples(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT round, prompt, output FROM samples ORDER BY rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"round": r[0], "prompt": r[1], "output": r[2]} for r in rows]

    def add_event(self, kind: str, detail: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (ts, kind, detail) VALUES (?, ?, ?)",
                (time.time(), kind, json.dumps(detail)),
            )


    # -- per-round evaluation ([eval]) ------------------------------------------------------

    def set_round_eval(self, round: int, scores: list[dict[str, Any]]) -> None:
        """Record ``round``'s scores, replacing an earlier attempt at the same round."""
        names = ", ".join(ROUND_EVAL_COLUMNS)
        marks = ", ".join("?" for _ in ROUND_EVAL_COLUMNS)
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM round_eval WHERE round = ?", (round,))
            for score in scores:
                db.execute(
                    f"INSERT INTO round_eval (round, ts, {names}) VALUES (?, ?, {marks})",
                    (round, now, *(score.get(c) for c in ROUND_EVAL_COLUMNS)),
                )

    def round_evals(self, limit: int = 2000) -> list[dict[str, Any]]:
        """The newest ``limit`` scores, oldest round first, in recorded order within a round."""
        names = ", ".join(ROUND_EVAL_COLUMNS)
        with self._lock:
            rows = self._db.execute(
                f"SELECT round, ts, {names} FROM round_eval ORDER BY rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = ("round", "ts", *ROUND_EVAL_COLUMNS)
        return sorted((dict(zip(keys, r, strict=True)) for r in reversed(rows)),
                      key=lambda e: e["round"])

    def latest_round_eval(self) -> list[dict[str, Any]]:
        """The scores of the newest scored round (empty before the first)."""
        names = ", ".join(ROUND_EVAL_COLUMNS)
        with self._lock:
            rows = self._db.execute(
                f"SELECT round, ts, {names} FROM round_eval "
                "WHERE round = (SELECT MAX(round) FROM round_eval) ORDER BY rowid"
            ).fetchall()
        keys = ("round", "ts", *ROUND_EVAL_COLUMNS)
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- privacy --------------------------------------------------------------------------

    def add_privacy_spend(self, round: int, steps: int, noise_multiplier: float,
                          sample_rate: float) -> None:
        """Record DP-SGD steps about to be taken (committed before training starts)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO privacy_spend (ts, round, steps, noise_multiplier, sample_rate) "
                "VALUES (?, ?, ?, ?, ?)",
                (time.time(), round, steps, noise_multiplier, sample_rate),
            )

    def privacy_spend(self) -> list[tuple[int, float, float]]:
        """Every recorded stretch of DP-SGD steps: (steps, noise_multiplier, sample_rate)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT steps, noise_multiplier, sample_rate FROM privacy_spend ORDER BY rowid"
            ).fetchall()
        return [(int(r[0]), float(r[1]), float(r[2])) for r in rows]

    def add_group_privacy_spend(self, round: int, noise_multiplier: float) -> None:
        """Record one group-level DP release about to be made (before the upload)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO group_privacy_spend (ts, round, noise_multiplier) VALUES (?, ?, ?)",
                (time.time(), round, noise_multiplier),
            )

    def group_privacy_spend(self) -> list[float]:
        """The effective noise multiplier of every recorded group-level release, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT noise_multiplier FROM group_privacy_spend ORDER BY rowid"
            ).fetchall()
        return [float(r[0]) for r in rows]

    def events_of_kind(self, kind: str, limit: int = 500) -> list[dict[str, Any]]:
        """The newest ``limit`` recorded events of ``kind``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT detail FROM events WHERE kind = ? ORDER BY rowid DESC LIMIT ?",
                (kind, limit),
            ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]


class _Tx:
    """The connection as seen inside one transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executescript_in_tx(self, script: str) -> None:
        """Run several statements inside the open transaction (``executescript`` would commit)."""
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)
