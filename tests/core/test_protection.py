"""ESP between the mobile node and the home agent (DESIGN §3), on the real node cores.

The in-memory network (nodenet.py) runs with ``protected=True``: the keys come from the X25519
exchange in the BU/BA, the SAs live in the daemons' own SA table and every packet is really
sealed and opened (tunnels/esp.py). The attacks are the ones of issue 12 "no data protection":
an off-path sender that forges the outer addresses of the home agent or of the care-of address.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv6Address

from nodenet import (
    CN,
    HA6,
    HOA,
    HOME,
    KEY,
    MN6,
    SPI,
    START,
    WALL_OFFSET,
    NodeNet,
    Wire,
    drop_esp,
    drop_protocol_41,
    longest_gap,
)

from mipnode.core.esp_keys import Ephemeral, derive
from mipnode.core.ha import HaCoreConfig, HomeAgentCore, SecurityAssociation
from mipnode.core.mn import MnCoreConfig, MobileNodeCore, Registered
from mipnode.core.types import Via
from mipnode.wire.auth4285 import encode_mh_authenticated, ntp_from_unix
from mipnode.wire.ipv6 import NH_MH, NH_UDP
from mipnode.wire.keyshare import KeyShare, key_share_from_options_untrusted, key_share_option
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingUpdate,
    ExperimentalMessage,
    MesgId,
    decode_mh_untrusted,
    encode_mh,
)
from mipnode.wire.mice import Credentials, mice_options
from mipnode.wire.packets import ipv6_packet


def registered(net: NodeNet, by: float = 5.0) -> None:
    net.run_until(START + by)
    assert net.mn.state == "registered"


def test_registration_keys_both_sides_and_data_flows_sealed_both_ways() -> None:
    net = NodeNet(protected=True)
    registered(net)
    mn_out = net.mn_esp.outbound[b""]
    ha_out = net.ha_esp.outbound[HOA.packed]
    # What one side seals under the other's inbound SPI, the other opens.
    assert mn_out.spi in net.ha_esp.inbound and ha_out.spi in net.mn_esp.inbound
    assert mn_out.spi & 0x8000_0000 and ha_out.spi & 0x8000_0000
    start = net.now
    net.flow(until=start + 2.0)
    net.run_for(2.5)
    assert len(net.home_rx) >= 90 and len(net.mn_rx) >= 90
    after = [w for t, _, w in net.log if t > start]
    # Only BUs/BAs (clear, RFC 4285) may still use protocol 41; data rides in ESP.
    for wire in after:
        if wire.proto == "41":
            assert wire.payload[6] == NH_MH, wire
    assert sum(w.proto == "50" for w in after) >= 180
    assert not net.mn_drops and not net.ha_drops


def test_a_firewall_that_drops_esp_pushes_the_home_path_to_t_udp() -> None:
    """RFC 4487 §5.1 I1 (P5): checks in clear pass, the protected form does not."""
    net = NodeNet(protected=True, rules=[drop_esp])
    net.run_until(START + 20)
    assert net.home_kind() is not None and net.home_kind().startswith("T-udp")
    assert net.ha_via() is not None and net.ha_via().kind == "T-udp"
    start = net.now
    net.flow(until=start + 1.0)
    net.run_for(1.5)
    assert len(net.home_rx) >= 40 and len(net.mn_rx) >= 40


def test_every_refresh_rekeys_without_losing_data() -> None:
    net = NodeNet(protected=True)
    registered(net)
    first = net.mn_esp.outbound[b""].spi
    start = net.now
    net.flow(until=start + 600.0, interval_s=0.05)
    net.run_for(600.0)  # lifetime 600 s: refreshed at 80 %
    assert net.mn.statistics()["esp_rekeys"] >= 2
    assert net.mn_esp.outbound[b""].spi != first
    assert first not in net.ha_esp.inbound or net.ha_esp.inbound[first].retire_at is not None
    # No gap in either direction around the rekeys beyond the flow's own spacing.
    assert longest_gap(net.home_rx, start + 1, start + 599) < 0.2
    assert longest_gap(net.mn_rx, start + 1, start + 599) < 0.2


def test_home_agent_restart_without_state_rekeys_from_the_unknown_spi() -> None:
    """The restarted HA cannot open the MN's ESP; the SPI's tag names the MN, which gets an
    authenticated BRR and registers again (its sealed BU is lost on the HA too; the next
    transmission goes in clear)."""
    net = NodeNet(protected=True)
    registered(net)
    net.flow(until=START + 30.0)
    net.at(START + 10.0, lambda: net.restart_ha(down_s=0.5))
    net.run_until(START + 31.0)
    assert net.ha.statistics().get("brr_sent_unbound", 0) >= 1
    assert net.mn.state == "registered"
    # The BU the BRR asks for goes in clear at once (sealed, the new HA could not open it).
    assert net.mn.statistics()["bu_sent_clear"] >= 1
    back = [t for t in net.mn_rx if t > START + 10.5]
    assert back and back[0] < START + 11.5


def test_spoofed_clear_data_is_delivered_neither_way() -> None:
    net = NodeNet(protected=True)
    registered(net)
    rx_mn, rx_home = len(net.mn_rx), len(net.home_rx)
    forged_down = ipv6_packet(CN, HOA, NH_UDP, b"\0" * 8 + b"inject")
    forged_up = ipv6_packet(HOA, CN, NH_UDP, b"\0" * 8 + b"inject")
    via = net.ha_via()
    assert via is not None
    # HA -> MN: the outer source forged as the HA, both T-native and T-udp forms.
    net._transmit("ha", Wire("41", (str(HA6), 0), (str(MN6), 0), forged_down))
    net._transmit("ha", Wire("udp", (str(HA6), 4191), (str(MN6), 5000), forged_down))
    # MN -> HA: the outer source forged as the bound care-of address.
    net._transmit("mn", Wire("41", (str(MN6), 0), (str(HA6), 0), forged_up))
    net.run_for(1.0)
    assert len(net.mn_rx) == rx_mn and len(net.home_rx) == rx_home
    assert net.mn.statistics()["drop_clear_from_home_agent"] == 2
    assert net.ha_drops["clear_data_refused"] == 1


def test_forged_clear_offer_through_the_home_agent_is_dropped() -> None:
    """A forged M-ICE offer with the HA's outer address cannot reach the direct-path engine."""
    net = NodeNet(protected=True)
    registered(net)
    assert net.mn.direct is None or not net.mn.direct.peers
    offer = ExperimentalMessage(mice_options([Credentials("abcd", "p" * 22)]))
    inner = ipv6_packet(CN, HOA, NH_MH, encode_mh(offer, CN, HOA))
    net._transmit("ha", Wire("41", (str(HA6), 0), (str(MN6), 0), inner))
    net.run_for(0.5)
    assert net.mn.statistics()["drop_clear_from_home_agent"] == 1


