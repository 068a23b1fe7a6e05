"""Lab captures on real namespaces: one pcap per link, from before registration to after data.

The captures start before the daemons, so each file must hold the registration (BU/BA), the
STUN checks, the CN -> HoA ping (bare and tunnelled) and a 1 MB TCP transfer; tshark, an
independent decoder, must read every record, find nothing malformed and count exactly the
frames the capture process says it wrote, with no frame lost in the kernel. After ``stop()`` no
capture process is left.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mipnode.lab import netns, runner
from mipnode.lab.capture import LinkCaptures, link_name, topology_links
from mipnode.lab.topology import HOA

from .conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.netns,
    pytest.mark.oracle,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed"),
]

# With T-native (stateful firewall) UDP 4191 carries only STUN checks; tshark finds them by
# heuristic. (Decoding 4191 as IPv6 as well, for T-udp, makes it call STUN requests malformed.)
DECODE = ["--enable-heuristic", "stun_udp"]
CHECKSUMS = [
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
]
# An ICMPv6 error quotes at most 1280 bytes of the packet it is about: the quoted TCP segment
# is cut short, so its checksum cannot be verified and tshark calls it bad.
ERRORS = "_ws.expert.severity >= error && !(icmpv6.type < 128)"


def _count(pcap: Path, display_filter: str = "", keys: Path | None = None) -> int:
    """Frames matching ``display_filter``; with ``keys`` (the daemons' ESP key log) tshark
    decrypts ESP and verifies its ICVs first."""
    args = ["tshark", "-n", "-r", str(pcap), *DECODE, *CHECKSUMS, "-T", "fields"]
    if keys is not None:
        args += ["-o", "esp.enable_encryption_decode:TRUE"]
        args += ["-o", "esp.enable_authentication_check:TRUE"]
        args += [x for line in keys.read_text().splitlines() for x in ("-o", f"uat:esp_sa:{line}")]
    args += ["-e", "frame.number"]
    if display_filter:
        args += ["-Y", display_filter]
    proc = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    return len(proc.stdout.splitlines())


def test_one_pcap_per_link_holds_registration_and_traffic(make_lab, tmp_path: Path) -> None:
    lab = make_lab(firewall="stateful", start=False)
    keys = lab.t.esp_keylog = tmp_path / "esp-keys.txt"
    captures = LinkCaptures(tmp_path / "pcap")
    captures.start_for_links(lab.t)
    pids = captures.pids
    links = topology_links(lab.t)
    assert len(pids) == len(links)
    # Registered for teardown, so a crashed run cannot leave them behind.
    assert set(pids) <= set(lab.record.daemons) and set(pids) <= set(netns.CHILDREN)
    try:
        status = lab.start()
        assert status["bindings"][0]["path"]["kind"] == "T-native"
        ping = runner.ping(lab.t, "cn", HOA, count=5)
        assert ping["received"] >= 4, ping
        tcp = runner.tcp_transfer(lab.t)
        assert tcp["ok"], tcp
    finally:
        paths = captures.stop()

    for pid in pids:
        assert not netns.pid_alive(pid), f"capture {pid} survived stop()"
        assert pid not in netns.CHILDREN and pid not in lab.record.daemons
    assert captures.stop() == paths  # idempotent
    assert paths == sorted(tmp_path / "pcap" / f"{link_name(link)}.pcap" for link in links)

    for path in paths:
        stats = captures.stats[path.stem]
        assert "error" not in stats, stats
        frames = _count(path)
        assert frames == stats["frames"] > 0, (path.name, stats)
        assert stats["kernel_drops"] == 0, (path.name, stats)
        # Veths without offloads carry no frame above the snap length: none may be cut.
        assert _count(path, "frame.len != frame.cap_len") == 0, f"{path.name}: cut frames"
        assert _count(path, "_ws.malformed") == 0, f"{path.name}: malformed frames"
        assert _count(path, ERRORS) == 0, f"{path.name}: frames with expert errors"

    def pcap_touching(node: str) -> Path:
        (link,) = [link for link in links if node in (link[0], link[2])]
        return tmp_path / "pcap" / f"{link_name(link)}.pcap"

    mn, ha = pcap_touching("mn"), pcap_touching("ha")
    # The access link: the MN-HA tunnel (T-native under protection: ESP, protocol 50), its STUN
    # checks, and the ping and the transfer inside it, decrypted with the daemons' key log.
    assert _count(mn, "esp") > 700  # ~700 full segments make 1 MB
    assert _count(mn, "esp.icv_good == 1", keys) > 700
    assert _count(mn, "esp.icv_bad == 1", keys) == 0
    assert _count(mn, "stun.type == 0x0001") >= 1 and _count(mn, "stun.type == 0x0101") >= 1
    tunnelled_echo = f"esp && icmpv6.type == 128 && ipv6.dst == {HOA}"
    assert _count(mn, tunnelled_echo) == 0  # nothing readable without the keys
    assert _count(mn, tunnelled_echo, keys) >= ping["received"]
    # The HA's link: the CN's echo requests arrive bare, leave tunnelled; replies come back.
    bare = 'frame.protocols matches "^eth:ethertype:ipv6:icmpv6"'  # no outer IPv6 header
    bare_echo = f"{bare} && icmpv6.type == 128 && ipv6.dst == {HOA}"
    assert _count(ha, bare_echo) >= ping["received"]
    assert _count(ha, tunnelled_echo, keys) >= ping["received"]
    assert _count(ha, "icmpv6.type == 129", keys) >= 2 * ping["received"]
    # The captures ran before the daemons: the registration is in the files.
    assert _count(ha, "mip6.mhtype == 5") >= 1 and _count(ha, "mip6.mhtype == 6") >= 1


def test_teardown_without_stop_leaves_no_capture_and_whole_files(make_lab, tmp_path: Path) -> None:
    """A run that dies before ``stop()``: the record's teardown reaps the captures (SIGTERM,
    so each file is finished), and a late ``stop()`` neither fails nor revives the record."""
    lab = make_lab(start=False)
    captures = LinkCaptures(tmp_path / "pcap")
    with pytest.raises(netns.LabError, match=r"nope0 in .*No such device"):
        captures.start(lab.t.ns("mn"), "nope0", "broken")
    assert captures.pids == [] and not (tmp_path / "pcap" / "broken.pcap").exists()
    captures.start_for_links(lab.t)
    pids = captures.pids
    assert runner.ping(lab.t, "fw", "2001:db8:f1::1", count=2)["received"] == 2
    lab.record.teardown()
    for pid in pids:
        assert not netns.pid_alive(pid), f"capture {pid} survived teardown"
    paths = captures.stop()
    assert len(paths) == len(topology_links(lab.t))
    assert not lab.record.path.exists()
    wan = tmp_path / "pcap" / "fw-wan--core-to-fw.pcap"
    assert _count(wan, "icmpv6.type == 128") == 2  # ends with whole records, nothing lost
    for path in paths:
        assert _count(path, "_ws.malformed") == 0
