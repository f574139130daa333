"""Idempotency-Key semantics with two gateways sharing Redis and PostgreSQL: a replay or a
concurrent duplicate may hit either gateway and must still map to one payment."""
import threading

from pslib import assert_error, new_key

BODY = {"amount": 4321, "currency": "USD", "source": "tok_approve"}


def post(c, body, key, headers=None):
    h = dict(headers or {})
    h["Idempotency-Key"] = key
    return c.request("POST", "/v1/payments", body=body, headers=h)


def test_replay_byte_for_byte_on_both_gateways(merchant, gw_b):
    c = merchant.client
    k = new_key()
    first = post(c, BODY, k)
    assert first.status == 202, first
    assert first.header("Idempotent-Replayed") in (None, "false")
    c.wait_terminal(first.json["id"])
    other = gw_b.client(merchant.api_key)
    try:
        for client in (c, other):
            again = post(client, BODY, k)
            assert again.status == 202, again
            assert again.body == first.body, "replay must return the first response byte for byte"
            assert again.header("Idempotent-Replayed") == "true"
            assert again.json["status"] == "processing"  # the first response, not the current state
    finally:
        other.close()


def test_replay_of_201(merchant, gw_b):
    k = new_key()
    first = post(merchant.client, BODY, k, {"Prefer": "wait=10000"})
    assert first.status == 201, first
    other = gw_b.client(merchant.api_key)
    try:
        again = post(other, BODY, k)
    finally:
        other.close()
    assert again.status == 201 and again.body == first.body, again
    assert again.header("Idempotent-Replayed") == "true"


def test_mismatch_on_both_gateways(merchant, gw_b):
    c = merchant.client
    k = new_key()
    assert post(c, BODY, k).status == 202
    other = gw_b.client(merchant.api_key)
    try:
        for client in (c, other):
            r = post(client, dict(BODY, amount=4322), k)
            assert_error(r, 422, "idempotency_key_mismatch", type_="idempotency_error")
    finally:
        other.close()


def test_concurrent_same_key_across_gateways(merchant, gw_a, gw_b):
    k = new_key()
    n = 20
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        cl = (gw_a if i % 2 == 0 else gw_b).client(merchant.api_key)
        try:
            cl._connection()
            barrier.wait(timeout=10)
            results[i] = post(cl, BODY, k)
        finally:
            cl.close()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert all(r is not None for r in results), results
    statuses = sorted(r.status for r in results)
    assert set(statuses) <= {202, 409}, statuses
    ok = [r for r in results if r.status == 202]
    assert ok, statuses
    assert len({r.body for r in ok}) == 1, "all 202 bodies must be identical"
    assert sum(1 for r in ok if r.header("Idempotent-Replayed") != "true") == 1, \
        "exactly one original response"
    for r in results:
        if r.status == 409:
            assert_error(r, 409, "idempotency_key_in_use", type_="idempotency_error")
    pays = merchant.client.list_all("/v1/payments")
    assert [p["id"] for p in pays] == [ok[0].json["id"]], pays
    p = merchant.client.wait_terminal(ok[0].json["id"])
    assert p["status"] == "succeeded"
    entries = merchant.client.get(f"/v1/ledger/entries?payment_id={p['id']}").json["data"]
    assert [e["kind"] for e in entries] == ["settlement"], "charged once, posted once"
