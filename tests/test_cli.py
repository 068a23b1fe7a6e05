"""The real `mipnode` command as a subprocess: every startup problem a user can fix (bad
configuration, the CN role, missing privileges, a missing /dev/net/tun) is one line on stderr
and exit status 2, never a traceback.

The privilege and TUN tests run the daemons inside a network namespace created here (and
deleted afterwards), so they never touch the host's links, routes or sysctls.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mipnode.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable
CLI = [PYTHON, "-m", "mipnode.cli"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
TIMEOUT = 20  # a daemon that unexpectedly starts must not hang the suite


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """Exactly one line on stderr, `mipnode: ...`, the given status, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mipnode: "), proc.stderr
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    return lines[0]


# -- configuration errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "text", "key", "words"),
    [
        (
            "ha",
            '[ha]\naddress = "2001:db8:1::1"\nhome_prefix = "2001:db8:1::1/64"\n',
            "ha.home_prefix",
            "not an IPv6 prefix",
        ),
        (
            "ha",
            '[ha]\naddress = "2001:db8:1::1"\nhome_prefix = "2001:db8:1::/64"\nudp_port = 4500\n',
            "ha.udp_port",
            "ESP-in-UDP",
        ),
        (
            "mn",
            '[mn]\nhome_address = "2001:db8:1::100"\nhome_agent = "2001:db8:1::1"\n'
            'spi = 7\nkey = "00112233445566778899aabbccddeeff"\n',
            "mn.spi",
            "between 256 and",
        ),
        (
            "mn",
            '[mn]\nhome_address = "2001:db8:1::100"\nhome_agent = "2001:db8:1::1"\n'
            'spi = 1000\nkey = "00112233445566778899aabbccddeeff"\nlifetime = 60\n',
            "mn.lifetime",
            "unknown key",
        ),
        ("mn", "[mn]\nspi = \n", "-", "not valid TOML"),
        # A quoted TOML key may hold a line break; the message must stay on one line.
        ("mn", '"bad\\nkey" = 1\n[mn]\n', "bad key", "unknown key"),
    ],
)
def test_bad_config_is_one_line_and_status_2(
    tmp_path: Path, role: str, text: str, key: str, words: str
) -> None:
    config = tmp_path / f"{role}.toml"
    config.write_text(text)
    line = assert_one_line_error(run([*CLI, role, "--config", str(config)]))
    assert line.startswith(f"mipnode: {config}: {key}: "), line
    assert words in line


@pytest.mark.parametrize("role", ["ha", "mn"])
def test_missing_config_file(tmp_path: Path, role: str) -> None:
    missing = tmp_path / "absent.toml"
    line = assert_one_line_error(run([*CLI, role, "-c", str(missing), "-v"]))
    assert line == f"mipnode: {missing}: -: cannot read: No such file or directory"


def test_the_other_roles_config_is_refused() -> None:
    line = assert_one_line_error(run([*CLI, "ha", "--config", str(EXAMPLES / "mn.toml")]))
    assert line == f"mipnode: {EXAMPLES / 'mn.toml'}: mn: unknown key"


def test_installed_entry_point_reports_the_same_way(tmp_path: Path) -> None:
    """The console script (what systemd runs) behaves like `python -m mipnode.cli`."""
    script = Path(PYTHON).with_name("mipnode")
    if not script.exists():
        pytest.skip("mipnode entry point not installed next to this interpreter")
    config = tmp_path / "mn.toml"
    config.write_text("[mn]\n")
    line = assert_one_line_error(run([str(script), "mn", "--config", str(config)]))
    assert line == f"mipnode: {config}: mn.home_address: missing (required)"


# -- the CN role, inspection and the lab listing -----------------------------------------------
def test_cn_role_with_another_role_s_config_names_the_missing_table() -> None:
    config = EXAMPLES / "ha.toml"
    line = assert_one_line_error(run([*CLI, "cn", "--config", str(config)]))
    assert line == f"mipnode: {config}: ha: unknown key"


def test_status_without_a_daemon() -> None:
    name = f"@mipt-none-{secrets.token_hex(4)}"
    for command in ("status", "bindings", "paths"):
        proc = run([*CLI, command, "--socket", name])
        line = assert_one_line_error(proc, status=1)
        assert line == f"mipnode: no mipnode daemon answers on {name} in this network namespace"
    proc = run([*CLI, "status", "--json", "--socket", name])
    assert_one_line_error(proc, status=1)


