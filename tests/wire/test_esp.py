"""ESP security associations (tunnels/esp.py): known answers, round trips, the anti-replay
window, sequence exhaustion, rejects, and scapy / tshark as independent oracles.

Known answers, byte for byte, from documents outside this repository:

- RFC 7634 Appendix A, the ChaCha20-Poly1305 ESP example. Its IV (10 11 .. 17) is not its
  sequence number (5), and ``EspOutbound`` always sends the sequence number as IV, so the seal
  direction is checked on the internal ``_seal_with_iv`` (``seal`` minus the IV choice); the
  receive direction opens the RFC's whole packet with the public ``EspInbound`` (a receiver takes
  the IV from the packet).
- draft-mcgrew-gcm-test-01 §4, the AES-GCM-ESP cases RFC 4106 implementations test with: all
  three AES-128 cases with a 4-octet sequence number, checked the same way. One of them has SPI 0,
  which RFC 4303 §2.1 reserves, so only its seal direction is checked (we refuse such an SA). The
  other cases use extended sequence numbers or AES-192/256, which we do not offer.

Oracles:

- scapy 2.8 ``SecurityAssociation`` ("AES-GCM", "CHACHA20-POLY1305", tunnel mode). Its nonce is
  salt || the IV in the packet, its AAD SPI || Seq, its padding the RFC 4303 default to a 4-octet
  boundary; given ``iv`` = the 64-bit sequence number its packets are byte-identical to ours. It
  decrypts ours, and we open its packets sealed with an unrelated IV.
- tshark 4.0.17 with ``esp_sa`` UAT records from ``esp_sa_uat_line`` decrypts AES-GCM and, with
  ``esp.enable_authentication_check``, verifies the ICV; native ESP (IPv6 Next Header 50) and
  UDP-encapsulated ESP (RFC 3948) over IPv4 and IPv6. For UDP, ``-d udp.port==4191,udpencap``:
  ``esp`` is not a UDP-port protocol in tshark 4.0. tshark 4.0 has no ChaCha20-Poly1305 ESP: it
  refuses a UAT naming it ("invalid value") and shows such packets as SPI + Seq + opaque data.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import wire_goldens as g
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from encap import DSMIP_UDP_PORT, build_udp_ipv4

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import build_ipv6_packet
from mipnode.wire.packets import udp_in_ipv6
from tunnels.esp import (
    ESP_OVERHEAD_MAX,
    REPLAY_WINDOW,
    SEQ_MAX,
    SEQ_SOFT_LIMIT,
    SUITE_AES_GCM,
    SUITE_CHACHA20_POLY1305,
    SUITE_NAMES,
    EspInbound,
    EspOutbound,
    _seal_with_iv,
    esp_sa_uat_line,
    key_length,
    spi_of,
)

AES, CHACHA = SUITE_AES_GCM, SUITE_CHACHA20_POLY1305
SUITES = [AES, CHACHA]
AEADS: dict[int, Callable[[bytes], AESGCM | ChaCha20Poly1305]] = {
    AES: AESGCM,
    CHACHA: ChaCha20Poly1305,
}
SPI = 0x8000_0001
NH_IPV6, NH_IPV4 = 41, 4
PAYLOAD = b"inner packet"


def keymat(suite: int, base: int = 0x40) -> bytes:
    return bytes(range(base, base + key_length(suite)))


def sealed(out: EspOutbound, payload: bytes = PAYLOAD, next_header: int = NH_IPV6) -> bytes:
    packet = out.seal(payload, next_header)
    assert packet is not None
    return packet


def packet_at(seq: int, suite: int = AES, payload: bytes = PAYLOAD) -> bytes:
    """A genuine packet of the test SA with sequence number ``seq``."""
    return sealed(EspOutbound(suite, SPI, keymat(suite), next_seq=seq), payload)


def raw_packet(plaintext: bytes, seq: int = 1, suite: int = AES) -> bytes:
    """An authentic packet around an arbitrary AEAD plaintext, built with the AEAD directly."""
    km = keymat(suite)
    header, iv = struct.pack("!II", SPI, seq), seq.to_bytes(8, "big")
    return header + iv + AEADS[suite](km[:-4]).encrypt(km[-4:] + iv, plaintext, header)


def reason(inbound: EspInbound, packet: bytes) -> str:
    with pytest.raises(BadPacket) as info:
        inbound.open_untrusted(packet)
    return info.value.reason


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- known answers ---------------------------------------------------------------------------

# (name, suite, keymat = key || salt, SPI, Seq, IV, AEAD plaintext with trailer, whole packet)
KNOWN_ANSWERS = [
    (
        "rfc7634_appendix_a",
        CHACHA,
        h("80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f 90 91 92 93 94 95 96 97")
        + h("98 99 9a 9b 9c 9d 9e 9f a0 a1 a2 a3"),
        0x01020304,
        5,
        h("10 11 12 13 14 15 16 17"),
        h(
            """45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05 c0 00 02 05 08 00 5b 7a 3a 08 00 00
            55 3b ec 10 00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b
            1c 1d 1e 1f 20 21 22 23 24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33 34 35 36 37
            01 02 02 04"""
        ),
        h(
            """01 02 03 04 00 00 00 05 10 11 12 13 14 15 16 17
            24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b 67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef
            40 7a e5 c6 14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7 2a a7 1e 7c 4c 4f 64 c9
            be fe 2f ac c6 38 e8 f3 cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da 91 65 b8 28
            29 f6 41 e0 76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43"""
        ),
    ),
    (
        "mcgrew_gcm_test_01_page_8",
        AES,
        h("feffe9928665731c6d6a8f9467308308 cafebabe"),
        0x0000A5F8,
        0x0000000A,
        h("facedbaddecaf888"),
        h(
            """4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100
            00010000000000000373697009637962 65726369747902646b00000100010001"""
        ),
        h(
            """0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304
            a5a5897d33ae530f1ba76d5d114d2a5c 3de81827c10e9a4f51330d0eec416642
            cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a"""
        ),
    ),
    (
        "mcgrew_gcm_test_01_page_10_spi_0",
        AES,
        bytes(16 + 4),
        0x00000000,
        0x00000001,
        bytes(8),
        h(
            """4500003c99c500008001cb7a40679318 010101010800075c0200440061626364
            65666768696a6b6c6d6e6f7071727374 75767761626364656667686901020201"""
        ),
        h(
            """00000000000000010000000000000000 4688daf2f973a392732909c331d56d60
            f694abaa414b5e7ff5fdcdfff5e9a284 456476492719ffb64de7d9dca1e1d894
            bc3bd57873ed4d181d19d4d5c8c18af3 f821d496eeb096e98ad2b69e4799c71d"""
        ),
    ),
    (
        "mcgrew_gcm_test_01_page_17_seq_max",
        AES,
        h("7d773d00c144c525ac619d18c84a3f47 d9664267"),
        0x335467AE,
        0xFFFFFFFF,
        h("43457e9182443bc6"),
        h("01020201"),
        h("335467aeffffffff43457e9182443bc6 437f866bcb3f699fe9b0822bac961c45 04bef270"),
    ),
]


@pytest.mark.parametrize(
    ("suite", "km", "spi", "seq", "iv", "plaintext", "packet"),
    [k[1:] for k in KNOWN_ANSWERS],
    ids=[k[0] for k in KNOWN_ANSWERS],
)
def test_known_answer(
    suite: int, km: bytes, spi: int, seq: int, iv: bytes, plaintext: bytes, packet: bytes
) -> None:
    # The published plaintext carries the RFC 4303 §2.4 default trailer: split it.
    pad, next_header = plaintext[-2], plaintext[-1]
    payload = plaintext[: -2 - pad]
    assert plaintext[-2 - pad : -2] == bytes(range(1, pad + 1))
    aead = AEADS[suite](km[:-4])
    assert _seal_with_iv(aead, km[-4:], spi, seq, iv, payload, next_header) == packet
    if spi >= 256:
        assert EspInbound(suite, spi, km).open_untrusted(packet) == (next_header, payload)
    else:  # SPI 0 is reserved (RFC 4303 §2.1): no such SA.
        with pytest.raises(ValueError):
            EspInbound(suite, spi, km)


def test_seal_uses_the_sequence_number_as_iv() -> None:
    """``seal`` is ``_seal_with_iv`` with IV = 64-bit Seq (RFC 4106 §3.1 counter IV)."""
    km = keymat(AES)
    out = EspOutbound(AES, SPI, km, next_seq=0x1234_5678)
    packet = sealed(out, b"x" * 13)
    expected = _seal_with_iv(
        AESGCM(km[:-4]), km[-4:], SPI, 0x1234_5678, h("0000000012345678"), b"x" * 13, NH_IPV6
    )
    assert packet == expected
    assert packet[:16] == h("80000001 12345678 0000000012345678")


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("next_header", [NH_IPV6, NH_IPV4])
@pytest.mark.parametrize("suite", SUITES, ids=[SUITE_NAMES[s] for s in SUITES])
def test_round_trip_and_layout(suite: int, next_header: int) -> None:
    km = keymat(suite)
    out, inb = EspOutbound(suite, SPI, km), EspInbound(suite, SPI, km)
    independent = AEADS[suite](km[:-4])
    overheads = set()
    for n in [*range(71), 1400]:
        payload = bytes((7 * i + n) & 0xFF for i in range(n))
        packet = sealed(out, payload, next_header)
        pad = -(n + 2) % 4
        assert len(packet) == 8 + 8 + n + pad + 2 + 16
        assert packet[:16] == struct.pack("!IIQ", SPI, out.seq, out.seq)
        plaintext = independent.decrypt(km[-4:] + packet[8:16], packet[16:], packet[:8])
        assert plaintext == payload + bytes(range(1, pad + 1)) + bytes((pad, next_header))
        assert inb.open_untrusted(packet) == (next_header, payload)
        overheads.add(len(packet) - n)
    assert max(overheads) == ESP_OVERHEAD_MAX == 37
    assert out.seq == 72


def test_key_length_and_spi_of() -> None:
    assert (key_length(AES), key_length(CHACHA)) == (20, 36)
    with pytest.raises(ValueError):
        key_length(3)
    assert spi_of(packet_at(1)) == SPI
    assert spi_of(h("ffffffff 00000001")) == 0xFFFFFFFF


@pytest.mark.parametrize(
    "make",
    [
        lambda: EspOutbound(3, SPI, bytes(20)),
        lambda: EspOutbound(AES, SPI, bytes(36)),
        lambda: EspInbound(CHACHA, SPI, bytes(20)),
        lambda: EspOutbound(AES, 0, bytes(20)),
        lambda: EspInbound(AES, 255, bytes(20)),
        lambda: EspInbound(AES, 2**32, bytes(20)),
        lambda: EspOutbound(AES, SPI, bytes(20), next_seq=0),
        lambda: EspOutbound(AES, SPI, bytes(20), next_seq=SEQ_MAX + 2),
        lambda: EspInbound(AES, SPI, bytes(20), window=31),
        lambda: EspOutbound(AES, SPI, bytes(20)).seal(b"", 256),
        lambda: EspOutbound(AES, SPI, bytes(20)).seal(b"", -1),
    ],
)
def test_bad_parameters(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


# --- anti-replay (RFC 4303 §3.4.3) -----------------------------------------------------------


def test_duplicate_is_a_replay() -> None:
    inb = EspInbound(AES, SPI, keymat(AES))
    packet = packet_at(1)
    assert inb.open_untrusted(packet) == (NH_IPV6, PAYLOAD)
    assert reason(inb, packet) == "esp_replay"
    assert inb.open_untrusted(packet_at(2)) == (NH_IPV6, PAYLOAD)


@pytest.mark.parametrize("window", [32, 1000, REPLAY_WINDOW])
def test_window_edges(window: int) -> None:
    inb = EspInbound(AES, SPI, keymat(AES), window=window)
    top = 5000
    inb.open_untrusted(packet_at(top))
    assert reason(inb, packet_at(top - window)) == "esp_replay"  # just left of the window
    edge = packet_at(top - window + 1)  # the left edge itself
    assert inb.open_untrusted(edge) == (NH_IPV6, PAYLOAD)
    assert reason(inb, edge) == "esp_replay"
    assert reason(inb, packet_at(top)) == "esp_replay"
    assert inb.open_untrusted(packet_at(top - 1)) == (NH_IPV6, PAYLOAD)


def test_far_ahead_slides_the_window() -> None:
    inb = EspInbound(AES, SPI, keymat(AES))
    for seq in (1, 2, 3):
        inb.open_untrusted(packet_at(seq))
    far = 3 + 100_000
    assert inb.open_untrusted(packet_at(far)) == (NH_IPV6, PAYLOAD)
    for old in (1, 3, 4, far - REPLAY_WINDOW):  # received or not, they are too old now
        assert reason(inb, packet_at(old)) == "esp_replay"
    assert inb.open_untrusted(packet_at(far - REPLAY_WINDOW + 1)) == (NH_IPV6, PAYLOAD)
    assert inb.open_untrusted(packet_at(far + 1)) == (NH_IPV6, PAYLOAD)


def test_out_of_order_within_the_window_accepted_once_each() -> None:
    inb = EspInbound(AES, SPI, keymat(AES))
    packets = {seq: packet_at(seq, payload=seq.to_bytes(4, "big")) for seq in range(1, 300)}
    order = list(packets)
    random.Random(4303).shuffle(order)
    for seq in order:
        assert inb.open_untrusted(packets[seq]) == (NH_IPV6, seq.to_bytes(4, "big"))
    random.Random(4106).shuffle(order)
    for seq in order:
        assert reason(inb, packets[seq]) == "esp_replay"


@pytest.mark.parametrize("seed", range(4))
def test_the_window_agrees_with_a_set_of_everything_received(seed: int) -> None:
    """A differential check of the window against the plainest oracle: a set of every
    sequence number accepted and the highest one. Reordering, duplicates, jumps beyond the
    window and back, over a few thousand packets."""
    rng = random.Random(seed)
    window = 64
    inb = EspInbound(AES, SPI, keymat(AES), window=window)
    seen: set[int] = set()
    top = 0
    packets = {}
    for _ in range(3000):
        step = rng.choice((1, 1, 1, 2, -1, -3, -20, -63, -64, -65, 0, 70, 5000))
        seq = max(0, top + step)
        if seq not in packets:
            packets[seq] = packet_at(seq) if seq else b""
        should = seq > 0 and seq not in seen and seq > top - window
        if seq == 0:
            with pytest.raises(BadPacket):
                inb.open_untrusted(packet_at(1)[:4] + bytes(4) + packet_at(1)[8:])
            continue
        try:
            inb.open_untrusted(packets[seq])
            accepted = True
        except BadPacket as exc:
            assert exc.reason == "esp_replay"
            accepted = False
        assert accepted == should, (seq, top)
        if accepted:
            seen.add(seq)
            top = max(top, seq)


def test_a_full_window_costs_hundreds_of_octets_not_kilobytes() -> None:
    """A home agent keeps an inbound SA (or two, across a rekey) per binding: the 2,048-packet
    window must not cost what a slot per packet would (16 KB and more per SA)."""
    import tracemalloc

    packets = [packet_at(seq) for seq in range(1, 2100)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sas = [EspInbound(AES, SPI, keymat(AES)) for _ in range(20)]
        for inb in sas:
            for p in packets[::7]:
                inb.open_untrusted(p)
        per_sa = (tracemalloc.get_traced_memory()[0] - before) / len(sas)
    finally:
        tracemalloc.stop()
    assert per_sa < 1024, per_sa


def test_forged_packets_do_not_move_the_window() -> None:
    inb = EspInbound(AES, SPI, keymat(AES))
    top = 3000
    inb.open_untrusted(packet_at(top))
    far = top + 100_000
    forged = bytearray(packet_at(far))
    forged[20] ^= 0x01  # one ciphertext bit
    assert reason(inb, bytes(forged)) == "esp_auth"
    moved = bytearray(packet_at(top + 1))
    moved[4:8] = far.to_bytes(4, "big")  # Seq is in the AAD (RFC 4106 §5)
    assert reason(inb, bytes(moved)) == "esp_auth"
    # Had either slid the window, these would be too old or duplicates now.
    assert inb.open_untrusted(packet_at(top - REPLAY_WINDOW + 1)) == (NH_IPV6, PAYLOAD)
    assert inb.open_untrusted(packet_at(top + 1)) == (NH_IPV6, PAYLOAD)
    assert inb.open_untrusted(packet_at(far)) == (NH_IPV6, PAYLOAD)


def test_sequence_number_zero_is_never_valid() -> None:
    """RFC 4303 §3.3.3: the first packet is Seq 1; an authentic Seq 0 is still dropped."""
    zero = raw_packet(b"x" + bytes((1, 1, NH_IPV6)), seq=0)
    fresh = EspInbound(AES, SPI, keymat(AES))
    assert reason(fresh, zero) == "esp_replay"
    fresh.open_untrusted(packet_at(5))
    assert reason(fresh, zero) == "esp_replay"


# --- sequence exhaustion (RFC 4303 §3.3.3) ---------------------------------------------------


def test_sequence_exhaustion() -> None:
    km = keymat(AES)
    out = EspOutbound(AES, SPI, km, next_seq=SEQ_MAX)
    assert out.needs_rekey
    last = sealed(out)
    assert last[4:16] == h("ffffffff 00000000ffffffff")
    assert out.seq == SEQ_MAX
    assert out.seal(PAYLOAD, NH_IPV6) is None
    assert out.seal(b"", NH_IPV6) is None
    assert out.seq == SEQ_MAX
    assert EspInbound(AES, SPI, km).open_untrusted(last) == (NH_IPV6, PAYLOAD)
    assert EspOutbound(AES, SPI, km, next_seq=SEQ_MAX + 1).seal(PAYLOAD, NH_IPV6) is None


def test_needs_rekey_at_the_soft_limit() -> None:
    out = EspOutbound(AES, SPI, keymat(AES), next_seq=SEQ_SOFT_LIMIT - 1)
    assert not out.needs_rekey
    sealed(out)  # Seq 2^31 - 1
    assert not out.needs_rekey
    sealed(out)  # Seq 2^31
    assert out.needs_rekey
    assert not EspOutbound(AES, SPI, keymat(AES)).needs_rekey


# --- rejects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=[SUITE_NAMES[s] for s in SUITES])
def test_wrong_key_and_wrong_salt(suite: int) -> None:
    packet = packet_at(1, suite)
    km = keymat(suite)
    wrong_key = EspInbound(suite, SPI, bytes((km[0] ^ 1,)) + km[1:])
    wrong_salt = EspInbound(suite, SPI, km[:-1] + bytes((km[-1] ^ 1,)))
    assert reason(wrong_key, packet) == "esp_auth"
    assert reason(wrong_salt, packet) == "esp_auth"
    right = EspInbound(suite, SPI, km)
    assert right.open_untrusted(packet) == (NH_IPV6, PAYLOAD)


def test_wrong_spi() -> None:
    inb = EspInbound(AES, SPI + 1, keymat(AES))
    assert reason(inb, packet_at(1)) == "esp_wrong_spi"


def test_truncated() -> None:
    inb = EspInbound(AES, SPI, keymat(AES))
    packet = packet_at(1)
    for n in range(34):  # header 8 + IV 8 + trailer 2 + ICV 16
        assert reason(inb, packet[:n]) == "esp_truncated"
    for n in range(34, len(packet)):
        assert reason(inb, packet[:n]) == "esp_auth"
    # The shortest authentic packet: empty payload, no padding (not 4-aligned, still opens).
    assert inb.open_untrusted(raw_packet(bytes((0, NH_IPV4)), seq=2)) == (NH_IPV4, b"")


@pytest.mark.parametrize(
    "plaintext",
    [
        b"abc" + bytes((1, 3, 2, NH_IPV6)),  # padding 1, 3
        b"abc" + bytes((0, 1, 2, NH_IPV6)),  # padding 0, 1
        b"abcd" + bytes((2, 1, 2, NH_IPV6)),  # padding 2, 1
        bytes((5, NH_IPV6)),  # pad length beyond the data
        b"ab" + bytes((3, NH_IPV6)),  # pad length one beyond the data
    ],
)
def test_bad_trailer(plaintext: bytes) -> None:
    inb = EspInbound(AES, SPI, keymat(AES))
    packet = raw_packet(plaintext)
    assert reason(inb, packet) == "esp_bad_trailer"
    # The packet was authentic: its sequence number counts as received.
    assert reason(inb, packet) == "esp_replay"


def test_longest_padding_accepted() -> None:
    """RFC 4303 §2.4: 0-255 octets of padding; a peer may pad more than we do."""
    inb = EspInbound(AES, SPI, keymat(AES))
    packet = raw_packet(b"abcdefg" + bytes(range(1, 256)) + bytes((255, NH_IPV6)))
    assert inb.open_untrusted(packet) == (NH_IPV6, b"abcdefg")


# --- esp_sa_uat_line -------------------------------------------------------------------------


def test_esp_sa_uat_line() -> None:
    km = bytes(range(20))
    assert esp_sa_uat_line("2001:db8::1", "*", 0x80000001, AES, km) == (
        '"IPv6","2001:db8::1","*","0x80000001","AES-GCM with 16 octet ICV [RFC4106]",'
        '"0x000102030405060708090a0b0c0d0e0f10111213","NULL",""'
    )
    assert esp_sa_uat_line("192.0.2.1", "*", 256, AES, km).startswith('"IPv4","192.0.2.1","*"')
    assert esp_sa_uat_line("*", "*", 256, AES, km).startswith('"IPv6","*","*","0x00000100"')
    assert esp_sa_uat_line("*", "*", 256, AES, km, ipv4=True).startswith('"IPv4",')
    chacha = esp_sa_uat_line("*", "*", 256, CHACHA, bytes(36))
    assert '"ChaCha20 with Poly1305 [RFC7634]","0x' + "00" * 36 + '"' in chacha
    for bad in (
        lambda: esp_sa_uat_line("192.0.2.1", "2001:db8::1", 256, AES, km),
        lambda: esp_sa_uat_line("192.0.2.1", "*", 256, AES, km, ipv4=False),
        lambda: esp_sa_uat_line("host", "*", 256, AES, km),
        lambda: esp_sa_uat_line("*", "*", 256, CHACHA, km),
        lambda: esp_sa_uat_line("*", "*", 1, AES, km),
    ):
        with pytest.raises(ValueError):
            bad()


# --- scapy oracle ----------------------------------------------------------------------------

SCAPY_ALGOS = {AES: "AES-GCM", CHACHA: "CHACHA20-POLY1305"}


@pytest.fixture(scope="module")
def scapy() -> tuple[Any, Any]:
    """(scapy.layers.ipsec, scapy.layers.inet6), imported without scapy's import-time warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ipsec = pytest.importorskip("scapy.layers.ipsec")
        inet6 = pytest.importorskip("scapy.layers.inet6")
    return ipsec, inet6


