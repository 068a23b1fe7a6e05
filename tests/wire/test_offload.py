"""TUN offload framing (mipnode/wire/offload.py): virtio-net header, GSO segmentation, coalescing.

Oracles: scapy builds the super-packets and the segments it expects, and recomputes every TCP,
UDP and IPv4 header checksum of what we produce (``del`` the field, rebuild, compare); the
textbook RFC 1071 loop of wire_goldens checks sums and pseudo-headers; the virtio constants are
written out from include/uapi/linux/virtio_net.h. A "kernel form" super-packet is what a TUN
read hands over: NEEDS_CSUM, the pseudo-header sum (RFC 8200 §8.1, RFC 9293 §3.1) in the
checksum field. Malformed input must raise BadPacket only: derandomized hypothesis properties
in the style of test_wire_fuzz_more.py, with fuzzkit's settings (tools/fuzz.py runs them
randomized and longer once this file is in its FILES).
"""

from __future__ import annotations

import functools
import random
import struct
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import wire_goldens as g
from fuzzkit import fuzz_settings, mutations
from hypothesis import event, given
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.offload import (
    MAX_PACKET_LENGTH,
    MAX_SEGMENTS,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VNET_HEADER_LENGTH,
    VNET_NONE,
    VnetHeader,
    build_vnet,
    coalesce_tcp,
    complete_checksum,
    ones_complement_sum,
    parse_vnet_untrusted,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
    segment_untrusted,
)

with warnings.catch_warnings():
    # scapy may warn at import time; that is scapy's business (filterwarnings=error).
    warnings.simplefilter("ignore")
    inet = pytest.importorskip("scapy.layers.inet")
    inet6 = pytest.importorskip("scapy.layers.inet6")

IP, TCP, UDP, ICMP = inet.IP, inet.TCP, inet.UDP, inet.ICMP
IPv6, HopByHop, EchoRequest = inet6.IPv6, inet6.IPv6ExtHdrHopByHop, inet6.ICMPv6EchoRequest

NEEDS_CSUM = VIRTIO_NET_HDR_F_NEEDS_CSUM
V6 = ("2001:db8:1::100", "2001:db8:c::2")
V4 = ("192.0.2.1", "198.51.100.2")
TIMESTAMPS = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]
PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 6, 17, 58
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
PAYLOAD = bytes(random.Random(6275).randbytes(70000))

In = TypeVar("In")
Out = TypeVar("Out")


# -- independent helpers ------------------------------------------------------------------------


def ref_sum(data: bytes) -> int:
    """End-around-carry sum from the textbook checksum loop (0 only for all-zero data)."""
    return ~g.ref_checksum(data) & 0xFFFF


def ref_pseudo(packet: bytes, l4: int, proto: int, length: int) -> bytes:
    """The pseudo-header of RFC 9293 §3.1 / RFC 768 (IPv4) or RFC 8200 §8.1 (IPv6)."""
    if packet[0] >> 4 == 4:
        return packet[12:20] + bytes([0, proto]) + length.to_bytes(2, "big")
    return packet[8:40] + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])


def kernel_form(packet: bytes, l4: int, proto: int, field: int) -> bytes:
    """``packet`` as a TUN read shows it with NEEDS_CSUM: the (not inverted) pseudo-header sum
    in the checksum field."""
    out = bytearray(packet)
    partial = ref_sum(ref_pseudo(packet, l4, proto, len(packet) - l4))
    out[l4 + field : l4 + field + 2] = partial.to_bytes(2, "big")
    return bytes(out)


def ip(v4: bool, **fields: Any) -> Any:
    return IP(src=V4[0], dst=V4[1], **fields) if v4 else IPv6(src=V6[0], dst=V6[1], **fields)


def super_tcp(
    v4: bool,
    size: int,
    *,
    flags: str = "A",
    seq: int = 1000,
    options: list[Any] | None = None,
    ip_fields: dict[str, Any] | None = None,
) -> bytes:
    """A TCP super-packet in kernel form (IPv4 or IPv6 without extension headers)."""
    tcp = TCP(sport=40000, dport=443, seq=seq, ack=77, flags=flags, window=501)
    tcp.options = TIMESTAMPS if options is None else options
    packet = bytes(ip(v4, **(ip_fields or {})) / tcp / PAYLOAD[:size])
    return kernel_form(packet, 20 if v4 else 40, PROTO_TCP, 16)


def tcp_header_length(packet: bytes, l4: int) -> int:
    return (packet[l4 + 12] >> 4) * 4


def tso(v4: bool, packet: bytes, gso: int, *, ecn: bool = False) -> VnetHeader:
    """The header a TUN read carries with a TCP super-packet (hdr_len: the headers)."""
    l4 = (packet[0] & 0x0F) * 4 if v4 else 40
    gso_type = VIRTIO_NET_HDR_GSO_TCPV4 if v4 else VIRTIO_NET_HDR_GSO_TCPV6
    if ecn:
        gso_type |= VIRTIO_NET_HDR_GSO_ECN
    return VnetHeader(NEEDS_CSUM, gso_type, l4 + tcp_header_length(packet, l4), gso, l4, 16)


def rebuilt(segment: bytes, v4: bool, layer: Any) -> tuple[Any, Any]:
    """(scapy's parse of ``segment``, the same packet with every checksum recomputed)."""
    parsed = (IP if v4 else IPv6)(segment)
    again = parsed.copy()
    del again[layer].chksum
    if v4:
        del again[IP].chksum
    return parsed, (IP if v4 else IPv6)(bytes(again))


def payload_of(segment: bytes) -> bytes:
    """The TCP or UDP payload of a segment with no extension headers or options in IP."""
    v4 = segment[0] >> 4 == 4
    l4 = (segment[0] & 0x0F) * 4 if v4 else 40
    proto = segment[9] if v4 else segment[6]
    return segment[l4 + (tcp_header_length(segment, l4) if proto == PROTO_TCP else 8) :]


