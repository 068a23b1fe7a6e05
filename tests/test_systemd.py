"""The systemd units: `systemd-analyze verify` is silent, and the hardening the issue asks for
is present (capabilities instead of root, /dev/net/tun reachable, Type=notify)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = {role: ROOT / "systemd" / f"mipnode-{role}.service" for role in ("mn", "ha", "cn")}
INSTALLED_BINARY = "/usr/local/bin/mipnode"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (a key may repeat), comments and blank lines skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _mipnode_binary() -> str:
    """An existing mipnode entry point for verify to check ExecStart= against."""
    candidate = Path(sys.executable).parent / "mipnode"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mipnode")
    if found is None:
        pytest.skip("no mipnode entry point installed")
    return found


@pytest.mark.parametrize("role", sorted(UNITS))
def test_systemd_analyze_verify_is_silent(role: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify fails on an ExecStart= binary that does not exist; /usr/local/bin/mipnode is where
    # the units expect an installed mipnode, so check a copy that points at this checkout's.
    prefix = f"ExecStart={INSTALLED_BINARY} "
    lines = UNITS[role].read_text().splitlines(keepends=True)
    assert sum(line.startswith(prefix) for line in lines) == 1
    binary = _mipnode_binary()
    unit = tmp_path / UNITS[role].name
    unit.write_text(
        "".join(
            f"ExecStart={binary} {line[len(prefix) :]}" if line.startswith(prefix) else line
            for line in lines
        )
    )
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice", SYSTEMD_PAGER="", LC_ALL="C")
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, env=env, timeout=30
    )
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, output
    # Unknown or misspelt keys are only warnings (status 0), so any output at all is a failure.
    assert output == "", output


@pytest.mark.parametrize("role", sorted(UNITS))
def test_unit_runs_the_role_as_a_notify_service(role: str) -> None:
    service = parse_unit(UNITS[role])["Service"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[:3] == [INSTALLED_BINARY, role, "--config"]
    if role == "cn":
        assert argv[3] == "/etc/mipnode/cn.toml"
    else:
        # The key file stays root-only in /etc/mipnode; systemd copies it for the service user.
        assert argv[3] == f"%d/{role}.toml"
        assert service["LoadCredential"] == [f"{role}.toml:/etc/mipnode/{role}.toml"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"]
    # Exit status 2 (bad config, privileges, no TUN) is not worth restarting.
    assert service["RestartPreventExitStatus"] == ["2"]
    assert parse_unit(UNITS[role])["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("role", sorted(UNITS))
def test_unit_uses_capabilities_not_root(role: str) -> None:
    service = parse_unit(UNITS[role])["Service"]
    assert "User" not in service or service["User"] != ["root"]
    assert service.get("DynamicUser") == ["yes"] or "User" in service
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        (value,) = service[key]
        assert sorted(value.split()) == ["CAP_NET_ADMIN", "CAP_NET_RAW"], key
    assert service["NoNewPrivileges"] == ["yes"]
    assert "PrivateUsers" not in service  # caps in a user namespace do not reach the host


@pytest.mark.parametrize("role", sorted(UNITS))
def test_unit_hardening(role: str) -> None:
    service = parse_unit(UNITS[role])["Service"]
    # /dev/net/tun must stay reachable: PrivateDevices=yes would hide it.
    assert service.get("PrivateDevices", ["no"]) == ["no"]
    assert service["DevicePolicy"] == ["closed"]
    assert service["DeviceAllow"] == ["/dev/net/tun rw"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["ProtectHome"] == ["yes"]
    (families,) = service["RestrictAddressFamilies"]
    expected = {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}
    if role in ("mn", "cn"):
        expected.add("AF_PACKET")  # the tap for route-optimised packets (HAO / RH2)
    assert set(families.split()) == expected
    for key in (
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert service[key] == ["yes"], key
    assert service["SystemCallArchitectures"] == ["native"]
    assert "@system-service" in service["SystemCallFilter"]
    # The HA may have to switch on net.ipv6.conf.all.forwarding itself; the others touch no sysctl.
    assert service["ProtectKernelTunables"] == (["no"] if role == "ha" else ["yes"])


@pytest.mark.parametrize("role", sorted(UNITS))
def test_systemd_analyze_security_exposure_is_low(role: str, tmp_path: Path) -> None:
    """`systemd-analyze security` rates the sandbox (0 best, 10 worst); keep it under 3."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNITS[role].name
    shutil.copy(UNITS[role], unit)
    env = dict(
        os.environ, SYSTEMD_LOG_LEVEL="err", SYSTEMD_PAGER="", SYSTEMD_COLORS="0", LC_ALL="C.UTF-8"
    )
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no offline security check")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) < 3.0, proc.stdout
