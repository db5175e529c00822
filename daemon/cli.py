"""The ``fedswarm`` command line.

Errors a user can fix (bad config, missing file, wrong key, a port in use) print one
line naming the file or key and exit with status 2; nothing prints a traceback for them.

Commands that only read the config (``config check``, ``status``, ``dashboard``) never
import torch or transformers: they answer in about a second, not ten.
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

from .wording import plural

EXIT_USAGE = 2

#: ``--config`` when neither the option nor ``FEDSWARM_CONFIG`` is given: the file
#: ``fedswarm init --dir .`` writes, so commands run from a node's folder need no option.
DEFAULT_CONFIG = "config.toml"
CONFIG_ENV = "FEDSWARM_CONFIG"

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"],
                                    "max_content_width": 100}


def config_option(function: Any) -> Any:
    """``--config PATH``, defaulting to ``$FEDSWARM_CONFIG`` and then ./config.toml."""
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path), envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG, show_default=True, show_envvar=True,
        help="The node's config file (written by fedswarm init).",
    )(function)


class UserError(click.ClickException):
    """An error the user can fix: one line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"fedswarm: error: {self.format_message()}", err=True)


@click.group(context_settings=CONTEXT_SETTINGS, epilog="""\b
Examples:
  fedswarm demo                                   # 3 daemons on 127.0.0.1, tiny model
  fedswarm init --dir node --org bank-a --model /models/Qwen2.5-0.5B --train data.jsonl
  fedswarm config check --config node/config.toml
  fedswarm run --config node/config.toml          # or: export FEDSWARM_CONFIG=...
  fedswarm status

Docs: README.md and docs/ in the source tree.""")
@click.version_option(package_name="fedswarm")
def main() -> None:
    """Serverless, private federated fine-tuning of LLMs.

    Each organisation runs one daemon (fedswarm run); daemons find each other over
    libp2p, train a LoRA adapter on local data and average it with peers under secure
    aggregation. Commands that take --config also read $FEDSWARM_CONFIG.
    """


# -- init, roster -----------------------------------------------------------------------


@main.command(short_help="Create an identity, an API token and a commented config.")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path),
              help="Folder for this organisation's identity, token and config.")
@click.option("--org", required=True, help="Your organisation's name.")
@click.option("--listen", default=None,
              help="libp2p listen multiaddr: an address the other members reach "
                   "[default: /ip4/127.0.0.1/tcp/4001, this machine only].")
@click.option("--api-port", default=8470, show_default=True, type=int,
              help="Port of the local dashboard and JSON API (0: any free port).")
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


@main.group(epilog="""\b
Examples:
  fedswarm roster add --roster roster.toml --federation-id myfed --org bank-a \\
      --peer-id 12D3KooW... --addr /dns4/a.example/tcp/4001
  fedswarm roster show --roster roster.toml""")
def roster() -> None:
    """Build and inspect the federation roster (who may join)."""


@roster.command("add")
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path),
              help="The roster file (TOML), the same on every member.")
@click.option("--org", required=True, help="The member's organisation name.")
@click.option("--peer-id", required=True, help="The member's peer id (fedswarm init prints it).")
@click.option("--addr", "addrs", multiple=True,
              help="Multiaddr where this member listens (repeat for several).")
@click.option("--federation-id", default=None, help="Required when creating a new roster.")
@click.option("--role", type=click.Choice(["member", "model_owner"]), default="member",
              show_default=True, help="model_owner: owns the model in an offsite federation.")
def roster_add(roster_path: Path, org: str, peer_id: str, addrs: tuple[str, ...],
               federation_id: str | None, role: str) -> None:
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
        current = current.with_member(Member(org=org, peer_id=peer_id, addrs=tuple(addrs),
                                             role=role))
        current.save(roster_path)
    except P2PError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{roster_path}: {plural(len(current.members), 'member')}, "
               f"fingerprint {current.fingerprint()[:16]}")


@roster.command("remove")
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path),
              help="The roster file (TOML), the same on every member.")
