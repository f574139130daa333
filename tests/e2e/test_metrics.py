"""/metrics: parsed with our own strict Prometheus text-format parser; the required
families are present with the right types after some traffic."""
import json
import time

import pytest

import promtext
from pslib import new_key, payment_event_pred, raw_request

REQUIRED = {
    "paystream_http_requests_total": "counter",
    "paystream_http_request_duration_seconds": "histogram",
    "paystream_payments_total": "counter",
    "paystream_stage_processed_total": "counter",
    "paystream_idempotency_total": "counter",
    "paystream_store_tx_seconds": "histogram",
    "paystream_store_batch_size": "histogram",
    "paystream_webhook_deliveries_total": "counter",
    "paystream_dead_letters_total": "counter",
    "paystream_circuit_state": "gauge",
    "paystream_webhook_endpoint_breakers": "gauge",
}


# ---- the parser itself must be strict (otherwise the real test proves nothing)
GOOD = (
    "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\na_total{x=\"2\"} 0\n"
    "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 2\n"
    "h_sum 0.5\nh_count 2\ng NaN\nu 1e-3 1700000000000\n"
)
BAD = [
    "a 1",                                                       # no trailing newline
    "# TYPE a counter\na -1\n",                                  # negative counter
    "# TYPE a counter\n# TYPE a gauge\na 1\n",                   # two TYPE
    "a 1\n# TYPE a counter\n",                                   # TYPE after sample
    "a{x=\"1\"} 1\nb 1\na{x=\"2\"} 1\n",                         # not contiguous
    "a 1\na 2\n",                                                # duplicate series
    "a{x=1} 1\n",                                                # unquoted label
    "a{x=\"\\q\"} 1\n",                                          # bad escape
    "a{x=\"1\",x=\"2\"} 1\n",                                    # duplicate label
    "1a 1\n",                                                    # bad name
    "a one\n",                                                   # bad value
    "# TYPE a wat\na 1\n",                                       # bad type
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",             # no +Inf
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  # not cumulative
    "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",           # count != +Inf
    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",                   # no sum
    "a  1\n",                                                    # double space
]


def test_parser_accepts_valid():
    fams = promtext.parse(GOOD)
    assert fams["a_total"].type == "counter" and len(fams["a_total"].samples) == 2
    assert fams["a_total"].samples[0].labels == {"x": "1", "y": "q\"\\\n"}
    assert fams["h"].type == "histogram" and len(fams["h"].samples) == 5


@pytest.mark.parametrize("text", BAD)
def test_parser_rejects_invalid(text):
    with pytest.raises(ValueError):
        promtext.parse(text)


# ---- the server
def test_metrics_exposition(merchant, shared, receiver):
    c = merchant.client
    ep = c.post("/v1/webhook_endpoints", {"url": receiver.url("/m")})
    assert ep.status == 201
    k = new_key()
    r = c.create_payment(100, idem=k, wait_ms=5000)
    assert r.status == 201, r
    assert c.create_payment(100, idem=k).header("Idempotent-Replayed") == "true"
    receiver.wait_for(payment_event_pred(r.json["id"]), what="webhook")

    # The dispatcher counts an attempt once it has recorded it, a moment after the
    # receiver got the request: scrape until it shows (bounded).
    deadline = time.monotonic() + 10
    while True:
        st, hdrs, body = raw_request(shared.port, "GET", "/metrics")
        assert st == 200
        fam = promtext.parse(body.decode("utf-8")).get("paystream_webhook_deliveries_total")
        if (fam and any(x.value >= 1 for x in fam.samples)) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    c.request("DELETE", f"/v1/webhook_endpoints/{ep.json['id']}")
    ctype = hdrs.get("content-type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    fams = promtext.parse(body.decode("utf-8"))
    for name, typ in REQUIRED.items():
        assert name in fams, f"{name} missing; have {sorted(fams)}"
        assert fams[name].type == typ, f"{name}: {fams[name].type} != {typ}"
        assert fams[name].help, f"{name} has no HELP"

    def label_values(name):
        return {v for s in fams[name].samples for v in s.labels.values()}

    reqs = fams["paystream_http_requests_total"].samples
    assert any(any("/v1/payments" in v for v in s.labels.values()) and s.value >= 1 for s in reqs), reqs[:5]
    assert any("201" in s.labels.values() or "202" in s.labels.values() for s in reqs)
    # route labels are templates, not raw paths with ids
    assert not any(r.json["id"] in v for s in reqs for v in s.labels.values())
    assert "succeeded" in label_values("paystream_payments_total")
    assert any(s.value >= 1 for s in fams["paystream_payments_total"].samples)
    vals = label_values("paystream_idempotency_total")
    assert {"new", "replayed"} <= vals, vals
    assert any(s.value >= 1 for s in fams["paystream_stage_processed_total"].samples)
    assert any(s.value >= 1 for s in fams["paystream_webhook_deliveries_total"].samples)
    assert any(s.name.endswith("_count") and s.value >= 1 for s in fams["paystream_store_tx_seconds"].samples)
    assert any(s.name.endswith("_count") and s.value >= 1 for s in fams["paystream_http_request_duration_seconds"].samples)
    for s in fams["paystream_circuit_state"].samples:
        assert s.value in (0, 1, 2), s
    # /metrics is unauthenticated: no series names a webhook endpoint (a per-endpoint breaker
    # state would tell anyone whether a merchant's target answers); breakers are counted.
    text = body.decode("utf-8")
    assert ep.json["id"] not in text and 'dependency="webhook:' not in text
    assert {s.labels["state"] for s in fams["paystream_webhook_endpoint_breakers"].samples} >= {"open", "half_open"}


def test_health_endpoints(shared):
    st, _, body = raw_request(shared.port, "GET", "/healthz")
    assert st == 200 and json.loads(body) == {"status": "ok"}
