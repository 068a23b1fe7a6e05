"""IPv4 packets of an IPv4 home address (RFC 5555) in the ESP tunnel (drivers/esp_plane.py):
sealed with Next Header 4 (IPv4, tunnel mode), opened only when Next Header and the inner
version agree, so neither kind can pass for the other."""

from __future__ import annotations

from mipnode.core.esp_keys import EspKeys
from mipnode.drivers.esp_plane import NH_IPV4, NH_IPV6, EspSas
from mipnode.drivers.io import Counters
from tunnels.esp import SUITE_AES_GCM, EspInbound, EspOutbound, key_length

OUT, IN = 0x8001_0001, 0x8064_0001
TO_MN, TO_HA = b"\x11" * key_length(SUITE_AES_GCM), b"\x22" * key_length(SUITE_AES_GCM)
HOA = bytes(15) + b"\x64"
IPV4 = bytes([0x45, 0, 0, 28]) + bytes(8) + bytes([192, 0, 2, 1, 198, 18, 0, 2]) + bytes(8)
IPV6 = b"\x60" + bytes(47)


def ha_sas() -> EspSas:
    sas = EspSas(keylog="")
    sas.keyed(HOA, EspKeys(SUITE_AES_GCM, OUT, TO_MN, IN, TO_HA), 0.0)
    return sas


def test_ipv4_is_sealed_with_next_header_4_and_opened_as_sent() -> None:
    sas, drops = ha_sas(), Counters()
    sealed = sas.seal(HOA, IPV4, drops)
    assert sealed is not None
    nh, inner = EspInbound(SUITE_AES_GCM, OUT, TO_MN).open_untrusted(sealed)
    assert (nh, inner) == (NH_IPV4, IPV4)
    from_mn = EspOutbound(SUITE_AES_GCM, IN, TO_HA).seal(IPV4, NH_IPV4)
    assert sas.open(from_mn or b"", 0.0, drops) == (IPV4, HOA)
    assert dict(drops) == {}


def test_a_next_header_that_belies_the_packet_is_dropped() -> None:
    sas, drops = ha_sas(), Counters()
    out = EspOutbound(SUITE_AES_GCM, IN, TO_HA)
    for packet, nh in ((IPV4, NH_IPV6), (IPV6, NH_IPV4), (IPV4[:19], NH_IPV4)):
        assert sas.open(out.seal(packet, nh) or b"", 0.0, drops) is None
    assert drops["esp_not_ipv6"] == 3
