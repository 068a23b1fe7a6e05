"""Stores for the cluster tests: a real three-member etcd cluster (started once per module, on
loopback) and the in-memory fake, behind one parametrized fixture."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from memory_etcd import MemoryEtcd

from mipnode.drivers.etcd import Etcd
from mipnode.lab.etcd_cluster import EtcdCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (tools/install.sh --test installs etcd-server)")
    started = start_cluster(Path(tmp_path_factory.mktemp("etcd")), 3)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(params=["memory", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        fake = MemoryEtcd()
        yield fake
        await fake.aclose()
        return
    client = Etcd(request.getfixturevalue("cluster").endpoints)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> bytes:
    """Each test writes under its own prefix: the real cluster is shared by the module."""
    return b"/t/" + uuid.uuid4().hex.encode() + b"/"
