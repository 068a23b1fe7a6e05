"""Round trips through our own encoders and decoders (goldens and oracles live elsewhere)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    ntp_from_unix,
    unix_from_ntp,
    verify_mh_authenticated,
)
from mipnode.wire.bad import encode_mh_with_bad, verify_bad
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import (
    HomeAddressOption,
    RoutingHeaderType2,
    build_packet_with_hao,
    build_packet_with_rh2,
    home_address_of_untrusted,
    parse_destination_options_untrusted,
    parse_rh2_untrusted,
    pseudo_header_addresses_untrusted,
    rh2_of_untrusted,
)
from mipnode.wire.ipv6 import (
    NH_DSTOPTS,
    NH_MH,
    NH_ROUTING,
    NH_UDP,
    IPv6Header,
    build_ipv6_packet,
    parse_ipv6_header_untrusted,
    parse_ipv6_packet_untrusted,
)
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BeStatus,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    ExperimentalMessage,
    ExperimentalOption,
    HomeTest,
    HomeTestInit,
    MesgId,
    MnHaAuth,
    MobilityMessage,
    NonceIndices,
    UnknownMobilityMessage,
    UnknownOption,
    decode_mh_untrusted,
    encode_mh,
)
from mipnode.wire.mice import (
    CANDIDATE_KINDS,
    AnswerTo,
    Candidate,
    Credentials,
    EndOfCandidates,
    MiceItem,
    decode_mice_untrusted,
    encode_mice,
    mice_from_options_untrusted,
    mice_options,
)

COA = IPv6Address("2001:db8:10::2")
HA = IPv6Address("2001:db8:a0::1")
HOA = IPv6Address("2001:db8:b0::2")
CN = IPv6Address("2001:db8:20::2")
KEY = bytes(range(16))
KBM = bytes(range(20))
COOKIE = bytes(range(1, 9))
TOKEN = bytes(range(0xF0, 0xF8))

MESSAGES: list[MobilityMessage] = [
    BindingRefreshRequest(),
    BindingUpdate(sequence=1, lifetime=150),
    BindingUpdate(
        sequence=0xFFFF,
        lifetime=0xFFFF,
        ack=True,
        home=True,
        link_local=True,
        key_mgmt=True,
        force_udp=True,
        options=(AlternateCareOfAddress(COA), MesgId(0x0123456789ABCDEF)),
    ),
    BindingAck(status=BaStatus.ACCEPTED, sequence=7, lifetime=75, key_mgmt=True),
    BindingAck(
        status=BaStatus.AUTH_FAILED,
        sequence=7,
        lifetime=0,
        options=(BindingRefreshAdvice(60), UnknownOption(42, b"xyz")),
    ),
    BindingAck(status=200, sequence=1, lifetime=1),
    BindingError(status=BeStatus.UNRECOGNIZED_MH_TYPE, home_address=HOA),
    BindingUpdate(
        sequence=9,
        lifetime=3,
        options=(MnHaAuth(spi=0x1234, authenticator=bytes(range(12))),),
    ),
    UnknownMobilityMessage(mh_type=12, body=bytes(range(10))),
    HomeTestInit(COOKIE),
    CareOfTestInit(COOKIE, options=(UnknownOption(42, b"xyz"),)),
    HomeTest(nonce_index=0, cookie=COOKIE, keygen_token=TOKEN),
    CareOfTest(nonce_index=0xFFFF, cookie=COOKIE, keygen_token=TOKEN),
    BindingUpdate(
        sequence=3,
        lifetime=105,
        ack=True,
        options=(NonceIndices(1, 2), BindingAuthorizationData(bytes(range(12)))),
    ),
    BindingAck(
        status=0,
        sequence=3,
        lifetime=105,
        options=(BindingRefreshAdvice(10), BindingAuthorizationData(bytes(20))),
    ),
    ExperimentalMessage(),
    ExperimentalMessage(options=(ExperimentalOption(b""), ExperimentalOption(bytes(255)))),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_mh_round_trip(msg: MobilityMessage) -> None:
    data = encode_mh(msg, HOA, HA)
    assert len(data) % 8 == 0
    assert decode_mh_untrusted(data, HOA, HA) == msg


def test_mh_checksum_depends_on_pseudo_header() -> None:
    data = encode_mh(BindingUpdate(sequence=1, lifetime=1), HOA, HA)
    with pytest.raises(BadPacket) as info:
        decode_mh_untrusted(data, COA, HA)
    assert info.value.reason == "bad_checksum"
    assert decode_mh_untrusted(data, COA, HA, verify_checksum=False) == BindingUpdate(1, 1)


def test_authenticated_round_trip() -> None:
    bu = BindingUpdate(
        sequence=5,
        lifetime=100,
        ack=True,
        home=True,
        options=(AlternateCareOfAddress(COA), MesgId(ntp_from_unix(1.7e9))),
    )
    data = encode_mh_authenticated(bu, HOA, HA, spi=256, key=KEY, coa=COA, hoa=HOA)
    assert len(data) % 8 == 0
    decoded = decode_mh_untrusted(data, HOA, HA)
    assert isinstance(decoded, BindingUpdate)
    assert decoded.options[:2] == bu.options
    assert isinstance(decoded.options[2], MnHaAuth)
    assert decoded.options[2].spi == 256
    assert verify_mh_authenticated(data, key=KEY, coa=COA, hoa=HOA)
    assert not verify_mh_authenticated(data, key=bytes(16), coa=COA, hoa=HOA)
    assert not verify_mh_authenticated(data, key=KEY, coa=HA, hoa=HOA)
    assert not verify_mh_authenticated(encode_mh(bu, HOA, HA), key=KEY, coa=COA, hoa=HOA)


@pytest.mark.parametrize(
    "msg",
    [
        BindingUpdate(sequence=3, lifetime=105, ack=True, options=(NonceIndices(1, 2),)),
        BindingUpdate(sequence=4, lifetime=0, options=(AlternateCareOfAddress(COA),)),
        BindingAck(status=0, sequence=3, lifetime=105),
        BindingAck(status=BaStatus.EXPIRED_NONCES, sequence=3, lifetime=0),
    ],
    ids=lambda m: type(m).__name__,
)
def test_bad_round_trip(msg: BindingUpdate | BindingAck) -> None:
    data = encode_mh_with_bad(msg, HOA, CN, kbm=KBM, coa=COA, cn=CN)
    assert len(data) % 8 == 0
    decoded = decode_mh_untrusted(data, HOA, CN)
    assert decoded.options[:-1] == msg.options
    bad = decoded.options[-1]
    assert isinstance(bad, BindingAuthorizationData)
    assert len(bad.authenticator) == 12
    assert data[-14:-12] == bytes((5, 12))  # the BAD option is the last 14 octets
    assert verify_bad(data, kbm=KBM, coa=COA, cn=CN)
    assert not verify_bad(data, kbm=bytes(20), coa=COA, cn=CN)
    assert not verify_bad(data, kbm=KBM, coa=HOA, cn=CN)
    assert not verify_bad(data, kbm=KBM, coa=COA, cn=HA)
    assert not verify_bad(encode_mh(msg, HOA, CN), kbm=KBM, coa=COA, cn=CN)
    # A MN-HA authenticator over the same octets is not a BAD.
    mn_ha = encode_mh_authenticated(msg, HOA, CN, spi=1, key=KBM, coa=COA, hoa=CN)
    assert not verify_bad(mn_ha, kbm=KBM, coa=COA, cn=CN)


def test_ntp_round_trip() -> None:
    for t in (0.0, 1.7e9, 2085978495.5, 2085978496.25, 3.0e9):
        assert abs(unix_from_ntp(ntp_from_unix(t)) - t) < 1e-6


def test_ipv6_header_round_trip() -> None:
    header = IPv6Header(COA, HA, NH_UDP, 0, hop_limit=3, traffic_class=0xB8, flow_label=0xABCDE)
    assert parse_ipv6_header_untrusted(header.to_bytes()) == header


def test_packet_with_hao_round_trip() -> None:
    mh = encode_mh(BindingUpdate(sequence=1, lifetime=2, home=True), HOA, HA)
    packet = parse_ipv6_packet_untrusted(build_packet_with_hao(COA, HA, HOA, NH_MH, mh))
    assert packet.header.src == COA
    assert packet.upper_protocol == NH_MH
    assert packet.payload == mh
    assert packet.extension_headers[0].header_type == NH_DSTOPTS
    options = parse_destination_options_untrusted(packet.extension_headers[0].data)
    assert options.options == (HomeAddressOption(HOA),)
    assert home_address_of_untrusted(packet) == HOA
    assert pseudo_header_addresses_untrusted(packet) == (HOA, HA)
    assert decode_mh_untrusted(packet.payload, *pseudo_header_addresses_untrusted(packet))


def test_packet_with_rh2_round_trip() -> None:
    mh = encode_mh(BindingAck(status=0, sequence=1, lifetime=2), HA, HOA)
    packet = parse_ipv6_packet_untrusted(build_packet_with_rh2(HA, COA, HOA, NH_MH, mh))
    assert packet.header.dst == COA
    assert packet.extension_headers[0].header_type == NH_ROUTING
    assert parse_rh2_untrusted(packet.extension_headers[0].data) == RoutingHeaderType2(NH_MH, HOA)
    assert rh2_of_untrusted(packet) == RoutingHeaderType2(NH_MH, HOA)
    assert pseudo_header_addresses_untrusted(packet) == (HA, HOA)
    assert RoutingHeaderType2(NH_MH, HOA).to_bytes() == packet.extension_headers[0].data


def test_plain_packet() -> None:
    packet = parse_ipv6_packet_untrusted(build_ipv6_packet(COA, HA, NH_UDP, b"abc") + b"pad")
    assert packet.extension_headers == ()
    assert packet.upper_offset == 40
    assert packet.payload == b"abc"


ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def ice_strings(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(ICE_CHARS, min_size=low, max_size=high)


mice_items: st.SearchStrategy[MiceItem] = st.one_of(
    st.builds(Credentials, ice_strings(4, 32), ice_strings(22, 200)),
    st.builds(
        Candidate,
        foundation=ice_strings(1, 32),
        priority=st.integers(1, 2**31 - 1),
        kind=st.sampled_from(CANDIDATE_KINDS),
        address=st.integers(0, 2**32 - 1).map(IPv4Address)
        | st.integers(0, 2**128 - 1).map(IPv6Address),
        port=st.integers(1, 65535),
    ),
    st.just(EndOfCandidates()),
    st.builds(AnswerTo, ice_strings(4, 32)),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(mice_items, max_size=12))
def test_mice_round_trip(items: list[MiceItem]) -> None:
    assert decode_mice_untrusted(encode_mice(items)) == tuple(items)
    options = mice_options(items)
    assert all(len(o.data) <= 255 for o in options)
    assert b"".join(o.data for o in options) == encode_mice(items)
    # Through an Experimental MH (when it fits in 2048 octets), with other options mixed in.
    if sum(len(o.data) + 2 for o in options) < 2000:
        msg = ExperimentalMessage((UnknownOption(42, b"x"), *options))
        decoded = decode_mh_untrusted(encode_mh(msg, HOA, CN), HOA, CN)
        assert decoded == msg
        assert mice_from_options_untrusted(decoded.options) == tuple(items)


def test_mice_options_cut_a_tlv_across_two_options() -> None:
    items = [Credentials("abcd", "p" * 200), Credentials("efgh", "q" * 200)]
    options = mice_options(items)
    assert [len(o.data) for o in options] == [255, 2 * 207 - 255]
    assert mice_from_options_untrusted(options) == tuple(items)
    assert mice_options([]) == ()
