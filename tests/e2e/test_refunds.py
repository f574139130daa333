"""Refunds: partial and full, over-refund, refund of a failed payment, and concurrent
refunds that must never exceed the captured amount."""
import threading

import pslib
from pslib import assert_error, new_key


def refund(c, payment_id, amount=None, idem=None):
    body = {} if amount is None else {"amount": amount}
    return c.post(f"/v1/payments/{payment_id}/refunds", body, idem=idem or new_key("rf"))


def entries_of(c, payment_id):
    r = c.get(f"/v1/ledger/entries?payment_id={payment_id}")
    assert r.status == 200, r
    return r.json["data"]


def test_partial_then_full_refund(merchant):
    c = merchant.client
    p = c.pay_ok(1000, "USD")
    assert p["status"] == "succeeded"

    r = refund(c, p["id"], 300)
    assert r.status == 202, r
    rf = r.json
    assert rf["object"] == "refund" and rf["id"].startswith("re_")
    assert rf["payment_id"] == p["id"] and rf["amount"] == 300 and rf["currency"] == "USD"
    assert rf["status"] == "processing" and rf["failure_code"] is None
    done = c.wait_refund(rf["id"])
    assert done["status"] == "succeeded", done
    pay = c.get(f"/v1/payments/{p['id']}").json
    assert pay["amount_refunded"] == 300 and pay["status"] == "succeeded"
    assert c.balance()["USD"] == 700

    # Empty body = everything still refundable.
    r2 = c.post(f"/v1/payments/{p['id']}/refunds", raw=b"", idem=new_key("rf"))
    assert r2.status == 202, r2
    assert r2.json["amount"] == 700
    assert c.wait_refund(r2.json["id"])["status"] == "succeeded"
    pay = c.get(f"/v1/payments/{p['id']}").json
    assert pay["amount_refunded"] == 1000
    assert c.balance()["USD"] == 0

    entries = entries_of(c, p["id"])
    kinds = sorted(e["kind"] for e in entries)
    assert kinds == ["refund", "refund", "settlement"], entries
    for e in entries:
        assert sum(x["amount"] for x in e["postings"]) == 0, e
        if e["kind"] == "refund":
            assert e["refund_id"] in (rf["id"], r2.json["id"])
            amt = 300 if e["refund_id"] == rf["id"] else 700
            got = {x["account"]: x["amount"] for x in e["postings"]}
            assert got == {f"merchant:{merchant.id}:available": amt, "acquirer:clearing": -amt}, e

    # Nothing left.
    assert_error(refund(c, p["id"], 1), 422, "amount_exceeds_refundable")
    assert_error(refund(c, p["id"]), 422, "amount_exceeds_refundable")


def test_refund_more_than_refundable(merchant):
    c = merchant.client
    p = c.pay_ok(1000, "EUR")
    assert_error(refund(c, p["id"], 1001), 422, "amount_exceeds_refundable")
    assert c.get(f"/v1/payments/{p['id']}").json["amount_refunded"] == 0
    # The refused key stays unused: the same key with a valid amount is accepted.
    k = new_key("rf")
    assert_error(refund(c, p["id"], 5000, idem=k), 422, "amount_exceeds_refundable")
    r = refund(c, p["id"], 1000, idem=k)
    assert r.status == 202, r
    assert c.wait_refund(r.json["id"])["status"] == "succeeded"


def test_refund_of_failed_payment(merchant):
    c = merchant.client
    p = c.pay_ok(1000, "USD", "tok_decline")
    assert p["status"] == "failed"
    assert_error(refund(c, p["id"]), 422, "payment_not_succeeded")
    assert_error(refund(c, p["id"], 10), 422, "payment_not_succeeded")


def test_refund_bad_requests(merchant):
    c = merchant.client
    p = c.pay_ok(1000, "USD")
    assert_error(refund(c, "pay_000000000000000000000000", 10), 404, "resource_missing")
    assert_error(c.post(f"/v1/payments/{p['id']}/refunds", {"amount": 10}), 400, "idempotency_key_missing")
    assert_error(refund(c, p["id"], 0), 400, "amount_invalid", "amount")
    assert_error(refund(c, p["id"], -5), 400, "amount_invalid", "amount")
    assert_error(c.post(f"/v1/payments/{p['id']}/refunds", {"amount": 10, "reason": "x"},
                        idem=new_key()), 400, "parameter_unknown", "reason")
    assert_error(c.get("/v1/refunds/re_000000000000000000000000"), 404, "resource_missing")