def accepts(parser: Callable[[In], Out], data: In) -> Out | None:
    """``parser(data)``, or None on BadPacket (whose reason must be a drop-counter key)."""
    try:
        return parser(data)
    except BadPacket as exc:
        assert exc.reason and exc.reason == exc.reason.strip().lower(), exc.reason
        assert " " not in exc.reason
        return None


# -- the virtio-net header ------------------------------------------------------------------------


def test_constants_are_the_kernels() -> None:
    """include/uapi/linux/virtio_net.h (virtio 1.x §5.1.6)."""
    assert (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_DATA_VALID) == (1, 2)
    assert VIRTIO_NET_HDR_GSO_NONE == 0
    assert VIRTIO_NET_HDR_GSO_TCPV4 == 1
    assert VIRTIO_NET_HDR_GSO_UDP == 3
    assert VIRTIO_NET_HDR_GSO_TCPV6 == 4
    assert VIRTIO_NET_HDR_GSO_UDP_L4 == 5
    assert VIRTIO_NET_HDR_GSO_ECN == 0x80
    assert VNET_HEADER_LENGTH == 10
    assert VNET_NONE == bytes(10) == build_vnet() == VnetHeader().to_bytes()


def test_header_layout_is_little_endian() -> None:
    raw = bytes.fromhex("01 04 4800 7805 2800 1000".replace(" ", "")) + b"packet"
    header, rest = parse_vnet_untrusted(raw)
    assert header == VnetHeader(1, 4, 72, 1400, 40, 16)
    assert bytes(rest) == b"packet"
    assert header.to_bytes() == raw[:10] == build_vnet(1, 4, 72, 1400, 40, 16)
    # The payload is a view, not a copy.
    buf = bytearray(raw)
    _, view = parse_vnet_untrusted(buf)
    buf[10] = ord("P")
    assert bytes(view[:1]) == b"P"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (bytes(9), "truncated"),
        (bytes([4]) + bytes(9), "bad_vnet_header"),  # RSC_INFO: never from a TUN
        (bytes([0x80]) + bytes(9), "bad_vnet_header"),
        (bytes([0, 2]) + bytes(8), "bad_vnet_header"),  # the old TCPV4_ECN value
        (bytes([0, 6]) + bytes(8), "bad_vnet_header"),
        (bytes([0, 0x20]) + bytes(8), "bad_vnet_header"),  # UDP tunnel GSO: not asked for
        (bytes([0, 0x80]) + bytes(8), "bad_vnet_header"),  # ECN without TCP
        (bytes([1, 0x85]) + bytes(8), "bad_vnet_header"),  # ECN with UDP_L4
    ],
)
def test_bad_vnet_headers(raw: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as info:
        parse_vnet_untrusted(raw)
    assert info.value.reason == reason


def test_build_vnet_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        build_vnet(gso_size=0x10000)
    with pytest.raises(ValueError):
        build_vnet(flags=-1)


# -- checksum helpers ---------------------------------------------------------------------------


def test_ones_complement_sum_matches_the_textbook_loop() -> None:
    rng = random.Random(1071)
    cases = [b"", b"\x00", bytes(7), b"\xff" * 6, b"\xff\xff\x00\x01", b"\x01"]
    cases += [rng.randbytes(rng.randrange(1, 300)) for _ in range(300)]
    for data in cases:
        assert ones_complement_sum(data) == ref_sum(data), data.hex()
        assert ones_complement_sum(memoryview(data)) == ref_sum(data)
    # 0xFFFF, not 0, for data whose sum is "negative zero" (RFC 1071 §1).
    assert ones_complement_sum(b"\x12\x34\xed\xcb") == 0xFFFF


def test_pseudo_header_sums_match_the_rfc_layouts() -> None:
    rng = random.Random(8200)
    for _ in range(100):
        src6, dst6, src4, dst4 = (rng.randbytes(k) for k in (16, 16, 4, 4))
        length = rng.randrange(0, 0x10000)
        proto = rng.choice([PROTO_TCP, PROTO_UDP, PROTO_ICMPV6])
        v6 = src6 + dst6 + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])
        v4 = src4 + dst4 + bytes([0, proto]) + length.to_bytes(2, "big")
        assert pseudo_header_sum_v6(src6, dst6, length, proto) == ref_sum(v6)
        assert pseudo_header_sum_v4(src4, dst4, length, proto) == ref_sum(v4)
    with pytest.raises(ValueError):
        pseudo_header_sum_v6(bytes(4), bytes(16), 0, 6)
    with pytest.raises(ValueError):
        pseudo_header_sum_v4(bytes(4), bytes(16), 0, 6)


# -- TCP segmentation against scapy -----------------------------------------------------------


GOLDEN_TCP = {
    # name: (IPv4, payload, gso_size, flags, options, IP fields, ECN bit)
    "v6_timestamps_psh_short_last": (False, 10 * 1400 + 321, 1400, "PA", None, {}, False),
    "v6_no_options_exact_multiple": (False, 3 * 1220, 1220, "A", [], {}, False),
    "v6_psh_fin_cwr_ecn": (False, 4000, 1000, "FPAC", None, {}, True),
    "v6_ece_one_segment": (False, 900, 1400, "AE", None, {}, False),
    "v6_odd_gso_size": (False, 5 * 777 + 5, 777, "PA", None, {"tc": 0x28, "fl": 0xBEEF}, False),
    "v4_df_id_wraps": (True, 5000, 1448, "FPA", None, {"flags": "DF", "id": 0xFFFE}, False),
    "v4_no_df_cwr": (True, 6 * 536 + 1, 536, "CA", None, {"id": 7, "ttl": 3, "tos": 4}, True),
}


