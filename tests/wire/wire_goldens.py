"""Golden packets written out by hand from the RFC layouts, one comment per field.

Nothing here was produced by mipnode's encoders. Checksums and the HMACs were computed with the
independent helpers in this module (a plain word-by-word loop, stdlib ``hmac``), not with
``mipnode.wire``; two of them are also the values an earlier scapy/tshark session recorded in
``reference/linux.md`` §6 (BU+HAO 0x5fbe, BA+RH2 0x4f2a with on-wire addresses giving 0x4fca).
"""

from __future__ import annotations

import hashlib
import hmac
from ipaddress import IPv4Address, IPv6Address

COA = IPv6Address("2001:db8:10::2")
HA = IPv6Address("2001:db8:a0::1")
HOA = IPv6Address("2001:db8:b0::2")
CN = IPv6Address("2001:db8:20::2")
V4_SRC = IPv4Address("192.0.2.10")
V4_DST = IPv4Address("198.51.100.1")
KEY = bytes(range(16))
SPI = 0x100

COA_HEX = "2001 0db8 0010 0000 0000 0000 0000 0002"
HA_HEX = "2001 0db8 00a0 0000 0000 0000 0000 0001"
HOA_HEX = "2001 0db8 00b0 0000 0000 0000 0000 0002"
CN_HEX = "2001 0db8 0020 0000 0000 0000 0000 0002"


def h(*parts: str) -> bytes:
    """Join hex fragments (spaces allowed) into bytes."""
    return bytes.fromhex("".join(parts).replace(" ", ""))


# --- independent reference computations (deliberately not mipnode's code) -------------------


def ref_checksum(data: bytes) -> int:
    """RFC 1071 one's complement checksum, the textbook loop."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ref_pseudo(src: IPv6Address, dst: IPv6Address, nh: int, length: int) -> bytes:
    """RFC 8200 §8.1 pseudo-header: src, dst, 32-bit length, 3 zero octets, next header."""
    return src.packed + dst.packed + length.to_bytes(4, "big") + b"\x00\x00\x00" + bytes([nh])


def ref_upper_ok(src: IPv6Address, dst: IPv6Address, nh: int, data: bytes) -> bool:
    """True when ``data``'s embedded checksum verifies under the pseudo-header."""
    return ref_checksum(ref_pseudo(src, dst, nh, len(data)) + data) == 0


def ref_mn_ha_auth(key: bytes, coa: IPv6Address, hoa: IPv6Address, mh_data: bytes) -> bytes:
    """RFC 4285 §5.1: first 96 bits of HMAC-SHA1(key, CoA | HoA | MH data)."""
    return hmac.new(key, coa.packed + hoa.packed + mh_data, hashlib.sha1).digest()[:12]


# --- Mobility Header messages (RFC 6275 §6.1) ------------------------------------------------

# BRR, HA -> HoA.
BRR = h(
    "3b",  # Payload Proto 59: no next header (§6.1.1)
    "00",  # Header Len 0: 8 octets in all
    "00",  # MH Type 0: Binding Refresh Request (§6.1.2)
    "00",  # Reserved
    "67ab",  # Checksum over pseudo-header HA -> HoA
    "0000",  # Reserved (§6.1.2)
)

# Home-registration BU, pseudo-header HoA -> HA (the HoA from the HAO replaces the source).
BU_HOME = h(
    "3b",  # Payload Proto 59
    "03",  # Header Len 3: 32 octets
    "05",  # MH Type 5: Binding Update (§6.1.7)
    "00",  # Reserved
    "5fbe",  # Checksum (same value as reference/linux.md §6)
    "1092",  # Sequence # 4242
    "c000",  # flags A (0x8000) | H (0x4000)
    "0064",  # Lifetime 100 (x 4 s = 400 s)
    "0100",  # PadN, length 0: two octets so the Alt-CoA type sits at 8n+6 (offset 14)
    "03 10",  # option 3 Alternate Care-of Address, length 16 (§6.2.5)
    COA_HEX,  # the CoA
)

# BU with no options: the 12-octet fixed part padded to 16 with PadN(4).
BU_MINIMAL = h(
    "3b",  # Payload Proto 59
    "01",  # Header Len 1: 16 octets
    "05",  # MH Type 5: BU
    "00",  # Reserved
    "6109",  # Checksum HoA -> HA
    "0001",  # Sequence # 1
    "0000",  # no flags
    "0096",  # Lifetime 150 (600 s)
    "01 02 0000",  # PadN: type 1, length 2, two zero octets
)

