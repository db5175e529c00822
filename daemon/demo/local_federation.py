"""Run a whole federation of real daemons on 127.0.0.1: the demo's engine, and the tests'.

Each peer gets its own folder (identity, token, config, state), its own non-IID
data shard and its own ``fedswarm run`` process. Nothing here is simulated: the
processes talk libp2p to each other exactly as they would across organisations.

The runner owns its processes: ``stop()`` (also on ``__exit__``, Ctrl-C
included) sends SIGTERM, waits, and SIGKILLs whatever is left, so no daemon
outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import tomli_w
from fedswarm.learning.demo_assets import (
    DEMO_LORA_TARGETS,
    DEMO_LR,
    DEMO_MAX_LENGTH,
    MARKER,
    BuildProgress,
    PublicSet,
    build_demo_model,
    write_demo_public_set,
    write_demo_shards,
)
from fedswarm.p2p.roster import Member, Roster
from fedswarm.secagg.params import PROTOCOL_NAME

from ..errors import DemoError
from ..setup_files import init_node
from .port_reservations import reserve_port

#: The second model family of the heterogeneous (``mode="fedmkt"``) demo: odd peers use it.
FEDMKT_VARIANT = "small-unigram"
#: ``[fedmkt]`` settings of the demo, besides the public set (measured, docs/fedmkt.md).
FEDMKT_DEMO_SETTINGS: dict[str, Any] = {
    "top_k": 16,
    "distill_steps": 10,
    "distill_batch_size": 8,
    "distill_lr": DEMO_LR,
}


#: ``[fedkseed]`` settings of the demo (measured on the demo model, docs/fedkseed.md); the
#: base model's hash is added by ``prepare``.
FEDKSEED_DEMO_SETTINGS: dict[str, Any] = {
    "k": 1024,
    "lr": 2e-4,
    "eps": 5e-4,
}


def demo_model_cache_dir() -> Path:
    """Where the demo model is built once and reused (``$FEDSWARM_CACHE_DIR`` overrides).

    Building it takes about 40 s of CPU (tokenizer training and a short pre-training);
    the build is deterministic and marked with its version, so every demo and test
    on a machine can share one copy.
    """
    root = os.environ.get("FEDSWARM_CACHE_DIR") or str(Path.home() / ".cache" / "fedswarm")
    return Path(root).expanduser() / "demo-model"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 that no other live process has reserved."""
    return reserve_port("127.0.0.1")


