"""A data dir keeps the engine it was started with: the log engine never reads the
SQLite engine's unconsumed stage records, and the SQLite engine never reads the log
engine's log, so a switch that would strand records is refused with a clear message;
a drained SQLite data dir switches to the log engine with its history intact."""
import os
import sqlite3
import time

import pytest

from pslib import new_merchant, suite_serve_flags

pytestmark = pytest.mark.skipif(any(f == "--engine" for f in suite_serve_flags()),
                                reason="starts servers with their own --engine")


def refused(srv):
    with pytest.raises(AssertionError) as e:
        srv.start()
    return str(e.value)


def test_sqlite_engine_refuses_a_log_engine_data_dir(server):
    srv = server("--engine", "log")
    m = new_merchant(srv)
    assert m.client.pay_ok(100)["status"] == "succeeded"
    assert srv.terminate() == 0
    again = server("--engine", "sqlite", data_dir=srv.data_dir, start=False)
    msg = refused(again)
    assert "run by the log engine; start it with --engine log" in msg, msg
    back = server("--engine", "log", data_dir=srv.data_dir)
    c = back.client(m.api_key)
    assert len(c.list_all("/v1/payments")) == 1


def test_log_engine_refuses_undrained_sqlite_data_dir_and_takes_a_drained_one(server):
    srv = server("--engine", "sqlite")
    m = new_merchant(srv)
    paid = m.client.pay_ok(250)
    assert paid["status"] == "succeeded"
    assert srv.terminate() == 0
    db = os.path.join(srv.data_dir, "paystream.db")
    # A record the SQLite engine's fraud stage has not consumed yet.
    con = sqlite3.connect(db, timeout=15)
    try:
        cur = con.execute(
            "INSERT INTO events(topic, partition, key, id, type, source, time_ms, traceparent, data) "
            "VALUES ('tx.initiated', 0, 'pay_x', 'evt_switch_pending', 'payment.initiated', '/e2e', ?, '', '{}')",
            (int(time.time() * 1000),))
        offset = cur.lastrowid
        con.commit()
    finally:
        con.close()
    switched = server("--engine", "log", data_dir=srv.data_dir, start=False)
    msg = refused(switched)
    assert "pipeline records the SQLite engine has not settled" in msg, msg
    # Drained (here: the record consumed, as the fraud stage would): the switch goes through.
    con = sqlite3.connect(db, timeout=15)
    try:
        con.execute("UPDATE consumer_positions SET position = ? WHERE group_id = 'fraud' AND topic = 'tx.initiated'",
                    (offset,))
        con.commit()
    finally:
        con.close()
    ok = server("--engine", "log", data_dir=srv.data_dir)
    c = ok.client(m.api_key)
    assert c.get(f"/v1/payments/{paid['id']}").json["status"] == "succeeded"
    assert c.pay_ok(300)["status"] == "succeeded"
    assert c.balance()["USD"] == 250 + 300