def test_bu_without_key_share_is_refused_by_a_protected_home_agent() -> None:
    net = NodeNet(protected=False)
    net.ha = NodeNet(protected=True).ha  # an HA that requires protection, MN without
    net.run_until(START + 5)
    assert net.mn.state == "failed"
    assert net.mn.last_rejection == 129
    assert net.ha.statistics()["refused_without_key_share"] >= 1


def test_mn_never_falls_back_to_clear_with_a_home_agent_that_cannot_key() -> None:
    net = NodeNet(protected=True, ha_random=False)
    net.ha = NodeNet(protected=False, ha_random=False).ha
    net.run_until(START + 10)
    assert net.mn.state == "registering"
    assert net.mn.statistics()["registration_drop_ba_without_key_share"] >= 1
    assert b"" not in net.mn_esp.outbound


def test_keys_match_and_are_fresh_per_registration() -> None:
    """The MN's outbound keys are the HA's inbound ones; two registrations share nothing."""

    def keys(seed: int) -> tuple[bytes, bytes, int, int]:
        mn_e, ha_e = Ephemeral(bytes([seed]) * 32), Ephemeral(bytes([seed + 1]) * 32)
        mn_share = KeyShare(1, 0x8000_0001, mn_e.public)
        ha_share = KeyShare(1, 0x8000_0002, ha_e.public)
        shared = mn_e.shared(ha_e.public)
        assert shared is not None and shared == ha_e.shared(mn_e.public)
        common = dict(shared=shared, psk=KEY, suite=1, home_address=HOA, mn=mn_share, ha=ha_share)
        mn = derive(**common, we_are_mn=True)  # type: ignore[arg-type]
        ha = derive(**common, we_are_mn=False)  # type: ignore[arg-type]
        assert (mn.spi_out, mn.keymat_out) == (ha.spi_in, ha.keymat_in)
        assert (mn.spi_in, mn.keymat_in) == (ha.spi_out, ha.keymat_out)
        assert mn.keymat_out != mn.keymat_in
        return mn.keymat_out, mn.keymat_in, mn.spi_out, mn.spi_in

    assert keys(3)[:2] != keys(5)[:2]
    # A low-order point (all zero) gives no shared secret (RFC 7748 §6.1).
    assert Ephemeral(bytes([9]) * 32).shared(bytes(32)) is None


