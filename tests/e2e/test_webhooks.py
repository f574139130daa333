"""Webhook endpoints, signed deliveries (verified here with our own Standard Webhooks
implementation), event filter, /v1/events, redelivery, dead letters and `dlq replay`."""
import json
import subprocess
import time

import pytest

import pslib
from pslib import assert_error, new_merchant, payment_event_pred, verify_webhook, wait_until


def make_endpoint(c, url, enabled_events=None):
    body = {"url": url}
    if enabled_events is not None:
        body["enabled_events"] = enabled_events
    r = c.post("/v1/webhook_endpoints", body)
    assert r.status == 201, r
    return r.json


def test_endpoint_create_get_list_delete(merchant, receiver):
    c = merchant.client
    ep = make_endpoint(c, receiver.url("/a"))
    assert ep["object"] == "webhook_endpoint" and ep["id"].startswith("we_")
    assert ep["url"] == receiver.url("/a") and ep["enabled_events"] == ["*"]
    assert ep["secret"].startswith("whsec_") and len(ep["secret"]) > 20
    g = c.get(f"/v1/webhook_endpoints/{ep['id']}")
    assert g.status == 200, g
    assert "secret" not in g.json and g.json["id"] == ep["id"] and g.json["url"] == ep["url"]
    assert ep["secret"].encode() not in g.body
    lst = c.get("/v1/webhook_endpoints")
    assert lst.status == 200 and lst.json["object"] == "list"
    assert [e["id"] for e in lst.json["data"]] == [ep["id"]]
    assert ep["secret"].encode() not in lst.body
    d = c.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")
    assert d.status == 200 and d.json == {"id": ep["id"], "object": "webhook_endpoint", "deleted": True}, d
    assert_error(c.get(f"/v1/webhook_endpoints/{ep['id']}"), 404, "resource_missing")
    assert_error(c.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}"), 404, "resource_missing")


@pytest.mark.parametrize("body,code,param", [
    ({"url": "ftp://example.com/x"}, "url_invalid", "url"),
    ({"url": "not a url"}, "url_invalid", "url"),
    ({"url": "http://example.com/" + "a" * 2100}, "url_invalid", "url"),
    ({}, "parameter_missing", "url"),
    ({"url": 5}, {"parameter_invalid", "url_invalid"}, "url"),
    ({"url": "http://example.com/x", "enabled_events": ["payment.exploded"]}, "parameter_invalid", "enabled_events"),
    ({"url": "http://example.com/x", "enabled_events": "payment.succeeded"}, "parameter_invalid", "enabled_events"),
    ({"url": "http://example.com/x", "secret": "whsec_x"}, "parameter_unknown", "secret"),
])
def test_endpoint_create_invalid(merchant, body, code, param):
    assert_error(merchant.client.post("/v1/webhook_endpoints", body), 400, code, param)


def test_payment_webhook_signed_and_event_api(merchant, receiver):
    c = merchant.client
    ep = make_endpoint(c, receiver.url("/hook"))
    p = c.pay_ok(2500, "USD")
    assert p["status"] == "succeeded"
    [d] = receiver.wait_for(payment_event_pred(p["id"]), what="payment.succeeded webhook")
    assert d.path == "/hook"
    verify_webhook(ep["secret"], d.headers, d.body)
    assert d.headers.get("content-type", "").startswith("application/json")
    ev = d.json
    assert ev["object"] == "event" and ev["type"] == "payment.succeeded"
    assert ev["id"] == d.headers["webhook-id"] and ev["id"].startswith("evt_")
    assert isinstance(ev["created"], int)
    assert ev["data"]["object"] == "payment" and ev["data"]["status"] == "succeeded"
    assert ev["data"]["id"] == p["id"] and ev["data"]["amount"] == 2500
    # A wrong secret must not verify (our verifier is not vacuous).
    with pytest.raises(AssertionError):
        verify_webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", d.headers, d.body)

    g = c.get(f"/v1/events/{ev['id']}")
    assert g.status == 200, g
    assert g.json == ev
    lst = c.get("/v1/events?limit=100")
    assert lst.status == 200 and lst.json["object"] == "list"
    assert ev["id"] in [e["id"] for e in lst.json["data"]]
    assert_error(c.get("/v1/events/evt_000000000000000000000000"), 404, "resource_missing")

    # Redeliver: received again, same id, valid signature.
    r = c.post(f"/v1/events/{ev['id']}/redeliver")
    assert r.status == 202, r
    assert r.json == {"id": ev["id"], "object": "event", "redelivery": "scheduled"}
    ds = receiver.wait_for(payment_event_pred(p["id"]), count=2, what="redelivery")
    for x in ds:
        verify_webhook(ep["secret"], x.headers, x.body)
        assert x.headers["webhook-id"] == ev["id"]
        assert x.json == ev
    c.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")