def _scapy_sa(scapy: tuple[Any, Any], suite: int) -> Any:
    ipsec, inet6 = scapy
    return ipsec.SecurityAssociation(
        ipsec.ESP,
        spi=SPI,
        crypt_algo=SCAPY_ALGOS[suite],
        crypt_key=keymat(suite),
        tunnel_header=inet6.IPv6(src=str(g.COA), dst=str(g.HA)),
    )


def _inner(n: int) -> bytes:
    return udp_in_ipv6(g.HOA, g.CN, 5000 + n, 6000 + n, bytes(range(n)))


@pytest.mark.oracle
@pytest.mark.parametrize("suite", SUITES, ids=[SUITE_NAMES[s] for s in SUITES])
def test_scapy_builds_our_bytes_and_decrypts_ours(scapy: tuple[Any, Any], suite: int) -> None:
    ipsec, inet6 = scapy
    sa = _scapy_sa(scapy, suite)
    for n, seq in [(0, 1), (1, 2), (2, 0x1234_5678), (3, SEQ_SOFT_LIMIT), (4, SEQ_MAX)]:
        inner = _inner(n)  # lengths 48..52: every pad length 0..3
        ours = sealed(EspOutbound(suite, SPI, keymat(suite), next_seq=seq), inner)
        theirs = sa.encrypt(inet6.IPv6(inner), seq_num=seq, iv=seq.to_bytes(8, "big"))
        assert bytes(theirs[ipsec.ESP]) == ours
        assert (theirs.src, theirs.dst, theirs.nh) == (str(g.COA), str(g.HA), 50)
        wire = build_ipv6_packet(g.COA, g.HA, 50, ours)
        assert bytes(sa.decrypt(inet6.IPv6(wire))) == inner


