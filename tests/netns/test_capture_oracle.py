"""Real daemon traffic, captured in the HA's namespace and judged by independent decoders.

tshark dissects the capture (no malformed packets, good UDP/ICMPv6 checksums) and scapy
recomputes every Mobility Header checksum under RFC 6275 §6.1.1; both must agree with what the
daemons meant to send: a registration BU/BA, data, and the deregistration on shutdown.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import warnings
from pathlib import Path

import pytest

from mipnode.lab import netns, runner
from mipnode.lab.capture import LinkCaptures
from mipnode.lab.topology import HA_ADDRESS, HOA

from .conftest import Lab, needs_root

pytestmark = [
    needs_root,
    pytest.mark.netns,
    pytest.mark.oracle,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed"),
]


def _stop_mn(lab: Lab) -> int:
    pid = lab.t.pids["mn"]
    child = netns.CHILDREN[pid]
    child.send_signal(signal.SIGTERM)
    return child.wait(timeout=10)


def _tshark_fields(pcap: Path, *fields: str, stun: bool = False) -> list[list[str]]:
    """UDP 4191 carries whole IPv6 packets and STUN checks (DESIGN §3 demux); tshark can only
    decode a port one way, so STUN frames are found by its heuristic first, IPv6 by decode-as."""
    decode = ["--enable-heuristic", "stun_udp"] if stun else ["-d", "udp.port==4191,ipv6"]
    return _fields(pcap, fields, "-o", "udp.check_checksum:TRUE", *decode)


def _fields(pcap: Path, fields: list[str] | tuple[str, ...], *options: str) -> list[list[str]]:
    """tshark's ``fields`` output of ``pcap`` with ``options``, one list per frame."""
    args = ["tshark", "-n", "-r", str(pcap), *options, "-T", "fields", "-E", "separator=|"]
    args += [x for f in fields for x in ("-e", f)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def _esp_frames(pcap: Path) -> set[str]:
    """Frames carrying mipnode's ESP (SPI top bit set, DESIGN §3): decoded elsewhere."""
    rows = _fields(pcap, ["frame.number", "esp.spi"], "-d", "udp.port==4191,udpencap")
    return {r[0] for r in rows if r[1] and int(r[1].split(",")[0], 16) & 0x8000_0000}


def _scapy_mobility_headers(pcap: Path) -> list[tuple[int, int, bool]]:
    """(MH type, BA status or -1, checksum correct) for every MH, found at any depth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.layers.inet import UDP
        from scapy.layers.inet6 import IPv6, in6_chksum
        from scapy.utils import rdpcap

        packets = rdpcap(str(pcap))
    found = []
    for frame in packets:
        layer = frame
        while layer is not None and layer.name != "NoPayload":
            if isinstance(layer, UDP) and 4191 in (layer.sport, layer.dport):
                payload = bytes(layer.payload)
                if not payload or payload[0] >> 4 != 6:
                    break  # a STUN check, not an encapsulated packet
                layer = IPv6(payload)
                continue
            if isinstance(layer, IPv6) and layer.nh == 135:
                mh = bytearray(bytes(layer.payload))
                claimed = int.from_bytes(mh[4:6], "big")
                mh[4:6] = b"\0\0"
                good = in6_chksum(135, layer, bytes(mh)) == claimed
                status = mh[6] if mh[2] == 6 else -1
                found.append((mh[2], status, good))
                break
            layer = layer.payload
    return found


@pytest.mark.parametrize(("firewall", "kind"), [("open", "T-native"), ("stateful-no41", "T-udp")])
def test_captured_signalling_and_data_decode_cleanly(
    make_lab, tmp_path: Path, firewall: str, kind: str
) -> None:
    lab = make_lab(firewall=firewall, start=False)
    keylog = tmp_path / "esp-keys.txt"
    lab.t.esp_keylog = keylog
    pcap = tmp_path / "ha-eth0.pcap"
    # The lab's own AF_PACKET capture (tshark's live capture lost frames mid-test under load,
    # twice); tshark and scapy stay the independent decoders.
    capture = LinkCaptures(tmp_path)
    capture.start(lab.t.ns("ha"), "eth0", pcap.stem)
    try:
        status = lab.start()
        assert status["bindings"][0]["path"]["kind"] == kind
        assert runner.ping(lab.t, "cn", HOA, count=3)["received"] >= 2
        # Clean shutdown deregisters (RFC 6275 §11.5.4 style): the HA drops the binding.
        assert _stop_mn(lab) == 0
        assert lab.status("ha", "bindings")["bindings"] == []
    finally:
        assert capture.stop() == [pcap]
    stun_rows = [
        r
        for r in _tshark_fields(pcap, "frame.number", "_ws.malformed", "stun.type", stun=True)
        if r[2]
    ]
    assert stun_rows, "no STUN connectivity checks captured"
    assert not [r for r in stun_rows if r[1]], "tshark found malformed STUN packets"
    stun_frames = {r[0] for r in stun_rows}
    rows = _tshark_fields(
        pcap,
        "frame.number",
        "_ws.malformed",
        "mip6.mhtype",
        "udp.checksum.status",
        "icmpv6.checksum.status",
        "ipv6.dst",
        "eth.src",
        "ipv6.src",
    )
    rows = [r for r in rows if r[0] not in stun_frames | _esp_frames(pcap)]
    assert rows, "nothing captured"
    assert not [r for r in rows if r[1]], "tshark found malformed packets"
    for r in rows:
        assert set(filter(None, r[3].split(","))) <= {"1"}, f"bad UDP checksum in frame {r[0]}"
        assert set(filter(None, r[4].split(","))) <= {"1"}, f"bad ICMPv6 checksum in frame {r[0]}"
    # The HA never sends a bare packet to the home address (it would be a leak, or a loop
    # between the HA and the router that routes the home prefix to it): all of it is tunnelled.
    ha_macs = {r[6] for r in rows if r[7].split(",")[0] == HA_ADDRESS}
    assert ha_macs
    assert not [r for r in rows if r[5] == HOA and r[6] in ha_macs], "untunnelled HoA packet"
    mh_types = [int(t) for r in rows for t in r[2].split(",") if t]
    assert mh_types.count(5) >= 1 and mh_types.count(6) >= 1  # the first registration
    # Once keyed, BUs and BAs ride ESP (RFC 6275 §5.1): the deregistration is found sealed.
    keys = ["-o", "esp.enable_encryption_decode:TRUE"]
    keys += [
        x for record in keylog.read_text().splitlines() for x in ("-o", f"uat:esp_sa:{record}")
    ]
    sealed = _fields(pcap, ["esp.spi", "mip6.mhtype"], *keys, "-d", "udp.port==4191,udpencap")
    sealed_mh = [t for r in sealed if r[0] for t in r[1].split(",") if t]
    assert "5" in sealed_mh and "6" in sealed_mh, sealed_mh
    mhs = _scapy_mobility_headers(pcap)
    assert mhs and all(good for _, _, good in mhs), mhs
    assert [t for t, _, _ in mhs] == mh_types  # both decoders saw the same signalling
    assert all(status == 0 for t, status, _ in mhs if t == 6)


@pytest.mark.parametrize(("firewall", "kind"), [("open", "T-native"), ("stateful-no41", "T-udp")])
def test_protected_run_decrypts_with_the_key_log_and_shows_nothing_without_it(
    make_lab, tmp_path: Path, firewall: str, kind: str
) -> None:
    """Issue 12 (key export): tshark, an independent ESP implementation, opens what the
    daemons sealed with the keys they logged, and verifies every ICV; without the keys the MN's
    access link shows no home-address packet in clear except the RFC 4285 signalling."""
    lab = make_lab(firewall=firewall, start=False)
    keylog = tmp_path / "esp-keys.txt"
    lab.t.esp_keylog = keylog
    pcap = tmp_path / "mn-eth0.pcap"
    capture = LinkCaptures(tmp_path)
    capture.start(lab.t.ns("mn"), "eth0", pcap.stem)
    try:
        status = lab.start()
        assert status["bindings"][0]["path"]["kind"] == kind
        assert runner.ping(lab.t, "cn", HOA, count=5)["received"] >= 4
        assert lab.status("mn")["protection"] == "esp"
    finally:
        capture.stop()
    assert keylog.stat().st_mode & 0o777 == 0o600
    records = keylog.read_text().splitlines()
    assert len(records) >= 4  # both directions, IPv6 and IPv4 records, from both daemons
    fields = ["frame.number", "_ws.malformed", "esp.spi", "esp.icv_good", "icmpv6.type"]
    fields += ["ipv6.src", "ipv6.dst"]
    keys = ["-o", "esp.enable_encryption_decode:TRUE"]
    keys += ["-o", "esp.enable_authentication_check:TRUE"]
    keys += [x for record in records for x in ("-o", f"uat:esp_sa:{record}")]
    opened = [r for r in _fields(pcap, fields, *keys, "-d", "udp.port==4191,udpencap") if r[2]]
    assert len(opened) >= 10, "no ESP captured"
    assert not [r for r in opened if r[1]], "tshark found malformed ESP packets"
    # STUN on UDP 4191 is not ESP; every real ESP frame (top SPI bit) verifies and decodes.
    ours = [r for r in opened if int(r[2].split(",")[0], 16) & 0x8000_0000]
    assert ours and all(r[3].split(",")[0] == "1" for r in ours), "ICV not verified"
    echoes = [r for r in ours if set(r[4].split(",")) & {"128", "129"} and HOA in r[5] + r[6]]
    assert len(echoes) >= 8, "the pings to the home address did not decrypt"
    # Without the keys: any frame with the home address visible must be a Mobility Header.
    shown = ["frame.number", "ipv6.src", "ipv6.dst", "mip6.mhtype"]
    clear = _fields(pcap, shown, "-d", "udp.port==4191,ipv6")
    leaked = [r for r in clear if HOA in (r[1] + "," + r[2]).split(",") and not r[3]]
    assert not leaked, f"home-address packets in clear on the access link: {leaked[:3]}"
