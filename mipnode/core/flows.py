"""Which flows of a mobile node may take the D-native path back to it (pure: no I/O, no clock).

Theory of operation. A firewall in front of the mobile node keeps state for the flows the mobile
node starts and admits from outside only packets that match such state (RFC 4487 §5.1, I2/I4).
A D-native packet from the MN (care-of address, Home Address option) creates that state for its
own flow, keyed by the outer addresses and the upper-layer ports or echo identifier; the
checksum rules of RFC 6275 §6.3/§6.4 aside, a type 2 routing header reply on *that* flow then
crosses the firewall. A packet of any other flow sent with an RH2 to the care-of address is
unsolicited there and is dropped: it must take the normal way to the home address, through the
home agent, whose tunnel the MN keeps open.

So the correspondent remembers, per flow, that the MN sent it D-native (:meth:`FlowTable.record`)
and sends a packet with an RH2 only when its flow is remembered (:meth:`FlowTable.is_live`). A
flow is identified by :class:`FlowKey`:

- TCP, UDP, DCCP, SCTP, UDP-Lite: (HoA, protocol, CN port, MN port);
- ICMPv6 echo: (HoA, 58, identifier) with the identifier on the side of the node that sent the
  request, so a ping the CN starts never matches one the MN started with the same identifier;
- anything else: (HoA, protocol) alone.

:func:`flow_key_untrusted` reads the key from a packet in either direction, behind any
hop-by-hop, routing, destination-options and fragment headers; the HoA is the source (from the
MN) or destination (to the MN), or the address in the HAO / RH2 when the packet carries one.

The mobile node keeps the mirror image. The answer to the first packet of a flow the CN opens
(a TCP SYN-ACK, an echo reply) is invalid to a stateful firewall when it is the first packet of
that flow the firewall sees, and from the care-of address with an HAO it is: the firewall would
drop it. So the MN records the flows the CN opens through the tunnel or D-udp
(:func:`opened_by_cn_untrusted`) and answers them the way they came; the CN, seeing no HAO on
them, keeps them off the RH2 path as well.

Entries expire :data:`FLOW_IDLE_S` after the last D-native packet of their flow (driven by the
``now`` the caller passes) and the table holds at most :data:`MAX_FLOWS`, the least recently
refreshed evicted first: an evicted or expired flow only falls back to the home agent until the
MN's next packet on it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import NamedTuple

from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import (
    ROUTING_TYPE_2,
    parse_destination_options_untrusted,
    parse_rh2_untrusted,
)
from mipnode.wire.ipv6 import (
    IPV6_HEADER_LENGTH,
    MAX_EXTENSION_HEADERS,
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    NH_ROUTING,
    NH_TCP,
    NH_UDP,
)

# Specification constants.
NH_DCCP = 33
NH_SCTP = 132
NH_UDPLITE = 136
# Upper layers with a 16-bit source and destination port in their first four octets.
PORTED_PROTOCOLS = frozenset({NH_TCP, NH_UDP, NH_DCCP, NH_SCTP, NH_UDPLITE})
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

# Implementation constants.
MAX_FLOWS = 4096
# Linux conntrack forgets a one-way UDP flow and an ICMPv6 echo after 30 s
# (nf_conntrack_udp_timeout, nf_conntrack_icmpv6_timeout): a reply later than that would be
# unsolicited again, so a flow is D-native only that long after the MN last sent on it.
FLOW_IDLE_S = 30.0
# Flows the CN opened stay off D-native this long after their last packet: only a bound on the
# table, since they work through the tunnel; when it ends, an idle TCP connection may move to
# D-native mid-stream (Linux conntrack picks that up, nf_conntrack_tcp_loose).
CN_OPENED_IDLE_S = 600.0
NO_ID = -1  # a FlowKey field with no port or identifier

_EXTENSION_HEADERS = frozenset({NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS})
_PORTS = struct.Struct("!HH")
_TCP_SYN = 0x02
_TCP_ACK = 0x10
_FRAGMENT_OFFSET = struct.Struct("!H")


class FlowKey(NamedTuple):
    """One flow between a correspondent and a home address, the same in both directions.

    ``cn_id``/``mn_id`` are the CN's and the MN's port, or for an echo the identifier on the
    side of the requester (:data:`NO_ID` on the other); both are :data:`NO_ID` for protocols
    keyed by the protocol alone.
    """

    home_address: bytes
    protocol: int
    cn_id: int
    mn_id: int


def flow_key_untrusted(packet: bytes, *, from_mn: bool) -> FlowKey:
    """The flow of an IPv6 ``packet`` sent by the mobile node (``from_mn``) or to it.

    Raises:
        BadPacket: ``truncated``/``bad_version``/``bad_length`` for a broken IPv6 header,
            ``bad_exthdr`` for too many extension headers, ``truncated`` for an extension
            header or upper-layer header cut short, and whatever the HAO / RH2 parsers raise
            for a malformed one.
    """
    home, protocol, offset, end = _walk_untrusted(packet, from_mn)
    if offset < 0:  # a later fragment
        return FlowKey(home, protocol, NO_ID, NO_ID)
    return _upper_key(home, protocol, packet[offset : min(end, offset + 6)], from_mn)


def opened_by_cn_untrusted(packet: bytes) -> FlowKey | None:
    """The flow ``packet`` (CN -> MN, as it reaches the MN's TUN: without an RH2) opens when it
    is a TCP SYN or an ICMPv6 echo request, else None.

    A stateful firewall takes the answers to these (a SYN-ACK, an echo reply) for invalid when
    they are the first packets of a flow it sees, which an HAO answer from the care-of address
    is: the MN must answer such a flow the way it came, not D-native (RFC 4487 §5.1). Other
    protocols need no such care: any first UDP packet, for one, creates state.

    Raises:
        BadPacket: as :func:`flow_key_untrusted`.
    """
    home, protocol, offset, end = _walk_untrusted(packet, False)
    if offset < 0:
        return None
    if protocol == NH_TCP:
        if end - offset < 14:
            raise BadPacket("truncated", "TCP header")
        if packet[offset + 13] & (_TCP_SYN | _TCP_ACK) != _TCP_SYN:
            return None
    elif protocol != NH_ICMPV6 or end - offset < 1 or packet[offset] != ICMPV6_ECHO_REQUEST:
        return None
    return _upper_key(home, protocol, packet[offset : min(end, offset + 6)], False)


def _walk_untrusted(packet: bytes, from_mn: bool) -> tuple[bytes, int, int, int]:
    """(HoA, upper-layer protocol, its offset, end of the payload) after the extension headers;
    the offset is -1 for a later fragment, whose protocol is the fragment header's."""
    if len(packet) < IPV6_HEADER_LENGTH:
        raise BadPacket("truncated", f"{len(packet)} octets, IPv6 header needs 40")
    if packet[0] >> 4 != 6:
        raise BadPacket("bad_version", f"version {packet[0] >> 4}")
    end = IPV6_HEADER_LENGTH + int.from_bytes(packet[4:6], "big")
    if end > len(packet):
        raise BadPacket("bad_length", "payload length beyond the packet")
    home = packet[8:24] if from_mn else packet[24:40]
    protocol, offset, walked = packet[6], IPV6_HEADER_LENGTH, 0
    while protocol in _EXTENSION_HEADERS:
        if walked == MAX_EXTENSION_HEADERS:
            raise BadPacket("bad_exthdr", "too many extension headers")
        walked += 1
        if end - offset < 8:
            raise BadPacket("truncated", "extension header")
        length = 8 if protocol == NH_FRAGMENT else (packet[offset + 1] + 1) * 8
        if end - offset < length:
            raise BadPacket("truncated", f"extension header of {length} octets")
        header = packet[offset : offset + length]
        if protocol == NH_FRAGMENT and _FRAGMENT_OFFSET.unpack_from(header, 2)[0] >> 3:
            # A later fragment carries no upper-layer header: its ports are unknown.
            return home, header[0], -1, end
        home = _home_address_in(protocol, header, from_mn) or home
        protocol, offset = header[0], offset + length
    return home, protocol, offset, end


def _home_address_in(protocol: int, header: bytes, from_mn: bool) -> bytes | None:
    """The HoA an HAO (from the MN, RFC 6275 §6.3) or RH2 (to it, §6.4) names, if any."""
    if from_mn and protocol == NH_DSTOPTS:
        hoa = parse_destination_options_untrusted(header).home_address
        return None if hoa is None else hoa.packed
    if not from_mn and protocol == NH_ROUTING and header[2] == ROUTING_TYPE_2:
        return parse_rh2_untrusted(header).home_address.packed
    return None


def _upper_key(home: bytes, protocol: int, upper: bytes, from_mn: bool) -> FlowKey:
    """The key from the first (up to six) octets of the upper-layer header ``upper``."""
    if protocol in PORTED_PROTOCOLS:
        if len(upper) < 4:
            raise BadPacket("truncated", f"protocol {protocol} ports")
        src, dst = _PORTS.unpack_from(upper)
        return FlowKey(home, protocol, dst, src) if from_mn else FlowKey(home, protocol, src, dst)
    if protocol == NH_ICMPV6 and upper[:1] in (b"\x80", b"\x81"):
        if len(upper) < 6:
            raise BadPacket("truncated", "echo identifier")
        ident = int.from_bytes(upper[4:6], "big")
        # The requester is the MN for its requests and for the replies it receives.
        mn_requested = (upper[0] == ICMPV6_ECHO_REQUEST) == from_mn
        if mn_requested:
            return FlowKey(home, NH_ICMPV6, NO_ID, ident)
        return FlowKey(home, NH_ICMPV6, ident, NO_ID)
    return FlowKey(home, protocol, NO_ID, NO_ID)


class FlowTable:
    """Flows with the time each was last refreshed (at the CN: the MN's last D-native packet on
    it; at the MN: the last packet of a flow the CN opened).

    Bounded by ``max_flows`` (least recently refreshed evicted first); an entry is live for
    ``idle_s`` after its last :meth:`record`. ``now`` is any monotonic clock of the caller.
    """

    def __init__(self, max_flows: int = MAX_FLOWS, idle_s: float = FLOW_IDLE_S) -> None:
        if max_flows < 1 or not idle_s > 0:
            raise ValueError("a flow table needs room for a flow and a positive idle time")
        self.max_flows = max_flows
        self.idle_s = idle_s
        # Ordered by last refresh, oldest first: expiry and eviction both pop from the front.
        self._last: OrderedDict[FlowKey, float] = OrderedDict()
        self.recorded = 0
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._last)

    def record(self, now: float, key: FlowKey) -> None:
        """The MN sent a D-native packet on ``key``'s flow at ``now``."""
        last = self._last
        if key in last:
            last.move_to_end(key)
        else:
            self.recorded += 1
        last[key] = now
        self._expire(now)
        while len(last) > self.max_flows:
            last.popitem(last=False)
            self.evicted += 1

    def is_live(self, now: float, key: FlowKey) -> bool:
        """True when the MN sent on ``key``'s flow within the last ``idle_s``."""
        seen = self._last.get(key)
        if seen is None:
            return False
        if now - seen > self.idle_s:
            del self._last[key]
            self.expired += 1
            return False
        return True

    def forget(self, home_address: bytes) -> int:
        """Drop every flow of ``home_address`` (its binding ended or moved to another care-of
        address, behind which no firewall has seen these flows); return how many."""
        gone = [key for key in self._last if key.home_address == home_address]
        for key in gone:
            del self._last[key]
        return len(gone)

    def live_flows(self, now: float, home_address: bytes) -> int:
        """How many flows of ``home_address`` are live at ``now`` (a scan: for inspection)."""
        return sum(
            1
            for key, seen in self._last.items()
            if key.home_address == home_address and now - seen <= self.idle_s
        )

    def statistics(self, now: float) -> dict[str, int]:
        self._expire(now)
        return {
            "flows": len(self._last),
            "max_flows": self.max_flows,
            "recorded": self.recorded,
            "evicted": self.evicted,
            "expired": self.expired,
        }

    def _expire(self, now: float) -> None:
        last = self._last
        while last:
            key, seen = next(iter(last.items()))
            if now - seen <= self.idle_s:
                return
            del last[key]
            self.expired += 1


