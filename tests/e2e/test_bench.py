"""`paystream bench` (SPEC §8, docs/BENCH_TOOL.md): a short real run with reconciliation
against `paystream serve`, and two fake APIs that misbehave so the bench must fail loudly.

The fakes are tiny http.server APIs on 127.0.0.1:0 implementing just what the bench uses:
POST /v1/merchants, POST /v1/payments, GET /v1/payments (cursor pages, newest first),
GET /v1/balance and GET /v1/ledger/entries.
"""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import urllib.parse

import pslib

REQUIRED_KEYS = ["offered_per_s", "achieved_per_s", "latency_ms", "errors", "reconciliation",
                 "requests", "responses", "accepted", "replays_ok", "conflicts_409", "connections",
                 "connections_open_max", "processes", "duration_s", "generator_cpu_s",
                 "generator_cpu_us_per_request", "ok", "failures"]


def run_bench(url: str, *args: str, out: str, timeout_s: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    cmd = [pslib.binary_path(), "bench", "--url", url, "--out", out, "--seed", "7", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    doc = {}
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    return p, doc


def explain(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}"


# --------------------------------------------------------------------------- real server

def test_bench_short_run_reconciles_against_paystream(server, tmp_path):
    srv = server()
    out = str(tmp_path / "bench.json")
    p, doc = run_bench(f"http://127.0.0.1:{srv.port}", "--admin-key", pslib.ADMIN_KEY,
                       "--rate", "200", "--duration-s", "3", "--connections", "40", "--processes", "2",
                       "--retry-share", "0.05", "--duplicate-share", "0.05", "--decline-share", "0.2",
                       "--settle-timeout-s", "60", out=out)
    assert p.returncode == 0, explain(p)
    for k in REQUIRED_KEYS:
        assert k in doc, k
    for k in ["p50", "p90", "p99", "p999", "max"]:
        assert k in doc["latency_ms"], k
    for k in ["total", "by_status", "timeout", "io", "connect", "replay_mismatch"]:
        assert k in doc["errors"], k
    rec = doc["reconciliation"]
    for k in ["accepted", "terminal", "duplicates", "ledger_balanced"]:
        assert k in rec, k
    assert doc["ok"] is True and doc["failures"] == []
    assert doc["errors"]["total"] == 0
    assert rec["accepted"] > 0
    assert rec["terminal"] == rec["accepted"]
    assert rec["duplicates"] == 0 and rec["lost"] == 0
    assert rec["ledger_balanced"] is True
    assert rec["failed"] > 0 and rec["succeeded"] > 0          # the decline share took effect
    assert rec["balance_delta_minor"] == rec["succeeded"] * rec["credit_per_payment_minor"]
    assert abs(doc["offered_per_s"] - 200) <= 200 * 0.02
    assert doc["scheduled"] == 600
    assert 600 <= doc["requests"] <= 700                       # + the second half of each duplicate pair
    assert doc["responses"] == doc["requests"]
    assert doc["replays_ok"] > 0
    lat = doc["latency_ms"]
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert doc["processes"] == 2 and doc["connections"] == 40
    assert doc["connections_open_max"] == 40
    assert doc["e2e_ms"]["count"] == rec["terminal"]
    assert doc["generator_cpu_s"] > 0
    cpu_us = (doc["generator_cpu_s"] + doc["generator_parent_cpu_s"]) * 1e6 / doc["requests"]
    assert abs(doc["generator_cpu_us_per_request"] - cpu_us) <= 1e-6 * cpu_us
    assert "µs per request" in p.stdout
    assert "offered" in p.stdout and "p99" in p.stdout


def test_bench_usage_errors_exit_2(tmp_path):
    out = str(tmp_path / "x.json")
    p, _ = run_bench("http://127.0.0.1:9", "--api-key", "sk_x", "--admin-key", "adm",
                     "--rate", "10", "--duration-s", "1", out=out, timeout_s=30)
    assert p.returncode == 2, explain(p)
    p, _ = run_bench("http://127.0.0.1:9", "--api-key", "sk_x", "--rate", "10", "--duration-s", "1",
                     "--connections", "30000", "--processes", "1", out=out, timeout_s=30)
    assert p.returncode == 2, explain(p)


# --------------------------------------------------------------------------- fake APIs

class FakeApi:
    """A minimal in-memory API. mode: 'replay_new_id' answers a retried key with a NEW
    payment (a duplicate) while claiming to replay; 'never_settle' leaves every payment
    processing; 'malformed' answers every second payment request with a chunked
    (unsupported) or a garbage answer and closes the connection."""

    def __init__(self, mode: str):
        self.mode = mode
        self.lock = threading.Lock()
        self.payments: list[dict] = []          # creation order
        self.by_id: dict[str, dict] = {}
        self.first_by_key: dict[str, dict] = {}
        self.posts = 0
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def reply(self, status: int, obj, headers=()):
                body = json.dumps(obj, separators=(",", ":")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                if self.path == "/v1/merchants":
                    return self.reply(201, {"id": "mer_fake", "object": "merchant", "api_key": "sk_fake"})
                if self.path != "/v1/payments":
                    return self.reply(404, {"error": {"type": "invalid_request_error", "code": "not_found"}})
                key = self.headers.get("Idempotency-Key", "")
                if api.mode == "malformed":
                    with api.lock:
                        api.posts += 1
                        n = api.posts
                    if n % 2 == 0:
                        raw = (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                               if n % 4 == 0 else b"HTTP/1.1 2x2 Nope\r\n\r\n" + b"\x00" * 64 + b"\r\n\r\n")
                        self.wfile.write(raw)
                        self.wfile.flush()
                        self.close_connection = True
                        return
                status, obj, hdrs = api.create(key, body)
                self.reply(status, obj, hdrs)

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                if u.path == "/v1/payments":
                    return self.reply(200, api.page(q))
                if u.path == "/v1/balance":
                    return self.reply(200, api.balance())
                if u.path == "/v1/ledger/entries":
                    return self.reply(200, api.entries(q.get("payment_id", "")))
                self.reply(404, {"error": {"type": "invalid_request_error", "code": "not_found"}})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _new_payment(self, body: dict) -> dict:
        n = len(self.payments) + 1
        settle = self.mode != "never_settle"
        status = ("failed" if body.get("source") == "tok_decline" else "succeeded") if settle else "processing"
        p = {"id": f"pay_{n:08d}", "object": "payment", "amount": body["amount"], "currency": body["currency"],
             "status": status, "failure_code": None, "amount_refunded": 0, "description": None,
             "metadata": body.get("metadata", {}), "created": 1000 + n, "updated": 1005 + n}
        self.payments.append(p)
        self.by_id[p["id"]] = p
        return p

    def create(self, key: str, body: dict):
        with self.lock:
            first = self.first_by_key.get(key)
            if first is None:
                p = self._new_payment(body)
                self.first_by_key[key] = p
                return 202, dict(p, status="processing"), ()
            if self.mode == "replay_new_id":
                p = self._new_payment(body)     # the bug under test: a second payment for one key
                return 202, dict(p, status="processing"), (("Idempotent-Replayed", "true"),)
            return 202, dict(first, status="processing"), (("Idempotent-Replayed", "true"),)

    def page(self, q: dict) -> dict:
        with self.lock:
            items = [p for p in reversed(self.payments) if not q.get("status") or p["status"] == q["status"]]
            if q.get("starting_after"):
                ids = [p["id"] for p in items]
                i = ids.index(q["starting_after"]) if q["starting_after"] in ids else len(ids)
                items = items[i + 1:]
            limit = int(q.get("limit", "10"))
            return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}

    def balance(self) -> dict:
        with self.lock:
            total = sum(p["amount"] for p in self.payments if p["status"] == "succeeded")
        return {"object": "balance", "available": [{"currency": "EUR", "amount": total}]}

    def entries(self, pid: str) -> dict:
        with self.lock:
            p = self.by_id.get(pid)
            data = []
            if p and p["status"] == "succeeded":
                data.append({"id": "je_" + pid, "object": "journal_entry", "kind": "settlement", "payment_id": pid,
                             "postings": [{"account": "acquirer:clearing", "currency": "EUR", "amount": p["amount"]},
                                          {"account": "merchant:mer_fake:available", "currency": "EUR",
                                           "amount": -p["amount"]}], "created": p["updated"]})
        return {"object": "list", "data": data, "has_more": False}


def test_bench_fails_when_a_retry_creates_a_second_payment(tmp_path):
    fake = FakeApi("replay_new_id")
    try:
        out = str(tmp_path / "dup.json")
        p, doc = run_bench(f"http://127.0.0.1:{fake.port}", "--admin-key", "adm", "--rate", "50",
                           "--duration-s", "2", "--connections", "4", "--processes", "1",
                           "--retry-share", "0.3", "--duplicate-share", "0", "--settle-timeout-s", "5",
                           "--progress-interval-s", "0", out=out, timeout_s=60)
        assert p.returncode == 1, explain(p)
        assert "bench: FAILED" in p.stderr
        assert doc["ok"] is False and doc["failures"]
        assert doc["reconciliation"]["duplicates"] > 0, doc["reconciliation"]
        assert doc["reconciliation"]["duplicate_keys"] > 0
        assert doc["errors"]["replay_mismatch"] > 0
        keys = [pay["metadata"]["bench_key"] for pay in fake.payments]
        assert len(keys) > len(set(keys))          # the fake really holds two payments for one key
    finally:
        fake.close()


def test_bench_fails_when_payments_never_settle(tmp_path):
    fake = FakeApi("never_settle")
    try:
        out = str(tmp_path / "stuck.json")
        p, doc = run_bench(f"http://127.0.0.1:{fake.port}", "--admin-key", "adm", "--rate", "50",
                           "--duration-s", "1", "--connections", "4", "--processes", "1",
                           "--retry-share", "0.1", "--duplicate-share", "0.1", "--settle-timeout-s", "1",
                           "--progress-interval-s", "0", out=out, timeout_s=60)
        assert p.returncode == 1, explain(p)
        assert "bench: FAILED" in p.stderr
        rec = doc["reconciliation"]
        assert rec["accepted"] > 0
        assert rec["terminal"] < rec["accepted"]
        assert rec["settled"] is False
        assert rec["duplicates"] == 0                  # replays were correct; only settling failed
        assert doc["errors"]["total"] == 0
    finally:
        fake.close()


def test_bench_counts_malformed_answers_as_io_errors(tmp_path):
    fake = FakeApi("malformed")
    try:
        out = str(tmp_path / "bad.json")
        p, doc = run_bench(f"http://127.0.0.1:{fake.port}", "--admin-key", "adm", "--rate", "50",
                           "--duration-s", "1", "--connections", "4", "--processes", "1", "--no-reconcile",
                           "--retry-share", "0", "--duplicate-share", "0", "--progress-interval-s", "0",
                           out=out, timeout_s=60)
        assert p.returncode == 1, explain(p)          # failed loudly, not crashed
        assert "bench: FAILED" in p.stderr
        err = doc["errors"]
        assert err["io"] > 0 and err["by_status"] == {} and err["timeout"] == 0, err
        assert doc["requests"] == doc["scheduled"] == 50
        assert doc["responses"] + err["io"] == doc["requests"]
        assert doc["status_2xx"] == doc["responses"] > 0   # the well-formed half still counted
    finally:
        fake.close()
