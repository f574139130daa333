"""Hostile and malformed input: every case gets the documented 4xx (never a 500), and
the server stays healthy with earlier payments intact."""
import json
import socket
import threading
import time

import pytest

from pslib import Resp, assert_error, new_key, new_merchant, raw_request

GOOD = {"amount": 1000, "currency": "USD", "source": "tok_approve"}
ANY = "__any__"


@pytest.fixture(scope="module")
def before(shared):
    """A merchant and a payment made before the abuse starts."""
    m = new_merchant(shared)
    p = m.client.pay_ok(777, "USD")
    assert p["status"] == "succeeded"
    return m, p


def with_(**kw):
    b = dict(GOOD)
    for k, v in kw.items():
        if v is DROP:
            b.pop(k)
        else:
            b[k] = v
    return json.dumps(b).encode()


DROP = object()
MAX = 99_999_999_999

# (name, body bytes, expected status, code or set of codes, param or ("prefix", p) or ANY)
PAYMENT_CASES = [
    ("malformed", b'{"amount":', 400, "json_invalid", None),
    ("trailing_garbage", b'{"amount":1000,"currency":"USD","source":"tok_approve"} x', 400, "json_invalid", None),
    ("two_objects", b'{}{}', 400, "json_invalid", None),
    ("array", b'[]', 400, "body_not_object", None),
    ("string", b'"hello"', 400, "body_not_object", None),
    ("null", b'null', 400, "body_not_object", None),
    ("bad_utf8", b'{"amount":1000,"currency":"USD","source":"tok_\xff"}', 400,
     {"json_invalid", "parameter_invalid"}, ANY),
    ("missing_amount", with_(amount=DROP), 400, "parameter_missing", "amount"),
    ("missing_currency", with_(currency=DROP), 400, "parameter_missing", "currency"),
    ("missing_source", with_(source=DROP), 400, "parameter_missing", "source"),
    ("unknown_field", with_(foo="bar"), 400, "parameter_unknown", "foo"),
    ("amount_zero", with_(amount=0), 400, "amount_invalid", "amount"),
    ("amount_negative", with_(amount=-1), 400, "amount_invalid", "amount"),
    ("amount_fraction", with_(amount=1.5), 400, {"amount_invalid", "parameter_invalid"}, "amount"),
    ("amount_float_small", b'{"amount":1e-3,"currency":"USD","source":"tok_approve"}', 400,
     {"amount_invalid", "parameter_invalid"}, "amount"),
    ("amount_float_beyond_2_53", b'{"amount":1e16,"currency":"USD","source":"tok_approve"}', 400,
     {"amount_too_large", "amount_invalid"}, "amount"),
    ("amount_string", with_(amount="100"), 400, {"amount_invalid", "parameter_invalid"}, "amount"),
    ("amount_bool", with_(amount=True), 400, {"amount_invalid", "parameter_invalid"}, "amount"),
    ("amount_null", with_(amount=None), 400, {"amount_invalid", "parameter_invalid", "parameter_missing"}, "amount"),
    ("amount_2_63", with_(amount=2 ** 63), 400, {"amount_too_large", "amount_invalid"}, "amount"),
    ("amount_2_64", with_(amount=2 ** 64), 400, {"amount_too_large", "amount_invalid"}, "amount"),
    ("amount_huge", with_(amount=10 ** 40), 400, {"amount_too_large", "amount_invalid", "json_invalid"}, ANY),
    ("amount_over_max", with_(amount=MAX + 1), 400, "amount_too_large", "amount"),
    ("currency_lower", with_(currency="usd"), 400, "currency_invalid", "currency"),
    ("currency_unknown", with_(currency="XXX"), 400, "currency_invalid", "currency"),
    ("currency_short", with_(currency="US"), 400, "currency_invalid", "currency"),
    ("currency_number", with_(currency=840), 400, {"currency_invalid", "parameter_invalid"}, "currency"),
    ("source_empty", with_(source=""), 400, "parameter_invalid", "source"),
    ("source_long", with_(source="t" * 256), 400, "parameter_invalid", "source"),
    ("source_control", with_(source="tok\n"), 400, "parameter_invalid", "source"),
    ("source_number", with_(source=5), 400, "parameter_invalid", "source"),
    ("description_long", with_(description="d" * 1001), 400, "parameter_invalid", "description"),
    ("description_number", with_(description=5), 400, "parameter_invalid", "description"),
    ("metadata_51_keys", with_(metadata={f"k{i}": "v" for i in range(51)}), 400, "parameter_invalid",
     ("prefix", "metadata")),
    ("metadata_key_41", with_(metadata={"k" * 41: "v"}), 400, "parameter_invalid", ("prefix", "metadata")),
    ("metadata_value_501", with_(metadata={"k": "v" * 501}), 400, "parameter_invalid", ("prefix", "metadata")),
    ("metadata_value_number", with_(metadata={"k": 5}), 400, "parameter_invalid", ("prefix", "metadata")),
    ("metadata_nested", with_(metadata={"k": {"a": "b"}}), 400, "parameter_invalid", ("prefix", "metadata")),
    ("metadata_array", with_(metadata=["a"]), 400, "parameter_invalid", ("prefix", "metadata")),
    ("nested_100_deep", b'{"metadata":' + b'[' * 100 + b']' * 100 + b'}', 400, "json_too_deep", None),
    ("nested_100_deep_objects", b'{"a":' * 100 + b'1' + b'}' * 100, 400, "json_too_deep", None),
]


