"""SIGTERM during a burst: exit code 0, and every acknowledged payment is durable and
reaches a terminal status after a restart."""
import http.client
import json
import signal
import threading
import time

import pytest

from pslib import new_merchant, raw_request


@pytest.mark.slow
def test_sigterm_during_burst(server):
    # Velocity limit off: six closed-loop senders can pass the default 1,000 payments per
    # source and minute within the burst, and this test is about shutdown, not fraud.
    srv = server("--shutdown-timeout-ms", "10000", "--acquirer-latency-ms", "20",
                 "--velocity-max-per-source", "1000000000")
    m = new_merchant(srv)
    acked: dict = {}
    unexpected: list = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(tid):
        c = srv.client(m.api_key)
        c.timeout_s = 15
        i = 0
        while not stop.is_set():
            k = f"sd-{tid}-{i}"
            try:
                r = c.create_payment(100 + tid, "USD", "tok_approve", idem=k)
            except (OSError, http.client.HTTPException):
                break  # listener closed: the server is going down
            if r.status in (201, 202):
                with lock:
                    acked[k] = r.json["id"]
                i += 1
            elif r.status == 503 and r.error["code"] == "draining":
                break
            else:
                with lock:
                    unexpected.append(r)
                break
        c.close()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in ts:
        t.start()
    time.sleep(1.5)
    n_before = len(acked)
    t0 = time.monotonic()
    rc = srv.terminate(timeout_s=40)
    took = time.monotonic() - t0
    stop.set()
    for t in ts:
        t.join(timeout=30)
    assert not unexpected, unexpected[:3]
    assert rc == 0, f"exit code {rc}\n{srv.tail()}"
    assert n_before > 0, "no payment accepted before SIGTERM"
    assert took < 15, f"shutdown took {took:.1f}s"

    srv.start()
    c = srv.client(m.api_key)
    for k, pid in acked.items():
        p = c.wait_terminal(pid, timeout_s=60)
        assert p["status"] == "succeeded", (p["id"], p.get("failure_code"))
    listed = {p["id"] for p in c.list_all("/v1/payments")}
    assert set(acked.values()) <= listed
    assert c.balance()["USD"] == sum(p["amount"] for p in c.list_all("/v1/payments") if p["status"] == "succeeded")
    print(f"acked {len(acked)} payments ({n_before} before SIGTERM), all terminal after restart")


def test_readyz_false_while_draining(server):
    # A long acquirer latency keeps a Prefer-wait request in flight while we SIGTERM.
    srv = server("--shutdown-timeout-ms", "10000", "--acquirer-latency-ms", "1500")
    m = new_merchant(srv)
    res = {}

    def slow():
        res["r"] = m.client.create_payment(100, wait_ms=5000)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    statuses = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and srv.running():
        try:
            st, _, body = raw_request(srv.port, "GET", "/readyz", timeout_s=1)
            statuses.append(st)
            if st == 503:
                assert json.loads(body) == {"status": "not_ready"}
        except OSError:
            statuses.append("closed")
            break
        time.sleep(0.02)
    t.join(timeout=20)
    rc = srv.proc.wait(timeout=30)
    assert rc == 0, srv.tail()
    assert "r" in res and res["r"].status in (201, 202), res  # the in-flight request finished
    assert 200 not in statuses, f"/readyz answered 200 after SIGTERM: {statuses}"
