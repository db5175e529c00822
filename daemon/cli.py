"""The ``fedswarm`` command line.

Errors a user can fix (bad config, missing file, wrong key) print one line naming
the file or key and exit with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

EXIT_USAGE = 2


class UserError(click.ClickException):
    """An error the user can fix: one line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"fedswarm: error: {self.format_message()}", err=True)


@click.group()
@click.version_option(package_name="fedswarm")
def main() -> None:
    """Serverless, private federated fine-tuning of LLMs."""


# -- init, roster -----------------------------------------------------------------------


@main.command()
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path),
              help="Folder for this organisation's identity, token and config.")
@click.option("--org", required=True, help="Your organisation's name.")
@click.option("--listen", default=None,
              help="libp2p listen multiaddr: an address the other members reach "
                   "[default: /ip4/127.0.0.1/tcp/4001, this machine only].")
@click.option("--api-port", default=8470, show_default=True, type=int)
@click.option("--model", "model_path", required=True,
              help="Local Hugging Face model folder (written by save_pretrained); must exist.")
@click.option("--train", "train_path", default="data/train.jsonl", show_default=True,
              help="Training data file (JSONL or Parquet).")
@click.option("--eval", "eval_path", default=None,
              help="Held-out evaluation data [default: 10 % of the training rows].")
@click.option("--force", is_flag=True, help="Replace an existing identity and config.")
def init(directory: Path, org: str, listen: str | None, api_port: int, model_path: str,
         train_path: str, eval_path: str | None, force: bool) -> None:
    """Create an identity (Ed25519, 0600), an API token and a commented config file."""
    from .defaults import DEFAULT_LISTEN
    from .setup_files import init_node, is_loopback_listen, missing_model_folder, roster_addr

    listen = listen or DEFAULT_LISTEN
    # The config resolves relative paths against its own folder; a path the user typed
    # relative to where they stand is written absolute, so both readings agree.
    model_path, train_path = _absolute_if_here(model_path), _absolute_if_here(train_path)
    eval_path = _absolute_if_here(eval_path) if eval_path else None
    problem = missing_model_folder(model_path, directory)
    if problem is not None:
        raise UserError(f"--model {model_path}: {problem}")
    try:
        result = init_node(directory, org, listen=listen, api_port=api_port,
                           model_path=model_path, train_path=train_path, eval_path=eval_path,
                           overwrite=force)
    except FileExistsError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"config:   {result.config_path} (every key, commented defaults included)")
    click.echo(f"identity: {result.identity_path} (keep it secret; back it up)")
    click.echo(f"token:    {result.token_path} (for the dashboard and API)")
    click.echo("")
    click.echo("Send these three lines to the federation's roster maintainer:")
    click.echo(f"  org:      {org}")
    click.echo(f"  peer id:  {result.peer_id}")
    click.echo(f"  address:  {roster_addr(listen)}")
    click.echo("(the maintainer adds you with: fedswarm roster add --roster roster.toml "
               f"--org {shlex.quote(org)} --peer-id {result.peer_id} "
               f"--addr {shlex.quote(roster_addr(listen))})")
    if is_loopback_listen(listen):
        click.echo("Note: this address is loopback, reachable from this machine only. For members "
                   "on other machines, run init again with --force --listen /ip4/<address they "
                   "reach>/tcp/4001, or edit [node] listen.")


def _absolute_if_here(value: str) -> str:
    path = Path(value).expanduser()
    return str(path.resolve()) if not path.is_absolute() and path.exists() else value


@main.group()
def roster() -> None:
    """Build and inspect the federation roster (who may join)."""


