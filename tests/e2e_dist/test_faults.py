"""Fault tests of the distributed shape (issue 3): each fault is injected while a bounded
load runs, and each is followed by a reconciliation of the whole session:

- every acknowledged payment (201/202) is terminal, and its key maps to exactly one payment;
- no duplicate charge at the acquirer simulator: approved charges == succeeded payments,
  none for a failed payment, one row per payment id (its primary key);
- no duplicate posting: exactly one settlement per succeeded payment, none for failed ones;
- every journal entry balances (postings sum to zero per currency), and every maintained
  balance equals the sum of its postings;
- consumer lag returns to zero on every worker; the outbox drains.

Faults: kill -9 of each worker role and of a gateway (then restarted), Redis FLUSHALL, a
Redis restart, a PostgreSQL restart, a Kafka broker restart, and an acquirer simulator that
times out or fails (the processor's circuit opens while intake latency stays bounded).

These restart the shared stack services, so the ctest entry runs them serially (RUN_SERIAL).
Every load loop is bounded in count and in time and sends traffic to 127.0.0.1 only.
"""
from __future__ import annotations

import http.client
import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest

import pslib
from conftest import Deployment, Role

pytestmark = [pytest.mark.fault, pytest.mark.slow]

STACK = os.path.join(pslib.REPO_ROOT, "deploy", "local", "stack")
RECONCILE_TIMEOUT_S = 180.0


# --------------------------------------------------------------------------- load

class Load:
    """Open-ended client load on the gateways, bounded by `max_payments` and `max_s`.

    Each thread sends payments with fresh idempotency keys and, like a well-behaved
    merchant backend, retries the same key (on any gateway) after a connection error, a
    5xx or a 429 until the payment is acknowledged (201/202). `acked` maps key -> payment
    id; `latencies_s` holds the time of each acknowledged request's last attempt."""

    SOURCES = ["tok_approve"] * 8 + ["tok_decline", "tok_insufficient_funds"]

    def __init__(self, gateways: list[Role], api_key: str, threads: int = 4,
                 max_payments: int = 100000, max_s: float = 60.0):
        self.gateways = gateways
        self.api_key = api_key
        self.threads = threads
        self.max_payments = max_payments
        self.max_s = max_s
        self.acked: dict[str, str] = {}
        self.bodies: dict[str, str] = {}
        self.latencies_s: list[float] = []
        self.errors: dict[str, int] = {}
        self.unacked: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._sent = 0

    def start(self) -> "Load":
        self._t0 = time.monotonic()
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> "Load":
        self._stop.set()
        for t in self._workers:
            t.join(timeout=120)
        return self

    def wait_acked(self, n: int, timeout_s: float = 60.0) -> None:
        pslib.wait_until(lambda: len(self.acked) >= n, timeout_s, what=f"{n} acknowledged payments")

    def _count(self, what: str) -> None:
        with self._lock:
            self.errors[what] = self.errors.get(what, 0) + 1

    def _run(self, idx: int) -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        n = 0
        while not self._stop.is_set() and time.monotonic() - self._t0 < self.max_s:
            with self._lock:
                if self._sent >= self.max_payments:
                    break
                self._sent += 1
            key = f"load-{uuid.uuid4().hex}"
            body = json.dumps({"amount": 100 + n % 900, "currency": "EUR",
                               "source": self.SOURCES[n % len(self.SOURCES)]})
            n += 1
            attempt = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                g = self.gateways[(idx + attempt) % len(self.gateways)]
                attempt += 1
                t = time.monotonic()
                try:
                    c = conns.get(g.port)
                    if c is None:
                        c = conns[g.port] = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
                    c.request("POST", "/v1/payments", body=body, headers={
                        "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json",
                        "Idempotency-Key": key})
                    resp = c.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    self._count(type(e).__name__)
                    conns.pop(g.port, None)
                    time.sleep(0.05)
                    continue
                if resp.status in (200, 201, 202):
                    with self._lock:
                        self.acked[key] = json.loads(data)["id"]
                        self.bodies[key] = body
                        self.latencies_s.append(time.monotonic() - t)
                    break
                self._count(str(resp.status))
                if resp.status == 409:       # the same key is still in flight: retry shortly
                    time.sleep(0.05)
                    continue
                if resp.status in (429, 500, 502, 503, 504):
                    time.sleep(0.1)
                    continue
                raise AssertionError(f"unexpected {resp.status} for {key}: {data[:300]!r}")
            else:
                with self._lock:
                    self.unacked.append(key)
        for c in conns.values():
            c.close()


# --------------------------------------------------------------------------- checks

