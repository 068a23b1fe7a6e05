"""NEMO (RFC 3963 §4) and DSMIPv6 (RFC 5555 §3.1.1, §3.2.1) in the Mobility Header codec:
golden octets written here from the RFCs' figures, round trips, and the refusals. scapy
(test_wire_scapy.py: R flags, Mobile Network Prefix) and tshark (test_wire_tshark.py: all of
them) check the same encoder independently."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.mh import (
    BaStatus,
    BindingAck,
    BindingUpdate,
    Ipv4AckStatus,
    Ipv4AddressAck,
    Ipv4HomeAddress,
    MobileNetworkPrefix,
    decode_mh_untrusted,
    encode_mh,
)

HOA, HA = IPv6Address("2001:db8:1::64"), IPv6Address("2001:db8:1::1")
MNP = MobileNetworkPrefix(IPv6Address("2001:db8:aaaa::"), 48)


def body(data: bytes) -> bytes:
    """An MH's octets after the checksum, with the checksum zeroed in front for comparison."""
    return data[:4] + b"\x00\x00" + data[6:]


def test_a_mobile_routers_bu_is_the_rfcs_octets() -> None:
    # RFC 3963 §4.1: R is 0x0400 of the flags word; §4.3: type 6, length 18, reserved,
    # prefix length, prefix; alignment 8n+4, met right after the 12-octet fixed part.
    msg = BindingUpdate(7, 150, ack=True, home=True, mobile_router=True, options=(MNP,))
    expected = (
        bytes((59, 3, 5, 0, 0, 0))
        + (7).to_bytes(2, "big")
        + (0xC400).to_bytes(2, "big")
        + (150).to_bytes(2, "big")
        + bytes((6, 18, 0, 48))
        + MNP.prefix.packed  # 32 octets: no padding at all
    )
    data = encode_mh(msg, HOA, HA)
    assert body(data) == expected
    assert decode_mh_untrusted(data, HOA, HA) == msg


def test_an_ipv4_home_address_request_is_the_rfcs_octets() -> None:
    # RFC 5555 §3.1.1: type 29, length 6, Prefix-len (6 bits) | P | 9 reserved bits, then the
    # address; 0.0.0.0 asks the home agent for one; alignment 4n.
    option = Ipv4HomeAddress(IPv4Address("0.0.0.0"), 32, prefix_requested=False)
    data = encode_mh(BindingUpdate(1, 1, home=True, options=(option,)), HOA, HA)
    assert data[12:20] == bytes((29, 6, 32 << 2, 0, 0, 0, 0, 0))
    with_p = Ipv4HomeAddress(IPv4Address("192.0.2.0"), 24, prefix_requested=True)
    data = encode_mh(BindingUpdate(1, 1, home=True, options=(with_p,)), HOA, HA)
    assert data[12:20] == bytes((29, 6, 24 << 2 | 0x02, 0, 192, 0, 2, 0))
    assert decode_mh_untrusted(data, HOA, HA).options == (with_p,)


def test_an_ipv4_address_acknowledgement_is_the_rfcs_octets() -> None:
    # RFC 5555 §3.2.1: type 30, length 6, Status, Pref-len (6 bits) | 2 reserved, address.
    ack = Ipv4AddressAck(Ipv4AckStatus.SUCCESS, IPv4Address("192.0.2.7"), 32)
    msg = BindingAck(BaStatus.ACCEPTED, 1, 150, mobile_router=True, options=(ack,))
    data = encode_mh(msg, HA, HOA)
    assert data[7] == 0x40  # R (RFC 3963 §4.2)
    assert data[12:20] == bytes((30, 6, 0, 32 << 2, 192, 0, 2, 7))
    assert decode_mh_untrusted(data, HA, HOA) == msg


def test_status_codes_decode_by_name() -> None:
    refused = Ipv4AddressAck(132, IPv4Address("0.0.0.0"))
    msg = BindingAck(BaStatus.NOT_AUTHORIZED_FOR_PREFIX, 1, 0, options=(refused,))
    decoded = decode_mh_untrusted(encode_mh(msg, HA, HOA), HA, HOA)
    assert isinstance(decoded, BindingAck)
    assert decoded.status is BaStatus.NOT_AUTHORIZED_FOR_PREFIX and decoded.status == 142
    (option,) = decoded.options
    assert isinstance(option, Ipv4AddressAck)
    assert option.status is Ipv4AckStatus.DYNAMIC_IPV4_HOME_ADDRESS_NOT_AVAILABLE


@given(
    prefixes=st.lists(
        st.builds(
            MobileNetworkPrefix,
            st.integers(0, 2**128 - 1).map(IPv6Address),
            st.integers(0, 255),
        ),
        max_size=8,
    ),
    v4=st.none()
    | st.builds(
        Ipv4HomeAddress,
        st.integers(0, 2**32 - 1).map(IPv4Address),
        st.integers(0, 63),
        st.booleans(),
    ),
)
def test_round_trip(prefixes: list[MobileNetworkPrefix], v4: Ipv4HomeAddress | None) -> None:
    options = (*prefixes, *(() if v4 is None else (v4,)))
    msg = BindingUpdate(3, 60, ack=True, home=True, mobile_router=True, options=options)
    assert decode_mh_untrusted(encode_mh(msg, HOA, HA), HOA, HA) == msg


@pytest.mark.parametrize(
    "option",
    [
        bytes((6, 17)) + bytes(17),  # a Mobile Network Prefix one octet short
        bytes((6, 19)) + bytes(19),
        bytes((29, 5)) + bytes(5),  # IPv4 Home Address
        bytes((29, 8)) + bytes(8),
        bytes((30, 4)) + bytes(4),  # IPv4 Address Acknowledgement
    ],
)
def test_a_known_option_of_the_wrong_length_is_refused(option: bytes) -> None:
    raw = bytes((59, 0, 5, 0, 0, 0)) + bytes(6) + option
    raw += bytes(-len(raw) % 8)
    raw = bytes((59, len(raw) // 8 - 1)) + raw[2:]
    with pytest.raises(BadPacket) as bad:
        decode_mh_untrusted(raw, HOA, HA, verify_checksum=False)
    assert bad.value.reason == "bad_option"


def test_the_encoder_refuses_a_prefix_length_of_more_than_six_bits() -> None:
    with pytest.raises(ValueError, match="6 bits"):
        encode_mh(
            BindingUpdate(1, 1, options=(Ipv4HomeAddress(IPv4Address("0.0.0.0"), 64),)), HOA, HA
        )
    with pytest.raises(ValueError, match="6 bits"):
        encode_mh(
            BindingAck(0, 1, 1, options=(Ipv4AddressAck(0, IPv4Address("0.0.0.0"), 64),)), HA, HOA
        )