@pytest.mark.oracle
@pytest.mark.parametrize("suite", SUITES, ids=[SUITE_NAMES[s] for s in SUITES])
def test_we_open_what_scapy_seals(scapy: tuple[Any, Any], suite: int) -> None:
    ipsec, inet6 = scapy
    sa = _scapy_sa(scapy, suite)
    inb = EspInbound(suite, SPI, keymat(suite))
    for n, seq in [(5, 7), (6, 9), (7, 8), (8, 100_000)]:
        inner = _inner(n)
        iv = bytes((0xA5 ^ n,)) * 8  # not the sequence number: the receiver reads the IV
        theirs = sa.encrypt(inet6.IPv6(inner), seq_num=seq, iv=iv)
        assert inb.open_untrusted(bytes(theirs[ipsec.ESP])) == (NH_IPV6, inner)


# --- tshark oracle ---------------------------------------------------------------------------

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
FIELDS = [
    "ipv6.src",
    "ip.src",
    "udp.dstport",
    "esp.spi",
    "esp.sequence",
    "esp.pad_len",
    "esp.protocol",
    "esp.icv_good",
    "esp.icv_bad",
    "data.data",
    "_ws.malformed",
    "_ws.expert.message",
]
# One SA per outer flow (tshark checks that Seq grows by one per SPI).
SA_NATIVE, SA_UDP6, SA_UDP4, SA_CHACHA = 0x8000_0010, 0x8000_0011, 0x8000_0012, 0x8000_0013
AES_KEY = keymat(AES, 0x10)
CHACHA_KEY = keymat(CHACHA, 0x20)