@roster.command("add")
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path))
@click.option("--org", required=True)
@click.option("--peer-id", required=True)
@click.option("--addr", "addrs", multiple=True, help="Multiaddr where this member listens.")
@click.option("--federation-id", default=None, help="Required when creating a new roster.")
def roster_add(roster_path: Path, org: str, peer_id: str, addrs: tuple[str, ...],
               federation_id: str | None) -> None:
    """Add a member (or replace its entry) in the roster file."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.identity import public_key_from_peer_id
    from fedswarm.p2p.roster import Member, Roster

    try:
        public_key_from_peer_id(peer_id)
    except Exception:
        raise UserError(f"--peer-id: {peer_id!r} is not an Ed25519 libp2p peer id") from None
    try:
        if roster_path.exists():
            current = Roster.load(roster_path)
        elif federation_id:
            current = Roster(federation_id=federation_id, members=())
        else:
            raise UserError(f"{roster_path} does not exist; pass --federation-id to create it")
        current = current.with_member(Member(org=org, peer_id=peer_id, addrs=tuple(addrs)))
        current.save(roster_path)
    except P2PError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{roster_path}: {len(current.members)} members, "
               f"fingerprint {current.fingerprint()[:16]}")


@roster.command("remove")
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path))
@click.option("--peer-id", required=True)
def roster_remove(roster_path: Path, peer_id: str) -> None:
    """Remove a member. Running daemons apply it on SIGHUP."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.roster import Roster

    try:
        current = Roster.load(roster_path).without_member(peer_id)
        current.save(roster_path)
    except P2PError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{roster_path}: {len(current.members)} members")


@roster.command("show")
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path))
def roster_show(roster_path: Path) -> None:
    """Print the roster."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.roster import Roster

    try:
        current = Roster.load(roster_path)
    except P2PError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"federation {current.federation_id}  fingerprint {current.fingerprint()[:16]}")
    for m in current.members:
        click.echo(f"  {m.org:<20} {m.peer_id}  {' '.join(m.addrs)}")


# -- config check, run -------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
def config_check(config_path: Path) -> None:
    """Validate the config, identity and roster without starting anything."""
    prepared = _prepare(config_path)
    click.echo(f"{config_path}: ok (org {prepared[0].node.org}, peer {prepared[1].peer_id}, "
               f"{len(prepared[2].members)} roster members)")


def _prepare(config_path: Path) -> tuple[Any, Any, Any, str]:
    """Load config, identity, roster and token, turning each failure into a UserError."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.roster import Roster

    from .config import check_files, load_config
    from .errors import ConfigError

    try:
        config = load_config(config_path)
        check_files(config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        identity = Identity.load(config.identity_path)
    except P2PError as exc:
        raise UserError(f"[node] identity: {exc}") from None
    try:
        members = Roster.load(config.roster_path)
    except P2PError as exc:
        raise UserError(f"[node] roster: {exc}") from None
    if not members.is_member(identity.peer_id):
        raise UserError(
            f"[node] roster: {config.roster_path} does not list this node's peer id "
            f"{identity.peer_id}"
        )
    return config, identity, members, _read_token(config)


def _read_token(config: Any) -> str:
    """The dashboard's API token, or a one-line UserError naming ``[api] token_file``.

    Refused when unreadable, shorter than 16 characters, or when group or others may
    access the file: the same check as the identity key's
    (``fedswarm.p2p.identity.owner_only_problem``), since the token opens the dashboard.
    """
    from fedswarm.p2p.identity import owner_only_problem

    path = config.token_path
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"[api] token_file: {path}: {exc.strerror}") from None
    problem = owner_only_problem(path, mode, "API token file")
    if problem is not None:
        raise UserError(f"[api] token_file: {problem}")
    if len(token) < 16:
        raise UserError(f"[api] token_file: {path}: token shorter than 16 characters")
    return str(token)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
def run(config_path: Path) -> None:
    """Run the daemon in the foreground until SIGTERM."""
    from fedswarm.learning.errors import LearningError

    from .errors import ConfigError, StateError
    from .logging_setup import configure_logging
    from .service import Daemon
    from .state_lock import StateDirLock

    config, identity, members, token = _prepare(config_path)
    try:
        configure_logging(config.node.log_level)
    except ConfigError as exc:  # e.g. a malformed FEDSWARM_LOG_REPEAT_WINDOW_S
        raise UserError(str(exc)) from None
    _limit_torch_threads()
    daemon = Daemon(config, identity, members, token)
    try:
        with StateDirLock(config.state_dir):
            asyncio.run(daemon.run())
    except (LearningError, StateError) as exc:
        raise UserError(str(exc)) from None