def test_events_pagination(merchant):
    c = merchant.client
    ids = [c.pay_ok(100 + i)["id"] for i in range(3)]
    evs = wait_until(lambda: (l := c.list_all("/v1/events", limit=1)) and len(l) >= 3 and l,
                     20, 0.1, "3 events")
    assert len(evs) == 3, evs
    assert [e["data"]["id"] for e in evs] == list(reversed(ids))  # newest first
    assert all(e["type"] == "payment.succeeded" for e in evs)


def test_enabled_events_filter(merchant, receiver):
    c = merchant.client
    only_failed = make_endpoint(c, receiver.url("/failed-only"), ["payment.failed"])
    everything = make_endpoint(c, receiver.url("/all"), ["*"])
    ok = c.pay_ok(100, "USD", "tok_approve")
    bad = c.pay_ok(100, "USD", "tok_decline")
    receiver.wait_for(lambda d: d.path == "/all" and d.json["data"]["id"] == ok["id"], what="ok on /all")
    receiver.wait_for(lambda d: d.path == "/all" and d.json["data"]["id"] == bad["id"], what="bad on /all")
    [f] = receiver.wait_for(lambda d: d.path == "/failed-only", what="failed-only delivery")
    assert f.json["type"] == "payment.failed" and f.json["data"]["id"] == bad["id"]
    assert f.json["data"]["failure_code"] == "card_declined"
    verify_webhook(only_failed["secret"], f.headers, f.body)
    for d in receiver.matching(lambda d: d.path == "/all"):
        verify_webhook(everything["secret"], d.headers, d.body)
    time.sleep(1.0)  # a wrongly routed succeeded event would have arrived by now
    paths = [(d.path, d.json["type"]) for d in receiver.snapshot()]
    assert ("/failed-only", "payment.succeeded") not in paths, paths
    assert len([1 for d in receiver.snapshot() if d.path == "/failed-only"]) == 1
    for ep in (only_failed, everything):
        c.request("DELETE", f"/v1/webhook_endpoints/{ep['id']}")


def dlq_rows(srv):
    r = srv.cli("dlq", "list")
    assert r.returncode == 0, f"dlq list failed: {r.returncode} {r.stderr}"
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    for row in rows:
        for k in ("offset", "topic", "partition", "original_offset", "error", "attempts",
                  "event_id", "event_type", "replayed", "created"):
            assert k in row, f"dlq row lacks {k}: {row}"
    return rows


