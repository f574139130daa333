"""The token bucket lives in Redis: two gateways share one bucket per API key."""
import time

from pslib import assert_error, new_merchant


def test_bucket_shared_by_both_gateways(gw_a, gw_b):
    burst, rate = 6, 0.5
    m = new_merchant(gw_a, rate_limit={"per_second": rate, "burst": burst})
    clients = [gw_a.client(m.api_key), gw_b.client(m.api_key)]
    try:
        t0 = time.monotonic()
        rs = [(i % 2, clients[i % 2].get("/v1/balance")) for i in range(2 * burst + 4)]
        elapsed = time.monotonic() - t0
    finally:
        for c in clients:
            c.close()
        m.client.close()
    statuses = [r.status for _, r in rs]
    assert set(statuses) <= {200, 429}, statuses
    allowed = statuses.count(200)
    # One bucket: the burst plus what refilled meanwhile. Two independent buckets would
    # have let about 2 x burst through.
    refill = int(elapsed * rate) + 1
    assert burst <= allowed <= burst + refill, (allowed, elapsed, statuses)
    # Both gateways refused once the shared bucket was empty.
    for gw in (0, 1):
        refused = [r for g, r in rs if g == gw and r.status == 429]
        assert refused, f"gateway {'ab'[gw]} never refused: {statuses}"
        assert_error(refused[0], 429, "rate_limited", type_="rate_limit_error")
        ra = refused[0].header("Retry-After")
        assert ra is not None and ra.isdigit() and int(ra) >= 1, ra
        assert refused[0].header("RateLimit-Limit") == str(burst)
        assert refused[0].header("RateLimit-Remaining") == "0"
    assert statuses[:burst] == [200] * burst, statuses


def test_other_merchant_unaffected(gw_a, gw_b):
    a = new_merchant(gw_a, rate_limit={"per_second": 0.5, "burst": 2})
    b = new_merchant(gw_b, rate_limit={"per_second": 0.5, "burst": 2})
    try:
        assert [a.client.get("/v1/balance").status for _ in range(3)] == [200, 200, 429]
        assert b.client.get("/v1/balance").status == 200
    finally:
        a.client.close()
        b.client.close()
