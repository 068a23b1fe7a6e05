"""TUN offload framing: the virtio-net header, GSO segmentation, GRO-style coalescing (pure).

Theory of operation. A TUN opened with ``IFF_VNET_HDR`` and configured with ``TUNSETOFFLOAD``
(``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6``, plus ``TUN_F_TSO_ECN`` and ``TUN_F_USO4 | TUN_F_USO6``
where wanted) prefixes every packet with the legacy 10-octet ``struct virtio_net_hdr`` (virtio
1.x §5.1.6 "Device Operation"; ``include/uapi/linux/virtio_net.h``) and may hand over:

- a *super-packet* of up to 64 KiB: one IP header and one TCP (or UDP) header followed by the
  payload of many segments, with ``gso_type`` TCPV4 / TCPV6 / UDP_L4 and ``gso_size`` the payload
  octets per segment (the MSS). :func:`segment_untrusted` cuts it into ordinary packets for
  paths that cannot carry it whole (each segment is then encrypted or encapsulated on its own);
- a packet with ``VIRTIO_NET_HDR_F_NEEDS_CSUM`` ("checksum partial", §5.1.6.2): the upper-layer
  checksum field at ``csum_start + csum_offset`` holds the (not inverted) pseudo-header sum, and
  the one's complement sum from ``csum_start`` to the end is still to be added and inverted.
  :func:`complete_checksum` does that.

In the other direction :func:`coalesce_tcp` merges runs of in-order TCP segments of one
connection, as Linux GRO would, into one super-packet written with a TCPV4/TCPV6 header and
NEEDS_CSUM, so the kernel does the per-segment work once for the whole run.

Header encoding. Fields are little-endian: virtio 1.x is little-endian, and the legacy header of
a TUN is in host order, which is the same on x86 and arm64 (a big-endian host must ask for
``TUNSETVNETLE``). Gso type values are the kernel's: NONE 0, TCPV4 1, UDP (UFO) 3, TCPV6 4,
UDP_L4 5, ECN bit 0x80.

Trust. The header and the packet come from the kernel, but nothing is taken on faith: header
lengths are re-derived from the IP and TCP/UDP headers, ``hdr_len`` is only a hint (the kernel
sets it to the linear length of its buffer, which on the forwarding path can be the whole first
packet) that must lie within the packet, and ``csum_start``/``csum_offset`` must point exactly at
the checksum field the packet's own headers locate. Every violation is :class:`BadPacket`; the
reasons are ``truncated``, ``bad_vnet_header`` (unknown flag or GSO type bits, ECN with UDP,
checksum offsets outside the packet or not where the headers put the checksum), ``bad_version``,
``bad_length`` (an IP length field that does not match the buffer, a packet over 65535 +
40 octets), ``bad_gso`` (GSO type not matching the packet, ``gso_size`` 0, no payload, too many
segments, ``hdr_len`` beyond the packet, a fragment, SYN or RST on a super-packet) and
``gso_unsupported`` (UFO, IPv6 routing or fragment headers in a super-packet).

Checksums. A one's complement sum (RFC 1071) of 16-bit words is the number the octets form,
modulo 0xFFFF, because 2**16 == 1 (mod 0xFFFF): ``int.from_bytes(data) % 0xFFFF`` sums a
1400-octet segment in C at about 2.5 us, four times faster than summing an ``array('H')``. Any
even-aligned piece can be summed on its own and the pieces added; a 16-bit field contributes its
value, a 32-bit one (TCP sequence number, pseudo-header length) its value too. Sums here are in
end-around-carry form: 0 only for all-zero data, otherwise 1..0xFFFF; the checksum is the
complement, ``0xFFFF - sum``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

from mipnode.wire.errors import BadPacket

# -- struct virtio_net_hdr (virtio 1.x §5.1.6) --------------------------------------------------

VNET_HEADER_LENGTH = 10
VNET_NONE = bytes(VNET_HEADER_LENGTH)  # no GSO, checksum complete: what a plain packet needs

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1  # checksum partial: csum_start/csum_offset are meaningful
VIRTIO_NET_HDR_F_DATA_VALID = 2  # checksum already verified (receive side; informative here)

VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3  # UFO (IPv4 fragmentation offload): never produced by a TUN since 4.14
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5  # USO: UDP segmentation, IPv4 and IPv6 (Linux 6.2 TUN_F_USO4/6)
VIRTIO_NET_HDR_GSO_ECN = 0x80  # TCP with CWR on the first segment (needs TUN_F_TSO_ECN)

_KNOWN_FLAGS = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
_GSO_TYPES = frozenset(
    {
        VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_GSO_TCPV4,
        VIRTIO_NET_HDR_GSO_UDP,
        VIRTIO_NET_HDR_GSO_TCPV6,
        VIRTIO_NET_HDR_GSO_UDP_L4,
    }
)
_VNET = struct.Struct("<BBHHHH")

# -- limits --------------------------------------------------------------------------------------

# The largest IP packet without a jumbogram: an IPv6 payload of 65535 octets after its 40-octet
# header (RFC 8200 §3). An IPv4 packet is at most 65535 octets in all (RFC 791 Total Length).
MAX_PACKET_LENGTH = 0xFFFF + 40
# Implementation bound on segments per super-packet: 64 KiB at the IPv4 default MSS of 536 is
# 123 segments, and Linux caps UDP GSO at 128 (UDP_MAX_SEGMENTS). The daemon can make the kernel
# respect it with ``ip link set <tun> gso_max_segs 128``.
MAX_SEGMENTS = 128
# Largest coalesced IP packet (Linux GRO stops below gro_max_size = 65536 octets, IP header
# included); for IPv4 it is also the Total Length limit.
MAX_COALESCED_LENGTH = 0xFFFF

_PROTO_TCP = 6
_PROTO_UDP = 17
_NH_HOPOPTS = 0
_NH_DSTOPTS = 60
_MAX_EXTENSION_HEADERS = 8
_TCP_CSUM = 16  # offset of the checksum in the TCP header (RFC 9293 §3.1)
_UDP_CSUM = 6  # offset of the checksum in the UDP header (RFC 768)

_FIN, _SYN, _RST, _PSH, _ACK, _URG, _ECE, _CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U16U16 = struct.Struct("!HH")

Buffer = bytes | bytearray | memoryview


class VnetHeader(NamedTuple):
    """The legacy ``struct virtio_net_hdr`` (virtio 1.x §5.1.6), fields as integers.

    A NamedTuple rather than a dataclass: one is built per TUN read, on the hot path.
    """

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def to_bytes(self) -> bytes:
        """Encode the 10 octets (see :func:`build_vnet`)."""
        return build_vnet(*self)


def build_vnet(
    flags: int = 0,
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    """Encode a virtio-net header (little-endian; ``build_vnet()`` is :data:`VNET_NONE`).

    Raises:
        ValueError: a field does not fit its width.
    """
    try:
        return _VNET.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    except struct.error as exc:
        raise ValueError(str(exc)) from exc


def _check_vnet(header: VnetHeader) -> int:
    """The GSO type of ``header`` without the ECN bit, after checking flags and type bits."""
    if header.flags & ~_KNOWN_FLAGS:
        raise BadPacket("bad_vnet_header", f"unknown flags {header.flags:#x}")
    gso_type = header.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso_type not in _GSO_TYPES or header.gso_type < 0:
        raise BadPacket("bad_vnet_header", f"unknown GSO type {header.gso_type:#x}")
    if header.gso_type & VIRTIO_NET_HDR_GSO_ECN and gso_type not in (
        VIRTIO_NET_HDR_GSO_TCPV4,
        VIRTIO_NET_HDR_GSO_TCPV6,
    ):
        raise BadPacket("bad_vnet_header", "ECN bit without TCP segmentation")
    return gso_type


def parse_vnet_untrusted(buf: Buffer) -> tuple[VnetHeader, memoryview]:
    """Split one TUN read into its virtio-net header and the packet after it (not copied).

    Only the header itself is judged here (flag and GSO type bits); what it says about the
    packet is checked by :func:`segment_untrusted` / :func:`complete_checksum`.

    Raises:
        BadPacket: ``truncated`` (fewer than 10 octets) or ``bad_vnet_header``.
    """
    if len(buf) < VNET_HEADER_LENGTH:
        raise BadPacket("truncated", f"{len(buf)} octets, virtio-net header needs 10")
    header = VnetHeader._make(_VNET.unpack_from(buf))
    _check_vnet(header)
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return header, view[VNET_HEADER_LENGTH:]


# -- checksums (RFC 1071) ------------------------------------------------------------------------


def _fold(value: int) -> int:
    """End-around-carry form of a non-negative sum: 0 only for 0, else 1..0xFFFF."""
    rest = value % 0xFFFF
    return rest or (0xFFFF if value else 0)


def ones_complement_sum(data: Buffer) -> int:
    """The 16-bit one's complement sum of ``data`` (RFC 1071), not inverted.

    An odd trailing octet is padded with zero. 0 only for all-zero data, otherwise 1..0xFFFF;
    the Internet checksum of ``data`` is ``0xFFFF - ones_complement_sum(data)``.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return _fold(value)