def _tshark_packets() -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
    """The packets, and per packet (SPI, Seq, inner UDP payload)."""
    outs = {spi: EspOutbound(AES, spi, AES_KEY) for spi in (SA_NATIVE, SA_UDP6, SA_UDP4)}
    outs[SA_CHACHA] = EspOutbound(CHACHA, SA_CHACHA, CHACHA_KEY)
    packets: list[bytes] = []
    expected: list[tuple[int, int, bytes]] = []
    for i in range(12):
        spi = (SA_NATIVE, SA_UDP6, SA_UDP4, SA_CHACHA)[i % 4]
        data = bytes(range(i, 2 * i + i // 4 + 1))  # pad lengths 0..3, three per SA
        esp = sealed(outs[spi], udp_in_ipv6(g.HOA, g.CN, 5000, 6000 + i, data))
        if spi in (SA_NATIVE, SA_CHACHA):
            packets.append(build_ipv6_packet(g.COA, g.HA, 50, esp))
        elif spi == SA_UDP6:
            packets.append(udp_in_ipv6(g.COA, g.HA, DSMIP_UDP_PORT, DSMIP_UDP_PORT, esp))
        else:
            packets.append(build_udp_ipv4(g.V4_SRC, g.V4_DST, 40000, DSMIP_UDP_PORT, esp))
        expected.append((spi, outs[spi].seq, data))
    return packets, expected


def _aes_records() -> list[str]:
    return [
        esp_sa_uat_line(str(g.COA), str(g.HA), SA_NATIVE, AES, AES_KEY),
        esp_sa_uat_line("*", "*", SA_UDP6, AES, AES_KEY),
        esp_sa_uat_line("*", str(g.V4_DST), SA_UDP4, AES, AES_KEY),
    ]


def _run_tshark(
    tmp_path: Path, packets: list[bytes], records: list[str]
) -> subprocess.CompletedProcess[str]:
    assert TSHARK is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.utils import wrpcap
    pcap = tmp_path / "esp.pcap"
    # LINKTYPE_RAW: packets start at the IP header. wrpcap takes bytes too (typed as Packets).
    wrpcap(str(pcap), cast("list[Any]", packets), linktype=101)
    command = [TSHARK, "-n", "-r", str(pcap), "-d", f"udp.port=={DSMIP_UDP_PORT},udpencap"]
    command += ["-o", "esp.enable_encryption_decode:TRUE"]
    command += ["-o", "esp.enable_authentication_check:TRUE"]
    for record in records:
        command += ["-o", f"uat:esp_sa:{record}"]
    command += ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for field in FIELDS:
        command += ["-e", field]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, list[str]]]:
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines():
        values = line.split("\t")
        assert len(values) == len(FIELDS), line
        rows.append({f: v.split("|") if v else [] for f, v in zip(FIELDS, values, strict=True)})
    return rows


