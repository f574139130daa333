"""A gateway warms the payment-status cache before /readyz: after the cache lost its
entries (a cache restart), a newly started gateway puts the newest terminal payments of
every merchant back, so status polls through it are cache hits, not PostgreSQL reads."""
import subprocess

import pslib


def payment_cache_counts(role) -> dict:
    st, _, body = pslib.raw_request(role.port, "GET", "/metrics")
    assert st == 200
    out = {"hit": 0.0, "miss": 0.0}
    for line in body.decode().splitlines():
        if line.startswith("paystream_cache_requests_total{") and 'namespace="payment"' in line:
            for result in out:
                if f'result="{result}"' in line:
                    out[result] += float(line.rsplit(" ", 1)[1])
    return out


def test_new_gateway_warms_the_status_cache(dist, merchant):
    c = merchant.client
    paid = [c.pay_ok(700 + i) for i in range(3)]
    assert all(p["status"] == "succeeded" for p in paid), paid
    # Drop this session's cached payments, as a restarted cache Redis would have.
    url, prefix = dist.env["PAYSTREAM_REDIS_CACHE_URL"], dist.env["PAYSTREAM_REDIS_PREFIX"]
    keys = subprocess.run(["redis-cli", "-u", url, "--scan", "--pattern", prefix + "payment:*"],
                          capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert keys, "the payments were cached by the write-through"
    subprocess.run(["redis-cli", "-u", url, "unlink", *keys], capture_output=True, timeout=30, check=True)

    g = dist.start_gateway("gateway-extra-warm")
    try:
        assert any("payment-status cache warmed" in line for line in g.lines), g.tail()
        before = payment_cache_counts(g)
        cg = g.client(merchant.api_key)
        try:
            for p in paid:
                r = cg.get(f"/v1/payments/{p['id']}")
                assert r.status == 200 and r.json["status"] == "succeeded", r
        finally:
            cg.close()
        after = payment_cache_counts(g)
        assert after["hit"] - before["hit"] == 3, (before, after)
        assert after["miss"] == before["miss"], "no status read went to PostgreSQL"
    finally:
        g.terminate()
