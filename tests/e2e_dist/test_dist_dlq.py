"""Poison messages: an undecodable and a schema-invalid message produced straight into
every pipeline topic (paystream topics produce-raw, CloudEvents headers, garbage data) end
in tx.dlq; every stage keeps going. A dead letter is inspected and replayed with the
distributed `paystream dlq list|show|replay` (no --data-dir)."""
import json
import time
import uuid

from pslib import new_merchant, wait_until

TYPES = {"tx.initiated": "payment.initiated", "tx.validated": "payment.validated",
         "tx.settled": "payment.succeeded", "tx.failed": "payment.failed"}
# tx.settled and tx.failed feed two consumer groups (ledger, notifier).
CONSUMERS = {"tx.initiated": 1, "tx.validated": 1, "tx.settled": 2, "tx.failed": 2}
UNDECODABLE = "not json"
SCHEMA_INVALID = json.dumps({"schema_version": 1, "payment": {"id": "pay_poison", "amount": "ten"}})


def inject(dist, topic, value, key=None):
    """Produces one raw message with valid CloudEvents headers; returns its ce_id."""
    eid = f"evt_poison_{uuid.uuid4().hex[:16]}"
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    dist.cli_ok("topics", "produce-raw", "--topic", topic, "--key", key or f"pay_poison_{uuid.uuid4().hex[:8]}",
                "--value", value,
                "--header", f"ce_id={eid}", "--header", f"ce_type={TYPES[topic]}",
                "--header", "ce_source=/e2e/poison", "--header", f"ce_time={now}",
                "--header", "ce_specversion=1.0", "--header", "content-type=application/json")
    return eid


def dlq_by_event(dist):
    out = dist.cli_ok("dlq", "list", "--limit", "100000")
    by_id: dict = {}
    for line in out.splitlines():
        if line.strip():
            row = json.loads(line)
            by_id.setdefault(row["event_id"], []).append(row)
    return by_id


def test_poison_in_every_topic_goes_to_dlq(dist, merchant):
    c = merchant.client
    dead_before = dist.metric_sum("paystream_dead_letters_total")
    injected = {}
    for topic in TYPES:
        for kind, value in (("undecodable", UNDECODABLE), ("schema_invalid", SCHEMA_INVALID)):
            injected[inject(dist, topic, value)] = (topic, kind)
    # The pipeline keeps flowing after the poison.
    p = c.pay_ok(555, "USD")
    assert p["status"] == "succeeded", p

    by_id = wait_until(lambda: (b := dlq_by_event(dist)) and all(e in b for e in injected) and b,
                       60, 0.5, "every poison message in dlq list")
    for eid, (topic, kind) in injected.items():
        rows = by_id[eid]
        assert 1 <= len(rows) <= CONSUMERS[topic], (kind, rows)
        for row in rows:
            assert row["topic"] == topic, row
            assert row["event_type"] == TYPES[topic], row
            assert 0 <= row["partition"] < 3, row
            assert isinstance(row["original_offset"], int) and row["original_offset"] >= 0, row
            assert isinstance(row["error"], str) and row["error"], row
            assert row["replayed"] is False, row
    # Eventually every consumer of tx.settled / tx.failed has dead-lettered its copy.
    wait_until(lambda: (b := dlq_by_event(dist))
               and all(len(b.get(e, [])) == CONSUMERS[t] for e, (t, _) in injected.items()),
               30, 0.5, "one dead letter per consumer group")

    # Still flowing; the poison created no payment, posting or balance.
    assert c.pay_ok(556, "USD")["status"] == "succeeded"
    assert c.balance()["USD"] == 555 + 556
    m2 = new_merchant(dist.gateways[1])
    try:
        assert m2.client.get("/v1/payments/pay_poison").status == 404
    finally:
        m2.client.close()
    for r in dist.roles:
        assert r.running() or r.name.startswith("gateway-extra"), f"{r.name} died:\n{r.tail()}"
    total = sum(CONSUMERS[t] for t, _ in injected.values())
    assert dist.metric_sum("paystream_dead_letters_total") - dead_before >= total


def test_dead_letter_show_and_replay(dist, merchant):
    # An undecodable payment.validated event: the processor dead-letters it. Replay puts
    # it back on tx.validated, where it fails again: a second letter, the first marked.
    eid = inject(dist, "tx.validated", UNDECODABLE)
    [row] = wait_until(lambda: dlq_by_event(dist).get(eid), 30, 0.5, "the letter in dlq list")
    assert (row["topic"], row["replayed"]) == ("tx.validated", False), row

    shown = json.loads(dist.cli_ok("dlq", "show", str(row["offset"])))
    assert isinstance(shown, dict), shown
    assert eid in json.dumps(shown) and UNDECODABLE in json.dumps(shown), shown

    dist.cli_ok("dlq", "replay", str(row["offset"]))
    rows = wait_until(lambda: (r := dlq_by_event(dist).get(eid, [])) and len(r) >= 2 and r,
                      30, 0.5, "the replayed event dead-lettered again")
    assert len(rows) == 2, rows
    first = next(r for r in rows if r["offset"] == row["offset"])
    second = next(r for r in rows if r["offset"] != row["offset"])
    assert first["replayed"] is True and second["replayed"] is False, rows
    assert second["topic"] == "tx.validated"
    assert second["original_offset"] != row["original_offset"], "replay appends a new message"

    again = dist.cli("dlq", "replay", str(row["offset"]))
    assert again.returncode != 0, "a second replay of the same letter must fail"
    assert (again.stderr + again.stdout).strip(), "and say why"
    missing = dist.cli("dlq", "show", str(10 ** 15))
    assert missing.returncode != 0
    # Nothing else changed: the pipeline still works.
    assert merchant.client.pay_ok(100)["status"] == "succeeded"
