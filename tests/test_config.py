"""The configuration loader: the shipped examples load, and every kind of mistake is reported as
one ConfigError naming the file, the dotted key and the problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from mipnode.config import (
    DEFAULT_TUN_MTU,
    DEFAULT_UDP_PORT,
    ClusterConfig,
    CnConfig,
    ConfigError,
    HaConfig,
    MnConfig,
    MobileNodeEntry,
    load_ha_config,
    load_mn_config,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY_HEX = "00112233445566778899aabbccddeeff00112233"  # 20 bytes
Doc = dict[str, Any]


# -- a tiny TOML writer, so each test can start from a valid document and break one thing ------
def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(doc: Doc) -> str:
    lines: list[str] = []
    for key, value in doc.items():  # plain values first: they belong to the root table
        if not isinstance(value, dict) and not (
            isinstance(value, list) and value and all(isinstance(x, dict) for x in value)
        ):
            lines.append(f"{json.dumps(key)} = {_value(value)}")
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for entry in value:
                lines.append(f"[[{key}]]")
                lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def ha_doc() -> Doc:
    return {
        "ha": {"address": "2001:db8:1::1", "home_prefix": "2001:db8:1::/64"},
        "mobile_node": [
            {"home_address": "2001:db8:1::100", "spi": 1000, "key": KEY_HEX},
            {"home_address": "2001:db8:1::101", "spi": 1001, "key": KEY_HEX[::-1]},
        ],
    }


def mn_doc() -> Doc:
    return {
        "mn": {
            "home_address": "2001:db8:1::100",
            "home_agent": "2001:db8:1::1",
            "spi": 1000,
            "key": KEY_HEX,
        }
    }


@pytest.fixture
def write(tmp_path: Path) -> Callable[[Doc | str | bytes], str]:
    counter = iter(range(1000))

    def _write(doc: Doc | str | bytes) -> str:
        path = tmp_path / f"config-{next(counter)}.toml"
        if isinstance(doc, bytes):
            path.write_bytes(doc)
        else:
            path.write_text(doc if isinstance(doc, str) else to_toml(doc))
        return str(path)

    return _write


Writer = Callable[[Doc | str | bytes], str]


def ha_error(write: Writer, doc: Doc | str | bytes) -> tuple[str, ConfigError]:
    path = write(doc)
    with pytest.raises(ConfigError) as info:
        load_ha_config(path)
    assert info.value.file == path
    assert str(info.value) == f"{path}: {info.value.key}: {info.value.problem}"
    assert "\n" not in str(info.value)
    return path, info.value


def mn_error(write: Writer, doc: Doc | str | bytes) -> tuple[str, ConfigError]:
    path = write(doc)
    with pytest.raises(ConfigError) as info:
        load_mn_config(path)
    assert info.value.file == path
    assert str(info.value) == f"{path}: {info.value.key}: {info.value.problem}"
    assert "\n" not in str(info.value)
    return path, info.value


def with_ha(**changes: Any) -> Doc:
    doc = ha_doc()
    for k, v in changes.items():
        if v is None:
            del doc["ha"][k]
        else:
            doc["ha"][k] = v
    return doc


def with_mn(**changes: Any) -> Doc:
    doc = mn_doc()
    for k, v in changes.items():
        if v is None:
            del doc["mn"][k]
        else:
            doc["mn"][k] = v
    return doc


def with_entry(index: int, **changes: Any) -> Doc:
    doc = ha_doc()
    for k, v in changes.items():
        if v is None:
            del doc["mobile_node"][index][k]
        else:
            doc["mobile_node"][index][k] = v
    return doc


# -- the shipped examples ------------------------------------------------------------------------
def test_example_ha_loads() -> None:
    path = str(EXAMPLES / "ha.toml")
    cfg = load_ha_config(path)
    assert isinstance(cfg, HaConfig)
    assert cfg.path == path
    assert cfg.address == IPv6Address("2001:db8:1::1")
    assert cfg.home_prefix == IPv6Network("2001:db8:1::/64")
    assert cfg.udp_port == DEFAULT_UDP_PORT == 4191
    assert cfg.max_lifetime_s == 3600
    assert (cfg.tun_name, cfg.tun_mtu) == ("mip-ha0", DEFAULT_TUN_MTU)
    assert cfg.control_socket == "@mipnode-ha"
    assert cfg.state_dir == "/var/lib/mipnode-ha"  # matches StateDirectory= in the unit
    assert cfg.mobile_nodes == (
        MobileNodeEntry(IPv6Address("2001:db8:1::100"), 1000, bytes.fromhex(KEY_HEX)),
        MobileNodeEntry(
            IPv6Address("2001:db8:1::101"),
            1001,
            bytes.fromhex("ffeeddccbbaa99887766554433221100ffeeddcc"),
            (IPv6Network("2001:db8:aaaa::/48"),),
        ),
    )


def test_example_mn_loads() -> None:
    path = str(EXAMPLES / "mn.toml")
    cfg = load_mn_config(path)
    assert isinstance(cfg, MnConfig)
    assert cfg.path == path
    assert cfg.home_address == IPv6Address("2001:db8:1::100")
    assert cfg.home_agent == IPv6Address("2001:db8:1::1")
    assert cfg.home_agent_ipv4 == IPv4Address("203.0.113.2")
    assert cfg.home_agent_udp_port == 4191
    assert (cfg.spi, cfg.key) == (1000, bytes.fromhex(KEY_HEX))
    assert cfg.lifetime_s == 600
    assert cfg.interface is None
    assert (cfg.tun_name, cfg.tun_mtu) == ("mip0", 1400)
    assert cfg.paths == ("T-native", "T-udp")
    assert cfg.keepalive_interval_s == 15.0
    assert cfg.control_socket == "@mipnode-mn"


def test_examples_pair_up() -> None:
    """The MN example registers with the HA example: same HA address, HoA, SPI, key, port."""
    ha = load_ha_config(str(EXAMPLES / "ha.toml"))
    mn = load_mn_config(str(EXAMPLES / "mn.toml"))
    assert mn.home_agent == ha.address
    assert mn.home_agent_udp_port == ha.udp_port
    assert MobileNodeEntry(mn.home_address, mn.spi, mn.key) in ha.mobile_nodes
    router = load_mn_config(str(EXAMPLES / "mobile-router.toml"))
    entry = next(m for m in ha.mobile_nodes if m.home_address == router.home_address)
    assert (entry.spi, entry.key) == (router.spi, router.key)
    assert all(
        any(p.subnet_of(q) for q in entry.mobile_network_prefixes)
        for p in router.mobile_network_prefixes
    )
    assert router.prefix_registration == "explicit"


def test_the_dual_stack_example_is_the_mn_example_with_an_ipv4_home_address(
    write: Writer,
) -> None:
    """examples/dual-stack-mn.toml pairs with examples/ha.toml once ipv4_home_prefix is set
    there (the line it shows commented out)."""
    dual = load_mn_config(str(EXAMPLES / "dual-stack-mn.toml"))
    mn = load_mn_config(str(EXAMPLES / "mn.toml"))
    assert dual.ipv4_home_address == IPv4Address("0.0.0.0") and dual.protection == "esp"
    assert (dual.home_address, dual.home_agent, dual.spi, dual.key) == (
        mn.home_address,
        mn.home_agent,
        mn.spi,
        mn.key,
    )
    text = (EXAMPLES / "ha.toml").read_text()
    assert '# ipv4_home_prefix = "192.0.2.0/24"' in text
    ha = load_ha_config(write(text.replace("# ipv4_home_prefix", "ipv4_home_prefix")))
    assert ha.ipv4_home_prefix is not None
    assert MobileNodeEntry(dual.home_address, dual.spi, dual.key) in ha.mobile_nodes


def test_examples_show_every_key_with_its_default(write: Writer) -> None:
    """Each example mentions every key it may hold, and commenting every optional key out
    gives the same configuration: the values shown are the defaults."""
    optional_ha = ["udp_ports", "max_lifetime_s", "tun_name", "tun_mtu", "control_socket"]
    optional_mn = [
        "home_agent_udp_ports",
        "lifetime_s",
        "tun_name",
        "tun_mtu",
        "paths",
        "keepalive_interval_s",
        "control_socket",
    ]
    for name, optional, also, load in (
        (
            "ha.toml",
            optional_ha,
            ["state_dir", "address", "home_prefix", "home_address", "spi", "key"],
            load_ha_config,
        ),
        (
            "mn.toml",
            optional_mn,
            ["interface", "home_agent_ipv4", "home_address", "home_agent", "spi", "key"],
            load_mn_config,
        ),
    ):
        text = (EXAMPLES / name).read_text()
        for key in optional + also:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, (name, key)
        stripped = "".join(
            f"# {line}" if line.split("=")[0].strip() in optional else line
            for line in text.splitlines(keepends=True)
        )
        full = load(str(EXAMPLES / name))
        bare = load(write(stripped))
        for key in optional:
            assert getattr(bare, key) == getattr(full, key), (name, key)


def test_minimal_configs_get_the_defaults(write: Writer) -> None:
    ha = load_ha_config(write(ha_doc()))
    assert (
        ha.udp_port,
        ha.max_lifetime_s,
        ha.tun_name,
        ha.tun_mtu,
        ha.control_socket,
        ha.state_dir,
    ) == (4191, 3600, "mip-ha0", 1400, "@mipnode-ha", None)
    assert [m.spi for m in ha.mobile_nodes] == [1000, 1001]
    mn = load_mn_config(write(mn_doc()))
    assert (
        mn.home_agent_ipv4,
        mn.home_agent_udp_port,
        mn.lifetime_s,
        mn.interface,
        mn.tun_name,
        mn.tun_mtu,
        mn.paths,
        mn.keepalive_interval_s,
        mn.control_socket,
    ) == (None, 4191, 600, None, "mip0", 1400, ("T-native", "T-udp"), 15.0, "@mipnode-mn")


def test_all_optional_keys_are_accepted(write: Writer) -> None:
    ha = load_ha_config(
        write(
            with_ha(
                udp_port=5555,
                max_lifetime_s=4,
                tun_name="ha-tun",
                tun_mtu=1280,
                control_socket="/run/mipnode/ha.sock",
                state_dir="/var/lib/mipnode-ha",
            )
        )
    )
    assert (
        ha.udp_port,
        ha.max_lifetime_s,
        ha.tun_name,
        ha.tun_mtu,
        ha.control_socket,
        ha.state_dir,
    ) == (5555, 4, "ha-tun", 1280, "/run/mipnode/ha.sock", "/var/lib/mipnode-ha")
    mn = load_mn_config(
        write(
            with_mn(
                home_agent_ipv4="192.0.2.1",
                home_agent_udp_port=5555,
                lifetime_s=262140,
                interface="wlan0",
                tun_name="t0",
                tun_mtu=9000,
                paths=["T-udp"],
                keepalive_interval_s=2.5,
                control_socket="@mn-test",
            )
        )
    )
    assert (
        mn.home_agent_ipv4,
        mn.home_agent_udp_port,
        mn.lifetime_s,
        mn.interface,
        mn.tun_name,
        mn.tun_mtu,
        mn.paths,
        mn.keepalive_interval_s,
        mn.control_socket,
    ) == (IPv4Address("192.0.2.1"), 5555, 262140, "wlan0", "t0", 9000, ("T-udp",), 2.5, "@mn-test")
    # An int is a fine number of seconds.
    assert load_mn_config(write(with_mn(keepalive_interval_s=300))).keepalive_interval_s == 300.0


# -- the file itself -----------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    for load in (load_ha_config, load_mn_config):
        with pytest.raises(ConfigError) as info:
            load(path)
        assert (info.value.file, info.value.key) == (path, "-")
        assert info.value.problem == "cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_ha_config(str(tmp_path))
    assert (info.value.file, info.value.key) == (str(tmp_path), "-")
    assert info.value.problem.startswith("cannot read: ")


# An unreadable file is covered by tests/test_cli.py, which reads a root-only config as user
# nobody (a direct test here could not fail as root, the CI user).


def test_bad_toml(write: Writer) -> None:
    _, err = ha_error(write, '[ha]\naddress = "2001:db8:1::1\n')
    assert err.key == "-"
    assert err.problem.startswith("not valid TOML: ")
    assert "line 2" in err.problem
    _, err = mn_error(write, "[mn]\nspi = \n")
    assert err.key == "-" and err.problem.startswith("not valid TOML: ")
    # A key given twice is invalid TOML, not a silent override.
    _, err = mn_error(write, "[mn]\nspi = 1000\nspi = 1001\n")
    assert err.key == "-" and err.problem.startswith("not valid TOML: ")


def test_not_utf8(write: Writer) -> None:
    _, err = mn_error(write, b'[mn]\nhome_address = "\xff"\n')
    assert err.key == "-" and err.problem.startswith("not valid TOML: ")


def test_empty_file(write: Writer) -> None:
    _, err = ha_error(write, "")
    assert (err.key, err.problem) == ("ha", "missing [ha] table")
    _, err = mn_error(write, "")
    assert (err.key, err.problem) == ("mn", "missing [mn] table")


def test_role_table_of_the_wrong_role(write: Writer) -> None:
    """An MN file given to `mipnode ha`: its [mn] table is an unknown key there."""
    _, err = ha_error(write, (EXAMPLES / "mn.toml").read_text())
    assert (err.key, err.problem) == ("mn", "unknown key")
    _, err = mn_error(write, (EXAMPLES / "ha.toml").read_text())
    assert (err.key, err.problem) == ("ha", "unknown key")


# -- required keys -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["address", "home_prefix"])
def test_ha_missing_required_key(write: Writer, key: str) -> None:
    _, err = ha_error(write, with_ha(**{key: None}))
    assert (err.key, err.problem) == (f"ha.{key}", "missing (required)")


@pytest.mark.parametrize("key", ["home_address", "spi", "key"])
def test_mobile_node_missing_required_key(write: Writer, key: str) -> None:
    _, err = ha_error(write, with_entry(1, **{key: None}))
    assert (err.key, err.problem) == (f"mobile_node[1].{key}", "missing (required)")


@pytest.mark.parametrize("key", ["home_address", "home_agent", "spi", "key"])
def test_mn_missing_required_key(write: Writer, key: str) -> None:
    _, err = mn_error(write, with_mn(**{key: None}))
    assert (err.key, err.problem) == (f"mn.{key}", "missing (required)")


def test_ha_needs_a_mobile_node(write: Writer) -> None:
    doc = ha_doc()
    del doc["mobile_node"]
    _, err = ha_error(write, doc)
    assert (err.key, err.problem) == ("mobile_node", "need at least one [[mobile_node]] entry")
    # [mobile_node] (one bracket pair) is a table, not the array of tables the HA wants.
    doc["mobile_node"] = {"home_address": "2001:db8:1::100", "spi": 1000, "key": KEY_HEX}
    _, err = ha_error(write, doc)
    assert (err.key, err.problem) == ("mobile_node", "need at least one [[mobile_node]] entry")


def test_mobile_node_entry_must_be_a_table(write: Writer) -> None:
    text = "mobile_node = [1, 2]\n" + to_toml({"ha": ha_doc()["ha"]})
    _, err = ha_error(write, text)
    assert (err.key, err.problem) == ("mobile_node[0]", "must be a table")


def test_role_table_must_be_a_table(write: Writer) -> None:
    _, err = mn_error(write, 'mn = "yes"\n')
    assert (err.key, err.problem) == ("mn", "missing [mn] table")


# -- unknown keys --------------------------------------------------------------------------------
def test_unknown_top_level_key(write: Writer) -> None:
    doc = ha_doc()
    doc["debug"] = True
    _, err = ha_error(write, doc)
    assert (err.key, err.problem) == ("debug", "unknown key")
    doc = mn_doc()
    doc["home_agent"] = {"address": "2001:db8:1::1"}
    _, err = mn_error(write, doc)
    assert (err.key, err.problem) == ("home_agent", "unknown key")


def test_unknown_key_in_a_table(write: Writer) -> None:
    _, err = ha_error(write, with_ha(udp_prot=4191))
    assert (err.key, err.problem) == ("ha.udp_prot", "unknown key")
    _, err = ha_error(write, with_entry(1, lifetime_s=60))
    assert (err.key, err.problem) == ("mobile_node[1].lifetime_s", "unknown key")
    _, err = mn_error(write, with_mn(lifetime=600))
    assert (err.key, err.problem) == ("mn.lifetime", "unknown key")
    # An MN-only key in the HA table, and the other way round.
    _, err = ha_error(write, with_ha(keepalive_interval_s=5))
    assert (err.key, err.problem) == ("ha.keepalive_interval_s", "unknown key")
    _, err = mn_error(write, with_mn(state_dir="/tmp"))
    assert (err.key, err.problem) == ("mn.state_dir", "unknown key")


# -- types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("udp_port", "4191", "expected int, got str"),
        ("udp_port", True, "expected int, got bool"),
        ("udp_port", 4191.0, "expected int, got float"),
        ("max_lifetime_s", False, "expected int, got bool"),
        ("tun_mtu", True, "expected int, got bool"),
        ("address", 1, "expected str, got int"),
        ("home_prefix", ["2001:db8:1::/64"], "expected str, got list"),
        ("tun_name", 0, "expected str, got int"),
        ("control_socket", True, "expected str, got bool"),
        ("state_dir", 1, "expected str, got int"),
    ],
)
def test_ha_wrong_type(write: Writer, key: str, value: Any, problem: str) -> None:
    _, err = ha_error(write, with_ha(**{key: value}))
    assert (err.key, err.problem) == (f"ha.{key}", problem)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("spi", True, "expected int, got bool"),
        ("spi", "1000", "expected int, got str"),
        ("key", 1234, "expected str, got int"),
        ("home_address", {"a": 1}, "expected str, got dict"),
    ],
)
def test_mobile_node_wrong_type(write: Writer, key: str, value: Any, problem: str) -> None:
    _, err = ha_error(write, with_entry(0, **{key: value}))
    assert (err.key, err.problem) == (f"mobile_node[0].{key}", problem)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("spi", True, "expected int, got bool"),
        ("lifetime_s", True, "expected int, got bool"),
        ("lifetime_s", 600.5, "expected int, got float"),
        ("home_agent_udp_port", False, "expected int, got bool"),
        ("keepalive_interval_s", True, "expected int/float, got bool"),
        ("keepalive_interval_s", "15", "expected int/float, got str"),
        ("paths", "T-udp", "expected list, got str"),
        ("home_agent_ipv4", 3232235777, "expected str, got int"),
        ("interface", ["eth0"], "expected str, got list"),
        ("key", ["00"], "expected str, got list"),
    ],
)
def test_mn_wrong_type(write: Writer, key: str, value: Any, problem: str) -> None:
    _, err = mn_error(write, with_mn(**{key: value}))
    assert (err.key, err.problem) == (f"mn.{key}", problem)


# -- addresses and prefixes ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2001:db8:1::zz", "not an IPv6 address: '2001:db8:1::zz'"),
        ("192.0.2.1", "not an IPv6 address: '192.0.2.1'"),
        ("2001:db8:1::1/128", "not an IPv6 address: '2001:db8:1::1/128'"),
        ("", "not an IPv6 address: ''"),
        ("ff02::1", "must be a unicast address: ff02::1"),
        ("::", "must be a unicast address: ::"),
        ("::1", "must be a unicast address: ::1"),
        ("2001:db8:1::1%eth0", "must not carry a zone index: 2001:db8:1::1%eth0"),
    ],
)
def test_bad_ipv6_address(write: Writer, value: str, problem: str) -> None:
    _, err = ha_error(write, with_ha(address=value))
    assert (err.key, err.problem) == ("ha.address", problem)
    _, err = mn_error(write, with_mn(home_agent=value))
    assert (err.key, err.problem) == ("mn.home_agent", problem)
    _, err = mn_error(write, with_mn(home_address=value))
    assert (err.key, err.problem) == ("mn.home_address", problem)
    _, err = ha_error(write, with_entry(0, home_address=value))
    assert (err.key, err.problem) == ("mobile_node[0].home_address", problem)


def test_bad_ipv4_address(write: Writer) -> None:
    for value in ("300.1.1.1", "2001:db8::1", "", "203.0.113.2/24"):
        _, err = mn_error(write, with_mn(home_agent_ipv4=value))
        assert (err.key, err.problem) == ("mn.home_agent_ipv4", f"not an IPv4 address: {value!r}")


@pytest.mark.parametrize(
    "value",
    ["2001:db8:1::1/64", "2001:db8:1::/129", "2001:db8:1::/-1", "home", "10.0.0.0/8", ""],
)
def test_home_prefix_not_a_prefix(write: Writer, value: str) -> None:
    _, err = ha_error(write, with_ha(home_prefix=value))
    assert (err.key, err.problem) == ("ha.home_prefix", f"not an IPv6 prefix: {value!r}")


def test_home_prefix_too_long(write: Writer) -> None:
    _, err = ha_error(write, with_ha(home_prefix="2001:db8:1::/121"))
    assert (err.key, err.problem) == ("ha.home_prefix", "prefix too long (at most /120)")
    # A bare address is a /128: also too long.
    _, err = ha_error(write, with_ha(home_prefix="2001:db8:1::"))
    assert (err.key, err.problem) == ("ha.home_prefix", "prefix too long (at most /120)")
    # /120 is the longest accepted.
    doc = with_ha(home_prefix="2001:db8:1::/120")
    doc["mobile_node"][0]["home_address"] = "2001:db8:1::10"
    doc["mobile_node"][1]["home_address"] = "2001:db8:1::ff"
    cfg = load_ha_config(write(doc))
    assert cfg.home_prefix.prefixlen == 120


def test_home_prefix_with_zone_index(write: Writer) -> None:
    _, err = ha_error(write, with_ha(home_prefix="2001:db8:1::%eth0/64"))
    assert (err.key, err.problem) == (
        "ha.home_prefix",
        "must not carry a zone index: 2001:db8:1::%eth0/64",
    )


def test_ha_address_outside_the_home_prefix(write: Writer) -> None:
    _, err = ha_error(write, with_ha(address="2001:db8:2::1"))
    assert (err.key, err.problem) == (
        "ha.address",
        "2001:db8:2::1 is not inside home_prefix 2001:db8:1::/64",
    )


def test_home_address_outside_the_home_prefix(write: Writer) -> None:
    _, err = ha_error(write, with_entry(1, home_address="2001:db8:2::101"))
    assert (err.key, err.problem) == (
        "mobile_node[1].home_address",
        "2001:db8:2::101 is not inside home_prefix 2001:db8:1::/64",
    )


def test_home_address_equal_to_the_ha_address(write: Writer) -> None:
    _, err = ha_error(write, with_entry(0, home_address="2001:db8:1::1"))
    assert (err.key, err.problem) == (
        "mobile_node[0].home_address",
        "equals the home agent's own address",
    )


def test_mn_home_agent_equal_to_home_address(write: Writer) -> None:
    _, err = mn_error(write, with_mn(home_agent="2001:db8:1::100"))
    assert (err.key, err.problem) == ("mn.home_agent", "equals home_address")


# -- keys and SPIs -------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [0, 1, 15])
def test_short_key(write: Writer, length: int) -> None:
    key = "ab" * length
    _, err = mn_error(write, with_mn(key=key))
    assert (err.key, err.problem) == ("mn.key", f"too short: {length} bytes, need at least 16")
    _, err = ha_error(write, with_entry(1, key=key))
    assert (err.key, err.problem) == (
        "mobile_node[1].key",
        f"too short: {length} bytes, need at least 16",
    )


def test_sixteen_byte_key_is_enough(write: Writer) -> None:
    assert load_mn_config(write(with_mn(key="ab" * 16))).key == b"\xab" * 16
    # Upper case and spaces between bytes are fine hex.
    assert load_mn_config(write(with_mn(key="AB " * 16))).key == b"\xab" * 16


@pytest.mark.parametrize("key", ["zz" * 20, KEY_HEX + "0", "0x" + KEY_HEX, KEY_HEX[:-1] + "g"])
def test_non_hex_key(write: Writer, key: str) -> None:
    _, err = mn_error(write, with_mn(key=key))
    assert (err.key, err.problem) == ("mn.key", "not hex")
    _, err = ha_error(write, with_entry(0, key=key))
    assert (err.key, err.problem) == ("mobile_node[0].key", "not hex")


@pytest.mark.parametrize("spi", [0, 1, 255, -1, 2**32])
def test_spi_out_of_range(write: Writer, spi: int) -> None:
    problem = f"must be between 256 and 4294967295, got {spi}"
    _, err = mn_error(write, with_mn(spi=spi))
    assert (err.key, err.problem) == ("mn.spi", problem)
    _, err = ha_error(write, with_entry(1, spi=spi))
    assert (err.key, err.problem) == ("mobile_node[1].spi", problem)


def test_spi_range_edges_are_accepted(write: Writer) -> None:
    assert load_mn_config(write(with_mn(spi=256))).spi == 256
    assert load_mn_config(write(with_mn(spi=2**32 - 1))).spi == 2**32 - 1


def test_duplicate_spi(write: Writer) -> None:
    _, err = ha_error(write, with_entry(1, spi=1000))
    assert (err.key, err.problem) == ("mobile_node[1].spi", "SPI 1000 used twice")


def test_duplicate_home_address(write: Writer) -> None:
    _, err = ha_error(write, with_entry(1, home_address="2001:db8:1::100"))
    assert (err.key, err.problem) == ("mobile_node[1].home_address", "2001:db8:1::100 listed twice")
    # The same address written differently is still the same address.
    _, err = ha_error(write, with_entry(1, home_address="2001:0db8:0001:0000::0100"))
    assert (err.key, err.problem) == ("mobile_node[1].home_address", "2001:db8:1::100 listed twice")


# -- ports, ranges -------------------------------------------------------------------------------
def test_port_4500_is_refused(write: Writer) -> None:
    problem = "4500 is ESP-in-UDP (RFC 3948); pick another port"
    _, err = ha_error(write, with_ha(udp_port=4500))
    assert (err.key, err.problem) == ("ha.udp_port", problem)
    _, err = mn_error(write, with_mn(home_agent_udp_port=4500))
    assert (err.key, err.problem) == ("mn.home_agent_udp_port", problem)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_out_of_range(write: Writer, port: int) -> None:
    _, err = ha_error(write, with_ha(udp_port=port))
    assert (err.key, err.problem) == ("ha.udp_port", f"must be between 1 and 65535, got {port}")
    _, err = mn_error(write, with_mn(home_agent_udp_port=port))
    assert (err.key, err.problem) == (
        "mn.home_agent_udp_port",
        f"must be between 1 and 65535, got {port}",
    )


@pytest.mark.parametrize(
    ("role", "key", "value", "problem"),
    [
        ("ha", "max_lifetime_s", 3, "must be between 4 and 262140, got 3"),
        ("ha", "max_lifetime_s", 262141, "must be between 4 and 262140, got 262141"),
        ("ha", "tun_mtu", 1279, "must be between 1280 and 65535, got 1279"),
        ("ha", "tun_mtu", 65536, "must be between 1280 and 65535, got 65536"),
        ("mn", "lifetime_s", 7, "must be between 8 and 262140, got 7"),
        ("mn", "lifetime_s", 262141, "must be between 8 and 262140, got 262141"),
        ("mn", "tun_mtu", 576, "must be between 1280 and 65535, got 576"),
        ("mn", "keepalive_interval_s", 0.5, "must be between 1.0 and 300.0, got 0.5"),
        ("mn", "keepalive_interval_s", 301, "must be between 1.0 and 300.0, got 301"),
        ("mn", "keepalive_interval_s", float("inf"), "must be between 1.0 and 300.0, got inf"),
        ("mn", "keepalive_interval_s", float("nan"), "must be between 1.0 and 300.0, got nan"),
    ],
)
def test_out_of_range(write: Writer, role: str, key: str, value: Any, problem: str) -> None:
    if role == "ha":
        _, err = ha_error(write, with_ha(**{key: value}))
    else:
        _, err = mn_error(write, with_mn(**{key: value}))
    assert (err.key, err.problem) == (f"{role}.{key}", problem)


# -- interface names, paths, sockets -------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["", "sixteen-chars-xx", "a/b", "a b", "a:1", "tab\tx", ".", "..", "\u00e9" * 8]
)
def test_bad_interface_name(write: Writer, name: str) -> None:
    problem = f"not a valid interface name: {name!r}"
    _, err = ha_error(write, with_ha(tun_name=name))
    assert (err.key, err.problem) == ("ha.tun_name", problem)
    _, err = mn_error(write, with_mn(tun_name=name))
    assert (err.key, err.problem) == ("mn.tun_name", problem)
    _, err = mn_error(write, with_mn(interface=name))
    assert (err.key, err.problem) == ("mn.interface", problem)


def test_fifteen_byte_interface_name_is_fine(write: Writer) -> None:
    assert load_mn_config(write(with_mn(interface="fifteen-chars-x"))).interface == (
        "fifteen-chars-x"
    )


def test_access_interface_is_not_the_tun(write: Writer) -> None:
    _, err = mn_error(write, with_mn(interface="mip0"))
    assert (err.key, err.problem) == ("mn.interface", "'mip0' is the TUN device itself (tun_name)")


def test_unknown_path_kind(write: Writer) -> None:
    _, err = mn_error(write, with_mn(paths=["T-udp", "T-tcp"]))
    assert (err.key, err.problem) == (
        "mn.paths",
        "unknown path kind 'T-tcp' (known: T-native, T-udp)",
    )
    _, err = mn_error(write, with_mn(paths=["t-udp"]))
    assert (err.key, err.problem) == (
        "mn.paths",
        "unknown path kind 't-udp' (known: T-native, T-udp)",
    )
    _, err = mn_error(write, with_mn(paths=[1]))
    assert (err.key, err.problem) == ("mn.paths", "unknown path kind 1 (known: T-native, T-udp)")


def test_paths_empty_or_repeated(write: Writer) -> None:
    _, err = mn_error(write, with_mn(paths=[]))
    assert (err.key, err.problem) == ("mn.paths", "must name at least one path kind")
    _, err = mn_error(write, with_mn(paths=["T-udp", "T-udp"]))
    assert (err.key, err.problem) == ("mn.paths", "a path kind is listed twice")


def test_longest_control_socket_names(write: Writer) -> None:
    for value in ("/" + "x" * 106, "@" + "x" * 107):
        assert load_mn_config(write(with_mn(control_socket=value))).control_socket == value


@pytest.mark.parametrize("value", ["", "@", "/" + "x" * 107, "@" + "x" * 108])
def test_bad_control_socket(write: Writer, value: str) -> None:
    problem = f"not a Unix socket path or @abstract name: {value!r}"
    _, err = ha_error(write, with_ha(control_socket=value))
    assert (err.key, err.problem) == ("ha.control_socket", problem)
    _, err = mn_error(write, with_mn(control_socket=value))
    assert (err.key, err.problem) == ("mn.control_socket", problem)


def test_config_error_fields() -> None:
    err = ConfigError("f.toml", "mn.spi", "bad")
    assert (err.file, err.key, err.problem, str(err)) == (
        "f.toml",
        "mn.spi",
        "bad",
        "f.toml: mn.spi: bad",
    )


def test_docs_describe_exactly_the_keys_the_loader_knows() -> None:
    """docs/configuration.md has one table row per key, no more, no less."""
    import dataclasses
    import re

    text = (EXAMPLES.parent / "docs" / "configuration.md").read_text()

    def rows(heading: str) -> set[str]:
        section = text.split(heading, 1)[1].split("\n#", 1)[0]
        return set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M))

    ha_keys = {f.name for f in dataclasses.fields(HaConfig)} - {"path", "mobile_nodes", "cluster"}
    mn_keys = {f.name for f in dataclasses.fields(MnConfig)} - {"path"}
    entry_keys = {f.name for f in dataclasses.fields(MobileNodeEntry)}
    cluster_keys = {f.name for f in dataclasses.fields(ClusterConfig)}
    assert rows("### `[ha]`") == ha_keys
    assert rows("### `[ha.cluster]`") == cluster_keys
    assert rows("### `[[mobile_node]]`") == entry_keys
    assert rows("### `[mn]`") == mn_keys
    assert rows("### `[cn]`") == {f.name for f in dataclasses.fields(CnConfig)} - {"path"}


def test_keys_never_show_in_a_configuration_repr() -> None:
    """Configs end up in logs and tracebacks; the MN-HA keys must not (issue 12)."""
    mn = load_mn_config(str(EXAMPLES / "mn.toml"))
    ha = load_ha_config(str(EXAMPLES / "ha.toml"))
    keys = [mn.key] + [e.key for e in ha.mobile_nodes]
    assert keys and all(len(k) >= 16 for k in keys)
    for text in (repr(mn), repr(ha), str(mn), str(ha)):
        for key in keys:
            assert key.hex() not in text and repr(key) not in text


# -- [ha.cluster] ------------------------------------------------------------------------------
CLUSTER_KEY = "aa" * 32


def with_cluster(**changes: Any) -> Doc:
    doc = ha_doc()
    cluster: dict[str, Any] = {
        "node_id": "ha-1",
        "etcd_endpoints": ["http://192.0.2.10:2379", "http://192.0.2.11:2379"],
        "key": CLUSTER_KEY,
        "home_link": "eth0",
    }
    for k, v in changes.items():
        if v is None:
            del cluster[k]
        else:
            cluster[k] = v
    doc["ha"]["cluster"] = cluster
    return doc


def test_a_cluster_table_loads_with_its_defaults(write: Writer) -> None:
    ha = load_ha_config(write(with_cluster()))
    assert ha.cluster is not None
    c = ha.cluster
    assert (c.name, c.node_id, c.home_link, c.announce_port) == ("mipnode", "ha-1", "eth0", 4192)
    assert c.etcd_endpoints == ("http://192.0.2.10:2379", "http://192.0.2.11:2379")
    assert c.key == bytes.fromhex(CLUSTER_KEY)
    assert (c.etcd_ca_file, c.etcd_username, c.etcd_timeout_s) == (None, None, 1.0)
    assert CLUSTER_KEY not in repr(ha)  # the cluster key is a secret


def test_without_a_cluster_table_the_ha_is_alone(write: Writer) -> None:
    assert load_ha_config(write(ha_doc())).cluster is None


def test_tls_and_auth_options_load(write: Writer) -> None:
    doc = with_cluster(
        etcd_endpoints=["https://etcd.example:2379"],
        etcd_ca_file="/etc/mipnode/etcd-ca.pem",
        etcd_cert_file="/etc/mipnode/client.pem",
        etcd_key_file="/etc/mipnode/client-key.pem",
        etcd_username="mipnode",
        etcd_password="s3cret",
    )
    c = load_ha_config(write(doc)).cluster
    assert c is not None
    assert (c.etcd_ca_file, c.etcd_username, c.etcd_password) == (
        "/etc/mipnode/etcd-ca.pem",
        "mipnode",
        "s3cret",
    )
    assert "s3cret" not in repr(c)


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"node_id": None}, "ha.cluster.node_id", "missing"),
        ({"node_id": "ha 1"}, "ha.cluster.node_id", "letters, digits"),
        ({"node_id": "x" * 65}, "ha.cluster.node_id", "1 to 64"),
        ({"name": "a/b"}, "ha.cluster.name", "letters, digits"),
        ({"etcd_endpoints": []}, "ha.cluster.etcd_endpoints", "1 to 16"),
        ({"etcd_endpoints": ["192.0.2.1:2379"]}, "ha.cluster.etcd_endpoints[0]", "http://"),
        ({"key": "aa" * 16}, "ha.cluster.key", "need at least 32"),
        ({"key": "zz"}, "ha.cluster.key", "not hex"),
        ({"home_link": None}, "ha.cluster.home_link", "missing"),
        ({"home_link": "a/b"}, "ha.cluster.home_link", "interface name"),
        ({"announce_port": 4191}, "ha.cluster.announce_port", "udp_ports"),
        ({"etcd_timeout_s": 0}, "ha.cluster.etcd_timeout_s", "between"),
        ({"etcd_cert_file": "/c.pem"}, "ha.cluster.etcd_cert_file", "together"),
        ({"etcd_ca_file": "ca.pem"}, "ha.cluster.etcd_ca_file", "absolute"),
        ({"etcd_ca_file": "/ca.pem"}, "ha.cluster.etcd_endpoints", "https://"),
        ({"etcd_username": "u"}, "ha.cluster.etcd_username", "together"),
        ({"etcd_nodes": 3}, "ha.cluster.etcd_nodes", "unknown key"),
    ],
)
def test_bad_cluster_settings_are_one_line(
    write: Writer, changes: dict[str, Any], key: str, words: str
) -> None:
    _, err = ha_error(write, with_cluster(**changes))
    assert err.key == key and words in err.problem, err


def test_a_cluster_keeps_no_state_file(write: Writer) -> None:
    doc = with_cluster()
    doc["ha"]["state_dir"] = "/var/lib/mipnode-ha"
    _, err = ha_error(write, doc)
    assert err.key == "ha.state_dir" and "etcd holds the binding cache" in err.problem


def test_example_cluster_node_loads() -> None:
    ha = load_ha_config(str(EXAMPLES / "ha-cluster.toml"))
    assert ha.cluster is not None and ha.state_dir is None
    assert (ha.cluster.node_id, ha.cluster.home_link) == ("ha-1", "eth0")
    assert len(ha.cluster.etcd_endpoints) == 3 and len(ha.cluster.key) == 32


# -- mobile routers (RFC 3963) -------------------------------------------------------------------
def test_a_mobile_node_entry_may_list_its_mobile_network_prefixes(write: Writer) -> None:
    prefixes = ["2001:db8:aaaa::/48", "2001:db8:bbbb:1::/64"]
    ha = load_ha_config(write(with_entry(0, mobile_network_prefixes=prefixes)))
    assert [str(p) for p in ha.mobile_nodes[0].mobile_network_prefixes] == prefixes
    assert ha.mobile_nodes[1].mobile_network_prefixes == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2001:db8:aaaa::/48", "expected list, got str"),
        ([48], "expected prefix strings, got int"),
        (["2001:db8:aaaa::1/48"], "not an IPv6 prefix: '2001:db8:aaaa::1/48'"),
        (["10.0.0.0/8"], "not an IPv6 prefix: '10.0.0.0/8'"),
        (["::/0"], "::/0: a prefix of length 0 is everything"),
        (["2001:db8:1::/48"], "2001:db8:1::/48 overlaps home_prefix 2001:db8:1::/64"),
        (
            ["2001:db8:aaaa::/48", "2001:db8:aaaa:1::/64"],
            "2001:db8:aaaa:1::/64 overlaps 2001:db8:aaaa::/48",
        ),
        ([f"2001:db8:aaaa:{i:x}::/64" for i in range(17)], "at most 16 prefixes"),
    ],
)
def test_bad_mobile_network_prefixes_are_one_line(write: Writer, value: Any, problem: str) -> None:
    _, err = ha_error(write, with_entry(0, mobile_network_prefixes=value))
    assert err.key == "mobile_node[0].mobile_network_prefixes"
    assert err.problem.startswith(problem), err.problem


def test_two_routers_never_share_a_prefix(write: Writer) -> None:
    doc = with_entry(0, mobile_network_prefixes=["2001:db8:aaaa::/48"])
    doc["mobile_node"][1]["mobile_network_prefixes"] = ["2001:db8:aaaa:5::/64"]
    _, err = ha_error(write, doc)
    assert (err.key, err.problem) == (
        "mobile_node[1].mobile_network_prefixes",
        "2001:db8:aaaa:5::/64 overlaps 2001:db8:aaaa::/48 of mobile node 2001:db8:1::100",
    )


def test_a_mobile_router_lists_its_prefixes_and_how_it_registers_them(write: Writer) -> None:
    mn = load_mn_config(
        write(
            with_mn(mobile_network_prefixes=["2001:db8:aaaa::/48"], prefix_registration="implicit")
        )
    )
    assert [str(p) for p in mn.mobile_network_prefixes] == ["2001:db8:aaaa::/48"]
    assert mn.prefix_registration == "implicit"
    plain = load_mn_config(write(mn_doc()))
    assert (plain.mobile_network_prefixes, plain.prefix_registration) == ((), "explicit")


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        (
            {"mobile_network_prefixes": ["2001:db8:1::/48"]},
            "mn.mobile_network_prefixes",
            "2001:db8:1::/48 overlaps the home address 2001:db8:1::100/128",
        ),
        (
            {"mobile_network_prefixes": ["2001:db8:1::/127"]},
            "mn.mobile_network_prefixes",
            "2001:db8:1::/127 holds the home agent 2001:db8:1::1",
        ),
        (
            {"prefix_registration": "implicit"},
            "mn.prefix_registration",
            "only with mobile_network_prefixes",
        ),
        (
            {"mobile_network_prefixes": ["2001:db8:aaaa::/48"], "prefix_registration": "auto"},
            "mn.prefix_registration",
            "must be one of explicit, implicit, got 'auto'",
        ),
    ],
)
def test_a_mobile_routers_bad_settings_are_one_line(
    write: Writer, changes: dict[str, Any], key: str, problem: str
) -> None:
    _, err = mn_error(write, with_mn(**changes))
    assert (err.key, err.problem) == (key, problem)


# -- IPv4 home addresses (RFC 5555) --------------------------------------------------------------
def test_ipv4_home_addresses_on_both_sides(write: Writer) -> None:
    doc = with_ha(ipv4_home_prefix="192.0.2.0/24")
    doc["mobile_node"][1]["ipv4_home_address"] = "192.0.2.9"
    ha = load_ha_config(write(doc))
    assert str(ha.ipv4_home_prefix) == "192.0.2.0/24"
    assert [str(m.ipv4_home_address) for m in ha.mobile_nodes] == ["None", "192.0.2.9"]
    assert str(load_mn_config(write(with_mn(ipv4_home_address="auto"))).ipv4_home_address) == (
        "0.0.0.0"
    )
    assert load_mn_config(write(mn_doc())).ipv4_home_address is None


@pytest.mark.parametrize(
    ("ha", "entry", "key", "problem"),
    [
        ({"ipv4_home_prefix": "192.0.2.1/24"}, {}, "ha.ipv4_home_prefix", "not an IPv4 prefix"),
        ({"ipv4_home_prefix": "10.0.0.0/7"}, {}, "ha.ipv4_home_prefix", "10.0.0.0/7: between"),
        (
            {},
            {"ipv4_home_address": "192.0.2.9"},
            "mobile_node[0].ipv4_home_address",
            "192.0.2.9 is not inside",
        ),
        (
            {"ipv4_home_prefix": "192.0.2.0/24"},
            {"ipv4_home_address": "192.0.2.255"},
            "mobile_node[0].ipv4_home_address",
            "192.0.2.255 is the network or broadcast",
        ),
    ],
)
def test_bad_ipv4_home_settings_of_the_ha_are_one_line(
    write: Writer, ha: dict[str, Any], entry: dict[str, Any], key: str, problem: str
) -> None:
    _, err = ha_error(write, with_entry(0, **entry) if not ha else _both(ha, entry))
    assert err.key == key and err.problem.startswith(problem), (err.key, err.problem)


def _both(ha: dict[str, Any], entry: dict[str, Any]) -> Doc:
    doc = with_ha(**ha)
    doc["mobile_node"][0].update(entry)
    return doc


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"ipv4_home_address": "any"}, "\"auto\" or an IPv4 address, got 'any'"),
        ({"ipv4_home_address": "224.0.0.1"}, "224.0.0.1 is no unicast address"),
    ],
)
def test_bad_ipv4_home_settings_of_the_mn_are_one_line(
    write: Writer, changes: dict[str, Any], problem: str
) -> None:
    _, err = mn_error(write, with_mn(**changes))
    assert err.key == "mn.ipv4_home_address" and err.problem.startswith(problem), err.problem


def test_ipv4_home_addresses_work_without_protection_too(write: Writer) -> None:
    """RFC 5555 §4.1 carries IPv4 in the tunnel in clear as well (IPv4-in-IPv6, IPv4 in UDP)."""
    ha = load_ha_config(
        write(_both({"ipv4_home_prefix": "192.0.2.0/24", "protection": "none"}, {}))
    )
    assert ha.protection == "none" and str(ha.ipv4_home_prefix) == "192.0.2.0/24"
    mn = load_mn_config(write(with_mn(ipv4_home_address="auto", protection="none")))
    assert mn.protection == "none" and str(mn.ipv4_home_address) == "0.0.0.0"


HOME4 = {"ipv4_home_prefix": "192.0.2.0/24"}


@pytest.mark.parametrize(
    ("ha", "entries", "key", "problem"),
    [
        (
            {},
            [{"ipv4_mobile_network_prefixes": ["10.77.0.0/24"]}],
            "mobile_node[0].ipv4_mobile_network_prefixes",
            "need [ha] ipv4_home_prefix as well",
        ),
        (
            {"ipv4_home_prefix": "192.0.2.0/24"},
            [{"ipv4_mobile_network_prefixes": ["192.0.2.128/25"]}],
            "mobile_node[0].ipv4_mobile_network_prefixes",
            "192.0.2.128/25 overlaps ipv4_home_prefix",
        ),
        (
            HOME4,
            [{"ipv4_mobile_network_prefixes": ["10.77.0.1/24"]}],
            "mobile_node[0].ipv4_mobile_network_prefixes",
            "not an IPv4 prefix",
        ),
        (
            HOME4,
            [{"ipv4_mobile_network_prefixes": ["10.77.0.0/16", "10.77.1.0/24"]}],
            "mobile_node[0].ipv4_mobile_network_prefixes",
            "10.77.1.0/24 overlaps 10.77.0.0/16",
        ),
        (
            HOME4,
            [
                {"ipv4_mobile_network_prefixes": ["10.77.0.0/24"]},
                {"ipv4_mobile_network_prefixes": ["10.77.0.128/25"]},
            ],
            "mobile_node[1].ipv4_mobile_network_prefixes",
            "10.77.0.128/25 overlaps 10.77.0.0/24 of mobile node",
        ),
        (
            {"ipv4_home_prefix": "192.0.2.0/24"},
            [{"ipv4_mobile_network_prefixes": ["0.0.0.0/0"]}],
            "mobile_node[0].ipv4_mobile_network_prefixes",
            "0.0.0.0/0: a prefix of length 0",
        ),
        (
            HOME4,
            [{"ipv4_mobile_network_prefixes": [f"10.{i}.0.0/16" for i in range(17)]}],
            "mobile_node[0].ipv4_mobile_network_prefixes",
            "at most 16 prefixes in all",
        ),
    ],
)
def test_bad_ipv4_mobile_networks_of_the_ha_are_one_line(
    write: Writer, ha: dict[str, Any], entries: list[dict[str, Any]], key: str, problem: str
) -> None:
    doc = with_ha(**ha)
    base = doc["mobile_node"][0]
    doc["mobile_node"] = [
        {**base, "home_address": f"2001:db8:1::{100 + i}", "spi": 1000 + i, **e}
        for i, e in enumerate(entries)
    ]
    _, err = ha_error(write, doc)
    assert err.key == key and err.problem.startswith(problem), (err.key, err.problem)


def test_a_routers_ipv4_networks_load_on_both_sides(write: Writer) -> None:
    doc = with_ha(ipv4_home_prefix="192.0.2.0/24")
    doc["mobile_node"][0]["ipv4_mobile_network_prefixes"] = ["10.77.0.0/24"]
    entry = load_ha_config(write(doc)).mobile_nodes[0]
    assert [str(p) for p in entry.ipv4_mobile_network_prefixes] == ["10.77.0.0/24"]
    assert [str(p) for p in entry.networks] == ["::ffff:a4d:0/120"]  # IPv4-mapped inside
    mn = load_mn_config(
        write(with_mn(ipv4_mobile_network_prefixes=["10.77.0.0/24"], ipv4_home_address="auto"))
    )
    assert [str(p) for p in mn.ipv4_mobile_network_prefixes] == ["10.77.0.0/24"]
    assert mn.networks == entry.networks


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"ipv4_mobile_network_prefixes": ["10.77.0.0/24"]}, "need ipv4_home_address as well"),
        (
            {
                "ipv4_mobile_network_prefixes": ["203.0.113.0/24"],
                "ipv4_home_address": "auto",
                "home_agent_ipv4": "203.0.113.2",
            },
            "203.0.113.0/24 holds the home agent 203.0.113.2",
        ),
        ({"mobile_network_prefixes": ["::ffff:0:0/96"]}, "::ffff:0:0/96 overlaps ::ffff:0:0/96"),
        (
            {"ipv4_mobile_network_prefixes": ["10.77.0.0/24"], "ipv4_home_address": "10.77.0.1"},
            "10.77.0.1 lies in its own mobile network",
        ),
    ],
)
def test_bad_ipv4_mobile_networks_of_the_mn_are_one_line(
    write: Writer, changes: dict[str, Any], problem: str
) -> None:
    _, err = mn_error(write, with_mn(**changes))
    assert err.problem.startswith(problem), (err.key, err.problem)


# -- [ha] home_link ----------------------------------------------------------------------------


def test_a_home_link_loads_and_is_off_by_default(write: Writer) -> None:
    assert load_ha_config(write(ha_doc())).home_link is None
    assert load_ha_config(write(with_ha(home_link="eth1"))).home_link == "eth1"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (with_ha(home_link="a/b"), "not a valid interface name"),
        (with_ha(home_link="mip-ha0"), "is the home agent's own TUN (mip-ha0)"),
        (with_ha(home_link="eth1", home_prefix="2001:db8:1::/48"), "/64 or longer, not /48"),
    ],
)
def test_a_bad_home_link_is_refused(write: Writer, doc: Doc, problem: str) -> None:
    _, err = ha_error(write, doc)
    assert err.key == "ha.home_link" and problem in err.problem


def test_a_home_link_is_not_taken_with_a_cluster(write: Writer) -> None:
    doc = with_cluster()
    doc["ha"]["home_link"] = "eth1"
    _, err = ha_error(write, doc)
    assert err.key == "ha.home_link" and "not with [ha.cluster]" in err.problem