@pytest.mark.oracle
@pytest.mark.parametrize("name", list(GOLDEN_TCP))
def test_tcp_segments_match_scapy(name: str) -> None:
    v4, size, gso, flags, options, ip_fields, ecn = GOLDEN_TCP[name]
    seq0 = 0xFFFFF000  # wraps on the way
    packet = super_tcp(v4, size, flags=flags, seq=seq0, options=options, ip_fields=ip_fields)
    original = (IP if v4 else IPv6)(packet)
    header = tso(v4, packet, gso, ecn=ecn)
    segments = segment_untrusted(header, packet)
    assert len(segments) == -(-size // gso)
    flags0 = int(original[TCP].flags)
    for i, segment in enumerate(segments):
        parsed, recomputed = rebuilt(segment, v4, TCP)
        tcp = parsed[TCP]
        assert bytes(tcp.payload) == PAYLOAD[i * gso : min((i + 1) * gso, size)]
        assert tcp.chksum == recomputed[TCP].chksum, i
        assert tcp.seq == (seq0 + i * gso) % 2**32
        expected = flags0
        if i != len(segments) - 1:
            expected &= ~(FIN | PSH)
        if i != 0:
            expected &= ~CWR
        assert int(tcp.flags) == expected, i
        for field in ("sport", "dport", "ack", "window", "urgptr", "dataofs", "options"):
            assert getattr(tcp, field) == getattr(original[TCP], field), field
        if v4:
            assert parsed[IP].len == len(segment)
            assert parsed[IP].id == (original[IP].id + i) % 2**16
            assert parsed[IP].chksum == recomputed[IP].chksum, i
            for field in ("flags", "ttl", "tos", "frag", "src", "dst"):
                assert getattr(parsed[IP], field) == getattr(original[IP], field), field
        else:
            assert parsed[IPv6].plen == len(segment) - 40
            for field in ("tc", "fl", "hlim", "src", "dst"):
                assert getattr(parsed[IPv6], field) == getattr(original[IPv6], field), field
        # And the textbook loop agrees that the checksum verifies.
        l4 = 20 if v4 else 40
        pseudo = ref_pseudo(segment, l4, PROTO_TCP, len(segment) - l4)
        assert g.ref_checksum(pseudo + segment[l4:]) == 0


@pytest.mark.oracle
def test_ipv6_hop_by_hop_is_carried_by_every_segment() -> None:
    built = IPv6(src=V6[0], dst=V6[1]) / HopByHop() / TCP(flags="PA", seq=5) / PAYLOAD[:3000]
    packet = kernel_form(bytes(built), 48, PROTO_TCP, 16)
    header = VnetHeader(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 68, 1000, 48, 16)
    segments = segment_untrusted(header, packet)
    assert len(segments) == 3
    for i, segment in enumerate(segments):
        parsed, recomputed = rebuilt(segment, False, TCP)
        assert parsed.plen == len(segment) - 40 and HopByHop in parsed
        assert parsed[TCP].chksum == recomputed[TCP].chksum
        assert parsed[TCP].seq == 5 + 1000 * i
        assert bytes(parsed[TCP].payload) == PAYLOAD[1000 * i : 1000 * (i + 1)]


@pytest.mark.oracle
def test_ipv4_options_are_carried_by_every_segment() -> None:
    options = [inet.IPOption_NOP()] * 3 + [inet.IPOption_EOL()]
    built = IP(src=V4[0], dst=V4[1], options=options, id=9) / TCP(flags="A") / PAYLOAD[:2000]
    packet = kernel_form(bytes(built), 24, PROTO_TCP, 16)
    assert packet[0] == 0x46
    segments = segment_untrusted(tso(True, packet, 1000), packet)
    for i, segment in enumerate(segments):
        parsed, recomputed = rebuilt(segment, True, TCP)
        assert parsed.ihl == 6 and parsed.len == len(segment) and parsed.id == 9 + i
        assert parsed.chksum == recomputed.chksum
        assert parsed[TCP].chksum == recomputed[TCP].chksum


@pytest.mark.oracle
@pytest.mark.parametrize("v4", [False, True], ids=["v6", "v4"])
def test_udp_segments_match_scapy(v4: bool) -> None:
    size, gso = 4000, 1200
    built = ip(v4, id=100) if v4 else ip(v4)
    packet = bytes(built / UDP(sport=4500, dport=4500) / PAYLOAD[:size])
    l4 = 20 if v4 else 40
    packet = kernel_form(packet, l4, PROTO_UDP, 6)
    header = VnetHeader(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, l4 + 8, gso, l4, 6)
    segments = segment_untrusted(header, packet)
    assert len(segments) == 4
    for i, segment in enumerate(segments):
        parsed, recomputed = rebuilt(segment, v4, UDP)
        assert bytes(parsed[UDP].payload) == PAYLOAD[i * gso : min((i + 1) * gso, size)]
        assert parsed[UDP].len == len(segment) - l4
        assert parsed[UDP].chksum == recomputed[UDP].chksum != 0
        if v4:
            assert parsed.id == 100 + i and parsed.chksum == recomputed.chksum


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["v6_timestamps_psh_short_last", "v4_df_id_wraps"])
def test_partial_checksums_complete_to_scapys(name: str) -> None:
    """finish_checksum=False leaves each segment's pseudo-header sum; completing it as the
    kernel would (NEEDS_CSUM, no GSO) gives the full segment, checksum as scapy computes it."""
    v4, size, gso, flags, options, ip_fields, _ = GOLDEN_TCP[name]
    packet = super_tcp(v4, size, flags=flags, options=options, ip_fields=ip_fields)
    header = tso(v4, packet, gso)
    full = segment_untrusted(header, packet)
    partial = segment_untrusted(header, packet, finish_checksum=False)
    l4 = 20 if v4 else 40
    assert len(partial) == len(full)
    for segment, finished in zip(partial, full, strict=True):
        field = int.from_bytes(segment[l4 + 16 : l4 + 18], "big")
        assert field == ref_sum(ref_pseudo(segment, l4, PROTO_TCP, len(segment) - l4))
        assert segment[: l4 + 16] == finished[: l4 + 16]
        assert segment[l4 + 18 :] == finished[l4 + 18 :]
        done = complete_checksum(VnetHeader(NEEDS_CSUM, 0, 0, 0, l4, 16), segment)
        assert done == finished
        assert (IP if v4 else IPv6)(done)[TCP].chksum == rebuilt(done, v4, TCP)[1][TCP].chksum


# -- checksum completion without GSO --------------------------------------------------------------