def test_lab_list_names_every_scenario() -> None:
    from mipnode.lab.runner import SCENARIOS

    proc = run([*CLI, "lab", "list"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SCENARIOS) >= 1
    for scenario, line in zip(SCENARIOS, lines, strict=True):
        assert line.split()[0] == scenario.name
        assert scenario.expect_mn_ha in line


def test_version() -> None:
    from mipnode import __version__

    proc = run([*CLI, "--version"])
    assert (proc.returncode, proc.stdout.strip()) == (0, f"mipnode {__version__}")


# -- privileges and the TUN device, inside a network namespace of our own -----------------------
def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates a network namespace)")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace, deleted afterwards (only the one made here)."""
    _need("ip")
    name = f"mipt-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


NOBODY_UID = 65534
EXAMPLE_STATE_DIR = "/var/lib/mipnode-ha"  # examples/ha.toml


@pytest.fixture
def shared_configs() -> Iterator[Path]:
    """The example configs (mode 0600: they hold keys) in a directory any user can enter
    (pytest's tmp_path is 0700); a test run as nobody makes them nobody's."""
    directory = Path(tempfile.mkdtemp(prefix="mipt-cfg-"))
    try:
        directory.chmod(0o755)
        for name in ("ha.toml", "mn.toml"):
            shutil.copy(EXAMPLES / name, directory / name)
            (directory / name).chmod(0o600)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _nobody_can_run_mipnode(netns: str) -> None:
    probe = run(["ip", "netns", "exec", netns, *NOBODY, PYTHON, "-c", "import mipnode.cli"])
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot import mipnode here: {probe.stderr.strip()[-200:]}")


@pytest.mark.parametrize("role", ["ha", "mn"])
def test_unprivileged_user_gets_one_line(netns: str, shared_configs: Path, role: str) -> None:
    _need("setpriv")
    _nobody_can_run_mipnode(netns)
    config = shared_configs / f"{role}.toml"
    os.chown(config, NOBODY_UID, NOBODY_UID)  # the service user's own key file
    proc = run(["ip", "netns", "exec", netns, *NOBODY, *CLI, role, "--config", str(config)])
    line = assert_one_line_error(proc)
    assert "permission denied" in line.lower() and "CAP_NET_ADMIN" in line, line


@pytest.mark.parametrize("role", ["ha", "mn"])
def test_root_without_capabilities_gets_one_line(
    netns: str, shared_configs: Path, role: str
) -> None:
    """uid 0 with every capability dropped: what a unit without AmbientCapabilities= gets."""
    _need("setpriv")
    config = shared_configs / f"{role}.toml"
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    # Pre-set forwarding so the HA does not log "enabled IPv6 forwarding" first (uid 0 may
    # write network sysctls of its own namespace even without capabilities).
    run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        ]
    )
    proc = run(["ip", "netns", "exec", netns, *drop, *CLI, role, "--config", str(config)])
    line = assert_one_line_error(proc)
    assert "CAP_NET_ADMIN" in line, line


@pytest.mark.parametrize("role", ["ha", "mn"])
def test_missing_tun_device_gets_one_line(netns: str, shared_configs: Path, role: str) -> None:
    """/dev/net/tun hidden by a tmpfs in a private mount namespace (the host's is untouched)."""
    _need("unshare", "mount")
    host_has_tun = os.path.exists("/dev/net/tun")
    run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        ]
    )
    config = shared_configs / f"{role}.toml"
    script = 'mount -t tmpfs none /dev/net && exec "$0" -m mipnode.cli "$1" --config "$2"'
    proc = run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            PYTHON,
            role,
            str(config),
        ]
    )
    if "mount" in proc.stderr and "mipnode:" not in proc.stderr:
        pytest.skip(f"cannot hide /dev/net/tun here: {proc.stderr.strip()}")
    line = assert_one_line_error(proc)
    assert "/dev/net/tun is missing" in line, line
    assert os.path.exists("/dev/net/tun") == host_has_tun  # the tmpfs stayed in its namespace


def test_status_in_an_empty_namespace(netns: str) -> None:
    proc = run(["ip", "netns", "exec", netns, *CLI, "status"])
    line = assert_one_line_error(proc, status=1)
    assert line == (
        "mipnode: no mipnode daemon answers on @mipnode-mn, @mipnode-ha, "
        "@mipnode-cn in this network namespace"
    )


def test_config_unreadable_for_the_service_user(netns: str, shared_configs: Path) -> None:
    """A root-only (0600) config run as another user: a config error, not a traceback."""
    _need("setpriv")
    _nobody_can_run_mipnode(netns)
    config = shared_configs / "mn.toml"
    config.chmod(0o600)
    proc = run(["ip", "netns", "exec", netns, *NOBODY, *CLI, "mn", "--config", str(config)])
    line = assert_one_line_error(proc)
    assert line == f"mipnode: {config}: -: cannot read: Permission denied"