@click.option("--peer-id", required=True, help="The peer id of the member to remove.")
def roster_remove(roster_path: Path, peer_id: str) -> None:
    """Remove a member. Running daemons apply it on SIGHUP."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.roster import Roster

    try:
        current = Roster.load(roster_path).without_member(peer_id)
        current.save(roster_path)
    except P2PError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{roster_path}: {plural(len(current.members), 'member')}")


@roster.command("show")
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path),
              help="The roster file (TOML), the same on every member.")
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
        role = "" if m.role == "member" else f"  ({m.role})"
        click.echo(f"  {m.org:<20} {m.peer_id}  {' '.join(m.addrs)}{role}")


# -- config check, run -------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check", epilog="""\b
Example:
  fedswarm config check --config /etc/fedswarm/myfed/config.toml""")
@config_option
def config_check(config_path: Path) -> None:
    """Check config, identity, roster, token and data; start nothing.

    It refuses what `fedswarm run` would refuse: an unknown key, a missing file, a
    roster that does not list this node or lists it under another org, a data file
    without one valid row, an unreadable token. (Ports are not probed: the daemon
    may be running; `fedswarm run` checks them before it loads the model.)
    """
    config, identity, members, _token = _prepare(config_path)
    click.echo(f"{config_path}: ok (org {config.node.org}, peer {identity.peer_id}, "
               f"{plural(len(members.members), 'roster member')})")


def _prepare(config_path: Path) -> tuple[Any, Any, Any, str]:
    """Load config, identity, roster and token, turning each failure into a UserError."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.identity import Identity
    from fedswarm.p2p.roster import Roster

    from .config import check_files, load_config
    from .errors import ConfigError

    _require_config_file(config_path)
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
    listed = members.member(identity.peer_id)
    if listed is None:
        raise UserError(
            f"[node] roster: {config.roster_path} does not list this node's peer id "
            f"{identity.peer_id}"
        )
    if listed.org != config.node.org:
        raise UserError(
            f"[node] org: {config.node.org!r} differs from {listed.org!r}, the org the roster "
            f"({config.roster_path}) lists for this node's peer id; fix one of them"
        )
    _check_data(config)
    return config, identity, members, _read_token(config)


def _check_data(config: Any) -> None:
    """Refuse a train (or eval) file without one valid row, as training would, but now.

    Reads only up to the first valid row, so a large file costs no more than a small one.
    """
    from fedswarm.learning.data_files import check_has_valid_row
    from fedswarm.learning.errors import DataError

    try:
        fmt = check_has_valid_row(Path(config.data.train_path), config.data.format)
    except DataError as exc:
        raise UserError(f"[data] train_path: {exc}") from None
    if config.data.eval_path:
        try:
            check_has_valid_row(Path(config.data.eval_path), fmt)
        except DataError as exc:
            raise UserError(f"[data] eval_path: {exc}") from None
    if config.eval.enabled:  # strictly, as the daemon reads them: a bad row names file:line
        from fedswarm.learning.evaluation.per_round import RoundEvalSets

        try:
            RoundEvalSets.load(config.eval)
        except DataError as exc:
            raise UserError(f"[eval] {exc}") from None
    if config.privacy.enabled:
        _check_privacy_budget(config)


def _check_privacy_budget(config: Any) -> None:
    """Refuse DP settings ``run`` would refuse when it builds the trainer, from row counts.

    Rows are counted before tokenisation, which can only drop rows, so this never refuses
    what ``run`` accepts. Only with ``[privacy]`` enabled: Opacus imports torch (seconds).
    """
    from fedswarm.learning.data_files import held_out_count, read_rows
    from fedswarm.learning.errors import DataError, PrivacyConfigError
    from fedswarm.learning.privacy import make_plan, refuse_packed_text

    try:
        rows, _ = read_rows(Path(config.data.train_path), config.data.format)
    except DataError as exc:
        raise UserError(f"[data] train_path: {exc}") from None
    examples = len(rows) - (0 if config.data.eval_path
                            else held_out_count(len(rows), config.data.eval_fraction))
    try:
        refuse_packed_text(rows[0].format, config.data.packing)
        make_plan(config.privacy, config.train, examples)
    except PrivacyConfigError as exc:
        raise UserError(str(exc)) from None