class CnOpenedFlows:
    """The mobile node's side: flows a correspondent opened through the tunnel or D-udp are
    answered the way they came, never D-native (module docstring; RFC 4487 §5.1)."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        self.table = FlowTable(max_flows, CN_OPENED_IDLE_S)

    def note_untrusted(self, now: float, inner: bytes) -> None:
        """A packet delivered to us: remember the flow when it opens one (TCP SYN, echo
        request); anything unparseable is delivered all the same, and not remembered."""
        # Most packets tell at octet 6 (and, for TCP, at its flags) that they open nothing:
        # only a SYN, an echo request or extension headers need the walk below.
        if len(inner) >= 54:
            nh = inner[6]
            if nh == NH_UDP or (nh == NH_TCP and inner[53] & (_TCP_SYN | _TCP_ACK) != _TCP_SYN):
                return
        try:
            key = opened_by_cn_untrusted(inner)
        except BadPacket:
            return
        if key is not None:
            self.table.record(now, key)

    def opened_by_cn(self, now: float, packet: bytes) -> bool:
        """Our ``packet`` belongs to a live flow a correspondent opened (and refreshes it)."""
        if not self.table:
            return False
        try:
            key = flow_key_untrusted(packet, from_mn=True)
        except BadPacket:
            return False
        if not self.table.is_live(now, key):
            return False
        self.table.record(now, key)
        return True
