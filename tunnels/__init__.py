"""Per-packet encapsulation codecs (IPv6-in-IPv6, UDP) and the UDP demultiplexer (pure)."""
