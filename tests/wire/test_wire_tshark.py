"""tshark as an independent oracle for what our encoders put on the wire.

The packets are built with mipnode's encoders, written to a pcap (LINKTYPE_RAW) and dissected
once with ``tshark -T pdml``; every packet must dissect without malformed markers or expert
warnings, every checksum tshark can validate (IPv4 header, UDP under MIPv6 pseudo-header rules,
ICMPv6) must be good, and the decoded fields must equal what we encoded.

tshark cannot validate the MH checksum (it has no preference for it, see reference/linux.md §6);
we compare its ``mip6.csum`` with the independent loop in wire_goldens instead.

tshark 4.0.17 quirks, checked on raw octets instead of display strings:
- the RFC 4285 Mesg-ID timestamp is shown as Unix seconds + signed nanoseconds, not NTP;
- ``mip6.auth.auth_data`` covers only option length - 7 octets (10 of the 12 authenticator
  octets), although the option itself is dissected with its full 19 octets;
- the CoT's keygen token is shown under the HoT's field name ``mip6.hot.token``;
- the Experimental MH (11) is shown as opaque ``mip6.em.data`` (no option dissection, as RFC 5096
  leaves the data to the experiment); an 8-octet one (2 octets of PadN) shows no data field.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import wire_goldens as g
from encap import DSMIP_UDP_PORT, build_udp_ipv4, encapsulate

from mipnode.wire.auth4285 import encode_mh_authenticated
from mipnode.wire.bad import encode_mh_with_bad
from mipnode.wire.exthdr import build_packet_with_hao, build_packet_with_rh2
from mipnode.wire.icmpv6 import build_echo
from mipnode.wire.ipv6 import NH_MH, build_ipv6_packet
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BindingAck,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    ExperimentalMessage,
    HomeTest,
    HomeTestInit,
    Ipv4AddressAck,
    Ipv4HomeAddress,
    MesgId,
    MobileNetworkPrefix,
    MobilityMessage,
    NonceIndices,
    encode_mh,
)
from mipnode.wire.mice import Candidate, Credentials, EndOfCandidates, mice_options
from mipnode.wire.packets import udp_in_ipv6 as build_udp_ipv6

TSHARK = shutil.which("tshark")
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(TSHARK is None, reason="tshark not installed"),
]

LINKTYPE_RAW = 101
TIMESTAMP = 0x83AA7E80_80000000 + (1_700_000_000 << 32)  # some NTP time in 2023
ALT_COA = AlternateCareOfAddress(g.COA)
COOKIE = bytes.fromhex("c0c1c2c3c4c5c6c7")
TOKEN = bytes.fromhex("d0d1d2d3d4d5d6d7")
MICE_ITEMS = (
    Credentials("Ab3+", "/0123456789abcdefghijklmnopqrstuvwxyz"),
    Candidate("h4", 0x7EFFFFFF, "host", IPv4Address("192.0.2.10"), 4191),
    Candidate("h6", 0x7EFFFEFF, "host", g.COA, 4191),
    EndOfCandidates(),
)


@dataclass(frozen=True)
class Case:
    name: str
    packet: bytes
    # tshark field name -> expected "show" values, in order of appearance
    expected: dict[str, list[str]]
    mh: bytes = b""
    mh_src: IPv6Address = g.COA
    mh_dst: IPv6Address = g.HA


def _mh(msg: MobilityMessage, src: IPv6Address, dst: IPv6Address) -> bytes:
    return encode_mh(msg, src, dst)


def _cases() -> list[Case]:
    cases: list[Case] = []

    # 1. Home registration: src CoA, HAO, MH BU (RFC 6275 §11.7.1).
    bu = BindingUpdate(4242, 100, ack=True, home=True, key_mgmt=True, options=(ALT_COA,))
    mh = _mh(bu, g.HOA, g.HA)
    cases.append(
        Case(
            "bu_hao",
            build_packet_with_hao(g.COA, g.HA, g.HOA, NH_MH, mh),
            {
                "ipv6.src": [str(g.COA)],
                "ipv6.opt.mipv6.home_address": [str(g.HOA)],
                "mip6.proto": ["59"],
                "mip6.hlen": ["3"],
                "mip6.mhtype": ["5"],
                "mip6.bu.seqnr": ["4242"],
                "mip6.bu.a_flag": ["1"],
                "mip6.bu.h_flag": ["1"],
                "mip6.bu.l_flag": ["0"],
                "mip6.bu.k_flag": ["1"],
                "mip6.bu.f_flag": ["0"],
                "mip6.bu.lifetime": ["100"],
                "mip6.acoa.acoa": [str(g.COA)],
            },
            mh,
            g.HOA,
            g.HA,
        )
    )

    # 2. BA with RH2 (HA -> CoA, final destination HoA).
    ba = BindingAck(
        BaStatus.ACCEPTED, 4242, 100, key_mgmt=True, options=(BindingRefreshAdvice(50),)
    )
    mh = _mh(ba, g.HA, g.HOA)
    cases.append(
        Case(
            "ba_rh2",
            build_packet_with_rh2(g.HA, g.COA, g.HOA, NH_MH, mh),
            {
                "ipv6.dst": [str(g.COA)],
                "ipv6.routing.type": ["2"],
                "ipv6.routing.segleft": ["1"],
                "ipv6.routing.mipv6.home_address": [str(g.HOA)],
                "mip6.mhtype": ["6"],
                "mip6.ba.status": ["0"],
                "mip6.ba.k_flag": ["1"],
                "mip6.ba.seqnr": ["4242"],
                "mip6.ba.lifetime": ["100"],
                "mip6.bra.interval": ["50"],
            },
            mh,
            g.HA,
            g.HOA,
        )
    )

    # 3. BU carrying Mesg-ID and MN-HA auth (RFC 4285), with HAO.
    bu = BindingUpdate(7, 150, ack=True, home=True, options=(ALT_COA, MesgId(TIMESTAMP)))
    mh = encode_mh_authenticated(bu, g.HOA, g.HA, spi=g.SPI, key=g.KEY, coa=g.COA, hoa=g.HOA)
    cases.append(
        Case(
            "bu_auth",
            build_packet_with_hao(g.COA, g.HA, g.HOA, NH_MH, mh),
            {
                "mip6.bu.seqnr": ["7"],
                "mip6.hlen": [str(len(mh) // 8 - 1)],
                "mip6.acoa.acoa": [str(g.COA)],
                "mip6.auth.subtype": ["1"],
                "mip6.auth.mobility_spi": [str(g.SPI)],
            },
            mh,
            g.HOA,
            g.HA,
        )
    )

    # 4. IPv6-in-IPv6 (RFC 2473), inner MH BU HoA -> CN.
    bu = BindingUpdate(8, 10, ack=True, force_udp=True)
    mh = _mh(bu, g.HOA, g.CN)
    inner = build_ipv6_packet(g.HOA, g.CN, NH_MH, mh)
    cases.append(
        Case(
            "ip6ip6_bu",
            encapsulate(g.COA, g.HA, inner),
            {
                "ipv6.nxt": ["41", "135"],
                "ipv6.src": [str(g.COA), str(g.HOA)],
                "ipv6.dst": [str(g.HA), str(g.CN)],
                "mip6.bu.seqnr": ["8"],
                "mip6.bu.a_flag": ["1"],
                "mip6.bu.h_flag": ["0"],
                "mip6.bu.f_flag": ["1"],
                "mip6.bu.lifetime": ["10"],
            },
            mh,
            g.HOA,
            g.CN,
        )
    )

    # 5. IPv6/UDP 4191 carrying an IPv6 BU with HAO (DSMIPv6-style, RFC 5555).
    bu = BindingUpdate(9, 20, ack=True, home=True, force_udp=True, options=(ALT_COA,))
    mh = _mh(bu, g.HOA, g.HA)
    inner = build_packet_with_hao(g.COA, g.HA, g.HOA, NH_MH, mh)
    cases.append(
        Case(
            "udp6_bu",
            build_udp_ipv6(g.COA, g.HA, 40000, DSMIP_UDP_PORT, inner),
            {
                "udp.srcport": ["40000"],
                "udp.dstport": [str(DSMIP_UDP_PORT)],
                "udp.checksum.status": ["1"],
                "ipv6.nxt": ["17", "60"],
                "mip6.bu.seqnr": ["9"],
                "mip6.bu.f_flag": ["1"],
            },
            mh,
            g.HOA,
            g.HA,
        )
    )

    # 6. IPv4/UDP 4191 carrying an IPv6 echo request.
    echo = build_echo(g.HOA, g.CN, 0x4242, 3, b"tunnelled")
    cases.append(
        Case(
            "udp4_echo",
            build_udp_ipv4(g.V4_SRC, g.V4_DST, DSMIP_UDP_PORT, DSMIP_UDP_PORT, echo),
            {
                "ip.src": [str(g.V4_SRC)],
                "ip.dst": [str(g.V4_DST)],
                "ip.checksum.status": ["1"],
                "udp.checksum.status": ["1"],
                "icmpv6.type": ["128"],
                "icmpv6.echo.identifier": ["0x4242"],
                "icmpv6.echo.sequence_number": ["3"],
                "icmpv6.checksum.status": ["1"],
            },
        )
    )

    # 7. BRR and BE with RH2, a rejecting BA, an echo reply.
    mh = _mh(BindingRefreshRequest(), g.HA, g.HOA)
    cases.append(
        Case(
            "brr",
            build_packet_with_rh2(g.HA, g.COA, g.HOA, NH_MH, mh),
            {"mip6.mhtype": ["0"], "mip6.hlen": ["0"]},
            mh,
            g.HA,
            g.HOA,
        )
    )
    mh = _mh(BindingError(2, g.HOA), g.CN, g.HOA)
    cases.append(
        Case(
            "be",
            build_packet_with_rh2(g.CN, g.COA, g.HOA, NH_MH, mh),
            {"mip6.mhtype": ["7"], "mip6.be.status": ["2"], "mip6.be.haddr": [str(g.HOA)]},
            mh,
            g.CN,
            g.HOA,
        )
    )
    mh = _mh(BindingAck(BaStatus.AUTH_FAILED, 65535, 0), g.HA, g.HOA)
    cases.append(
        Case(
            "ba_146",
            build_packet_with_rh2(g.HA, g.COA, g.HOA, NH_MH, mh),
            {"mip6.ba.status": ["146"], "mip6.ba.k_flag": ["0"], "mip6.ba.seqnr": ["65535"]},
            mh,
            g.HA,
            g.HOA,
        )
    )
    cases.append(
        Case(
            "echo_reply",
            build_echo(g.CN, g.HOA, 1, 65535, bytes(range(64)), reply=True),
            {"icmpv6.type": ["129"], "icmpv6.checksum.status": ["1"]},
        )
    )
    cases.extend(_rr_cases())
    cases.extend(_nemo_dsmip_cases())
    return cases


def _nemo_dsmip_cases() -> list[Case]:
    """A mobile router's BU (R flag, RFC 3963 §4.1; a Mobile Network Prefix, §4.3) asking for an
    IPv4 home address (RFC 5555 §3.1.1, with the P flag), and the BA that grants it (R flag,
    §4.2; IPv4 Address Acknowledgement, RFC 5555 §3.2.1)."""
    prefix = MobileNetworkPrefix(IPv6Address("2001:db8:aaaa::"), 48)
    bu = BindingUpdate(
        11,
        150,
        ack=True,
        home=True,
        mobile_router=True,
        options=(ALT_COA, prefix, Ipv4HomeAddress(IPv4Address("0.0.0.0"), 24, True)),
    )
    ba = BindingAck(
        BaStatus.ACCEPTED,
        11,
        150,
        mobile_router=True,
        options=(Ipv4AddressAck(0, IPv4Address("192.0.2.0"), 24),),
    )
    bu_mh, ba_mh = _mh(bu, g.HOA, g.HA), _mh(ba, g.HA, g.HOA)
    return [
        Case(
            "bu_nemo_ipv4_hoa",
            build_packet_with_hao(g.COA, g.HA, g.HOA, NH_MH, bu_mh),
            {
                "mip6.bu.h_flag": ["1"],
                "mip6.nemo.bu.r_flag": ["1"],
                "mip6.bu.p_flag": ["0"],
                "mip6.nemo.mnp.pfl": ["48"],
                "mip6.nemo.mnp.mnp": ["2001:db8:aaaa::"],
                "mip6.ipv4ha.preflen": ["24"],
                "mip6.ipv4ha.p_flag": ["1"],
                "mip6.ipv4ha.ha": ["0.0.0.0"],
            },
            bu_mh,
            g.HOA,
            g.HA,
        ),
        Case(
            "ba_nemo_ipv4_ack",
            build_packet_with_rh2(g.HA, g.COA, g.HOA, NH_MH, ba_mh),
            {
                "mip6.ba.status": ["0"],
                "mip6.ba.k_flag": ["0"],
                "mip6.nemo.ba.r_flag": ["1"],
                "mip6.ipv4aa.sts": ["0"],
                "mip6.ipv4ha.preflen": ["24"],
                "mip6.ipv4ha.ha": ["192.0.2.0"],
            },
            ba_mh,
            g.HA,
            g.HOA,
        ),
    ]


def _rr_cases() -> list[Case]:
    """Return routability (RFC 6275 §5.2): HoTI/HoT through the HA tunnel, CoTI/CoT native, BU
    with HAO + Nonce Indices + BAD, BA with RH2 + BAD; the Experimental MH with M-ICE TLVs."""
    cases: list[Case] = []
    mh = _mh(HomeTestInit(COOKIE), g.HOA, g.CN)
    cases.append(
        Case(
            "hoti_tunnelled",
            encapsulate(g.COA, g.HA, build_ipv6_packet(g.HOA, g.CN, NH_MH, mh)),
            {
                "ipv6.nxt": ["41", "135"],
                "ipv6.src": [str(g.COA), str(g.HOA)],
                "ipv6.dst": [str(g.HA), str(g.CN)],
                "mip6.hlen": ["1"],
                "mip6.mhtype": ["1"],
                "mip6.hoti.cookie": [f"0x{COOKIE.hex()}"],
            },
            mh,
            g.HOA,
            g.CN,
        )
    )
    mh = _mh(HomeTest(0xBEEF, COOKIE, TOKEN), g.CN, g.HOA)
    cases.append(
        Case(
            "hot_tunnelled",
            encapsulate(g.HA, g.COA, build_ipv6_packet(g.CN, g.HOA, NH_MH, mh)),
            {
                "ipv6.nxt": ["41", "135"],
                "ipv6.src": [str(g.HA), str(g.CN)],
                "ipv6.dst": [str(g.COA), str(g.HOA)],
                "mip6.hlen": ["2"],
                "mip6.mhtype": ["3"],
                "mip6.hot.nindex": [str(0xBEEF)],
                "mip6.hot.cookie": [f"0x{COOKIE.hex()}"],
                "mip6.hot.token": [f"0x{TOKEN.hex()}"],
            },
            mh,
            g.CN,
            g.HOA,
        )
    )
    mh = _mh(CareOfTestInit(COOKIE), g.COA, g.CN)
    cases.append(
        Case(
            "coti_native",
            build_ipv6_packet(g.COA, g.CN, NH_MH, mh),
            {
                "ipv6.nxt": ["135"],
                "mip6.mhtype": ["2"],
                "mip6.coti.cookie": [f"0x{COOKIE.hex()}"],
            },
            mh,
            g.COA,
            g.CN,
        )
    )
    mh = _mh(CareOfTest(1, COOKIE, TOKEN), g.CN, g.COA)
    cases.append(
        Case(
            "cot_native",
            build_ipv6_packet(g.CN, g.COA, NH_MH, mh),
            {
                "mip6.mhtype": ["4"],
                "mip6.cot.nindex": ["1"],
                "mip6.cot.cookie": [f"0x{COOKIE.hex()}"],
                "mip6.hot.token": [f"0x{TOKEN.hex()}"],  # tshark reuses the HoT field name
            },
            mh,
            g.CN,
            g.COA,
        )
    )
    bu = BindingUpdate(6, 105, ack=True, options=(ALT_COA, NonceIndices(258, 259)))
    mh = encode_mh_with_bad(bu, g.HOA, g.CN, kbm=g.KBM, coa=g.COA, cn=g.CN)
    cases.append(
        Case(
            "bu_rr_hao",
            build_packet_with_hao(g.COA, g.CN, g.HOA, NH_MH, mh),
            {
                "ipv6.src": [str(g.COA)],
                "ipv6.dst": [str(g.CN)],
                "ipv6.opt.mipv6.home_address": [str(g.HOA)],
                "mip6.mhtype": ["5"],
                "mip6.bu.seqnr": ["6"],
                "mip6.bu.a_flag": ["1"],
                "mip6.bu.h_flag": ["0"],
                "mip6.bu.lifetime": ["105"],
                "mip6.acoa.acoa": [str(g.COA)],
                "mip6.ni.hni": ["258"],
                "mip6.ni.cni": ["259"],
            },
            mh,
            g.HOA,
            g.CN,
        )
    )
    ba = BindingAck(BaStatus.ACCEPTED, 6, 105)
    mh = encode_mh_with_bad(ba, g.CN, g.HOA, kbm=g.KBM, coa=g.COA, cn=g.CN)
    cases.append(
        Case(
            "ba_rr_rh2",
            build_packet_with_rh2(g.CN, g.COA, g.HOA, NH_MH, mh),
            {
                "ipv6.src": [str(g.CN)],
                "ipv6.dst": [str(g.COA)],
                "ipv6.routing.type": ["2"],
                "ipv6.routing.mipv6.home_address": [str(g.HOA)],
                "mip6.mhtype": ["6"],
                "mip6.ba.status": ["0"],
                "mip6.ba.k_flag": ["0"],
                "mip6.ba.seqnr": ["6"],
                "mip6.ba.lifetime": ["105"],
            },
            mh,
            g.CN,
            g.HOA,
        )
    )
    mh = _mh(ExperimentalMessage(mice_options(MICE_ITEMS)), g.HOA, g.CN)
    cases.append(
        Case(
            "experimental_mice_tunnelled",
            encapsulate(g.COA, g.HA, build_ipv6_packet(g.HOA, g.CN, NH_MH, mh)),
            {
                "ipv6.nxt": ["41", "135"],
                "mip6.hlen": [str(len(mh) // 8 - 1)],
                "mip6.mhtype": ["11"],
            },
            mh,
            g.HOA,
            g.CN,
        )
    )
    mh = _mh(ExperimentalMessage(), g.HOA, g.CN)
    cases.append(
        Case(
            "experimental_empty",
            build_ipv6_packet(g.HOA, g.CN, NH_MH, mh),
            {"mip6.hlen": ["0"], "mip6.mhtype": ["11"], "mip6.em.data": []},
            mh,
            g.HOA,
            g.CN,
        )
    )
    return cases


CASES = _cases()


def write_pcap(path: Path, packets: list[bytes]) -> None:
    """Classic pcap, microsecond timestamps, LINKTYPE_RAW (packets start at the IP header)."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for i, packet in enumerate(packets):
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(packet), len(packet)))
            f.write(packet)