@pytest.fixture(scope="module")
def tshark_aes(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[dict[str, list[str]]], list[tuple[int, int, bytes]]]:
    packets, expected = _tshark_packets()
    # Negative control: an AES packet one more in sequence, with one ICV bit flipped.
    extra = EspOutbound(AES, SA_NATIVE, AES_KEY, next_seq=4)
    tampered = bytearray(sealed(extra, udp_in_ipv6(g.HOA, g.CN, 5000, 7000, b"x")))
    tampered[-1] ^= 0x80
    packets.append(build_ipv6_packet(g.COA, g.HA, 50, bytes(tampered)))
    result = _run_tshark(tmp_path_factory.mktemp("esp"), packets, _aes_records())
    rows = _rows(result)
    assert len(rows) == len(packets)
    return rows, expected


@needs_tshark
@pytest.mark.oracle
def test_tshark_decrypts_and_authenticates_aes_gcm(
    tshark_aes: tuple[list[dict[str, list[str]]], list[tuple[int, int, bytes]]],
) -> None:
    rows, expected = tshark_aes
    checked = 0
    for i, (row, (spi, seq, data)) in enumerate(zip(rows, expected, strict=False)):
        assert row["_ws.malformed"] == [], i
        assert row["_ws.expert.message"] == [], i
        assert row["esp.spi"] == [f"0x{spi:08x}"], i
        assert row["esp.sequence"] == [str(seq)], i
        if spi == SA_CHACHA:
            assert row["esp.pad_len"] == row["data.data"] == [], i  # not decrypted by 4.0
            continue
        inner_length = 48 + len(data)
        assert row["esp.pad_len"] == [str(-(inner_length + 2) % 4)], i
        assert row["esp.protocol"] == ["0x29"], i
        assert (row["esp.icv_good"], row["esp.icv_bad"]) == (["1"], ["0"]), i
        assert row["ipv6.src"][-1] == str(g.HOA), i  # the inner packet, dissected
        assert row["udp.dstport"][-1] == str(6000 + i), i
        assert row["data.data"] == [data.hex()], i
        if spi == SA_UDP4:
            assert row["ip.src"] == [str(g.V4_SRC)], i
        checked += 1
    assert checked == 9
    # Negative control: the same checks see a bad ICV.
    tampered = rows[-1]
    assert tampered["esp.sequence"] == ["4"]
    assert (tampered["esp.icv_good"], tampered["esp.icv_bad"]) == (["0"], ["1"])


