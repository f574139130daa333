"""The crash loop: kill -9 twenty times at random moments while payments, refunds and
webhook deliveries are in flight, restarting on the same data dir each time; then
reconcile everything the API acknowledged against the API, the ledger, the acquirer
simulator's charge records and what the webhook receiver got.

The clients are Python threads (a few hundred requests per second here): the load
generator does not survive its server being killed, so the 5,000/s of the engine issue
is not reached by this test; it checks the invariants, the benchmarks measure the rate."""
import collections
import http.client
import os
import random
import threading
import time

import pytest

from pslib import TERMINAL, WebhookReceiver, kill_loop, new_merchant, ro_db, wait_until

SEED = 20261202
PAYERS = 8
REFUNDERS = 2
KILLS = 20
RUN_S = 45.0
SOURCES = ["tok_approve"] * 7 + ["tok_decline", "tok_transient", "tok_fraud"]
EXPECTED = {"tok_approve": ("succeeded", None), "tok_transient": ("succeeded", None),
            "tok_decline": ("failed", "card_declined"), "tok_fraud": ("failed", "fraud_declined")}
RETRY = (409, 429, 503)


def _answer(c, pid, body, key):
    """One more try of a refund request; None while the server refuses to answer yet."""
    try:
        resp = c.post(f"/v1/payments/{pid}/refunds", body, idem=key)
    except (OSError, http.client.HTTPException):
        c.close()
        return None
    return None if resp.status in RETRY else resp