def _limit_torch_threads() -> None:
    """Honour FEDSWARM_TORCH_THREADS (the demo runs several daemons on one machine)."""
    threads = os.environ.get("FEDSWARM_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(int(threads), 1))


# -- status, dashboard, export ---------------------------------------------------------------


def _load_config(config_path: Path) -> Any:
    """The validated config, or a one-line UserError naming the key or file."""
    from .config import load_config
    from .errors import ConfigError

    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _api_get(config_path: Path, route: str) -> Any:
    config = _load_config(config_path)
    url_file = config.state_dir / "api.url"
    base = (url_file.read_text().strip() if url_file.exists()
            else f"http://{config.api.host}:{config.api.port}")
    token = _read_token(config)
    request = urllib.request.Request(base + route, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise UserError(f"{base}{route}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"daemon not reachable at {base} ({exc}); is it running?") from None


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def status(config_path: Path, as_json: bool) -> None:
    """Print the running daemon's state (asks its local API)."""
    overview = _api_get(config_path, "/api/status")
    if as_json:
        click.echo(json.dumps(overview, indent=2))
        return
    peers = _api_get(config_path, "/api/peers")
    keys = ("org", "federation_id", "peer_id", "state", "round", "rounds_completed",
            "secure_aggregation", "eval_loss_start", "eval_loss_last", "peers_up", "device")
    for key in keys:
        click.echo(f"{key:<20} {overview.get(key)}")
    click.echo("peers:")
    for p in peers:
        mark = "up  " if p.get("up") else "down"
        click.echo(f"  {mark} {p['org']:<18} round {p.get('round')}  {p['peer_id']}")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
def dashboard(config_path: Path) -> None:
    """Print the dashboard URL, with the token, for your browser."""
    overview = _api_get(config_path, "/api/status")
    token = _read_token(_load_config(config_path))
    click.echo(f"{overview['api_url']}/?token={token}")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
def export(config_path: Path, out: Path) -> None:
    """Write the current federated adapter as a standard PEFT adapter folder."""
    from fedswarm.learning.errors import LearningError
    from fedswarm.learning.trainer import LocalTrainer

    from .model_card import card_for_export

    config = _load_config(config_path)
    checkpoint = config.state_dir / "checkpoint"
    if not checkpoint.exists():
        raise UserError(f"{checkpoint}: no checkpoint yet; run at least one round first")
    try:
        trainer = LocalTrainer(config.model, config.lora, config.data, config.train)
        round_done = trainer.load_checkpoint(checkpoint)
        trainer.export_adapter(out, model_card=card_for_export(config, trainer, round_done))
    except LearningError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{out}: adapter of round {round_done} (load with PeftModel.from_pretrained)")


# -- demo ---------------------------------------------------------------------------------------


@main.command()
@click.option("--peers", default=3, show_default=True, type=click.IntRange(1, 16))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the demo summary JSON here.")
@click.option("--secure/--plain", default=True, show_default=True,
              help="Secure aggregation (default) or plaintext averaging.")
@click.option("--mode", type=click.Choice(["lora_avg", "fedmkt"]), default="lora_avg",
              show_default=True)
@click.option("--group-size", default=None, type=click.IntRange(3, 64),
              help="Peers per averaging group [default: 3 with 6 or more peers, else 4].")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Keep the federation's files here instead of a temporary folder.")
def demo(peers: int, rounds: int, json_path: Path | None, secure: bool, mode: str,
         group_size: int | None, workdir: Path | None) -> None:
    """Run a real federation of daemons on 127.0.0.1 with the bundled tiny model."""
    from .demo.command import run_demo
    from .errors import DemoError

    if group_size is None:
        group_size = 3 if peers >= 6 else 4
    try:
        summary = run_demo(peers=peers, rounds=rounds, secure=secure, mode=mode,
                           group_size=group_size, workdir=workdir, json_path=json_path)
    except DemoError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; every daemon was stopped", err=True)
        sys.exit(130)
    if not summary["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
