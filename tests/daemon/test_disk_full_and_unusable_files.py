"""Unusable files and a full disk: one clear line, exit status 2, nothing corrupted.

``fedswarm run`` under systemd is restarted on failure; what matters is that the
operator reads *why* in one line of the journal and that the state it leaves
behind still loads. Root can read and write anything regardless of file modes,
so "unreadable" and "unwritable" are made real here with a directory where a file
is expected, a path below a regular file, and tmpfs mounts (read-only, or a few
MiB that the test fills up) — the mount cases need root and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fedswarm.daemon.demo.local_federation import LocalFederation, PeerProcess
from fedswarm.daemon.state import StateStore
from fedswarm.learning.checkpoint_files import latest_dir, verify_dir

FINISHED = ("complete", "local_only", "aborted", "caught_up")
RunCli = Callable[..., subprocess.CompletedProcess[str]]
OneLineError = Callable[..., str]  # the conftest fixtures' types

# -- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """Mount a private tmpfs for the test; always unmounted, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill_up(directory: Path) -> Path:
    """Write zeros until the file system says ENOSPC; returns the filler file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file would try to flush its leftovers again on close and
    # raise ENOSPC outside the try.
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as f:  # the last bytes
        for _ in range(65536):
            f.write(b"\0")
    return filler


def wait_status(peer: PeerProcess, test: str, predicate: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not peer.running():
            pytest.fail(f"{test}: daemon exited early:\n" + log_tail(peer))
        status = peer.try_status()
        if status is not None and callable(predicate) and predicate(status):
            return
        time.sleep(0.2)
    pytest.fail(f"{test}: condition not reached in {timeout_s:.0f} s\n" + log_tail(peer))


def log_tail(peer: PeerProcess, lines: int = 15) -> str:
    return "\n".join(peer.log_path.read_text(errors="replace").splitlines()[-lines:])


# -- files that cannot be read ------------------------------------------------------------


def test_identity_that_is_a_directory_is_refused(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    key = node_config.parent / "identity.key"
    key.unlink()
    key.mkdir()
    one_line_error(run_cli("run", "--config", str(node_config)), "identity", str(key))


def test_token_that_is_a_directory_is_refused(
    node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    token = node_config.parent / "api.token"
    token.unlink()
    token.mkdir()
    one_line_error(run_cli("run", "--config", str(node_config)), "token_file", str(token))


# -- a state directory that cannot be written --------------------------------------------


@pytest.mark.slow
def test_state_dir_below_a_file_is_refused(
    tmp_path: Path, node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    line = one_line_error(
        run_cli("run", "--config", str(node_config), state_dir=blocker / "state"),
        str(blocker / "state"),
    )
    assert "state directory" in line


@pytest.mark.slow
def test_read_only_state_dir_is_refused(
    tmp_path: Path, node_config: Path, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as state:
        line = one_line_error(
            run_cli("run", "--config", str(node_config), state_dir=state), str(state)
        )
    assert "Read-only file system" in line  # the first write, the state-dir lock, fails


# -- the disk fills up while the daemon runs ---------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("leave_free", "expected"),
    [
        # No byte left: the next SQLite write or the next checkpoint fails, whichever needs
        # a new block first (SQLite may go on overwriting pages it owns; CI saw both). The
        # SQLite path alone is pinned in test_state_store_disk_full.py.
        (0, ("disk full while writing state", "cannot write checkpoint")),
        # Room for rows, not for a checkpoint (~0.5 MiB).
        (256 * 1024, ("cannot write checkpoint",)),
    ],
    ids=["no-byte-left", "checkpoint-write-fails"],
)
def test_disk_full_mid_run_exits_2_and_keeps_the_last_checkpoint(
    tmp_path: Path, leave_free: int, expected: tuple[str, ...]
) -> None:
    federation = LocalFederation(tmp_path / "fed", peers=1, rounds=0, local_steps=2,
                                 batch_size=4, round_deadline_s=1.0)
    federation.prepare()
    (peer,) = federation.peers
    with tmpfs(peer.state_dir, "24m"):
        try:
            federation.start_peer(peer)
            wait_status(peer, "first round", lambda s: s["last_finished_round"] >= 1, 180)
            filler = fill_up(peer.state_dir)
            os.truncate(filler, max(filler.stat().st_size - leave_free, 0))
            assert peer.process is not None
            code = peer.process.wait(timeout=120)
            output = peer.log_path.read_text(errors="replace")
            last = [line for line in output.splitlines() if line.strip()][-1]
            assert code == 2, output[-3000:]
            assert last.startswith("fedswarm: error: "), last
            assert str(peer.state_dir) in last, last
            assert any(message in last for message in expected), last

            filler.unlink()  # what the operator does: free space, then restart
            store = StateStore.open(peer.state_dir)
            try:
                assert store.integrity_ok()
                finished = [r.round for r in store.rounds() if r.status in FINISHED]
            finally:
                store.close()
            checkpoint_round = int(verify_dir(latest_dir(peer.state_dir / "checkpoint"))["round"])
            assert finished and checkpoint_round >= max(finished)
            leftovers = [p.name for p in (peer.state_dir / "checkpoint").iterdir()
                         if ".tmp" in p.name]
            assert not leftovers, leftovers

            federation.start_peer(peer)
            wait_status(
                peer, "resume",
                lambda s: s["round"] >= checkpoint_round
                and s["last_finished_round"] > checkpoint_round, 180,
            )
        finally:
            federation.stop()