def _probe_ports(config: Any) -> None:
    """One line, not a traceback or a daemon without a listener, when a port is taken."""
    from .errors import ListenError
    from .ports import probe_listen, tcp_endpoint

    try:
        endpoint = tcp_endpoint(config.node.listen)
        if endpoint is not None:
            probe_listen(*endpoint, key="[node] listen")
        probe_listen(config.api.host, config.api.port, key="[api] port")
    except ListenError as exc:
        raise UserError(str(exc)) from None


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


@main.command(short_help="Run the daemon in the foreground.", epilog="""\b
Examples:
  fedswarm run --config /etc/fedswarm/myfed/config.toml
  fedswarm run 2>&1 | jq -c .      # logs are JSON lines when stderr is not a terminal
  systemctl enable --now fedswarm@myfed""")
@config_option
def run(config_path: Path) -> None:
    """Run the daemon in the foreground until SIGTERM (or until its rounds are done).

    With [federation] rounds = N it trains N rounds, then keeps serving peers and
    the API (after_rounds = "serve", the default) or exits with status 0
    (after_rounds = "exit"). Logs go to stderr: text at a terminal, JSON lines
    otherwise (FEDSWARM_LOG_FORMAT=json|text overrides).
    """
    config, identity, members, token = _prepare(config_path)
    _probe_ports(config)  # before the model loads: seconds, not a minute, to say so
    _quiet_third_party_output(config.node.log_level)
    _limit_torch_threads()

    from fedswarm.learning.errors import LearningError

    from .errors import ConfigError, ListenError, NetworkLayerEndedError, StateError
    from .logging_setup import set_level
    from .service import Daemon
    from .state_lock import StateDirLock

    # importing libp2p (just now) detaches its loggers from the root again: reattach them,
    # or its warnings reach stderr as bare text through logging's last resort
    set_level(config.node.log_level)

    daemon = Daemon(config, identity, members, token)
    try:
        with StateDirLock(config.state_dir):
            asyncio.run(daemon.run())
    except (LearningError, StateError, ListenError, ConfigError, NetworkLayerEndedError) as exc:
        # ConfigError here: what only the daemon can check (the roster's offsite roles)
        raise UserError(str(exc)) from None


def _quiet_third_party_output(level: str) -> None:
    """Logging first, then the imports: nothing but log lines may reach stderr.

    Python warnings raised while torch and transformers import (a FutureWarning, for
    one) become log records only once logging is configured, so that happens before
    any heavy import. When the logs are JSON (stderr is not a terminal) progress bars
    (tqdm: "Loading weights", "Writing model shards") are switched off through the
    environment, which the HE worker process inherits too: a bar between two JSON
    lines breaks ``| jq``.
    """
    from .errors import ConfigError
    from .logging_setup import configure_logging, uses_json

    try:
        # configure_logging also filters library deprecations nobody can act on
        configure_logging(level)
    except ConfigError as exc:  # e.g. a malformed FEDSWARM_LOG_REPEAT_WINDOW_S
        raise UserError(str(exc)) from None
    if uses_json():
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"


