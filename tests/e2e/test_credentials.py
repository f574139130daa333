"""Credentials that rotate, embedded shape: API key rotation and revocation are stored
(they survive a restart) and the answers are the documented ones."""
import pslib
from pslib import assert_error


def test_api_key_rotation_and_revocation_survive_a_restart(server):
    s = server()
    m = pslib.new_merchant(s)
    k1 = m.api_key
    r = pslib.rotate_api_key(s, m.id, {"expire_previous_after_s": 3600})
    assert r.status == 201, r
    k2 = r.json["api_key"]
    assert r.json["object"] == "api_key" and r.json["merchant_id"] == m.id
    assert r.json["previous_keys_expire"] - r.json["created"] == 3_600_000
    assert pslib.balance_status(s, k1) == 200 and pslib.balance_status(s, k2) == 200

    r = pslib.rotate_api_key(s, m.id, {"expire_previous_after_s": 0})  # revoke k1 and k2
    assert r.status == 201, r
    k3 = r.json["api_key"]
    assert pslib.balance_status(s, k3) == 200
    for old in (k1, k2):
        c = s.client(old)
        try:
            assert_error(c.get("/v1/balance"), 401, "api_key_expired")
        finally:
            c.close()

    s.restart()
    assert pslib.balance_status(s, k3) == 200
    assert pslib.balance_status(s, k1) == 401 and pslib.balance_status(s, k2) == 401

    # Bad requests are clear and change nothing.
    assert_error(pslib.rotate_api_key(s, m.id, {"expire_previous_after_s": "soon"}), 400, "parameter_invalid",
                 "expire_previous_after_s")
    assert_error(pslib.rotate_api_key(s, "mer_000000000000000000000000", None), 404, "resource_missing")
    c = s.client(k3)
    try:
        assert_error(c.post(f"/v1/merchants/{m.id}/api_keys", {}), 401, "unauthorized")
    finally:
        c.close()
    assert pslib.balance_status(s, k3) == 200
