"""A cluster of home agents in the lab (issue 14): a real etcd cluster of three members in the
core's namespace (listening on the home link, 2001:db8:f2::1), the home agents ``ha``,
``ha2``, ... on the home link, and the timeline steps that hurt them.

Steps (docs/lab.md):
- ``kill-ha-holder``: SIGKILL the home agent that holds the home-agent address and time how
  long until traffic passes through the one that takes it over (``resumed_ms``, from the kill:
  the failover time); ``stop-ha-holder``: the same with SIGTERM, a clean stop that hands the
  address over (under protection the new holder must have got the ESP SAs: ``sas_handed``,
  the bindings it serves with them); ``cut-ha-holder``: the same by taking the holder's home
  link down (it runs on, cut off), and ``restore-ha-link``: the link back, after which
  exactly one node (not the cut one) must hold the address;
- ``capture-bu`` and ``replay-bu``: keep the last Binding Update the MN tunnels to the
  home-agent address (as it crosses the core's home bridge), then send it again to whichever
  node holds the address now: it must be refused with 144 and change nothing;
- ``wait-records``: until every node's copy of etcd's records shows each binding the holder
  serves as the holder has it, and the holder has nothing left to write;
- ``kill-etcd`` (``count`` members, the leader first when ``leader = true``) and
  ``start-etcd`` (every killed member again, with its data): with one of three lost nothing
  may change; with the majority lost every node must say ``degraded`` and keep forwarding;
  after ``start-etcd`` every node must be ``ok`` again.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
import time
from typing import Any

from mipnode.lab import etcd_cluster
from mipnode.lab.ha_timing import await_home_agent, ping_probe
from mipnode.lab.netns import CHILDREN, LabError
from mipnode.lab.status import daemon_status, in_namespace, log_tail, wait_for
from mipnode.lab.topology import HA_ADDRESS, HOME_LINK, Topology, ha_node_names

ETCD_MEMBERS = 3
FAILOVER_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 10.0


def start_etcd(t: Topology) -> None:
    """Three etcd members in the core's namespace, on its home-link address; their pids go
    into the run's record, so the teardown stops them whatever happens."""
    cluster = etcd_cluster.start_cluster(
        t.workdir, ETCD_MEMBERS, host=f"{HOME_LINK}1", netns=t.ns("core")
    )
    t.etcd = cluster
    for member in cluster.members:
        _record(t, member)
    t.etcd_endpoints = tuple(cluster.endpoints)


def _record(t: Topology, member: etcd_cluster.Member) -> None:
    assert member.proc is not None
    CHILDREN[member.proc.pid] = member.proc
    t.record.daemons.append(member.proc.pid)
    t.record.save()


def etcd_of(t: Topology) -> etcd_cluster.EtcdCluster:
    if not isinstance(t.etcd, etcd_cluster.EtcdCluster):
        raise LabError("this topology has no etcd cluster (topology.ha_nodes > 1)")
    return t.etcd


def cluster_status(t: Topology, node: str) -> dict[str, Any] | None:
    status = daemon_status(t, node)
    return (status or {}).get("cluster")


def holder(t: Topology, among: list[str] | None = None) -> str | None:
    """The node whose daemon says it holds the home-agent address (None: nobody, yet)."""
    for node in among or ha_node_names(t.ha_nodes):
        c = cluster_status(t, node)
        if c and HA_ADDRESS in (c.get("holds") or []):
            return node
    return None


def states(t: Topology) -> dict[str, str]:
    """Each home agent's cluster state and reason, for reports and errors."""
    out = {}
    for node in ha_node_names(t.ha_nodes):
        if t.pids.get(node) is None:
            continue
        c = cluster_status(t, node)
        out[node] = "no answer" if c is None else f"{c['state']} {c.get('reason') or ''}".strip()
    return out


HOW = {"kill": "SIGKILL", "stop": "SIGTERM", "cut": "link cut"}


