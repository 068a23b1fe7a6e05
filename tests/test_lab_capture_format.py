"""The lab's pcap writer (mipnode/lab/capture.py) without root: golden bytes for the global
header and the record layout, the capture loop driven by a fake socket, and two independent
readers (scapy's rdpcap, tshark) that must read the file back frame for frame."""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import warnings
from pathlib import Path

import pytest

from mipnode.lab import capture
from mipnode.lab.capture import (
    SNAPLEN,
    _Stop,
    link_name,
    pcap_global_header,
    pcap_record,
    record_frames,
    topology_links,
)
from mipnode.lab.netns import RunRecord
from mipnode.lab.topology import Topology

# Hand-assembled: magic a1b2c3d4, version 2.4, thiszone 0, sigfigs 0, snaplen 0x40000, DLT 1.
GOLDEN_HEADER = bytes.fromhex("d4c3b2a1 0200 0400 00000000 00000000 00000400 01000000")

# Two Ethernet frames: an IPv6 ICMPv6 echo request (fe80::1 -> fe80::2) and a broadcast ARP
# request, checksums computed by hand, so that both readers decode real protocols.
ECHO = bytes.fromhex(
    "020000000002 020000000001 86dd"
    "60000000 0008 3a 40"
    "fe800000000000000000000000000001"
    "fe800000000000000000000000000002"
    "8000 82b6 0001 0001"
)
ARP = bytes.fromhex(
    "ffffffffffff 020000000001 08060001 0800 06 04 0001 020000000001 0a000001 000000000000 0a000002"
) + bytes(18)  # padded to the 60-byte Ethernet minimum
FRAMES = [(1700000000.25, ECHO), (1700000001.999999, ARP)]


def test_global_header_golden_bytes() -> None:
    assert pcap_global_header() == GOLDEN_HEADER
    assert len(GOLDEN_HEADER) == 24


def test_record_golden_bytes() -> None:
    # 1700000000 = 0x6553f100, 250000 us = 0x0003d090; incl_len = orig_len = 3.
    assert pcap_record(1700000000.25, b"\x01\x02\x03") == bytes.fromhex(
        "00f15365 90d00300 03000000 03000000 010203"
    )


def test_record_cut_to_snaplen_keeps_the_original_length() -> None:
    rec = pcap_record(1.0, bytes(range(10)), snaplen=4)
    assert rec == bytes.fromhex("01000000 00000000 04000000 0a000000 00010203")


def test_microseconds_never_reach_a_full_second() -> None:
    for ts in (1.9999999999, 1700000000.9999999, 0.0, 5.000001):
        usec = int.from_bytes(pcap_record(ts, b"")[4:8], "little")
        assert 0 <= usec <= 999_999
    assert pcap_record(5.5, b"")[:8] == bytes.fromhex("05000000 20a10700")


class FakeSocket:
    """Hands out frames like an AF_PACKET socket with MSG_TRUNC (copies what fits, returns the
    real length); an exception in the script is raised instead of a frame."""

    def __init__(self, script: list[bytes | BaseException]) -> None:
        self.script = list(script)

    def recv_into(self, buffer: memoryview, nbytes: int, flags: int) -> int:
        assert flags & socket.MSG_TRUNC
        if not self.script:
            raise _Stop
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        n = min(len(item), nbytes, len(buffer))
        buffer[:n] = item[:n]
        return len(item)


def _run_loop(script: list[bytes | BaseException], path: Path, ifname: str | None = None) -> int:
    times = iter(t for t, _ in FRAMES * 4)
    with path.open("wb") as out:
        out.write(pcap_global_header())
        return record_frames(FakeSocket(script), out, ifname=ifname, clock=lambda: next(times))


def test_capture_loop_writes_exactly_the_records(tmp_path: Path) -> None:
    path = tmp_path / "loop.pcap"
    assert _run_loop([ECHO, ARP], path) == 2
    expected = GOLDEN_HEADER + b"".join(pcap_record(ts, f) for ts, f in FRAMES)
    assert path.read_bytes() == expected


def test_capture_loop_cuts_a_giant_frame(tmp_path: Path) -> None:
    path = tmp_path / "big.pcap"
    giant = bytes(SNAPLEN + 100)
    assert _run_loop([giant], path) == 1
    data = path.read_bytes()[24:]
    assert int.from_bytes(data[8:12], "little") == SNAPLEN
    assert int.from_bytes(data[12:16], "little") == SNAPLEN + 100
    assert len(data) == 16 + SNAPLEN


def test_capture_survives_a_link_bounce_but_not_a_lost_interface(tmp_path: Path) -> None:
    down = OSError(errno.ENETDOWN, "Network is down")
    # "lo" exists in every namespace: the link came back, keep recording.
    assert _run_loop([ECHO, down, ARP], tmp_path / "a.pcap", ifname="lo") == 2
    # The interface is gone: the capture ends cleanly with what it has.
    assert _run_loop([ECHO, down, ARP], tmp_path / "b.pcap", ifname="no-such-if0") == 1
    with pytest.raises(PermissionError):
        _run_loop([ECHO, PermissionError(errno.EPERM, "no")], tmp_path / "c.pcap")


def _write_golden_file(path: Path) -> None:
    path.write_bytes(pcap_global_header() + b"".join(pcap_record(t, f) for t, f in FRAMES))


def test_scapy_reads_frames_and_timestamps_back(tmp_path: Path) -> None:
    path = tmp_path / "two.pcap"
    _write_golden_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.layers.inet6 import ICMPv6EchoRequest
        from scapy.layers.l2 import ARP as ScapyARP
        from scapy.utils import rdpcap

        packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [ECHO, ARP]
    assert [round(float(p.time), 6) for p in packets] == [t for t, _ in FRAMES]
    assert packets[0].haslayer(ICMPv6EchoRequest)
    assert packets[1][ScapyARP].pdst == "10.0.0.2"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "two.pcap"
    _write_golden_file(path)
    out = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.protocols",
            "-e",
            "icmpv6.checksum.status",
            "-e",
            "_ws.malformed",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    rows = [line.split("|") for line in out]
    assert [float(r[0]) for r in rows] == pytest.approx([t for t, _ in FRAMES], abs=1e-6)
    assert [int(r[1]) for r in rows] == [len(ECHO), len(ARP)]
    assert rows[0][2] == "eth:ethertype:ipv6:icmpv6"
    assert rows[1][2] == "eth:ethertype:arp"
    assert rows[0][3] == "1"  # the hand-computed checksum is right, so the frame is real
    assert not [r for r in rows if r[4]]


def test_usage_error() -> None:
    assert capture.main([]) == 2


def test_one_capture_per_link_named_after_both_ends() -> None:
    t = Topology(RunRecord.new("run"), Path("/nonexistent"), access="ipv6", firewall="open")
    links = topology_links(t)
    names = [link_name(link) for link in links]
    assert "mn-eth0--fw-lan" in names
    assert len(set(names)) == len(names) == len(links)
    for a, _, b, _ in links:
        assert a in t.nodes and b in t.nodes
    # Every node is on some link: nothing in the topology escapes capture.
    assert {n for a, _, b, _ in links for n in (a, b)} == set(t.nodes)
