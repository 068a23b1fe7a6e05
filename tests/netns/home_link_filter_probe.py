"""Which packets the home link's kernel filter (drivers/home_link.py ``tap_program``) passes.

``python tests/netns/home_link_filter_probe.py SEND_IF TAP_IF ADDRESS``, run inside a
namespace where SEND_IF and TAP_IF are the two ends of a veth pair: reads hex-encoded IPv6
packets from stdin (one per line), opens the filter for the home agent's ``ADDRESS`` on TAP_IF
(on an ETH_P_IPV6 socket as the daemon does, and on an ETH_P_ALL one, which is also handed the
host's own transmissions), sends each packet out of SEND_IF and then out of TAP_IF itself, and
prints one JSON line: for "in" and "out", the flow labels each socket received, in order.
"""

from __future__ import annotations

import json
import sys
from ipaddress import IPv6Address

from tap_lane_probe import ETH_P_ALL, both_ways  # this script's neighbour

from mipnode.drivers import rawio
from mipnode.drivers.home_link import tap_program


def main() -> None:
    send_if, tap_if, address = sys.argv[1:4]
    packets = [bytes.fromhex(line) for line in sys.stdin.read().split()]
    program = tap_program(IPv6Address(address).packed)
    tap = rawio.open_tap(tap_if, program, deep=False)
    every = rawio.open_tap(tap_if, program, deep=False, protocol=ETH_P_ALL)
    print(json.dumps(both_ways(packets, send_if, tap_if, {"tap": tap, "all": every})), flush=True)


if __name__ == "__main__":
    main()