def test_refund_idempotent_replay(merchant):
    c = merchant.client
    p = c.pay_ok(1000, "USD")
    k = new_key("rf")
    a = refund(c, p["id"], 100, idem=k)
    b = refund(c, p["id"], 100, idem=k)
    assert a.status == 202 and b.status == 202
    assert b.body == a.body and b.header("Idempotent-Replayed") == "true"
    assert_error(refund(c, p["id"], 101, idem=k), 422, "idempotency_key_mismatch")
    c.wait_refund(a.json["id"])
    assert c.get(f"/v1/payments/{p['id']}").json["amount_refunded"] == 100


def test_concurrent_refunds_never_exceed_amount(merchant, shared):
    c = merchant.client
    p = c.pay_ok(1000, "USD")
    results = [None] * 10
    barrier = threading.Barrier(10)

    def worker(i):
        cl = shared.client(merchant.api_key)
        try:
            barrier.wait(timeout=10)
            results[i] = refund(cl, p["id"], 150)
        finally:
            cl.close()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert all(r is not None for r in results), results
    accepted = [r.json for r in results if r.status == 202]
    for r in results:
        if r.status != 202:
            assert_error(r, 422, "amount_exceeds_refundable")
    finals = [c.wait_refund(rf["id"]) for rf in accepted]
    succeeded = [f for f in finals if f["status"] == "succeeded"]
    total = sum(f["amount"] for f in succeeded)
    assert total <= 1000
    assert len(succeeded) == 6, f"1000 // 150 = 6 refunds fit; got {len(succeeded)}: {finals}"
    pay = c.get(f"/v1/payments/{p['id']}").json
    assert pay["amount_refunded"] == total
    assert c.balance()["USD"] == 1000 - total
    entries = entries_of(c, p["id"])
    refund_entries = [e for e in entries if e["kind"] == "refund"]
    assert sorted(e["refund_id"] for e in refund_entries) == sorted(f["id"] for f in succeeded)
    for e in entries:
        assert sum(x["amount"] for x in e["postings"]) == 0, e
    # Every posting to the merchant account adds up to its balance.
    net = sum(x["amount"] for e in entries for x in e["postings"]
              if x["account"] == f"merchant:{merchant.id}:available")
    assert -net == 1000 - total


def test_refunds_give_the_fee_back_pro_rata(server):
    """With --fee-bps, a full refund of a merchant's first payment succeeds (the merchant
    was credited the amount minus the fee and is debited exactly that), and partial refunds
    give back the fee pro rata, adding up to exactly the fee: afterwards the merchant's
    balance and the fee account are back at zero."""
    s = server("--fee-bps", "290", "--fee-fixed-minor", "30")
    m = pslib.new_merchant(s)
    c = m.client

    def postings(e):
        return {x["account"]: x["amount"] for x in e["postings"]}

    try:
        p = c.pay_ok(1000, "USD")
        assert p["status"] == "succeeded", p
        fee = 1000 * 290 // 10000 + 30  # 59
        assert c.balance()["USD"] == 1000 - fee
        r = refund(c, p["id"])  # everything: 1000
        assert r.status == 202, r
        assert c.wait_refund(r.json["id"])["status"] == "succeeded"
        assert c.balance().get("USD", 0) == 0
        entries = entries_of(c, p["id"])
        [settle] = [e for e in entries if e["kind"] == "settlement"]
        [rev] = [e for e in entries if e["kind"] == "refund"]
        assert postings(rev) == {"acquirer:clearing": -1000, f"merchant:{m.id}:available": 1000 - fee,
                                 "platform:fees": fee}, rev
        for acct, amount in postings(settle).items():
            assert amount + postings(rev)[acct] == 0, (acct, settle, rev)

        # Three partial refunds of a second payment, amounts that do not divide evenly.
        q = c.pay_ok(1000, "USD")
        for amount in (333, 333, None):  # None: the 334 left
            rq = refund(c, q["id"], amount)
            assert rq.status == 202, rq
            assert c.wait_refund(rq.json["id"])["status"] == "succeeded"
        shares = [postings(e)["platform:fees"] for e in entries_of(c, q["id"]) if e["kind"] == "refund"]
        assert sorted(shares) == [19, 20, 20], shares  # floor(59*333/1000), then the cumulative rest
        assert sum(shares) == fee
        assert c.balance().get("USD", 0) == 0
    finally:
        c.close()
