"""`paystream bench` (SPEC §8, docs/BENCH_TOOL.md) against the distributed shape: a short
open-loop run through gateway A with retries, concurrent duplicates and declines, then the
bench's own reconciliation through the API (every accepted payment terminal after the
Kafka pipeline, no duplicate, no loss, ledger balanced). The embedded counterpart is
tests/e2e/test_bench.py.

The bench gets the session's admin key and creates its own merchant (rate limit 1e6/s), so
the gateway's per-merchant rate limit does not turn the run into 429s. It runs with no
PAYSTREAM_* variables: it is a plain API client and must not see the stack's settings.
"""
from __future__ import annotations

import json
import os
import subprocess

import pslib

RATE = 100
DURATION_S = 3
SCHEDULED = RATE * DURATION_S
BENCH_TIMEOUT_S = 180          # subprocess guard only; the run itself takes a few seconds


def run_bench(url: str, admin_key: str, out: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    cmd = [pslib.binary_path(), "bench", "--url", url, "--admin-key", admin_key,
           "--rate", str(RATE), "--duration-s", str(DURATION_S), "--connections", "40",
           "--processes", "2", "--retry-share", "0.05", "--duplicate-share", "0.05",
           "--decline-share", "0.2", "--settle-timeout-s", "120", "--seed", "7",
           "--progress-interval-s", "0", "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, env=env)
    doc = {}
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    return p, doc


def explain(p: subprocess.CompletedProcess, doc: dict) -> str:
    return (f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}\n"
            f"failures: {doc.get('failures')}\nerrors: {doc.get('errors')}\n"
            f"reconciliation: {doc.get('reconciliation')}")


def test_bench_short_run_reconciles_against_the_distributed_shape(dist, gw_a, tmp_path):
    out = str(tmp_path / "f.json")
    p, doc = run_bench(f"http://127.0.0.1:{gw_a.port}", dist.admin_key, out)
    assert p.returncode == 0, explain(p, doc)
    assert doc["ok"] is True and doc["failures"] == [], explain(p, doc)

    # Load side: the schedule held, every request answered, no request error.
    assert abs(doc["offered_per_s"] - RATE) <= RATE * 0.02, doc["offered_per_s"]
    assert doc["scheduled"] == SCHEDULED
    assert SCHEDULED <= doc["requests"] <= SCHEDULED + SCHEDULED // 5   # + second halves of pairs
    assert doc["responses"] == doc["requests"]
    errors = doc["errors"]
    assert errors["total"] == 0, errors
    assert errors["timeout"] == 0 and errors["io"] == 0 and errors["replay_mismatch"] == 0, errors
    assert doc["accepted"] > 0
    assert doc["replays_ok"] > 0                       # the retry share took effect
    assert doc["processes"] == 2 and doc["connections"] == 40
    assert doc["connections_open_max"] == 40

    # Reconciliation through the API after the pipeline (fraud -> processor -> ledger).
    rec = doc["reconciliation"]
    assert rec["skipped"] is False and rec["settled"] is True, rec
    assert rec["accepted"] == doc["accepted"] > 0
    assert rec["terminal"] == rec["accepted"], rec
    assert rec["processing"] == 0 and rec["lost"] == 0, rec
    assert rec["duplicates"] == 0 and rec["duplicate_keys"] == 0 and rec["pair_mismatch"] == 0, rec
    assert rec["ledger_balanced"] is True, rec
    assert rec["succeeded"] + rec["failed"] == rec["terminal"]
    assert rec["failed"] > 0 and rec["succeeded"] > 0  # the decline share took effect
    assert rec["balance_delta_minor"] == rec["succeeded"] * rec["credit_per_payment_minor"]
    assert doc["e2e_ms"]["count"] == rec["terminal"]

    lat = doc["latency_ms"]
    assert lat["count"] == doc["responses"]
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat
    assert "offered" in p.stdout and "p99" in p.stdout