def partial_cases() -> dict[str, tuple[bytes, int, int, int]]:
    """name: (packet built by scapy with its checksum, csum_start, csum_offset, protocol)."""
    return {
        "tcp_v6": (bytes(ip(False) / TCP(flags="PA") / PAYLOAD[:333]), 40, 16, PROTO_TCP),
        "tcp_v4": (bytes(ip(True) / TCP(flags="S", options=TIMESTAMPS)), 20, 16, PROTO_TCP),
        "udp_v4_odd": (bytes(ip(True) / UDP(sport=1, dport=2) / b"odd"), 20, 6, PROTO_UDP),
        "udp_v6": (bytes(ip(False) / UDP(sport=53, dport=9) / PAYLOAD[:100]), 40, 6, PROTO_UDP),
        "icmpv6": (bytes(ip(False) / EchoRequest(id=7, data=b"ping")), 40, 2, PROTO_ICMPV6),
        "hop_by_hop_udp": (
            bytes(ip(False) / HopByHop() / UDP(sport=3, dport=4) / (b"x" * 9)),
            48,
            6,
            PROTO_UDP,
        ),
    }


@pytest.mark.oracle
@pytest.mark.parametrize("name", list(partial_cases()))
def test_complete_checksum_restores_scapys(name: str) -> None:
    packet, start, field, proto = partial_cases()[name]
    partial = kernel_form(packet, start, proto, field)
    assert partial != packet
    header = VnetHeader(NEEDS_CSUM, 0, 0, 0, start, field)
    assert complete_checksum(header, partial) == packet
    assert complete_checksum(header, memoryview(partial)) == packet
    assert segment_untrusted(header, partial) == [packet]
    assert segment_untrusted(header, partial, finish_checksum=False) == [partial]
    # Without NEEDS_CSUM (DATA_VALID or nothing) the packet is left as it is.
    for flags in (0, VIRTIO_NET_HDR_F_DATA_VALID):
        plain = VnetHeader(flags, 0, 0, 0, start, field)
        assert complete_checksum(plain, partial) == partial
        assert segment_untrusted(plain, partial) == [partial]


@pytest.mark.oracle
def test_a_computed_zero_udp_checksum_is_sent_as_ones() -> None:
    """RFC 768: 0 means "no checksum", so a computed 0 goes out as 0xFFFF."""
    probe = bytes(ip(True) / UDP(sport=1, dport=2, chksum=0) / b"\x00\x00")
    word = g.ref_checksum(ref_pseudo(probe, 20, PROTO_UDP, 10) + probe[20:])
    packet = bytes(ip(True) / UDP(sport=1, dport=2) / word.to_bytes(2, "big"))
    assert IP(packet)[UDP].chksum == 0xFFFF  # scapy maps it the same way
    partial = kernel_form(packet, 20, PROTO_UDP, 6)
    assert complete_checksum(VnetHeader(NEEDS_CSUM, 0, 0, 0, 20, 6), partial) == packet
    # A one-segment UDP_L4 super-packet ends up the same.
    header = VnetHeader(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, 28, 100, 20, 6)
    assert segment_untrusted(header, partial) == [packet]


# -- coalescing ------------------------------------------------------------------------------------


def stream(
    count: int,
    *,
    v4: bool = False,
    size: int = 1400,
    seq: int = 1000,
    ack: int = 77,
    sport: int = 40000,
    flags: str = "A",
    ip_id: int | None = 1,
    df: bool = True,
    options: list[Any] | None = None,
) -> list[bytes]:
    """``count`` in-order segments of one connection with full checksums, built by scapy."""
    out = []
    for i in range(count):
        if v4:
            fields: dict[str, Any] = {"flags": "DF" if df else 0}
            fields["id"] = (ip_id + i) % 2**16 if ip_id is not None else 4242
            layer = ip(True, **fields)
        else:
            layer = ip(False)
        tcp = TCP(sport=sport, dport=443, seq=(seq + i * size) % 2**32, ack=ack, flags=flags)
        tcp.options = TIMESTAMPS if options is None else options
        out.append(bytes(layer / tcp / PAYLOAD[i * size : (i + 1) * size]))
    return out


def shape(items: list[tuple[bytes, bytes]], inputs: list[bytes]) -> list[object]:
    """Each output as the input index it is (passed through) or the list it merges."""
    described: list[object] = []
    for vnet, packet in items:
        if vnet == VNET_NONE:
            described.append(next(i for i, p in enumerate(inputs) if p is packet))
        else:
            header, _ = parse_vnet_untrusted(vnet + packet)
            described.append([inputs.index(s) for s in segment_untrusted(header, packet)])
    return described


@pytest.mark.parametrize("v4", [False, True], ids=["v6", "v4"])
def test_segment_then_coalesce_restores_the_super_packet(v4: bool) -> None:
    for flags, size in (("A", 9 * 1400), ("PA", 9 * 1400 + 17)):
        ip_fields = {"flags": "DF", "id": 0xFFF0} if v4 else {}
        packet = super_tcp(v4, size, flags=flags, ip_fields=ip_fields)
        header = tso(v4, packet, 1400)
        segments = segment_untrusted(header, packet)
        [(vnet, merged)] = coalesce_tcp(segments)
        assert merged == packet  # checksum field too: the pseudo-header sum, as the kernel's
        assert vnet == header.to_bytes()
        # And back: resegmenting the coalesced packet gives the very same segments.
        again_header, view = parse_vnet_untrusted(vnet + merged)
        assert segment_untrusted(again_header, view) == segments


