"""The home agent's node core: binding cache, checks, refresh requests and its forwarding table.

Theory of operation (DESIGN §4-§6). :class:`HomeAgentNode` wraps the binding cache
(:class:`~mipnode.core.ha.HomeAgentCore`) with what the home agent decides about the packets
its driver does not forward itself:

* **Checks** (the HA is ICE-lite): a Binding request is answered with the source it came from
  (XOR-MAPPED-ADDRESS): bare on our UDP ports for T-udp, inside the tunnel for T-native (a UDP
  datagram from the care-of address to the STUN port 3478). The answer is never larger than the
  request (amplification <= 1: the source may be spoofed); requests are padded by the mobile
  node so that the answer fits.
* **The home path's heartbeats in data form**: a check from a *home address* inside the tunnel
  is answered only when the home address is bound on exactly that via; otherwise (no binding:
  the HA restarted without its cache; another via: a NAT moved the mobile node's mapping) the
  answer is a Binding Refresh Request (``HomeAgentCore.refresh_request_for``: authenticated,
  rate-limited, no larger than the trigger), and the mobile node registers again at once.
  Data from an unbound home address gets the same answer (the driver reports it:
  :meth:`HomeAgentNode.unbound_traffic`).
* **Signalling**: Mobility Headers to the HA inside the tunnel go to the binding cache; its BAs
  and BRRs leave on their via.
* **Forwarding**: :class:`HaForwardingChanged` tells the driver, per home address, the via its
  packets go out on and must come in on (the ingress filter); ``None`` removes it. It also
  carries the binding's ESP keys (DESIGN §3), new with every registration.
* **Protection**: the driver says which home address's SA opened a packet
  (``protected_for``); a check or a BU that came protected is answered protected
  (``SendVia.protect``), so the mobile node learns whether the path's protected form works and
  a firewall that passes only ESP carries the registration too. ESP the driver cannot
  open for want of an SA (the HA restarted) is reported by :meth:`HomeAgentNode.unknown_spi`:
  our inbound SPIs carry a 15-bit tag of the home address (``esp_keys.spi_tag``), which is
  enough to send that mobile node an authenticated BRR, and it registers (and rekeys) at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from ice import stun
from mipnode.core.esp_keys import EspKeys, spi_tag
from mipnode.core.ha import (
    BE_INTERVAL_S,
    BE_RATE_PER_S,
    Binding,
    BindingAdded,
    BindingRemoved,
    BindingUpdated,
    DadStarted,
    HaCoreConfig,
    HomeAgentCore,
)
from mipnode.core.ipv4_networks import text
from mipnode.core.prefix_delivery import PrefixDelivery
from mipnode.core.token_bucket import ErrorRateLimiter
from mipnode.core.types import Via
from mipnode.core.views import (
    BindingView,
    PairView,
    PeerView,
    SelectedView,
    address_text,
    via_path,
)
from mipnode.wire.errors import BadPacket
from mipnode.wire.icmpv6 import build_parameter_problem
from mipnode.wire.ipv6 import NH_ICMPV6, NH_MH, NH_UDP
from mipnode.wire.mh import MH_PROBLEM_OFFSET, MhType, mh_checksum_ok
from mipnode.wire.packets import STUN_PORT, ipv6_packet, udp_in_ipv6
from mipnode.wire.prefix_discovery import (
    ICMPV6_MOBILE_PREFIX_SOLICITATION,
    solicitation_identifier_untrusted,
)
from tunnels.ro import add_type2_routing_header

TransportAddress = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SendVia:
    """An inner IPv6 packet to a mobile node on ``via`` (tunnelled as the via's kind says)."""

    via: Via
    packet: bytes
    protect: IPv6Address | None = None  # seal with this home address's SA (None: clear)


@dataclass(frozen=True, slots=True)
class SendFromPort:
    """A bare UDP payload from our UDP port ``port`` to ``remote``."""

    port: int
    remote: TransportAddress
    payload: bytes


@dataclass(frozen=True, slots=True)
class HaForwardingChanged:
    """Packets of ``home_address`` go out (and must come in) on ``via``; ``None``: unbound.

    ``text`` is the log line, formatted only when read (``str(event)`` too): a driver whose
    log is off pays nothing for it."""

    home_address: IPv6Address
    via: Via | None
    added: bool  # a new binding (the driver adds the host route)
    keys: EspKeys | None = field(default=None, repr=False)  # of this registration
    binding: Binding | None = field(default=None, repr=False)  # what changed; None: removed
    reason: str = ""  # why a binding was removed

    @property
    def text(self) -> str:
        """For the log."""
        b = self.binding
        if b is None:
            return f"binding removed hoa={self.home_address} reason={self.reason}"
        return (
            f"binding hoa={b.home_address} coa={b.care_of_address} "
            f"path={b.via.kind} lifetime={b.lifetime_s}s seq={b.sequence}"
            f"{'' if b.keys is None else ' esp=keyed'}"
        )

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class SendNative:
    """A whole IPv6 packet from the home agent to send as it is (a BA with a type 2 routing
    header to a mobile node that registered natively, RFC 6275 §9.5.4)."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class SendOnLink:
    """A whole IPv6 packet for the home link, to the link-layer address ``link_address``
    (a BA to a mobile node back home, RFC 6275 §10.3.2: its home address may still resolve to
    us)."""

    packet: bytes
    link_address: bytes


@dataclass(frozen=True, slots=True)
class SendSolicitation:
    """Duplicate Address Detection for ``target`` on the home link: one Neighbor
    Solicitation from the unspecified address (RFC 4862 §5.4.2)."""

    target: IPv6Address


IPV6_HEADER = 40
IPV6_AND_RH2 = IPV6_HEADER + 24  # a native answer's headers (RFC 6275 §6.4)
HaTransmit = SendVia | SendFromPort | SendNative | SendOnLink | SendSolicitation
MH_TYPE_BU = int(MhType.BU)


class HomeAgentNode:
    """The home agent's node core (module docstring)."""

    def __init__(
        self,
        config: HaCoreConfig,
        *,
        wall_offset: float = 0.0,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.core = HomeAgentCore(config, wall_offset=wall_offset, random_bytes=random_bytes)
        self._by_tag: dict[int, list[IPv6Address]] = {}
        for sa in config.security_associations:
            self._by_tag.setdefault(spi_tag(sa.home_address), []).append(sa.home_address)
        self._address = config.address
        self._address_bytes = config.address.packed
        self._prefix = config.home_prefix
        self._out: list[HaTransmit] = []
        self._events: deque[HaForwardingChanged] = deque()
        self._counters: dict[str, int] = {}
        self._reply_protect: IPv6Address | None = None  # answers to a sealed BU go sealed
        self.drops: dict[str, int] = {}  # what this node refused, by reason (status "drops")
        self._pp_limiter = ErrorRateLimiter(BE_INTERVAL_S, BE_RATE_PER_S)  # RFC 4443 §2.4 (f)
        self._prefixes = PrefixDelivery(config.address, config.home_prefix)  # RFC 6275 §10.6

    # -- inputs --------------------------------------------------------------------------------

    def receive_udp(self, now: float, data: bytes, port: int, remote: TransportAddress) -> None:
        """A bare STUN datagram on our UDP ``port`` (a T-udp check, or gathering)."""
        response = self._answer(data, remote)
        if response is not None:
            self._out.append(SendFromPort(port, remote, response))

    def receive_tunnelled(
        self, now: float, inner: bytes, via: Via, protected_for: IPv6Address | None = None
    ) -> None:
        """An inner packet to the home agent itself (Mobility Header or a check) that arrived
        on ``via``, opened by the ESP SA of ``protected_for`` (``None``: it came in clear)."""
        if len(inner) < 40 or inner[0] >> 4 != 6:
            self._drop("tunnel_not_ipv6")
            return
        nh = inner[6]
        plen = int.from_bytes(inner[4:6], "big")
        if 40 + plen > len(inner):
            self._drop("tunnel_truncated")
            return
        if nh == NH_MH:
            mh = inner[40 : 40 + plen]
            src_octets = inner[8:24]
            if not mh_checksum_ok(mh, src_octets, inner[24:40]):
                self._drop("mh_bad_checksum")  # §9.2: silently, whatever else is wrong
                return
            # The core takes the source as octets (no address object per BU); a BU that came
            # sealed by its own home address's SA is answered sealed (by the SA in force: the
            # driver applies this registration's new keys after sending the BA).
            if protected_for is not None and protected_for.packed == src_octets:
                self._reply_protect = protected_for
            refused = self.core.receive_datagram(
                now, mh, src_octets, self._address_bytes, via, checksum_verified=True
            )
            if (offset := MH_PROBLEM_OFFSET.get(refused or "")) is not None:
                source = IPv6Address(src_octets)
                protect = protected_for if protected_for == source else None
                self._parameter_problem(
                    now, inner, 40 + offset, source, via, lambda pp: SendVia(via, pp, protect)
                )
            self._settle(now)
            self._reply_protect = None
            return
        if nh == NH_ICMPV6 and plen and inner[40] == ICMPV6_MOBILE_PREFIX_SOLICITATION:
            self._prefix_solicited_in_tunnel(now, inner, plen, via, protected_for)
            return
        if nh == NH_UDP and len(inner) >= 48:
            dport = int.from_bytes(inner[42:44], "big")
            if dport == STUN_PORT and stun.looks_like_stun(inner[48:]):
                src = IPv6Address(inner[8:24])
                self._tunnelled_check(now, inner, src, dport, via, protected_for)
                return
        self._drop("tunnel_to_ha_unexpected")

    def _parameter_problem(
        self,
        now: float,
        packet: bytes,
        pointer: int,
        source: IPv6Address,
        via: Via,
        output: Callable[[bytes], HaTransmit],
    ) -> None:
        """RFC 6275 §9.2: a malformed MH is dropped and SHOULD be answered with an ICMPv6
        Parameter Problem, code 0, pointing at the field of ``packet`` (as it came): to its
        ``source`` as ``output`` sends it (on the via it came, or natively), rate-limited per
        path and address, never larger than the packet that caused it (the source may be
        forged)."""
        self._drop("mh_malformed")
        if source.is_multicast or source.is_unspecified or source.is_loopback:
            return
        answer = build_parameter_problem(
            self._address, source, 0, pointer, packet, max_octets=len(packet)
        )
        if answer is None:
            self._drop("parameter_problem_larger_than_trigger")
            return
        if not self._pp_limiter.allow(now, (via.remote[0], source)):  # as Binding Errors
            self._drop("parameter_problem_rate_limited")
            return
        self._count("parameter_problems_sent")
        self._out.append(output(answer))

    def receive_native_bu(
        self,
        now: float,
        mh: bytes,
        care_of: bytes,
        home_address: bytes,
        packet: bytes = b"",
        mh_at: int = 0,
    ) -> None:
        """A Mobility Header sent natively from ``care_of`` with a Home Address option naming
        ``home_address`` (RFC 6275 §11.7.1, the form every RFC mobile node sends). Only a BU is
        taken (§9.3.1: nothing else may use a Home Address option without a binding); the
        registration's via is IPv6-in-IPv6 to the care-of address (§10.4.1). ``packet`` is the
        packet as it arrived, the MH at its octet ``mh_at``: a malformed Payload Proto or
        Header Len is answered with a Parameter Problem pointing into it (§9.2)."""
        if not mh_checksum_ok(mh, home_address, self._address_bytes):
            self._drop("mh_bad_checksum")  # §9.2: first, silently, whatever else is wrong
            return
        if len(mh) < 4 or mh[2] != MH_TYPE_BU:
            self._drop("native_mh_not_bu")
            return
        source = IPv6Address(care_of)
        if (
            source.is_multicast
            or source.is_unspecified
            or source.is_loopback
            or source.is_link_local
            or source.ipv4_mapped is not None
            or source in self._prefix  # a home address (or ours): the tunnel would loop
        ):
            self._drop("native_bu_source_not_unicast")  # §9.5.4: the BA goes back to it
            return
        via = Via("T-native", (str(source),))
        refused = self.core.receive_datagram(
            now,
            mh,
            care_of,
            self._address_bytes,
            via,
            home_address=home_address,
            checksum_verified=True,
        )
        if packet and (offset := MH_PROBLEM_OFFSET.get(refused or "")) is not None:
            # Natively to the packet's source, the care-of address: the home address in its
            # option is unauthenticated, and routed into our own TUN.
            self._parameter_problem(now, packet, mh_at + offset, source, via, SendNative)
        self._settle(now)

    def receive_home_link_bu(self, now: float, packet: bytes, link_address: bytes) -> None:
        """A Mobility Header to us on the home link, in ``packet`` (the whole IPv6 packet, the
        MH right after its header) from the link-layer address ``link_address``: a mobile node
        back home de-registers from its home address (RFC 6275 §11.5.5), and the answer goes
        to that link-layer address (§10.3.2)."""
        source = IPv6Address(packet[8:24])
        if source not in self._prefix or source == self._address or len(link_address) != 6:
            self._drop("home_link_mh_source")  # §11.5.5: from the home address only
            return
        plen = int.from_bytes(packet[4:6], "big")
        if plen < 4 or len(packet) < 40 + plen or packet[42] != MH_TYPE_BU:
            # Only a BU is taken here: a Binding Error or Parameter Problem would go out on a
            # path (the core answers by via), not to the sender's link-layer address.
            self._drop("home_link_mh_not_bu")
            return
        via = Via("T-native", (str(source),))  # unused: every answer goes by link address
        self.core.receive_datagram(
            now,
            packet[40 : 40 + plen],
            packet[8:24],
            self._address_bytes,
            via,
            None,
            False,
            link_address,
        )
        self._settle(now)

    def receive_native_prefix_solicitation(
        self, now: float, message: bytes, care_of: bytes, home_address: bytes, size: int
    ) -> None:
        """A Mobile Prefix Solicitation (the ICMPv6 ``message``) sent natively from ``care_of``
        with a Home Address option naming ``home_address`` (RFC 6275 §6.7, §11.4.2), in a packet
        of ``size`` octets: answered to the care-of address with a type 2 routing header
        (§6.8), if that is where the home address is bound (core/prefix_delivery.py)."""
        packet = self._prefix_solicited(
            now,
            message,
            home_address,
            lambda b: b.care_of_address.packed == care_of,
            IPV6_AND_RH2,
            size,
        )
        if packet is not None:
            self._out.append(SendNative(add_type2_routing_header(packet, care_of)))

    def _prefix_solicited_in_tunnel(
        self, now: float, inner: bytes, plen: int, via: Via, protected_for: IPv6Address | None
    ) -> None:
        """A Mobile Prefix Solicitation to us in the tunnel, from a home address bound on
        ``via`` or sealed by its own SA: answered in the tunnel, sealed if it came sealed."""
        sealed = protected_for is not None and protected_for.packed == inner[8:24]
        packet = self._prefix_solicited(
            now,
            inner[40 : 40 + plen],
            inner[8:24],
            lambda b: sealed or b.via == via,
            IPV6_HEADER,
            None if sealed else len(inner),
        )
        if packet is not None:
            self._out.append(SendVia(via, packet, protected_for if sealed else None))

    def _prefix_solicited(
        self,
        now: float,
        message: bytes,
        home_address: bytes,
        bound_here: Callable[[Binding], bool],
        headers: int,
        room: int | None,
    ) -> bytes | None:
        """The advertisement's IPv6 packet (HA -> HoA) for a solicitation from a home address
        whose binding ``bound_here`` accepts, or None (counted). ``room``: the size of an
        unauthenticated solicitation, which the answer (``headers`` and the message) must not
        exceed; None when it came sealed."""
        try:
            identifier = solicitation_identifier_untrusted(
                message, home_address, self._address_bytes
            )
        except BadPacket as exc:
            self._drop(exc.reason)
            return None
        hoa = IPv6Address(home_address)
        binding = self.core.binding_for(hoa)
        if binding is None or not bound_here(binding):
            self._drop("mps_not_from_a_binding")  # §9.3.1: an address we cannot vouch for
            return None
        answer = self._prefixes.answer(now, identifier, hoa, headers, room)
        if isinstance(answer, str):
            self._drop(answer)
            return None
        self._count("mpa_sent")
        return ipv6_packet(self._address, hoa, NH_ICMPV6, answer)

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    @property
    def dad_pending(self) -> bool:
        """Whether Duplicate Address Detection is under way (core/dad.py)."""
        return self.core.dad_pending

    def dad_conflict(self, now: float, target: IPv6Address) -> None:
        """The driver saw another node use ``target`` on the home link (core/dad.py)."""
        if self.core.dad_conflict(now, target):
            self._settle(now)

    def unknown_spi(self, now: float, spi: int, via: Via, size: int) -> None:
        """``size`` octets of ESP arrived on ``via`` under an SPI we hold no SA for: ask the
        mobile node whose tag it carries to register again (module docstring)."""
        for hoa in self._by_tag.get((spi >> 16) & 0x7FFF, ()):
            self.core.refresh_request_for(now, hoa, via, size)
        self._settle(now)

    def request_rekey(self, now: float, home_address: IPv6Address) -> None:
        """The driver's outbound SA toward ``home_address`` nears the end of its sequence
        numbers: a Binding Refresh Request makes the mobile node register, which rekeys."""
        self.core.request_refresh(home_address)
        self._settle(now)

    def unbound_traffic(self, now: float, inner: bytes, via: Via) -> None:
        """The driver's ingress filter refused a tunnelled packet: its inner source is not bound
        on ``via``. For a home address of ours: a Binding Refresh Request back."""
        src = IPv6Address(inner[8:24])
        if src in self._prefix:
            self.core.refresh_request_for(now, src, via, len(inner))
            self._settle(now)

    # -- the five verbs ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._settle(now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def datagrams_to_send(self, now: float) -> list[HaTransmit]:
        self._settle(now)
        out, self._out = self._out, []
        return out

    def next_event(self) -> HaForwardingChanged | None:
        return self._events.popleft() if self._events else None

    def statistics(self) -> dict[str, int]:
        stats = dict(self.core.statistics())
        stats.update(self._counters)
        return stats

    # -- internals -----------------------------------------------------------------------------

    def _tunnelled_check(
        self,
        now: float,
        inner: bytes,
        src: IPv6Address,
        dport: int,
        via: Via,
        protected_for: IPv6Address | None,
    ) -> None:
        sport = int.from_bytes(inner[40:42], "big")
        if src in self._prefix:
            # The data form of the home path's heartbeat: proves the binding too.
            binding = self.core.binding_for(src)
            if binding is None or binding.via != via:
                self._count("checks_for_unbound_home_address")
                self.core.refresh_request_for(now, src, via, len(inner))
                self._settle(now)
                return
        # The mapped address is the outer source: what the network in between let through (for
        # T-udp with its outer port; IPv6-in-IPv6 has none, so the inner port stands in).
        outer_port = via.remote[1] if via.kind == "T-udp" and len(via.remote) > 1 else sport
        response = self._answer(inner[48:], (str(via.remote[0]), int(outer_port)))
        if response is not None:
            packet = udp_in_ipv6(self._address, src, dport, sport, response)
            self._out.append(SendVia(via, packet, protected_for))

    def _answer(self, data: bytes, mapped: TransportAddress) -> bytes | None:
        try:
            msg = stun.parse_stun_untrusted(data)
        except BadPacket as exc:
            self._drop(f"stun_{exc.reason}")
            return None
        if msg.message_method != stun.Method.BINDING or msg.message_class != stun.Class.REQUEST:
            self._drop("stun_not_binding_request")
            return None
        response = stun.binding_response(msg.transaction_id, mapped)
        if len(response) > len(data):
            # Unauthenticated requests from anywhere: never answer with more bytes than came
            # in, or the HA becomes an amplifier toward spoofed sources (DESIGN §4).
            self._drop("stun_request_smaller_than_answer")
            return None
        self._count("checks_answered")
        return response

    def _settle(self, now: float) -> None:
        for out in self.core.datagrams_to_send(now):
            if out.via is None:
                self._drop("mh_without_path")
                continue
            packet = ipv6_packet(out.src, out.dst, NH_MH, out.data)
            if out.link_address is not None:
                self._out.append(SendOnLink(packet, out.link_address))
                continue
            if out.care_of is not None:  # a natively sent BU's answer: to the CoA, RH2 (HoA)
                self._out.append(SendNative(add_type2_routing_header(packet, out.care_of.packed)))
                continue
            protect = self._reply_protect if out.dst == self._reply_protect else None
            self._out.append(SendVia(out.via, packet, protect))
        while (event := self.core.next_event()) is not None:
            if isinstance(event, BindingAdded | BindingUpdated):
                b = event.binding
                self._events.append(
                    HaForwardingChanged(
                        b.home_address, b.via, isinstance(event, BindingAdded), b.keys, b
                    )
                )
            elif isinstance(event, BindingRemoved):
                self._events.append(
                    HaForwardingChanged(event.home_address, None, False, reason=event.reason)
                )
            elif isinstance(event, DadStarted):
                self._out.extend(SendSolicitation(target) for target in event.targets)

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1


def for_the_node_core(inner: bytes) -> bool:
    """Whether a tunnelled packet to the home agent's own address is for the node core (a
    Mobility Header, a check, a Mobile Prefix Solicitation) rather than for the host's kernel
    (a ping, say): what a driver asks before :meth:`HomeAgentNode.receive_tunnelled`."""
    nh = inner[6]
    return nh in (NH_MH, NH_UDP) or (
        nh == NH_ICMPV6 and len(inner) > 40 and inner[40] == ICMPV6_MOBILE_PREFIX_SOLICITATION
    )


def binding_views(node: HomeAgentNode, now: float) -> list[BindingView]:
    """The bindings as `mipnode bindings` shows them (the HA knows no local endpoint)."""
    return [
        BindingView(
            hoa=str(b.home_address),
            coa=address_text(b.care_of_address),
            path=via_path(b.via),
            sequence=b.sequence,
            lifetime_remaining_s=max(0.0, round(b.expires_at - now, 1)),
            state=str(b.state),
            mobile_network_prefixes=tuple(text(p) for p in b.prefixes),
            ipv4_home_address=None if b.ipv4_home_address is None else str(b.ipv4_home_address),
        )
        for b in node.core.bindings()
    ]


def path_views(node: HomeAgentNode, now: float) -> list[PeerView]:
    """`mipnode paths` on the HA: each mobile node's path is the via of its binding (the mobile
    node chose and checked it; the HA only answers)."""
    out = []
    for b in binding_views(node, now):
        p = b.path
        selected = SelectedView(p.kind, p.local, p.remote, None, None)
        pair = PairView(p.kind, p.local, p.remote, "succeeded", None, None, None)
        out.append(PeerView(b.hoa, "mobile-node", selected, [pair], []))
    return out