@pytest.mark.slow
def test_dead_letter_and_replay(server, receiver):
    srv = server("--webhook-retry-schedule-ms", "50,50", "--webhook-timeout-ms", "1000")
    m = new_merchant(srv)
    c = m.client
    receiver.status = 500
    ep = make_endpoint(c, receiver.url("/broken"))
    p = c.pay_ok(4200, "USD")
    pred = payment_event_pred(p["id"], "payment.succeeded")
    attempts = receiver.wait_for(pred, count=3, timeout_s=20, what="3 failing attempts")
    event_id = attempts[0].headers["webhook-id"]

    def dead():
        return [r for r in dlq_rows(srv) if r["event_id"] == event_id]
    [row] = wait_until(dead, 20, 0.2, "dead letter in dlq list")
    assert row["replayed"] is False and row["error"], row
    assert row["attempts"] == 3, row
    time.sleep(0.5)
    assert len(receiver.matching(pred)) == 3, "retries must stop after the schedule"

    show = srv.cli("dlq", "show", str(row["offset"]))
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert event_id in show.stdout and isinstance(shown, dict), shown

    receiver.status = 200
    rep = srv.cli("dlq", "replay", str(row["offset"]))
    assert rep.returncode == 0, f"replay: {rep.returncode} {rep.stdout} {rep.stderr}"
    ds = receiver.wait_for(pred, count=4, timeout_s=20, what="delivery after replay")
    last = ds[-1]
    verify_webhook(ep["secret"], last.headers, last.body)
    assert last.json["id"] == event_id and last.json["data"]["status"] == "succeeded"
    again = srv.cli("dlq", "replay", str(row["offset"]))
    assert again.returncode != 0, "second replay must fail"
    assert (again.stderr + again.stdout).strip(), "second replay must say why"
    [row2] = [r for r in dlq_rows(srv) if r["offset"] == row["offset"]]
    assert row2["replayed"] is True
    time.sleep(0.5)
    assert len(receiver.matching(pred)) == 4, "delivered exactly once after the replay"


# ---- SPEC §3: webhook URLs reach global addresses only, unless allow-listed --------------

# The URLs of the SSRF report: cloud metadata, loopback, loopback as one decimal number,
# IPv6 loopback, a private address.
SSRF_URLS = [
    ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
    ("http://127.0.0.1:9/hook", "url_not_allowed"),
    ("http://2130706433/hook", "url_invalid"),   # ambiguous IPv4 form: refused, never guessed
    ("http://[::1]/hook", "url_not_allowed"),
    ("http://10.0.0.1/hook", "url_not_allowed"),
]
NO_ALLOW_LIST = {"PAYSTREAM_WEBHOOK_ALLOW_CIDRS": None}


def test_non_global_webhook_urls_refused_without_allow_list(server):
    srv = server(env=NO_ALLOW_LIST)
    c = new_merchant(srv).client
    for url, code in SSRF_URLS + [
        ("http://localhost:9/hook", "url_not_allowed"),           # a name resolving to loopback
        ("http://[::ffff:127.0.0.1]/hook", "url_not_allowed"),
        ("http://0x7f000001/hook", "url_invalid"),
        ("http://0177.0.0.1/hook", "url_invalid"),
        ("http://127.1/hook", "url_invalid"),
        ("http://user@127.0.0.1/hook", "url_invalid"),
        ("http://127.0.0.1/hook#x", "url_invalid"),
        ("http://127.0.0.1:65536/hook", "url_invalid"),
    ]:
        r = c.post("/v1/webhook_endpoints", {"url": url})
        assert_error(r, 400, code, "url")
    assert c.get("/v1/webhook_endpoints").json["data"] == []


def test_allow_listed_ranges_accept_webhook_urls(server):
    srv = server(env={"PAYSTREAM_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8,::1/128,10.0.0.0/8,169.254.169.254/32"})
    c = new_merchant(srv).client
    for url, code in SSRF_URLS:
        r = c.post("/v1/webhook_endpoints", {"url": url})
        if code == "url_invalid":
            assert_error(r, 400, "url_invalid", "url")   # malformed whatever the allow-list
        else:
            assert r.status == 201, (url, r)
    r = c.post("/v1/webhook_endpoints", {"url": "http://192.168.1.1/hook"})
    assert_error(r, 400, "url_not_allowed", "url")       # outside the allow-list


