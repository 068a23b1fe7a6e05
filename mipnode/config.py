"""Configuration files: one TOML file per role, validated before anything starts.

Every problem is reported as ``ConfigError(file, key, problem)`` so the CLI can print one line
(``mipnode: config.toml: ha.home_prefix: not an IPv6 prefix``) and exit with status 2.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any, TypeVar

from mipnode.core.ipv4_networks import MAPPED, mapped
from mipnode.core.nemo import MAX_PREFIXES

DEFAULT_UDP_PORT = 4191  # DSMIPv6-style port (RFC 5555); never 4500 (decoded as ESP-in-UDP)
DEFAULT_TUN_MTU = 1400  # fits IPv6 + UDP + inner IPv6 (88 B) under a 1500-byte access link
DEFAULT_ANNOUNCE_PORT = 4192  # a cluster's announcements on the home link
MAX_MOBILE_NETWORK_PREFIXES = MAX_PREFIXES  # per mobile router
MIN_CLUSTER_KEY = 32  # octets: HMAC-SHA-256's own strength
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


PROTECTIONS = ("esp", "none")  # DESIGN §3: ESP by default, "none" for plain RFC 6275 interop
CIPHERS = {"aes-gcm": 1, "chacha20-poly1305": 2}  # tunnels.esp suites


N = TypeVar("N", IPv4Network, IPv6Network)


class ConfigError(Exception):
    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


@dataclass(frozen=True, slots=True)
class MobileNodeEntry:
    """One MN the HA serves: its home address and its RFC 4285 MN-HA security association;
    for a mobile router, the mobile network prefixes it may register (RFC 3963)."""

    home_address: IPv6Address
    spi: int
    key: bytes = field(repr=False)
    mobile_network_prefixes: tuple[IPv6Network, ...] = ()
    ipv4_home_address: IPv4Address | None = None  # always this one (RFC 5555)
    ipv4_mobile_network_prefixes: tuple[IPv4Network, ...] = ()  # a router's IPv4 networks

    @property
    def networks(self) -> tuple[IPv6Network, ...]:
        """Every network the router may register, IPv4 ones IPv4-mapped (core/ipv4_networks)."""
        return self.mobile_network_prefixes + tuple(map(mapped, self.ipv4_mobile_network_prefixes))


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """``[ha.cluster]``: this node's part in a cluster of home agents on etcd (issue 14)."""

    name: str  # the key prefix /mipnode/<name>/ in etcd: several clusters can share one etcd
    node_id: str
    etcd_endpoints: tuple[str, ...]
    key: bytes = field(repr=False)  # authenticates the announcements on the home link
    home_link: str = ""  # where the home-agent address moves, and announcements are heard
    ipv4_address: IPv4Address | None = None  # held with the address, for T-udp over IPv4
    announce_port: int = DEFAULT_ANNOUNCE_PORT
    etcd_timeout_s: float = 1.0
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    etcd_username: str | None = None
    etcd_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class HaConfig:
    path: str
    address: IPv6Address
    home_prefix: IPv6Network
    udp_ports: tuple[int, ...]
    max_lifetime_s: int
    tun_name: str
    tun_mtu: int
    mobile_nodes: tuple[MobileNodeEntry, ...]
    control_socket: str
    state_dir: str | None
    protection: str = "esp"
    tun_offloads: bool = True
    cluster: ClusterConfig | None = None
    ipv4_home_prefix: IPv4Network | None = None  # IPv4 home addresses to give (RFC 5555)
    metrics_listen: tuple[str, int] | None = None  # Prometheus endpoint (drivers/metrics.py)
    home_link: str | None = None  # the home prefix's link, shared with other hosts

    @property
    def udp_port(self) -> int:
        """The first UDP port (the one T-native checks go to)."""
        return self.udp_ports[0]