def _limit_torch_threads() -> None:
    """Honour FEDSWARM_TORCH_THREADS (the demo runs several daemons on one machine)."""
    threads = os.environ.get("FEDSWARM_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(int(threads), 1))


# -- status, dashboard, export ---------------------------------------------------------------


def _require_config_file(config_path: Path) -> None:
    """A missing config file, with how to name another one."""
    if not config_path.exists():
        raise UserError(f"{config_path}: config file not found (pass --config PATH or set "
                        f"{CONFIG_ENV})")


def _load_config(config_path: Path) -> Any:
    """The validated config, or a one-line UserError naming the key or file."""
    from .config import load_config
    from .errors import ConfigError

    _require_config_file(config_path)
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


@main.command(epilog="""\b
Examples:
  fedswarm status --config /etc/fedswarm/myfed/config.toml
  fedswarm status --json | jq .eval_loss_last""")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON as it is.")
def status(config_path: Path, as_json: bool) -> None:
    """Print the running daemon's state (asks its local API)."""
    overview = _api_get(config_path, "/api/status")
    if as_json:
        click.echo(json.dumps(overview, indent=2))
        return
    peers = _api_get(config_path, "/api/peers")
    for line in status_lines(overview, peers):
        click.echo(line)


def status_lines(overview: dict[str, Any], peers: list[dict[str, Any]]) -> list[str]:
    """``fedswarm status`` for a person: losses rounded, this daemon marked as itself.

    ``peers_up`` counts the *other* members heard from recently, so it is printed as
    "N of M other members up" rather than next to a list where this daemon shows up.
    """
    def number(key: str) -> str:
        value = overview.get(key)
        return "-" if value is None else f"{value:.4f}"

    others = [p for p in peers if not p.get("is_self")]
    target = overview.get("rounds_target") or 0
    rounds = f"{overview.get('rounds_completed')}" + (f" of {target}" if target else "")
    rows = [
        ("org", overview.get("org")),
        ("federation", overview.get("federation_id")),
        ("peer id", overview.get("peer_id")),
        ("state", overview.get("state")),
        ("round", overview.get("round")),
        ("rounds done", rounds),
        ("secure aggregation", overview.get("secure_aggregation")),
        ("privacy", privacy_line(overview.get("privacy"))),
        ("group privacy", group_privacy_line(overview.get("group_privacy"))),
        ("eval loss", f"{number('eval_loss_start')} at start, {number('eval_loss_last')} now"),
        ("peers up", f"{overview.get('peers_up')} of {plural(len(others), 'other member')}"),
        ("device", overview.get("device")),
    ]
    lines = [f"{key:<20} {value}" for key, value in rows]
    lines.append("members:")
    for p in peers:
        mark = "self" if p.get("is_self") else ("up  " if p.get("up") else "down")
        at = "-" if p.get("round") is None else p.get("round")
        lines.append(f"  {mark} {p['org']:<18} round {at!s:<5} {p['peer_id']}")
    return lines


def group_privacy_line(group: Any) -> str:
    """Group-level DP for ``fedswarm status``: ε over the rounds released, or off."""
    if not isinstance(group, dict) or not group.get("enabled"):
        return "off"
    target = group.get("epsilon_target")
    of = f" of {target:g}" if target is not None else ""
    return (f"ε {group['epsilon_spent']:.3f} spent{of} over {group['rounds']} rounds "
            f"(δ {group['delta']:.3g}, noise multiplier {group['noise_multiplier']:g}, "
            f"{group['colluders']} colluders)")


def privacy_line(privacy: Any) -> str:
    """``ε 1.234 spent of 3, 1.766 left (δ 0.0025)``, or ``off``."""
    if not isinstance(privacy, dict) or not privacy.get("enabled"):
        return "off"
    line = (f"ε {privacy['epsilon_spent']:.3f} spent of {privacy['epsilon_target']:g}, "
            f"{privacy['epsilon_remaining']:.3f} left (δ {privacy['delta']:.3g})")
    return line + ("; budget spent, training stopped" if privacy.get("training_stopped") else "")


@main.command(epilog="""\b
Example:
  fedswarm dashboard --config /etc/fedswarm/myfed/config.toml
  ssh -L 8470:127.0.0.1:8470 host      # from another machine""")
@config_option
def dashboard(config_path: Path) -> None:
    """Print the dashboard URL, with its token, for your browser."""
    overview = _api_get(config_path, "/api/status")
    token = _read_token(_load_config(config_path))
    click.echo(f"{overview['api_url']}/?token={token}")


@main.command(epilog="""\b
Example:
  fedswarm export --config /etc/fedswarm/myfed/config.toml --out ./adapter""")
@config_option
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder to write the adapter into (PeftModel.from_pretrained reads it).")
def export(config_path: Path, out: Path) -> None:
    """Write the federated adapter, or fedkseed's full model.

    LoRA modes write a PEFT adapter folder; mode = "fedkseed" writes the tuned full model
    as a save_pretrained folder."""
    from fedswarm.learning.errors import LearningError
    from fedswarm.learning.trainer import LocalTrainer

    from .model_card import card_for_export

    config = _load_config(config_path)
    checkpoint = config.state_dir / "checkpoint"
    if not checkpoint.exists():
        raise UserError(f"{checkpoint}: no checkpoint yet; run at least one round first")
    try:
        if config.federation.mode == "fedkseed":
            trainer = _fedkseed_trainer(config)
        else:
            trainer = LocalTrainer(config.model, config.lora, config.data, config.train,
                                   ownership=_mark_plan(config),
                                   freeze_lora_a=config.federation.freeze_lora_a)
        round_done = trainer.load_checkpoint(checkpoint)
        trainer.export_adapter(out, model_card=card_for_export(config, trainer, round_done))
    except LearningError as exc:
        raise UserError(str(exc)) from None
    if config.federation.mode == "fedkseed":
        click.echo(f"{out}: full model of round {round_done} "
                   "(load with AutoModelForCausalLM.from_pretrained)")
    else:
        click.echo(f"{out}: adapter of round {round_done} (load with PeftModel.from_pretrained)")


def _fedkseed_trainer(config: Any) -> Any:
    """FedKSeed's trainer for export: the seed pool needs the roster's federation id."""
    from fedswarm.learning.fedkseed import KSeedTrainer
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.roster import Roster

    try:
        federation_id = Roster.load(config.roster_path).federation_id
    except (OSError, P2PError, ValueError) as exc:
        raise UserError(f"{config.roster_path}: cannot read the roster: {exc}") from None
    return KSeedTrainer(config.model, config.data, config.train, config.fedkseed, federation_id)


@main.command("eval", short_help="Score an adapter: loss, exact match, Rouge-L, refusals.",
              epilog="""\b
Example:
  fedswarm eval --config config.toml --set qa.jsonl --refusal harmful-prompts.jsonl
  fedswarm eval --config config.toml --adapter ./adapter --set qa.jsonl --json out.json""")
@config_option
@click.option("--adapter", "adapter_dir", type=click.Path(path_type=Path, exists=True,
                                                          file_okay=False),
              help="An exported adapter folder (default: this member's latest checkpoint).")
@click.option("--set", "set_paths", multiple=True, type=click.Path(path_type=Path),
              help="A JSONL set (text, instruction or chat rows); repeatable.")
@click.option("--refusal", "refusal_paths", multiple=True, type=click.Path(path_type=Path),
              help="JSONL prompts that should be refused ({\"prompt\": ...}); repeatable.")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(1, 512),
              help="Greedy tokens generated per answer.")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the scores here as JSON.")
