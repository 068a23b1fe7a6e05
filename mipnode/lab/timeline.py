"""A scenario's timeline: steps run in order while background flows measure what they cost.

Every step waits on an observable event (a daemon's status, a ping answer) rather than a fixed
sleep; only the ``wait`` step sleeps, because waiting is what it is for.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

from mipnode.drivers.persist import STATE_FILE
from mipnode.lab import cluster, topology
from mipnode.lab.attack_step import run_attack
from mipnode.lab.ha_timing import (  # noqa: F401 - the restart step's parts, named here too
    HA_RELAY_COUNTERS,
    HA_RESTART_TIMEOUT_S,
    PROBE_ADDRESS,
    _binding_keys,
    await_home_agent,
    ha_restart_probe,
    ping_probe,
)
from mipnode.lab.netns import CHILDREN, LabError
from mipnode.lab.scenario_files import Scenario, Step
from mipnode.lab.status import (
    correspondent_path,
    daemon_status,
    log_tail,
    module_process,
    wait_for,
)
from mipnode.lab.topology import Topology

REGISTRATION_TIMEOUT_S = 25.0
STREAM_PORT = 5002
UDP_PORT = 5003
BLOCK_TABLE = "mipnode_lab_block"


def traffic_process(t: Topology, node: str, *args: str) -> subprocess.Popen[str]:
    """``python -m mipnode.lab.traffic ARGS`` in ``node``; stdin open (closing it ends flows)."""
    return module_process(t, node, "mipnode.lab.traffic", *args)


def _last_json(text: str) -> dict[str, Any] | None:
    try:
        answer = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return answer if isinstance(answer, dict) else None


class Flow:
    """A server and a client traffic process; ``finish()`` ends both and returns the report."""

    def __init__(self, t: Topology, server: tuple[str, ...], client: tuple[str, ...]) -> None:
        self.server = traffic_process(t, server[0], *server[1:])
        self.client: subprocess.Popen[str] | None = None
        assert self.server.stdout is not None
        if self.server.stdout.readline().strip() != "listening":  # the readiness probe
            self.kill()
            raise LabError(f"traffic server {' '.join(server[1:])} did not start")
        self.client = traffic_process(t, client[0], *client[1:])

    def finish(self, timeout: float = 30) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Close the client's stdin (it stops sending), then the server's; both reports."""
        try:
            assert self.client is not None
            client_out, _ = self.client.communicate(input="", timeout=timeout)
            server_out, _ = self.server.communicate(input="", timeout=timeout)
            return _last_json(client_out), _last_json(server_out)
        except subprocess.TimeoutExpired:
            return None, None
        finally:
            self.kill()

    def kill(self) -> None:
        for proc in (self.server, self.client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def flow_ends(t: Topology, sc: Scenario, peer: str) -> tuple[str, str, str]:
    """(client node, server node, target address): the MN (or the host behind it, a mobile
    router's) opens flows unless only the CN may."""
    host, host_address = t.mn_host()
    if sc.traffic.initiator == "cn":
        return "cn", host, host_address
    return host, ("mn2" if sc.second_mn else "cn"), peer


def start_stream(t: Topology, sc: Scenario, peer: str) -> Flow:
    client, server, target = flow_ends(t, sc, peer)
    return Flow(
        t,
        (server, "stream-server", str(STREAM_PORT)),
        (client, "stream-client", target, str(STREAM_PORT)),
    )


def start_udp(t: Topology, sc: Scenario, peer: str) -> Flow:
    client, server, target = flow_ends(t, sc, peer)
    return Flow(
        t,
        (server, "udp-sink", str(UDP_PORT)),
        (client, "udp-send", target, str(UDP_PORT), str(sc.traffic.udp_rate_pps)),
    )


def stream_report(client: dict[str, Any] | None) -> dict[str, Any]:
    return client or {"ok": False, "error": "no report from the stream client"}


def udp_report(sender: dict[str, Any] | None, sink: dict[str, Any] | None) -> dict[str, Any]:
    if sender is None or sink is None:
        return {"ok": False, "error": "no report from the UDP flow"}
    sent, got = sender["sent"], sink["received"]
    return {
        "ok": True,
        "sent": sent,
        "received": got,
        "loss_pct": round(100.0 * (sent - got) / sent, 2) if sent else 0.0,
        "max_gap_ms": sink["max_gap_ms"],
        "duplicates": sink["duplicates"],
    }


def _ms_since(posix: float, started_at: float) -> float:
    return round((posix - started_at) * 1000, 1)


def over_time(receiver: dict[str, Any] | None, started_at: float) -> dict[str, Any] | None:
    """A receiver's ``over_time`` (traffic.Meter) on the run's clock: ms since ``started_at``
    (POSIX; the receivers run in other processes, whose monotonic clocks the lab cannot
    compare with its own, but every process here shares the wall clock)."""
    seen = (receiver or {}).get("over_time")
    if not isinstance(seen, dict):
        return None
    start_ms = _ms_since(seen["start"], started_at)
    return {
        "start_ms": start_ms,
        "bin_ms": seen["bin_ms"],
        "counts": seen["counts"],
        "gaps": [
            {"at_ms": round(start_ms + since, 1), "gap_ms": length}
            for since, length in seen["gaps"]
        ],
    }


def path_changes(t: Topology, peer: str, started_at: float) -> dict[str, list[dict[str, Any]]]:
    """The MN's own log of the selected MN-HA path and of the path to ``peer`` (`paths --json`
    ``changes``, the last 20 each; behind a mobile router the host's flow), in ms since
    ``started_at``. A ``to`` of null on the MN-CN side means the peer's traffic is back on
    the home path."""
    peers = daemon_status(t, "mn", "paths")
    peers = peers if isinstance(peers, list) else []
    home = next((p for p in peers if p.get("role") == "home-agent"), None)
    if t.mobile_network:
        _, host = t.mn_host()
        flows = (daemon_status(t, "mn") or {}).get("mobile_network_flows") or []
        flow = next((f for f in flows if f.get("host") == host and f.get("cn") == peer), None)
        cn = (flow or {}).get("direct_udp")
    else:
        cn = next(
            (p for p in peers if p.get("role") == "correspondent" and p["peer"] == peer), None
        )

    def lane(view: dict[str, Any] | None) -> list[dict[str, Any]]:
        return [
            {
                "at_ms": _ms_since(c["at"], started_at),
                "from": c.get("from"),
                "to": c.get("to"),
                "reason": c.get("reason"),
            }
            for c in (view or {}).get("changes") or []
            if c.get("at") is not None
        ]

    return {"mn_ha": lane(home), "mn_cn": lane(cn)}


# -- steps -----------------------------------------------------------------------------------


def _block_rules(step: Step) -> list[str]:
    name = {"ipv4-in-ipv6": "4"}.get(step.proto, step.proto)
    proto = "" if step.proto == "all" else f"meta l4proto {name} "
    if step.between is None:
        return [f"{proto}drop"]
    a, b = step.between
    family = "ip6" if ":" in a else "ip"
    return [
        f"{family} saddr {a} {family} daddr {b} {proto}drop",
        f"{family} saddr {b} {family} daddr {a} {proto}drop",
    ]


def _block_tag(step: Step) -> str:
    pair = "-".join(step.between) if step.between else "any"
    return f"{step.proto}:{pair}"


def block(t: Topology, step: Step) -> None:
    """Drop matching forwarded packets on a firewall, ahead of its ruleset (priority -10), so
    established flows die too: a firewall losing its state, a route moving to another box."""
    tag = _block_tag(step)
    rules = "\n".join(f'    {r} comment "{tag}"' for r in _block_rules(step))
    t.sh(
        step.on,
        "nft",
        "-f",
        "-",
        input=f"""table inet {BLOCK_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
{rules}
  }}
}}
""",
    )


def unblock(t: Topology, step: Step) -> int:
    """Delete the rules an earlier block step with the same protocol and pair added."""
    listing = t.sh(
        step.on, "nft", "-a", "list", "chain", "inet", BLOCK_TABLE, "forward", check=False
    )
    removed = 0
    for line in listing.splitlines():
        if f'comment "{_block_tag(step)}"' in line and "# handle " in line:
            handle = line.rsplit("# handle ", 1)[1].strip()
            t.sh(step.on, "nft", "delete", "rule", "inet", BLOCK_TABLE, "forward", "handle", handle)
            removed += 1
    if not removed:
        raise LabError(f"unblock on {step.on}: no block rule for {_block_tag(step)}")
    return removed


def move(t: Topology) -> dict[str, Any]:
    """Move the MN to the second access network; wait until it says it re-registered there."""
    started = time.monotonic()
    before = (daemon_status(t, "mn") or {}).get("handover_ms")
    topology.move_mn(t)

    def moved() -> dict[str, Any] | None:
        s = daemon_status(t, "mn")
        if s is None or not s["bindings"] or s.get("handover_ms") in (None, before):
            return None
        return s if s["bindings"][0]["coa"] == topology.MN_LAN6_B else None

    after = wait_for(moved, 10, 0.1) or daemon_status(t, "mn") or {}
    ha = (daemon_status(t, cluster.serving(t), "bindings") or {}).get("bindings", [])
    return {
        "observed_ms": round((time.monotonic() - started) * 1000, 1),
        "handover_ms": after.get("handover_ms"),
        "mn_coa_after": (after.get("bindings") or [{}])[0].get("coa"),
        "ha_coa_after": ha[0]["coa"] if ha else None,
    }


def _stop(t: Topology, name: str) -> None:
    pid = t.pids.get(name)
    child = CHILDREN.get(pid) if pid is not None else None
    if pid is None or child is None:
        raise LabError(f"{name} process not found")
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=10)
    t.record.daemons.remove(pid)
    CHILDREN.pop(pid, None)