def test_sender_checks_again_at_connect_time(server, receiver):
    """An endpoint created while loopback was allow-listed is not delivered to once it is
    no longer: the sender checks the address itself, and the delivery dead-letters."""
    srv = server("--webhook-retry-schedule-ms", "50,50", "--webhook-timeout-ms", "1000")
    m = new_merchant(srv)
    make_endpoint(m.client, receiver.url("/later-refused"))
    srv.terminate()
    srv.extra_env.update(NO_ALLOW_LIST)
    srv.start()
    p = m.client.pay_ok(4300, "USD")

    def dead():
        return [r for r in dlq_rows(srv) if "url_not_allowed" in r["error"]]
    [row] = wait_until(dead, 20, 0.2, "dead letter of the refused delivery")
    assert row["attempts"] == 3 and row["event_type"] == "payment.succeeded", row
    assert receiver.matching(payment_event_pred(p["id"])) == [], "the refused target was contacted"


def test_bad_allow_list_is_a_start_up_error(tmp_path):
    r = subprocess.run([pslib.binary_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
                        "--webhook-allow-cidrs", "127.0.0.0/8,10.0.0.0/33"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--webhook-allow-cidrs" in r.stderr and "10.0.0.0/33" in r.stderr, r.stderr


def test_secret_rotation_signs_with_both_then_update_and_disable(merchant, receiver):
    """A rotated secret signs beside the new one during the overlap (a receiver that still
    has the old secret verifies, and so does one with the new); a URL update moves the next
    deliveries; a disabled endpoint gets nothing."""
    c = merchant.client
    ep = make_endpoint(c, receiver.url("/rot"))
    old = ep["secret"]
    r = c.post(f"/v1/webhook_endpoints/{ep['id']}/rotate_secret", {"expire_previous_after_s": 3600})
    assert r.status == 200, r
    new = r.json["secret"]
    assert new.startswith("whsec_") and new != old
    assert r.json["previous_secret_expires"] > 0
    p = c.pay_ok(1200, "USD")
    [d] = receiver.wait_for(payment_event_pred(p["id"]), what="webhook during the overlap")
    assert len(d.headers["webhook-signature"].split(" ")) == 2, d.headers
    verify_webhook(new, d.headers, d.body)
    verify_webhook(old, d.headers, d.body)

    # Overlap 0: only the new secret signs from now on.
    r = c.post(f"/v1/webhook_endpoints/{ep['id']}/rotate_secret", {"expire_previous_after_s": 0})
    assert r.status == 200, r
    newest = r.json["secret"]
    p2 = c.pay_ok(1300, "USD")
    [d2] = receiver.wait_for(payment_event_pred(p2["id"]), what="webhook after the overlap")
    verify_webhook(newest, d2.headers, d2.body)
    with pytest.raises(AssertionError):
        verify_webhook(new, d2.headers, d2.body)

    # URL update: the next delivery goes to the new path.
    r = c.post(f"/v1/webhook_endpoints/{ep['id']}", {"url": receiver.url("/moved")})
    assert r.status == 200 and r.json["url"] == receiver.url("/moved"), r
    assert "secret" not in r.json
    p3 = c.pay_ok(1400, "USD")
    [d3] = receiver.wait_for(payment_event_pred(p3["id"]), what="webhook after the URL update")
    assert d3.path == "/moved"

    # Disabled: a payment's webhook is not sent (a second, enabled endpoint proves it was due).
    witness = make_endpoint(c, receiver.url("/witness"))
    r = c.post(f"/v1/webhook_endpoints/{ep['id']}", {"disabled": True})
    assert r.status == 200 and r.json["disabled"] is True, r
    p4 = c.pay_ok(1500, "USD")
    receiver.wait_for(lambda x: x.path == "/witness" and payment_event_pred(p4["id"])(x), what="witness webhook")
    time.sleep(0.5)
    assert not [x for x in receiver.snapshot() if x.path == "/moved" and payment_event_pred(p4["id"])(x)]
    assert_error(c.post(f"/v1/webhook_endpoints/{ep['id']}", {"url": "http://169.254.169.254/x"}), 400,
                 "url_not_allowed", "url")
    assert c.get(f"/v1/webhook_endpoints/{ep['id']}").json["url"] == receiver.url("/moved")
    c.request("DELETE", f"/v1/webhook_endpoints/{witness['id']}")