@dataclass(frozen=True, slots=True)
class MnConfig:
    path: str
    home_address: IPv6Address
    home_agent: IPv6Address
    home_agent_ipv4: IPv4Address | None
    home_agent_udp_ports: tuple[int, ...]
    spi: int
    key: bytes = field(repr=False)
    lifetime_s: int
    interface: str | None
    tun_name: str
    tun_mtu: int
    paths: tuple[str, ...]
    keepalive_interval_s: float
    control_socket: str
    route_optimization: bool = True
    protection: str = "esp"
    cipher: str = "aes-gcm"
    tun_offloads: bool = True
    mobile_network_prefixes: tuple[IPv6Network, ...] = ()  # a mobile router's (RFC 3963)
    prefix_registration: str = "explicit"  # or "implicit": the BUs name no prefix
    ipv4_home_address: IPv4Address | None = None  # RFC 5555; 0.0.0.0: "auto"
    ipv4_mobile_network_prefixes: tuple[IPv4Network, ...] = ()  # a router's IPv4 networks
    metrics_listen: tuple[str, int] | None = None  # Prometheus endpoint (drivers/metrics.py)

    @property
    def networks(self) -> tuple[IPv6Network, ...]:
        """Every network this router routes, IPv4 ones IPv4-mapped (core/ipv4_networks)."""
        return self.mobile_network_prefixes + tuple(map(mapped, self.ipv4_mobile_network_prefixes))

    @property
    def suite(self) -> int | None:
        """The ESP suite keyed by every registration, or ``None`` without protection."""
        return CIPHERS[self.cipher] if self.protection == "esp" else None

    @property
    def home_agent_udp_port(self) -> int:
        return self.home_agent_udp_ports[0]


_PATH_KINDS = ("T-native", "T-udp")