def eval_command(config_path: Path, adapter_dir: Path | None, set_paths: tuple[Path, ...],
                 refusal_paths: tuple[Path, ...], max_new_tokens: int,
                 json_path: Path | None) -> None:
    """Score an adapter: loss/perplexity, exact match and Rouge-L, refusal rate (docs/safety.md)."""
    from fedswarm.learning.errors import LearningError
    from fedswarm.learning.evaluation import read_eval_set, read_refusal_prompts

    if not set_paths and not refusal_paths:
        raise UserError("give at least one --set FILE or --refusal FILE")
    config = _load_config(config_path)
    try:  # every file is read, strictly, before the model loads
        sets = [read_eval_set(p) for p in set_paths]
        refusals = [(str(p), read_refusal_prompts(p)) for p in refusal_paths]
    except LearningError as exc:
        raise UserError(str(exc)) from None
    from fedswarm.learning.evaluation.run import as_dict, score_refusals, score_set, table
    from fedswarm.learning.trainer import LocalTrainer

    try:
        trainer = LocalTrainer(config.model, config.lora, config.data, config.train,
                               ownership=_mark_plan(config),
                               freeze_lora_a=config.federation.freeze_lora_a)
        if adapter_dir is not None:
            trainer.load_exported_adapter(adapter_dir)
            source = str(adapter_dir)
        elif (config.state_dir / "checkpoint").exists():
            source = f"checkpoint round {trainer.load_checkpoint(config.state_dir / 'checkpoint')}"
        else:
            source = "base model (no checkpoint yet)"
        set_scores = [score_set(trainer, s, max_new_tokens) for s in sets]
        refusal_scores = [score_refusals(trainer, path, prompts, max_new_tokens)
                          for path, prompts in refusals]
    except LearningError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"adapter: {source}")
    click.echo(table(set_scores, refusal_scores))
    if json_path is not None:
        json_path.write_text(json.dumps({"adapter": source,
                                         **as_dict(set_scores, refusal_scores)}, indent=2),
                             encoding="utf-8")


