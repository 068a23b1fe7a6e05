"""`mipnode netcheck`: which home paths would work from this network, without a daemon.

Theory of operation. The driver (``drivers/netcheck.py``) sends each probe in the exact form
a mobile node's first check takes (docs/internals.md, "The home path") and records what came
back as a :class:`Probe`; this module turns the probes into verdicts, with no I/O, clock or
randomness:

* ``T-native``: a Binding request inside IPv6-in-IPv6 (protocol 41, RFC 2473) from the care-of
  address to the home agent's STUN port. The answer's XOR-MAPPED-ADDRESS is the outer source
  the home agent saw: another address than ours is a NAT66, which T-native cannot cross (the
  binding would name an address the packets do not carry).
* ``T-native (ESP)``, under ``protection = "esp"``: after its first registration a mobile node
  sends T-native as ESP (protocol 50). An ESP packet whose SPI carries the tag of our home
  address (``esp_keys.spi_tag``) is one the home agent cannot open; it answers with a Binding
  Refresh Request signed with the MN-HA key (RFC 4285), which proves ESP from here reached it.
  The answer returns over protocol 41, so the ESP line speaks for the outbound direction only.
* ``T-udp``: a bare Binding request to each of the home agent's UDP ports, over IPv6 and IPv4,
  all from one socket per family.

**NAT behaviour** (RFC 4787 §4.1) per family from the T-udp answers to that one socket: a mapped
address equal to our own is no NAT; different mappings for different home-agent ports are a
port-dependent (address-and-port-dependent) mapping; one mapping for every port is
endpoint-independent *or* address-dependent: with one home-agent address per family only the
port varies, so the two are not told apart, and the verdict says so. With one answering
endpoint a NAT is seen but its mapping behaviour is unknown.

**The path a daemon would pick** is the home path's rule (``core/home_path.py``): a better kind
first (T-native before T-udp, ``ice.score.PATH_KIND_RANK``); within a kind the first pair in check
order that answers (the order of the probes: IPv6 before IPv4, ports as configured), replaced
only by one faster beyond the hysteresis margin (``ice.score.is_better``); only kinds the
configuration's ``paths`` allows; under protection T-native only when ESP crosses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from ice.score import PATH_KIND_RANK, is_better, path_score
from mipnode.core.home_path import HOME_ICE
from mipnode.core.transmit import TransportAddress

# Each probe is sent at these offsets from the start (3 packets at most); the whole check ends
# at DEADLINE_S, so netcheck takes about three seconds whatever the network does.
SEND_AT_S = (0.0, 0.5, 1.2)
ESP_SEND_AT_S = (0.0, 1.2)  # the home agent sends at most one BRR a second per home address
DEADLINE_S = 2.5
# Path MTU: probe sizes (whole IP packets), largest first below the link's MTU; at most this
# many probes, each given this long to be answered.
PMTU_SIZES = (9000, 1500, 1492, 1480, 1420, 1400, 1280)
PMTU_PROBES = 4
PMTU_WAIT_S = 0.6
IPV6_MIN_MTU = 1280  # RFC 8200 §5

NAT_NONE = "none"
NAT_EIM = "endpoint-independent or address-dependent (one home-agent address)"
NAT_APDM = "address-and-port-dependent"
NAT_UNKNOWN = "translated, mapping unknown (one home-agent endpoint answered)"

NO_ANSWER = "no answer"


@dataclass(frozen=True, slots=True)
class Probe:
    """One way to reach the home agent and what came back (filled in by the driver)."""

    path: str  # "T-native", "T-native-esp", "T-udp"
    family: str  # "IPv6" | "IPv4"
    remote: TransportAddress | None  # the home agent's end (port 0 for T-native); None: unknown
    local: TransportAddress | None = None  # our end; None: no address of this family
    sent: int = 0
    rtt_ms: float | None = None  # the first answer's round trip
    mapped: TransportAddress | None = None  # where the home agent saw us (T-native, T-udp)
    failure: str | None = None  # why there is no answer ("no answer", an ICMP error named)
    allowed: bool = True  # the configuration's ``paths`` lets a daemon use it

    @property
    def answered(self) -> bool:
        return self.rtt_ms is not None


@dataclass(frozen=True, slots=True)
class PathMtu:
    family: str
    mtu: int | None  # the largest probe answered; None when none was
    how: str  # "probe of 1500 octets answered", "Packet Too Big: 1400", ...
    sent: int


@dataclass(frozen=True, slots=True)
class Report:
    home_agent: str
    home_agent_ipv4: str | None
    protection: str
    probes: tuple[Probe, ...]
    nat: dict[str, str | None]  # "IPv6" / "IPv4" -> a NAT_* value, None: nothing answered
    path_mtu: PathMtu | None
    predicted: Probe | None
    reason: str  # why that path, or why none

    def to_json(self) -> dict[str, Any]:
        def endpoint(ta: TransportAddress | None) -> dict[str, Any] | None:
            if ta is None:
                return None
            return {"address": ta[0], "port": ta[1] or None}

        def probe(p: Probe) -> dict[str, Any]:
            ok, verdict = usable(p, self.probes, self.protection)
            return {
                "path": p.path,
                "family": p.family,
                "local": endpoint(p.local),
                "remote": endpoint(p.remote),
                "answered": p.answered,
                "rtt_ms": p.rtt_ms,
                "mapped": endpoint(p.mapped),
                "usable": ok,
                "verdict": verdict,
                "failure": p.failure,
                "allowed": p.allowed,
                "packets_sent": p.sent,
            }

        mtu = self.path_mtu
        return {
            "home_agent": self.home_agent,
            "home_agent_ipv4": self.home_agent_ipv4,
            "protection": self.protection,
            "probes": [probe(p) for p in self.probes],
            "nat": dict(self.nat),
            "path_mtu": None
            if mtu is None
            else {"family": mtu.family, "mtu": mtu.mtu, "how": mtu.how, "packets_sent": mtu.sent},
            "predicted": None if self.predicted is None else probe(self.predicted),
            "reason": self.reason,
            "packets_sent": sum(p.sent for p in self.probes) + (mtu.sent if mtu else 0),
        }


def nat_behaviour(probes: tuple[Probe, ...], family: str) -> str | None:
    """The NAT between us and the home agent for ``family``, from the T-udp answers to our one
    socket (module docstring); None when no T-udp probe of that family was answered."""
    answers = [
        p
        for p in probes
        if p.path == "T-udp" and p.family == family and p.answered and p.mapped is not None
    ]
    if not answers:
        return None
    mapped = {_normal(p.mapped) for p in answers}
    if mapped == {_normal(answers[0].local)}:
        return NAT_NONE
    if len(mapped) > 1:
        return NAT_APDM
    return NAT_EIM if len(answers) > 1 else NAT_UNKNOWN


def usable(p: Probe, probes: tuple[Probe, ...], protection: str) -> tuple[bool, str]:
    """Could a daemon use ``p``, and the one-line verdict that says why (or why not)."""
    if not p.answered:
        return False, p.failure or NO_ANSWER
    rtt = f"answered in {p.rtt_ms:.1f} ms"
    if p.path == "T-native-esp":
        return p.allowed, f"{rtt} (a Binding Refresh Request for ESP it could not open)"
    if p.path == "T-native":
        if p.mapped is not None and _moved(p.mapped, p.local, port=False):
            return False, f"{rtt} through NAT66 (seen as {p.mapped[0]}): a binding cannot use it"
        if protection == "esp":
            esp = next((q for q in probes if q.path == "T-native-esp"), None)
            if esp is None or not esp.answered:
                why = esp.failure if esp is not None and esp.failure else NO_ANSWER
                return False, f"{rtt}, but ESP (protocol 50) got {why}: sealed T-native fails"
    if not p.allowed:
        return False, f"{rtt}; the configuration's paths leave {p.path} out"
    if p.path == "T-udp" and p.mapped is not None and _moved(p.mapped, p.local, port=True):
        return True, f"{rtt} (seen as {_ta(p.mapped)})"
    return True, rtt


def predict(probes: tuple[Probe, ...], protection: str) -> tuple[Probe | None, str]:
    """The pair a daemon's home path would select, and why (module docstring)."""
    candidates = [
        p for p in probes if p.path in PATH_KIND_RANK and usable(p, probes, protection)[0]
    ]
    if not candidates:
        answered = [p for p in probes if p.answered]
        if not answered:
            return None, "the home agent answered none of the probes: no home path from here"
        return None, "no probe that answered is one a daemon may use (see each line)"
    rank = min(PATH_KIND_RANK[p.path] for p in candidates)
    best = None
    for p in (p for p in candidates if PATH_KIND_RANK[p.path] == rank):  # in check order
        rtt = (p.rtt_ms or 0.0) / 1000
        if best is None or is_better(
            path_score(p.path, rtt),
            path_score(best.path, (best.rtt_ms or 0.0) / 1000),
            ratio=HOME_ICE.hysteresis_ratio,
            minimum_s=HOME_ICE.hysteresis_min_s,
        ):
            best = p
    assert best is not None
    if best.path == "T-native":
        why = "T-native answered, and a daemon prefers it to T-udp"
    else:
        why = "the first T-udp pair that answered, unless another was much faster"
        native = next((p for p in probes if p.path == "T-native"), None)
        if native is not None:
            why += f" (T-native: {usable(native, probes, protection)[1]})"
    return best, why


