"""Home agent conformance, one test per requirement (docs/conformance.md), in the manner of the
IPv6 Ready / TAHI Mobile IPv6 test specifications.

Each test names its section -- ``s9_2`` is RFC 6275 §9.2, ``rfc4285_s6`` is RFC 4285 §6 -- and
its docstring states the requirement. A real ``mipnode ha`` runs in network namespaces built by
the lab (``mn -- fw -- core -- ha``); the test plays the mobile node from the ``mn`` namespace
with packets it builds itself with scapy (IPv6, IPv6-in-IPv6, Mobility Header, Binding Update,
Alternate Care-of Address, Home Address option; the RFC 4285 options with scapy's
``MIP6OptReplayProtection`` and ``MIP6OptMsgAuth``, types 10 and 9 as IANA numbers them), the
MN-HA authenticator from ``hmac``/``hashlib`` and the checksums from its own one's-complement
sum. Nothing of mipnode's own wire or core code builds or parses a packet here: the answers are
captured on the MN's link (``mh_prober.py``) and read with scapy's layers.

mipnode's mobile node signals inside the tunnel: IPv6-in-IPv6 from the care-of address to the
home agent, the inner packet from the home address, the care-of address in an Alternate Care-of
Address option, a Mesg-ID option, and last the MN-HA authentication option. The answers come
back the same way. One test sends the RFC 6275 form instead: natively from the care-of address
with a Home Address option, answered with a type 2 routing header.

The crafted cases share one home agent (``protection = "none"``, so the test may put its packets
into the tunnel in clear), each with a mobile node entry of its own, so that their sequence
numbers and timestamps never meet. The restart and the protected smoke test start their own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from mipnode.drivers.persist import STATE_FILE
from mipnode.lab import netns, runner, topology
from mipnode.lab.topology import HA_ADDRESS, HOME_PREFIX, MN_LAN6

from .conftest import needs_root
from .mh_prober import Prober

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scapy's import-time deprecation warnings
    from scapy.layers.inet6 import (
        HAO,
        MIP6MH_BA,
        MIP6MH_BE,
        MIP6MH_BRR,
        MIP6MH_BU,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6MPAdv,
        ICMPv6MPSol,
        ICMPv6NDOptPrefixInfo,
        ICMPv6ParamProblem,
        IPerror6,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrRouting,
        MIP6MH_Generic,
        MIP6OptAltCoA,
        MIP6OptBRAdvice,
        MIP6OptMsgAuth,
        MIP6OptNonceIndices,
        MIP6OptReplayProtection,
        Pad1,
        PadN,
    )
    from scapy.packet import Packet, Raw

pytestmark = [needs_root, pytest.mark.netns, pytest.mark.oracle]

HA = HA_ADDRESS
COA = MN_LAN6  # the mobile node's care-of address, behind fw
CORE = "2001:db8:f2::1"  # the core router's address on the home agent's link
NH_IPV6, NH_ICMPV6, NH_MH, NH_NONE = 41, 58, 135, 59
MH_BU, MH_BE = 5, 7
NTP_UNIX_OFFSET = 2_208_988_800
MAX_LIFETIME_S = 402  # the shared HA's max_lifetime_s: 100 whole 4-second units
LIFETIME = 50  # what the tests ask for, in 4-second units (200 s: no refresh request comes)
ANSWER_S = 3.0  # longest wait for an answer (the wait ends when it comes)
SILENCE_S = 0.7  # how long "no answer" is watched for
UNKNOWN_SPI = 4242
TIMESTAMP_WINDOW_S = 7  # RFC 4285 §6's default, the home agent's

# One mobile node entry per test (HoA 2001:db8:1::a:N, SPI 0xa00 + N): tests never share a
# sequence number or a timestamp.
NODE_NAMES = (
    "checksum",
    "accept",
    "old_sequence",
    "wrap",
    "after_deregistration",
    "type_change",
    "no_h",
    "no_a",
    "native",
    "lifetime",
    "data",
    "deregistration",
    "deregistration_none",
    "ba_auth",
    "wrong_auth",
    "unknown_spi",
    "auth_last",
    "no_mesg_id",
    "stale",
    "replay",
    "echo",
    "prefix",
    "prefix_native",
)

# -- the mobile node's side, built independently of mipnode ---------------------------------------


def _packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, address)


def checksum(src: str, dst: str, next_header: int, data: bytes) -> int:
    """The Internet checksum of ``data`` under the IPv6 pseudo-header (RFC 8200 §8.1); 0 over
    data that carries a right checksum."""
    buf = _packed(src) + _packed(dst) + struct.pack("!I3xB", len(data), next_header) + data
    if len(buf) % 2:
        buf += b"\x00"
    total = sum(struct.unpack(f"!{len(buf) // 2}H", buf))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_checksum(mh: bytes, src: str, dst: str = HA) -> bytes:
    """``mh`` with its checksum field filled in (pseudo-header ``src`` -> ``dst``)."""
    zeroed = mh[:4] + b"\x00\x00" + mh[6:]
    return zeroed[:4] + struct.pack("!H", checksum(src, dst, NH_MH, zeroed)) + zeroed[6:]


def authenticator(key: bytes, coa: str, hoa: str, mh_through_spi: bytes) -> bytes:
    """RFC 4285 §5.1: the first 96 bits of HMAC-SHA1(key, CoA | HoA | MH data), the MH data
    running from the MH's first octet through the SPI with the checksum field zero."""
    data = mh_through_spi[:4] + b"\x00\x00" + mh_through_spi[6:]
    return hmac.new(key, _packed(coa) + _packed(hoa) + data, hashlib.sha1).digest()[:12]


def ntp_now(offset_s: float = 0.0) -> int:
    """A 64-bit NTP timestamp (RFC 5905) of the wall clock plus ``offset_s``."""
    return int((time.time() + offset_s + NTP_UNIX_OFFSET) * 2**32) % 2**64


def _pad(n: int) -> list[Packet]:
    return [] if n == 0 else [Pad1()] if n == 1 else [PadN(optdata=bytes(n - 2))]


def _laid_out(options: Sequence[tuple[Packet, int, int]], start: int = 12) -> tuple[list, int]:
    """Options with the padding their alignment (``x``n+``y``) needs and, unless the last one
    ends on 8 octets, trailing padding; and where the MN-HA option (if any) starts."""
    out: list[Packet] = []
    pos, auth_at = start, -1
    for option, x, y in options:
        delta = (y - pos) % x
        out += _pad(delta)
        pos += delta
        if isinstance(option, MIP6OptMsgAuth):
            auth_at = pos
        out.append(option)
        pos += len(bytes(option))
    out += _pad(-pos % 8)
    return out, auth_at


