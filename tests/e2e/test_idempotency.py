"""Idempotency-Key semantics: byte-for-byte replay, mismatch, in-flight concurrency,
key validation, per-merchant scoping and durability across a restart."""
import threading

import pytest

from pslib import assert_error, new_key, new_merchant

BODY = {"amount": 4321, "currency": "USD", "source": "tok_approve"}


def post(c, body, key, headers=None):
    h = dict(headers or {})
    h["Idempotency-Key"] = key
    return c.request("POST", "/v1/payments", body=body, headers=h)


def test_replay_byte_for_byte(merchant):
    c = merchant.client
    k = new_key()
    first = post(c, BODY, k)
    assert first.status == 202, first
    assert first.header("Idempotent-Replayed") in (None, "false")
    c.wait_terminal(first.json["id"])
    again = post(c, BODY, k)
    assert again.status == 202
    assert again.body == first.body, "replay must return the first response byte for byte"
    assert again.header("Idempotent-Replayed") == "true"
    assert again.json["status"] == "processing"  # the first response, not the current state


def test_replay_of_201(merchant):
    c = merchant.client
    k = new_key()
    first = post(c, BODY, k, {"Prefer": "wait=5000"})
    assert first.status == 201, first
    again = post(c, BODY, k)  # Prefer is not part of the fingerprint
    assert again.status == 201 and again.body == first.body
    assert again.header("Idempotent-Replayed") == "true"


def test_mismatch(merchant):
    c = merchant.client
    k = new_key()
    assert post(c, BODY, k).status == 202
    r = post(c, dict(BODY, amount=4322), k)
    assert_error(r, 422, "idempotency_key_mismatch", type_="idempotency_error")
    # Different path with the same key is a mismatch too (fingerprint covers the path)...
    # ...and whitespace changes the raw body, hence the fingerprint.
    r = c.request("POST", "/v1/payments", raw=b'{"amount": 4321, "currency":"USD","source":"tok_approve"}',
                  headers={"Idempotency-Key": k})
    assert_error(r, 422, "idempotency_key_mismatch")


def test_refused_request_leaves_key_unused(merchant):
    c = merchant.client
    k = new_key()
    assert_error(post(c, dict(BODY, amount=0), k), 400, "amount_invalid", "amount")
    r = post(c, BODY, k)
    assert r.status == 202, r
    assert r.header("Idempotent-Replayed") in (None, "false")


def test_concurrent_same_key(merchant, shared):
    k = new_key()
    n = 20
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        cl = shared.client(merchant.api_key)
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
    assert all(r is not None for r in results)
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
    merchant.client.wait_terminal(ok[0].json["id"])


@pytest.mark.parametrize("key,code", [
    (None, "idempotency_key_missing"),
    ("x" * 256, "idempotency_key_invalid"),
    # Control characters other than HTAB are not valid in an HTTP field value at all
    # (RFC 9110 field-vchar), so the HTTP layer may refuse them first as http_invalid.
    ("bad\x01key", {"idempotency_key_invalid", "http_invalid"}),
    ("tab\tkey", "idempotency_key_invalid"),
    ("del\x7fkey", {"idempotency_key_invalid", "http_invalid"}),
    ("caf\u00e9", "idempotency_key_invalid"),
])
def test_key_validation(merchant, key, code):
    h = {} if key is None else {"Idempotency-Key": key}
    r = merchant.client.request("POST", "/v1/payments", body=BODY, headers=h)
    assert_error(r, 400, code)
    assert merchant.client.list_all("/v1/payments") == []


def test_key_limits_accepted(merchant):
    for k in ("x" * 255, "a", " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"):
        r = post(merchant.client, BODY, k)
        assert r.status == 202, (k, r)


def test_same_key_different_merchants(shared):
    a, b = new_merchant(shared), new_merchant(shared)
    k = new_key()
    ra, rb = post(a.client, BODY, k), post(b.client, BODY, k)
    assert ra.status == 202 and rb.status == 202
    assert rb.header("Idempotent-Replayed") in (None, "false")
    assert ra.json["id"] != rb.json["id"]
    assert a.client.get(f"/v1/payments/{rb.json['id']}").status == 404


def test_key_survives_restart(server):
    srv = server()
    m = new_merchant(srv)
    k = new_key()
    first = post(m.client, BODY, k)
    assert first.status == 202, first
    m.client.wait_terminal(first.json["id"])
    m.client.close()
    assert srv.terminate() == 0
    srv.start()
    again = post(m.client, BODY, k)
    assert again.status == 202, again
    assert again.json["id"] == first.json["id"]
    assert again.body == first.body and again.header("Idempotent-Replayed") == "true"
    assert_error(post(m.client, dict(BODY, amount=1), k), 422, "idempotency_key_mismatch")
    assert [p["id"] for p in m.client.list_all("/v1/payments")] == [first.json["id"]]
