"""The long `--help` of every `mipnode` command, written like a manual page: what it does,
examples, files, exit status and where the details are. Kept apart from the parser so
cli.py stays the map of commands and options."""

from __future__ import annotations

import argparse

EXIT = """exit status:
  0   success
  1   {one}
  2   bad usage, bad configuration, missing privileges or a missing TUN device"""

SEE_ALSO = "see also: the docs/ directory of the mipnode source ({pages})"

TOP_DESCRIPTION = """\
mipnode keeps a mobile host reachable at a stable IPv6 home address while it moves (Mobile
IPv6, RFC 6275, in user space), and finds the path that actually crosses the firewalls and
NATs in between: natively tunnelled (T-native), UDP-encapsulated (T-udp), or direct to the
correspondent (D-udp, D-native). One program runs as mobile node, home agent or
correspondent node; the others inspect a running daemon or reproduce firewall scenarios."""

TOP_EPILOG = """\
typical use:
  mipnode netcheck                       which home paths work from this network
  mipnode mn --config /etc/mipnode/mn.toml
  mipnode status; mipnode paths          what the daemon in this namespace does
  mipnode ping 2001:db8:c::2 -c 5        the round trip of every path to a peer
  mipnode lab                            every firewall scenario in network namespaces

`mipnode COMMAND --help` describes each command."""

