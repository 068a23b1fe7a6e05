"""A real etcd cluster of a few members, started and stopped by us (issue 14).

The lab's cluster scenarios and the tests run the etcd server Debian ships (``etcd-server``,
installed by tools/install.sh), one process per member, each with its own data directory
under a work directory we created, listening on loopback. A
member can be killed and started again with its data (``--initial-cluster-state existing``),
which is how the lab takes a member or the majority away and brings it back.

Timing: heartbeats every 50 ms and elections after 500 ms (etcd's defaults are 100 ms and
1 s), so a lost leader is replaced within about a second; etcd raises any lease TTL below
1.5 election timeouts to that minimum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mipnode.lab.netns import LabError
from mipnode.lab.status import file_tail, in_namespace

ETCD = "etcd"
START_TIMEOUT_S = 15.0
HEARTBEAT_MS = 50
ELECTION_MS = 500
T = TypeVar("T")
NETNS_PORT_BASE = 2379  # etcd's own client port, then one port after another


@dataclass(frozen=True)
class TlsFiles:
    """A CA, the members' certificate (for 127.0.0.1 and ::1) and a client's, all PEM."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA and two certificates signed by it, valid for a day (EC P-256), with the
    key usages and key identifiers a strict verifier (Python 3.13's default) asks for."""
    directory.mkdir(parents=True, exist_ok=True)
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=1)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("mipnode lab etcd CA"))
        .issuer_name(name("mipnode lab etcd CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
        directory / "client.pem",
        directory / "client-key.pem",
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    # The members' certificate also says clientAuth: etcd's JSON gateway dials the member's
    # own gRPC port with it, and --client-cert-auth asks that connection for one too.
    server_usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    for cert_path, key_path, usage, label in (
        (files.server_cert, files.server_key, server_usage, "server"),
        (files.client_cert, files.client_key, [ExtendedKeyUsageOID.CLIENT_AUTH], "client"),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"mipnode lab etcd {label}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key_path, key)
    return files


@dataclass
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    tls: TlsFiles | None = None  # clients must present a certificate the CA signed
    netns: str | None = None  # the network namespace it runs in (None: this one)

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    members: list[Member]
    token: str = "mipnode"
    extra_args: tuple[str, ...] = ()  # more etcd flags, the same for every member

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start(self, member: Member, *, existing: bool = False) -> None:
        """Start ``member`` (``existing``: again, with the data it had)."""
        if member.running:
            return
        member.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            ETCD,
            *("--name", member.name, "--data-dir", str(member.data_dir)),
            *("--listen-client-urls", member.client_url),
            *("--advertise-client-urls", member.client_url),
            *("--listen-peer-urls", member.peer_url),
            *("--initial-advertise-peer-urls", member.peer_url),
            *("--initial-cluster", self.initial_cluster()),
            *("--initial-cluster-token", self.token),
            *("--initial-cluster-state", "existing" if existing else "new"),
            *("--heartbeat-interval", str(HEARTBEAT_MS)),
            *("--election-timeout", str(ELECTION_MS)),
            *("--logger", "zap", "--log-outputs", "stderr"),
        ]
        if member.tls is not None:
            t = member.tls
            cmd += ["--cert-file", str(t.server_cert), "--key-file", str(t.server_key)]
            cmd += ["--trusted-ca-file", str(t.ca), "--client-cert-auth"]
        cmd += self.extra_args
        if member.netns is not None:
            cmd = ["ip", "netns", "exec", member.netns, *cmd]  # ip execs etcd: one process
        with member.log.open("ab") as log:
            member.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self, member: Member) -> None:
        """SIGKILL, as a crash: the member's data stays for a restart."""
        if member.proc is not None and member.proc.poll() is None:
            member.proc.kill()
            member.proc.wait(timeout=10)

    def wait_healthy(
        self, members: list[Member] | None = None, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        """Until each member answers /health with true (the cluster has a leader)."""
        deadline = time.monotonic() + timeout_s
        for member in members or self.members:
            while not _healthy(member):
                if member.proc is not None and member.proc.poll() is not None:
                    raise LabError(f"etcd {member.name} exited: {file_tail(member.log, 3)}")
                if time.monotonic() > deadline:
                    raise LabError(f"etcd {member.name} not healthy: {file_tail(member.log, 3)}")
                time.sleep(0.05)

    def close(self) -> None:
        for member in self.members:
            self.kill(member)


def start_cluster(
    workdir: Path,
    size: int = 3,
    *,
    host: str = "127.0.0.1",
    tls: TlsFiles | None = None,
    extra_args: tuple[str, ...] = (),
    netns: str | None = None,
) -> EtcdCluster:
    """``size`` members on ``host`` (a loopback address, or one of ``netns``'s), ready to use;
    with ``tls``, clients speak HTTPS to them and must present a client certificate (the peers
    stay on HTTP: they talk over loopback only). In ``netns`` (a lab namespace of ours, where
    nothing else listens) the ports are fixed: NETNS_PORT_BASE and up."""
    if shutil.which(ETCD) is None:
        raise LabError("etcd is not installed (tools/install.sh installs etcd-server)")
    if netns is None:
        ports = free_ports(2 * size, host)
    else:
        ports = list(range(NETNS_PORT_BASE, NETNS_PORT_BASE + 2 * size))
    members = [
        Member(
            f"etcd{i}",
            host,
            ports[2 * i],
            ports[2 * i + 1],
            workdir / f"etcd{i}",
            workdir / f"etcd{i}.log",
            tls=tls,
            netns=netns,
        )
        for i in range(size)
    ]
    cluster = EtcdCluster(members, token=f"mipnode-{workdir.name}", extra_args=extra_args)
    try:
        for member in members:
            cluster.start(member)
        cluster.wait_healthy()
    except BaseException:
        cluster.close()
        raise
    return cluster


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports nobody listens on right now (bound and released: another process could take one
    before etcd does, which fails loudly at start, never silently)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _healthy(member: Member) -> bool:
    if member.netns is not None:
        return _inside(member, _healthy)
    context = None
    if member.tls is not None:
        context = ssl.create_default_context(cafile=str(member.tls.ca))
        context.load_cert_chain(str(member.tls.client_cert), str(member.tls.client_key))
    try:
        with urllib.request.urlopen(
            member.client_url + "/health", timeout=1, context=context
        ) as reply:
            body = reply.read().decode()
    except (urllib.error.URLError, OSError):
        return False
    with contextlib.suppress(ValueError):
        return bool(json.loads(body).get("health") == "true")
    return False


def _inside(member: Member, ask: Callable[[Member], T]) -> T:
    """``ask(member)`` from inside the member's network namespace (its address is there)."""
    assert member.netns is not None
    plain = dataclasses.replace(member, netns=None, proc=None)
    return in_namespace(member.netns, lambda: ask(plain))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def leader_name(cluster: EtcdCluster) -> str | None:
    """The name of the member that leads now (each member's status names the leader's id and
    its own), or None when no running member answers."""
    for member in cluster.members:
        if not member.running:
            continue
        answer = _post(member, "/v3/maintenance/status")
        if answer is None:
            continue
        leader = str(answer.get("leader", ""))
        for other in cluster.members:
            if other.running:
                own = _post(other, "/v3/maintenance/status")
                if own is not None and str((own.get("header") or {}).get("member_id")) == leader:
                    return other.name
    return None


def _post(member: Member, path: str) -> dict[str, Any] | None:
    if member.netns is not None:
        return _inside(member, lambda plain: _post(plain, path))
    if member.tls is not None:
        return None  # only the lab's plain-HTTP clusters are asked
    request = urllib.request.Request(member.client_url + path, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=1) as reply:
            answer = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None