def kill_holder(t: Topology, how: str = "kill") -> dict[str, Any]:
    """Take the holder away -- ``kill``: SIGKILL; ``stop``: SIGTERM, a clean stop that hands
    the address over; ``cut``: its home link goes down (the process runs on, cut off from
    the link and from etcd) -- and time the takeover as a restarted home agent is timed
    (lab/ha_timing.py): from the survivor that holds the address, by its own status and a
    ping from the core to the home address that must cross its tunnel."""
    old = holder(t)
    if old is None:
        raise LabError(f"no home agent holds the address to take away: {states(t)}")
    survivors = [n for n in ha_node_names(t.ha_nodes) if n != old and t.pids.get(n)]
    child = None
    if how == "cut":
        t.sh(old, "ip", "link", "set", "eth0", "down")
        t.cut_node = old
    else:
        pid = t.pids.pop(old)
        child = CHILDREN.pop(pid, None)
        if pid in t.record.daemons:
            t.record.daemons.remove(pid)
            t.record.save()
    new: list[str] = []  # the survivor that holds the address, once one does

    def new_holder_status() -> dict[str, Any] | None:
        if not new and (found := holder(t, survivors)) is not None:
            new.append(found)
        return daemon_status(t, new[0]) if new else None

    probe, _ = ping_probe(t, "both")
    if child is not None:
        child.send_signal(signal.SIGTERM if how == "stop" else signal.SIGKILL)
    measured = await_home_agent(new_holder_status, probe, timeout=FAILOVER_TIMEOUT_S, interval=0.02)
    if child is not None:
        child.wait(timeout=10)
    entry: dict[str, Any] = {
        "killed": old,
        "signal": HOW[how],
        "new_holder": new[0] if new else None,
        "held_ms": measured["ha_answered_ms"],
        "binding_ms": measured["ha_binding_ms"],
        "resumed_ms": measured["resumed_ms"],
        "probe_pings": measured["probe_pings"],
    }
    if how == "stop" and t.protection == "esp" and new:
        # A clean stop hands the bindings' ESP SAs over (drivers/sa_handover.py): the mobile
        # node must not have to register again, which would cost a datagram or two.
        counters = ((daemon_status(t, new[0]) or {}).get("cluster") or {}).get("counters", {})
        entry["sas_handed"] = counters.get("adopted_with_sas", 0)
        if not entry["sas_handed"]:
            entry["problem"] = f"{old} stopped cleanly but {new[0]} got no ESP SAs from it"
    if entry["resumed_ms"] is None:
        pings = entry["probe_pings"]
        entry["problem"] = (
            f"no traffic through a new holder {FAILOVER_TIMEOUT_S:g} s after {old} got "
            f"{HOW[how]}: holder {entry['new_holder']}, pings "
            f"{pings['received']}/{pings['sent']}, {states(t)}"
            + (f"; {log_tail(t, f'{new[0]}.log', 3)}" if new else "")
        )
    return entry


def restore_link(t: Topology) -> dict[str, Any]:
    """The cut node's home link comes back: it must give the address up to the node etcd
    names (the link follows etcd), so that exactly one node holds it, and traffic must go on
    through that one."""
    node, t.cut_node = t.cut_node, None
    if node is None:
        raise LabError("restore-ha-link needs a cut-ha-holder step before it")
    t.sh(node, "ip", "link", "set", "eth0", "up")
    started = time.monotonic()

    def one_holder() -> list[str] | None:
        holding = [
            n
            for n in running_home_agents(t)
            if HA_ADDRESS in ((cluster_status(t, n) or {}).get("holds") or [])
        ]
        return holding if len(holding) == 1 and holding[0] != node else None

    settled = wait_for(one_holder, HEALTH_TIMEOUT_S, 0.05)
    entry: dict[str, Any] = {
        "restored": node,
        "holders_after": settled,
        "after_ms": round((time.monotonic() - started) * 1000, 1) if settled else None,
    }
    if not settled:
        entry["problem"] = f"after {node}'s link came back the holders are not one: {states(t)}"
    return entry


def kill_etcd(t: Topology, count: int, leader: bool) -> dict[str, Any]:
    cluster = etcd_of(t)
    running = [m for m in cluster.members if m.running]
    if leader:
        lead = _leader(cluster)
        running.sort(key=lambda m: m.name != lead)
    victims = running[:count]
    for member in victims:
        cluster.kill(member)
    return {"killed": [m.name for m in victims]}


def start_etcd_members(t: Topology) -> dict[str, Any]:
    cluster = etcd_of(t)
    started = []
    for member in cluster.members:
        if not member.running:
            cluster.start(member, existing=True)
            _record(t, member)
            started.append(member.name)
    cluster.wait_healthy()
    return {"started": started}


def wait_health(t: Topology, state: str) -> dict[str, Any]:
    """Until every running home agent reports ``state``; how long it took, and what each
    said last."""
    started = time.monotonic()
    ok = wait_for(
        lambda: all(s.startswith(state) for s in states(t).values()), HEALTH_TIMEOUT_S, 0.05
    )
    entry: dict[str, Any] = {
        "health": states(t),
        "after_ms": round((time.monotonic() - started) * 1000, 1) if ok else None,
    }
    if not ok:
        entry["problem"] = f"not every home agent {state} within {HEALTH_TIMEOUT_S:g} s: " + str(
            entry["health"]
        )
    return entry


def _leader(cluster: etcd_cluster.EtcdCluster) -> str | None:
    """The member etcd says leads now (by its member id), or None."""
    return etcd_cluster.leader_name(cluster)


def serving(t: Topology) -> str:
    """The node whose home agent serves the bindings now: ``ha`` alone, or the cluster's
    holder of the address (``ha`` while none holds it, so errors name a node)."""
    if t.ha_nodes == 1:
        return "ha"
    return holder(t) or "ha"


def running_home_agents(t: Topology) -> list[str]:
    """The home agents the lab started and did not kill."""
    return [n for n in ha_node_names(t.ha_nodes) if t.pids.get(n) is not None]


# -- replaying a Binding Update to the node that took over -------------------------------------

ETH_P_ALL, ETH_P_IPV6 = 0x0003, 0x86DD
NH_IPV6, NH_MH, MH_BU = 41, 135, 5
REPLAY_WAIT_S = 2.0