# BU with every flag we know: A|H|L|K and F (RFC 5555), sequence and lifetime at their maximum.
BU_ALL_FLAGS = h(
    "3b",  # Payload Proto 59
    "01",  # Header Len 1
    "05",  # MH Type 5: BU
    "00",  # Reserved
    "709f",  # Checksum HoA -> HA
    "ffff",  # Sequence # 65535
    "f100",  # A 0x8000 | H 0x4000 | L 0x2000 | K 0x1000 | F 0x0100
    "ffff",  # Lifetime 65535 (262140 s)
    "01 02 0000",  # PadN(4)
)

# BA from the HA, pseudo-header HA -> HoA (the RH2's final destination).
BA_WITH_BRA = h(
    "3b",  # Payload Proto 59
    "01",  # Header Len 1: 16 octets
    "06",  # MH Type 6: Binding Acknowledgement (§6.1.8)
    "00",  # Reserved
    "4df8",  # Checksum HA -> HoA
    "00",  # Status 0: accepted
    "80",  # flags: K (0x80)
    "1092",  # Sequence # 4242
    "0064",  # Lifetime 100
    "02 02",  # option 2 Binding Refresh Advice, length 2, at offset 12 (2n) (§6.2.4)
    "0032",  # Refresh Interval 50 (200 s)
)

# The BA a scapy/tshark session recorded in reference/linux.md §6 (checksum 0x4f2a).
BA_PLAIN = h(
    "3b",  # Payload Proto 59
    "01",  # Header Len 1
    "06",  # MH Type 6: BA
    "00",  # Reserved
    "4f2a",  # Checksum HA -> HoA
    "00",  # Status 0
    "80",  # K
    "1092",  # Sequence # 4242
    "0064",  # Lifetime 100
    "01 02 0000",  # PadN(4)
)

# BA with explicit Pad1 and PadN before the BRA: decoding drops the padding.
BA_PADDED = h(
    "3b",  # Payload Proto 59
    "02",  # Header Len 2: 24 octets
    "06",  # MH Type 6: BA
    "00",  # Reserved
    "d682",  # Checksum HA -> HoA
    "87",  # Status 135: sequence number out of window
    "00",  # no flags
    "0007",  # Sequence # 7
    "0000",  # Lifetime 0
    "00",  # Pad1 at offset 12 (§6.2.2)
    "01 01 00",  # PadN of 3 octets at 13 (§6.2.3)
    "02 02 000a",  # BRA at 16 (2n), Refresh Interval 10
    "01 02 0000",  # PadN(4): end on an 8-octet boundary
)

# BE from a CN, pseudo-header CN -> HoA.
BE = h(
    "3b",  # Payload Proto 59
    "02",  # Header Len 2: 24 octets
    "07",  # MH Type 7: Binding Error (§6.1.9)
    "00",  # Reserved
    "31ad",  # Checksum CN -> HoA
    "01",  # Status 1: unknown binding for Home Address destination option
    "00",  # Reserved
    HOA_HEX,  # Home Address
)

# Authenticated home BU (RFC 4285): Alt-CoA, Mesg-ID, then MN-HA auth last, no padding after it.
BU_AUTH_MH_DATA = h(
    "3b",  # Payload Proto 59
    "07",  # Header Len 7: 64 octets
    "05",  # MH Type 5: BU
    "00",  # Reserved
    "0000",  # Checksum zero inside the authenticated data (RFC 4285 §5.1)
    "0005",  # Sequence # 5
    "c000",  # A | H
    "0096",  # Lifetime 150
    "01 00",  # PadN(2): Alt-CoA at 14 = 8n+6
    "03 10",  # Alternate Care-of Address, length 16
    COA_HEX,  # the CoA
    "01 00",  # PadN(2): Mesg-ID at 34 = 8n+2 (RFC 4285 §6)
    "0a 08",  # option 10 Mesg-ID, length 8
    "83aa7e80 80000000",  # NTP timestamp: Unix epoch (0x83aa7e80 s since 1900) + 0.5 s
    "00",  # Pad1: auth option at 45 = 4n+1 so that it ends at 64 (RFC 4285 §5)
    "09 11",  # option 9 authentication, length 17 = subtype + SPI + 12 octets
    "01",  # Subtype 1: MN-HA
    "00000100",  # Mobility SPI 256
)
BU_AUTH_AUTHENTICATOR = h("00ec09d93a11fddade2c0e07")  # HMAC-SHA1-96, computed with stdlib hmac
BU_AUTH = BU_AUTH_MH_DATA[:4] + h("a1d2") + BU_AUTH_MH_DATA[6:] + BU_AUTH_AUTHENTICATOR

