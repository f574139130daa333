"""kill -9 at random moments under load, restart on the same data dir, then reconcile:
no acknowledged payment lost, no duplicate charge or posting, ledger balanced."""
import collections
import http.client
import os
import random
import threading
import time

import pytest

from pslib import TERMINAL, kill_loop, new_merchant, ro_db, wait_until

SEED = 20240601
THREADS = 8
KILLS = 5
RUN_S = 30.0
SOURCES = ["tok_approve"] * 6 + ["tok_decline", "tok_insufficient_funds", "tok_transient", "tok_fraud"]
EXPECTED = {"tok_approve": ("succeeded", None), "tok_transient": ("succeeded", None),
            "tok_decline": ("failed", "card_declined"),
            "tok_insufficient_funds": ("failed", "insufficient_funds"),
            "tok_fraud": ("failed", "fraud_declined")}


@pytest.mark.crash
@pytest.mark.slow
def test_kill9_reconcile(server):
    rnd = random.Random(SEED)
    # Velocity rules would decline a hot test source; this test is about crashes.
    srv = server("--acquirer-timeout-ms", "300", "--acquirer-latency-ms", "5",
                 "--velocity-max-per-source", "100000000")
    # The rate limit would answer 429 once the server outpaces 1000 payments/s; this test
    # is about crashes.
    m = new_merchant(srv, rate_limit={"per_second": 1000000, "burst": 10000000})
    stop = threading.Event()
    lock = threading.Lock()
    acked = {}        # key -> (payment id, amount, source, status code)
    attempted = {}    # key -> (amount, source)
    errors = collections.Counter()
    unexpected = []

    def worker(tid):
        r = random.Random(SEED + tid)
        c = srv.client(m.api_key)
        c.timeout_s = 10
        i = 0
        while not stop.is_set():
            key = f"crash-{tid}-{i}"
            amount, source = r.randint(1, 10_000), r.choice(SOURCES)
            with lock:
                attempted[key] = (amount, source)
            while not stop.is_set():   # same key until acknowledged or the run ends
                try:
                    resp = c.create_payment(amount, "USD", source, idem=key)
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        errors[type(e).__name__] += 1
                    c.close()
                    time.sleep(0.05)
                    continue
                if resp.status in (201, 202):
                    with lock:
                        acked[key] = (resp.json["id"], amount, source, resp.status)
                    break
                if resp.status in (409, 503):
                    with lock:
                        errors[str(resp.status)] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    unexpected.append((key, resp))
                break
            i += 1
        c.close()

    ts = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(THREADS)]
    kills = kill_loop(srv, ts, stop, rnd, KILLS, RUN_S, (1.0, RUN_S / KILLS - 1.0), 0.5)
    assert not unexpected, unexpected[:5]
    assert kills == KILLS
    assert len(acked) > 50, f"too few payments acknowledged: {len(acked)}"

    # Every acknowledged payment becomes terminal, with the outcome its source dictates.
    c = srv.client(m.api_key)
    deadline = time.monotonic() + 180
    final = {}
    for key, (pid, amount, source, _) in acked.items():
        p = c.wait_terminal(pid, timeout_s=max(1.0, deadline - time.monotonic()))
        assert p["amount"] == amount and p["currency"] == "USD", p
        assert (p["status"], p["failure_code"]) == EXPECTED[source], (key, source, p)
        final[pid] = p

    # Each key maps to one payment: a retry now replays the same id.
    for key, (pid, amount, source, _) in list(acked.items())[:: max(1, len(acked) // 200)]:
        r = c.create_payment(amount, "USD", source, idem=key)
        assert r.status in (201, 202) and r.json["id"] == pid, (key, r)
        assert r.header("Idempotent-Replayed") == "true"
    listed = c.list_all("/v1/payments")
    ids = [p["id"] for p in listed]
    assert len(ids) == len(set(ids)), "a payment listed twice"
    assert set(final) <= set(ids)
    assert len(ids) <= len(attempted), "more payments than idempotency keys used"
    # Unacknowledged keys may or may not have created a payment; those that did are terminal.
    for p in listed:
        if p["id"] not in final:
            final[p["id"]] = c.wait_terminal(p["id"], timeout_s=max(1.0, deadline - time.monotonic()))
    api_balance = c.balance().get("USD", 0)
    c.close()
    assert srv.terminate() == 0

    succeeded = {pid: p for pid, p in final.items() if p["status"] == "succeeded"}
    failed = {pid: p for pid, p in final.items() if p["status"] == "failed"}

    # Acquirer: one charge row per payment, approved for every succeeded one, never
    # approved for a failed one.
    sim = ro_db(os.path.join(srv.data_dir, "acquirer-sim.db"))
    try:
        dup = sim.execute("SELECT payment_id, COUNT(*) FROM charges GROUP BY payment_id HAVING COUNT(*) > 1").fetchall()
        charges = {pid: (amt, appr, calls) for pid, amt, appr, calls in
                   sim.execute("SELECT payment_id, amount_minor, approved, calls FROM charges")}
    finally:
        sim.close()
    assert not dup, f"payment charged twice: {dup[:5]}"
    for pid, p in succeeded.items():
        assert pid in charges, f"succeeded payment {pid} has no charge"
        amt, appr, _ = charges[pid]
        assert appr == 1 and amt == p["amount"], (pid, charges[pid])
    for pid, p in failed.items():
        if pid in charges:
            assert charges[pid][1] == 0, f"failed payment {pid} has an approved charge: {charges[pid]}"
    stray = set(charges) - set(final)
    assert not any(charges[s][1] == 1 for s in stray), f"approved charges without a payment: {sorted(stray)[:5]}"

    # Ledger: exactly one settlement per succeeded payment, none for failed; balanced.
    db = ro_db(os.path.join(srv.data_dir, "paystream.db"))
    try:
        settlements = collections.Counter(pid for (pid,) in db.execute(
            "SELECT payment_id FROM journal_entries WHERE kind = 'settlement'"))
        unbalanced = db.execute(
            "SELECT entry_id, currency, SUM(amount_minor) FROM postings GROUP BY entry_id, currency "
            "HAVING SUM(amount_minor) != 0").fetchall()
        empty_entries = db.execute(
            "SELECT COUNT(*) FROM journal_entries j WHERE NOT EXISTS "
            "(SELECT 1 FROM postings p WHERE p.entry_id = j.id)").fetchone()[0]
        merchant_sum = db.execute(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM postings WHERE account = ? AND currency = 'USD'",
            (f"merchant:{m.id}:available",)).fetchone()[0]
        n_events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        db.close()
    assert not unbalanced, f"unbalanced entries: {unbalanced[:5]}"
    assert empty_entries == 0
    twice = {pid: n for pid, n in settlements.items() if n != 1}
    assert not twice, f"payments settled more than once: {list(twice.items())[:5]}"
    assert set(settlements) == set(succeeded), (
        f"settled but not succeeded: {sorted(set(settlements) - set(succeeded))[:5]}; "
        f"succeeded but not settled: {sorted(set(succeeded) - set(settlements))[:5]}")
    expected_balance = sum(p["amount"] for p in succeeded.values())
    assert -merchant_sum == expected_balance
    assert api_balance == expected_balance

    print(f"\ncrash reconcile: kills={kills} keys={len(attempted)} acked={len(acked)} "
          f"payments={len(final)} succeeded={len(succeeded)} failed={len(failed)} "
          f"charges={len(charges)} settlements={sum(settlements.values())} events={n_events} "
          f"balance={expected_balance} client_errors={dict(errors)}")