@dataclass
class PeerProcess:
    """One daemon of the local federation."""

    index: int
    org: str
    directory: Path
    config_path: Path
    peer_id: str
    token: str
    api_port: int
    p2p_port: int
    domain: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    # Where the peer listens (libp2p and API), and what wraps its command line:
    # the network-namespace harness sets ("ip", "netns", "exec", NS) and the
    # namespace's address; the defaults are the loopback federation.
    host: str = "127.0.0.1"
    command_prefix: tuple[str, ...] = ()

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, route: str, timeout: float = 3.0) -> Any:
        """GET ``route`` from this daemon's local API (JSON)."""
        request = urllib.request.Request(
            self.api_url + route, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def try_status(self) -> dict[str, Any] | None:
        try:
            status = self.get("/api/status")
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return status if isinstance(status, dict) else None


class LocalFederation:
    """A federation of ``peers`` daemons on loopback, built in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        peers: int,
        rounds: int,
        *,
        secure_aggregation: str = PROTOCOL_NAME,
        group_size: int = 4,
        mode: str = "lora_avg",
        local_steps: int = 15,
        batch_size: int = 8,
        max_length: int = DEMO_MAX_LENGTH,
        lr: float = DEMO_LR,
        round_deadline_s: float = 90.0,
        wait_for_peers: int | None = None,
        torch_threads: int = 1,
        seed: int = 0,
        overrides: dict[str, dict[str, Any]] | None = None,
        model_dir: Path | None = None,
        peer_hosts: list[str] | None = None,
        command_prefixes: list[tuple[str, ...]] | None = None,
        demo_model: bool = True,
    ) -> None:
        if peers < 1:
            raise DemoError("a federation needs at least one peer")
        self.workdir = Path(workdir)
        self.n_peers = peers
        self.rounds = rounds
        self.secure_aggregation = secure_aggregation
        self.group_size = group_size
        self.mode = mode
        self.local_steps = local_steps
        self.batch_size = batch_size
        self.max_length = max_length
        self.lr = lr
        self.round_deadline_s = round_deadline_s
        self.wait_for_peers = peers if wait_for_peers is None else wait_for_peers
        self.torch_threads = torch_threads
        self.seed = seed
        self.overrides = overrides or {}
        self.peers: list[PeerProcess] = []
        self.federation_id = "fedswarm-demo"
        self.model_dir = model_dir or demo_model_cache_dir()
        self.public_set: PublicSet | None = None  # written by prepare() in fedmkt mode
        self.base_model_sha256 = ""  # measured by prepare() in fedkseed mode
        self.model_dirs: list[Path] = []  # peer i runs model_dirs[i % len]; set by prepare()
        self.peer_hosts = peer_hosts
        self.command_prefixes = command_prefixes
        # False: ``model_dir`` is a model folder to use as it is (bench.shape_round's real
        # shapes): no demo build, and no demo LoRA targets, so each daemon detects its own
        # (``detect_target_modules``) as an operator's would.
        self.demo_model = demo_model

    # -- building -------------------------------------------------------------------------

    def prepare(self, on_progress: BuildProgress | None = None) -> None:
        """Build the demo model (unless ``demo_model`` is False), data shards, identities,
        roster and configs.

        ``on_progress`` hears what the model build is doing (``build_demo_model``).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.demo_model:
            build_demo_model(self.model_dir, seed=self.seed, on_progress=on_progress)
        elif self.mode != "lora_avg":
            raise DemoError(f"mode {self.mode!r} needs the demo model; a model folder as it "
                            "is runs lora_avg only")
        model_dirs = self.model_dirs = [self.model_dir]
        if self.mode == "fedmkt":  # heterogeneous peers: alternate model size and tokenizer
            variant = self.model_dir.with_name(f"{self.model_dir.name}-{FEDMKT_VARIANT}")
            model_dirs.append(build_demo_model(variant, seed=self.seed, variant=FEDMKT_VARIANT,
                                               on_progress=on_progress))
            self.public_set = write_demo_public_set(self.workdir / "data" / "public.jsonl")
        if self.mode == "fedkseed":  # the seed pool derives from the base weights' hash
            self.base_model_sha256 = demo_base_model_sha256(self.model_dir)
        shards = write_demo_shards(self.workdir / "data", self.n_peers, seed=self.seed)
        members = []
        for i, shard in enumerate(shards):
            org = f"org-{i + 1}-{shard.domain}"
            directory = self.workdir / f"peer{i + 1}"
            host = self.peer_hosts[i] if self.peer_hosts else "127.0.0.1"
            if host == "127.0.0.1":
                p2p_port, api_port = free_port(), free_port()
            else:  # a host of its own (network namespace): fixed ports are free there
                p2p_port, api_port = 4001, 8470
            result = init_node(
                directory,
                org,
                listen=f"/ip4/{host}/tcp/{p2p_port}",
                api_port=api_port,
                model_path=str(model_dirs[i % len(model_dirs)]),
                train_path=str(shard.train_path),
                eval_path=str(shard.eval_path),
                rounds=self.rounds,
                deadline_s=self.round_deadline_s,
                secure_aggregation=self.secure_aggregation,
                wait_for_peers=self.wait_for_peers,
                local_steps=self.local_steps,
                batch_size=self.batch_size,
                lr=self.lr,
                max_length=self.max_length,
                seed=self.seed + i,
                overwrite=True,
            )
            peer = PeerProcess(
                index=i,
                org=org,
                directory=directory,
                config_path=result.config_path,
                peer_id=result.peer_id,
                token=result.token_path.read_text().strip(),
                api_port=api_port,
                p2p_port=p2p_port,
                domain=shard.domain,
                log_path=directory / "daemon.log",
                host=host,
                command_prefix=self.command_prefixes[i] if self.command_prefixes else (),
            )
            self.peers.append(peer)
            members.append(Member(org=org, peer_id=peer.peer_id, addrs=(peer.multiaddr,)))
        roster = Roster(federation_id=self.federation_id, members=tuple(members))
        for peer in self.peers:
            roster.save(peer.directory / "roster.toml")
            self._apply_overrides(peer)

    def model_label(self, index: int) -> str:
        """Peer ``index``'s model in words: "small-unigram (137k parameters, unigram tokenizer)"."""
        if not self.model_dirs:
            return "?"
        directory = self.model_dirs[index % len(self.model_dirs)]
        try:
            meta = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return directory.name
        return (f"{meta.get('variant', 'default')} ({meta.get('parameters', 0) / 1000:.0f}k "
                f"parameters, {meta.get('tokenizer', '?')} tokenizer)")

    def _apply_overrides(self, peer: PeerProcess) -> None:
        """Set the federation-wide settings the template does not cover."""
        import tomllib

        document = tomllib.loads(peer.config_path.read_text())
        document["federation"]["group_size"] = self.group_size
        document["federation"]["mode"] = self.mode
        document["federation"]["heartbeat_s"] = 1.0
        document["federation"]["peer_timeout_s"] = 6.0
        if self.demo_model:
            document["lora"]["target_modules"] = list(DEMO_LORA_TARGETS)
        document.setdefault("api", {})["host"] = peer.host
        if self.public_set is not None:
            document["fedmkt"] = {
                **FEDMKT_DEMO_SETTINGS,
                "public_path": str(self.public_set.path),
                "public_sha256": self.public_set.sha256,
                "max_length": self.max_length,
            }
        if self.mode == "fedkseed":
            document["fedkseed"] = {
                **FEDKSEED_DEMO_SETTINGS,
                "steps_per_round": self.local_steps,
                "base_model_sha256": self.base_model_sha256,
            }
        for section, values in self.overrides.items():
            document.setdefault(section, {}).update(values)
        peer.config_path.write_text(tomli_w.dumps(document))

    # -- processes ------------------------------------------------------------------------

    def start(self) -> None:
        if not self.peers:
            self.prepare()
        for peer in self.peers:
            self.start_peer(peer)

    def start_peer(self, peer: PeerProcess) -> None:
        env = dict(os.environ)
        env["FEDSWARM_TORCH_THREADS"] = str(self.torch_threads)
        env["OMP_NUM_THREADS"] = str(self.torch_threads)
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
        log_file = open(peer.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            peer.process = subprocess.Popen(
                [*peer.command_prefix, sys.executable, "-m", "fedswarm.daemon.cli", "run",
                 "--config", str(peer.config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            log_file.close()

    def kill_peer(self, peer: PeerProcess, sig: int = signal.SIGKILL) -> None:
        if peer.process is not None and peer.process.poll() is None:
            peer.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                peer.process.wait(timeout=60)

    def stop(self, timeout_s: float = 45.0) -> dict[str, int | None]:
        """SIGTERM every daemon, wait up to ``timeout_s``, SIGKILL the rest. Returns exit codes."""
        for peer in self.peers:
            if peer.process is not None and peer.process.poll() is None:
                try:
                    peer.process.send_signal(signal.SIGCONT)
                    peer.process.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for peer in self.peers:
            if peer.process is None:
                continue
            try:
                codes[peer.org] = peer.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                peer.process.kill()
                peer.process.wait(timeout=10)
                codes[peer.org] = None
        return codes

    def __enter__(self) -> LocalFederation:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- watching -------------------------------------------------------------------------

    def statuses(self) -> list[dict[str, Any] | None]:
        return [peer.try_status() if peer.running() else None for peer in self.peers]

    def wait_rounds(
        self,
        rounds: int,
        timeout_s: float,
        *,
        peers: list[PeerProcess] | None = None,
        on_poll: Callable[[list[dict[str, Any] | None]], None] | None = None,
    ) -> list[dict[str, Any] | None]:
        """Wait until every watched peer has finished round ``rounds`` (or caught up past it)."""
        watched = peers if peers is not None else self.peers
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = [p.try_status() if p.running() else None for p in watched]
            if on_poll is not None:
                on_poll(statuses)
            dead = [p.org for p in watched if p.process is not None and not p.running()]
            if dead:
                raise DemoError(
                    f"daemon(s) exited early: {', '.join(dead)}; see their daemon.log in "
                    f"{self.workdir}\n" + self.log_tail(dead[0])
                )
            done = [s is not None and s.get("last_finished_round", 0) >= rounds for s in statuses]
            if all(done):
                return statuses
            if time.monotonic() > deadline:
                raise DemoError(
                    f"timed out after {timeout_s:.0f} s waiting for {rounds} rounds "
                    f"({sum(done)}/{len(watched)} peers done)"
                )
            time.sleep(0.5)

    def checkpoint_meta(self, peer: PeerProcess) -> dict[str, Any]:
        """The meta of ``peer``'s latest checkpoint (round, fingerprints)."""
        from fedswarm.learning.checkpoint_files import latest_dir

        path = latest_dir(peer.state_dir / "checkpoint") / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}

    def log_tail(self, org: str, lines: int = 15) -> str:
        for peer in self.peers:
            if peer.org == org and peer.log_path.exists():
                return "\n".join(peer.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def demo_base_model_sha256(model_dir: Path) -> str:
    """What ``[fedkseed] base_model_sha256`` pins for the demo model (loads it once)."""
    import torch
    from fedswarm.learning.fedkseed.parameters import base_model_sha256
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no stray "Loading weights" bar in the demo
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return base_model_sha256(model)
