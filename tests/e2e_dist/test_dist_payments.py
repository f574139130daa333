"""Payments across the distributed deployment: the gateway accepts, fraud, processor
(acquirer over HTTP), ledger and notifier run as separate processes over Kafka. Same
black-box behaviour as the embedded shape (SPEC §3)."""
import pytest

from pslib import TERMINAL, assert_error, new_key


def test_prefer_wait_returns_201_succeeded(merchant):
    c = merchant.client
    r = c.create_payment(1234, "USD", "tok_approve", wait_ms=10000,
                         description="order 42", metadata={"order": "42"})
    assert r.status == 201, r
    p = r.json
    assert p["object"] == "payment" and p["id"].startswith("pay_")
    assert p["status"] == "succeeded" and p["failure_code"] is None
    assert (p["amount"], p["currency"], p["amount_refunded"]) == (1234, "USD", 0)
    assert p["description"] == "order 42" and p["metadata"] == {"order": "42"}
    g = c.get(f"/v1/payments/{p['id']}")
    assert g.status == 200 and g.json == p, g
    entries = c.get(f"/v1/ledger/entries?payment_id={p['id']}").json["data"]
    assert [e["kind"] for e in entries] == ["settlement"], entries
    assert sum(x["amount"] for x in entries[0]["postings"]) == 0
    assert c.balance()["USD"] == 1234


def test_202_then_terminal_seen_through_the_other_gateway(merchant, gw_b):
    r = merchant.client.create_payment(500, "EUR", "tok_approve")
    assert r.status == 202, r
    assert r.json["status"] == "processing"
    other = gw_b.client(merchant.api_key)
    try:
        done = other.wait_terminal(r.json["id"])
        assert done["status"] == "succeeded", done
        assert other.balance()["EUR"] == 500
        assert [p["id"] for p in other.list_all("/v1/payments")] == [r.json["id"]]
    finally:
        other.close()


@pytest.mark.parametrize("source,status,code", [
    ("tok_decline", "failed", "card_declined"),
    ("tok_insufficient_funds", "failed", "insufficient_funds"),
    ("tok_fraud", "failed", "fraud_declined"),
    ("tok_timeout", "failed", "acquirer_timeout"),
    ("tok_transient", "succeeded", None),
])
def test_test_sources(merchant, source, status, code):
    c = merchant.client
    r = c.create_payment(1500, "GBP", source, wait_ms=10000)
    assert r.status in (201, 202), r
    p = c.wait_terminal(r.json["id"], timeout_s=30)
    assert (p["status"], p["failure_code"]) == (status, code), p
    kinds = [e["kind"] for e in c.get(f"/v1/ledger/entries?payment_id={p['id']}").json["data"]]
    assert kinds == (["settlement"] if status == "succeeded" else []), kinds
    assert c.balance().get("GBP", 0) == (1500 if status == "succeeded" else 0)


def refund(c, payment_id, amount=None, idem=None):
    body = {} if amount is None else {"amount": amount}
    return c.post(f"/v1/payments/{payment_id}/refunds", body, idem=idem or new_key("rf"))


def test_partial_full_and_over_refund(merchant, gw_b):
    c = merchant.client
    p = c.pay_ok(1000, "USD")
    assert p["status"] == "succeeded", p
    assert_error(refund(c, p["id"], 1001), 422, "amount_exceeds_refundable")

    r = refund(c, p["id"], 300)
    assert r.status == 202, r
    assert r.json["status"] == "processing" and r.json["amount"] == 300
    assert c.wait_refund(r.json["id"])["status"] == "succeeded"
    assert c.get(f"/v1/payments/{p['id']}").json["amount_refunded"] == 300
    assert c.balance()["USD"] == 700

    # The rest, through the other gateway: empty body = everything still refundable.
    other = gw_b.client(merchant.api_key)
    try:
        r2 = other.post(f"/v1/payments/{p['id']}/refunds", raw=b"", idem=new_key("rf"))
        assert r2.status == 202, r2
        assert r2.json["amount"] == 700
        assert other.wait_refund(r2.json["id"])["status"] == "succeeded"
    finally:
        other.close()
    assert c.get(f"/v1/payments/{p['id']}").json["amount_refunded"] == 1000
    assert c.balance()["USD"] == 0
    entries = c.get(f"/v1/ledger/entries?payment_id={p['id']}").json["data"]
    assert sorted(e["kind"] for e in entries) == ["refund", "refund", "settlement"], entries
    for e in entries:
        assert sum(x["amount"] for x in e["postings"]) == 0, e
    assert_error(refund(c, p["id"], 1), 422, "amount_exceeds_refundable")
    assert_error(refund(c, p["id"]), 422, "amount_exceeds_refundable")


def test_refund_of_failed_payment(merchant):
    c = merchant.client
    p = c.pay_ok(1000, "USD", "tok_decline")
    assert p["status"] == "failed"
    assert_error(refund(c, p["id"], 10), 422, "payment_not_succeeded")


def test_tenant_isolation_across_gateways(dist, gw_a, gw_b, receiver):
    from pslib import new_merchant, wait_until
    a, b = new_merchant(gw_a), new_merchant(gw_b)
    ca = a.client
    cb = gw_b.client(b.api_key)
    cb_on_a = gw_a.client(b.api_key)
    try:
        p = ca.pay_ok(1000, "USD")
        assert p["status"] == "succeeded"
        rf = refund(ca, p["id"], 100)
        assert rf.status == 202, rf
        rf = ca.wait_refund(rf.json["id"])
        ep = ca.post("/v1/webhook_endpoints", {"url": receiver.url()})
        assert ep.status == 201, ep
        ep = ep.json
        ev = wait_until(lambda: ca.get("/v1/events").json["data"], 20, 0.1, "an event for A")[0]
        for client in (cb, cb_on_a):
            for r in (client.get(f"/v1/payments/{p['id']}"),
                      refund(client, p["id"], 1),
                      client.get(f"/v1/refunds/{rf['id']}"),
                      client.get(f"/v1/ledger/entries?payment_id={p['id']}"),
                      client.get(f"/v1/webhook_endpoints/{ep['id']}"),
                      client.get(f"/v1/events/{ev['id']}"),
                      client.post(f"/v1/events/{ev['id']}/redeliver")):
                assert_error(r, 404, "resource_missing")
            assert client.get("/v1/payments").json["data"] == []
            assert client.get("/v1/events").json["data"] == []
            assert all(v == 0 for v in client.balance().values())
        assert ca.get(f"/v1/payments/{p['id']}").json["amount_refunded"] == 100
        ca.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")
    finally:
        for c in (ca, cb, cb_on_a):
            c.close()


def test_unknown_key_is_401_on_both_gateways(gw_a, gw_b):
    for g in (gw_a, gw_b):
        c = g.client("sk_" + "0" * 48)
        try:
            assert_error(c.get("/v1/balance"), 401, "unauthorized")
        finally:
            c.close()


def test_ids_are_deterministic_per_key_across_gateways(merchant, gw_b):
    k = new_key()
    a = merchant.client.create_payment(100, idem=k)
    other = gw_b.client(merchant.api_key)
    try:
        b = other.create_payment(100, idem=k)
    finally:
        other.close()
    assert a.status == 202 and b.status == 202, (a, b)
    assert a.json["id"] == b.json["id"]
    assert b.body == a.body and b.header("Idempotent-Replayed") == "true"
    assert a.json["status"] in ("processing",) + TERMINAL
    merchant.client.wait_terminal(a.json["id"])
