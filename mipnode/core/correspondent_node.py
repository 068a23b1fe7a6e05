"""The correspondent's node core: return routability, D-udp answers and its forwarding table.

Theory of operation (DESIGN §4-§5). :class:`CorrespondentNode` owns the binding cache and
return routability (:class:`~mipnode.core.cn.CorrespondentCore`) and one controlled ICE agent
per home address that offered direct paths (:class:`~mipnode.core.direct_paths.DirectPaths`,
the same engine as the mobile node's). The driver's tap hands it every Mobility Header for us
(:meth:`CorrespondentNode.receive_mh`); offers (Experimental MH) go to the ICE engine and are
answered from the address they were sent to, through the mobile node's home agent like a HoT.

:class:`CnForwardingChanged` tells the driver, per home address, what its data plane needs:
the care-of address of a binding (a packet with a Home Address option is accepted only from
it; our packets may leave with a type 2 routing header to it, on flows the mobile node sends
D-native) and the selected D-udp pair (data leaves on it; data arriving there with that inner
source is delivered). Everything else goes the normal way, through the home agent.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from ice.candidate import TransportAddress
from ice.checklist import CandidatePair
from mipnode.core.cn import (
    CnBinding,
    CnBindingAdded,
    CnBindingRemoved,
    CnBindingUpdated,
    CnCoreConfig,
    CorrespondentCore,
)
from mipnode.core.direct_paths import DirectPaths
from mipnode.core.esp_keys import EspKeys
from mipnode.core.transmit import SendNative, SendUdp, Transmit
from mipnode.core.views import Endpoint, PathView
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import build_packet_with_rh2
from mipnode.wire.ipv6 import NH_MH
from mipnode.wire.mh import ExperimentalMessage, MhType, decode_mh_untrusted, encode_mh
from mipnode.wire.packets import ipv6_packet
from tunnels.esp import SUITE_AES_GCM

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class CnForwardingChanged:
    """What the data plane uses for ``home_address`` now: the binding's care-of address and
    the selected D-udp pair (``None`` each when there is none)."""

    home_address: IPv6Address
    care_of: IPv6Address | None
    direct: tuple[TransportAddress, TransportAddress] | None
    text: str
    sealed: bool = False  # the D-udp pair carries ESP (the mobile node sent a key share)
    keys: EspKeys | None = field(default=None, repr=False)  # new SAs to install first


class CorrespondentNode:
    """The correspondent's node core (module docstring)."""

    def __init__(
        self,
        config: CnCoreConfig,
        *,
        kcn: bytes,
        random_bytes: RandomBytes,
        wall_offset: float = 0.0,
    ) -> None:
        self.core = CorrespondentCore(config, kcn=kcn, random_bytes=random_bytes)
        # Every answer carries a key share: a mobile node with protection keys the pair, one
        # without (its offer has no share) gets clear D-udp, which is its choice to make.
        self.direct = DirectPaths(controlling=False, random_bytes=random_bytes, suite=SUITE_AES_GCM)
        self.wall_offset = wall_offset
        self._addresses = frozenset(config.addresses)
        self._default_address = config.addresses[0]
        # HoA -> the address of ours it offered to (our answers leave from it); bounded by the
        # ICE engine's peers, entries of forgotten peers are dropped as new ones come.
        self._answer_from: OrderedDict[IPv6Address, IPv6Address] = OrderedDict()
        self._out: list[Transmit] = []
        self._events: deque[CnForwardingChanged] = deque()
        self._counters: dict[str, int] = {}

    # -- inputs ----------------------------------------------------------------------------

    def set_sockets(self, now: float, sockets: list[TransportAddress]) -> None:
        """Our D-udp sockets (host candidates)."""
        self.direct.set_local_candidates(now, sockets)

    def receive_mh(
        self,
        now: float,
        mh: bytes,
        src: IPv6Address,
        dst: IPv6Address,
        *,
        home_address: IPv6Address | None = None,
    ) -> None:
        """A Mobility Header to us: HoTI, CoTI, BU (``home_address`` from its HAO) or an
        offer of direct paths (Experimental MH, from a home address through its home agent)."""
        if dst not in self._addresses:
            self._drop("mh_not_for_us")
            return
        if len(mh) > 2 and mh[2] == MhType.EXPERIMENTAL and home_address is None:
            self._offer(now, mh, src, dst)
        else:
            self.core.receive_datagram(now, mh, src, dst, home_address=home_address)
        self._settle(now)

    def receive_udp(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        """A STUN datagram on one of our D-udp sockets."""
        self.direct.receive_datagram(now, data, local, remote)
        self._settle(now)

    def home_address_unbound(
        self, now: float, care_of: IPv6Address, home_address: IPv6Address, local: IPv6Address
    ) -> None:
        """Data with a Home Address option but no binding for it (RFC 6275 §9.3.1): the core
        answers with a rate-limited Binding Error 1."""
        self.core.check_home_address(now, care_of, home_address, local=local)
        self._settle(now)

    # -- the five verbs --------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.direct.handle_timer(now)
        self._settle(now)

    def get_timer(self) -> float | None:
        timers = [t for t in (self.core.get_timer(), self.direct.get_timer()) if t is not None]
        return min(timers, default=None)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> CnForwardingChanged | None:
        return self._events.popleft() if self._events else None

    def statistics(self) -> dict[str, int]:
        stats = dict(self.core.statistics())
        stats.update({f"direct_{k}": v for k, v in self.direct.statistics().items()})
        stats.update(self._counters)
        return stats

    # -- inspection ------------------------------------------------------------------------

    def bindings(self) -> list[CnBinding]:
        return self.core.bindings()

    def home_addresses(self) -> list[IPv6Address]:
        bound = [b.home_address for b in self.core.bindings()]
        return list(dict.fromkeys([*bound, *self.direct.peers]))

    def selected(self, home_address: IPv6Address) -> CandidatePair | None:
        return self.direct.selected(home_address)

    # -- internals -------------------------------------------------------------------------

    def _offer(self, now: float, mh: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        try:
            msg = decode_mh_untrusted(mh, src, dst)
        except BadPacket as exc:
            self._drop(f"mice_{exc.reason}")
            return
        if not isinstance(msg, ExperimentalMessage):
            self._drop("mice_not_experimental")
            return
        self.direct.receive_signalling(now, src, msg)
        if src in self.direct.peers:
            self._answer_from[src] = dst  # answer from where it came
            self._answer_from.move_to_end(src)
            while len(self._answer_from) > 2 * len(self.direct.peers) + 1:
                self._answer_from.popitem(last=False)

    def _settle(self, now: float) -> None:
        for out in self.core.datagrams_to_send(now):
            if out.care_of is not None:
                pkt = build_packet_with_rh2(out.src, out.care_of, out.dst, NH_MH, out.data)
            else:
                pkt = ipv6_packet(out.src, out.dst, NH_MH, out.data)
            self._out.append(SendNative(pkt))
        for dgram in self.direct.datagrams_to_send(now):
            self._out.append(SendUdp(dgram.local, dgram.remote, dgram.data))
        for sig in self.direct.signalling_to_send():
            src = self._answer_from.get(sig.peer, self._default_address)
            mh = encode_mh(sig.message, src, sig.peer)
            self._out.append(SendNative(ipv6_packet(src, sig.peer, NH_MH, mh)))
        changed: dict[IPv6Address, str] = {}
        keys: dict[IPv6Address, EspKeys] = {}
        while (event := self.core.next_event()) is not None:
            if isinstance(event, CnBindingAdded | CnBindingUpdated):
                b = event.binding
                changed[b.home_address] = (
                    f"binding hoa={b.home_address} coa={b.care_of_address} "
                    f"lifetime={b.lifetime_s}s seq={b.sequence}"
                )
            elif isinstance(event, CnBindingRemoved):
                changed[event.home_address] = (
                    f"binding removed hoa={event.home_address} reason={event.reason}"
                )
        while (d_event := self.direct.next_event()) is not None:
            if d_event.keys is not None:
                keys[d_event.peer] = d_event.keys
            changed[d_event.peer] = (
                f"path to {d_event.peer}: {'D-udp' if d_event.pair else 'not D-udp'} "
                f"({d_event.reason})"
            )
        for hoa, text in changed.items():
            binding = self.core.binding_for(hoa)
            sel = self.direct.selected(hoa)
            self._events.append(
                CnForwardingChanged(
                    hoa,
                    None if binding is None else binding.care_of_address,
                    None if sel is None else (sel.local.base, sel.remote.address),
                    text,
                    self.direct.keyed(hoa),
                    keys.get(hoa),
                )
            )

    def _drop(self, reason: str) -> None:
        key = f"drop_{reason}"
        self._counters[key] = self._counters.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class NonceIndicesView:
    home: int
    care_of: int | None


@dataclass(frozen=True, slots=True)
class CnBindingView:
    """A binding as `mipnode bindings` shows it on a correspondent."""

    hoa: str
    coa: str
    path: PathView
    sequence: int
    lifetime_remaining_s: float
    state: str
    nonce_indices: NonceIndicesView


def binding_views(node: CorrespondentNode, now: float) -> list[CnBindingView]:
    return [
        CnBindingView(
            hoa=str(b.home_address),
            coa=str(b.care_of_address),
            path=PathView("D-native", None, Endpoint(str(b.care_of_address))),
            sequence=b.sequence,
            lifetime_remaining_s=max(0.0, round(b.expires_at - now, 1)),
            state="registered",
            nonce_indices=NonceIndicesView(b.home_nonce_index, b.care_of_nonce_index),
        )
        for b in node.bindings()
    ]
