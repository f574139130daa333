"""Authentication, tenant isolation and the admin key."""
import os
import stat
import subprocess

import pytest

from pslib import Client, Resp, assert_error, binary_path, new_key, new_merchant, raw_request, wait_until


@pytest.mark.parametrize("auth", [None, "Bearer sk_" + "0" * 48, "Bearer ", "Basic dXNlcjpwdw==",
                                  "sk_" + "0" * 48, "Bearer " + "x" * 300])
def test_unauthorized(shared, auth):
    h = {} if auth is None else {"Authorization": auth}
    for method, path in (("GET", "/v1/balance"), ("GET", "/v1/payments"), ("POST", "/v1/payments")):
        st, hdrs, body = raw_request(shared.port, method, path,
                                     body=b'{"amount":1,"currency":"USD","source":"tok_approve"}'
                                     if method == "POST" else None,
                                     headers={**h, "Content-Type": "application/json",
                                              "Idempotency-Key": new_key()})
        assert_error(Resp(st, hdrs, body), 401, "unauthorized", type_="authentication_error")


def test_admin_key_is_not_a_merchant_key(shared):
    assert_error(shared.admin().get("/v1/balance"), 401, "unauthorized")


def test_admin_route_rejects_merchant_key(merchant, shared):
    r = merchant.client.post("/v1/merchants", {"name": "evil"})
    assert_error(r, 401, "unauthorized")
    r = Client(shared, None).post("/v1/merchants", {"name": "anon"})
    assert_error(r, 401, "unauthorized")
    r = Client(shared, "wrong-admin-key").post("/v1/merchants", {"name": "anon"})
    assert_error(r, 401, "unauthorized")


def test_merchant_create_validation(shared):
    adm = shared.admin()
    assert_error(adm.post("/v1/merchants", {}), 400, "parameter_missing", "name")
    assert_error(adm.post("/v1/merchants", {"name": ""}), 400, "parameter_invalid", "name")
    assert_error(adm.post("/v1/merchants", {"name": "x" * 201}), 400, "parameter_invalid", "name")
    assert_error(adm.post("/v1/merchants", {"name": "a", "x": 1}), 400, "parameter_unknown", "x")
    r = adm.post("/v1/merchants", {"name": "n"})
    assert r.status == 201
    j = r.json
    assert j["id"].startswith("mer_") and j["api_key"].startswith("sk_") and len(j["api_key"]) == 51
    assert j["name"] == "n" and isinstance(j["created"], int)


def test_tenant_isolation(shared, receiver):
    a, b = new_merchant(shared), new_merchant(shared)
    ca, cb = a.client, b.client
    p = ca.pay_ok(1000, "USD")
    assert p["status"] == "succeeded"
    rf = ca.post(f"/v1/payments/{p['id']}/refunds", {"amount": 100}, idem=new_key())
    assert rf.status == 202, rf
    rf = ca.wait_refund(rf.json["id"])
    ep = ca.post("/v1/webhook_endpoints", {"url": receiver.url()})
    assert ep.status == 201
    ep = ep.json
    ev = wait_until(lambda: ca.get("/v1/events").json["data"], 20, 0.1, "an event for A")[0]

    checks = [
        cb.get(f"/v1/payments/{p['id']}"),
        cb.post(f"/v1/payments/{p['id']}/refunds", {"amount": 1}, idem=new_key()),
        cb.get(f"/v1/refunds/{rf['id']}"),
        cb.get(f"/v1/ledger/entries?payment_id={p['id']}"),
        cb.get(f"/v1/webhook_endpoints/{ep['id']}"),
        cb.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}"),
        cb.get(f"/v1/events/{ev['id']}"),
        cb.post(f"/v1/events/{ev['id']}/redeliver"),
    ]
    for r in checks:
        assert_error(r, 404, "resource_missing")
    assert cb.get("/v1/payments").json["data"] == []
    assert cb.get("/v1/events").json["data"] == []
    assert cb.get("/v1/webhook_endpoints").json["data"] == []
    assert all(v == 0 for v in cb.balance().values())
    # B's failed attempts changed nothing for A.
    assert ca.get(f"/v1/payments/{p['id']}").json["amount_refunded"] == 100
    assert ca.get(f"/v1/webhook_endpoints/{ep['id']}").status == 200
    # A cursor from A's list does not page B's list.
    r = cb.get(f"/v1/payments?starting_after={p['id']}")
    assert_error(r, 400, "cursor_invalid")
    ca.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")


def test_admin_key_file_generated(server):
    srv = server(admin_key=None)
    path = os.path.join(srv.data_dir, "admin.key")
    assert os.path.exists(path), os.listdir(srv.data_dir)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, oct(mode)
    key = open(path).read().strip()
    assert len(key) >= 32
    assert any("admin.key" in line for line in srv.lines), "the key's path must be logged"
    assert key not in "\n".join(srv.lines), "the key itself must not be logged"
    srv.admin_client_key = key
    m = new_merchant(srv)
    assert m.client.balance() is not None
    # Stable across restarts.
    srv.terminate()
    srv.start()
    assert open(path).read().strip() == key
    assert new_merchant(srv).id != m.id


def test_short_admin_key_is_refused_at_start(tmp_path):
    """An admin key shorter than 24 characters is guessable: serve refuses to start (exit 2)
    and says why, before it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env["PAYSTREAM_ADMIN_KEY"] = "adm_short"
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    r = subprocess.run([binary_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "at least 24" in r.stderr, r.stderr
    assert "adm_short" not in r.stderr, "the key itself is not printed"
