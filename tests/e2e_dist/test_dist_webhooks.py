"""Webhooks from the notifier worker: Standard Webhooks signatures (verified with pslib's
independent implementation), redelivery, and a failing endpoint's delivery going to tx.dlq
and back with the distributed `paystream dlq list|show|replay`."""
import json
import time

import pytest

from pslib import payment_event_pred, verify_webhook, wait_until


def make_endpoint(c, url, enabled_events=None):
    body = {"url": url}
    if enabled_events is not None:
        body["enabled_events"] = enabled_events
    r = c.post("/v1/webhook_endpoints", body)
    assert r.status == 201, r
    return r.json


def dlq_rows(dist):
    out = dist.cli_ok("dlq", "list", "--limit", "100000")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    for row in rows:
        for k in ("offset", "topic", "partition", "original_offset", "error", "attempts",
                  "event_id", "event_type", "replayed", "created"):
            assert k in row, f"dlq row lacks {k}: {row}"
    return rows


def test_signed_webhooks_and_redelivery(merchant, receiver):
    c = merchant.client
    ep = make_endpoint(c, receiver.url("/hook"))
    ok = c.pay_ok(2500, "USD")
    bad = c.pay_ok(300, "USD", "tok_decline")
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")
    [d] = receiver.wait_for(payment_event_pred(ok["id"]), what="payment.succeeded webhook")
    [f] = receiver.wait_for(payment_event_pred(bad["id"]), what="payment.failed webhook")
    for x in (d, f):
        assert x.path == "/hook"
        verify_webhook(ep["secret"], x.headers, x.body)
        assert x.json["id"] == x.headers["webhook-id"] and x.json["id"].startswith("evt_")
    assert d.json["type"] == "payment.succeeded" and d.json["data"]["amount"] == 2500
    assert f.json["type"] == "payment.failed" and f.json["data"]["failure_code"] == "card_declined"
    with pytest.raises(AssertionError):
        verify_webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", d.headers, d.body)

    g = c.get(f"/v1/events/{d.json['id']}")
    assert g.status == 200 and g.json == d.json, g

    r = c.post(f"/v1/events/{d.json['id']}/redeliver")
    assert r.status == 202, r
    ds = receiver.wait_for(payment_event_pred(ok["id"]), count=2, what="redelivery")
    for x in ds:
        verify_webhook(ep["secret"], x.headers, x.body)
        assert x.json == d.json
    c.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")


def test_enabled_events_filter(merchant, receiver):
    c = merchant.client
    only_failed = make_endpoint(c, receiver.url("/failed-only"), ["payment.failed"])
    ok = c.pay_ok(100, "USD", "tok_approve")
    bad = c.pay_ok(100, "USD", "tok_decline")
    [f] = receiver.wait_for(lambda d: d.path == "/failed-only", what="failed-only delivery")
    assert f.json["type"] == "payment.failed" and f.json["data"]["id"] == bad["id"]
    verify_webhook(only_failed["secret"], f.headers, f.body)
    time.sleep(1.0)  # a wrongly routed succeeded event would have arrived by now
    assert not receiver.matching(payment_event_pred(ok["id"]))
    c.request("DELETE", f"/v1/webhook_endpoints/{only_failed['id']}")


@pytest.mark.slow
def test_failing_endpoint_dead_letter_and_replay(dist, merchant, receiver):
    c = merchant.client
    receiver.status = 500
    ep = make_endpoint(c, receiver.url("/broken"))
    p = c.pay_ok(4200, "USD")
    pred = payment_event_pred(p["id"], "payment.succeeded")
    attempts = receiver.wait_for(pred, count=3, timeout_s=30, what="3 failing attempts")
    event_id = attempts[0].headers["webhook-id"]

    [row] = wait_until(lambda: [r for r in dlq_rows(dist) if r["event_id"] == event_id],
                       30, 0.5, "the dead-lettered delivery in dlq list")
    assert row["replayed"] is False and row["error"], row
    assert row["attempts"] == 3, row
    time.sleep(0.5)
    assert len(receiver.matching(pred)) == 3, "retries must stop after the schedule"

    shown = json.loads(dist.cli_ok("dlq", "show", str(row["offset"])))
    assert isinstance(shown, dict) and event_id in json.dumps(shown), shown

    receiver.status = 200
    dist.cli_ok("dlq", "replay", str(row["offset"]))
    ds = receiver.wait_for(pred, count=4, timeout_s=30, what="delivery after replay")
    verify_webhook(ep["secret"], ds[-1].headers, ds[-1].body)
    assert ds[-1].json["id"] == event_id and ds[-1].json["data"]["status"] == "succeeded"
    again = dist.cli("dlq", "replay", str(row["offset"]))
    assert again.returncode != 0, "a second replay must fail"
    assert (again.stderr + again.stdout).strip(), "a second replay must say why"
    [row2] = [r for r in dlq_rows(dist) if r["offset"] == row["offset"]]
    assert row2["replayed"] is True
    time.sleep(0.5)
    assert len(receiver.matching(pred)) == 4, "delivered exactly once after the replay"
    c.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")