def _mark_plan(config: Any) -> Any:
    """The member's ``MarkPlan`` (or None), every failure a one-line UserError."""
    from fedswarm.p2p.errors import P2PError
    from fedswarm.p2p.roster import Roster

    from .errors import ConfigError
    from .ownership import mark_plan

    if not config.ownership.enabled:
        return None
    try:
        return mark_plan(config, Roster.load(config.roster_path))
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    except P2PError as exc:
        raise UserError(f"[node] roster: {exc}") from None


@main.group(short_help="Ownership marks: check a model for this member's mark.",
            epilog="""\b
Example:
  fedswarm ownership verify --config config.toml --adapter ./adapter""")
def ownership() -> None:
    """Ownership marks (docs/ownership.md): does a model carry this member's secret bits?"""


@ownership.command("verify", short_help="How many of this member's mark bits a model carries.")
@config_option
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True,
                                                      file_okay=False),
              help="A full model folder (save_pretrained), e.g. one found outside.")
@click.option("--adapter", "adapter_dir", type=click.Path(path_type=Path, exists=True,
                                                          file_okay=False),
              help="An adapter folder (fedswarm export), applied to [model] path.")
def ownership_verify(config_path: Path, model_dir: Path | None,
                     adapter_dir: Path | None) -> None:
    """Print the share of this member's mark bits a model carries (white-box), and with
    [ownership] triggers the share of its secret trigger prompts it answers (black-box).

    The reference is [model] path, the base every member started from; the key and the
    triggers stay secret (only the key's id is printed). About 0.5 of the bits is chance,
    and about one trigger in the vocabulary size (more when a target is a common token,
    which any fine-tuned model may predict): a model without the mark.
    """
    from fedswarm.learning.errors import LearningError
    from fedswarm.learning.ownership import verify_model
    from fedswarm.learning.ownership.verify import load_suspect
    from transformers import AutoModelForCausalLM

    if (model_dir is None) == (adapter_dir is None):
        raise UserError("give exactly one of --model DIR or --adapter DIR")
    _require_config_file(config_path)
    config = _load_config(config_path)
    plan = _mark_plan(config)
    if plan is None:
        raise UserError("[ownership] enabled: false; there is no mark of this member to verify")
    try:
        suspect = load_suspect(Path(config.model.path), model_dir=model_dir,
                               adapter_dir=adapter_dir)
        base = AutoModelForCausalLM.from_pretrained(config.model.path)
        result = verify_model(suspect, base, plan.key, list(plan.roster), plan.member,
                              plan.settings.bits)
        answered = None
        if plan.settings.triggers:
            from fedswarm.learning.model_loading import load_tokenizer
            from fedswarm.learning.ownership.triggers import trigger_accuracy, triggers_for

            tokenizer = load_tokenizer(config.model)  # the trainer's: same specials, same set
            triggers = triggers_for(plan.key, plan.settings.triggers, tokenizer)
            answered = trigger_accuracy(suspect, triggers), len(tokenizer)
    except (LearningError, OSError, ValueError) as exc:
        raise UserError(str(exc)) from None
    where = model_dir or adapter_dir
    click.echo(f"key {result.key_id}: {result.detected:.3f} of {result.bits} bits detected "
               f"in {where} (chance is about 0.5)")
    if answered is not None:
        click.echo(f"key {result.key_id}: {answered[0]:.3f} of {plan.settings.triggers} "
                   f"secret triggers answered by {where} (chance is about 1/{answered[1]} "
                   "a trigger, more for a common target token)")


@main.group(short_help="Offsite-tuning: build the emulator package a model owner sends.",
            epilog="""\b
Example:
  fedswarm offsite build --model ./bank-llm --out ./package --keep 2 --adapter-layers 2,2""")
def offsite() -> None:
    """Offsite-tuning (docs/offsite.md): members tune adapters on an emulator of your model."""


@offsite.command("build", short_help="Cut the emulator and adapter package out of a model.")
@click.option("--model", "model_dir", required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="The owner's full model (a local Hugging Face causal-LM folder).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Where to write the package (must not exist or be empty).")
@click.option("--keep", required=True, type=int, help="Middle layers the emulator keeps.")
@click.option("--adapter-layers", required=True, metavar="B,T",
              help="Bottom and top layers members train, e.g. 2,2.")