@dataclass
class Mn:
    """A mobile node entry of the home agent: home address, SPI and key (RFC 4285 §5.1)."""

    hoa: str
    spi: int
    key: bytes
    last_timestamp: int = 0

    def fresh(self) -> int:
        """A timestamp of now, above every fresh one this node used before."""
        self.last_timestamp = max(ntp_now(), self.last_timestamp + 1)
        return self.last_timestamp

    def bu(
        self,
        sequence: int,
        *,
        flags: str = "AH",
        lifetime: int = LIFETIME,
        alt_coa: str | None = COA,
        mac_coa: str | None = None,
        timestamp: int | bool | None = True,
        spi: int | None = None,
        key: bytes | None = None,
        auth: str = "last",
        extra: Sequence[tuple[Packet, int, int]] = (),
    ) -> bytes:
        """A Binding Update from this node, authenticated and with its checksum (HoA -> HA).

        ``timestamp``: True for a fresh one, an int for that one, None for no Mesg-ID option.
        ``mac_coa``: the care-of address the authenticator covers (default: the Alternate
        Care-of Address, else ``COA``, the source of a native BU). ``auth``: ``"last"`` (RFC
        4285 §5), ``"padded"`` (followed by padding, as scapy's autopad would lay it out),
        ``"before_mesg_id"`` (followed by the Mesg-ID option) or ``"none"``. ``extra``: more
        options after the Alternate Care-of Address, each with its alignment ``x``n+``y``."""
        spi = self.spi if spi is None else spi
        key = self.key if key is None else key
        mac_coa = mac_coa or alt_coa or COA
        if timestamp is True:
            timestamp = self.fresh()
        options: list[tuple[Packet, int, int]] = []
        if alt_coa is not None:
            options.append((MIP6OptAltCoA(acoa=alt_coa), 8, 6))
        options += extra
        mesg = [] if timestamp is None else [(MIP6OptReplayProtection(timestamp=timestamp), 8, 2)]
        msg_auth = MIP6OptMsgAuth(subtype=1, mspi=spi, authdata=bytes(12))
        if auth == "last":  # 4n+1, and ending the MH on 8 octets
            options += [*mesg, (msg_auth, 8, 5)]
        elif auth == "padded":
            options += [*mesg, (msg_auth, 8, 1)]
        elif auth == "before_mesg_id":
            options += [(msg_auth, 4, 1), *mesg]
        else:
            options += mesg
        laid, auth_at = _laid_out(options)
        mh = bytearray(
            bytes(
                MIP6MH_BU(
                    seq=sequence, flags=flags, mhtime=lifetime, autopad=0, cksum=0, options=laid
                )
            )
        )
        if auth_at >= 0:
            spi_end = auth_at + 7  # type, length, subtype, SPI
            mh[spi_end : spi_end + 12] = authenticator(key, mac_coa, self.hoa, bytes(mh[:spi_end]))
        return with_checksum(bytes(mh), self.hoa)

    def tunnelled(self, mh: bytes, coa: str = COA) -> bytes:
        """mipnode's form: IPv6-in-IPv6 from the care-of address, inside HoA -> HA."""
        return tunnel(self.hoa, mh, coa)

    def native(self, mh: bytes, coa: str = COA) -> bytes:
        """RFC 6275 §11.7.1's form: from the care-of address, the HoA in a Home Address option."""
        packet = (
            IPv6(src=coa, dst=HA)
            / IPv6ExtHdrDestOpt(nh=NH_MH, options=[HAO(hoa=self.hoa)])
            / Raw(mh)
        )
        return bytes(packet)


def tunnel_packet(inner: bytes, coa: str = COA) -> bytes:
    """A whole inner IPv6 packet in IPv6-in-IPv6 from ``coa`` to the HA."""
    return bytes(IPv6(src=coa, dst=HA) / IPv6(inner))


def tunnel(inner_src: str, mh: bytes, coa: str = COA) -> bytes:
    """A Mobility Header from ``inner_src`` to the HA, in IPv6-in-IPv6 from ``coa``."""
    return bytes(IPv6(src=coa, dst=HA) / IPv6(src=inner_src, dst=HA, nh=NH_MH) / Raw(mh))


def malformed_mh(
    src: str, *, payload_proto: int = NH_NONE, header_len: int | None = None, mh_type: int = MH_BU
) -> bytes:
    """A 64-octet Mobility Header (a BU, or an unknown type) with its checksum right: large
    enough that an error message about it need never be larger (docs/conformance.md, D1)."""
    body: Packet
    if mh_type == MH_BU:
        body = MIP6MH_BU(
            nh=payload_proto,
            len=header_len,
            seq=1,
            flags="AH",
            mhtime=1,
            autopad=0,
            cksum=0,
            options=[PadN(optdata=bytes(50))],
        )
    else:
        body = MIP6MH_Generic(
            nh=payload_proto, len=header_len, mhtype=mh_type, cksum=0, msg=bytes(58)
        )
    mh = bytes(body)
    assert len(mh) == 64
    return with_checksum(mh, src)


# -- reading the answers --------------------------------------------------------------------------


@dataclass
class Reply:
    """One packet from the home agent: scapy's dissection, and the Mobility Header it carries
    as it was on the wire (for the authenticator and checksum)."""

    packet: Any  # scapy IPv6 (outer)
    inner: Any  # the tunnelled IPv6 packet, or None for a native one
    mh: bytes = b""
    message: Any = None  # scapy's MH layer

    @property
    def options(self) -> list[Any]:
        return list(getattr(self.message, "options", []))

    def option(self, kind: type) -> Any:
        found = [o for o in self.options if isinstance(o, kind)]
        return found[0] if found else None


MH_LAYERS = (MIP6MH_BA, MIP6MH_BE, MIP6MH_BRR, MIP6MH_BU, MIP6MH_Generic)


def parse(raw: bytes) -> Reply:
    """Dissect a packet from the HA with scapy; the MH's octets are cut out of ``raw`` by the
    lengths in the headers (a tunnel, or a type 2 routing header, before it)."""
    packet = IPv6(raw)
    tunnelled = packet.nh == NH_IPV6 and len(raw) >= 80
    reply = Reply(packet, packet.payload if tunnelled else None)
    base = 40 if tunnelled else 0
    layer = (reply.inner if tunnelled else packet).payload
    next_header, pos = raw[base + 6], base + 40
    end = pos + int.from_bytes(raw[base + 4 : base + 6], "big")
    if next_header == 43 and isinstance(layer, IPv6ExtHdrRouting):
        next_header, pos = raw[pos], pos + 8 * (raw[pos + 1] + 1)
        layer = layer.payload
    if next_header == NH_MH and isinstance(layer, MH_LAYERS):
        reply.message, reply.mh = layer, raw[pos:end]
    return reply


def concerning(reply: Reply, address: str) -> bool:
    """Whether a packet from the HA is about ``address``: tunnelled to it, or to the care-of
    address with a routing header naming it."""
    if reply.inner is not None:
        return IPv6Address(reply.inner.dst) == IPv6Address(address)
    if reply.packet.haslayer(IPv6ExtHdrRouting):
        routed = reply.packet[IPv6ExtHdrRouting].addresses
        return IPv6Address(address) in [IPv6Address(a) for a in routed]
    return IPv6Address(reply.packet.dst) == IPv6Address(address)


def tunnelled_ba(hoa: str) -> Callable[[Reply], bool]:
    def match(r: Reply) -> bool:
        return r.inner is not None and isinstance(r.message, MIP6MH_BA) and concerning(r, hoa)

    return match


