"""Token bucket per API key: burst, 429 with Retry-After and RateLimit-* headers,
isolation between merchants, per-merchant override, refill."""
import time

from pslib import assert_error, new_merchant


def rl_headers(r):
    vals = {}
    for h in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        v = r.header(h)
        assert v is not None, f"{h} missing on {r.status}: {r.headers}"
        assert v.strip().isdigit(), f"{h}: {v!r}"
        vals[h] = int(v)
    return vals


def burst_until_429(c, n):
    t0 = time.monotonic()
    rs = [c.get("/v1/balance") for _ in range(n)]
    return rs, time.monotonic() - t0


def test_burst_then_429(server):
    srv = server("--rate-limit-per-s", "1", "--rate-limit-burst", "5")
    a, b = new_merchant(srv), new_merchant(srv)
    t0 = time.monotonic()
    rs, elapsed = burst_until_429(a.client, 6)
    assert [r.status for r in rs[:5]] == [200] * 5, rs
    for r in rs[:5]:
        h = rl_headers(r)
        assert h["RateLimit-Limit"] == 5
    assert [rl_headers(r)["RateLimit-Remaining"] for r in rs[:5]][-1] <= 1
    if elapsed < 0.9:  # no token could have been refilled yet
        last = rs[5]
    else:
        more = [a.client.get("/v1/balance") for _ in range(3)]
        last = next((r for r in rs[5:] + more if r.status == 429), rs[5])
    assert_error(last, 429, "rate_limited", type_="rate_limit_error")
    ra = last.header("Retry-After")
    assert ra is not None and ra.isdigit() and 1 <= int(ra) <= 2, ra
    h = rl_headers(last)
    assert h["RateLimit-Remaining"] == 0 and h["RateLimit-Limit"] == 5 and h["RateLimit-Reset"] >= 1

    # Other merchant unaffected.
    rb = b.client.get("/v1/balance")
    assert rb.status == 200 and rl_headers(rb)["RateLimit-Remaining"] >= 3

    # POST routes are limited too, and a limited POST does not create a payment
    # (checked only when no whole token can have been refilled since the burst).
    r = a.client.create_payment(100)
    if time.monotonic() - t0 < 0.9:
        assert r.status == 429, r
    limited_post = r.status == 429
    # Refill: after Retry-After seconds one request passes.
    time.sleep(int(ra) + 0.1)
    r = a.client.get("/v1/payments")
    assert r.status == 200, r
    if limited_post:
        assert r.json["data"] == []


def test_per_merchant_override(server):
    srv = server("--rate-limit-per-s", "1", "--rate-limit-burst", "5")
    m = new_merchant(srv, rate_limit={"per_second": 0.5, "burst": 2})
    rs = [m.client.get("/v1/balance") for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 429], rs
    assert rl_headers(rs[0])["RateLimit-Limit"] == 2


def test_invalid_rate_limit_body(shared):
    adm = shared.admin()
    for rl in ({"per_second": 0, "burst": 1}, {"per_second": 1, "burst": 0},
               {"per_second": "1", "burst": 1}, {"per_second": 1, "burst": 1.5}, "fast"):
        r = adm.post("/v1/merchants", {"name": "x", "rate_limit": rl})
        assert r.status == 400, (rl, r)
        assert r.error["code"] == "parameter_invalid", (rl, r)
        assert r.error["param"] in ("rate_limit", "rate_limit.per_second", "rate_limit.burst"), r