class BuCapture:
    """The last Binding Update the MN tunnelled (IPv6-in-IPv6) to the home-agent address, as
    it crossed the core's home bridge: the outer packet, ready to be sent again."""

    def __init__(self, t: Topology) -> None:
        self.packet: bytes | None = None
        self.seen = 0
        self._stop = threading.Event()
        self._sock = in_namespace(t.ns("core"), self._open)
        self._thread = threading.Thread(target=self._run, name="bu-capture", daemon=True)
        self._thread.start()

    @staticmethod
    def _open() -> socket.socket:
        # ETH_P_ALL: a socket bound to one protocol sees only what the device receives, not
        # what the core forwards out of it (the kernel gives those to ETH_P_ALL taps alone).
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("home", ETH_P_ALL))
        sock.settimeout(0.1)
        return sock

    def _run(self) -> None:
        ha = ipaddress.IPv6Address(HA_ADDRESS).packed
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            ip = frame[14:]
            inner = ip[40:]
            if (
                frame[12:14] == b"\x86\xdd"
                and len(inner) > 43
                and ip[6] == NH_IPV6
                and ip[24:40] == ha
                and inner[6] == NH_MH
                and inner[42] == MH_BU
            ):
                self.packet = bytes(ip)
                self.seen += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def capture_bu(t: Topology) -> dict[str, Any]:
    t.bu_capture = BuCapture(t)
    return {}


def replay_bu(t: Topology) -> dict[str, Any]:
    """Send the captured BU again, from the core, to the home-agent address (whichever node
    holds it now): it must be refused (RFC 4285 §5.1, 144: its timestamp is not newer than
    the last accepted, which the cluster replicated) and change no binding."""
    capture, t.bu_capture = t.bu_capture, None
    if not isinstance(capture, BuCapture):
        raise LabError("replay-bu needs a capture-bu step before it")
    capture.stop()
    node = serving(t)
    entry: dict[str, Any] = {"replayed_to": node, "bus_captured": capture.seen}
    if capture.packet is None:
        entry["problem"] = "no Binding Update was captured to replay"
        return entry
    before = daemon_status(t, node) or {}

    def refused(status: dict[str, Any]) -> int:
        return int((status.get("core") or {}).get("rejected_144", 0))

    in_namespace(t.ns("core"), lambda: _send_raw(capture.packet or b""))
    after = wait_for(
        lambda: (s := daemon_status(t, node)) and refused(s) > refused(before) and s,
        REPLAY_WAIT_S,
        0.05,
    )
    entry["refused_144"] = after is not None
    kept = [b for b in (after or daemon_status(t, node) or {}).get("bindings") or []]
    entry["binding_after"] = [(b["hoa"], b["coa"], b["path"]["kind"]) for b in kept]
    was = [(b["hoa"], b["coa"], b["path"]["kind"]) for b in before.get("bindings") or []]
    if after is None:
        entry["problem"] = f"the replayed BU was not refused with 144 by {node}"
    elif entry["binding_after"] != was:
        entry["problem"] = f"the replay changed the binding: {was} -> {entry['binding_after']}"
    return entry


def _send_raw(packet: bytes) -> None:
    """A whole IPv6 packet, header and all (IPPROTO_RAW), to its own destination."""
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        sock.sendto(packet, (str(ipaddress.IPv6Address(packet[24:40])), 0))


RECORDS_TIMEOUT_S = 10.0


def wait_records(t: Topology) -> dict[str, Any]:
    """Until every running home agent lists, for each binding the holder serves, etcd's
    record of it as the holder has it (owner, care-of address, sequence number), and the
    holder has nothing left to write: what it accepted while etcd was away has caught up."""
    started = time.monotonic()
    last: dict[str, Any] = {}

    def caught_up() -> bool:
        node = holder(t)
        if node is None:
            return False
        status = daemon_status(t, node, "bindings") or {}
        want = {
            (b["hoa"], b["coa"], b["sequence"])
            for b in status.get("bindings") or []
            if b.get("state", "registered") == "registered"
        }
        pending = ((daemon_status(t, node) or {}).get("cluster") or {}).get("pending_writes")
        last.update(holder=node, bindings=sorted(want), pending_writes=pending)
        if not want or pending:
            return False
        for other in running_home_agents(t):
            records = (daemon_status(t, other, "bindings") or {}).get("records") or []
            have = {
                (r["home_address"], r["care_of_address"], r["sequence"])
                for r in records
                if r.get("owner") == node and r.get("state") == "registered"
            }
            last[other] = sorted(have)
            if not want <= have:
                return False
        return True

    ok = wait_for(caught_up, RECORDS_TIMEOUT_S, 0.1)
    entry: dict[str, Any] = {
        "records": last,
        "after_ms": round((time.monotonic() - started) * 1000, 1) if ok else None,
    }
    if not ok:
        entry["problem"] = f"the records did not catch up within {RECORDS_TIMEOUT_S:g} s: {last}"
    return entry
