"""`mipnode lab --pcap DIR`: a pcap per link, and tshark finds no malformed packet in any.

tshark is the independent oracle: its MIPv6, IPv6-in-IPv6, STUN and TCP dissectors read
every frame of a route-optimised run and of a UDP-encapsulated one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mipnode.lab.runner import TCP_PORT

from .conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark"),
]

STUN_COOKIE = "21:12:a4:42"
CN, HA, HOA = "2001:db8:c::2", "2001:db8:1::1", "2001:db8:1::100"


def _tshark(pcap: Path, display_filter: str, *extra: str) -> list[str]:
    # The lab's TCP payload is random bytes: reassembling it for a guessed application
    # protocol flags every retransmission as an "overlap" error that says nothing about the
    # packets, and a heuristic dissector may take a segment for its protocol (Thrift did:
    # "varint value too large"). So no reassembly, and the lab's TCP port decodes as data.
    # Every header is still dissected and checked.
    proc = subprocess.run(
        [
            "tshark",
            "-n",
            "-o",
            "tcp.desegment_tcp_streams:FALSE",
            "-d",
            f"tcp.port=={TCP_PORT},data",
            "-r",
            str(pcap),
            *extra,
            "-Y",
            display_filter,
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_every_link_of_every_run_is_captured_and_decodes_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "pcap"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mipnode.cli",
            "lab",
            "-s",
            "ro-open",
            "-s",
            "stateful-fw-no41",
            "-s",
            "direct-mn-behind-fw",
            "--pcap",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(proc.stdout)
    for run in report["scenarios"]:
        folder = out / run["name"]
        pcaps = sorted(folder.glob("*.pcap"))
        assert [str(p) for p in pcaps] == run["pcaps"]
        # One file per link: mn-fw, fw-core, core-ha, core-cn.
        assert {p.stem for p in pcaps} == {
            "mn-eth0--fw-lan",
            "fw-wan--core-to-fw",
            "core-to-ha--ha-eth0",
            "core-to-cn--cn-eth0",
        }
        for name, stats in run["pcap_stats"].items():
            assert stats["frames"] > 0 and stats["kernel_drops"] == 0, (name, stats)
        for pcap in pcaps:
            assert _tshark(pcap, "frame"), f"{pcap} is empty"
            # Every UDP port of the run is told to tshark as ESP-in-UDP (RFC 3948): left to
            # guess, tshark hands a datagram to whatever protocol claims one of its ports (31
            # ephemeral ports are claimed, and a D-udp pair runs between two ephemeral ports)
            # or to a heuristic, and random ciphertext is then "malformed" for that protocol.
            as_esp = _udp_ports_as_esp(pcap)
            bad = _tshark(pcap, "_ws.malformed || _ws.expert.severity == error", *as_esp)
            assert not bad, f"{pcap}: malformed frames {bad[:10]}"
            # Decoding UDP 4191 as IPv6 (T-udp, D-udp): everything but the STUN checks that
            # share the port (and ESP-in-UDP, whose SPI has the top bit set) must then be a
            # well-formed inner IPv6 packet.
            inner_bad = _tshark(
                pcap,
                f"_ws.malformed && !(udp.payload[4:4] == {STUN_COOKIE})"
                " && !(udp.payload[0] & 0x80)",
                "-d",
                "udp.port==4191,ipv6",
            )
            assert not inner_bad, f"{pcap}: malformed tunnelled frames {inner_bad[:10]}"
            # Protected runs (the default): the key log beside the pcaps opens every ESP frame
            # (ro-open runs without protection: no SA, no key log).
            log = folder / "esp-keys.txt"
            records = log.read_text().splitlines() if log.exists() else []
            keys = ["-o", "esp.enable_encryption_decode:TRUE"]
            keys += ["-o", "esp.enable_authentication_check:TRUE"]
            keys += [x for r in records for x in ("-o", f"uat:esp_sa:{r}")]
            assert not _tshark(pcap, "esp.icv_bad == 1", *keys, *as_esp), f"{pcap}: ESP not opened"

    ro = out / "ro-open" / "mn-eth0--fw-lan.pcap"
    # Route optimisation on the MN's link: all four RR messages, BU and BA to and from the
    # CN, and D-native data (HAO out, RH2 back).
    # (HoTI and HoT ride the tunnel sealed: read with the run's key log.)
    # (ro-open runs with protection "none": D-native is plain RFC 6275, all of it in clear.)
    for mh_type in (1, 2, 3, 4, 5, 6):
        found = _tshark(ro, f"mip6.mhtype == {mh_type}", "-d", "udp.port==4191,ipv6")
        assert found, f"no MH type {mh_type} in {ro}"
    assert _tshark(ro, "ipv6.opt.mipv6.home_address == 2001:db8:1::100")  # HAO
    assert _tshark(ro, "ipv6.routing.mipv6.home_address == 2001:db8:1::100")  # RH2
    no41 = out / "stateful-fw-no41" / "mn-eth0--fw-lan.pcap"
    assert _tshark(no41, "udp.port == 4191 && stun")  # the T-udp path's checks
    assert _tshark(no41, "udp.port == 4191 && ipv6.nxt == 135", "-d", "udp.port==4191,ipv6")

    # Protected D-udp (issue 12): between the MN's link and the CN's, the direct pair carries
    # ESP-in-UDP only. Read without the keys no packet to or from the home address is in
    # clear on either segment; with the run's key log every ESP frame verifies.
    direct = out / "direct-mn-behind-fw"
    cn_ports = sorted(set(_tshark_field(direct / "core-to-cn--cn-eth0.pcap", "udp.srcport")))
    assert cn_ports, "no UDP from the CN"
    for name in ("mn-eth0--fw-lan.pcap", "core-to-cn--cn-eth0.pcap"):
        pcap = direct / name
        pair = f"udp && ipv6.addr == {CN} && ipv6.addr != {HA}"
        assert not _tshark(pcap, f"{pair} && udp.payload[0] & 0xf0 == 0x60"), f"{pcap}: clear"
        assert len(_tshark(pcap, f"{pair} && udp.payload[0] & 0x80")) >= 100, f"{pcap}: no ESP"
        keys = ["-o", "esp.enable_encryption_decode:TRUE"]
        keys += ["-o", "esp.enable_authentication_check:TRUE"]
        for record in (direct / "esp-keys.txt").read_text().splitlines():
            keys += ["-o", f"uat:esp_sa:{record}"]
        for port in cn_ports:
            keys += ["-d", f"udp.port=={port},udpencap"]
        assert not _tshark(pcap, "esp.icv_bad == 1", *keys), f"{pcap}: ESP not opened"
        inner = f"esp.icv_good == 1 && ipv6.addr == {HOA} && tcp"
        assert len(_tshark(pcap, inner, *keys)) >= 100, f"{pcap}: the transfer did not decrypt"


def _udp_ports_as_esp(pcap: Path) -> list[str]:
    ports = {4191}
    for field in ("udp.srcport", "udp.dstport"):
        ports.update(int(p) for v in _tshark_field(pcap, field) for p in v.split(","))
    return [arg for port in sorted(ports) for arg in ("-d", f"udp.port=={port},udpencap")]


def _tshark_field(pcap: Path, field: str) -> list[str]:
    proc = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", field],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [v for v in proc.stdout.split() if v]