@pytest.mark.parametrize("v4", [False, True], ids=["v6", "v4"])
def test_46_segments_of_1400_make_one_64400_octet_super_packet(v4: bool) -> None:
    segments = stream(47, v4=v4)
    items = coalesce_tcp(segments)
    assert len(items) == 2
    (vnet, merged), (rest_vnet, rest) = items
    header, _ = parse_vnet_untrusted(vnet + merged)
    l4 = 20 if v4 else 40
    end = l4 + 32
    assert header == VnetHeader(
        NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV4 if v4 else VIRTIO_NET_HDR_GSO_TCPV6,
        end,
        1400,
        l4,
        16,
    )
    assert len(merged) - end == 64400 == 46 * 1400
    assert len(merged) <= 0xFFFF  # the 47th would not fit
    assert merged[end:] == PAYLOAD[:64400]
    assert (rest_vnet, rest) == (VNET_NONE, segments[46])
    # The super-packet is valid once its checksum is completed (scapy as judge).
    done = complete_checksum(header._replace(gso_type=0), merged)
    parsed, recomputed = rebuilt(done, v4, TCP)
    assert parsed[TCP].chksum == recomputed[TCP].chksum
    if v4:
        assert parsed.len == len(merged) and parsed.chksum == recomputed.chksum
    else:
        assert parsed.plen == len(merged) - 40


def test_interleaved_connections_merge_separately_and_keep_their_order() -> None:
    a = stream(3, sport=1)
    b = stream(3, sport=2, v4=True)
    c = stream(2, sport=3, seq=2**32 - 1400)  # wraps
    udp = bytes(ip(False) / UDP(sport=5, dport=6) / b"datagram")
    inputs = [a[0], b[0], udp, a[1], c[0], b[1], a[2], c[1], b[2]]
    assert shape(coalesce_tcp(inputs), inputs) == [[0, 3, 6], [1, 5, 8], 2, [4, 7]]


def test_the_coalescer_passes_what_it_cannot_merge() -> None:
    a = stream(6)
    inputs = [a[0], a[1], a[3], a[2], a[4], a[5]]  # out of order
    assert shape(coalesce_tcp(inputs), inputs) == [[0, 1], 2, 3, [4, 5]]
    gap = [a[0], a[1], a[3], a[4]]
    assert shape(coalesce_tcp(gap), gap) == [[0, 1], [2, 3]]
    acks = [stream(1, ack=1)[0], stream(2, ack=2)[1]]  # contiguous, another ACK
    assert shape(coalesce_tcp(acks), acks) == [0, 1]
    syn = bytes(ip(False) / TCP(sport=40000, dport=443, flags="S", seq=1))
    with_syn = [a[0], a[1], syn, a[2], a[3]]
    assert shape(coalesce_tcp(with_syn), with_syn) == [[0, 1], 2, [3, 4]]
    empty_ack = stream(1, size=0, seq=1000 + 2 * 1400)[0]
    with_ack = [a[0], a[1], empty_ack, a[2]]
    assert shape(coalesce_tcp(with_ack), with_ack) == [[0, 1], 2, 3]


@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("window", lambda p: p[:54] + b"\x00\x01" + p[56:]),
        ("hop_limit", lambda p: p[:7] + b"\x01" + p[8:]),
        ("traffic_class", lambda p: p[:1] + b"\x10" + p[2:]),
        ("timestamp", lambda p: p[: -1400 - 1] + b"\x00" + p[-1400:]),
        ("urgent_pointer", lambda p: p[:58] + b"\x00\x01" + p[60:]),
    ],
)
def test_differing_headers_do_not_merge(name: str, second: Callable[[bytes], bytes]) -> None:
    a = stream(2)
    changed = refresh_tcp_checksum(second(a[1]), 40)
    inputs = [a[0], changed]
    assert shape(coalesce_tcp(inputs), inputs) == [0, 1], name
    assert shape(coalesce_tcp(a), a) == [[0, 1]]


def refresh_tcp_checksum(packet: bytes, l4: int) -> bytes:
    out = bytearray(packet)
    out[l4 + 16 : l4 + 18] = b"\x00\x00"
    pseudo = ref_pseudo(packet, l4, PROTO_TCP, len(packet) - l4)
    out[l4 + 16 : l4 + 18] = g.ref_checksum(pseudo + bytes(out[l4:])).to_bytes(2, "big")
    return bytes(out)


@pytest.mark.parametrize("flags", ["FA", "RA", "UA", "CA", "SA", "P"])
def test_segments_with_other_flags_pass_alone(flags: str) -> None:
    a = stream(2)
    odd = stream(3, flags=flags)[2]
    inputs = [a[0], a[1], odd]
    assert shape(coalesce_tcp(inputs), inputs) == [[0, 1], 2]
    first = [odd, *stream(2, seq=1000 + 3 * 1400)]
    assert shape(coalesce_tcp(first), first) == [0, [1, 2]]


def test_psh_and_short_segments_end_a_run() -> None:
    a = stream(4)
    psh = stream(4, flags="PA")
    inputs = [a[0], psh[1], a[2], a[3]]
    items = coalesce_tcp(inputs)
    assert shape(items, inputs) == [[0, 1], [2, 3]]
    assert items[0][1][40 + 13] == PSH | ACK and items[1][1][40 + 13] == ACK
    short = stream(2, size=700, seq=1000 + 1400)  # 700-octet segments go on at 2100
    inputs = [a[0], short[0], short[1]]
    assert shape(coalesce_tcp(inputs), inputs) == [[0, 1], 2]
    inputs = [stream(1, size=700)[0], stream(1, size=1400, seq=1700)[0]]  # 1400 after 700
    assert shape(coalesce_tcp(inputs), inputs) == [0, 1]


def test_corrupted_segments_are_never_merged() -> None:
    a = stream(4)
    bad = bytearray(a[1])
    bad[-1] ^= 0xFF  # payload changed, checksum not
    inputs = [a[0], bytes(bad), a[2], a[3]]
    assert shape(coalesce_tcp(inputs), inputs) == [0, 1, [2, 3]]
    bad_head = bytearray(a[0])
    bad_head[-700] ^= 1
    inputs = [bytes(bad_head), a[1], a[2]]
    assert shape(coalesce_tcp(inputs), inputs) == [0, [1, 2]]
    v4 = stream(3, v4=True)
    bad_ip = bytearray(v4[1])
    bad_ip[10] ^= 0x40  # a wrong IPv4 header checksum
    inputs = [v4[0], bytes(bad_ip), v4[2]]
    assert shape(coalesce_tcp(inputs), inputs) == [0, 1, 2]