def test_key_material_never_shows_in_reprs() -> None:
    net = NodeNet(protected=True)
    registered(net)
    binding = net.ha.core.binding_for(HOA)
    assert binding is not None and binding.keys is not None
    secret = binding.keys.keymat_in.hex()
    assert secret not in repr(binding) and secret not in repr(binding.keys)
    assert secret not in str(net.ha.core.export_state())


def _genuine_bu(now: float) -> bytes:
    """A genuine, authenticated BU of the MN's SA with its key share."""
    core = MobileNodeCore(
        MnCoreConfig(HOA, HA6, SPI, KEY, suite=1),
        initial_sequence=1,
        wall_offset=WALL_OFFSET,
        random_bytes=lambda n: b"\x07" * n,
    )
    core.register(now, MN6)
    return core.datagrams_to_send(now)[0].data


def test_a_share_changed_in_flight_fails_the_mn_ha_authenticator() -> None:
    """The share sits before the RFC 4285 option, so the MAC covers it: flipping one bit of
    the public key makes the HA drop the BU silently (no keys, no BA)."""
    now = START
    bu = _genuine_bu(now)
    ha = HomeAgentCore(
        HaCoreConfig(HA6, HOME, (SecurityAssociation(SPI, KEY, HOA),), require_protection=True),
        wall_offset=WALL_OFFSET,
        random_bytes=lambda n: b"\x09" * n,
    )
    msg = decode_mh_untrusted(bu, HOA, HA6)
    share = key_share_from_options_untrusted(msg.options)
    assert share is not None
    # Re-encoded (valid checksum) with the attacker's key and the original authenticator.
    forged = key_share_option(KeyShare(share.suite, share.spi, bytes(31) + b"\x09"))
    options = tuple(forged if o == key_share_option(share) else o for o in msg.options)
    tampered = encode_mh(dataclasses.replace(msg, options=options), HOA, HA6)
    assert tampered != bu and len(tampered) == len(bu)
    via = Via("T-native", (str(MN6),))
    ha.receive_datagram(now, tampered, HOA, HA6, via)
    assert ha.datagrams_to_send(now) == [] and ha.bindings() == []
    assert ha.statistics()["bad_auth"] == 1
    ha.receive_datagram(now, bu, HOA, HA6, via)
    (ba,) = ha.datagrams_to_send(now)
    ack = decode_mh_untrusted(ba.data, HA6, HOA)
    assert isinstance(ack, BindingAck) and int(ack.status) == 0
    assert key_share_from_options_untrusted(ack.options) is not None