class _Reader:
    """Typed access to a TOML table that remembers the dotted key for error messages."""

    def __init__(self, file: str, table: dict[str, Any], prefix: str) -> None:
        self.file, self.table, self.prefix = file, table, prefix
        self.used: set[str] = set()

    def _key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self._key(name), problem)

    def raw(self, name: str, default: Any = ..., kind: type | tuple[type, ...] = object) -> Any:
        self.used.add(name)
        if name not in self.table:
            if default is ...:
                raise self.error(name, "missing (required)")
            return default
        value = self.table[name]
        # bool is an int in Python; a TOML `true` is never a valid port, lifetime or interval.
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kind) or (
            isinstance(value, bool) and bool not in kinds and object not in kinds
        ):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(name, f"expected {want}, got {type(value).__name__}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.raw(name, default, str)
        if value not in allowed:
            raise self.error(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def ipv6(self, name: str, default: Any = ...) -> Any:
        value = self.raw(name, default, str)
        if value is None or value is default:
            return value
        try:
            addr = IPv6Address(value)
        except ValueError:
            raise self.error(name, f"not an IPv6 address: {value!r}") from None
        if addr.scope_id is not None:
            raise self.error(name, f"must not carry a zone index: {value}")
        if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
            raise self.error(name, f"must be a unicast address: {value}")
        return addr

    def prefixes(self, name: str, home: IPv6Network) -> tuple[IPv6Network, ...]:
        """A list of IPv6 prefixes (mobile network prefixes): each a network with no host
        bits, of length 1-128, not overlapping ``home`` (the home prefix; a mobile node,
        which does not know it, passes its home address and home agent's as one network:
        neither may lie in a mobile network), none inside another; at most 16."""
        what = "home_prefix" if home.prefixlen < 128 else "the home address"
        out = self._networks(name, IPv6Network, (what, home), MAX_MOBILE_NETWORK_PREFIXES)
        if clash := next((p for p in out if p.overlaps(MAPPED)), None):
            # mipnode holds IPv4 networks as IPv4-mapped prefixes (core/ipv4_networks.py)
            raise self.error(name, f"{clash} overlaps {MAPPED}: list IPv4 networks under ipv4_*")
        return out

    def ipv4_prefixes(
        self, name: str, avoid: IPv4Network | None, ipv6_count: int
    ) -> tuple[IPv4Network, ...]:
        """A list of IPv4 prefixes (a mobile router's IPv4 networks): each with no host bits,
        of length 1-32, not overlapping ``avoid`` (the IPv4 home prefix), none inside another;
        at most 16 together with the ``ipv6_count`` IPv6 ones."""
        around = None if avoid is None else ("ipv4_home_prefix", avoid)
        limit = MAX_MOBILE_NETWORK_PREFIXES - ipv6_count
        return self._networks(name, IPv4Network, around, limit, " in all")

    def _networks(
        self,
        name: str,
        kind: type[N],
        avoid: tuple[str, N] | None,
        limit: int,
        counted: str = "",
    ) -> tuple[N, ...]:
        value = self.raw(name, [], list)
        if len(value) > limit:
            raise self.error(name, f"at most {MAX_MOBILE_NETWORK_PREFIXES} prefixes{counted}")
        family = "IPv6" if kind is IPv6Network else "IPv4"
        out: list[N] = []
        for item in value:
            if not isinstance(item, str):
                raise self.error(name, f"expected prefix strings, got {type(item).__name__}")
            try:
                prefix = kind(item)
            except ValueError as exc:
                raise self.error(name, f"not an {family} prefix: {item!r} ({exc})") from None
            if prefix.prefixlen == 0:
                raise self.error(name, f"{item}: a prefix of length 0 is everything")
            if avoid is not None and prefix.overlaps(avoid[1]):
                raise self.error(name, f"{prefix} overlaps {avoid[0]} {avoid[1]}")
            if clash := next((p for p in out if p.overlaps(prefix)), None):
                raise self.error(name, f"{prefix} overlaps {clash}")
            out.append(prefix)
        return tuple(out)

    def ipv4_prefix(self, name: str) -> IPv4Network | None:
        """An IPv4 prefix with host bits zero, /8 to /30 (addresses to give), or unset."""
        value = self.raw(name, None, str)
        if value is None:
            return None
        try:
            prefix = IPv4Network(value)
        except ValueError:
            raise self.error(name, f"not an IPv4 prefix with host bits zero: {value!r}") from None
        if not 8 <= prefix.prefixlen <= 30:
            raise self.error(name, f"{prefix}: between /8 and /30")
        return prefix

    def listen(self, name: str) -> tuple[str, int] | None:
        """``"127.0.0.1:9464"`` or ``"[::1]:9464"``: an address (never a name) and a port."""
        value = self.raw(name, None, str)
        if value is None:
            return None
        host, sep, port_text = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            address = ip_address(host)
        except ValueError:
            raise self.error(
                name, f"expected ADDRESS:PORT with an IP address, got {value!r}"
            ) from None
        if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise self.error(name, f"expected ADDRESS:PORT with a port 1-65535, got {value!r}")
        return str(address), int(port_text)

    def ipv4(self, name: str) -> IPv4Address | None:
        value = self.raw(name, None, str)
        if value is None:
            return None
        try:
            return IPv4Address(value)
        except ValueError:
            raise self.error(name, f"not an IPv4 address: {value!r}") from None

    def integer(self, name: str, default: Any, lo: int, hi: int) -> int:
        value = self.raw(name, default, int)
        if not lo <= value <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, got {value}")
        return int(value)

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.raw(name, default, (int, float))
        if not lo <= value <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, got {value}")
        return float(value)

    def ifname(self, name: str, default: Any) -> Any:
        value = self.raw(name, default, str)
        if value is None:
            return None
        # Linux dev_valid_name(): 1-15 bytes, not "." or "..", no "/", ":" or whitespace.
        if (
            not 0 < len(value.encode()) < 16
            or value in (".", "..")
            or any(c in "/:" or c.isspace() for c in value)
        ):
            raise self.error(name, f"not a valid interface name: {value!r}")
        return value

    def key(self, name: str) -> bytes:
        value = self.raw(name, ..., str)
        try:
            key = bytes.fromhex(value)
        except ValueError:
            raise self.error(name, "not hex") from None
        # RFC 4285 §5.1: the MN-HA shared key is 16 octets or longer (HMAC-SHA1).
        if len(key) < 16:
            raise self.error(name, f"too short: {len(key)} bytes, need at least 16")
        return key

    def name(self, name: str, default: Any = ...) -> str:
        """A name that goes into etcd keys and announcements: 1-64 of [A-Za-z0-9._-]."""
        value: str = self.raw(name, default, str)
        if not 0 < len(value) <= 64 or not set(value) <= _NAME_CHARS:
            raise self.error(name, f"1 to 64 of letters, digits, '.', '_', '-': {value!r}")
        return value

    def path(self, name: str) -> str | None:
        value = self.raw(name, None, str)
        if value is not None and not value.startswith("/"):
            raise self.error(name, f"must be an absolute file path: {value!r}")
        return value

    def spi(self, name: str) -> int:
        # RFC 4285 §5: SPI values 0-255 are reserved.
        return self.integer(name, ..., 256, 2**32 - 1)

    def socket_name(self, name: str, default: str) -> str:
        value: str = self.raw(name, default, str)
        # sun_path holds 108 bytes: a path and its closing NUL, or NUL + an abstract name ("@").
        limit = 108 if value.startswith("@") else 107
        if value in ("", "@") or len(value.encode()) > limit:
            raise self.error(name, f"not a Unix socket path or @abstract name: {value!r}")
        return value

    def state_dir(self, name: str) -> str | None:
        value = self.raw(name, None, str)
        if value is None:
            return None
        # The daemon may run with any working directory (systemd: /), so only absolute paths.
        if not value.startswith("/") or "\0" in value:
            raise self.error(name, f"must be an absolute directory path: {value!r}")
        return value

    def ports(self, one: str, many: str) -> tuple[int, ...]:
        """``one = 4191`` or ``many = [4191, 443]`` (not both); default (4191,). Never 4500,
        which tools decode as ESP-in-UDP (RFC 3948)."""
        if one in self.table and many in self.table:
            raise self.error(many, f"set either {self._key(one)} or {self._key(many)}, not both")
        if many in self.table:
            raw = self.raw(many, ..., list)
            if not raw or len(raw) > 8:
                raise self.error(many, "list 1 to 8 ports")
            ports = []
            for i, port in enumerate(raw):
                if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                    raise self.error(f"{many}[{i}]", f"not a port number: {port!r}")
                ports.append(port)
            if len(set(ports)) != len(ports):
                raise self.error(many, "a port is listed twice")
            name = many
        else:
            ports = [self.integer(one, DEFAULT_UDP_PORT, 1, 65535)]
            name = one
        if 4500 in ports:
            raise self.error(name, "4500 is ESP-in-UDP (RFC 3948); pick another port")
        return tuple(ports)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def check_daemon_files(path: str, key: str, state_dir: str | None = None) -> None:
    """What a daemon checks before it trusts its files, as ssh does for its keys: the
    configuration file ``path`` holds keys (``key`` names them in the error), so it must belong
    to the daemon's user or root and be closed to group and others; ``state_dir``, whose file
    decides the bindings restored, must belong to the daemon's user and be writable by no one
    else.

    Raises:
        ConfigError: one line naming the file, the fix, and what is wrong.
    """
    euid = os.geteuid()
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read: {exc.strerror}") from None
    if st.st_uid not in (euid, 0):
        raise ConfigError(
            path, key, f"holds keys but belongs to uid {st.st_uid}, not to uid {euid} or root"
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            path,
            key,
            f"holds keys but is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"chmod 600 {path}",
        )
    if state_dir is None:
        return
    try:
        st = os.stat(state_dir)
    except FileNotFoundError:
        return  # created mode 0700 by the daemon
    except OSError as exc:
        raise ConfigError(path, "ha.state_dir", f"{state_dir}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(path, "ha.state_dir", f"{state_dir} is not a directory")
    if st.st_uid != euid:
        raise ConfigError(
            path,
            "ha.state_dir",
            f"{state_dir} belongs to uid {st.st_uid}, not to the daemon's user (uid {euid})",
        )
    if st.st_mode & 0o022:
        raise ConfigError(
            path,
            "ha.state_dir",
            f"{state_dir} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 700 {state_dir}",
        )


def _load(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "-", f"not valid TOML: {exc}") from None


def _section(file: str, doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise ConfigError(file, name, "missing [" + name + "] table")
    return table


def _top_level(file: str, doc: dict[str, Any], allowed: set[str]) -> None:
    for key in doc:
        if key not in allowed:
            raise ConfigError(file, key, "unknown key")


def _static_ipv4(e: _Reader, v4: IPv4Address, prefix: IPv4Network | None) -> None:
    """A mobile node's own IPv4 home address: a host address of [ha] ipv4_home_prefix."""
    if prefix is None or v4 not in prefix:
        raise e.error("ipv4_home_address", f"{v4} is not inside [ha] ipv4_home_prefix")
    if v4 in (prefix.network_address, prefix.broadcast_address):
        raise e.error("ipv4_home_address", f"{v4} is the network or broadcast address of {prefix}")


def load_ha_config(path: str) -> HaConfig:
    doc = _load(path)
    _top_level(path, doc, {"ha", "mobile_node"})
    table = _section(path, doc, "ha")
    r = _Reader(path, {k: v for k, v in table.items() if k != "cluster"}, "ha")
    address = r.ipv6("address")
    prefix_text = r.raw("home_prefix", ..., str)
    try:
        home_prefix = IPv6Network(prefix_text, strict=True)
    except ValueError:
        raise r.error("home_prefix", f"not an IPv6 prefix: {prefix_text!r}") from None
    if home_prefix.network_address.scope_id is not None:
        raise r.error("home_prefix", f"must not carry a zone index: {prefix_text}")
    if home_prefix.prefixlen > 120:
        raise r.error("home_prefix", "prefix too long (at most /120)")
    if address not in home_prefix:
        raise r.error("address", f"{address} is not inside home_prefix {home_prefix}")
    cfg_udp = r.ports("udp_port", "udp_ports")
    max_lifetime = r.integer("max_lifetime_s", 3600, 4, 262140)
    tun_name = r.ifname("tun_name", "mip-ha0")
    tun_mtu = r.integer("tun_mtu", DEFAULT_TUN_MTU, 1280, 65535)
    tun_offloads = r.raw("tun_offloads", True, bool)
    control = r.socket_name("control_socket", "@mipnode-ha")
    metrics = r.listen("metrics_listen")
    state_dir = r.state_dir("state_dir")
    protection = r.choice("protection", "esp", PROTECTIONS)
    ipv4_home_prefix = r.ipv4_prefix("ipv4_home_prefix")
    home_link = r.ifname("home_link", None)
    r.finish()
    cluster = _cluster(path, table.get("cluster"), cfg_udp) if "cluster" in table else None
    if cluster is not None and state_dir is not None:
        raise r.error("state_dir", "not with [ha.cluster]: etcd holds the binding cache")
    if cluster is not None and home_link is not None:
        raise r.error("home_link", "not with [ha.cluster] yet: a home link has one home agent")
    if home_link is not None and home_link == tun_name:
        raise r.error("home_link", f"is the home agent's own TUN ({tun_name})")
    if home_link is not None and home_prefix.prefixlen < 64:
        # Interface identifiers are the low 64 bits: two home addresses of a shorter prefix
        # may share the link-local address a BU with the L flag has the HA defend.
        raise r.error(
            "home_link", f"needs a home_prefix of /64 or longer, not /{home_prefix.prefixlen}"
        )

    entries = doc.get("mobile_node", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(path, "mobile_node", "need at least one [[mobile_node]] entry")
    mns: list[MobileNodeEntry] = []
    seen_spi: set[int] = set()
    seen_hoa: set[IPv6Address] = set()
    seen_prefixes: dict[IPv6Network, IPv6Address] = {}  # one router per prefix
    seen_v4: set[IPv4Address] = set()
    seen_v4_prefixes: dict[IPv4Network, IPv6Address] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(path, f"mobile_node[{i}]", "must be a table")
        e = _Reader(path, entry, f"mobile_node[{i}]")
        hoa = e.ipv6("home_address")
        if hoa not in home_prefix:
            raise e.error("home_address", f"{hoa} is not inside home_prefix {home_prefix}")
        if hoa == address:
            raise e.error("home_address", "equals the home agent's own address")
        spi = e.spi("spi")
        key = e.key("key")
        prefixes = e.prefixes("mobile_network_prefixes", home_prefix)
        prefixes4 = e.ipv4_prefixes("ipv4_mobile_network_prefixes", ipv4_home_prefix, len(prefixes))
        if prefixes4 and ipv4_home_prefix is None:
            # The router needs an IPv4 home address: its own IPv4 packets use it, and the IPv4
            # default route into its tunnel comes with it.
            raise e.error("ipv4_mobile_network_prefixes", "need [ha] ipv4_home_prefix as well")
        v4 = e.ipv4("ipv4_home_address")
        if v4 is not None:
            _static_ipv4(e, v4, ipv4_home_prefix)
        e.finish()
        if v4 is not None and v4 in seen_v4:
            raise e.error("ipv4_home_address", f"{v4} listed twice")
        if v4 is not None:
            seen_v4.add(v4)
        for prefix in prefixes:
            if clash := next((p for p in seen_prefixes if p.overlaps(prefix)), None):
                raise e.error(
                    "mobile_network_prefixes",
                    f"{prefix} overlaps {clash} of mobile node {seen_prefixes[clash]}",
                )
            seen_prefixes[prefix] = hoa
        for prefix4 in prefixes4:
            if clash4 := next((p for p in seen_v4_prefixes if p.overlaps(prefix4)), None):
                raise e.error(
                    "ipv4_mobile_network_prefixes",
                    f"{prefix4} overlaps {clash4} of mobile node {seen_v4_prefixes[clash4]}",
                )
            seen_v4_prefixes[prefix4] = hoa
        if spi in seen_spi:
            raise e.error("spi", f"SPI {spi} used twice")
        if hoa in seen_hoa:
            raise e.error("home_address", f"{hoa} listed twice")
        seen_spi.add(spi)
        seen_hoa.add(hoa)
        mns.append(MobileNodeEntry(hoa, spi, key, prefixes, v4, prefixes4))
    return HaConfig(
        path=path,
        address=address,
        home_prefix=home_prefix,
        udp_ports=cfg_udp,
        max_lifetime_s=max_lifetime,
        tun_name=tun_name,
        tun_mtu=tun_mtu,
        mobile_nodes=tuple(mns),
        control_socket=control,
        state_dir=state_dir,
        protection=protection,
        tun_offloads=tun_offloads,
        cluster=cluster,
        ipv4_home_prefix=ipv4_home_prefix,
        metrics_listen=metrics,
        home_link=home_link,
    )


def _cluster(file: str, table: object, udp_ports: tuple[int, ...]) -> ClusterConfig:
    if not isinstance(table, dict):
        raise ConfigError(file, "ha.cluster", "must be a table")
    c = _Reader(file, table, "ha.cluster")
    name = c.name("name", "mipnode")
    node_id = c.name("node_id")
    endpoints = c.raw("etcd_endpoints", ..., list)
    if not endpoints or len(endpoints) > 16:
        raise c.error("etcd_endpoints", "list 1 to 16 URLs")
    for i, url in enumerate(endpoints):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise c.error(f"etcd_endpoints[{i}]", f"not an http:// or https:// URL: {url!r}")
    key = c.key("key")
    if len(key) < MIN_CLUSTER_KEY:
        raise c.error("key", f"too short: {len(key)} bytes, need at least {MIN_CLUSTER_KEY}")
    home_link = c.ifname("home_link", ...)
    ipv4_address = c.ipv4("ipv4_address")
    if ipv4_address is not None and not ipv4_address.is_global and not ipv4_address.is_private:
        raise c.error("ipv4_address", f"must be a unicast address: {ipv4_address}")
    announce_port = c.integer("announce_port", DEFAULT_ANNOUNCE_PORT, 1, 65535)
    if announce_port in udp_ports:
        raise c.error("announce_port", f"{announce_port} is one of ha.udp_ports")
    timeout = c.number("etcd_timeout_s", 1.0, 0.1, 30.0)
    ca, cert, cert_key = c.path("etcd_ca_file"), c.path("etcd_cert_file"), c.path("etcd_key_file")
    if (cert is None) != (cert_key is None):
        raise c.error("etcd_cert_file", "set etcd_cert_file and etcd_key_file together")
    if (ca or cert) and not all(u.startswith("https://") for u in endpoints):
        raise c.error("etcd_endpoints", "TLS files are set: every endpoint must be https://")
    username = c.raw("etcd_username", None, str)
    password = c.raw("etcd_password", None, str)
    if (username is None) != (password is None):
        raise c.error("etcd_username", "set etcd_username and etcd_password together")
    c.finish()
    return ClusterConfig(
        name=name,
        node_id=node_id,
        etcd_endpoints=tuple(endpoints),
        key=key,
        home_link=home_link,
        ipv4_address=ipv4_address,
        announce_port=announce_port,
        etcd_timeout_s=timeout,
        etcd_ca_file=ca,
        etcd_cert_file=cert,
        etcd_key_file=cert_key,
        etcd_username=username,
        etcd_password=password,
    )


def load_mn_config(path: str) -> MnConfig:
    doc = _load(path)
    _top_level(path, doc, {"mn"})
    r = _Reader(path, _section(path, doc, "mn"), "mn")
    hoa = r.ipv6("home_address")
    ha = r.ipv6("home_agent")
    if hoa == ha:
        raise r.error("home_agent", "equals home_address")
    ha4 = r.ipv4("home_agent_ipv4")
    ports = r.ports("home_agent_udp_port", "home_agent_udp_ports")
    spi = r.spi("spi")
    key = r.key("key")
    # RFC 6275 §6.1.7: lifetime in 4 s units, at most 65535 units.
    lifetime = r.integer("lifetime_s", 600, 8, 262140)
    interface = r.ifname("interface", None)
    tun_name = r.ifname("tun_name", "mip0")
    if interface is not None and interface == tun_name:
        raise r.error("interface", f"{interface!r} is the TUN device itself (tun_name)")
    tun_mtu = r.integer("tun_mtu", DEFAULT_TUN_MTU, 1280, 65535)
    tun_offloads = r.raw("tun_offloads", True, bool)
    paths_raw = r.raw("paths", list(_PATH_KINDS), list)
    for p in paths_raw:
        if p not in _PATH_KINDS:
            raise r.error("paths", f"unknown path kind {p!r} (known: {', '.join(_PATH_KINDS)})")
    if not paths_raw:
        raise r.error("paths", "must name at least one path kind")
    if len(set(paths_raw)) != len(paths_raw):
        raise r.error("paths", "a path kind is listed twice")
    keepalive = r.number("keepalive_interval_s", 15.0, 1.0, 300.0)
    control = r.socket_name("control_socket", "@mipnode-mn")
    metrics = r.listen("metrics_listen")
    route_optimization = r.raw("route_optimization", True, bool)
    protection = r.choice("protection", "esp", PROTECTIONS)
    cipher = r.choice("cipher", "aes-gcm", tuple(CIPHERS))
    prefixes = r.prefixes("mobile_network_prefixes", IPv6Network(hoa))
    if clash := next((p for p in prefixes if ha in p), None):
        raise r.error("mobile_network_prefixes", f"{clash} holds the home agent {ha}")
    registration = r.choice("prefix_registration", "explicit", ("explicit", "implicit"))
    prefixes4 = r.ipv4_prefixes("ipv4_mobile_network_prefixes", None, len(prefixes))
    v4_text = r.raw("ipv4_home_address", None, str)
    ipv4_home = None
    if v4_text is not None:
        try:
            ipv4_home = IPv4Address("0.0.0.0" if v4_text == "auto" else v4_text)
        except ValueError:
            raise r.error(
                "ipv4_home_address", f'"auto" or an IPv4 address, got {v4_text!r}'
            ) from None
        if v4_text != "auto" and (ipv4_home.is_unspecified or ipv4_home.is_multicast):
            raise r.error("ipv4_home_address", f"{ipv4_home} is no unicast address")
    if registration == "implicit" and not (prefixes or prefixes4):
        raise r.error("prefix_registration", "only with mobile_network_prefixes")
    fixed = ipv4_home if v4_text not in (None, "auto") else None
    home4 = next((p for p in prefixes4 if fixed in p), None) if fixed is not None else None
    if home4 is not None:
        raise r.error("ipv4_home_address", f"{ipv4_home} lies in its own mobile network {home4}")
    if ha4 is not None and (clash4 := next((p for p in prefixes4 if ha4 in p), None)):
        raise r.error("ipv4_mobile_network_prefixes", f"{clash4} holds the home agent {ha4}")
    if prefixes4 and ipv4_home is None:
        # The IPv4 default route into the tunnel comes with the IPv4 home address, and the
        # router's own IPv4 packets need that address as their source.
        raise r.error("ipv4_mobile_network_prefixes", "need ipv4_home_address as well")
    r.finish()
    return MnConfig(
        path=path,
        home_address=hoa,
        home_agent=ha,
        home_agent_ipv4=ha4,
        home_agent_udp_ports=ports,
        spi=spi,
        key=key,
        lifetime_s=lifetime,
        interface=interface,
        tun_name=tun_name,
        tun_mtu=tun_mtu,
        paths=tuple(paths_raw),
        keepalive_interval_s=keepalive,
        control_socket=control,
        route_optimization=route_optimization,
        protection=protection,
        cipher=cipher,
        tun_offloads=tun_offloads,
        mobile_network_prefixes=prefixes,
        prefix_registration=registration,
        ipv4_home_address=ipv4_home,
        ipv4_mobile_network_prefixes=prefixes4,
        metrics_listen=metrics,
    )


@dataclass(frozen=True, slots=True)
class CnConfig:
    path: str
    addresses: tuple[IPv6Address, ...]
    interface: str | None
    tun_name: str
    tun_mtu: int
    max_lifetime_s: int
    control_socket: str
    tun_offloads: bool = True
    metrics_listen: tuple[str, int] | None = None  # Prometheus endpoint (drivers/metrics.py)


def load_cn_config(path: str) -> CnConfig:
    doc = _load(path)
    _top_level(path, doc, {"cn"})
    r = _Reader(path, _section(path, doc, "cn"), "cn")
    raw_addresses = r.raw("addresses", [], list)
    addresses: list[IPv6Address] = []
    for i, text in enumerate(raw_addresses):
        if not isinstance(text, str):
            raise r.error(f"addresses[{i}]", f"expected str, got {type(text).__name__}")
        try:
            addr = IPv6Address(text)
        except ValueError:
            raise r.error(f"addresses[{i}]", f"not an IPv6 address: {text!r}") from None
        if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_link_local:
            raise r.error(f"addresses[{i}]", f"must be a unicast routable address: {text}")
        addresses.append(addr)
    interface = r.ifname("interface", None)
    tun_name = r.ifname("tun_name", "mip-cn0")
    tun_mtu = r.integer("tun_mtu", DEFAULT_TUN_MTU, 1280, 65535)
    tun_offloads = r.raw("tun_offloads", True, bool)
    # RFC 6275 §12: MAX_RR_BINDING_LIFETIME 420 s caps every return-routability binding.
    max_lifetime = r.integer("max_lifetime_s", 420, 4, 420)
    control = r.socket_name("control_socket", "@mipnode-cn")
    metrics = r.listen("metrics_listen")
    r.finish()
    return CnConfig(
        path=path,
        addresses=tuple(addresses),
        interface=interface,
        tun_name=tun_name,
        tun_mtu=tun_mtu,
        max_lifetime_s=max_lifetime,
        control_socket=control,
        tun_offloads=tun_offloads,
        metrics_listen=metrics,
    )