def test_checked_runs_merge_the_same_without_looking_at_checksums() -> None:
    """``checked`` (every packet opened by an AEAD): the same runs as the checked path for
    good segments, and a wrong checksum, which only the sender could have written, no longer
    splits a run."""
    for inputs in (stream(6), stream(5, v4=True), stream(4) + stream(3, v4=True)):
        assert coalesce_tcp(inputs, checked=True) == coalesce_tcp(inputs)
    a = stream(4)
    bad = bytearray(a[1])
    bad[-1] ^= 0xFF
    inputs = [a[0], bytes(bad), a[2], a[3]]
    assert run_sizes(coalesce_tcp(inputs, checked=True)) == [4]
    assert run_sizes(coalesce_tcp(inputs)) == [1, 1, 2]


def test_ipv4_identification_rules() -> None:
    """Linux GRO (inet_gro_flush): IDs increment, or with DF stay fixed (RFC 6864)."""
    incrementing = stream(3, v4=True, ip_id=0xFFFF)  # wraps
    assert shape(coalesce_tcp(incrementing), incrementing) == [[0, 1, 2]]
    fixed_df = stream(3, v4=True, ip_id=None)
    assert len(coalesce_tcp(fixed_df)) == 1
    fixed = stream(3, v4=True, ip_id=None, df=False)
    assert shape(coalesce_tcp(fixed), fixed) == [0, 1, 2]
    mixed_df = stream(3, v4=True, df=False) + stream(1, v4=True, seq=1000 + 3 * 1400)
    assert shape(coalesce_tcp(mixed_df), mixed_df) == [[0, 1, 2], 3]
    # A run decides at its second segment (inet_gro_flush) and does not switch afterwards.
    base = stream(4, v4=True)
    for ids, sizes in (
        ([5, 5, 7, 8], [2, 2]),  # fixed, then incrementing: a new run
        ([5, 6, 5, 5], [2, 2]),  # incrementing, then fixed: a new run
        ([5, 5, 5, 5], [4]),
        ([5, 6, 7, 8], [4]),
    ):
        inputs = [with_ip_id(packet, ident) for packet, ident in zip(base, ids, strict=True)]
        assert run_sizes(coalesce_tcp(inputs)) == sizes, ids


def run_sizes(items: list[tuple[bytes, bytes]]) -> list[int]:
    """How many segments each output stands for."""
    sizes = []
    for vnet, packet in items:
        header, _ = parse_vnet_untrusted(vnet + packet)
        sizes.append(len(segment_untrusted(header, packet)) if vnet != VNET_NONE else 1)
    return sizes


def with_ip_id(packet: bytes, ident: int) -> bytes:
    """An IPv4 packet with another Identification and its header checksum recomputed."""
    out = bytearray(packet)
    out[4:6] = ident.to_bytes(2, "big")
    out[10:12] = b"\x00\x00"
    out[10:12] = g.ref_checksum(bytes(out[:20])).to_bytes(2, "big")
    return bytes(out)


def test_an_unkeyable_packet_of_a_connection_ends_every_run() -> None:
    """An IPv6 packet with an extension header may be a segment of an open run: merging
    past it would reorder the connection."""
    a = stream(3)
    hbh = bytes(IPv6(src=V6[0], dst=V6[1]) / HopByHop() / TCP(sport=40000, dport=443))
    inputs = [a[0], a[1], hbh, a[2]]
    assert shape(coalesce_tcp(inputs), inputs) == [[0, 1], 2, 3]


def test_coalescer_limits() -> None:
    a = stream(10, size=100)
    assert shape(coalesce_tcp(a, max_segments=4), a) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    three = 72 + 3 * 100  # IPv6, TCP with timestamps, three payloads
    assert shape(coalesce_tcp(a, max_length=three), a) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], 9]
    assert coalesce_tcp([]) == []
    junk = [b"", b"\x60", bytes(40), b"\x45" + bytes(59), bytes(range(256))]
    assert coalesce_tcp(junk) == [(VNET_NONE, p) for p in junk]


# -- rejects ---------------------------------------------------------------------------------------


def v6_tso(size: int = 3000, gso: int = 1000) -> tuple[VnetHeader, bytes]:
    packet = super_tcp(False, size)
    return tso(False, packet, gso), packet


def with_byte(packet: bytes, offset: int, value: int) -> bytes:
    return packet[:offset] + bytes([value]) + packet[offset + 1 :]