def _address(address: Buffer, length: int) -> int:
    if len(address) != length:
        raise ValueError(f"address of {len(address)} octets, expected {length}")
    return int.from_bytes(address, "big")


def pseudo_header_sum_v6(src: Buffer, dst: Buffer, length: int, next_header: int) -> int:
    """One's complement sum of the IPv6 upper-layer pseudo-header (RFC 8200 §8.1): source,
    destination, 32-bit upper-layer packet length, three zero octets, Next Header.

    This is what a NEEDS_CSUM packet carries in its checksum field.

    Raises:
        ValueError: an address that is not 16 octets.
    """
    return _fold(_address(src, 16) + _address(dst, 16) + length + next_header)


def pseudo_header_sum_v4(src: Buffer, dst: Buffer, length: int, protocol: int) -> int:
    """One's complement sum of the IPv4 pseudo-header of TCP (RFC 9293 §3.1) and UDP (RFC 768):
    source, destination, a zero octet, protocol, 16-bit TCP/UDP length.

    Raises:
        ValueError: an address that is not 4 octets.
    """
    return _fold(_address(src, 4) + _address(dst, 4) + length + protocol)


# -- reading the headers of a super-packet --------------------------------------------------------


def _ip_layout(packet: Buffer, n: int) -> tuple[bool, int, int, int]:
    """(is IPv4, offset of the upper layer, its protocol, sum of the two addresses) of an IP
    packet whose length fields match ``n``; IPv6 hop-by-hop and destination options headers are
    walked (RFC 8200 §4), other extension headers end the walk."""
    if n < 20:
        raise BadPacket("truncated", f"{n} octets, no IP header")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or ihl > n:
            raise BadPacket("truncated", f"IPv4 header length {ihl} in {n} octets")
        total = _U16.unpack_from(packet, 2)[0]
        if total != n:
            raise BadPacket("bad_length", f"IPv4 total length {total}, {n} octets present")
        return True, ihl, packet[9], int.from_bytes(packet[12:20], "big")
    if version != 6:
        raise BadPacket("bad_version", f"IP version {version}")
    if n < 40:
        raise BadPacket("truncated", f"{n} octets, IPv6 header needs 40")
    payload_length = _U16.unpack_from(packet, 4)[0]
    if payload_length + 40 != n:
        raise BadPacket("bad_length", f"IPv6 payload length {payload_length}, {n - 40} present")
    offset = 40
    protocol = packet[6]
    walked = 0
    while protocol in (_NH_HOPOPTS, _NH_DSTOPTS):
        if walked == _MAX_EXTENSION_HEADERS:
            raise BadPacket("bad_gso", "too many extension headers")
        if offset + 8 > n:
            raise BadPacket("truncated", "extension header")
        protocol = packet[offset]
        offset += (packet[offset + 1] + 1) * 8
        walked += 1
    if offset > n:
        raise BadPacket("truncated", "extension header")
    return False, offset, protocol, int.from_bytes(packet[8:40], "big")