def forget_bindings(t: Topology) -> bool:
    """Delete the stopped HA's binding cache file (``state_dir`` is the run's workdir): the
    next process starts empty, as one without ``state_dir`` or with a lost disk would. True
    when there was a file to delete."""
    path = t.workdir / STATE_FILE
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def restart_home_agent(
    t: Topology, initiator: str = "both", keep_state: bool = True
) -> dict[str, Any]:
    """SIGTERM the HA, start it again with the same configuration, and time the new process:
    when its control socket answers, when it reports the MN's binding, when traffic passes
    through it again. With ``keep_state`` its persistent binding cache restores the bindings;
    without, the cache file is deleted between the two processes and the binding comes back
    only when the MN registers again (the new HA answers its heartbeat with a Binding Refresh
    Request)."""
    before = daemon_status(t, "ha")
    _stop(t, "ha")
    removed = None if keep_state else forget_bindings(t)
    probe, described = ping_probe(t, initiator)
    t.spawn("ha", ["ha", "--config", str(t.workdir / "ha.toml")], "ha.log")
    measured = await_home_agent(lambda: daemon_status(t, "ha"), probe)
    resumed, answered = measured["resumed_ms"], measured["ha_answered_ms"]
    return {
        "resumed_ms": measured.pop("resumed_ms"),
        # From the new HA's first answer to traffic through it: what the HA's own start-up
        # (Python, restoring the cache) does not cost, i.e. how fast the binding comes back.
        "answered_to_traffic_ms": (
            None if resumed is None or answered is None else round(resumed - answered, 1)
        ),
        "kept_state": keep_state,
        **({} if removed is None else {"state_file_removed": removed}),
        "bindings_before": _binding_keys(before),
        "bindings_after": measured.pop("bindings_after"),
        "probe": described,
        **measured,
    }