PAGES: dict[str, tuple[str, str, str]] = {
    # command: (description, epilog examples and files, what exit status 1 means)
    "mn": (
        "Run the mobile node in the foreground: create the TUN device with the home address, "
        "route the host's IPv6 traffic into it, register with the home agent over the best "
        "home path (T-native or T-udp, checked like ICE), keep that path alive, move with the "
        "default route, and offer correspondents direct paths. Stops on SIGTERM or Ctrl-C "
        "after deregistering. Needs root or CAP_NET_ADMIN and CAP_NET_RAW.",
        "examples:\n  mipnode mn --config /etc/mipnode/mn.toml\n"
        "  systemctl enable --now mipnode-mn\n\n"
        "files:\n  /etc/mipnode/mn.toml   the configuration (docs/configuration.md)\n"
        "  control socket @mipnode-mn (abstract, per network namespace)",
        "the daemon stopped on an error",
    ),
    "ha": (
        "Run the home agent in the foreground: accept authenticated Binding Updates (RFC "
        "4285) from the mobile nodes of its configuration, tunnel their home addresses over "
        "the path each registered on, answer their path checks on its STUN and UDP ports, and "
        "keep the binding cache in state_dir across restarts.",
        "examples:\n  mipnode ha --config /etc/mipnode/ha.toml\n\n"
        "files:\n  /etc/mipnode/ha.toml   the configuration (docs/configuration.md)\n"
        "  control socket @mipnode-ha",
        "the daemon stopped on an error",
    ),
    "cn": (
        "Run a correspondent node in the foreground: answer mobile nodes' direct-path offers "
        "(D-udp, ESP-sealed) and route optimisation (D-native, RFC 6275 return routability), "
        "so their traffic can bypass the home agent.",
        "examples:\n  mipnode cn --config /etc/mipnode/cn.toml\n\n"
        "files:\n  control socket @mipnode-cn",
        "the daemon stopped on an error",
    ),
    "status": (
        "Show what the daemons of this network namespace are doing: role, registration "
        "state, access network, every home path candidate with its checks and RTT, the "
        "diagnosis when something is wrong, and drop counters by reason.",
        "examples:\n  mipnode status\n  ip netns exec NS mipnode status --json\n"
        "  mipnode status --socket @mipnode-ha",
        "no daemon answers in this namespace",
    ),
    "bindings": (
        "Show one line per binding: home address, care-of address, the path it uses, the "
        "sequence number and the lifetime left (the home agent's binding cache, or the mobile "
        "node's own registration).",
        "examples:\n  mipnode bindings\n  mipnode bindings --json",
        "no daemon answers in this namespace",
    ),
    "paths": (
        "Show, per peer, the path data takes now, every candidate pair with its state, RTT "
        "and checks, and the last path changes with their reasons.",
        "examples:\n  mipnode paths\n  mipnode paths --json",
        "no daemon answers in this namespace",
    ),
    "ping": (
        "",  # the parser's own description (cli.py)
        "examples:\n  mipnode ping 2001:db8:1::1            the home agent: T-native, T-udp\n"
        "  mipnode ping 2001:db8:c::2 -c 10      a correspondent: D-udp, D-native, T\n"
        "  mipnode ping 2001:db8:c::2 --path D-udp --json",
        "no path answered, or no mobile node daemon runs in this namespace",
    ),
    "netcheck": (
        "",
        "examples:\n  mipnode netcheck\n  mipnode netcheck --config ./mn.toml --json\n\n"
        "files:\n  /etc/mipnode/mn.toml   the mobile node's configuration (home agent, ports,\n"
        "                         key: the ESP probe's answer is verified with it)",
        "no home path would work from here, or this host refused a socket",
    ),
    "lab": (
        "Build RFC 4487 firewall scenarios out of network namespaces, veth links and nftables "
        "on this machine, run real mipnode daemons and real traffic through them, and check "
        "that each ends on the path it should (and how fast it got there). `run` (the "
        "default) runs the scenarios and prints a table; `list` names them; `up` keeps one "
        "topology running for manual work and `down RUNID` removes it. Needs root. Creates "
        "only namespaces named mipl-RUNID-* and removes them, also on failure.",
        "examples:\n  mipnode lab                          every built-in scenario\n"
        "  mipnode lab -s strict-fw -s nat66    two of them\n"
        "  mipnode lab -s my-firewall.toml      a scenario file of your own\n"
        "  mipnode lab --repeat 5 --json        the spread over five runs, as JSON\n"
        "  mipnode lab --pcap /tmp/p --report /tmp/r   pcaps and an HTML report\n"
        "  mipnode lab up -s stateful-fw; mipnode lab down RUNID",
        "a scenario failed",
    ),
    "bench": (
        "Measure every path in lab topologies with iperf3: TCP both ways, the 64-byte UDP "
        "packet rate, RTT and each daemon's CPU, with and without protection, against the "
        "kernel forwarding through the same namespaces, in alternating rounds; then the home "
        "agent's control plane with many mobile nodes. A benchmark: numbers, no verdict. "
        "Needs root; run it on an otherwise idle machine.",
        "examples:\n  mipnode bench\n  mipnode bench --path T-udp --protection esp --rounds 5\n"
        "  mipnode bench --control-mns 0 --cluster-mns 0 --json",
        "a topology could not be built or a tool failed",
    ),
    "completion": (
        "Print a shell completion script for mipnode, written from its own argument parser: "
        "subcommands, options, choices, file names after --config, --pcap and --report, and "
        "scenario names after lab -s.",
        "examples:\n  source <(mipnode completion bash)\n"
        "  mipnode completion bash > /etc/bash_completion.d/mipnode",
        "(never)",
    ),
}

DOC_PAGES = {
    "mn": "configuration.md, operating.md",
    "ha": "configuration.md, operating.md",
    "cn": "configuration.md",
    "status": "cli.md, operating.md",
    "bindings": "cli.md",
    "paths": "cli.md, operating.md",
    "ping": "cli.md",
    "netcheck": "cli.md, operating.md",
    "lab": "lab.md",
    "bench": "performance.md",
    "completion": "cli.md",
}


def apply(parser: argparse.ArgumentParser) -> None:
    """Give the parser and every subcommand its manual-page text."""
    parser.description = TOP_DESCRIPTION
    parser.epilog = TOP_EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        description, examples, one = PAGES[name]
        if description:
            command.description = description
        pages = SEE_ALSO.format(pages=DOC_PAGES[name])
        command.epilog = f"{examples}\n\n{EXIT.format(one=one)}\n\n{pages}"
        command.formatter_class = _Formatter


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The description as a wrapped paragraph, the epilog as written (examples line up)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(("examples:", "files:")) or "\n  " in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)