@click.option("--distill-steps", default=0, show_default=True, type=int,
              help="Distil the kept middle towards the full model's (docs/offsite.md).")
@click.option("--distill-data", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="JSONL with a 'text' field per row, to distil on (owner's choice).")
def offsite_build(model_dir: Path, out_dir: Path, keep: int, adapter_layers: str,
                  distill_steps: int, distill_data: Path | None) -> None:
    """Write the package and print its id, which every member puts in [offsite] package_id."""
    import json

    from fedswarm.learning.errors import LearningError
    from fedswarm.learning.offsite import build_package, parse_adapter_layers
    from fedswarm.learning.offsite.settings import DistillSettings

    try:
        bottom, top = parse_adapter_layers(adapter_layers)
        distill = DistillSettings(steps=distill_steps)
        texts = None
        if distill_steps > 0:
            if distill_data is None:
                raise UserError("--distill-steps needs --distill-data FILE.jsonl")
            texts = [json.loads(line)["text"] for line in
                     distill_data.read_text(encoding="utf-8").splitlines() if line.strip()]
        package = build_package(model_dir, out_dir, keep=keep, bottom=bottom, top=top,
                                distill=distill, distill_texts=texts)
    except (LearningError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"offsite build: {exc}") from None
    layout = package.layout
    click.echo(f"{out_dir}: emulator of {layout.emulator_layers} of {layout.total} layers "
               f"(adapters {layout.bottom} bottom + {layout.top} top, middle layers "
               f"{layout.kept_middle()} kept)")
    click.echo(f"package_id = \"{package.package_id}\"")


# -- demo ---------------------------------------------------------------------------------------


@main.command(short_help="Run a federation of daemons on 127.0.0.1 (tiny model).",
              epilog="""\b
Examples:
  fedswarm demo                          # 3 peers, 3 rounds, secure aggregation
  fedswarm demo --peers 6 --json out.json
  fedswarm demo --mode fedmkt            # two different models teach each other
  fedswarm demo --mode fedkseed          # full model, zeroth-order, K numbers a round
  fedswarm demo --dp                     # DP-SGD on every peer; ε spent at the end
The first run builds the tiny demo model (about 40 s of CPU) into
$FEDSWARM_CACHE_DIR (default ~/.cache/fedswarm); later runs reuse it.""")
@click.option("--peers", default=3, show_default=True, type=click.IntRange(1, 16),
              help="How many daemons to start, each with one domain of the demo corpus.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Training rounds (with rotating groups, averaging-only rounds follow).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the demo summary JSON here.")
@click.option("--secure/--plain", default=True, show_default=True,
              help="Secure aggregation (default) or plaintext averaging.")
@click.option("--mode", type=click.Choice(["lora_avg", "fedmkt", "fedkseed"]),
              default="lora_avg", show_default=True,
              help="lora_avg: average LoRA adapters; fedmkt: distil between different models; "
                   "fedkseed: full-model zeroth-order steps, K numbers a round.")
@click.option("--group-size", default=None, type=click.IntRange(3, 64),
              help="Peers per averaging group [default: 3 with 6 or more peers, else 4].")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Keep the federation's files here instead of a temporary folder.")
@click.option("--dp", is_flag=True, default=False,
              help="Train every peer with DP-SGD ([privacy], docs/privacy.md) and report the "
                   "ε each spent.")
def demo(peers: int, rounds: int, json_path: Path | None, secure: bool, mode: str,
         group_size: int | None, workdir: Path | None, dp: bool) -> None:
    """Run a real federation of daemons on 127.0.0.1 with a tiny model."""
    from .demo.command import DemoInterrupted, run_demo
    from .errors import DemoError

    if group_size is None:
        group_size = 3 if peers >= 6 else 4
    try:
        summary = run_demo(peers=peers, rounds=rounds, secure=secure, mode=mode,
                           group_size=group_size, workdir=workdir, json_path=json_path, dp=dp)
    except DemoError as exc:
        raise UserError(str(exc)) from None
    except DemoInterrupted as exc:
        click.echo(f"\ninterrupted; every daemon was stopped; their files and logs are in "
                   f"{exc.workdir}", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; every daemon was stopped", err=True)
        sys.exit(130)
    if not summary["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main(prog_name="fedswarm")