Field = tuple[str, str]  # (show, value)


def dissect(tmp_path: Path, packets: list[bytes]) -> list[dict[str, list[Field]]]:
    """Run tshark once; per packet, every field name -> [(show, raw hex value), ...]."""
    assert TSHARK is not None
    pcap = tmp_path / "wire.pcap"
    write_pcap(pcap, packets)
    result = subprocess.run(
        [
            TSHARK,
            "-n",
            "-r",
            str(pcap),
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-d",
            f"udp.port=={DSMIP_UDP_PORT},ipv6",
            "-T",
            "pdml",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    root = ET.fromstring(result.stdout)
    out: list[dict[str, list[Field]]] = []
    for packet in root.iter("packet"):
        fields: dict[str, list[Field]] = {}
        for element in packet.iter():
            name = element.get("name")
            if name:
                fields.setdefault(name, []).append(
                    (element.get("show", ""), element.get("value", ""))
                )
        out.append(fields)
    assert len(out) == len(packets)
    return out


@pytest.fixture(scope="module")
def dissected(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[Field]]]:
    return dissect(tmp_path_factory.mktemp("tshark"), [c.packet for c in CASES])


def shows(fields: dict[str, list[Field]], name: str) -> list[str]:
    return [show for show, _ in fields.get(name, [])]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_tshark_dissects_cleanly(dissected: list[dict[str, list[Field]]], index: int) -> None:
    fields = dissected[index]
    assert "_ws.malformed" not in fields
    assert "_ws.expert" not in fields, shows(fields, "_ws.expert.message")
    for name in ("ip.checksum.status", "udp.checksum.status", "icmpv6.checksum.status"):
        assert set(shows(fields, name)) <= {"1"}, name  # 1 = good


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_tshark_fields_match_what_we_encoded(
    dissected: list[dict[str, list[Field]]], index: int
) -> None:
    case, fields = CASES[index], dissected[index]
    for name, expected in case.expected.items():
        assert shows(fields, name) == expected, name
    if case.mh:
        # tshark does not validate the MH checksum: it must at least show ours, and ours must
        # verify with the independent loop under the RFC 6275 §6.1.1 pseudo-header.
        assert shows(fields, "mip6.csum") == [f"0x{case.mh[4:6].hex()}"]
        assert g.ref_upper_ok(case.mh_src, case.mh_dst, NH_MH, case.mh)


def test_tshark_rfc4285_options_raw(dissected: list[dict[str, list[Field]]]) -> None:
    index = next(i for i, c in enumerate(CASES) if c.name == "bu_auth")
    case, fields = CASES[index], dissected[index]
    # Mesg-ID: compare raw octets (tshark 4.0 displays them as a Unix time, not NTP).
    assert [v for _, v in fields["mip6.mseg_id.timestamp"]] == [f"{TIMESTAMP:016x}"]
    # The whole auth option is the final 19 octets of the MH: nothing after it (RFC 4285 §5).
    auth_option = [v for _, v in fields["mip6.options.auth"]]
    assert auth_option == [case.mh[-19:].hex()]
    assert case.mh[-19:-12] == bytes((9, 17, 1)) + g.SPI.to_bytes(4, "big")
    mh_data = case.mh[:4] + b"\x00\x00" + case.mh[6:-12]
    assert case.mh[-12:] == g.ref_mn_ha_auth(g.KEY, g.COA, g.HOA, mh_data)
    # tshark's auth_data field is short by two octets; it must still be a prefix of ours.
    (auth_data,) = [v for _, v in fields["mip6.auth.auth_data"]]
    assert case.mh[-12:].hex().startswith(auth_data)


def _case(
    dissected: list[dict[str, list[Field]]], name: str
) -> tuple[Case, dict[str, list[Field]]]:
    index = next(i for i, c in enumerate(CASES) if c.name == name)
    return CASES[index], dissected[index]


def test_tshark_bad_option_raw(dissected: list[dict[str, list[Field]]]) -> None:
    for name, coa_cn in (("bu_rr_hao", (g.COA, g.CN)), ("ba_rr_rh2", (g.COA, g.CN))):
        case, fields = _case(dissected, name)
        # The BAD option is the final 14 octets of the MH: nothing after it (RFC 6275 §6.2.7).
        assert [v for _, v in fields["mip6.options.bad_auth"]] == [case.mh[-14:].hex()]
        mh_data = case.mh[:4] + b"\x00\x00" + case.mh[6:-12]
        expected = g.ref_bad(g.KBM, *coa_cn, mh_data)
        assert [v for _, v in fields["mip6.bad.auth"]] == [expected.hex()]


def test_tshark_experimental_data_raw(dissected: list[dict[str, list[Field]]]) -> None:
    case, fields = _case(dissected, "experimental_mice_tunnelled")
    # tshark shows the Message Data opaquely; it is our option 18 with the M-ICE TLVs, padded.
    (data,) = [bytes.fromhex(v) for _, v in fields["mip6.em.data"]]
    assert data == case.mh[6:]
    option_data = b"".join(o.data for o in mice_options(MICE_ITEMS))
    assert data[:2] == bytes((18, len(option_data)))
    assert data[2 : 2 + len(option_data)] == option_data


def test_tshark_oracle_detects_errors(tmp_path: Path) -> None:
    """Negative control: the same checks flag a bad UDP checksum and a truncated MH."""
    good = next(c for c in CASES if c.name == "udp6_bu").packet
    bad_checksum = bytearray(good)
    bad_checksum[46] ^= 0x01  # UDP checksum
    bu_hao = next(c for c in CASES if c.name == "bu_hao").packet
    truncated = bytearray(bu_hao[:-8])
    truncated[5] -= 8  # IPv6 Payload Length consistent, MH Header Len now overruns
    fields_bad, fields_truncated = dissect(tmp_path, [bytes(bad_checksum), bytes(truncated)])
    assert shows(fields_bad, "udp.checksum.status") == ["0"]
    assert "_ws.expert" in fields_bad
    assert "_ws.malformed" in fields_truncated
