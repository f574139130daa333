"""Transport security of the distributed shape (issue 13): a deployment whose gateways and
workers reach Kafka only through the local stack's SASL_SSL listener (SASL PLAIN over TLS,
broker certificate checked against the stack's CA, host name verified) and PostgreSQL only
with sslmode=verify-full against the same CA (`deploy/local/stack env --tls`). Redis stays
plain: Debian's hiredis 0.14 has no TLS (docs/OPERATIONS.md, "Transport security").

Proves: payments reach a terminal status; every PostgreSQL session of the deployment is
encrypted (pg_stat_ssl); no process holds a connection to the broker's PLAINTEXT listener;
the SASL password is in no log. Refusals are start-up errors naming the cause: a wrong SASL
password or a foreign CA for Kafka (exit 2), a foreign CA for PostgreSQL with verify-full,
including when the URL itself says sslmode=disable (the option wins over the URL).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid

import pytest

import conftest
import pslib
from conftest import Deployment

pytestmark = pytest.mark.tls

STACK = os.path.join(pslib.REPO_ROOT, "deploy", "local", "stack")
START_FAIL_TIMEOUT_S = 30


def stack_env(*args: str) -> dict:
    r = subprocess.run([STACK, "env", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"deploy/local/stack env {' '.join(args)}: {r.stderr}"
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def host_port(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def tls_env() -> dict:
    plain = stack_env()
    for k in ("PAYSTREAM_KAFKA_BROKERS", "PAYSTREAM_POSTGRES_URL"):
        if os.environ.get(k) != plain[k]:
            pytest.fail(f"{k}={os.environ.get(k)!r} but `deploy/local/stack env` says {plain[k]!r}: run the "
                        "tests with the PAYSTREAM_STACK_* variables the stack was started with")
    tls = stack_env("--tls")
    try:
        socket.create_connection(host_port(tls["PAYSTREAM_KAFKA_BROKERS"]), timeout=5).close()
    except OSError as e:
        pytest.fail(f"the stack's SASL_SSL listener {tls['PAYSTREAM_KAFKA_BROKERS']} does not answer ({e}): "
                    "run deploy/local/stack up (it adds the listener to an older stack)")
    return tls


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory) -> str:
    """A CA that signed nothing the stack uses."""
    d = tmp_path_factory.mktemp("foreign-ca")
    crt = str(d / "ca.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / "ca.key"), "-out", crt, "-days", "2", "-subj", "/CN=not the stack CA"],
                   check=True, capture_output=True, timeout=30)
    return crt


@pytest.fixture(scope="module")
def tls_dist(tmp_path_factory, tls_env):
    d = Deployment(str(tmp_path_factory.mktemp("tls")))
    # Kafka: the SASL_SSL listener only (the PLAINTEXT address is not given to anything).
    d.env.update(tls_env)
    # libpq reads PGAPPNAME: this deployment's sessions are the ones with this name.
    d.env["PGAPPNAME"] = f"ps-tls-{d.session}"
    # A failing test shows the roles' logs (conftest's report hook), unless the session's
    # shared deployment was made first (this module runs on its own: -m tls). Starting
    # runs migrate and topics create over TLS too, then every role.
    yield from conftest.run_deployment(d)


def psql_plain(sql: str) -> list[list[str]]:
    """As the test, over the stack's plain URL (the observer, not the observed)."""
    r = subprocess.run(["psql", os.environ["PAYSTREAM_POSTGRES_URL"], "-X", "-q", "-A", "-t", "-F", "\t",
                        "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def tcp_peers(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, peer address) of every established TCP connection of these processes."""
    out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    peers = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        for pid in re.findall(r"pid=(\d+)", line):
            if int(pid) in pids:
                peers.append((int(pid), cols[3]))
    return peers


def test_payments_over_tls_and_every_connection_encrypted(tls_dist, tls_env):
    m = pslib.new_merchant(tls_dist.gateways[0])
    try:
        results = [m.client.pay_ok(1000 + i)["status"] for i in range(3)]
        results.append(m.client.pay_ok(700, source="tok_decline")["status"])
        assert results == ["succeeded"] * 3 + ["failed"], results
        other = tls_dist.gateways[1].client(m.api_key)
        try:
            assert other.balance()["USD"] == 1000 + 1001 + 1002
        finally:
            other.close()
    finally:
        m.client.close()

    # PostgreSQL: every session of this deployment (gateway pools and listeners, worker
    # pools, dedup, the activity monitor) is TLS.
    app = tls_dist.env["PGAPPNAME"]
    rows = psql_plain("SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid "
                      f"WHERE a.application_name = '{app}'")
    assert len(rows) >= 6, rows  # two gateways and four workers, each with sessions open
    assert all(ssl == "t" and version.startswith("TLS") for ssl, version in rows), rows

    # Kafka: connections to the SASL_SSL port only, none to the PLAINTEXT listener.
    tls_port = host_port(tls_env["PAYSTREAM_KAFKA_BROKERS"])[1]
    plain_port = host_port(os.environ["PAYSTREAM_KAFKA_BROKERS"])[1]
    roles = [*tls_dist.gateways, *tls_dist.workers.values()]
    peers = tcp_peers({r.proc.pid for r in roles})
    kafka_ports = [int(addr.rsplit(":", 1)[1]) for _, addr in peers
                   if int(addr.rsplit(":", 1)[1]) in (tls_port, plain_port)]
    assert kafka_ports and set(kafka_ports) == {tls_port}, peers
    assert {pid for pid, addr in peers if addr.endswith(f":{tls_port}")} == {r.proc.pid for r in roles}, peers

    # The SASL password is in no log line of any process.
    password = tls_env["PAYSTREAM_KAFKA_SASL_PASSWORD"]
    for r in tls_dist.roles:
        assert not any(password in line for line in r.lines), f"{r.name} logged the SASL password"


def run_role(env: dict, *args: str) -> subprocess.CompletedProcess:
    """One start of `paystream ARGS` that is expected to fail at start-up (bounded)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    full.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    full.update(env)
    try:
        return subprocess.run([pslib.binary_path(), *args], capture_output=True, text=True,
                              timeout=START_FAIL_TIMEOUT_S, env=full)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"paystream {' '.join(args)} still running after {START_FAIL_TIMEOUT_S}s "
                             f"(expected a start-up error):\n{e.stderr}") from None


def session_env(tls_env: dict, **overrides: str) -> dict:
    s = uuid.uuid4().hex[:12]
    env = dict(tls_env)
    env.update({"PAYSTREAM_TOPIC_PREFIX": f"e2e-{s}.", "PAYSTREAM_POSTGRES_SCHEMA": f"s_{s}",
                "PAYSTREAM_REDIS_PREFIX": f"e2e{s}:", "PAYSTREAM_ADMIN_KEY": "adm_tls_" + uuid.uuid4().hex})
    env.update(overrides)
    return env


def test_wrong_sasl_password_is_a_start_up_error(tls_env):
    wrong = "wrong-" + uuid.uuid4().hex
    env = session_env(tls_env, PAYSTREAM_KAFKA_SASL_PASSWORD=wrong)
    for args in (["gateway", "--listen", "127.0.0.1:0"], ["worker", "--stage", "fraud", "--metrics-listen", "127.0.0.1:0"]):
        r = run_role(env, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr[-2000:])
        assert "Kafka refused the connection" in r.stderr and "Authentication failed" in r.stderr, r.stderr[-2000:]
        assert wrong not in r.stderr and tls_env["PAYSTREAM_KAFKA_SASL_PASSWORD"] not in r.stderr


def test_foreign_ca_for_kafka_is_a_start_up_error(tls_env, foreign_ca):
    env = session_env(tls_env, PAYSTREAM_KAFKA_SSL_CA_LOCATION=foreign_ca)
    r = run_role(env, "worker", "--stage", "ledger", "--metrics-listen", "127.0.0.1:0")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Kafka refused the connection" in r.stderr and "certificate verify failed" in r.stderr, r.stderr[-2000:]


def test_foreign_ca_for_postgres_with_verify_full_is_a_start_up_error(tls_env, foreign_ca):
    env = session_env(tls_env, PAYSTREAM_POSTGRES_SSLROOTCERT=foreign_ca)
    r = run_role(env, "gateway", "--listen", "127.0.0.1:0")
    assert r.returncode != 0 and "listening" not in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "cannot open PostgreSQL" in r.stderr and "certificate verify failed" in r.stderr, r.stderr[-2000:]
    r = run_role(env, "migrate")
    assert r.returncode == 1 and "certificate verify failed" in r.stderr, (r.returncode, r.stderr[-2000:])


def test_postgres_options_override_the_url(tls_env, foreign_ca):
    url = tls_env["PAYSTREAM_POSTGRES_URL"]
    # The URL turns TLS off; --postgres-sslmode verify-full wins, so the foreign CA fails it.
    env = session_env(tls_env, PAYSTREAM_POSTGRES_URL=url + "?sslmode=disable",
                      PAYSTREAM_POSTGRES_SSLROOTCERT=foreign_ca)
    r = run_role(env, "migrate")
    assert r.returncode == 1 and "certificate verify failed" in r.stderr, (r.returncode, r.stderr[-2000:])
    # The URL names the foreign CA; --postgres-sslrootcert (the stack's) wins.
    env = session_env(tls_env, PAYSTREAM_POSTGRES_URL=f"{url}?sslmode=verify-full&sslrootcert={foreign_ca}")
    r = run_role(env, "migrate")
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    psql_plain(f'DROP SCHEMA IF EXISTS "{env["PAYSTREAM_POSTGRES_SCHEMA"]}" CASCADE')
