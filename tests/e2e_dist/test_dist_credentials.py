"""Credentials that rotate, on the distributed shape: an API key rotated out or revoked
through one gateway is refused on every gateway within seconds, also when the other
gateway had it in its in-process cache and in the Redis session cache."""
import time

import pslib

# ApiConfig::auth_cache_ttl_ms (5 s) plus slack for a loaded machine.
SEEN_WITHIN_S = 10.0


def rotate(gw, merchant_id: str, body=None) -> pslib.Resp:
    adm = gw.admin()
    try:
        return adm.post(f"/v1/merchants/{merchant_id}/api_keys", body)
    finally:
        adm.close()


def balance_status(gw, key: str) -> int:
    c = gw.client(key)
    try:
        return c.get("/v1/balance").status
    finally:
        c.close()


def test_revoked_key_is_refused_on_every_gateway_within_seconds(merchant, gw_a, gw_b):
    old = merchant.api_key
    # Both gateways have the key cached (in process; gw_b read it through Redis).
    assert balance_status(gw_a, old) == 200
    assert balance_status(gw_b, old) == 200

    r = rotate(gw_a, merchant.id, {"expire_previous_after_s": 0})
    assert r.status == 201, r
    new = r.json["api_key"]
    assert new.startswith("sk_") and new != old
    t0 = time.monotonic()
    assert balance_status(gw_a, old) == 401, "the rotating gateway refuses at once"
    for gw in (gw_a, gw_b):
        assert balance_status(gw, new) == 200
    while balance_status(gw_b, old) != 401:
        assert time.monotonic() - t0 < SEEN_WITHIN_S, "the other gateway still accepts the revoked key"
        time.sleep(0.2)
    c = gw_b.client(old)
    try:
        pslib.assert_error(c.get("/v1/balance"), 401, "api_key_expired")
    finally:
        c.close()


def test_rotated_key_keeps_working_for_its_grace_period(merchant, gw_a, gw_b):
    old = merchant.api_key
    assert balance_status(gw_b, old) == 200
    r = rotate(gw_b, merchant.id, {"expire_previous_after_s": 3600})
    assert r.status == 201, r
    new = r.json["api_key"]
    assert r.json["previous_keys_expire"] >= r.json["created"] + 3_600_000
    # A new gateway warms its caches from the store: both keys work there too.
    for gw in (gw_a, gw_b):
        assert balance_status(gw, old) == 200
        assert balance_status(gw, new) == 200
    # A payment with the new key is the same merchant's.
    c = gw_a.client(new)
    try:
        p = c.pay_ok(400, "USD")
        assert p["status"] == "succeeded", p
        o = gw_b.client(old)
        try:
            assert o.get(f"/v1/payments/{p['id']}").status == 200
        finally:
            o.close()
    finally:
        c.close()
