"""Which of a tap pair's two sockets the kernel hands each packet (drivers/rawio.py).

``python tests/netns/tap_lane_probe.py SEND_IF TAP_IF``, run inside a namespace where SEND_IF and
TAP_IF are the two ends of a veth pair: reads hex-encoded IPv6 packets from stdin (one per line),
opens :func:`rawio.open_tap_pair` on TAP_IF, sends each packet out of SEND_IF (so it arrives on
TAP_IF as an incoming packet) and then the same packets out of TAP_IF itself (our own
transmissions), and prints one JSON line: for "in" and "out", the flow labels of the packets
each socket received, in order. A third socket, "all", carries the lane's program on an
ETH_P_ALL socket, which (unlike a socket bound to ETH_P_IPV6) is handed the host's own
transmissions too: it shows the program's own PACKET_OUTGOING clause at work.
"""

from __future__ import annotations

import json
import select
import socket
import sys

from mipnode.drivers import rawio

ETH_P_IPV6, ETH_P_ALL = 0x86DD, 0x0003
BROADCAST = b"\xff" * 6


def drain(sock: socket.socket) -> list[int]:
    labels = []
    while select.select([sock], [], [], 0.3)[0]:
        packet = sock.recv(65535)
        labels.append(int.from_bytes(packet[1:4], "big") & 0xFFFFF)
    return labels


def main() -> None:
    send_if, tap_if = sys.argv[1:3]
    packets = [bytes.fromhex(line) for line in sys.stdin.read().split()]
    tap, lane = rawio.open_tap_pair(tap_if)
    every = rawio.open_tap(tap_if, rawio.tap_program(lane=True), deep=False, protocol=ETH_P_ALL)
    sockets = {"tap": tap, "lane": lane, "all": every}
    print(json.dumps(both_ways(packets, send_if, tap_if, sockets)), flush=True)


def both_ways(
    packets: list[bytes], send_if: str, tap_if: str, sockets: dict[str, socket.socket]
) -> dict[str, dict[str, list[int]]]:
    """Send ``packets`` out of ``send_if`` ("in": they arrive on ``tap_if``), then out of
    ``tap_if`` itself ("out"); the flow labels each of ``sockets`` received, by phase."""
    out: dict[str, dict[str, list[int]]] = {}
    for phase, ifname in (("in", send_if), ("out", tap_if)):
        sender = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        for packet in packets:
            sender.sendto(packet, (ifname, ETH_P_IPV6, 0, 0, BROADCAST))
        sender.close()
        out[phase] = {name: drain(sock) for name, sock in sockets.items()}
    return out


if __name__ == "__main__":
    main()
