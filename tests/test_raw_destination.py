"""Raw sends name their destination as text: built once per address, in a bounded cache."""

from __future__ import annotations

from ipaddress import IPv6Address

from mipnode.drivers.io import raw_destination


def test_the_text_form_matches_ipaddress_and_is_built_once() -> None:
    raw_destination.cache_clear()
    for text in ("2001:db8:1::100", "fe80::1", "::ffff:192.0.2.1", "2001:db8::"):
        packed = IPv6Address(text).packed
        assert raw_destination(packed) == (str(IPv6Address(text)), 0)
        assert raw_destination(packed) is raw_destination(packed)
    info = raw_destination.cache_info()
    assert info.misses == 4 and info.hits >= 8
    assert info.maxsize == 4096  # a flood of distinct destinations cannot grow it
