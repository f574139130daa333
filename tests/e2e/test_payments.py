"""Payments: creation (201 with Prefer: wait, 202 + polling), retrieval, listing with
cursor pagination, balance, ledger entries and the acquirer simulator's test sources."""
import time

import pytest

from pslib import TERMINAL, assert_error, new_key


def check_payment_shape(p, amount, currency):
    for k in ("id", "object", "amount", "currency", "status", "failure_code", "amount_refunded",
              "description", "metadata", "created", "updated"):
        assert k in p, f"payment lacks {k}: {p}"
    assert p["object"] == "payment"
    assert p["id"].startswith("pay_")
    assert p["amount"] == amount and p["currency"] == currency
    assert isinstance(p["created"], int) and isinstance(p["updated"], int)
    assert p["updated"] >= p["created"] > 1_600_000_000_000
    assert "source" not in p and "merchant_id" not in p and "idempotency_key" not in p


def test_prefer_wait_returns_201_succeeded(merchant):
    c = merchant.client
    r = c.create_payment(1234, "USD", "tok_approve", wait_ms=5000,
                         description="order 42", metadata={"order": "42"})
    assert r.status == 201, r
    p = r.json
    check_payment_shape(p, 1234, "USD")
    assert p["status"] == "succeeded" and p["failure_code"] is None
    assert p["amount_refunded"] == 0
    assert p["description"] == "order 42" and p["metadata"] == {"order": "42"}
    g = c.get(f"/v1/payments/{p['id']}")
    assert g.status == 200 and g.json == p


def test_plain_202_then_polling(merchant):
    c = merchant.client
    r = c.create_payment(500, "EUR", "tok_approve")
    assert r.status == 202, r
    p = r.json
    check_payment_shape(p, 500, "EUR")
    assert p["status"] == "processing" and p["failure_code"] is None
    assert p["metadata"] == {} and p["description"] is None
    done = c.wait_terminal(p["id"])
    assert done["status"] == "succeeded"
    assert done["created"] == p["created"] and done["updated"] >= p["updated"]


def test_prefer_wait_runs_out_gives_202(merchant):
    # tok_timeout cannot be terminal within 1 ms.
    c = merchant.client
    r = c.create_payment(700, "USD", "tok_timeout", wait_ms=1)
    assert r.status == 202, r
    assert r.json["status"] == "processing"
    done = c.wait_terminal(r.json["id"], timeout_s=30)
    assert done["status"] == "failed" and done["failure_code"] == "acquirer_timeout", done


def test_prefer_wait_failed_payment_is_201(merchant):
    r = merchant.client.create_payment(900, "USD", "tok_decline", wait_ms=5000)
    assert r.status == 201, r
    assert r.json["status"] == "failed" and r.json["failure_code"] == "card_declined"


@pytest.mark.parametrize("source,status,code", [
    ("tok_approve", "succeeded", None),
    ("tok_decline", "failed", "card_declined"),
    ("tok_insufficient_funds", "failed", "insufficient_funds"),
    ("tok_timeout", "failed", "acquirer_timeout"),
    ("tok_transient", "succeeded", None),
    ("tok_fraud", "failed", "fraud_declined"),
    ("tok_anything_else", "succeeded", None),
])
def test_test_sources(merchant, source, status, code):
    c = merchant.client
    r = c.create_payment(1500, "GBP", source)
    assert r.status == 202, r
    p = c.wait_terminal(r.json["id"], timeout_s=30)
    assert (p["status"], p["failure_code"]) == (status, code), p
    entries = c.get(f"/v1/ledger/entries?payment_id={p['id']}")
    assert entries.status == 200, entries
    kinds = [e["kind"] for e in entries.json["data"]]
    assert kinds == (["settlement"] if status == "succeeded" else []), entries.json
    assert c.balance().get("GBP", 0) == (1500 if status == "succeeded" else 0)


def test_get_unknown_payment_404(merchant):
    r = merchant.client.get("/v1/payments/pay_000000000000000000000000")
    assert_error(r, 404, "resource_missing")