@needs_tshark
@pytest.mark.oracle
def test_tshark_and_chacha20_poly1305(tmp_path: Path) -> None:
    """tshark 4.0 has no ChaCha20-Poly1305 ESP and refuses the UAT record naming it; a later
    tshark that accepts the record must decrypt and authenticate our packets with it."""
    packets, expected = _tshark_packets()
    chacha = [(p, e) for p, e in zip(packets, expected, strict=True) if e[0] == SA_CHACHA]
    record = esp_sa_uat_line("*", "*", SA_CHACHA, CHACHA, CHACHA_KEY)
    result = _run_tshark(tmp_path, [p for p, _ in chacha], [record])
    if result.returncode != 0:
        assert "invalid value: ChaCha20 with Poly1305 [RFC7634]" in result.stderr
        rows = _rows(_run_tshark(tmp_path, [p for p, _ in chacha], []))
        assert [r["esp.spi"] for r in rows] == [[f"0x{SA_CHACHA:08x}"]] * len(chacha)
        assert all(r["_ws.malformed"] == [] for r in rows)
        return
    rows = _rows(result)
    for row, (_, (_, seq, data)) in zip(rows, chacha, strict=True):
        assert row["esp.sequence"] == [str(seq)]
        assert (row["esp.icv_good"], row["esp.icv_bad"]) == (["1"], ["0"])
        assert row["data.data"] == [data.hex()]
        assert row["_ws.malformed"] == []
