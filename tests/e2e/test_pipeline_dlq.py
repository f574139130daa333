"""Poison events: undecodable and schema-invalid rows injected straight into the event
log (SQLite) of a running server end in tx.dlq; the pipeline keeps flowing."""
import json
import os
import sqlite3
import time
import uuid

import pytest

from pslib import new_merchant, suite_serve_flags, wait_until

# The rows are written into the SQLite engine's event log (ctest e2e_engine_sqlite). The
# log engine (the default) keeps the stages' events in its own log and bus, which nothing
# outside the process writes; its dead-lettering is covered by the contract suites
# (LogEngine) and by the webhook dead-letter replay test.
pytestmark = pytest.mark.skipif("--engine sqlite" not in " ".join(suite_serve_flags()),
                                reason="injects rows into the SQLite engine's event log (runs in e2e_engine_sqlite)")

TYPES = {"tx.initiated": "payment.initiated", "tx.validated": "payment.validated",
         "tx.settled": "payment.succeeded"}
SCHEMA_INVALID = json.dumps({"schema_version": 1, "payment": {"id": "pay_poison", "amount": "ten"}})


def inject(db_path, topic, data):
    eid = f"evt_poison_{uuid.uuid4().hex[:16]}"
    con = sqlite3.connect(db_path, timeout=15)
    try:
        con.execute("PRAGMA busy_timeout=15000")
        cur = con.execute(
            "INSERT INTO events(topic, partition, key, id, type, source, time_ms, traceparent, data) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (topic, 0, "pay_poison", eid, TYPES[topic], "/e2e/poison", int(time.time() * 1000), "", data))
        con.commit()
        return eid, cur.lastrowid
    finally:
        con.close()


def test_poison_rows_go_to_dlq(server):
    srv = server()
    m = new_merchant(srv)
    assert m.client.pay_ok(100)["status"] == "succeeded"  # pipeline warmed up
    db = os.path.join(srv.data_dir, "paystream.db")
    injected = {}
    for topic in TYPES:
        for kind, data in (("undecodable", "not json"), ("schema_invalid", SCHEMA_INVALID)):
            eid, off = inject(db, topic, data)
            injected[eid] = (topic, kind, off)
    # A normal payment after the poison still succeeds.
    p = m.client.pay_ok(555, "USD")
    assert p["status"] == "succeeded", p

    def all_dead():
        r = srv.cli("dlq", "list")
        assert r.returncode == 0, r.stderr
        rows = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
        by_id = {}
        for row in rows:
            by_id.setdefault(row["event_id"], []).append(row)
        return by_id if all(e in by_id for e in injected) else None
    by_id = wait_until(all_dead, 30, 0.25, "all poison rows in dlq list")
    for eid, (topic, kind, off) in injected.items():
        for row in by_id[eid]:
            assert row["topic"] == topic, row
            assert row["original_offset"] == off, row
            assert row["partition"] == 0
            assert row["event_type"] == TYPES[topic]
            assert isinstance(row["error"], str) and row["error"], row
            assert row["replayed"] is False
        # tx.settled has two consumers (ledger, notifier): at most one dead letter each.
        assert 1 <= len(by_id[eid]) <= (2 if topic == "tx.settled" else 1), by_id[eid]

    # The dead letters are rows of tx.dlq in the event log, too.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=15)
    try:
        n = con.execute("SELECT COUNT(*) FROM events WHERE topic='tx.dlq'").fetchone()[0]
    finally:
        con.close()
    assert n >= len(injected)

    # Still flowing, and the poison did not create payments or ledger entries.
    assert m.client.pay_ok(556, "USD")["status"] == "succeeded"
    assert m.client.balance()["USD"] == 100 + 555 + 556
    m2 = new_merchant(srv)
    assert m2.client.get("/v1/payments/pay_poison").status == 404
    assert srv.running()
    # Metric counts them.
    from pslib import raw_request
    st, _, body = raw_request(srv.port, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("paystream_dead_letters_total"):
            total += float(line.rsplit(" ", 1)[1])
    assert total >= len(injected), total