def _check_csum_fields(header: VnetHeader, l4: int, field: int) -> None:
    if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and (
        header.csum_start != l4 or header.csum_offset != field
    ):
        raise BadPacket(
            "bad_vnet_header",
            f"csum_start {header.csum_start}/offset {header.csum_offset}, headers say {l4}/{field}",
        )


# -- checksum completion (GSO_NONE with NEEDS_CSUM) -----------------------------------------------


def complete_checksum(header: VnetHeader, packet: Buffer) -> bytes:
    """``packet`` with the partial checksum a NEEDS_CSUM header announces completed.

    The field at ``csum_start + csum_offset`` holds the pseudo-header sum; the one's complement
    sum from ``csum_start`` to the end (that field included) is inverted and stored there, as
    the kernel's ``skb_checksum_help`` does, a result of 0 being sent as 0xFFFF (required for
    UDP, RFC 768 and RFC 8200 §8.1; equivalent for the others). Without NEEDS_CSUM the packet
    is returned unchanged (as ``bytes``).

    The offsets must lie after the fixed IP header (so the addresses cannot be overwritten) and
    the checksum field at an even offset from ``csum_start``, inside the packet; the IP length
    fields must match the buffer.

    Raises:
        BadPacket: ``bad_vnet_header``, ``bad_gso`` (a GSO type: use :func:`segment_untrusted`),
            ``truncated``, ``bad_version``, ``bad_length``.
    """
    if _check_vnet(header) != VIRTIO_NET_HDR_GSO_NONE:
        raise BadPacket("bad_gso", "a GSO packet needs segment_untrusted")
    if not header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return bytes(packet)
    start, at = _partial_field(header, packet)
    value = int.from_bytes(packet[start:], "big")
    if (len(packet) - start) & 1:
        value <<= 8
    out = bytearray(packet)
    _U16.pack_into(out, at, 0xFFFF - _fold(value) or 0xFFFF)
    return bytes(out)