def test_registered_event_carries_the_keys_the_home_agent_derived() -> None:
    now = START
    mn = MobileNodeCore(
        MnCoreConfig(HOA, HA6, SPI, KEY, suite=2),
        initial_sequence=1,
        wall_offset=WALL_OFFSET,
        random_bytes=lambda n: b"\x05" * n,
    )
    ha = HomeAgentCore(
        HaCoreConfig(HA6, HOME, (SecurityAssociation(SPI, KEY, HOA),), require_protection=True),
        wall_offset=WALL_OFFSET,
        random_bytes=lambda n: b"\x0b" * n,
    )
    mn.register(now, MN6)
    (bu,) = mn.datagrams_to_send(now)
    ha.receive_datagram(now, bu.data, HOA, HA6, Via("T-native", (str(MN6),)))
    (ba,) = ha.datagrams_to_send(now)
    mn.receive_datagram(now, ba.data, HA6, HOA)
    event = mn.next_event()
    assert isinstance(event, Registered) and event.keys is not None
    binding = ha.binding_for(HOA)
    assert binding is not None and binding.keys is not None
    assert event.keys.suite == 2 == binding.keys.suite
    assert event.keys.keymat_out == binding.keys.keymat_in
    assert event.keys.spi_in == binding.keys.spi_out


def test_deregistration_carries_no_share_and_drops_the_keys() -> None:
    now = START
    ts = ntp_from_unix(now + WALL_OFFSET)
    bu = BindingUpdate(
        sequence=5,
        lifetime=0,
        ack=True,
        home=True,
        options=(AlternateCareOfAddress(HOA), MesgId(ts)),
    )
    data = encode_mh_authenticated(bu, HOA, HA6, spi=SPI, key=KEY, coa=HOA, hoa=HOA)
    ha = HomeAgentCore(
        HaCoreConfig(HA6, HOME, (SecurityAssociation(SPI, KEY, HOA),), require_protection=True),
        wall_offset=WALL_OFFSET,
        random_bytes=lambda n: b"\x0b" * n,
    )
    ha.receive_datagram(now, data, HOA, HA6, Via("T-native", (str(MN6),)))
    (ba,) = ha.datagrams_to_send(now)
    ack = decode_mh_untrusted(ba.data, HA6, HOA)
    # No binding to delete (133), but not refused for want of a share (129).
    assert isinstance(ack, BindingAck) and int(ack.status) == 133
    assert IPv6Address(HOA) not in [b.home_address for b in ha.bindings()]


def test_unknown_spi_asks_only_the_tagged_mobile_node_to_register_and_never_amplifies() -> None:
    """After a restart the HA holds no SA: the SPI's tag names the MN (esp_keys.spi_tag)."""
    from mipnode.core.esp_keys import inbound_spi, spi_tag
    from mipnode.core.home_agent import HomeAgentNode, SendVia

    ha = HomeAgentNode(
        HaCoreConfig(HA6, HOME, (SecurityAssociation(SPI, KEY, HOA),), require_protection=True),
        wall_offset=WALL_OFFSET,
        random_bytes=lambda n: b"\x01" * n,
    )
    via = Via("T-udp", (str(MN6), 5000), local_port=4191)
    ours = inbound_spi(b"\x12\x34", spi_tag(HOA))
    ha.unknown_spi(START, ours ^ 0x0001_0000, via, 200)  # another tag: nobody to ask
    assert ha.datagrams_to_send(START) == []
    ha.unknown_spi(START, ours, via, 60)  # too small a trigger for a BRR: no answer
    assert ha.datagrams_to_send(START) == []
    ha.unknown_spi(START, ours, via, 200)
    (brr,) = ha.datagrams_to_send(START)
    assert isinstance(brr, SendVia) and brr.via == via and brr.protect is None
    assert len(brr.packet) <= 200
    ha.unknown_spi(START + 0.5, ours, via, 200)  # rate-limited per home address
    assert ha.datagrams_to_send(START + 0.5) == []


