"""mipnode: a user-space Mobile IPv6 stack with M-ICE-style firewall traversal."""

__version__ = "0.1.0"