def complete_read_untrusted(data: bytes) -> bytes:
    """The packet of one TUN read (virtio-net header included) that is checksum-partial and not
    GSO, its checksum completed: :func:`complete_checksum` for the common case in a third of
    the time (every TCP or UDP packet a local application sends is read this way).

    The fast case is IPv6 without extension headers carrying TCP or UDP, its Payload Length
    matching the read, ``csum_start`` 40 and ``csum_offset`` where the TCP or UDP checksum is;
    anything else takes :func:`parse_vnet_untrusted` and :func:`complete_checksum`, with their
    checks and errors.

    Raises:
        BadPacket: as :func:`parse_vnet_untrusted` and :func:`complete_checksum`.
    """
    n = len(data) - VNET_HEADER_LENGTH
    if n >= 48 and data[0] == VIRTIO_NET_HDR_F_NEEDS_CSUM and not data[1] and data[10] >> 4 == 6:
        _, _, _, _, start, offset = _VNET.unpack_from(data)
        proto = data[16]
        if (
            start == 40
            and offset == (_TCP_CSUM if proto == _PROTO_TCP else _UDP_CSUM)
            and proto in (_PROTO_TCP, _PROTO_UDP)
            and (data[14] << 8 | data[15]) + 40 == n
            and start + offset + 2 <= n
        ):
            value = int.from_bytes(data[VNET_HEADER_LENGTH + 40 :], "big")
            if n & 1:
                value <<= 8
            out = bytearray(data[VNET_HEADER_LENGTH:])
            _U16.pack_into(out, 40 + offset, 0xFFFF - _fold(value) or 0xFFFF)
            return bytes(out)
    header, packet = parse_vnet_untrusted(data)
    return complete_checksum(header, packet)


def _partial_field(header: VnetHeader, packet: Buffer) -> tuple[int, int]:
    """(csum_start, offset of the checksum field) of a NEEDS_CSUM packet, checked."""
    n = len(packet)
    if n > MAX_PACKET_LENGTH:
        raise BadPacket("bad_length", f"{n} octets")
    is_v4, fixed, _, _ = _ip_layout(packet, n)
    if not is_v4:
        fixed = 40  # extension headers may well be covered (ICMPv6 behind options, ...)
    start, at = header.csum_start, header.csum_start + header.csum_offset
    if start < fixed or header.csum_offset < 0 or header.csum_offset & 1 or at + 2 > n:
        raise BadPacket(
            "bad_vnet_header",
            f"csum_start {start}, csum_offset {header.csum_offset} in {n} octets",
        )
    return start, at


# -- segmentation (TUN read -> paths without GSO) -------------------------------------------------


