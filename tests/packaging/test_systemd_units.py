"""The shipped systemd units: the settings the daemon relies on, and systemd's own check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
TEMPLATE = UNIT_DIR / "fedswarm@.service"
SINGLE = UNIT_DIR / "fedswarm.service"
SYSUSERS = UNIT_DIR / "fedswarm.sysusers"
UNITS = [TEMPLATE, SINGLE]

# The daemon aborts an in-flight aggregation within this many seconds of SIGTERM.
DAEMON_SHUTDOWN_BOUND_S = 30

# Keys whose values legitimately differ between the template and the single unit.
PATH_KEYS = {
    "Description",
    "ExecStart",
    "StateDirectory",
    "CacheDirectory",
    "Environment",
    "WorkingDirectory",
    "LoadCredential",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd allows a key to repeat; comments are dropped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def single_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key} is not set"
    assert len(values) == 1, f"[{section}] {key} set {len(values)} times"
    return values[0]


def seconds(text: str) -> float:
    """Parse the systemd time spans these units use ("90s", "10min", "60")."""
    match = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", text)
    assert match, f"unsupported time span {text!r}"
    number = int(match.group(1))
    return number * 60 if match.group(2) in ("min", "m") else number


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_is_a_notify_service_with_watchdog_and_reload(path: Path) -> None:
    unit = parse_unit(path)
    assert single_value(unit, "Service", "Type") == "notify"
    assert single_value(unit, "Service", "NotifyAccess") == "main"
    assert seconds(single_value(unit, "Service", "WatchdogSec")) > 0
    assert single_value(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert single_value(unit, "Service", "Restart") == "on-failure"
    assert " run --config " in single_value(unit, "Service", "ExecStart")
    assert int(single_value(unit, "Service", "LimitNOFILE")) >= 4096
    assert single_value(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_stop_timeout_leaves_room_for_the_daemons_own_shutdown(path: Path) -> None:
    unit = parse_unit(path)
    assert seconds(single_value(unit, "Service", "TimeoutStopSec")) > DAEMON_SHUTDOWN_BOUND_S
    assert single_value(unit, "Service", "KillMode") == "mixed"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened(path: Path) -> None:
    service = parse_unit(path)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], f"{key} should be {value}"
    families = set(" ".join(service["RestrictAddressFamilies"]).split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    # torch / Triton JIT need writable+executable pages: W^X must stay off.
    assert "MemoryDenyWriteExecute" not in service
    assert service.get("User") == ["fedswarm"]


def test_template_takes_config_and_state_from_the_instance_name() -> None:
    service = parse_unit(TEMPLATE)["Service"]
    assert "/etc/fedswarm/%i/config.toml" in single_value(
        {"Service": service}, "Service", "ExecStart"
    )
    assert service["StateDirectory"] == ["fedswarm/%i"]
    assert "FEDSWARM_STATE_DIR=%S/fedswarm/%i" in service["Environment"]
    assert "FEDSWARM_IDENTITY=%d/identity.key" in service["Environment"]
    assert "identity.key:/etc/fedswarm/%i/identity.key" in service["LoadCredential"]


def test_single_unit_matches_template_apart_from_paths() -> None:
    template, single = parse_unit(TEMPLATE), parse_unit(SINGLE)
    assert template.keys() == single.keys()
    for section in template:
        a = {k: v for k, v in template[section].items() if k not in PATH_KEYS}
        b = {k: v for k, v in single[section].items() if k not in PATH_KEYS}
        assert a == b, f"[{section}] differs between {TEMPLATE.name} and {SINGLE.name}"
    assert "%i" not in SINGLE.read_text().split("[Unit]", 1)[1]


def test_sysusers_creates_the_user_the_units_run_as() -> None:
    entries = [
        line.split()
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [e[:2] for e in entries] == [["u", "fedswarm"]]


@pytest.mark.parametrize(
    ("path", "as_name"),
    [(TEMPLATE, "fedswarm@testfed.service"), (SINGLE, "fedswarm.service")],
    ids=["template", "single"],
)
def test_systemd_analyze_verify_accepts_unit(path: Path, as_name: str, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip(
            "systemd-analyze is not installed (apt-get install systemd) - unit syntax unchecked"
        )
    # Verify a concrete instance: systemd only expands %i for a named instance.
    target = tmp_path / as_name
    target.write_text(path.read_text())
    result = subprocess.run(
        [tool, "verify", str(target)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "fedswarm" in line
    ]
    # verify exits 0 on unknown keys and bad values; it only prints them. Both count.
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == [], "\n".join(complaints)
