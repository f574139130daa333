"""Intake admission under overload (SPEC §2.6): more payments than the pipeline settles.

The server runs with a small backlog bound (--max-backlog-records) and a slow acquirer,
and 24 threads send payments as fast as they can for a bounded time. Then:
- some payments were shed with 503 store_overloaded and a Retry-After header;
- every accepted payment reaches a terminal status, none is lost, no key is charged twice
  (a shed key retried later is accepted once);
- the backlog gauge sampled during the run never went past the bound by more than the
  requests that can be between the admission check and the commit (the senders).
"""
from __future__ import annotations

import threading
import time

from pslib import TERMINAL, new_key, new_merchant, raw_request, wait_until
import promtext

BOUND = 40
SENDERS = 24
RUN_S = 4.0


def _backlog_gauge(port: int) -> float:
    st, _, body = raw_request(port, "GET", "/metrics")
    assert st == 200
    fam = promtext.parse(body.decode("utf-8")).get("paystream_pipeline_backlog_records")
    assert fam is not None, "paystream_pipeline_backlog_records is not exported"
    return max(s.value for s in fam.samples)


def test_overload_sheds_with_retry_after_and_loses_nothing(server):
    srv = server("--max-backlog-records", str(BOUND), "--acquirer-latency-ms", "25",
                 "--processor-concurrency", "2", "--rate-limit-per-s", "100000",
                 "--rate-limit-burst", "100000")
    m = new_merchant(srv)
    accepted: dict[str, str] = {}     # idempotency key -> payment id
    shed_keys: list[str] = []
    other: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + RUN_S

    def sender():
        c = srv.client(m.api_key)
        try:
            _send(c)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            with lock:
                other.append(f"sender failed: {e!r}")
        finally:
            c.close()

    def _send(c):
        while time.monotonic() < deadline:
            k = new_key("ovl")
            r = c.create_payment(100, idem=k)
            with lock:
                if r.status == 202:
                    accepted[k] = r.json["id"]
                elif r.status == 503 and r.error["code"] == "store_overloaded":
                    assert r.header("Retry-After") is not None, r
                    shed_keys.append(k)
                else:
                    other.append(f"{r.status} {r.body[:200]!r}")

    samples: list[float] = []
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            samples.append(_backlog_gauge(srv.port))
            time.sleep(0.05)

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    st = threading.Thread(target=sampler)
    st.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop_sampling.set()
    st.join()

    assert not other, other[:5]
    assert shed_keys, f"no 503 store_overloaded in {len(accepted)} accepted payments"
    assert accepted, "nothing was accepted"
    assert samples and max(samples) <= BOUND + SENDERS, (max(samples), samples[-20:])

    c = m.client
    # Every accepted payment settles; a shed key was never used, so a retry is a new payment.
    for pid in accepted.values():
        p = c.wait_terminal(pid, timeout_s=60)
        assert p["status"] in TERMINAL
    retry = shed_keys[0]
    r = wait_until(lambda: (lambda x: x if x.status == 202 else None)(c.create_payment(100, idem=retry)),
                   30, 0.2, "a shed key accepted on retry")
    again = c.create_payment(100, idem=retry)
    assert again.status == 202 and again.header("Idempotent-Replayed") == "true", again
    assert again.json["id"] == r.json["id"]
    c.wait_terminal(r.json["id"], timeout_s=60)

    listed = c.list_all("/v1/payments")
    ids = [p["id"] for p in listed]
    assert len(ids) == len(set(ids))
    assert set(accepted.values()) | {r.json["id"]} == set(ids), "lost or unexpected payments"
    assert all(p["status"] in TERMINAL for p in listed)
    # Drained: nothing waits for a stage any more.
    wait_until(lambda: _backlog_gauge(srv.port) == 0, 30, 0.1, "backlog drained")