def check(r: Resp, status, code, param):
    if param == ANY:
        err = assert_error(r, status, code)
    elif isinstance(param, tuple):
        err = assert_error(r, status, code)
        assert isinstance(err["param"], str) and err["param"].startswith(param[1]), err
    else:
        err = assert_error(r, status, code, param)
    if status == 400 and err["code"] not in ("idempotency_key_missing", "idempotency_key_invalid"):
        assert err["type"] == "invalid_request_error", err


@pytest.mark.parametrize("name,body,status,code,param", PAYMENT_CASES, ids=[c[0] for c in PAYMENT_CASES])
def test_payment_bad_body(before, shared, name, body, status, code, param):
    m, _ = before
    st, hdrs, resp = raw_request(shared.port, "POST", "/v1/payments", body=body, headers={
        "Authorization": f"Bearer {m.api_key}", "Content-Type": "application/json",
        "Idempotency-Key": new_key()})
    check(Resp(st, hdrs, resp), status, code, param)


def test_integral_amount_written_with_a_fraction_is_that_integer(shared):
    """1e3 and 1000.0 are JSON Schema integers (what openapi.json promises): taken exactly."""
    m = new_merchant(shared)   # its own: test_zz counts the payments of `before`'s merchant
    for raw in (b'{"amount":1e3,"currency":"USD","source":"tok_approve"}',
                b'{"amount":1000.0,"currency":"USD","source":"tok_approve"}'):
        st, _, resp = raw_request(shared.port, "POST", "/v1/payments", body=raw, headers={
            "Authorization": f"Bearer {m.api_key}", "Content-Type": "application/json",
            "Idempotency-Key": new_key()})
        assert st == 202, (raw, resp)
        assert json.loads(resp)["amount"] == 1000, resp


def test_amount_boundaries_accepted(before):
    m, _ = before
    for amount in (1, MAX):
        r = m.client.create_payment(amount, "USD")
        assert r.status == 202, (amount, r)
    r = m.client.create_payment(5, "JPY", metadata={f"k{i}": "v" * 500 for i in range(50)},
                                description="d" * 1000)
    assert r.status == 202, r
    r = m.client.create_payment(5, "USD", source="~" * 255)
    assert r.status == 202, r


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx"])
def test_wrong_content_type(before, shared, ctype):
    m, _ = before
    h = {"Authorization": f"Bearer {m.api_key}", "Idempotency-Key": new_key()}
    if ctype:
        h["Content-Type"] = ctype
    st, hdrs, body = raw_request(shared.port, "POST", "/v1/payments", body=json.dumps(GOOD).encode(), headers=h)
    check(Resp(st, hdrs, body), 415, "unsupported_media_type", ANY)


def test_json_with_charset_accepted(before, shared):
    m, _ = before
    st, _, body = raw_request(shared.port, "POST", "/v1/payments", body=json.dumps(GOOD).encode(), headers={
        "Authorization": f"Bearer {m.api_key}", "Idempotency-Key": new_key(),
        "Content-Type": "application/json; charset=utf-8"})
    assert st == 202, body


def test_body_too_large(before, shared):
    m, _ = before
    big = json.dumps(dict(GOOD, description="x" * (70 * 1024))).encode()
    try:
        st, hdrs, body = raw_request(shared.port, "POST", "/v1/payments", body=big, headers={
            "Authorization": f"Bearer {m.api_key}", "Content-Type": "application/json",
            "Idempotency-Key": new_key()})
    except (BrokenPipeError, ConnectionResetError) as e:
        pytest.fail(f"connection dropped without a 413 answer: {e!r}")
    check(Resp(st, hdrs, body), 413, "body_too_large", ANY)


def test_header_too_large(before, shared):
    m, _ = before
    try:
        st, _, _ = raw_request(shared.port, "GET", "/v1/balance",
                               headers={"Authorization": f"Bearer {m.api_key}", "X-Big": "b" * (20 * 1024)})
    except (BrokenPipeError, ConnectionResetError) as e:
        pytest.fail(f"connection dropped without a 431 answer: {e!r}")
    assert st == 431