@pytest.mark.crash
@pytest.mark.slow
def test_kill9_loop_with_refunds_and_webhooks(server):
    rnd = random.Random(SEED)
    srv = server("--acquirer-timeout-ms", "300", "--acquirer-latency-ms", "2",
                 "--velocity-max-per-source", "100000000",
                 "--webhook-retry-schedule-ms", "50,100,200,400,800,1600,3200,6400")
    m = new_merchant(srv, rate_limit={"per_second": 1000000, "burst": 10000000})
    receiver = WebhookReceiver()
    c0 = srv.client(m.api_key)
    r = c0.post("/v1/webhook_endpoints", {"url": receiver.url("/loop")})
    assert r.status == 201, r
    c0.close()

    stop = threading.Event()
    lock = threading.Lock()
    acked = {}          # payment key -> (payment id, amount, source)
    attempted = set()
    refunds = {}        # refund key -> (refund id, payment id)
    errors = collections.Counter()
    unexpected = []
    unanswered = {}   # refund key -> (payment id, body): sent, no answer seen before the run ended

    def call(c, fn):
        """fn() until it answers something other than a retryable refusal or a broken
        connection (the server is being killed), or the run ends. None: the run ended."""
        while not stop.is_set():
            try:
                resp = fn()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors[type(e).__name__] += 1
                c.close()
                time.sleep(0.05)
                continue
            if resp.status in RETRY:
                with lock:
                    errors[str(resp.status)] += 1
                time.sleep(0.05)
                continue
            return resp
        return None

    def payer(tid):
        r = random.Random(SEED + tid)
        c = srv.client(m.api_key)
        c.timeout_s = 10
        i = 0
        while not stop.is_set():
            key = f"loop-{tid}-{i}"
            amount, source = r.randint(100, 10_000), r.choice(SOURCES)
            with lock:
                attempted.add(key)
            resp = call(c, lambda: c.create_payment(amount, "USD", source, idem=key))
            if resp is None:
                break
            if resp.status in (201, 202):
                with lock:
                    acked[key] = (resp.json["id"], amount, source)
            else:
                with lock:
                    unexpected.append((key, resp))
            i += 1
        c.close()

    def refunder(tid):
        r = random.Random(SEED + 100 + tid)
        c = srv.client(m.api_key)
        c.timeout_s = 10
        i = 0
        while not stop.is_set():
            with lock:
                candidates = [v for v in acked.values() if v[2] in ("tok_approve", "tok_transient")]
            if len(candidates) < 20:
                time.sleep(0.05)
                continue
            pid, amount, _ = r.choice(candidates[:-10])   # not the newest: likely settled
            key = f"loop-refund-{tid}-{i}"
            body = {"amount": r.randint(1, max(1, amount // 2))}
            with lock:
                unanswered[key] = (pid, body)
            resp = call(c, lambda: c.post(f"/v1/payments/{pid}/refunds", body, idem=key))
            if resp is None:
                break   # stays in `unanswered`: it may have been accepted before the run ended
            with lock:
                unanswered.pop(key, None)
            if resp.status in (201, 202):
                with lock:
                    refunds[key] = (resp.json["id"], pid)
            elif resp.status != 422:   # not succeeded yet, or nothing left to refund: refused
                with lock:
                    unexpected.append((key, resp))
            i += 1
            time.sleep(0.01)
        c.close()

    threads = ([threading.Thread(target=payer, args=(t,), daemon=True) for t in range(PAYERS)] +
               [threading.Thread(target=refunder, args=(t,), daemon=True) for t in range(REFUNDERS)])
    t_start = time.monotonic()
    kills = kill_loop(srv, threads, stop, rnd, KILLS, RUN_S, (0.5, RUN_S / KILLS * 2 - 0.8), 0.3)
    assert not unexpected, unexpected[:5]
    assert kills == KILLS
    assert len(acked) > 200, f"too few payments acknowledged: {len(acked)}"
    assert len(refunds) > 20, f"too few refunds acknowledged: {len(refunds)}"
    # A refund whose answer the run's end cut off may have been accepted: ask again with
    # its key (a replay if it was, refused or created now if not) so the sums below are exact.
    rc = srv.client(m.api_key)
    for key, (pid, body) in unanswered.items():
        resp = wait_until(lambda: _answer(rc, pid, body, key), 60, 0.2, f"an answer for refund {key}")
        if resp.status in (201, 202):
            refunds[key] = (resp.json["id"], pid)
        else:
            assert resp.status == 422, (key, resp)
    rc.close()

    # Every acknowledged payment and refund is terminal; payments as their source says.
    # (Read as lists: one GET per payment would dominate the test's time.)
    c = srv.client(m.api_key)
    acked_ids = {pid for pid, _, _ in acked.values()}

    def settled_list():
        got = c.list_all("/v1/payments")
        ids = {p["id"] for p in got}
        if not acked_ids <= ids or any(p["status"] not in TERMINAL for p in got):
            return None
        return got
    listed = wait_until(settled_list, 240, 1.0, "every payment listed and terminal")
    assert len({p["id"] for p in listed}) == len(listed), "a payment listed twice"
    assert len(listed) <= len(attempted), "more payments than idempotency keys used"
    final = {p["id"]: p for p in listed}   # unacknowledged keys may have created one: terminal too
    for key, (pid, amount, source) in acked.items():
        p = final[pid]
        assert p["amount"] == amount, p
        assert (p["status"], p["failure_code"]) == EXPECTED[source], (key, source, p)
    deadline = time.monotonic() + 120
    refunded = collections.Counter()
    refund_final = {}
    for key, (rid, pid) in refunds.items():
        rf = c.wait_refund(rid, timeout_s=max(1.0, deadline - time.monotonic()))
        assert rf.get("payment_id", rf.get("payment", pid)) == pid, rf
        refund_final[rid] = rf
        if rf["status"] == "succeeded":
            refunded[pid] += rf["amount"]
    # Σ refunds ≤ captured, and what the payment says it refunded is that sum.
    final = {p["id"]: p for p in c.list_all("/v1/payments")}   # amount_refunded after the refunds
    for pid, total in refunded.items():
        p = final[pid]
        assert total <= p["amount"], (pid, total, p)
        assert p["amount_refunded"] == total, (pid, total, p)
    api_balance = c.balance().get("USD", 0)

    # Every merchant event was delivered at least once, under its own id (webhook-id).
    events = c.list_all("/v1/events")
    event_ids = {e["id"] for e in events}
    assert len(event_ids) == len(events), "an event listed twice"

    def all_delivered():
        got = {d.headers.get("webhook-id") for d in receiver.snapshot()}
        return got if event_ids <= got else None
    # The run leaves some 17,000 events; on a loaded machine (CI runs this beside the other
    # e2e suites) the dispatcher was seen still delivering them, in order, after 180 s (a
    # third of them left, none failed). Allow for that: the bound is on progress, not speed.
    delivered = wait_until(all_delivered, 600, 2.0, "every event delivered")
    assert delivered <= event_ids, f"deliveries of unknown events: {sorted(delivered - event_ids)[:5]}"
    by_event = collections.defaultdict(set)
    for d in receiver.snapshot():
        body = d.json
        by_event[d.headers["webhook-id"]].add(body["id"])
    assert all(ids == {eid} for eid, ids in by_event.items()), "a webhook-id named another event"
    c.close()
    receiver.close()
    assert srv.terminate() == 0

    succeeded = {pid for pid, p in final.items() if p["status"] == "succeeded"}
    # The acquirer simulator: one charge per payment, approved exactly for the succeeded
    # ones; its refunds never exceed the charge.
    sim = ro_db(os.path.join(srv.data_dir, "acquirer-sim.db"))
    try:
        dup = sim.execute("SELECT payment_id FROM charges GROUP BY payment_id HAVING COUNT(*) > 1").fetchall()
        approved = {pid for (pid,) in sim.execute("SELECT payment_id FROM charges WHERE approved = 1")}
        over = sim.execute(
            "SELECT c.payment_id FROM charges c JOIN refunds r ON r.payment_id = c.payment_id "
            "GROUP BY c.payment_id HAVING SUM(r.amount_minor) > MAX(c.amount_minor)").fetchall()
    finally:
        sim.close()
    assert not dup, f"payment charged twice: {dup[:5]}"
    assert succeeded <= approved, f"succeeded without an approved charge: {sorted(succeeded - approved)[:5]}"
    assert not (approved & (set(final) - succeeded)), "a failed payment has an approved charge"
    assert not over, f"acquirer refunded more than charged: {over[:5]}"

    # The ledger: one settlement per succeeded payment, one entry per succeeded refund,
    # every entry balanced, and the maintained balance equal to the sum of the postings.
    db = ro_db(os.path.join(srv.data_dir, "paystream.db"))
    try:
        settlements = collections.Counter(pid for (pid,) in db.execute(
            "SELECT payment_id FROM journal_entries WHERE kind = 'settlement'"))
        refund_entries = collections.Counter(rid for (rid,) in db.execute(
            "SELECT refund_id FROM journal_entries WHERE kind = 'refund'"))
        unbalanced = db.execute(
            "SELECT entry_id FROM postings GROUP BY entry_id, currency HAVING SUM(amount_minor) != 0").fetchall()
        account = f"merchant:{m.id}:available"
        posted = db.execute("SELECT COALESCE(SUM(amount_minor), 0) FROM postings WHERE account = ? AND currency = 'USD'",
                            (account,)).fetchone()[0]
        maintained = db.execute("SELECT amount_minor FROM account_balances WHERE account = ? AND currency = 'USD'",
                                (account,)).fetchone()[0]
    finally:
        db.close()
    assert not unbalanced, unbalanced[:5]
    assert all(n == 1 for n in settlements.values()), "a payment settled twice"
    assert set(settlements) == succeeded
    ok_refunds = {rid for rid, rf in refund_final.items() if rf["status"] == "succeeded"}
    assert all(n == 1 for n in refund_entries.values()), "a refund posted twice"
    assert set(refund_entries) == ok_refunds
    assert maintained == posted
    expected = sum(final[pid]["amount"] for pid in succeeded) - sum(refunded.values())
    assert -posted == expected == api_balance

    print(f"\ncrash loop: kills={kills} payments={len(final)} acked={len(acked)} succeeded={len(succeeded)} "
          f"refunds={len(refunds)} refunded={sum(refunded.values())} events={len(event_ids)} "
          f"deliveries={len(receiver.snapshot())} client_errors={dict(errors)} "
          f"elapsed={time.monotonic() - t_start:.0f}s")
