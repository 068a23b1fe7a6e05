"""Per-packet codecs of the data plane (pure): the UDP demultiplexer and the route-optimisation
headers (Home Address option, type 2 routing header) added and removed on the fast path."""