def verify_signed(reply: Reply, mn: Mn, coa: str = COA) -> None:
    """The MH (a BA or BRR from the HA) has a right checksum (pseudo-header HA -> HoA) and ends
    with the MN-HA option (RFC 4285 §5: last, nothing after it) whose SPI is the node's and
    whose authenticator is right for CoA | HoA | MH."""
    mh = reply.mh
    assert checksum(HA, mn.hoa, NH_MH, mh) == 0, f"bad MH checksum: {mh.hex()}"
    auth = reply.options[-1] if reply.options else None
    assert isinstance(auth, MIP6OptMsgAuth), f"the last option is not MN-HA auth: {reply.options}"
    assert auth.subtype == 1 and auth.olen == 17 and auth.mspi == mn.spi
    assert mh[-19] == 9, "the MN-HA option does not end the MH"
    assert auth.authdata == authenticator(mn.key, coa, mn.hoa, mh[:-12]), "wrong authenticator"


def mesg_id(reply: Reply) -> int | None:
    option = reply.option(MIP6OptReplayProtection)
    return None if option is None else int(option.timestamp)


# -- the lab --------------------------------------------------------------------------------------


def ha_config(
    path: Path, nodes: Sequence[Mn], *, protection: str, state_dir: Path | None, extra: str = ""
) -> Path:
    """The home agent's configuration; ``extra``: more lines for ``[ha]``."""
    entries = "".join(
        f'\n[[mobile_node]]\nhome_address = "{n.hoa}"\nspi = {n.spi}\nkey = "{n.key.hex()}"\n'
        for n in nodes
    )
    keeps = f'state_dir = "{state_dir}"\n' if state_dir is not None else ""
    path.write_text(
        f'[ha]\naddress = "{HA}"\nhome_prefix = "{HOME_PREFIX}"\n'
        f'max_lifetime_s = {MAX_LIFETIME_S}\nprotection = "{protection}"\n{keeps}{extra}{entries}'
    )
    path.chmod(0o600)  # it holds keys: the daemon refuses it open to others
    return path


def start_ha(t: topology.Topology, config: Path, log: str) -> int:
    """Start ``mipnode ha`` in the HA's namespace; return once it answers (fail if it exits)."""
    pid = t.spawn("ha", ["ha", "--config", str(config)], log)
    child = netns.CHILDREN[pid]
    ready = runner.wait_for(lambda: child.poll() is None and runner.daemon_status(t, "ha"), 10)
    if not ready or child.poll() is not None:
        pytest.fail(f"home agent did not start: {(t.workdir / log).read_text()}")
    return pid