# --- extension headers (RFC 6275 §6.3, §6.4) and whole packets --------------------------------

HAO_HEADER = h(
    "87",  # Next Header 135: Mobility Header
    "02",  # Hdr Ext Len 2: 24 octets
    "01 02 0000",  # PadN(4): HAO type at offset 6 (8n+6)
    "c9",  # option type 0xC9: Home Address
    "10",  # Option Length 16
    HOA_HEX,  # Home Address
)

RH2_HEADER = h(
    "87",  # Next Header 135
    "02",  # Hdr Ext Len 2
    "02",  # Routing Type 2
    "01",  # Segments Left 1
    "00000000",  # Reserved
    HOA_HEX,  # Home Address
)

# BU with HAO: CoA -> HA, Destination Options (HAO) then MH.
PACKET_BU_HAO = (
    h(
        "6 00 00000",  # Version 6, Traffic Class 0, Flow Label 0
        "0038",  # Payload Length 56 = 24 (dest opts) + 32 (MH)
        "3c",  # Next Header 60: destination options
        "40",  # Hop Limit 64
        COA_HEX,  # Source: CoA
        HA_HEX,  # Destination: HA
    )
    + HAO_HEADER
    + BU_HOME
)

# BA with RH2: HA -> CoA, routing header type 2 (HoA) then MH.
PACKET_BA_RH2 = (
    h(
        "60000000",  # Version 6, TC 0, FL 0
        "0028",  # Payload Length 40 = 24 (RH2) + 16 (MH)
        "2b",  # Next Header 43: routing
        "40",  # Hop Limit 64
        HA_HEX,  # Source: HA
        COA_HEX,  # Destination: CoA
    )
    + RH2_HEADER
    + BA_PLAIN
)

# --- ICMPv6 echo, IPv6-in-IPv6 (RFC 2473), UDP encapsulation (RFC 5555) ------------------------

ECHO_REQUEST = h(
    "60000000",  # Version 6
    "000c",  # Payload Length 12
    "3a",  # Next Header 58: ICMPv6
    "40",  # Hop Limit 64
    HOA_HEX,  # Source: HoA
    CN_HEX,  # Destination: CN
    "80",  # Type 128: Echo Request (RFC 4443 §4.1)
    "00",  # Code 0
    "326d",  # Checksum
    "1234",  # Identifier
    "0001",  # Sequence Number
    "70696e67",  # Data "ping"
)

ECHO_REPLY_ICMP = h(
    "81",  # Type 129: Echo Reply (RFC 4443 §4.2)
    "00",  # Code 0
    "316d",  # Checksum CN -> HoA
    "1234",  # Identifier
    "0001",  # Sequence Number
    "70696e67",  # Data "ping"
)

IP6IP6 = (
    h(
        "60000000",  # outer: Version 6
        "0034",  # Payload Length 52: the inner packet
        "29",  # Next Header 41: IPv6 (RFC 2473 §3)
        "40",  # Hop Limit 64
        COA_HEX,  # Source: CoA (reverse tunnel entry point)
        HA_HEX,  # Destination: HA
    )
    + ECHO_REQUEST
)

UDP6_ENCAP = (
    h(
        "60000000",  # Version 6
        "003c",  # Payload Length 60 = 8 (UDP) + 52
        "11",  # Next Header 17: UDP
        "40",  # Hop Limit 64
        COA_HEX,  # Source: CoA
        HA_HEX,  # Destination: HA
        "105f",  # Source Port 4191
        "105f",  # Destination Port 4191 (RFC 5555)
        "003c",  # Length 60
        "e88c",  # Checksum
    )
    + ECHO_REQUEST
)

UDP4_ENCAP = (
    h(
        "45",  # Version 4, IHL 5
        "00",  # DSCP/ECN 0
        "0050",  # Total Length 80 = 20 + 60
        "0000",  # Identification 0
        "4000",  # flags DF, fragment offset 0
        "40",  # TTL 64
        "11",  # Protocol 17: UDP
        "4e5e",  # Header Checksum
        "c000020a",  # Source 192.0.2.10
        "c6336401",  # Destination 198.51.100.1
        "105f",  # Source Port 4191
        "105f",  # Destination Port 4191
        "003c",  # Length 60
        "5872",  # Checksum over the IPv4 pseudo-header
    )
    + ECHO_REQUEST
)