def report(
    *,
    home_agent: str,
    home_agent_ipv4: str | None,
    protection: str,
    probes: tuple[Probe, ...],
    path_mtu: PathMtu | None,
) -> Report:
    predicted, reason = predict(probes, protection)
    return Report(
        home_agent=home_agent,
        home_agent_ipv4=home_agent_ipv4,
        protection=protection,
        probes=probes,
        nat={family: nat_behaviour(probes, family) for family in ("IPv6", "IPv4")},
        path_mtu=path_mtu,
        predicted=predicted,
        reason=reason,
    )


def pmtu_sizes(link_mtu: int) -> list[int]:
    """The probe sizes to try, largest first: the link's MTU, then the usual smaller ones."""
    sizes = sorted({s for s in PMTU_SIZES if s < link_mtu} | {link_mtu}, reverse=True)
    return [s for s in sizes if s >= IPV6_MIN_MTU or s == link_mtu]


def _normal(ta: TransportAddress | None) -> tuple[object, int] | None:
    return None if ta is None else (ip_address(ta[0]), ta[1])


def _moved(mapped: TransportAddress | None, local: TransportAddress | None, *, port: bool) -> bool:
    """Did the home agent see another address (and port) than ours: a NAT in between."""
    if mapped is None or local is None:
        return False
    if ip_address(mapped[0]) != ip_address(local[0]):
        return True
    return port and mapped[1] != local[1]


def _ta(ta: TransportAddress) -> str:
    host, port = ta
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