def psql(dep: Deployment, sql: str) -> list[list[str]]:
    schema = dep.env["PAYSTREAM_POSTGRES_SCHEMA"]
    r = subprocess.run(["psql", dep.env["PAYSTREAM_POSTGRES_URL"], "-X", "-q", "-A", "-t", "-F", "\t",
                        "-v", "ON_ERROR_STOP=1", "-c", f'SET search_path TO "{schema}"; {sql}'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"psql failed: {r.stderr}"
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def scalar(dep: Deployment, sql: str) -> int:
    rows = psql(dep, sql)
    return int(rows[0][0]) if rows and rows[0][0] else 0


def consumer_lag(dep: Deployment) -> float:
    return dep.metric_sum("paystream_kafka_consumer_lag", list(dep.workers.values()))


def reconcile(dep: Deployment, load: Load, label: str) -> dict:
    """Asserts the guarantees over the whole session; returns the counts (printed, so the
    closing note can quote them: pytest -s or the log of the run)."""
    assert not load.unacked, f"{label}: {len(load.unacked)} payments never acknowledged"
    ids = set(load.acked.values())
    assert len(ids) == len(load.acked), f"{label}: two keys share a payment id"

    def all_terminal():
        rows = psql(dep, "SELECT id, status FROM payments")
        status = {r[0]: r[1] for r in rows}
        missing = [i for i in ids if i not in status]
        assert not missing, f"{label}: acknowledged payments missing from the store: {missing[:5]}"
        pending = [i for i in ids if status[i] == "processing"]
        return not pending and status
    status = pslib.wait_until(all_terminal, RECONCILE_TIMEOUT_S, interval_s=1.0,
                              what=f"{label}: every acknowledged payment terminal")
    assert scalar(dep, "SELECT count(*) FROM (SELECT merchant_id, idempotency_key FROM payments "
                       "GROUP BY 1, 2 HAVING count(*) > 1) d") == 0

    succeeded = {i for i, s in status.items() if s == "succeeded"}
    failed = {i for i, s in status.items() if s == "failed"}
    # Ledger: one settlement per succeeded payment, none for failed ones, every entry balanced.
    settlements = psql(dep, "SELECT payment_id, count(*) FROM journal_entries WHERE kind = 'settlement' GROUP BY 1")
    per_payment = {r[0]: int(r[1]) for r in settlements}
    assert all(c == 1 for c in per_payment.values()), f"{label}: duplicate settlement"
    assert set(per_payment) == succeeded, (
        f"{label}: settlements {len(per_payment)} vs succeeded {len(succeeded)}; "
        f"missing {list(succeeded - set(per_payment))[:3]}, extra {list(set(per_payment) - succeeded)[:3]}")
    unbalanced = scalar(dep, "SELECT count(*) FROM (SELECT entry_id, currency FROM postings "
                             "GROUP BY 1, 2 HAVING sum(amount_minor) <> 0) u")
    assert unbalanced == 0, f"{label}: {unbalanced} unbalanced entries"
    drift = scalar(dep, "SELECT count(*) FROM (SELECT account, currency, sum(amount_minor) s FROM postings "
                        "GROUP BY 1, 2) p FULL JOIN account_balances b USING (account, currency) "
                        "WHERE coalesce(b.amount_minor, 0) <> coalesce(p.s, 0)")
    assert drift == 0, f"{label}: {drift} maintained balances differ from the sum of their postings"

    # Acquirer: one charge row per payment id (primary key), approved exactly for the
    # succeeded ones, so no payment was charged twice and no failed payment was charged.
    db = sqlite3.connect(f"file:{os.path.join(dep.base_dir, 'sim-data', 'acquirer-sim.db')}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT payment_id, approved, calls FROM charges").fetchall()
    finally:
        db.close()
    approved = {r[0] for r in rows if r[1]}
    assert approved == succeeded, (f"{label}: approved charges {len(approved)} vs succeeded {len(succeeded)}; "
                                   f"charged but not succeeded: {list(approved - succeeded)[:3]}")
    assert not (approved & failed)
    retried_calls = sum(r[2] - 1 for r in rows)

    # Consumer lag back to zero; the outbox drained.
    pslib.wait_until(lambda: consumer_lag(dep) == 0, 90, interval_s=1.0, what=f"{label}: consumer lag 0")
    pslib.wait_until(lambda: scalar(dep, "SELECT count(*) FROM outbox") == 0, 60, interval_s=1.0,
                     what=f"{label}: outbox drained")
    lat = sorted(load.latencies_s)
    counts = {
        "fault": label, "acknowledged": len(load.acked), "payments_in_store": len(status),
        "succeeded": len(succeeded), "failed": len(failed), "settlements": len(per_payment),
        "acquirer_charges": len(rows), "acquirer_approved": len(approved),
        "acquirer_repeat_calls": retried_calls, "unbalanced_entries": unbalanced, "balance_drift": drift,
        "client_errors": dict(load.errors),
        "intake_p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
        "intake_p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1) if lat else None,
        "intake_max_ms": round(1000 * lat[-1], 1) if lat else None,
    }
    print("RECONCILED " + json.dumps(counts))
    return counts


def stack(*args: str, timeout_s: float = 240) -> None:
    r = subprocess.run([STACK, *args], capture_output=True, text=True, timeout=timeout_s)
    assert r.returncode == 0, f"stack {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fdist(tmp_path_factory):
    d = Deployment(str(tmp_path_factory.mktemp("faults")))
    try:
        d.start()
    except BaseException:
        d.stop()
        raise
    yield d
    d.stop()
    d.cleanup_state()


@pytest.fixture
def fmerchant(fdist) -> pslib.Merchant:
    m = pslib.new_merchant(fdist.gateways[0])
    yield m
    m.client.close()


def run_fault(dep: Deployment, merchant: pslib.Merchant, label: str, inject, recover=None,
              before: int = 60, during_s: float = 6.0, threads: int = 4) -> tuple[dict, Load]:
    """Load on both gateways; after `before` acknowledgements inject the fault; keep the load
    up for `during_s`; recover; stop the load; reconcile."""
    load = Load(dep.gateways, merchant.api_key, threads=threads, max_payments=3000, max_s=90).start()
    try:
        load.wait_acked(before)
        inject()
        time.sleep(during_s)
        if recover:
            recover()
        time.sleep(2.0)
    finally:
        load.stop()
    return reconcile(dep, load, label), load


# --------------------------------------------------------------------------- faults

@pytest.mark.parametrize("stage", ["fraud", "processor", "ledger", "notifier"])
def test_kill_9_worker_role(fdist, fmerchant, stage):
    w = fdist.workers[stage]

    def inject():
        w.kill()

    def recover():
        w.start()
    run_fault(fdist, fmerchant, f"kill -9 worker {stage}", inject, recover)


def test_kill_9_gateway(fdist, fmerchant):
    g = fdist.gateways[1]

    def inject():
        g.kill()

    def recover():
        # Same port: the killed gateway's clients come back to the same address.
        port = g.port
        g.args = ["gateway", "--listen", f"127.0.0.1:{port}", "--reuse-port"]
        g.start()
    run_fault(fdist, fmerchant, "kill -9 gateway", inject, recover)


def test_redis_flushall(fdist, fmerchant):
    def inject():
        for url in (fdist.env["PAYSTREAM_REDIS_URL"], fdist.env["PAYSTREAM_REDIS_CACHE_URL"]):
            r = subprocess.run(["redis-cli", "-u", url, "FLUSHALL"], capture_output=True, text=True, timeout=30)
            assert r.stdout.strip() == "OK", r.stderr
    _, load = run_fault(fdist, fmerchant, "Redis FLUSHALL", inject)
    # Every fast idempotency record is gone: a retry is still answered from the database,
    # with the first payment's id and no new payment.
    c = fdist.gateways[0].client(fmerchant.api_key)
    try:
        for key in list(load.acked)[:20]:
            r = c.request("POST", "/v1/payments", raw=load.bodies[key].encode(),
                          headers={"Idempotency-Key": key})
            assert r.status in (200, 201, 202), (r.status, r.body)
            assert r.json["id"] == load.acked[key]
            assert r.header("Idempotent-Replayed") == "true", r.headers
    finally:
        c.close()
    assert scalar(fdist, "SELECT count(*) FROM payments") == len(
        psql(fdist, "SELECT DISTINCT merchant_id, idempotency_key FROM payments"))


def test_redis_restart(fdist, fmerchant):
    run_fault(fdist, fmerchant, "Redis restart", lambda: stack("restart", "redis"), during_s=4.0)


def test_postgres_restart(fdist, fmerchant):
    run_fault(fdist, fmerchant, "PostgreSQL restart", lambda: stack("restart", "postgres"), during_s=4.0)


def test_kafka_broker_restart(fdist, fmerchant):
    run_fault(fdist, fmerchant, "Kafka broker restart", lambda: stack("restart", "kafka"), during_s=4.0)


@pytest.mark.parametrize("mode", ["timeout", "failure"])
def test_acquirer_times_out_or_fails(fdist, fmerchant, mode):
    """The simulator is restarted so that every call times out (latency above the
    processor's 300 ms timeout) or fails transiently; the processor's circuit opens, intake
    latency stays bounded (the gateway never waits on the acquirer); after the simulator is
    healthy again every payment completes."""
    sim = fdist.sim
    port = sim.port
    base_args = ["acquirer-sim", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", os.path.join(fdist.base_dir, "sim-data")]
    bad = ["--latency-ms", "2000"] if mode == "timeout" else ["--failure-rate", "1.0"]
    proc = fdist.workers["processor"]

    def breaker_open() -> bool:
        return fdist.metric_sum("paystream_circuit_state", [proc]) >= 1

    def inject():
        sim.terminate(timeout_s=30)
        sim.args = base_args + bad
        sim.start()
        pslib.wait_until(breaker_open, 60, interval_s=0.2, what="the processor's circuit breaker to open")

    def recover():
        sim.terminate(timeout_s=60)
        sim.args = base_args
        sim.start()
    counts, _ = run_fault(fdist, fmerchant, f"acquirer {mode}", inject, recover, during_s=3.0)
    # Intake never waits on the acquirer: bounded even while every charge was failing.
    assert counts["intake_p99_ms"] is not None and counts["intake_p99_ms"] < 2000, counts
