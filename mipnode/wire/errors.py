"""The one exception untrusted-input parsers may raise."""


class BadPacket(Exception):
    """Bytes from the network that do not form a valid message.

    ``reason`` is a short, stable, snake_case token used as a drop-counter key
    (e.g. ``"truncated"``, ``"bad_checksum"``); ``str(exc)`` may add detail.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
