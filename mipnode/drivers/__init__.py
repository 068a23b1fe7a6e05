"""trio drivers: the only code that touches sockets, TUN, netlink, nftables and clocks."""