STUN_BINDING_REQUEST = h(
    "0001",  # Binding Request (RFC 8489 §5): top two bits 00
    "0000",  # Message Length 0: no attributes
    "2112a442",  # Magic Cookie
    "000102030405060708090a0b",  # Transaction ID
)

# --- return routability (RFC 6275 §5.2, §6.1.3-§6.1.6, §6.2.6, §6.2.7) ------------------------

KBM = bytes(range(0x20, 0x34))  # a 20-octet Kbm (SHA1 output size)
HOME_COOKIE_HEX = "0102030405060708"
CARE_OF_COOKIE_HEX = "1112131415161718"
HOME_TOKEN_HEX = "f0f1f2f3f4f5f6f7"
CARE_OF_TOKEN_HEX = "e0e1e2e3e4e5e6e7"


def ref_bad(kbm: bytes, coa: IPv6Address, cn: IPv6Address, mh_data: bytes) -> bytes:
    """RFC 6275 §6.2.7: First(96, HMAC_SHA1(Kbm, care-of address | correspondent | MH Data))."""
    return hmac.new(kbm, coa.packed + cn.packed + mh_data, hashlib.sha1).digest()[:12]


# HoTI, pseudo-header HoA -> CN (it travels reverse-tunnelled through the HA).
HOTI = h(
    "3b",  # Payload Proto 59
    "01",  # Header Len 1: 16 octets
    "01",  # MH Type 1: Home Test Init (§6.1.3)
    "00",  # Reserved
    "570d",  # Checksum HoA -> CN
    "0000",  # Reserved
    HOME_COOKIE_HEX,  # Home Init Cookie
)

# CoTI, pseudo-header CoA -> CN (sent natively from the CoA).
COTI = h(
    "3b",  # Payload Proto 59
    "01",  # Header Len 1: 16 octets
    "02",  # MH Type 2: Care-of Test Init (§6.1.4)
    "00",  # Reserved
    "166d",  # Checksum CoA -> CN
    "0000",  # Reserved
    CARE_OF_COOKIE_HEX,  # Care-of Init Cookie
)

# HoT, pseudo-header CN -> HoA.
HOT = h(
    "3b",  # Payload Proto 59
    "02",  # Header Len 2: 24 octets
    "03",  # MH Type 3: Home Test (§6.1.5)
    "00",  # Reserved
    "842e",  # Checksum CN -> HoA
    "0102",  # Home Nonce Index 258
    HOME_COOKIE_HEX,  # Home Init Cookie, echoed
    HOME_TOKEN_HEX,  # Home Keygen Token
)

# CoT, pseudo-header CN -> CoA.
COT = h(
    "3b",  # Payload Proto 59
    "02",  # Header Len 2: 24 octets
    "04",  # MH Type 4: Care-of Test (§6.1.6)
    "00",  # Reserved
    "83cd",  # Checksum CN -> CoA
    "0103",  # Care-of Nonce Index 259
    CARE_OF_COOKIE_HEX,  # Care-of Init Cookie, echoed
    CARE_OF_TOKEN_HEX,  # Care-of Keygen Token
)

# BU to the CN (pseudo-header HoA -> CN, the HoA from the HAO): Nonce Indices, then BAD last.
BU_RR_MH_DATA = h(
    "3b",  # Payload Proto 59
    "03",  # Header Len 3: 32 octets
    "05",  # MH Type 5: BU
    "00",  # Reserved
    "0000",  # Checksum zero inside the authenticated data (§6.2.7)
    "0006",  # Sequence # 6
    "8000",  # flags: A only (no H towards a CN)
    "0069",  # Lifetime 105 (420 s = MAX_RR_BINDING_LIFETIME)
    "04 04",  # option 4 Nonce Indices, length 4, at offset 12 (2n) (§6.2.6)
    "0102",  # Home Nonce Index 258
    "0103",  # Care-of Nonce Index 259
    "05 0c",  # option 5 Binding Authorization Data, length 12, at 18 = 8n+2 (§6.2.7)
)
BU_RR_AUTHENTICATOR = h("8badb4ce0403d73963b30cb2")  # ref_bad(KBM, COA, CN, BU_RR_MH_DATA)
BU_RR = BU_RR_MH_DATA[:4] + h("4b6c") + BU_RR_MH_DATA[6:] + BU_RR_AUTHENTICATOR