@dataclass
class Home:
    """A home agent in the lab, with the prober in the MN's namespace."""

    t: topology.Topology
    prober: Prober
    nodes: dict[str, Mn] = field(default_factory=dict)

    def ask(
        self, *packets: bytes, until: Callable[[Reply], bool], flush: bool = True
    ) -> list[Reply]:
        """Send ``packets``; what came from the HA until a reply matched (or ANSWER_S)."""
        deadline = time.monotonic() + ANSWER_S
        got = [
            parse(p) for p in self.prober.request(packets, wait_s=ANSWER_S, count=1, flush=flush)
        ]
        while not any(until(r) for r in got) and (left := deadline - time.monotonic()) > 0:
            got += [parse(p) for p in self.prober.request(wait_s=left, count=1, flush=False)]
        return got

    def ba(self, mn: Mn, *packets: bytes, coa: str = COA) -> Reply:
        """Send ``packets``: the tunnelled BA that answers, checked for signature and checksum."""
        is_ba = tunnelled_ba(mn.hoa)
        replies = [r for r in self.ask(*packets, until=is_ba) if is_ba(r)]
        assert replies, "no Binding Acknowledgement came"
        assert len(replies) == 1, f"{len(replies)} BAs for one BU"
        reply = replies[0]
        verify_signed(reply, mn, coa)
        return reply

    def silence(
        self, address: str, *packets: bytes, window: float = SILENCE_S, flush: bool = True
    ) -> list[Reply]:
        """Send ``packets``; every packet about ``address`` from the HA within ``window``."""
        got = [parse(p) for p in self.prober.request(packets, wait_s=window, flush=flush)]
        return [r for r in got if concerning(r, address)]

    def binding(self, hoa: str) -> dict[str, Any] | None:
        """The HA's registered binding for ``hoa`` (`mipnode bindings`), or None."""
        answer = runner.daemon_status(self.t, "ha", "bindings")
        assert answer is not None, "the home agent does not answer"
        for b in answer["bindings"]:
            if IPv6Address(b["hoa"]) == IPv6Address(hoa) and b["state"] == "registered":
                return dict(b)
        return None

    def core_counter(self, name: str) -> int:
        status = runner.daemon_status(self.t, "ha")
        assert status is not None, "the home agent does not answer"
        return int(status["core"].get(name, 0))

    def ping_from_core(self, hoa: str) -> subprocess.Popen[bytes]:
        """One ICMPv6 echo request from the core router to ``hoa`` (no answer is waited for)."""
        ping = ["ping", "-6", "-n", "-c", "1", "-W", "1", hoa]
        return subprocess.Popen(
            ["ip", "netns", "exec", self.t.ns("core"), *ping],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _new_nodes(names: Sequence[str], base: int) -> dict[str, Mn]:
    return {
        name: Mn(f"2001:db8:1::{base:x}:{i + 1:x}", base * 0x100 + i + 1, secrets.token_bytes(20))
        for i, name in enumerate(names)
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """One lab and one home agent (``protection = "none"``) for the crafted cases."""
    base = tmp_path_factory.mktemp("conformance")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(netns, "STATE_DIR", base / "lab-state")  # our run records, nobody else's
        record = netns.RunRecord.new("run")
        try:
            t = topology.build(record, base, access="ipv6", firewall="open", protection="none")
            nodes = _new_nodes(NODE_NAMES, 0xA)
            config = ha_config(
                base / "ha.toml", list(nodes.values()), protection="none", state_dir=None
            )
            start_ha(t, config, "ha.log")
            prober = Prober(t.ns("mn"), HA)
            try:
                yield Home(t, prober, nodes)
            finally:
                prober.close()
        finally:
            record.teardown()


@pytest.fixture
def own_home(make_lab: Any) -> Iterator[Callable[..., Home]]:
    """A lab of its own with a home agent started by the test (restart, protection)."""
    probers: list[Prober] = []

    def factory(protection: str, *, state_dir: bool = False) -> Home:
        lab = make_lab(firewall="open", start=False, protection=protection)
        t = lab.t
        nodes = _new_nodes(("mn",), 0xB)
        state = t.workdir / "state" if state_dir else None
        config = ha_config(
            t.workdir / "ha.toml", list(nodes.values()), protection=protection, state_dir=state
        )
        start_ha(t, config, "ha.log")
        probers.append(Prober(t.ns("mn"), HA))
        return Home(t, probers[-1], nodes)

    yield factory
    for prober in probers:
        prober.close()


# -- RFC 6275 §9.2: Mobility Header processing ----------------------------------------------------


def test_s9_2_bad_checksum_is_dropped(home: Home) -> None:
    """§9.2: a Mobility Header whose checksum is wrong MUST be silently discarded: no BA for a
    BU that is otherwise acceptable, and no Parameter Problem for one that is also malformed
    (the checksum is checked first). The same BU with its checksum right is then accepted,
    so the checksum alone made the difference."""
    mn = home.nodes["checksum"]
    bu = mn.bu(1)
    corrupt = bu[:4] + bytes([bu[4] ^ 0x55, bu[5] ^ 0xAA]) + bu[6:]
    proto = malformed_mh(mn.hoa, payload_proto=6)
    proto_corrupt = proto[:4] + bytes([proto[4] ^ 0x01, proto[5]]) + proto[6:]
    assert home.silence(mn.hoa, mn.tunnelled(corrupt), mn.tunnelled(proto_corrupt)) == []
    assert home.binding(mn.hoa) is None
    reply = home.ba(mn, mn.tunnelled(bu))
    assert reply.message.status == 0


def _parameter_problem(home: Home, source: str, mh: bytes, pointer: int) -> None:
    sent_inner = bytes(IPv6(src=source, dst=HA, nh=NH_MH) / Raw(mh))
    replies = home.ask(
        tunnel(source, mh),
        until=lambda r: r.inner is not None and r.inner.haslayer(ICMPv6ParamProblem),
    )
    problems = [r for r in replies if r.inner is not None and r.inner.haslayer(ICMPv6ParamProblem)]
    assert len(problems) == 1, (
        f"expected one Parameter Problem, got {[r.packet.summary() for r in replies]}"
    )
    reply = problems[0]
    # Inside the tunnel, back on the path it came: HA -> care-of address, inner HA -> source.
    assert (reply.packet.src, reply.packet.dst) == (HA, COA)
    inner = reply.inner
    assert (IPv6Address(inner.src), IPv6Address(inner.dst)) == (
        IPv6Address(HA),
        IPv6Address(source),
    )
    icmp = inner[ICMPv6ParamProblem]
    assert (icmp.type, icmp.code, icmp.ptr) == (4, 0, pointer)
    message = bytes(inner)[40:]
    assert checksum(HA, source, NH_ICMPV6, message) == 0, "bad ICMPv6 checksum"
    quoted = message[8:]
    assert sent_inner.startswith(quoted) and len(quoted) > pointer, "not a quote of the packet"
    assert IPv6Address(inner[IPerror6].src) == IPv6Address(source)
    assert len(bytes(inner)) <= len(sent_inner), "the error is larger than what caused it"
    assert not [r for r in replies if isinstance(r.message, MIP6MH_BA | MIP6MH_BE)]


def test_s9_2_payload_proto_not_59_gets_parameter_problem(home: Home) -> None:
    """§9.2: a Mobility Header whose Payload Proto is not 59 (IPPROTO_NONE) MUST be discarded
    and SHOULD be answered with an ICMPv6 Parameter Problem, code 0, whose pointer designates
    the Payload Proto field (offset 40 of the quoted packet), sent to the packet's source: for
    mipnode inside the tunnel on the path it came, and never larger than the packet at fault."""
    source = "2001:db8:1::e:1"
    _parameter_problem(home, source, malformed_mh(source, payload_proto=6), 40)


def test_s9_2_header_len_too_small_gets_parameter_problem(home: Home) -> None:
    """§9.2: a Mobility Header whose Header Len is below the length its type needs (here a BU
    claiming 8 octets where a BU needs 12) MUST be discarded and SHOULD be answered with an
    ICMPv6 Parameter Problem, code 0, pointing at the Header Len field (offset 41)."""
    source = "2001:db8:1::e:2"
    _parameter_problem(home, source, malformed_mh(source, header_len=0), 41)


def test_s9_2_native_payload_proto_not_59_gets_parameter_problem(home: Home) -> None:
    """§9.2 for the RFC's own form: a BU sent natively from the care-of address with a Home
    Address option and a Payload Proto other than 59 is discarded and answered with a Parameter
    Problem, code 0, pointing at the field in the packet as it came (behind the 24-octet
    destination options header: offset 64), natively to the packet's source (the care-of
    address), quoting no more than that packet."""
    hoa = "2001:db8:1::e:3"
    sent = bytes(
        IPv6(src=COA, dst=HA)
        / IPv6ExtHdrDestOpt(nh=NH_MH, options=[HAO(hoa=hoa)])
        / Raw(malformed_mh(hoa, payload_proto=6))
    )
    replies = home.ask(sent, until=lambda r: r.packet.haslayer(ICMPv6ParamProblem))
    problems = [r for r in replies if r.packet.haslayer(ICMPv6ParamProblem)]
    assert len(problems) == 1, [r.packet.summary() for r in replies]
    reply = problems[0]
    assert reply.inner is None, "a native answer, not tunnelled"
    assert (reply.packet.src, reply.packet.dst, reply.packet.nh) == (HA, COA, NH_ICMPV6)
    icmp = reply.packet[ICMPv6ParamProblem]
    assert (icmp.type, icmp.code, icmp.ptr) == (4, 0, 64)
    message = bytes(reply.packet)[40:]
    assert checksum(HA, COA, NH_ICMPV6, message) == 0, "bad ICMPv6 checksum"
    quoted = message[8:]
    # The packet as it came: the lab's routers lowered its Hop Limit (octet 7) on the way.
    as_sent = sent[:7] + sent[8:]
    assert as_sent.startswith(quoted[:7] + quoted[8:]) and len(quoted) > 64, "not a quote"
    assert len(bytes(reply.packet)) <= len(sent), "the error is larger than what caused it"
    assert not [r for r in replies if isinstance(r.message, MIP6MH_BA | MIP6MH_BE)]


def _binding_errors(replies: list[Reply]) -> list[Reply]:
    return [r for r in replies if r.inner is not None and isinstance(r.message, MIP6MH_BE)]


def test_s9_2_unknown_mh_type_gets_binding_error_2(home: Home) -> None:
    """§9.2: a Mobility Header of an unknown MH Type MUST be answered with a Binding Error,
    status 2 (unrecognized MH Type value), sent to the source of the packet (§9.3.3; for
    mipnode inside the tunnel on the path it came), its Home Address field unspecified as the
    packet had no Home Address option."""
    source = "2001:db8:1::e:3"
    mh = malformed_mh(source, mh_type=42)
    replies = home.ask(tunnel(source, mh), until=lambda r: bool(_binding_errors([r])))
    errors = _binding_errors(replies)
    assert len(errors) == 1, [r.packet.summary() for r in replies]
    reply = errors[0]
    assert (reply.packet.src, reply.packet.dst) == (HA, COA)
    assert (IPv6Address(reply.inner.src), IPv6Address(reply.inner.dst)) == (
        IPv6Address(HA),
        IPv6Address(source),
    )
    be = reply.message
    assert (be.mhtype, be.status, be.ha) == (MH_BE, 2, "::")
    assert checksum(HA, source, NH_MH, reply.mh) == 0
    assert len(reply.mh) <= len(mh)


def test_s9_3_3_binding_errors_are_rate_limited(home: Home) -> None:
    """§9.3.3: Binding Errors SHOULD be rate-limited like ICMPv6 errors (RFC 4443 §2.4 (f)).
    mipnode: one a second per destination and ten a second in all. Three unknown-type MHs from
    one source at once draw one Binding Error; another a second later draws one again; fifteen
    from fifteen sources at once draw at most ten."""
    source = "2001:db8:1::e:4"
    mh = malformed_mh(source, mh_type=42)
    first_at = time.monotonic()
    burst = _binding_errors(home.silence(source, *[tunnel(source, mh)] * 3, window=0.8))
    assert len(burst) == 1, f"{len(burst)} Binding Errors for three offending MHs from one source"
    time.sleep(max(0.0, first_at + 1.05 - time.monotonic()))
    again = home.ask(tunnel(source, mh), until=lambda r: bool(_binding_errors([r])))
    assert len(_binding_errors(again)) == 1, "no Binding Error once the second had passed"
    sources = [f"2001:db8:1::e:1{i:02x}" for i in range(15)]
    packets = [tunnel(s, malformed_mh(s, mh_type=42)) for s in sources]
    got = [parse(p) for p in home.prober.request(packets, wait_s=0.8)]
    errors = _binding_errors(got)
    assert {str(IPv6Address(r.inner.dst)) for r in errors} <= set(sources)
    assert 1 <= len(errors) <= 10, f"{len(errors)} Binding Errors in a burst from 15 sources"


# -- RFC 6275 §9.5.1: receiving Binding Updates ---------------------------------------------------


def test_s9_5_1_home_registration_is_accepted(home: Home) -> None:
    """§9.5.1, §9.5.4, §10.3.1: a valid home registration (H and A set) is accepted with a BA
    of status 0, K clear (no IKE), the BU's sequence number and the granted lifetime, sent from
    the HA to the home address without a routing header (inside the tunnel to the care-of
    address, the path the BU came). The HA, keeping no cache on disk, adds a Binding Refresh
    Advice (§10.3.1 MAY), shorter than the lifetime (MUST). The binding names the care-of
    address of the Alternate Care-of Address option."""
    mn = home.nodes["accept"]
    timestamp = mn.fresh()
    reply = home.ba(mn, mn.tunnelled(mn.bu(7, timestamp=timestamp)))
    assert (reply.packet.src, reply.packet.dst, reply.packet.nh) == (HA, COA, NH_IPV6)
    assert (IPv6Address(reply.inner.src), IPv6Address(reply.inner.dst), reply.inner.nh) == (
        IPv6Address(HA),
        IPv6Address(mn.hoa),
        NH_MH,
    )
    ba = reply.message
    assert (ba.status, int(ba.flags), ba.seq, ba.mhtime) == (0, 0, 7, LIFETIME)
    assert mesg_id(reply) == timestamp
    advice = reply.option(MIP6OptBRAdvice)  # this HA keeps no cache on disk: it advises
    assert advice is not None and 0 < advice.rinter < LIFETIME
    binding = home.binding(mn.hoa)
    assert binding is not None, "no binding after an accepted registration"
    assert (binding["coa"], binding["path"]["kind"], binding["sequence"]) == (COA, "T-native", 7)


def test_s9_5_1_old_sequence_gets_135_with_the_last_one(home: Home) -> None:
    """§9.5.1: a BU whose sequence number is not greater than the last accepted one (equal, or
    older) MUST be refused with BA 135, whose Sequence Number is the last accepted one; §9.5.4:
    that BA is sent even without the A flag. The binding stays as it was."""
    mn = home.nodes["old_sequence"]
    assert home.ba(mn, mn.tunnelled(mn.bu(100))).message.status == 0
    for sequence in (100, 60):
        ba = home.ba(mn, mn.tunnelled(mn.bu(sequence, flags="H"))).message
        assert (ba.status, ba.seq) == (135, 100), f"BU {sequence} after 100"
    binding = home.binding(mn.hoa)
    assert binding is not None and binding["sequence"] == 100


def test_s9_5_1_sequence_numbers_wrap_modulo_2_16(home: Home) -> None:
    """§9.5.1: sequence numbers compare modulo 2^16: 5 is newer than 65530; a number 32768
    ahead of the last accepted one counts as old (135), one 32767 ahead as newer."""
    mn = home.nodes["wrap"]
    assert home.ba(mn, mn.tunnelled(mn.bu(65530))).message.status == 0
    assert home.ba(mn, mn.tunnelled(mn.bu(5))).message.status == 0
    ba = home.ba(mn, mn.tunnelled(mn.bu(5 + 32768))).message
    assert (ba.status, ba.seq) == (135, 5)
    ba = home.ba(mn, mn.tunnelled(mn.bu(5 + 32767))).message
    assert (ba.status, ba.seq) == (0, 5 + 32767)


def test_s9_5_1_any_sequence_after_deregistration(home: Home) -> None:
    """§9.5.1: with no Binding Cache entry for the home address any sequence number is taken;
    after a de-registration the entry is no binding (mipnode shows it "deleted" for a while),
    so an older sequence number registers again."""
    mn = home.nodes["after_deregistration"]
    assert home.ba(mn, mn.tunnelled(mn.bu(1000))).message.status == 0
    ba = home.ba(mn, mn.tunnelled(mn.bu(1001, lifetime=0))).message
    assert (ba.status, ba.mhtime) == (0, 0)
    ba = home.ba(mn, mn.tunnelled(mn.bu(3))).message
    assert (ba.status, ba.seq) == (0, 3)
    binding = home.binding(mn.hoa)
    assert binding is not None and binding["sequence"] == 3


def test_s9_5_1_registration_type_change_gets_139(home: Home) -> None:
    """§9.5.1: a BU whose H flag differs from that of the existing home registration MUST be
    refused with BA 139 (registration type change disallowed); the entry keeps its home
    registration."""
    mn = home.nodes["type_change"]
    assert home.ba(mn, mn.tunnelled(mn.bu(1))).message.status == 0
    ba = home.ba(mn, mn.tunnelled(mn.bu(2, flags="A"))).message
    assert (ba.status, ba.seq) == (139, 2)
    binding = home.binding(mn.hoa)
    assert binding is not None and binding["sequence"] == 1


def test_s9_5_1_no_h_flag_without_nonce_indices_is_silently_discarded(home: Home) -> None:
    """§9.5.1: a BU without the H flag MUST carry a Nonce Indices option (a correspondent
    registration, after return routability); one without it fails the tests and MUST be
    silently discarded: no BA, no entry. The same node's BU that names nonce indices the home
    agent never gave out (it runs no return routability) MUST get 138, expired nonces."""
    mn = home.nodes["no_h"]
    assert home.silence(mn.hoa, mn.tunnelled(mn.bu(1, flags="A"))) == []
    assert home.binding(mn.hoa) is None
    # scapy's default Length (16) is not RFC 6275 §6.2.6's 4
    nonces = [(MIP6OptNonceIndices(olen=4, hni=1, coni=2), 2, 0)]
    ba = home.ba(mn, mn.tunnelled(mn.bu(2, flags="A", extra=nonces))).message
    assert (ba.status, ba.seq) == (138, 2)
    assert home.binding(mn.hoa) is None


# -- RFC 6275 §9.5.4: Binding Acknowledgements ----------------------------------------------------


def test_s9_5_4_ba_is_sent_without_the_a_flag(home: Home) -> None:
    """§10.3.1 (over §9.5.4's SHOULD NOT): a home agent MUST return a BA to a home registration
    whatever its A flag; the registration is made."""
    mn = home.nodes["no_a"]
    ba = home.ba(mn, mn.tunnelled(mn.bu(1, flags="H"))).message
    assert (ba.status, ba.seq) == (0, 1)
    assert home.binding(mn.hoa) is not None


def test_s9_5_4_native_bu_is_answered_with_a_routing_header(home: Home) -> None:
    """§9.5.4 (§11.7.1's form): a BU sent natively from the care-of address with a Home
    Address option (no Alternate Care-of Address; authenticator over the packet's source) is
    answered to its source, the care-of address, with a type 2 routing header carrying the
    home address; the BA's checksum uses the home address (§6.1.1)."""
    mn = home.nodes["native"]
    bu = mn.bu(1, alt_coa=None, mac_coa=COA)
    replies = home.ask(
        mn.native(bu),
        until=lambda r: r.packet.haslayer(IPv6ExtHdrRouting) and r.message is not None,
    )
    answers = [r for r in replies if isinstance(r.message, MIP6MH_BA)]
    assert len(answers) == 1, [r.packet.summary() for r in replies]
    reply = answers[0]
    assert (reply.packet.src, reply.packet.dst, reply.packet.nh) == (HA, COA, 43)
    rh = reply.packet[IPv6ExtHdrRouting]
    assert (rh.type, rh.segleft, rh.nh) == (2, 1, NH_MH)
    assert [IPv6Address(a) for a in rh.addresses] == [IPv6Address(mn.hoa)]
    verify_signed(reply, mn, COA)
    assert (reply.message.status, reply.message.seq) == (0, 1)
    binding = home.binding(mn.hoa)
    assert binding is not None and binding["coa"] == COA


# -- RFC 6275 §10.3.1 and §10.3.2: home registration and de-registration --------------------------


def test_s10_3_1_lifetime_is_capped(home: Home) -> None:
    """§10.3.1: the lifetime granted MAY be less than asked (here the HA's max_lifetime_s of
    402 s: 100 whole units of 4 s) and the BA's Lifetime MUST be the one granted; the binding
    lasts that long."""
    mn = home.nodes["lifetime"]
    ba = home.ba(mn, mn.tunnelled(mn.bu(1, lifetime=0xFFFF))).message
    assert (ba.status, ba.mhtime) == (0, MAX_LIFETIME_S // 4)
    binding = home.binding(mn.hoa)
    assert binding is not None
    assert MAX_LIFETIME_S // 4 * 4 - 10 < binding["lifetime_remaining_s"] <= MAX_LIFETIME_S // 4 * 4


def _echo(reply: Reply, kind: type, dst: str) -> bool:
    return (
        reply.inner is not None
        and reply.inner.haslayer(kind)
        and IPv6Address(reply.inner.dst) == IPv6Address(dst)
    )


def _solicitation(identifier: int, padded: bool) -> Packet:
    """A Mobile Prefix Solicitation (§6.7); ``padded`` with 40 octets of an option type the home
    agent must skip, so it is no smaller than the advertisement that answers it."""
    pad = Raw(bytes([254, 5]) + bytes(38)) if padded else Raw(b"")
    return ICMPv6MPSol(id=identifier) / pad


def _advertisement(reply: Reply, identifier: int) -> None:
    """An advertisement for ``identifier`` listing the home prefix, with the home agent's
    address under the Router Address flag (§6.8, §7.2)."""
    mpa = reply.packet[ICMPv6MPAdv]
    assert (mpa.id, mpa.flags) == (identifier, 0)
    pio = reply.packet[ICMPv6NDOptPrefixInfo]
    assert (pio.prefixlen, pio.L, pio.A, pio.R) == (64, 1, 1, 1)
    assert IPv6Address(pio.prefix) == IPv6Address(HA)
    assert IPv6Address(pio.prefix).packed[:8] == IPv6Address(HOME_PREFIX.split("/")[0]).packed[:8]


def _is_mpa(r: Reply) -> bool:
    return r.packet.haslayer(ICMPv6MPAdv)


def test_s10_6_a_solicitation_in_the_tunnel_gets_the_home_prefix(home: Home) -> None:
    """§10.3.1 (MUST propagate home prefixes, §10.6), §10.6.2: a Mobile Prefix Solicitation from
    a registered mobile node is answered right away with a Mobile Prefix Advertisement that
    copies its Identifier and lists the home prefix (§6.8); here, as mipnode signals, in the
    tunnel to the home address. An unpadded solicitation in clear gets no answer: the
    advertisement would be larger than it (D1's rule)."""
    mn = home.nodes["prefix"]
    assert home.ba(mn, mn.tunnelled(mn.bu(1))).message.status == 0
    small = IPv6(src=mn.hoa, dst=HA) / _solicitation(0x0101, padded=False)
    assert home.silence(mn.hoa, tunnel_packet(bytes(small))) == []
    request = IPv6(src=mn.hoa, dst=HA) / _solicitation(0x5150, padded=True)
    replies = home.ask(tunnel_packet(bytes(request)), until=_is_mpa)
    (reply,) = [r for r in replies if _is_mpa(r)]
    assert reply.inner is not None and IPv6Address(reply.inner.dst) == IPv6Address(mn.hoa)
    assert (reply.packet.src, reply.packet.dst) == (HA, COA)
    _advertisement(reply, 0x5150)
    assert len(bytes(reply.packet)) <= len(tunnel_packet(bytes(request)))


def test_s10_6_a_native_solicitation_gets_an_advertisement_with_a_routing_header(
    home: Home,
) -> None:
    """§6.7, §6.8: a solicitation sent natively from the care-of address with a Home Address
    option is answered to that address with a type 2 routing header naming the home address."""
    mn = home.nodes["prefix_native"]
    assert home.ba(mn, mn.tunnelled(mn.bu(1))).message.status == 0
    request = (
        IPv6(src=COA, dst=HA)
        / IPv6ExtHdrDestOpt(options=[HAO(hoa=mn.hoa)])
        / _solicitation(0x7777, padded=True)
    )
    replies = home.ask(bytes(request), until=_is_mpa)
    (reply,) = [r for r in replies if _is_mpa(r)]
    assert reply.inner is None and (reply.packet.src, reply.packet.dst) == (HA, COA)
    assert [IPv6Address(a) for a in reply.packet[IPv6ExtHdrRouting].addresses] == [
        IPv6Address(mn.hoa)
    ]
    _advertisement(reply, 0x7777)
    message = bytes(reply.packet[ICMPv6MPAdv])
    assert checksum(HA, mn.hoa, NH_ICMPV6, message) == 0, "checksum not over the home address"


def test_s10_3_1_data_is_tunnelled_to_the_care_of_address(home: Home) -> None:
    """§10.3.1, §10.4.1: once registered, packets for the home address reach the mobile node
    IPv6-in-IPv6 from the home agent to the care-of address (an echo request from the core);
    and packets reverse-tunnelled from the care-of address are accepted and forwarded (an echo
    request from the home address to the core, whose reply comes back through the tunnel)."""
    mn = home.nodes["data"]
    assert home.ba(mn, mn.tunnelled(mn.bu(1))).message.status == 0
    home.prober.request(wait_s=0)  # drop what came before
    ping = home.ping_from_core(mn.hoa)
    try:
        replies = home.ask(until=lambda r: _echo(r, ICMPv6EchoRequest, mn.hoa), flush=False)
    finally:
        ping.kill()
        ping.wait()
    tunnelled = [r for r in replies if _echo(r, ICMPv6EchoRequest, mn.hoa)]
    assert tunnelled, "the echo request to the home address was not tunnelled to the CoA"
    assert (tunnelled[0].packet.src, tunnelled[0].packet.dst, tunnelled[0].packet.nh) == (
        HA,
        COA,
        NH_IPV6,
    )
    request = (
        IPv6(src=COA, dst=HA) / IPv6(src=mn.hoa, dst=CORE) / ICMPv6EchoRequest(id=0x4D4E, seq=1)
    )
    replies = home.ask(bytes(request), until=lambda r: _echo(r, ICMPv6EchoReply, mn.hoa))
    answers = [r for r in replies if _echo(r, ICMPv6EchoReply, mn.hoa)]
    assert answers, "the reverse-tunnelled echo request was not forwarded (or its reply lost)"
    assert IPv6Address(answers[0].inner.src) == IPv6Address(CORE)
    assert answers[0].inner[ICMPv6EchoReply].id == 0x4D4E


def test_s10_3_2_deregistration_removes_the_binding(home: Home) -> None:
    """§10.3.2: a de-registration (lifetime 0, or the home address as care-of address) MUST
    delete the binding and be answered with BA 0, the BU's sequence number, Lifetime 0 and no
    Binding Refresh Advice; packets for the home address stop reaching the care-of address."""
    mn = home.nodes["deregistration"]
    assert home.ba(mn, mn.tunnelled(mn.bu(1))).message.status == 0
    reply = home.ba(mn, mn.tunnelled(mn.bu(2, lifetime=0)))
    assert (reply.message.status, reply.message.seq, reply.message.mhtime) == (0, 2, 0)
    assert reply.option(MIP6OptBRAdvice) is None
    assert home.binding(mn.hoa) is None
    home.prober.request(wait_s=0)
    ping = home.ping_from_core(mn.hoa)
    try:
        leaked = home.silence(mn.hoa, window=1.0, flush=False)
    finally:
        ping.kill()
        ping.wait()
    assert leaked == [], "packets for a de-registered home address still reach the CoA"
    # The other form: the care-of address equal to the home address.
    assert home.ba(mn, mn.tunnelled(mn.bu(3))).message.status == 0
    reply = home.ba(mn, mn.tunnelled(mn.bu(4, alt_coa=mn.hoa)), coa=mn.hoa)
    assert (reply.message.status, reply.message.seq, reply.message.mhtime) == (0, 4, 0)
    assert home.binding(mn.hoa) is None


def test_s10_3_2_deregistration_without_binding_gets_133(home: Home) -> None:
    """§10.3.2: a de-registration for a home address that has no home registration MUST be
    refused, and SHOULD be with BA 133 (not home agent for this mobile node)."""
    mn = home.nodes["deregistration_none"]
    ba = home.ba(mn, mn.tunnelled(mn.bu(1, lifetime=0))).message
    assert (ba.status, ba.seq) == (133, 1)
    assert home.binding(mn.hoa) is None


# -- RFC 4285 §5: MN-HA mobility message authentication -------------------------------------------


def test_rfc4285_s5_ba_carries_a_valid_authenticator(home: Home) -> None:
    """RFC 4285 §5.1, §5.2: the home agent's BAs carry the MN-HA option, last, with the mobile
    node's SPI and the first 96 bits of HMAC-SHA1 under the shared key over CoA | HoA | the BA
    through the SPI (checksum zero): on an acceptance and on a refusal alike. The same octets
    do not verify under another key (the check is not vacuous)."""
    mn = home.nodes["ba_auth"]
    accepted = home.ba(mn, mn.tunnelled(mn.bu(9)))  # home.ba verifies the authenticator
    assert accepted.message.status == 0
    refused = home.ba(mn, mn.tunnelled(mn.bu(9)))
    assert refused.message.status == 135
    other = Mn(mn.hoa, mn.spi, secrets.token_bytes(20))
    with pytest.raises(AssertionError, match="wrong authenticator"):
        verify_signed(accepted, other)


def test_rfc4285_s5_wrong_authenticator_is_dropped_silently(home: Home) -> None:
    """RFC 4285 §5.1, RFC 6275 §9.5.1 (deviation D3, no BA 146): a BU whose authenticator is
    wrong -- another key, or an Alternate Care-of Address changed after signing -- is not
    accepted and is dropped without an answer. The genuine BU with the same timestamp is then
    accepted: a forgery does not spend the timestamp."""
    mn = home.nodes["wrong_auth"]
    timestamp = mn.fresh()
    forged = mn.bu(1, timestamp=timestamp, key=secrets.token_bytes(20))
    moved = mn.bu(1, timestamp=timestamp, alt_coa="2001:db8:a::66", mac_coa=COA)
    assert home.silence(mn.hoa, mn.tunnelled(forged), mn.tunnelled(moved)) == []
    assert home.binding(mn.hoa) is None
    assert home.ba(mn, mn.tunnelled(mn.bu(1, timestamp=timestamp))).message.status == 0


def test_rfc4285_s5_unknown_spi_is_dropped_silently(home: Home) -> None:
    """RFC 4285 §5.1: a BU whose SPI names no security association is not accepted; it is
    dropped without an answer (there is no key to sign one). The same BU under the node's own
    SPI is then accepted."""
    mn = home.nodes["unknown_spi"]
    timestamp = mn.fresh()
    assert home.silence(mn.hoa, mn.tunnelled(mn.bu(1, timestamp=timestamp, spi=UNKNOWN_SPI))) == []
    assert home.binding(mn.hoa) is None
    assert home.ba(mn, mn.tunnelled(mn.bu(1, timestamp=timestamp))).message.status == 0


def test_rfc4285_s5_auth_option_not_last_is_dropped(home: Home) -> None:
    """RFC 4285 §5: when the MN-HA option is the only authentication option it MUST be the
    last option of the message, else the message is discarded: followed by padding (as
    scapy's autopad lays it out) or by the Mesg-ID option, a correctly computed authenticator
    is dropped silently. With the option last, the same BU is accepted."""
    mn = home.nodes["auth_last"]
    timestamp = mn.fresh()
    padded = mn.bu(1, timestamp=timestamp, auth="padded")
    assert padded[-19 - 4] == 9 and padded[-4:] == bytes.fromhex("01020000")  # pad after it
    before = mn.bu(1, timestamp=timestamp, auth="before_mesg_id")
    assert home.silence(mn.hoa, mn.tunnelled(padded), mn.tunnelled(before)) == []
    assert home.binding(mn.hoa) is None
    assert home.ba(mn, mn.tunnelled(mn.bu(1, timestamp=timestamp))).message.status == 0


# -- RFC 4285 §6: Mesg-ID and replay protection ---------------------------------------------------


def test_rfc4285_s6_missing_mesg_id_gets_145(home: Home) -> None:
    """RFC 4285 §6: a home agent whose policy requires the Mesg-ID option (mipnode's does)
    MUST answer a BU without it with BA 145 (MIPV6-MESG-ID-REQD); that BA carries no Mesg-ID
    and the BU registers nothing."""
    mn = home.nodes["no_mesg_id"]
    reply = home.ba(mn, mn.tunnelled(mn.bu(1, timestamp=None)))
    assert (reply.message.status, reply.message.seq) == (145, 1)
    assert mesg_id(reply) is None
    assert home.binding(mn.hoa) is None


def test_rfc4285_s6_stale_timestamp_gets_144_with_the_ha_clock(home: Home) -> None:
    """RFC 4285 §6: a timestamp more than the window (7 s) from the home agent's clock, behind
    or ahead, MUST be answered with BA 144 (MIPV6-ID-MISMATCH) whose Mesg-ID has the home
    agent's time in its high 32 bits and the BU's low 32 bits. A timestamp 3 s old is inside
    the window and accepted."""
    mn = home.nodes["stale"]
    for offset in (-3 * TIMESTAMP_WINDOW_S, 2 * TIMESTAMP_WINDOW_S):
        stale = ntp_now(offset) | 0x1234  # low bits of our own, to see them echoed
        reply = home.ba(mn, mn.tunnelled(mn.bu(1, timestamp=stale)))
        clock = ntp_now() >> 32
        assert (reply.message.status, reply.message.seq) == (144, 1), f"offset {offset} s"
        echoed = mesg_id(reply)
        assert echoed is not None, "a 144 without a Mesg-ID"
        assert echoed & 0xFFFF_FFFF == stale & 0xFFFF_FFFF, "the low 32 bits are not the BU's"
        assert abs((echoed >> 32) - clock) <= 2, "the high 32 bits are not the HA's clock"
        assert home.binding(mn.hoa) is None
    ba = home.ba(mn, mn.tunnelled(mn.bu(1, timestamp=ntp_now(-3)))).message
    assert ba.status == 0


def test_rfc4285_s6_replayed_bu_gets_144(home: Home) -> None:
    """RFC 4285 §6: a timestamp not greater than the last one accepted from the mobile node is
    a replay and MUST get BA 144: the same BU sent again, and a newer sequence number with the
    old timestamp. The binding is not changed by either."""
    mn = home.nodes["replay"]
    timestamp = mn.fresh()
    original = mn.tunnelled(mn.bu(1, timestamp=timestamp))
    assert home.ba(mn, original).message.status == 0
    ba = home.ba(mn, original).message
    assert (ba.status, ba.seq) == (144, 1)
    ba = home.ba(mn, mn.tunnelled(mn.bu(2, timestamp=timestamp))).message
    assert (ba.status, ba.seq) == (144, 2)
    binding = home.binding(mn.hoa)
    assert binding is not None and binding["sequence"] == 1


def test_rfc4285_s6_ba_echoes_the_mesg_id(home: Home) -> None:
    """RFC 4285 §6: the BA carries the BU's Mesg-ID, so the mobile node can match the two: on
    an acceptance and on a refusal (here 135)."""
    mn = home.nodes["echo"]
    timestamp = mn.fresh()
    assert mesg_id(home.ba(mn, mn.tunnelled(mn.bu(10, timestamp=timestamp)))) == timestamp
    timestamp = mn.fresh()
    reply = home.ba(mn, mn.tunnelled(mn.bu(10, timestamp=timestamp)))
    assert reply.message.status == 135
    assert mesg_id(reply) == timestamp


# -- Beyond one section: persistence and protection -----------------------------------------------


def test_restart_keeps_bindings_and_refuses_replays(own_home: Callable[..., Home]) -> None:
    """RFC 4285 §6 and RFC 6275 §9.5.1 across a restart (state_dir): the binding and the last
    accepted Mesg-ID survive; a BU captured before the restart and replayed after it (within
    the 7 s window, so only the restored timestamp can refuse it) gets BA 144; a fresh BU
    with the old sequence number gets 135, the next one 0. The restored binding gets a
    Binding Refresh Request at once (§9.5.5), and an HA that keeps its cache on disk sends no
    Binding Refresh Advice (§10.3.1)."""
    home = own_home("none", state_dir=True)
    t, mn = home.t, home.nodes["mn"]
    timestamp = mn.fresh()
    captured = mn.tunnelled(mn.bu(1, timestamp=timestamp))
    first = home.ba(mn, captured)
    assert first.message.status == 0
    assert first.option(MIP6OptBRAdvice) is None, "a Binding Refresh Advice from a kept cache"
    state_file = t.workdir / "state" / STATE_FILE
    assert runner.wait_for(lambda: state_file.exists() and mn.hoa in state_file.read_text(), 5)

    old = netns.CHILDREN[t.pids["ha"]]
    old.send_signal(signal.SIGTERM)
    assert old.wait(timeout=10) == 0
    start_ha(t, t.workdir / "ha.toml", "ha-restarted.log")
    brr = home.ask(
        until=lambda r: isinstance(r.message, MIP6MH_BRR) and concerning(r, mn.hoa), flush=False
    )
    refresh = [r for r in brr if isinstance(r.message, MIP6MH_BRR) and concerning(r, mn.hoa)]
    assert refresh, "no Binding Refresh Request to the restored binding"
    verify_signed(refresh[0], mn)

    delay = time.time() - (timestamp >> 32) + NTP_UNIX_OFFSET
    assert delay < TIMESTAMP_WINDOW_S - 1, f"replayed {delay:.1f} s after the BU: inconclusive"
    replayed = home.ba(mn, captured).message
    assert (replayed.status, replayed.seq) == (144, 1)
    assert home.core_counter("timestamp_not_increasing") == 1  # not merely out of the window

    shown = json.loads(
        t.sh("ha", sys.executable, "-m", "mipnode.cli", "bindings", "--json", timeout=10)
    )
    restored = [b for b in shown["bindings"] if IPv6Address(b["hoa"]) == IPv6Address(mn.hoa)]
    assert len(restored) == 1, shown
    assert (restored[0]["coa"], restored[0]["sequence"], restored[0]["state"]) == (
        COA,
        1,
        "registered",
    )
    ba = home.ba(mn, mn.tunnelled(mn.bu(1))).message
    assert (ba.status, ba.seq) == (135, 1)
    assert home.ba(mn, mn.tunnelled(mn.bu(2))).message.status == 0


def test_protected_ha_refuses_a_bu_without_key_share(own_home: Callable[..., Home]) -> None:
    """With ``protection = "esp"`` every registration must key mipnode's ESP: a registration BU
    without the key share option is refused with BA 129 (administratively prohibited), signed
    as ever; a de-registration needs no share (here 133: there is no binding)."""
    home = own_home("esp")
    mn = home.nodes["mn"]
    ba = home.ba(mn, mn.tunnelled(mn.bu(1))).message
    assert (ba.status, ba.seq) == (129, 1)
    assert home.binding(mn.hoa) is None
    ba = home.ba(mn, mn.tunnelled(mn.bu(2, lifetime=0))).message
    assert (ba.status, ba.seq) == (133, 2)
