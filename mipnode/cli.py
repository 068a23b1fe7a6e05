"""`mipnode ...`: run a daemon, inspect one, or run the lab.

Exit status: 0 success, 1 a lab scenario failed or a daemon stopped on an error, 2 bad usage,
bad configuration, missing privileges or a missing TUN device (one line, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from mipnode import __version__, cli_help, human

EXIT_USAGE = 2


def fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    # Always one line, even when a TOML key or an OS message carries a line break.
    print(f"mipnode: {' '.join(message.splitlines())}", file=sys.stderr)
    raise SystemExit(status)


def _startup_error(exc: BaseException) -> str | None:
    """A one-line explanation for errors a user can fix (privileges, TUN, config)."""
    from mipnode.drivers.netlink import NetlinkFailure
    from mipnode.drivers.rawio import NftError
    from mipnode.drivers.startup import StartupError
    from mipnode.drivers.tun import TunError

    if isinstance(exc, TunError | NetlinkFailure | StartupError | NftError):
        return str(exc)
    if isinstance(exc, PermissionError):
        what = f" on {exc.filename}" if exc.filename else ""
        return f"permission denied{what}: run as root or with CAP_NET_ADMIN and CAP_NET_RAW"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return None


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_leaf_exceptions(inner))
        return out
    return [exc]


def run_daemon(role: str, config_path: str, verbose: bool) -> int:
    import trio

    from mipnode.config import (
        ConfigError,
        check_daemon_files,
        load_cn_config,
        load_ha_config,
        load_mn_config,
    )
    from mipnode.drivers.logs import setup_logging

    setup_logging(verbose)
    try:
        if role == "ha":
            from mipnode.drivers.ha_daemon import run_home_agent

            ha_cfg = load_ha_config(config_path)
            check_daemon_files(config_path, "mobile_node.key", ha_cfg.state_dir)
            main: Callable[[], Any] = lambda: run_home_agent(ha_cfg)  # noqa: E731
        elif role == "mn":
            from mipnode.drivers.mn_daemon import run_mobile_node

            mn_cfg = load_mn_config(config_path)
            check_daemon_files(config_path, "mn.key")
            main = lambda: run_mobile_node(mn_cfg)  # noqa: E731
        else:
            from mipnode.drivers.cn_daemon import run_correspondent

            cn_cfg = load_cn_config(config_path)
            main = lambda: run_correspondent(cn_cfg)  # noqa: E731
    except ConfigError as exc:
        fail(str(exc))
    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        for leaf in _leaf_exceptions(exc):
            message = _startup_error(leaf)
            if message is not None:
                fail(message)
        raise
    return 0


# -- inspection ------------------------------------------------------------------------
ROLES = ("mn", "ha", "cn")


def _query_daemons(command: str, socket_name: str | None) -> list[dict[str, Any]]:
    from mipnode.drivers.control import query

    names = [socket_name] if socket_name else [f"@mipnode-{r}" for r in ROLES]
    answers = []
    for name in names:
        try:
            answers.append(query(name, command))
        except (FileNotFoundError, ConnectionRefusedError):
            continue
        except OSError as exc:
            fail(f"control socket {name}: {exc.strerror or exc}")
    answers = [_printable(a) for a in answers]
    if not answers:
        where = socket_name or "@mipnode-mn, @mipnode-ha, @mipnode-cn"
        fail(f"no mipnode daemon answers on {where} in this network namespace", 1)
    return answers


def _printable(value: Any) -> Any:
    """Control characters in strings from a daemon, escaped: nothing it says can drive the
    terminal (an ANSI sequence, a carriage return over an earlier line)."""
    if isinstance(value, str):
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    return value


def print_status(answer: dict[str, Any]) -> None:
    human.render("status", answer)


def print_bindings(answer: dict[str, Any]) -> None:
    human.render("bindings", answer)


def print_paths(peers: Any) -> None:
    human.render("paths", peers)


def inspect(command: str, as_json: bool, socket_name: str | None) -> int:
    answers = _query_daemons(command, socket_name)
    if as_json:
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
        return 0
    for answer in answers:
        if isinstance(answer, dict) and "error" in answer:
            fail(answer["error"], 1)
        human.render(command, answer)
    return 0


def netcheck(config_path: str, as_json: bool) -> int:
    from mipnode.config import ConfigError, load_mn_config
    from mipnode.drivers.netcheck import run_netcheck

    try:
        cfg = load_mn_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{config_path}: {exc.strerror or exc}")
    try:
        answer = run_netcheck(cfg).to_json()
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        fail(_startup_error(exc) or str(exc), 1)
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        human.render("netcheck", answer)
    return 0 if answer["predicted"] is not None else 1


def ping(peer: str, count: int, kind: str | None, as_json: bool, socket_name: str | None) -> int:
    """`mipnode ping`: ``count`` rounds a second apart through the mobile node daemon, each one
    probe on every candidate path to ``peer`` (core/mn_ping.py), then the spread per path."""
    import time

    from mipnode.core.mn_ping import summary
    from mipnode.drivers.control import query

    name = socket_name or "@mipnode-mn"
    rounds: list[dict[str, Any]] = []
    interrupted = False
    for n in range(count):
        started = time.monotonic()
        try:
            answer = _printable(query(name, f"ping {peer} {kind or ''}".strip(), timeout=5.0))
            if "error" in answer:
                fail(answer["error"], 1)
            rounds.append(answer)
            if count > 1 and not as_json:  # a line per round while they run, like ping(8)
                print(f"{n + 1}/{count}  {human.ping_round_line(answer)}", flush=True)
            if n + 1 < count:
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        except KeyboardInterrupt:
            interrupted = True
            break
        except (FileNotFoundError, ConnectionRefusedError):
            fail(f"no mobile node daemon answers on {name} in this network namespace", 1)
        except OSError as exc:
            fail(f"control socket {name}: {exc.strerror or exc}", 1)
    if not rounds:
        return 130
    result = {k: rounds[-1][k] for k in ("peer", "role", "data_path", "note")}
    result |= {"rounds": rounds, "summary": summary(rounds)}
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        human.render("ping", result)
    if interrupted:
        return 130
    return 0 if any(p["answered"] for p in result["summary"]) else 1


# -- argument parsing --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mipnode", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"mipnode {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for role, what in (("mn", "mobile node"), ("ha", "home agent"), ("cn", "correspondent node")):
        d = sub.add_parser(role, help=f"run the {what} daemon in the foreground")
        d.add_argument("--config", "-c", required=True, help="TOML configuration file")
        d.add_argument("--verbose", "-v", action="store_true")
    for name, what in (
        ("status", "daemon state"),
        ("bindings", "bindings"),
        ("paths", "paths and candidates"),
    ):
        q = sub.add_parser(name, help=f"show the {what} of the daemons in this namespace")
        q.add_argument("--json", action="store_true", help="stable JSON (docs/cli.md)")
        q.add_argument("--socket", help="control socket (default: @mipnode-mn, -ha, -cn)")
    pg = sub.add_parser(
        "ping",
        help="probe every candidate path to a peer through the mobile node daemon",
        description="Through the running mobile node daemon, send one probe on every "
        "candidate path to PEER, each in its own encapsulation, and print each path's round "
        "trip or that it went unanswered, and the path data takes now. PEER is the home agent "
        "(its T-native and T-udp pairs), a correspondent or another mobile node's home address "
        "(its D-udp pairs, D-native when route-optimised, and T: the leg to the home agent).",
    )
    pg.add_argument("peer", help="an IPv6 address: the home agent, a correspondent, a home address")
    pg.add_argument("-c", "--count", type=int, default=1, help="rounds, a second apart (default 1)")
    pg.add_argument(
        "--path",
        choices=("T-native", "T-udp", "T", "D-udp", "D-native"),
        help="probe this path kind only",
    )
    pg.add_argument("--json", action="store_true", help="stable JSON (docs/cli.md)")
    pg.add_argument("--socket", help="the mobile node's control socket (default @mipnode-mn)")
    nc = sub.add_parser(
        "netcheck",
        help="probe the home agent on every home path from this host, without a daemon",
        description="Probe the home agent of a mobile node's configuration on every home path "
        "kind and family (T-native, and ESP under protection; T-udp to each of its ports over "
        "IPv6 and IPv4), and report which answer and how fast, the NAT in between, the path "
        "MTU, and the path a daemon would pick. At most three tries per probe and about five "
        "seconds; T-native needs root (raw sockets).",
    )
    nc.add_argument(
        "--config",
        "-c",
        default="/etc/mipnode/mn.toml",
        help="the mobile node's TOML configuration (default /etc/mipnode/mn.toml)",
    )
    nc.add_argument("--json", action="store_true", help="stable JSON (docs/cli.md)")
    lab = sub.add_parser("lab", help="firewall scenarios in network namespaces (docs/lab.md)")
    lab.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "up", "down", "list"),
        help="run the scenarios (default), list them, keep one up, or take one down",
    )
    lab.add_argument("run_id", nargs="?", help="down: the run id `lab up` printed")
    lab.add_argument("--all", action="store_true", help="down: every topology the lab left up")
    lab.add_argument(
        "--scenario",
        "-s",
        action="append",
        help="built-in scenario name or a scenario .toml file (repeatable; docs/lab.md)",
    )
    lab.add_argument("--repeat", type=int, default=1, help="run everything N times")
    lab.add_argument(
        "--compare-protection",
        action="store_true",
        help='after each protected run, the same scenario with protection = "none" '
        "(its throughput is shown next to the protected one)",
    )
    lab.add_argument("--json", action="store_true", help="JSON report (docs/lab.md)")
    lab.add_argument("--verbose", "-v", action="store_true", help="show daemon logs")
    lab.add_argument(
        "--pcap",
        metavar="DIR",
        help="write a pcap per link of every run into DIR/<scenario>[-run<N>]/ (Wireshark)",
    )
    lab.add_argument(
        "--report",
        metavar="DIR",
        help="write DIR/index.html: a self-contained HTML report with a timeline per run",
    )
    bench = sub.add_parser(
        "bench", help="throughput, packet rate, RTT and CPU of every path (docs/performance.md)"
    )
    bench.add_argument(
        "--path",
        action="append",
        help="T-native, T-udp, T-udp-v4, D-udp, D-native or kernel (repeatable; default all)",
    )
    bench.add_argument(
        "--protection", choices=("esp", "none", "both"), default="both", help="default: both"
    )
    bench.add_argument("--seconds", type=float, default=3.0, help="per iperf3 test (default 3)")
    bench.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    bench.add_argument(
        "--control-mns",
        type=int,
        action="append",
        help="time the HA core with N mobile nodes (repeatable; default 10000 and 100000; "
        "0 skips it)",
    )
    bench.add_argument(
        "--cluster-mns",
        type=int,
        default=10_000,
        help="the binding cache of a home-agent cluster through a real etcd with N mobile "
        "nodes (default 10000; 0 skips it)",
    )
    bench.add_argument("--json", action="store_true", help="stable JSON (docs/performance.md)")
    comp = sub.add_parser(
        "completion",
        help="print a shell completion script: source <(mipnode completion bash)",
    )
    comp.add_argument("shell", choices=("bash",), help="the shell (bash)")
    cli_help.apply(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ROLES:
        return run_daemon(args.command, args.config, args.verbose)
    if args.command in ("status", "bindings", "paths"):
        return inspect(args.command, args.json, args.socket)
    if args.command == "ping":
        if not 1 <= args.count <= 3600:
            fail("ping: --count must be 1 to 3600")
        return ping(args.peer, args.count, args.path, args.json, args.socket)
    if args.command == "netcheck":
        return netcheck(args.config, args.json)
    if args.command == "completion":
        from mipnode.completion import bash_script
        from mipnode.lab.runner import SCENARIOS

        print(bash_script(build_parser(), [sc.name for sc in SCENARIOS]), end="")
        return 0
    if args.command == "bench":
        from mipnode.lab.cli import run_bench_command

        return run_bench_command(args)
    from mipnode.lab.cli import run_lab_command

    return run_lab_command(args)


if __name__ == "__main__":
    sys.exit(main())