def restart_problem(entry: dict[str, Any], t: Topology) -> str | None:
    """Why a restart-ha step failed, from its entry (None: it did not)."""
    if entry["ha_answered_ms"] is None:
        return (
            f"the new home agent did not answer on its control socket within "
            f"{HA_RESTART_TIMEOUT_S:g} s: {log_tail(t, 'ha.log')}"
        )
    if entry["bindings_after"] != entry["bindings_before"]:
        return (
            f"after the HA restart its bindings are {entry['bindings_after']}, "
            f"before {entry['bindings_before']}"
        )
    if entry["resumed_ms"] is None:
        pings, relayed = entry["probe_pings"], entry["ha_relayed"]
        return (
            f"no traffic through the new home agent within {HA_RESTART_TIMEOUT_S:g} s: ping "
            f"{entry['probe']} {pings['received']}/{pings['sent']}, the HA relayed "
            + ", ".join(f"{k} {v}" for k, v in relayed.items())
        )
    return None


def restart_mobile_node(t: Topology) -> dict[str, Any]:
    """SIGTERM the MN (it deregisters), start it again, and time its new registration."""
    _stop(t, "mn")
    started = time.monotonic()
    t.spawn("mn", ["mn", "--config", str(t.workdir / "mn.toml")], "mn.log")
    status = wait_for(
        lambda: (s := daemon_status(t, "mn")) and s.get("state") == "registered" and s,
        REGISTRATION_TIMEOUT_S,
        0.1,
    )
    return {
        "registered_ms": None if not status else round((time.monotonic() - started) * 1000, 1),
        "mn_ha": status["bindings"][0]["path"]["kind"] if status else None,
    }