@functools.cache
def reject_cases() -> dict[str, tuple[VnetHeader, bytes, str]]:
    header, packet = v6_tso()
    v4 = super_tcp(True, 3000, ip_fields={"flags": "DF"})
    h4 = tso(True, v4, 1000)
    udp = kernel_form(bytes(ip(False) / UDP() / PAYLOAD[:3000]), 40, PROTO_UDP, 6)
    uso = VnetHeader(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, 48, 1000, 40, 6)
    routed = bytes(
        IPv6(src=V6[0], dst=V6[1])
        / inet6.IPv6ExtHdrRouting(addresses=[V6[1]])
        / TCP()
        / PAYLOAD[:3000]
    )
    return {
        "gso_size_0": (header._replace(gso_size=0), packet, "bad_gso"),
        "hdr_len_beyond": (header._replace(hdr_len=len(packet) + 1), packet, "bad_gso"),
        "too_many_segments": (header._replace(gso_size=23), packet, "bad_gso"),  # 131
        "too_long": (header, packet + bytes(MAX_PACKET_LENGTH - len(packet) + 1), "bad_length"),
        "v4_type_on_v6": (header._replace(gso_type=VIRTIO_NET_HDR_GSO_TCPV4), packet, "bad_gso"),
        "v6_type_on_v4": (h4._replace(gso_type=VIRTIO_NET_HDR_GSO_TCPV6), v4, "bad_gso"),
        "tcp_type_on_udp": (uso._replace(gso_type=VIRTIO_NET_HDR_GSO_TCPV6), udp, "bad_gso"),
        "udp_type_on_tcp": (uso, packet, "bad_gso"),
        "ufo": (uso._replace(gso_type=VIRTIO_NET_HDR_GSO_UDP), udp, "gso_unsupported"),
        "routing_header": (header._replace(csum_start=64), routed, "gso_unsupported"),
        "ecn_on_udp": (uso._replace(gso_type=0x85), udp, "bad_vnet_header"),
        "csum_start_wrong": (header._replace(csum_start=44), packet, "bad_vnet_header"),
        "csum_offset_wrong": (header._replace(csum_offset=6), packet, "bad_vnet_header"),
        "udp_csum_offset_wrong": (uso._replace(csum_offset=16), udp, "bad_vnet_header"),
        "unknown_flag": (header._replace(flags=5), packet, "bad_vnet_header"),
        "no_payload": (header, super_tcp(False, 0), "bad_gso"),
        "syn": (header, super_tcp(False, 3000, flags="S"), "bad_gso"),
        "rst": (header, super_tcp(False, 3000, flags="RA"), "bad_gso"),
        "data_offset_4": (header, with_byte(packet, 52, 0x40), "truncated"),
        "data_offset_beyond": (
            header,
            with_byte(super_tcp(False, 10, options=[]), 52, 0xF0),
            "truncated",
        ),
        "ipv6_length_short": (header, packet[:-1], "bad_length"),
        "ipv6_length_long": (header, packet + b"\x00", "bad_length"),
        "ipv4_length": (h4, v4[:-1], "bad_length"),
        "ipv4_ihl_4": (h4, with_byte(v4, 0, 0x44), "truncated"),
        "ipv4_fragment": (h4, with_byte(v4, 6, 0x60), "bad_gso"),
        "version_5": (header, with_byte(packet, 0, 0x50), "bad_version"),
        "truncated_ip": (header, packet[:19], "truncated"),
        "truncated_v6": (header, packet[:39], "truncated"),
    }


@pytest.mark.parametrize("name", list(reject_cases()))
def test_segment_rejects(name: str) -> None:
    header, packet, reason = reject_cases()[name]
    for finish in (True, False):
        with pytest.raises(BadPacket) as info:
            segment_untrusted(header, packet, finish_checksum=finish)
        assert info.value.reason == reason, (name, str(info.value))


def test_segment_limit_is_a_parameter() -> None:
    header, packet = v6_tso(3000, 23)
    assert len(segment_untrusted(header, packet, max_segments=131)) == 131
    header = header._replace(gso_size=24)
    assert len(segment_untrusted(header, packet)) == MAX_SEGMENTS - 3
    # hdr_len is a hint: any value within the packet is accepted (the forwarding path gives
    # the whole first segment's length), and the headers are re-derived.
    expected = segment_untrusted(header, packet)
    for hint in (0, 1, 40, len(packet)):
        assert segment_untrusted(header._replace(hdr_len=hint), packet) == expected


@pytest.mark.parametrize(
    ("start", "offset", "gso_type", "reason"),
    [
        (20, 16, 0, "bad_vnet_header"),  # inside the IPv6 header
        (40, 15, 0, "bad_vnet_header"),  # odd offset
        (40, 5000, 0, "bad_vnet_header"),  # beyond the packet
        (3071, 0, 0, "bad_vnet_header"),  # the field would end past the packet
        (40, 16, VIRTIO_NET_HDR_GSO_TCPV6, "bad_gso"),  # segment it instead
        (40, 16, 0x40, "bad_vnet_header"),
    ],
)
def test_complete_checksum_rejects(start: int, offset: int, gso_type: int, reason: str) -> None:
    _, packet = v6_tso()
    with pytest.raises(BadPacket) as info:
        complete_checksum(VnetHeader(NEEDS_CSUM, gso_type, 0, 1000, start, offset), packet)
    assert info.value.reason == reason


# -- fuzz ------------------------------------------------------------------------------------------


def tun_read_seeds() -> list[bytes]:
    seeds = []
    for v4 in (False, True):
        packet = super_tcp(v4, 2500, flags="FPA")
        seeds.append(tso(v4, packet, 600).to_bytes() + packet)
        l4 = 20 if v4 else 40
        udp = kernel_form(bytes(ip(v4) / UDP() / PAYLOAD[:1500]), l4, PROTO_UDP, 6)
        seeds.append(build_vnet(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, l4 + 8, 500, l4, 6) + udp)
        small = kernel_form(bytes(ip(v4) / TCP(flags="PA") / b"hello"), l4, PROTO_TCP, 16)
        seeds.append(build_vnet(NEEDS_CSUM, 0, 0, 0, l4, 16) + small)
    return seeds


TUN_READS = tun_read_seeds()


def segment_read(read: bytes, finish: bool) -> list[bytes]:
    header, packet = parse_vnet_untrusted(read)
    return segment_untrusted(header, packet, finish_checksum=finish)


@fuzz_settings(300)
@given(mutations(TUN_READS, hot=VNET_HEADER_LENGTH + 80) | st.binary(max_size=80))
def test_mutated_tun_reads(read: bytes) -> None:
    full = accepts(lambda r: segment_read(r, True), read)
    partial = accepts(lambda r: segment_read(r, False), read)
    assert (full is None) == (partial is None)  # the same packets are refused in both modes
    event("accepted" if full is not None else "refused")
    if full is not None and partial is not None:
        assert [len(s) for s in full] == [len(s) for s in partial]
        assert all(len(s) <= MAX_PACKET_LENGTH for s in full)


TUN_PAIRS = [(header, bytes(packet)) for header, packet in map(parse_vnet_untrusted, TUN_READS)]
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
FIELD_VALUES = [
    st.sampled_from([0, 1, 2, 3]) | u8,  # flags
    st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x84, 0x85]) | u8,  # gso_type
    st.sampled_from([0, 1, 60, 0xFFFF]) | u16,  # hdr_len
    st.sampled_from([1, 2, 19, 20, 599, 0xFFFF]) | u16,  # gso_size
    st.sampled_from([0, 19, 20, 24, 40, 48]) | u16,  # csum_start
    st.sampled_from([0, 2, 6, 16, 17]) | u16,  # csum_offset
]


