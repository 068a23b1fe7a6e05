"""A receive queue of its own for connectivity checks and signalling on every UDP port.

A UDP port of mipnode carries data (ESP-in-UDP, or whole IPv6 packets) and, on the same 5-tuple,
the STUN checks and heartbeats that keep the path alive (DESIGN §3: a check must travel exactly
like the data it vouches for, so it cannot move to another port). When a data flood fills the
socket's receive buffer faster than the daemon drains it, the kernel drops whatever arrives
next, and a heartbeat answer is as likely to be dropped as a data packet: a path then "dies"
because it is busy.

So each data socket gets a sibling: a second socket bound to the same address and port with
SO_REUSEPORT (socket(7)), and a classic BPF program on the pair (SO_ATTACH_REUSEPORT_CBPF,
Linux >= 4.5) that the kernel runs on every arriving datagram, with the UDP payload at offset
0, to pick the socket: STUN (top two bits 00 and the magic cookie, RFC 8489 §5) and Mobility
Header signalling in clear (an IPv6 packet whose next header is 135, RFC 6275 §6.1) go to the
lane; everything else -- data, ESP -- to the data socket. The two sockets have separate buffers,
so the flood overflows only its own; the daemon reads both with the same handler, so a datagram
steered to the "wrong" queue is still handled exactly as before. Outside the lane stay signalling
sealed in ESP (BU/BA refreshes on a protected path: the RFC 6275 §11.8 retransmissions cover
those) and T-native (a raw socket per protocol, no reuseport group).

Where the receiving interface coalesces UDP (GRO), a check right behind a run of data of the
same flow may be merged onto that run; the program sees only its first datagram, so that check
shares the data socket's fate. Two things the kernel does not steer by the program, and how the
daemon copes:
- ICMP errors for what we sent are matched to a socket without the packet at hand, so by a hash
  of the addresses and ports: either socket may get them. The lane has the error queue on too,
  and the daemon reads it as the data socket's.
- UDP GRO looks up the socket the same way; the lane has GRO on as well, so a flow is coalesced
  whichever socket that hash names (a socket without GRO turns coalescing off for the flow).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

from mipnode.drivers.io import copy_freebind, new_udp_socket

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
LANE_INDEX = 1  # the order sockets joined the group: the data socket first, then the lane
log = logging.getLogger("mipnode.lane")
_REFUSALS: set[str] = set()  # what a kernel refused, logged once per reason
# For `status` (offloads): lanes opened and refused, and the datagrams that came through them.
LANE_STATS: dict[str, int] = {"check_lanes": 0, "check_lanes_refused": 0, "lane_datagrams": 0}

# Classic BPF (linux/filter.h): opcode, jump if true, jump if false (relative to the next
# instruction), constant. A load past the end of the datagram ends the program with 0 (data).
_LD_B_ABS, _LD_W_ABS, _ALU_AND_K = 0x30, 0x20, 0x54
_JEQ_K, _JSET_K, _RET_K = 0x15, 0x45, 0x06
STUN_MAGIC_COOKIE = 0x2112A442
NH_MH = 135
_PROGRAM = (
    (_LD_B_ABS, 0, 0, 0),  # 0: A = first octet
    (_JSET_K, 2, 0, 0xC0),  # 1: top two bits set? not STUN: look for IPv6 (4)
    (_LD_W_ABS, 0, 0, 4),  # 2: A = octets 4-7
    (_JEQ_K, 5, 4, STUN_MAGIC_COOKIE),  # 3: the cookie: lane (9), else data (8)
    (_ALU_AND_K, 0, 0, 0xF0),  # 4: A = version nibble
    (_JEQ_K, 0, 2, 0x60),  # 5: IPv6? (6) else data (8)
    (_LD_B_ABS, 0, 0, 6),  # 6: A = next header
    (_JEQ_K, 1, 0, NH_MH),  # 7: a Mobility Header: lane (9), else data (8)
    (_RET_K, 0, 0, 0),  # 8: the data socket
    (_RET_K, 0, 0, LANE_INDEX),  # 9: the lane
)


def steers_to_lane(payload: bytes) -> bool:
    """What the program decides for ``payload``, in Python (for tests and the docs)."""
    if not payload:
        return False
    if payload[0] & 0xC0:
        return len(payload) >= 7 and payload[0] >> 4 == 6 and payload[6] == NH_MH
    return len(payload) >= 8 and int.from_bytes(payload[4:8], "big") == STUN_MAGIC_COOKIE


def attach_program(sock: socket.socket) -> None:
    """Attach the steering program to ``sock``'s reuseport group (raises OSError if refused)."""
    filters = (ctypes.c_uint8 * (8 * len(_PROGRAM)))()
    for i, insn in enumerate(_PROGRAM):
        struct.pack_into("=HBBI", filters, 8 * i, *insn)
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}: native alignment.
    fprog = struct.pack("@HP", len(_PROGRAM), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def open_lane(data: socket.socket, ifname: str | None = None) -> socket.socket | None:
    """The lane of ``data`` (a bound UDP socket opened with SO_REUSEPORT), or None when this
    kernel refuses the pair (one log line per reason; the port then works as before)."""
    lane: socket.socket | None = None
    try:
        lane = new_udp_socket(data.family, ifname)
        copy_freebind(data, lane)  # a cluster's address this node does not hold yet
        lane.bind(data.getsockname())
        attach_program(data)
    except OSError as exc:
        if lane is not None:
            lane.close()
        LANE_STATS["check_lanes_refused"] += 1
        reason = exc.strerror or str(exc)
        if reason not in _REFUSALS:
            _REFUSALS.add(reason)
            log.warning(
                "no separate queue for checks on %s (%s): they share the data socket's",
                data.getsockname(),
                reason,
            )
        return None
    LANE_STATS["check_lanes"] += 1
    return lane