def wait_for_path(t: Topology, step: Step, peer: str) -> dict[str, Any]:
    started = time.monotonic()
    seen: list[str] = []

    def reached() -> bool:
        status = daemon_status(t, "mn") or {}
        bindings = status.get("bindings") or []
        mn_ha = bindings[0]["path"]["kind"] if bindings else None
        mn_cn = correspondent_path(t, peer, status) if step.mn_cn else None
        now = f"MN-HA {mn_ha}" + (f", MN-CN {mn_cn}" if step.mn_cn else "")
        if not seen or seen[-1] != now:
            seen.append(now)
        return (step.mn_ha is None or mn_ha == step.mn_ha) and (
            step.mn_cn is None or mn_cn == step.mn_cn
        )

    ok = bool(wait_for(reached, step.within_s, 0.1))
    return {
        "reached": ok,
        "after_ms": round((time.monotonic() - started) * 1000, 1) if ok else None,
        "seen": seen,
    }


def run_step(t: Topology, step: Step, peer: str, initiator: str = "both") -> dict[str, Any]:
    """Run one step; the returned dict is its entry in the report (``problem`` when it failed).
    ``initiator`` is the scenario's traffic.initiator: who may start flows."""
    entry: dict[str, Any] = {"step": step.describe()}
    if step.do == "wait":
        time.sleep(step.seconds)
    elif step.do == "move":
        entry.update(move(t))
        if (
            entry["mn_coa_after"] != topology.MN_LAN6_B
            or entry["ha_coa_after"] != entry["mn_coa_after"]
        ):
            entry["problem"] = (
                f"after the move MN care-of {entry['mn_coa_after']}, "
                f"HA binding {entry['ha_coa_after']}"
            )
    elif step.do == "block":
        block(t, step)
    elif step.do == "unblock":
        entry["rules_removed"] = unblock(t, step)
    elif step.do == "restart-ha":
        entry.update(restart_home_agent(t, initiator, step.keep_state))
        problem = restart_problem(entry, t)
        if problem:
            entry["problem"] = problem
    elif step.do == "restart-mn":
        entry.update(restart_mobile_node(t))
        if entry["registered_ms"] is None:
            entry["problem"] = f"the MN did not register again: {log_tail(t, 'mn.log')}"
    elif step.do == "attack":
        entry.update(run_attack(t, step, peer))
    elif step.do in ("kill-ha-holder", "stop-ha-holder", "cut-ha-holder"):
        entry.update(cluster.kill_holder(t, step.do.split("-")[0]))
    elif step.do == "restore-ha-link":
        entry.update(cluster.restore_link(t))
    elif step.do == "kill-etcd":
        entry.update(cluster.kill_etcd(t, step.count, step.leader))
    elif step.do == "start-etcd":
        entry.update(cluster.start_etcd_members(t))
    elif step.do == "wait-health":
        entry.update(cluster.wait_health(t, step.state))
    elif step.do == "wait-records":
        entry.update(cluster.wait_records(t))
    elif step.do == "capture-bu":
        entry.update(cluster.capture_bu(t))
    elif step.do == "replay-bu":
        entry.update(cluster.replay_bu(t))
    elif step.do == "wait-for-path":
        entry.update(wait_for_path(t, step, peer))
        if not entry["reached"]:
            entry["problem"] = f"{step.describe()}: not reached; saw {' -> '.join(entry['seen'])}"
    return entry


def peer_address(sc: Scenario, t: Topology) -> str:
    return topology.HOA2 if sc.second_mn else t.cn_address()