# BA from the CN (pseudo-header CN -> HoA, the RH2's final destination), BAD last.
BA_RR_MH_DATA = h(
    "3b",  # Payload Proto 59
    "03",  # Header Len 3: 32 octets
    "06",  # MH Type 6: BA
    "00",  # Reserved
    "0000",  # Checksum zero inside the authenticated data
    "00",  # Status 0: accepted
    "00",  # flags: none (a CN sets K = 0)
    "0006",  # Sequence # 6
    "0069",  # Lifetime 105
    "01 04 00000000",  # PadN(6): BAD at 18 = 8n+2, so that it ends the MH at 32
    "05 0c",  # option 5 Binding Authorization Data, length 12
)
BA_RR_AUTHENTICATOR = h("85509727ad6a032517d33458")  # ref_bad(KBM, COA, CN, BA_RR_MH_DATA)
BA_RR = BA_RR_MH_DATA[:4] + h("425d") + BA_RR_MH_DATA[6:] + BA_RR_AUTHENTICATOR

# BU to the CN with HAO: CoA -> CN, Destination Options (HAO) then the MH.
PACKET_BU_RR_HAO = (
    h(
        "60000000",  # Version 6, TC 0, FL 0
        "0038",  # Payload Length 56 = 24 (dest opts) + 32 (MH)
        "3c",  # Next Header 60: destination options
        "40",  # Hop Limit 64
        COA_HEX,  # Source: CoA
        CN_HEX,  # Destination: CN
    )
    + HAO_HEADER
    + BU_RR
)

# --- candidate exchange: Experimental MH (RFC 5096) and mipnode's M-ICE TLVs -----------------

MICE_CREDENTIALS = h(
    "01",  # TLV type 1: Credentials
    "1d",  # Length 29 = 1 + 4 + 24
    "04",  # Ufrag Len 4
    "6d6e3031",  # ufrag "mn01"
    "6162636465666768696a6b6c6d6e6f70717273747576",  # password "abcdefghijklmnopqrstuv" ...
    "2b2f",  # ... "+/" (24 ice-chars in all)
)
MICE_CANDIDATE_V4 = h(
    "02",  # TLV type 2: Candidate
    "0d",  # Length 13 = 8 + 4 + 1
    "7effffff",  # Priority 2130706431 = (126 << 24) | (65535 << 8) | 255: host, RFC 8445 §5.1.2
    "105f",  # Port 4191
    "01",  # Kind 1: host
    "04",  # Family 4: IPv4
    "c000020a",  # 192.0.2.10
    "31",  # foundation "1"
)
MICE_CANDIDATE_V6 = h(
    "02",  # TLV type 2: Candidate
    "1a",  # Length 26 = 8 + 16 + 2
    "64ffffff",  # Priority (100 << 24) | (65535 << 8) | 255: server reflexive
    "9c40",  # Port 40000
    "02",  # Kind 2: srflx
    "06",  # Family 6: IPv6
    COA_HEX,  # the CoA
    "7336",  # foundation "s6"
)
MICE_END = h(
    "03",  # TLV type 3: EndOfCandidates
    "00",  # Length 0
)
MICE = MICE_CREDENTIALS + MICE_CANDIDATE_V4 + MICE_CANDIDATE_V6 + MICE_END  # 76 octets

# Experimental MH with no options, pseudo-header HoA -> CN.
EXPERIMENTAL_EMPTY = h(
    "3b",  # Payload Proto 59
    "00",  # Header Len 0: 8 octets
    "0b",  # MH Type 11: Experimental Mobility Header (RFC 5096 §3)
    "00",  # Reserved
    "5c2a",  # Checksum HoA -> CN
    "01 00",  # PadN(2): Message Data (our options) padded to 8 octets
)

# Experimental MH carrying the M-ICE TLVs in one Experimental option, pseudo-header HoA -> CN.
EXPERIMENTAL_MICE = (
    h(
        "3b",  # Payload Proto 59
        "0a",  # Header Len 10: 88 octets
        "0b",  # MH Type 11: Experimental
        "00",  # Reserved
        "a917",  # Checksum HoA -> CN
        "12",  # option 18: Experimental Mobility Option (RFC 5096 §4), at offset 6
        "4c",  # Length 76
    )
    + MICE  # Data: the TLVs (6 + 2 + 76 = 84 octets so far)
    + h("01 02 0000")  # PadN(4): to 88
)
