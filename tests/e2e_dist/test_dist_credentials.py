"""Credentials that rotate, on the distributed shape: an API key rotated out or revoked
through one gateway is refused on every gateway within seconds, also when the other
gateway had it in its in-process cache and in the Redis session cache."""
import time

import pslib

# ApiConfig::auth_cache_ttl_ms (5 s) plus slack for a loaded machine.
SEEN_WITHIN_S = 10.0


def test_revoked_key_is_refused_on_every_gateway_within_seconds(merchant, gw_a, gw_b):
    old = merchant.api_key
    # Both gateways have the key cached (in process; gw_b read it through Redis).
    assert pslib.balance_status(gw_a, old) == 200
    assert pslib.balance_status(gw_b, old) == 200

    r = pslib.rotate_api_key(gw_a, merchant.id, {"expire_previous_after_s": 0})
    assert r.status == 201, r
    new = r.json["api_key"]
    assert new.startswith("sk_") and new != old
    t0 = time.monotonic()
    assert pslib.balance_status(gw_a, old) == 401, "the rotating gateway refuses at once"
    for gw in (gw_a, gw_b):
        assert pslib.balance_status(gw, new) == 200
    while pslib.balance_status(gw_b, old) != 401:
        assert time.monotonic() - t0 < SEEN_WITHIN_S, "the other gateway still accepts the revoked key"
        time.sleep(0.2)
    c = gw_b.client(old)
    try:
        pslib.assert_error(c.get("/v1/balance"), 401, "api_key_expired")
    finally:
        c.close()


def test_rotated_key_keeps_working_for_its_grace_period(merchant, gw_a, gw_b):
    old = merchant.api_key
    assert pslib.balance_status(gw_b, old) == 200
    r = pslib.rotate_api_key(gw_b, merchant.id, {"expire_previous_after_s": 3600})
    assert r.status == 201, r
    new = r.json["api_key"]
    assert r.json["previous_keys_expire"] >= r.json["created"] + 3_600_000
    # A new gateway warms its caches from the store: both keys work there too.
    for gw in (gw_a, gw_b):
        assert pslib.balance_status(gw, old) == 200
        assert pslib.balance_status(gw, new) == 200
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
