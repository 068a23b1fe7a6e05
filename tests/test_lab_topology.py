"""The configuration files the lab writes for its daemons: what the daemons' own loaders read
back from them (no namespaces: write_configs only writes files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mipnode.config import load_ha_config, load_mn_config
from mipnode.lab import topology
from mipnode.lab.netns import RunRecord
from mipnode.lab.scenario_files import load_scenario


def _topology(tmp_path: Path, **options: object) -> topology.Topology:
    record = RunRecord("abc123", 1, "run", [], [], "test", str(tmp_path))
    return topology.Topology(record, tmp_path, "ipv6", "stateful", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("second_mn", [None, "stateful"])
def test_the_ha_ports_reach_the_ha_and_every_mn(tmp_path: Path, second_mn: str | None) -> None:
    t = _topology(tmp_path, ha_udp_ports=(4191, 443), second_mn=second_mn)
    ha_cfg, mn_cfg = topology.write_configs(t)
    assert "udp_ports = [4191, 443]" in ha_cfg.read_text()
    assert load_ha_config(str(ha_cfg)).udp_ports == (4191, 443)
    mns = [mn_cfg] + ([tmp_path / "mn2.toml"] if second_mn else [])
    for cfg in mns:
        assert "home_agent_udp_ports = [4191, 443]" in cfg.read_text()
        assert load_mn_config(str(cfg)).home_agent_udp_ports == (4191, 443)


def test_without_ha_ports_the_legacy_one_port_keys_are_written(tmp_path: Path) -> None:
    ha_cfg, mn_cfg = topology.write_configs(_topology(tmp_path))
    assert "\nudp_port = 4191\n" in ha_cfg.read_text()
    assert "\nhome_agent_udp_port = 4191\n" in mn_cfg.read_text()
    assert load_ha_config(str(ha_cfg)).udp_ports == topology.DEFAULT_HA_UDP_PORTS
    assert load_mn_config(str(mn_cfg)).home_agent_udp_ports == topology.DEFAULT_HA_UDP_PORTS
    # The HA keeps its binding cache in the run's workdir (restart-ha, keep_state).
    assert load_ha_config(str(ha_cfg)).state_dir == str(tmp_path)


def test_a_scenario_hands_its_ha_ports_to_the_topology(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "s"\n[topology]\nfirewall = "web-only"\nha_udp_ports = [443, 4191]\n'
        '[expect]\nmn_ha = "T-udp"\nmn_ha_port = 443\n'
    )
    seen: dict[str, object] = {}
    monkeypatch.setattr(topology, "build", lambda record, workdir, **kw: seen.update(kw))
    load_scenario(str(path)).build(RunRecord("abc123", 1, "run", [], [], "s", ""), tmp_path)
    assert (seen["firewall"], seen["ha_udp_ports"]) == ("web-only", (443, 4191))