@pytest.mark.parametrize("method,path,status,code,allow", [
    ("GET", "/v1/nope", 404, "route_not_found", None),
    ("GET", "/v2/payments", 404, "route_not_found", None),
    ("GET", "/v1/payments/pay_x/refunds/zzz", 404, "route_not_found", None),
    ("DELETE", "/v1/payments", 405, "method_not_allowed", {"GET", "POST"}),
    ("PUT", "/v1/balance", 405, "method_not_allowed", {"GET"}),
    ("GET", "/v1/payments/pay_x/refunds", 405, "method_not_allowed", {"POST"}),
    ("POST", "/healthz", 405, "method_not_allowed", {"GET"}),
    ("PATCH", "/v1/webhook_endpoints/we_x", 405, "method_not_allowed", {"GET", "DELETE"}),
])
def test_routing_errors(before, shared, method, path, status, code, allow):
    m, _ = before
    st, hdrs, body = raw_request(shared.port, method, path, body=b"{}" if method in ("POST", "PUT", "PATCH") else None,
                                 headers={"Authorization": f"Bearer {m.api_key}",
                                          "Content-Type": "application/json", "Idempotency-Key": new_key()})
    check(Resp(st, hdrs, body), status, code, ANY)
    if allow is not None:
        got = {x.strip() for x in hdrs.get("allow", "").split(",") if x.strip()}
        assert allow <= got, f"Allow: {hdrs.get('allow')!r}"


def test_other_bodies(before):
    m, p = before
    c = m.client
    check(c.request("POST", f"/v1/payments/{p['id']}/refunds", raw=b'{"amount":', headers={"Idempotency-Key": new_key()}),
          400, "json_invalid", None)
    check(c.request("POST", f"/v1/payments/{p['id']}/refunds", raw=b'[1]', headers={"Idempotency-Key": new_key()}),
          400, "body_not_object", None)
    check(c.request("POST", f"/v1/payments/{p['id']}/refunds", body={"amount": "5"}, headers={"Idempotency-Key": new_key()}),
          400, {"amount_invalid", "parameter_invalid"}, "amount")
    check(c.post("/v1/webhook_endpoints", raw=b"nope"), 400, "json_invalid", None)
    check(shared_admin(m).post("/v1/merchants", raw=b"{"), 400, "json_invalid", None)


def shared_admin(m):
    return m.client.server.admin()


def _stalled_socket(port, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    return s


def _await_408_or_close(s: socket.socket, limit_s: float) -> tuple[str, float]:
    t0 = time.monotonic()
    s.settimeout(limit_s)
    buf = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                break
    except socket.timeout:
        return "timeout", time.monotonic() - t0
    except ConnectionResetError:
        return "closed", time.monotonic() - t0
    finally:
        s.close()
    if not buf:
        return "closed", time.monotonic() - t0
    return buf.split(b"\r\n", 1)[0].decode("latin-1"), time.monotonic() - t0


@pytest.mark.slow
def test_slow_clients_are_cut_off(before, shared):
    m, _ = before
    hdr_half = _stalled_socket(shared.port, b"GET /v1/balance HTTP/1.1\r\nHost: x\r\nAuthorization: Bea")
    body = json.dumps(GOOD).encode()
    body_half = _stalled_socket(shared.port, (
        f"POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {m.api_key}\r\n"
        f"Content-Type: application/json\r\nIdempotency-Key: {new_key()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode() + body[: len(body) // 2])
    # Others are served meanwhile.
    for _ in range(5):
        t0 = time.monotonic()
        assert m.client.get("/v1/balance").status == 200
        assert time.monotonic() - t0 < 2.0
        time.sleep(0.2)
    results = {}

    def wait(name, s):
        results[name] = _await_408_or_close(s, 20.0)
    ts = [threading.Thread(target=wait, args=("headers", hdr_half)),
          threading.Thread(target=wait, args=("body", body_half))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    for name, (what, took) in results.items():
        assert what == "closed" or what.startswith("HTTP/1.1 408"), f"{name}: {what} after {took:.1f}s"
    assert len(results) == 2
    assert shared.client(m.api_key).get("/v1/balance").status == 200


def test_zz_server_still_healthy(before, shared):
    m, p = before
    assert shared.running(), "server died"
    st, _, body = raw_request(shared.port, "GET", "/healthz")
    assert st == 200 and json.loads(body) == {"status": "ok"}
    st, _, body = raw_request(shared.port, "GET", "/readyz")
    assert st == 200 and json.loads(body) == {"status": "ready"}
    g = m.client.get(f"/v1/payments/{p['id']}")
    assert g.status == 200 and g.json == p
    assert m.client.pay_ok(1, "USD")["status"] == "succeeded"
    # None of the refused requests created a payment: only those of this module exist.
    ids = [x["id"] for x in m.client.list_all("/v1/payments")]
    assert p["id"] in ids and len(ids) == len(set(ids))
    assert len(ids) <= 1 + 4 + 1 + 1 + 1, ids  # before, boundaries (4), charset, final, refunds none
