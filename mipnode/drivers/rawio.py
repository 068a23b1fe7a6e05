"""Kernel plumbing for route-optimised (D-native) packets on a kernel without MIPv6.

- Receive: an AF_PACKET tap sees packets with a destination options header (HAO), a routing
  header (RH2) or a Mobility Header before netfilter does; an nft prerouting drop in our own
  table then stops the kernel from answering them with Parameter Problem (reference/linux.md §4,
  "nft rules that silence the kernel").
- Send: IPPROTO_RAW with a complete, user-built IPv6 packet (the only way to emit an HAO or RH2
  without the kernel's MIP6 module).
- A check lane per tap (:func:`open_tap_pair`), the D-native counterpart of drivers/check_lane.py:
  a second tap whose kernel filter takes only route-optimisation signalling and mipnode's
  D-native probes and their answers (with its own, default-sized receive queue), while the
  data tap's filter leaves exactly those out (and, like the lane's, drops a packet too short
  to hold the octet it reads: a header shorter than its own 24 octets, a truncated echo). Both
  are read by the same handler; the lane's queue is never filled by a data flood, which would
  otherwise drop the probes that keep a busy D-native path alive (core/d_native.py: silence
  for DEAD_AFTER_S ends the path).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import subprocess
from typing import Any

from mipnode.drivers.io import SO_BINDTODEVICE, grow_buffers
from mipnode.wire.exthdr import ROUTING_TYPE_2
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_ICMPV6, NH_MH, NH_ROUTING
from mipnode.wire.packets import D_NATIVE_PROBE_IDENT, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST

ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26

# Classic BPF over the network header (SOCK_DGRAM taps start at the IPv6 header):
#   A = next header (octet 6); accept if 60, 43 or 135; else drop. The filter runs in the kernel,
#   so ordinary traffic never wakes the daemon.
_FILTER = (
    (0x30, 0, 0, 6),  # ldb [6]
    (0x15, 3, 0, NH_DSTOPTS),  # jeq #60 -> accept
    (0x15, 2, 0, NH_ROUTING),  # jeq #43 -> accept
    (0x15, 1, 0, NH_MH),  # jeq #135 -> accept
    (0x06, 0, 0, 0),  # ret #0
    (0x06, 0, 0, 0xFFFF),  # ret #65535
)


SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # classic BPF ancillary load: the packet's type
Insn = tuple[int, int, int, int]
LDB, LDH, LDW, JEQ, RET = 0x30, 0x28, 0x20, 0x15, 0x06
# The layouts mipnode's own nodes send (wire/exthdr.py): a type 2 routing header or a
# destination options header holding only the Home Address option, 24 octets each (Hdr Ext Len
# 2), so the upper layer starts at octet 64. Another layout is not steered: it stays on the
# data tap, handled as before.
_EXT_LEN_24 = 2


def assemble(program: list[tuple[Any, ...]]) -> tuple[Insn, ...]:
    """Classic BPF from ``(code, jt, jf, k)`` rows whose jump targets may be label names, and
    ``("label", name)`` rows; jumps are relative to the next instruction (linux/filter.h)."""
    labels: dict[str, int] = {}
    rows: list[tuple[Any, ...]] = []
    for row in program:
        if row[0] == "label":
            labels[row[1]] = len(rows)
        else:
            rows.append(row)

    def offset(target: int | str, i: int) -> int:
        return labels[target] - i - 1 if isinstance(target, str) else target

    return tuple(
        (code, offset(jt, i), offset(jf, i), k) for i, (code, jt, jf, k) in enumerate(rows)
    )


def tap_program(*, lane: bool) -> tuple[Insn, ...]:
    """The filter of a tap (``lane`` False) or of its check lane (True). The lane takes: a
    Mobility Header straight after the IPv6 header (CoTI/CoT, HoTI/HoT), after a type 2 routing
    header (a correspondent's BA or Binding Error) or after a Home Address option (a mobile
    node's BU), and mipnode's D-native probes: an echo request with a Home Address option or an
    echo reply in a type 2 routing header, with the probes' identifier. The lane also leaves out
    our own transmissions. The data tap takes what :data:`_FILTER` takes, less all of that."""
    hit = [(LDW, 0, 0, SKF_AD_PKTTYPE), (JEQ, "no", "yes", PACKET_OUTGOING)]
    miss = [(RET, 0, 0, 0)] if lane else [("label", "plain"), *_FILTER]
    return assemble(
        [
            (LDB, 0, 0, 6),
            (JEQ, "hit", 0, NH_MH),
            (JEQ, "rh", 0, NH_ROUTING),
            (JEQ, "hao", "miss", NH_DSTOPTS),
            ("label", "rh"),
            (LDB, 0, 0, 42),  # routing type
            (JEQ, 0, "miss", ROUTING_TYPE_2),
            (LDB, 0, 0, 41),
            (JEQ, 0, "miss", _EXT_LEN_24),
            (LDB, 0, 0, 40),  # the header after it
            (JEQ, "hit", 0, NH_MH),
            (JEQ, 0, "miss", NH_ICMPV6),
            (LDB, 0, 0, 64),
            (JEQ, "ident", "miss", ICMPV6_ECHO_REPLY),
            ("label", "hao"),
            (LDB, 0, 0, 41),
            (JEQ, 0, "miss", _EXT_LEN_24),
            (LDB, 0, 0, 40),
            (JEQ, "hit", 0, NH_MH),
            (JEQ, 0, "miss", NH_ICMPV6),
            (LDB, 0, 0, 64),
            (JEQ, 0, "miss", ICMPV6_ECHO_REQUEST),
            ("label", "ident"),
            (LDH, 0, 0, 68),
            (JEQ, "hit", "miss", D_NATIVE_PROBE_IDENT),
            ("label", "hit"),
            *(hit if lane else [(RET, 0, 0, 0)]),
            ("label", "yes"),
            (RET, 0, 0, 0xFFFF),
            ("label", "no"),
            (RET, 0, 0, 0),
            ("label", "miss"),
            *miss,
        ]
    )


def steers_to_tap_lane(packet: bytes) -> bool:
    """What :func:`tap_program` decides for an incoming ``packet``, in Python (tests, docs)."""
    if len(packet) < 7:
        return False
    nh = packet[6]
    if nh == NH_MH:
        return True
    if nh == NH_ROUTING and (len(packet) < 43 or packet[42] != ROUTING_TYPE_2):
        return False
    if nh not in (NH_ROUTING, NH_DSTOPTS) or len(packet) < 42 or packet[41] != _EXT_LEN_24:
        return False
    if packet[40] == NH_MH:
        return True
    echo = ICMPV6_ECHO_REPLY if nh == NH_ROUTING else ICMPV6_ECHO_REQUEST
    return (
        packet[40] == NH_ICMPV6
        and len(packet) >= 70
        and packet[64] == echo
        and int.from_bytes(packet[68:70], "big") == D_NATIVE_PROBE_IDENT
    )


def destination_options_filter(address: bytes) -> tuple[tuple[int, int, int, int], ...]:
    """Classic BPF accepting only packets that come in (not our own) to ``address`` with a
    destination options header first (a Home Address option): all a home agent's tap needs."""
    words = struct.unpack("!4I", address)
    program = [(0x30, 0, 0, 6), (0x15, 0, 11, NH_DSTOPTS)]  # ldb [6]; jeq #60 else drop
    for i, word in enumerate(words):  # ld [24 + 4i]; jeq word else drop
        program += [(0x20, 0, 0, 24 + 4 * i), (0x15, 0, 9 - 2 * i, word)]
    program += [
        (0x20, 0, 0, SKF_AD_PKTTYPE),  # ld #pkttype
        (0x15, 1, 0, PACKET_OUTGOING),  # jeq #outgoing -> drop
        (0x06, 0, 0, 0xFFFF),  # ret #65535
        (0x06, 0, 0, 0),  # ret #0
    ]
    return tuple(program)


def open_tap(
    ifname: str | None,
    program: tuple[Insn, ...] = _FILTER,
    *,
    deep: bool = True,
    protocol: int = ETH_P_IPV6,
) -> socket.socket:
    """AF_PACKET tap on ``ifname`` (all interfaces when None) for HAO / RH2 / MH packets, or
    what ``program`` accepts; ``deep``: a data socket's receive buffer (else the default)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(protocol))
    program_bytes = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(program_bytes)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    if ifname:
        sock.bind((ifname, protocol))
    sock.setblocking(False)
    if deep:
        grow_buffers(sock)  # D-native data arrives here: as deep as a data socket
    return sock


def open_tap_pair(ifname: str | None) -> tuple[socket.socket, socket.socket]:
    """A data tap and its check lane (module docstring) on ``ifname``."""
    tap = open_tap(ifname, tap_program(lane=False))
    try:
        return tap, open_tap(ifname, tap_program(lane=True), deep=False)
    except OSError:
        tap.close()
        raise


def is_outgoing(address: tuple[object, ...]) -> bool:
    """AF_PACKET also shows our own transmissions; the address's third field says which."""
    return len(address) > 2 and address[2] == PACKET_OUTGOING


def open_raw_sender(ifname: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setblocking(False)
    grow_buffers(sock)
    if ifname:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
    return sock


class NftError(Exception):
    pass


def table_name(prefix: str, tun_name: str) -> str:
    return prefix + "_" + "".join(c if c.isalnum() else "_" for c in tun_name)


def install_rx_drops(
    table: str,
    *,
    dstopts: bool,
    routing2: bool,
    iifname: str | None = None,
    daddrs: tuple[str, ...] = (),
    l4proto: int | tuple[int, ...] | None = None,
) -> None:
    """Create (or replace) ``inet <table>`` with the prerouting drops for tapped packets,
    limited to what the tap listens to: packets arriving on ``iifname`` for ``daddrs``.

    The table is ours alone: created on start, deleted on exit, and replaced when a crashed run
    left it behind.
    """
    match = ""
    if iifname:
        match += f'iifname "{iifname}" '
    if daddrs:
        match += f"ip6 daddr {{ {', '.join(daddrs)} }} "
    if isinstance(l4proto, tuple):  # the transports after the extension headers
        match += f"meta l4proto {{ {', '.join(map(str, l4proto))} }} "
    elif l4proto is not None:  # the transport after the extension headers (135: the MH)
        match += f"meta l4proto {l4proto} "
    rules = []
    if routing2:
        rules.append(f"meta nfproto ipv6 {match}rt type 2 counter drop")
    if dstopts:
        rules.append(f"meta nfproto ipv6 {match}exthdr dst exists counter drop")
    _own_table(table, "pre", "prerouting priority raw - 10", rules)


def install_forward_guard(table: str, tun_name: str, sources: tuple[str, ...]) -> None:
    """Create (or replace) ``inet <table>``: IPv4 packets from ``sources`` (a mobile router's
    IPv4 networks) are forwarded into ``tun_name`` or dropped, never out of another interface
    (while no IPv4 default route leads into the tunnel they would leave natively, unprotected).
    Ours alone, like the table of :func:`install_rx_drops`."""
    rule = f'meta nfproto ipv4 ip saddr {{ {", ".join(sources)} }} oifname != "{tun_name}" '
    _own_table(table, "guard", "forward priority filter - 10", [rule + "counter drop"])


def _own_table(table: str, chain: str, hook: str, rules: list[str]) -> None:
    """``inet <table>`` with one accepting base chain holding ``rules``, replacing whatever
    a crashed run of ours left under that name."""
    body = "\n".join(f"    {r}" for r in rules)
    script = (
        f"table inet {table}\ndelete table inet {table}\n"
        f"table inet {table} {{\n  chain {chain} {{\n"
        f"    type filter hook {hook}; policy accept;\n{body}\n  }}\n}}\n"
    )
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    except FileNotFoundError:
        raise NftError("nft not found: install nftables (tools/install.sh does)") from None
    if proc.returncode != 0:
        raise NftError(f"nft table {table}: {proc.stderr.strip()}")


def remove_table(table: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # no nft: nothing of ours to remove
        subprocess.run(
            ["nft", "delete", "table", "inet", table], capture_output=True, text=True, check=False
        )