def segment_untrusted(
    header: VnetHeader,
    packet: Buffer,
    *,
    finish_checksum: bool = True,
    max_segments: int = MAX_SEGMENTS,
) -> list[bytes]:
    """Cut the packet of one TUN read into ordinary IP packets of at most ``gso_size`` payload
    octets each, as Linux GSO would (``tcp_gso_segment``, ``__udp_gso_segment``,
    ``inet_gso_segment``, ``ipv6_gso_segment``).

    Every segment gets the headers of the super-packet with: IPv6 Payload Length (RFC 8200 §3)
    or IPv4 Total Length, Identification + segment index and a new header checksum (RFC 791
    §3.1; the ID advances as Linux does without SKB_GSO_TCP_FIXEDID, DF or not); the TCP
    sequence number advanced by the payload before it, FIN and PSH only on the last segment,
    CWR only on the first (RFC 9293 §3.1, RFC 3168 §6.1.2); or the UDP Length of the segment
    (RFC 768). A packet without GSO comes back alone (its checksum completed when NEEDS_CSUM
    is set and ``finish_checksum``).

    ``finish_checksum=True`` puts the full TCP/UDP checksum (RFC 9293 §3.1, RFC 768, RFC 8200
    §8.1 pseudo-headers) in every segment: right for anything leaving the node. With ``False``
    each segment's checksum field holds only its pseudo-header sum, as NEEDS_CSUM means (three
    to four times faster: no payload is summed), for segments that go back into a TUN with
    ``build_vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, l4, 16 or 6)`` (``l4`` = the offset of
    the TCP/UDP header) or to a peer that completes them. An AEAD protects such segments only
    between the tunnel endpoints; a segment leaving with a partial checksum reaches its
    destination with a wrong one, so the end-to-end check is gone, not moved.

    Raises:
        BadPacket: see the module docstring: any header or length inconsistency, more than
            ``max_segments`` segments.
    """
    gso_type = _check_vnet(header)
    n = len(packet)
    if n > MAX_PACKET_LENGTH:
        raise BadPacket("bad_length", f"{n} octets")
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            if finish_checksum:
                return [complete_checksum(header, packet)]
            _partial_field(header, packet)  # the same packets are refused in both modes
        return [bytes(packet)]
    if gso_type == VIRTIO_NET_HDR_GSO_UDP:
        raise BadPacket("gso_unsupported", "UFO")
    is_v4, l4, protocol, addresses = _ip_layout(packet, n)
    if gso_type == VIRTIO_NET_HDR_GSO_UDP_L4:
        is_tcp = False
        expected = _PROTO_UDP
    else:
        is_tcp = True
        expected = _PROTO_TCP
        if is_v4 != (gso_type == VIRTIO_NET_HDR_GSO_TCPV4):
            raise BadPacket("bad_gso", f"GSO type {gso_type} on IPv{4 if is_v4 else 6}")
    if protocol != expected:
        if not is_v4 and protocol in (43, 44):
            raise BadPacket("gso_unsupported", f"IPv6 extension header {protocol}")
        raise BadPacket("bad_gso", f"GSO type {gso_type} on protocol {protocol}")
    if is_v4 and (packet[6] & 0x3F or packet[7]):
        raise BadPacket("bad_gso", "IPv4 fragment")
    if is_tcp:
        if l4 + 20 > n:
            raise BadPacket("truncated", "TCP header")
        hdr_end = l4 + (packet[l4 + 12] >> 4) * 4
        if hdr_end < l4 + 20 or hdr_end > n:
            raise BadPacket("truncated", f"TCP data offset {packet[l4 + 12] >> 4}")
        if packet[l4 + 13] & (_SYN | _RST):
            raise BadPacket("bad_gso", "SYN or RST on a super-packet")
        csum_at = l4 + _TCP_CSUM
        _check_csum_fields(header, l4, _TCP_CSUM)
    else:
        hdr_end = l4 + 8
        if hdr_end > n:
            raise BadPacket("truncated", "UDP header")
        csum_at = l4 + _UDP_CSUM
        _check_csum_fields(header, l4, _UDP_CSUM)
    if header.hdr_len > n:
        raise BadPacket("bad_gso", f"hdr_len {header.hdr_len} beyond {n} octets")
    gso = header.gso_size
    if gso <= 0:
        raise BadPacket("bad_gso", "gso_size 0")
    payload = n - hdr_end
    if payload == 0:
        raise BadPacket("bad_gso", "no payload")
    count = -(-payload // gso)
    if count > max_segments:
        raise BadPacket("bad_gso", f"{count} segments of {gso} octets")
    return _segment(
        memoryview(packet) if not isinstance(packet, memoryview) else packet,
        is_v4=is_v4,
        is_tcp=is_tcp,
        l4=l4,
        hdr_end=hdr_end,
        csum_at=csum_at,
        gso=gso,
        count=count,
        pseudo=addresses + expected,
        finish=finish_checksum,
    )


def _segment(
    view: memoryview,
    *,
    is_v4: bool,
    is_tcp: bool,
    l4: int,
    hdr_end: int,
    csum_at: int,
    gso: int,
    count: int,
    pseudo: int,
    finish: bool,
) -> list[bytes]:
    """The per-segment loop of :func:`segment_untrusted`, on checked input.

    Each sum is computed from constant parts: ``base`` is the L4 header with sequence number,
    flags, length and checksum zeroed plus the pseudo-header without its length; the variable
    fields are added as numbers (see the module docstring), so only the payload is summed per
    segment, and not at all in partial mode.
    """
    n = len(view)
    hdr = bytearray(view[:hdr_end])
    th = hdr_end - l4
    pack16 = _U16.pack_into
    hdr[csum_at : csum_at + 2] = b"\x00\x00"
    if is_tcp:
        seq0 = _U32.unpack_from(hdr, l4 + 4)[0]
        flags0 = hdr[l4 + 13]
        hdr[l4 + 4 : l4 + 8] = bytes(4)
        hdr[l4 + 13] = 0
    else:
        seq0 = flags0 = 0
        hdr[l4 + 4 : l4 + 6] = b"\x00\x00"
    base = (int.from_bytes(hdr[l4:], "big") + pseudo) % 0xFFFF
    if is_v4:
        ident0 = _U16.unpack_from(hdr, 4)[0]
        hdr[2:6] = bytes(4)
        hdr[10:12] = b"\x00\x00"
        ip_base = int.from_bytes(hdr[:l4], "big")
    else:
        ident0 = ip_base = 0
    # Flags of the first, middle and last segments (tcp_gso_segment: FIN and PSH stay on the
    # last one, CWR on the first one).
    middle_flags = flags0 & ~(_FIN | _PSH | _CWR)
    last = count - 1
    out: list[bytes] = []
    append = out.append
    start = hdr_end
    for i in range(count):
        end = start + gso if i != last else n
        chunk = view[start:end]
        l4_length = th + end - start
        if is_tcp:
            seq = (seq0 + i * gso) & 0xFFFFFFFF
            flags = middle_flags
            if i == 0:
                flags |= flags0 & _CWR
            if i == last:
                flags |= flags0 & (_FIN | _PSH)
            _U32.pack_into(hdr, l4 + 4, seq)
            hdr[l4 + 13] = flags
            header_sum = base + seq + flags + l4_length  # the length is the pseudo-header's
        else:
            pack16(hdr, l4 + 4, l4_length)
            header_sum = base + 2 * l4_length  # UDP Length and the pseudo-header's length
        if finish:
            value = int.from_bytes(chunk, "big")
            if (end - start) & 1:
                value <<= 8
            # Reduce the payload first: adding to a 1400-octet integer would copy it.
            csum = 0xFFFF - ((value % 0xFFFF + header_sum) % 0xFFFF or 0xFFFF)
            if csum == 0 and not is_tcp:
                csum = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
        else:
            csum = (pseudo + l4_length) % 0xFFFF or 0xFFFF
        pack16(hdr, csum_at, csum)
        if is_v4:
            ident = (ident0 + i) & 0xFFFF
            total = l4 + l4_length
            _U16U16.pack_into(hdr, 2, total, ident)
            pack16(hdr, 10, 0xFFFF - ((ip_base + total + ident) % 0xFFFF or 0xFFFF))
        else:
            pack16(hdr, 4, l4 - 40 + l4_length)
        append(b"".join((hdr, chunk)))
        start = end
    return out


# -- coalescing (paths -> TUN write) --------------------------------------------------------------


class _Run:
    """Consecutive segments of one TCP connection being merged (bookkeeping only)."""

    __slots__ = (
        "count",
        "end",
        "fixed_id",
        "flags",
        "gso",
        "head",
        "l4",
        "length",
        "next_seq",
        "parts",
        "psh",
        "verified",
    )

    def __init__(self, head: bytes, l4: int, end: int, flags: int, seq: int) -> None:
        self.head = head
        self.l4 = l4
        self.end = end  # offset of the payload: IP + TCP headers
        self.flags = flags
        self.gso = len(head) - end
        self.next_seq = (seq + self.gso) & 0xFFFFFFFF
        self.count = 1
        self.length = len(head)
        self.parts: list[memoryview] = []
        self.psh = False
        self.verified = False
        self.fixed_id = False


def _checksums_ok(packet: bytes, l4: int) -> bool:
    """TCP checksum (and IPv4 header checksum) of an IPv6 packet without extension headers
    (``l4`` 40) or an IPv4 packet without options (``l4`` 20).

    The addresses and the TCP segment are contiguous (offsets 8 or 12 to the end), so the sum
    of the whole packet minus that of the octets before the addresses, plus the pseudo-header's
    length and protocol, is the checksum sum: 0 mod 0xFFFF when the checksum is right.
    """
    n = len(packet)
    value = int.from_bytes(packet, "big")
    if n & 1:
        value <<= 8
    if l4 == 40:
        before = int.from_bytes(packet[:8], "big")
    else:
        if int.from_bytes(packet[:20], "big") % 0xFFFF:
            return False
        before = int.from_bytes(packet[:12], "big")
    return (value % 0xFFFF - before + n - l4 + _PROTO_TCP) % 0xFFFF == 0


def _may_carry_tcp(packet: bytes) -> bool:
    """A packet that might belong to an open run but cannot be keyed (IPv4 options or
    fragments, IPv6 extension headers, truncated TCP): it ends every open run."""
    n = len(packet)
    if n < 10:
        return n > 0 and packet[0] >> 4 in (4, 6)
    version = packet[0] >> 4
    if version == 4:
        return packet[9] == _PROTO_TCP
    return version == 6 and packet[6] in (_NH_HOPOPTS, _PROTO_TCP, 43, 44, _NH_DSTOPTS)


def coalesce_tcp(
    packets: Iterable[bytes],
    *,
    max_length: int = MAX_COALESCED_LENGTH,
    max_segments: int = MAX_SEGMENTS,
    checked: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Merge runs of in-order TCP segments of one connection into super-packets for a TUN
    write; return ``(virtio-net header, packet)`` for everything, in the order of the first
    packet of each run.

    A segment joins the open run of its connection (addresses and ports) when, as Linux GRO
    (``tcp_gro_receive``, ``inet_gro_receive``, ``ipv6_gro_receive``) requires: it is IPv6
    without extension headers or IPv4 without options and not a fragment; version, traffic
    class and flow label, or TOS and DF, and the hop limit or TTL are those of the run; the
    TCP data offset, options (timestamps included), ACK number, window, ECE and urgent pointer
    are equal; its flags are ACK, PSH being allowed on the last segment only (no SYN, FIN,
    RST, URG, CWR); its sequence number follows the run; it carries 1..``gso_size`` octets
    (the first segment's size; a shorter one ends the run); an IPv4 Identification follows the
    run's (or, with DF, stays fixed: RFC 6864); and the result stays within ``max_length``
    octets and ``max_segments`` segments. Every segment of a merged run, the first one
    included, must have a correct TCP (and IPv4 header) checksum, because the kernel will
    compute a fresh one for the whole run: a corrupted segment passes alone, for the kernel
    to drop. Segments of one connection never overtake each other: a packet of the connection
    that is not merged ends its open run.

    A merged run carries gso_type TCPV4/TCPV6, gso_size, hdr_len, csum_start (the TCP offset),
    csum_offset 16 and NEEDS_CSUM, with the pseudo-header sum (RFC 8200 §8.1, RFC 9293 §3.1)
    in its checksum field; its IP length (and IPv4 header checksum) are rewritten and the last
    segment's PSH kept. Anything else (a run of one, non-TCP, malformed) passes unchanged
    with :data:`VNET_NONE`. UDP is never merged. Never raises on packet contents.

    ``checked``: the caller vouches that no octet changed since the sender computed the
    checksums (every packet was opened by an AEAD, RFC 4106/7634), so the per-segment check,
    which is there to keep a segment corrupted on the way from being laundered by the fresh
    checksum of a merged run, is skipped. A sender that wrote a wrong checksum on purpose gains
    nothing by it: it could have sent the same octets with a right one.
    """
    out: list[tuple[bytes, bytes] | _Run] = []
    runs: dict[bytes, _Run] = {}
    for packet in packets:
        n = len(packet)
        if n >= 40 and packet[0] == 0x45 and packet[9] == _PROTO_TCP:
            l4 = 20
            key = packet[12:24]  # addresses and ports
            # Total Length right, no fragment (MF, offset) and no reserved flag: DF at most.
            ok = (packet[2] << 8 | packet[3]) == n and not (packet[6] & 0xBF) and not packet[7]
        elif n >= 60 and packet[0] >> 4 == 6 and packet[6] == _PROTO_TCP:
            l4 = 40
            key = packet[8:44]
            ok = (packet[4] << 8 | packet[5]) + 40 == n
        else:
            if runs and _may_carry_tcp(packet):
                runs.clear()
            out.append((VNET_NONE, packet))
            continue
        end = l4 + (packet[l4 + 12] >> 4) * 4
        flags = packet[l4 + 13]
        # ACK, maybe ECE, maybe PSH; never SYN, FIN, RST, URG, CWR; a payload; within bounds.
        if (
            not ok
            or end < l4 + 20
            or end >= n
            or (flags & ~(_PSH | _ECE)) != _ACK
            or n > max_length
        ):
            runs.pop(key, None)
            out.append((VNET_NONE, packet))
            continue
        seq = _U32.unpack_from(packet, l4 + 4)[0]
        run = runs.get(key)
        if run is not None:
            outcome = _join(run, packet, l4, end, flags, seq, max_length, max_segments, checked)
            if outcome is _APPENDED:
                if run.psh or n - end < run.gso:
                    del runs[key]  # PSH or a short segment ends the run
                continue
            del runs[key]
            if outcome is _CORRUPT:
                out.append((VNET_NONE, packet))  # alone, after the run, for the kernel to drop
                continue
        if flags & _PSH:
            out.append((VNET_NONE, packet))  # PSH ends a run: this run of one is the packet
            continue
        run = _Run(packet, l4, end, flags, seq)
        runs[key] = run
        out.append(run)
    result: list[tuple[bytes, bytes]] = []
    for item in out:
        if isinstance(item, tuple):
            result.append(item)
        elif item.count == 1:
            result.append((VNET_NONE, item.head))
        else:
            result.append(_merged(item))
    return result


_APPENDED = "appended"
_REFUSED = "refused"  # not a continuation of the run; may start a new one
_CORRUPT = "corrupt"  # a continuation with a wrong checksum: passes alone


def _join(
    run: _Run,
    packet: bytes,
    l4: int,
    end: int,
    flags: int,
    seq: int,
    max_length: int,
    max_segments: int,
    checked: bool = False,
) -> str:
    """Append ``packet`` to ``run`` if it continues it; return what happened."""
    head = run.head
    size = len(packet) - end
    if (
        end != run.end
        or seq != run.next_seq
        or size > run.gso
        or flags & ~_PSH != run.flags
        or run.count >= max_segments
        or run.length + size > max_length
        or packet[l4 + 8 : l4 + 13] != head[l4 + 8 : l4 + 13]  # ACK number, data offset
        or packet[l4 + 14 : l4 + 16] != head[l4 + 14 : l4 + 16]  # window
        or packet[l4 + 18 : end] != head[l4 + 18 : end]  # urgent pointer, options
    ):
        return _REFUSED
    if l4 == 40:
        if packet[:4] != head[:4] or packet[7] != head[7]:
            return _REFUSED
    else:
        if packet[1] != head[1] or packet[6] != head[6] or packet[8] != head[8]:
            return _REFUSED
        ident = packet[4] << 8 | packet[5]
        first = head[4] << 8 | head[5]
        if ident == (first + run.count) & 0xFFFF and not run.fixed_id:
            pass
        elif head[6] & 0x40 and ident == first and (run.count == 1 or run.fixed_id):
            run.fixed_id = True  # RFC 6864 §4.1: an atomic datagram's ID means nothing
        else:
            return _REFUSED
    if not checked:
        if not run.verified:
            if not _checksums_ok(head, l4):
                return _REFUSED  # the head passes alone; this segment may start a run
            run.verified = True
        if not _checksums_ok(packet, l4):
            return _CORRUPT
    if not run.parts:
        run.parts.append(memoryview(head)[run.end :])
    run.parts.append(memoryview(packet)[end:])
    run.count += 1
    run.length += size
    run.next_seq = (seq + size) & 0xFFFFFFFF
    run.psh = bool(flags & _PSH)
    return _APPENDED


def _merged(run: _Run) -> tuple[bytes, bytes]:
    """The super-packet of a run of two or more segments, with its virtio-net header."""
    l4, end = run.l4, run.end
    hdr = bytearray(run.head[:end])
    if run.psh:
        hdr[l4 + 13] |= _PSH
    l4_length = run.length - l4
    if l4 == 40:
        _U16.pack_into(hdr, 4, l4_length)
        addresses = int.from_bytes(hdr[8:40], "big")
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    else:
        _U16.pack_into(hdr, 2, run.length)
        hdr[10:12] = b"\x00\x00"
        _U16.pack_into(hdr, 10, 0xFFFF - _fold(int.from_bytes(hdr[:20], "big")))
        addresses = int.from_bytes(hdr[12:20], "big")
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    _U16.pack_into(hdr, l4 + _TCP_CSUM, _fold(addresses + l4_length + _PROTO_TCP))
    vnet = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, end, run.gso, l4, _TCP_CSUM)
    return vnet, b"".join((hdr, *run.parts))