def test_list_pagination_and_filter(merchant):
    c = merchant.client
    created = []  # in creation order
    for i, src in enumerate(["tok_approve", "tok_decline", "tok_approve", "tok_approve",
                             "tok_decline", "tok_approve", "tok_approve"]):
        p = c.pay_ok(100 + i, "USD", src)
        created.append(p)
        time.sleep(0.003)  # distinct creation times
    newest_first = [p["id"] for p in reversed(created)]

    # Page by 3: 3 + 3 + 1.
    pages, after = [], None
    while True:
        q = "/v1/payments?limit=3" + (f"&starting_after={after}" if after else "")
        r = c.get(q)
        assert r.status == 200, r
        j = r.json
        assert j["object"] == "list" and isinstance(j["has_more"], bool)
        pages.append([p["id"] for p in j["data"]])
        if not j["has_more"]:
            break
        after = j["data"][-1]["id"]
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1], pages
    assert sum(pages, []) == newest_first

    # Default limit 10 covers all 7.
    r = c.get("/v1/payments")
    assert [p["id"] for p in r.json["data"]] == newest_first and r.json["has_more"] is False

    failed = c.get("/v1/payments?status=failed").json
    assert [p["id"] for p in failed["data"]] == [p["id"] for p in reversed(created)
                                                 if p["status"] == "failed"]
    assert all(p["status"] == "failed" for p in failed["data"])
    ok = c.get("/v1/payments?status=succeeded&limit=2").json
    assert [p["id"] for p in ok["data"]] == [p["id"] for p in reversed(created)
                                             if p["status"] == "succeeded"][:2]
    assert ok["has_more"] is True
    ok2 = c.get(f"/v1/payments?status=succeeded&limit=100&starting_after={ok['data'][-1]['id']}").json
    assert [p["id"] for p in ok2["data"]] == [p["id"] for p in reversed(created)
                                              if p["status"] == "succeeded"][2:]
    assert c.get("/v1/payments?status=processing").json["data"] == []


@pytest.mark.parametrize("query,param", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("status=bogus", "status"),
])
def test_list_bad_query(merchant, query, param):
    r = merchant.client.get(f"/v1/payments?{query}")
    assert_error(r, 400, "parameter_invalid", param)


def test_list_unknown_cursor(merchant):
    r = merchant.client.get("/v1/payments?starting_after=pay_ffffffffffffffffffffffff")
    assert_error(r, 400, "cursor_invalid")


def test_balance_and_ledger(merchant):
    c = merchant.client
    assert all(v == 0 for v in c.balance().values())
    p1 = c.pay_ok(1000, "USD")
    p2 = c.pay_ok(500, "EUR")
    p3 = c.pay_ok(250, "USD")
    bad = c.pay_ok(700, "USD", "tok_decline")
    jpy = c.pay_ok(300, "JPY")
    assert [p["status"] for p in (p1, p2, p3, bad, jpy)] == ["succeeded"] * 3 + ["failed", "succeeded"]
    bal = {k: v for k, v in c.balance().items() if v != 0}
    assert bal == {"USD": 1250, "EUR": 500, "JPY": 300}, bal

    for p in (p1, p2, p3, jpy):
        r = c.get(f"/v1/ledger/entries?payment_id={p['id']}")
        assert r.status == 200, r
        entries = r.json["data"]
        assert len(entries) == 1, entries
        e = entries[0]
        assert e["object"] == "journal_entry" and e["kind"] == "settlement"
        assert e["payment_id"] == p["id"] and e["refund_id"] is None
        postings = {(x["account"], x["currency"]): x["amount"] for x in e["postings"]}
        assert postings == {("acquirer:clearing", p["currency"]): p["amount"],
                            (f"merchant:{merchant.id}:available", p["currency"]): -p["amount"]}, e
        assert sum(x["amount"] for x in e["postings"]) == 0
    r = c.get(f"/v1/ledger/entries?payment_id={bad['id']}")
    assert r.status == 200 and r.json["data"] == [], r


def test_ids_are_deterministic_per_key(merchant):
    k = new_key()
    a = merchant.client.create_payment(100, idem=k)
    b = merchant.client.create_payment(100, idem=k)
    assert a.status == 202 and b.status == 202
    assert a.json["id"] == b.json["id"]
    assert a.json["status"] in ("processing",) + TERMINAL