@st.composite
def skewed_headers(draw: st.DrawFn) -> tuple[VnetHeader, bytes]:
    """The right header of a valid packet with one to three fields replaced."""
    header, packet = draw(st.sampled_from(TUN_PAIRS))
    fields = list(header)
    for index in draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)):
        fields[index] = draw(FIELD_VALUES[index])
    return VnetHeader(*fields), packet


@fuzz_settings(300)
@given(skewed_headers())
def test_any_header_over_valid_packets(pair: tuple[VnetHeader, bytes]) -> None:
    header, packet = pair
    for finish in (True, False):
        segments = accepts(
            functools.partial(segment_untrusted, header, finish_checksum=finish), packet
        )
        if segments is not None and header.gso_type & 0x7F:
            event("segmented")
            # Whatever was accepted segments into packets that carry the same payload.
            assert b"".join(payload_of(s) for s in segments) == payload_of(packet)
    accepts(functools.partial(complete_checksum, header), packet)


def coalesce_seeds() -> list[bytes]:
    return [*stream(3), *stream(2, v4=True), *stream(2, sport=7, size=300)]


COALESCE_SEEDS = coalesce_seeds()


def test_fuzz_seeds_are_accepted() -> None:
    for read in TUN_READS:
        assert len(segment_read(read, True)) == len(segment_read(read, False)) >= 1
    assert len(coalesce_tcp(COALESCE_SEEDS)) == 3


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """The seeds in order, some left out, some mutated, some repeated; sometimes shuffled."""
    out: list[bytes] = []
    for seed in COALESCE_SEEDS:
        choice = draw(st.integers(0, 7))
        if choice == 0:
            continue
        out.append(draw(mutations([seed], hot=80)) if choice == 1 else seed)
        if choice == 2:
            out.append(seed)
    if draw(st.integers(0, 3)) == 0:
        out = draw(st.permutations(out))
    return out


@fuzz_settings(200)
@given(batches() | st.lists(mutations(COALESCE_SEEDS, hot=80), max_size=6))
def test_coalescer_never_raises_and_loses_nothing(inputs: list[bytes]) -> None:
    items = coalesce_tcp(inputs)
    produced = 0
    for vnet, packet in items:
        if vnet == VNET_NONE:
            assert any(packet is p for p in inputs)
            produced += 1
        else:
            # Our own super-packets are accepted by our own segmentation, run for run.
            header, view = parse_vnet_untrusted(vnet + packet)
            produced += len(segment_untrusted(header, view))
    assert produced == len(inputs)
    event(f"{len(inputs) - len(items)} merged away")


@fuzz_settings(60)
@given(st.integers(1, 4000), st.integers(1, 1500), st.booleans(), st.sampled_from(["A", "PA"]))
def test_segment_coalesce_round_trip(size: int, gso: int, v4: bool, flags: str) -> None:
    """Any valid TCP super-packet (up to MAX_SEGMENTS segments) survives segmentation and
    coalescing unchanged."""
    if -(-size // gso) > MAX_SEGMENTS:
        gso = -(-size // MAX_SEGMENTS)
    ip_fields = {"flags": "DF", "id": size} if v4 else {}
    packet = super_tcp(v4, size, flags=flags, ip_fields=ip_fields)
    header = tso(v4, packet, gso)
    segments = segment_untrusted(header, packet)
    items = coalesce_tcp(segments)
    if len(segments) == 1:
        assert items == [(VNET_NONE, segments[0])]
    else:
        assert items == [(header.to_bytes(), packet)]
    l4 = 20 if v4 else 40
    for segment in segments:
        pseudo = ref_pseudo(segment, l4, PROTO_TCP, len(segment) - l4)
        assert g.ref_checksum(pseudo + segment[l4:]) == 0


def test_header_round_trip_struct() -> None:
    for fields in [(0, 0, 0, 0, 0, 0), (3, 0x84, 0xFFFF, 1, 2, 0xFFFF)]:
        raw = struct.pack("<BBHHHH", *fields)
        assert parse_vnet_untrusted(raw)[0] == VnetHeader(*fields)


# -- complete_read_untrusted: the fast way for one checksum-partial read -------------------------


def _partial_read(
    proto: int, payload: bytes, *, start: int = 40, offset: int | None = None
) -> bytes:
    import struct
    from ipaddress import IPv6Address

    from mipnode.wire.offload import build_vnet, pseudo_header_sum_v6

    src, dst = IPv6Address("2001:db8::1").packed, IPv6Address("2001:db8::2").packed
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", 1000, 2000, 7, 9, 5 << 4, 0x18, 512, 0, 0) + payload
        field = 16
    else:
        l4 = struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload
        field = 6
    packet = bytearray(struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + src + dst + l4)
    struct.pack_into("!H", packet, 40 + field, pseudo_header_sum_v6(src, dst, len(l4), proto))
    vnet = build_vnet(1, 0, 0, 0, start, field if offset is None else offset)
    return vnet + bytes(packet)


@pytest.mark.parametrize("proto", [6, 17])
@pytest.mark.parametrize("size", [0, 1, 63, 64, 1339])
def test_complete_read_gives_what_the_general_path_and_scapy_give(proto: int, size: int) -> None:
    from scapy.layers.inet6 import IPv6

    from mipnode.wire.offload import complete_read_untrusted

    data = _partial_read(proto, (bytes(range(256)) * 6)[:size])
    fast = complete_read_untrusted(data)
    header, packet = parse_vnet_untrusted(data)
    assert fast == complete_checksum(header, packet)
    parsed = IPv6(fast)
    sent = parsed.payload.chksum
    del parsed.payload.chksum  # scapy computes it afresh when it builds the packet
    assert IPv6(bytes(parsed)).payload.chksum == sent


def test_complete_read_refuses_what_the_general_path_refuses() -> None:
    from mipnode.wire.offload import complete_read_untrusted

    bad = _partial_read(6, b"x" * 100, offset=200)  # checksum field beyond the packet
    with pytest.raises(BadPacket):
        complete_read_untrusted(bad)
    with pytest.raises(BadPacket):
        complete_read_untrusted(bad[:5])
