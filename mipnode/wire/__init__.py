"""Wire codecs: IPv6, extension headers, Mobility Header (pure; no I/O)."""