def test_an_sa_near_the_end_of_its_sequence_numbers_is_replaced_by_a_new_registration() -> None:
    """The driver's SA table flags the owner once, at the soft limit; the MN core then
    registers again on the same pair, which rekeys (tunnels/esp.py: no ESN, never wraps)."""
    from mipnode.drivers.esp_plane import EspSas
    from mipnode.drivers.io import Counters
    from tunnels.esp import SEQ_SOFT_LIMIT, EspOutbound

    sas, drops = EspSas(keylog=""), Counters()
    sas.outbound[b""] = EspOutbound(1, 0x8000_0001, bytes(20), next_seq=SEQ_SOFT_LIMIT - 1)
    assert sas.seal(b"", b"\x60" + bytes(39), drops) is not None and not sas.rekey_due
    assert sas.seal(b"", b"\x60" + bytes(39), drops) is not None and sas.rekey_due == {b""}
    sas.rekey_due.clear()
    assert sas.seal(b"", b"\x60" + bytes(39), drops) is not None and not sas.rekey_due

    net = NodeNet(protected=True)
    registered(net)
    before = net.mn_esp.outbound[b""].spi
    net.mn.request_rekey(net.now)
    net._drain()
    net.run_for(1.0)
    assert net.mn.statistics()["rekeys_for_sequence"] == 1
    assert net.mn_esp.outbound[b""].spi != before
    assert net.mn.state == "registered"


def test_a_firewall_that_passes_esp_but_not_41_carries_a_t_native_registration() -> None:
    """RFC 4487 §5's ESP pinhole without protocol 41: the clear checks fail, so the MN
    registers over T-udp; the sealed re-check of T-native passes, and the BUs that move the
    binding there and refresh it ride ESP too (sent in clear, they would be dropped and the
    binding would lapse at the HA while the MN sends T-native)."""
    net = NodeNet(protected=True, rules=[drop_protocol_41])
    net.run_until(START + 10)
    assert net.home_kind() == "T-native/6"
    via = net.ha_via()
    assert via is not None and via.kind == "T-native"
    start = net.now
    net.flow(until=start + 1300.0, interval_s=0.1)
    net.run_for(1300.0)  # lifetime 600 s: two refreshes and more
    assert net.mn.state == "registered" and net.ha_via() == via
    assert net.mn.statistics()["esp_rekeys"] >= 3
    assert longest_gap(net.home_rx, start + 1, start + 1299) < 0.5
    assert longest_gap(net.mn_rx, start + 1, start + 1299) < 0.5


def test_a_lost_ba_costs_the_mobile_node_no_data_from_the_home_agent() -> None:
    """The HA keys the new SAs when it sends the BA; had it sealed with them at once, losing
    that BA would leave the MN unable to open anything until its BU retransmission (1 s).
    It goes on with the old SA until the MN's first packet under the new one."""
    net = NodeNet(protected=True)
    registered(net)
    lost: list[float] = []
    seen = {"bu": False}
    real = net.ha.receive_tunnelled

    def spy(now: float, inner: bytes, via: Via, protected_for: IPv6Address | None = None) -> None:
        if inner[6] == NH_MH and inner[42] == 5:  # a BU arrives: its BA is what leaves next
            seen["bu"] = True
        real(now, inner, via, protected_for)

    def lose_the_ba(now: float, wire: Wire) -> bool:
        if seen["bu"] and wire.src[0] == str(HA6) and now > START + 20 and not lost:
            lost.append(now)
            return True
        return False

    net.ha.receive_tunnelled = spy  # type: ignore[method-assign]
    net.rules.append(lose_the_ba)
    start = net.now
    net.flow(until=start + 20.0)
    net.at(START + 21.0, lambda: net.mn.request_rekey(net.now))
    net.run_for(20.5)
    assert lost, "no BA was lost"
    assert net.mn.statistics()["esp_rekeys"] == 2  # the retransmitted BU was answered
    assert longest_gap(net.mn_rx, start + 1, start + 19.5) < 0.1
    assert longest_gap(net.home_rx, start + 1, start + 19.5) < 0.1