# -- files that hold keys (issue 12: local hardening) -------------------------------------------
def _key_file(tmp_path: Path, role: str, mode: int) -> Path:
    config = tmp_path / f"{role}.toml"
    shutil.copy(EXAMPLES / f"{role}.toml", config)
    config.chmod(mode)
    return config


@pytest.mark.parametrize(("role", "key"), [("mn", "mn.key"), ("ha", "mobile_node.key")])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_open_to_others_is_refused_in_one_line(
    tmp_path: Path, role: str, key: str, mode: int
) -> None:
    config = _key_file(tmp_path, role, mode)
    line = assert_one_line_error(run([*CLI, role, "--config", str(config)]))
    assert line == (
        f"mipnode: {config}: {key}: holds keys but is open to group or others "
        f"(mode {mode:04o}): chmod 600 {config}"
    )


def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    config = _key_file(tmp_path, "mn", 0o600)
    os.chown(config, NOBODY_UID, NOBODY_UID)  # nobody could rewrite the keys root trusts
    line = assert_one_line_error(run([*CLI, "mn", "--config", str(config)]))
    assert line == (
        f"mipnode: {config}: mn.key: holds keys but belongs to uid {NOBODY_UID}, "
        f"not to uid {os.geteuid()} or root"
    )


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o722])
def test_a_state_dir_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Its file decides which bindings a restarted HA restores."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    config = _key_file(tmp_path, "ha", 0o600)
    config.write_text(config.read_text().replace(EXAMPLE_STATE_DIR, str(state)))
    line = assert_one_line_error(run([*CLI, "ha", "--config", str(config)]))
    assert line == (
        f"mipnode: {config}: ha.state_dir: {state} is writable by group or others "
        f"(mode {mode:04o}): chmod 700 {state}"
    )


def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY_UID, NOBODY_UID)
    config = _key_file(tmp_path, "ha", 0o600)
    config.write_text(config.read_text().replace(EXAMPLE_STATE_DIR, str(state)))
    line = assert_one_line_error(run([*CLI, "ha", "--config", str(config)]))
    assert line == (
        f"mipnode: {config}: ha.state_dir: {state} belongs to uid {NOBODY_UID}, "
        f"not to the daemon's user (uid {os.geteuid()})"
    )


# -- a node of a cluster that cannot start ----------------------------------------------------
def _cluster_config(directory: Path, home_link: str, endpoint: str) -> Path:
    """examples/ha-cluster.toml with this test's etcd and home link."""
    text = (EXAMPLES / "ha-cluster.toml").read_text()
    text = re.sub(r"(?m)^etcd_endpoints = .*$", f'etcd_endpoints = ["{endpoint}"]', text)
    text = re.sub(r'(?m)^home_link = "eth0"$', f'home_link = "{home_link}"', text)
    config = directory / "ha-cluster.toml"
    config.write_text(text)
    config.chmod(0o600)
    return config


@pytest.mark.parametrize(
    ("home_link", "words"),
    [
        ("home0", "etcd unreachable at http://127.0.0.1:9: "),
        ("nosuch0", "[ha.cluster] home_link: no interface named nosuch0"),
    ],
)
def test_a_cluster_node_that_cannot_start_says_why_in_one_line(
    netns: str, tmp_path: Path, home_link: str, words: str
) -> None:
    """etcd unreachable at start (nothing listens on the discard port of the namespace's own
    loopback), or a home link that does not exist: one line each, no daemon."""
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", "home0", "type", "veth", "peer", "name", "home1"],
        ["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"],
    ):
        run(["ip", "netns", "exec", netns, *cmd])
    config = _cluster_config(tmp_path, home_link, "http://127.0.0.1:9")
    proc = run(["ip", "netns", "exec", netns, *CLI, "ha", "--config", str(config)])
    line = assert_one_line_error(proc)
    assert words in line, line


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_command_has_a_manual_page_help(name: str) -> None:
    """`mipnode NAME --help` reads like a manual page: what it does, examples that the parser
    accepts, exit status, where the details are."""
    text = _subparsers()[name].format_help()
    assert len(text.split("\n\n")[1]) > 80, text  # a description, not a usage line alone
    for heading in ("examples:", "exit status:", "see also:"):
        assert heading in text, (heading, text)
    examples = text.split("examples:")[1].split("\n\n")[0]
    for line in examples.strip().splitlines():
        command = line.strip().split("  ")[0].split(";")[0].split(">")[0]
        if command.startswith("mipnode "):
            args = shlex.split(command)[1:]
            build_parser().parse_args(args)  # exits (SystemExit 2) on a wrong example
