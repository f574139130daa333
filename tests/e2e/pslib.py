"""Helpers for the black-box tests: start the real `paystream serve` binary, talk HTTP to
it with http.client (keep-alive), receive webhooks, verify signatures independently.

Python standard library only. Every wait is bounded in time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

ADMIN_KEY = "adm_e2e_" + "0123456789abcdef" * 2
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
START_TIMEOUT_S = 60.0   # debug (ASan) builds start slowly
TERMINAL = ("succeeded", "failed")


def binary_path() -> str:
    p = os.environ.get("PAYSTREAM_BIN") or os.path.join(REPO_ROOT, "build", "debug", "paystream")
    return p


def suite_serve_flags() -> list[str]:
    """Flags every `paystream serve` of the suite gets after its own (the test runner's
    PAYSTREAM_E2E_SERVE_FLAGS, e.g. "--engine sqlite": the same suite against that engine)."""
    return os.environ.get("PAYSTREAM_E2E_SERVE_FLAGS", "").split()


def ro_db(path: str) -> sqlite3.Connection:
    """A read-only connection to one of the server's SQLite files (reconciliation)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def kill_loop(srv: "Server", threads: list, stop: threading.Event, rnd, kills: int, run_s: float,
              gap_s: tuple, down_s: float) -> int:
    """Starts `threads` (the load), then kill -9s `srv` `kills` times, each after a random
    gap in `gap_s` and restarted after up to `down_s`; runs until `run_s` has passed, sets
    `stop` and joins the load. Returns the kills done (the load must have stopped)."""
    t_start = time.monotonic()
    for t in threads:
        t.start()
    done = 0
    try:
        for _ in range(kills):
            time.sleep(rnd.uniform(*gap_s))
            srv.kill()
            done += 1
            time.sleep(rnd.uniform(0.0, down_s))
            srv.start()
        time.sleep(max(0.0, run_s - (time.monotonic() - t_start)))
    finally:
        stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "load threads did not stop"
    return done


def wait_until(pred: Callable[[], Any], timeout_s: float, interval_s: float = 0.05,
               what: str = "condition") -> Any:
    """Polls pred() until it returns a truthy value; returns it. Fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval_s)


# --------------------------------------------------------------------------- server

LOOPBACK_CIDRS = "127.0.0.0/8,::1/128"


class Server:
    """One `paystream serve` process on 127.0.0.1:<ephemeral port> with its data dir.

    restart() starts a new process on the same data dir (the port changes)."""

    def __init__(self, data_dir: str, flags: list[str], env: Optional[dict] = None,
                 admin_key: Optional[str] = ADMIN_KEY, log_dir: Optional[str] = None):
        self.data_dir = data_dir
        self.flags = list(flags)
        self.extra_env = dict(env or {})
        self.admin_key = admin_key          # exported as PAYSTREAM_ADMIN_KEY (None: unset)
        self.admin_client_key: Optional[str] = None  # overrides the key admin() uses
        self.log_dir = log_dir or data_dir
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.lines: list[str] = []      # stderr lines of the current process
        self.starts = 0
        self.log_path = ""
        self._listening = threading.Event()
        self._reader: Optional[threading.Thread] = None

    # ---- lifecycle
    def child_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
        if self.admin_key is not None:
            env["PAYSTREAM_ADMIN_KEY"] = self.admin_key
        # ASan: do not fail a test on leak reports at exit unless the caller wants it.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
        # The test webhook receivers listen on loopback, which webhook URLs may only reach
        # when allow-listed (SPEC §3). env={"PAYSTREAM_WEBHOOK_ALLOW_CIDRS": None} starts a
        # server without it.
        env["PAYSTREAM_WEBHOOK_ALLOW_CIDRS"] = LOOPBACK_CIDRS
        env.update(self.extra_env)
        return {k: v for k, v in env.items() if v is not None}

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "Server":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        binp = binary_path()
        if not os.path.exists(binp):
            raise AssertionError(f"paystream binary not found at {binp} (set PAYSTREAM_BIN)")
        self.starts += 1
        self.lines = []
        self.port = None
        self._listening.clear()
        self.log_path = os.path.join(self.log_dir, f"server-{self.starts}.log")
        cmd = [binp, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, *self.flags,
               *suite_serve_flags()]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.child_env())
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"server exited with {self.proc.returncode} before listening:\n"
                                     + self.tail())
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("server did not log 'listening' in time:\n" + self.tail())
        # Ready = /readyz 200.
        while True:
            try:
                st, _, _ = raw_request(self.port, "GET", "/readyz", timeout_s=2)
                if st == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode} before ready:\n"
                                     + self.tail())
            if time.monotonic() > deadline:
                raise AssertionError("server not ready in time:\n" + self.tail())
            time.sleep(0.05)
        return self

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "ab") as log:
            for raw in proc.stderr:  # type: ignore[union-attr]
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                if not self._listening.is_set():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and obj.get("msg") == "listening":
                        addr = str(obj.get("address", ""))
                        host, _, port = addr.rpartition(":")
                        if port.isdigit():
                            self.port = int(port)
                            self._listening.set()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (kills and fails on timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"server did not exit within {timeout_s}s of SIGTERM:\n" + self.tail())
        self._join_reader()
        return rc

    def kill(self) -> None:
        """SIGKILL (crash) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def restart(self) -> "Server":
        if self.running():
            self.terminate()
        return self.start()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    # ---- clients
    def client(self, key: Optional[str] = None) -> "Client":
        return Client(self, key)

    def admin(self) -> "Client":
        return Client(self, self.admin_client_key or self.admin_key)

    def cli(self, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
        """Runs `paystream <args> --data-dir <dir>` (e.g. dlq list)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
        return subprocess.run([binary_path(), *args, "--data-dir", self.data_dir],
                              capture_output=True, text=True, timeout=timeout_s, env=env)


# --------------------------------------------------------------------------- HTTP

def raw_request(port: int, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[dict] = None, timeout_s: float = 10) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@dataclass
class Resp:
    status: int
    headers: dict            # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"body is not JSON (status {self.status}): {self.body[:300]!r}") from e

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def error(self) -> dict:
        j = self.json
        assert isinstance(j, dict) and isinstance(j.get("error"), dict), f"not an error body: {j}"
        return j["error"]

    def __repr__(self) -> str:
        return f"Resp({self.status}, {self.body[:400]!r})"


class Client:
    """A keep-alive HTTP client bound to one server (follows restarts: it reconnects to
    the server's current port). Not thread-safe: one per thread."""

    def __init__(self, server: Server, key: Optional[str], timeout_s: float = 30.0):
        self.server = server
        self.key = key
        self.timeout_s = timeout_s
        self.conn: Optional[http.client.HTTPConnection] = None
        self.conn_port: Optional[int] = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        if self.conn is not None and self.conn_port == self.server.port:
            return self.conn, True
        self.close()
        if self.server.port is None:
            raise ConnectionRefusedError("server is not listening (restarting)")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=self.timeout_s)
        self.conn_port = self.server.port
        return self.conn, False

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict] = None,
                raw: Optional[bytes] = None, auth: bool = True, retry_stale: bool = True) -> Resp:
        h = {}
        if auth and self.key is not None:
            h["Authorization"] = f"Bearer {self.key}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None or method in ("POST", "PUT", "PATCH"):
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=data, headers=h)
                r = conn.getresponse()
                resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
                if r.will_close:
                    self.close()
                return resp
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                # A reused keep-alive connection may have been closed by the server while
                # idle: retry once on a new connection. Never retry a fresh connection.
                if not (reused and retry_stale and attempt == 0):
                    raise
            except Exception:
                self.close()
                raise
        raise AssertionError("unreachable")

    # ---- conveniences
    def get(self, path: str, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, idem: Optional[str] = None, **kw) -> Resp:
        headers = dict(kw.pop("headers", {}) or {})
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return self.request("POST", path, body=body, headers=headers, **kw)

    def create_payment(self, amount: int = 1000, currency: str = "USD", source: str = "tok_approve",
                       idem: Optional[str] = None, wait_ms: Optional[int] = None, **extra) -> Resp:
        body = {"amount": amount, "currency": currency, "source": source, **extra}
        headers = {}
        if wait_ms is not None:
            headers["Prefer"] = f"wait={wait_ms}"
        return self.post("/v1/payments", body, idem=idem or new_key(), headers=headers)

    def pay_ok(self, amount: int = 1000, currency: str = "USD", source: str = "tok_approve",
               **extra) -> dict:
        """Creates a payment and waits until it is terminal; returns the payment object."""
        r = self.create_payment(amount, currency, source, wait_ms=5000, **extra)
        assert r.status in (201, 202), r
        p = r.json
        if p["status"] not in TERMINAL:
            p = self.wait_terminal(p["id"])
        return p

    def wait_terminal(self, payment_id: str, timeout_s: float = 30.0) -> dict:
        last: dict = {}

        def done():
            nonlocal last
            r = self.get(f"/v1/payments/{payment_id}")
            assert r.status == 200, f"GET payment {payment_id}: {r}"
            last = r.json
            return last if last["status"] in TERMINAL else None
        try:
            return wait_until(done, timeout_s, 0.05, f"payment {payment_id} terminal")
        except AssertionError as e:
            raise AssertionError(f"{e}; last state {last}") from None

    def wait_refund(self, refund_id: str, timeout_s: float = 30.0) -> dict:
        def done():
            r = self.get(f"/v1/refunds/{refund_id}")
            assert r.status == 200, f"GET refund {refund_id}: {r}"
            return r.json if r.json["status"] in TERMINAL else None
        return wait_until(done, timeout_s, 0.05, f"refund {refund_id} terminal")

    def list_all(self, path: str, limit: int = 100, max_pages: int = 1000) -> list:
        """Follows cursor pagination to the end."""
        out: list = []
        sep = "&" if "?" in path else "?"
        after = None
        for _ in range(max_pages):
            q = f"{path}{sep}limit={limit}" + (f"&starting_after={after}" if after else "")
            r = self.get(q)
            assert r.status == 200, f"GET {q}: {r}"
            j = r.json
            assert j["object"] == "list", j
            out.extend(j["data"])
            if not j["has_more"]:
                return out
            assert j["data"], "has_more with an empty page"
            after = j["data"][-1]["id"]
        raise AssertionError("too many pages")

    def balance(self) -> dict:
        r = self.get("/v1/balance")
        assert r.status == 200, r
        j = r.json
        assert j["object"] == "balance", j
        return {b["currency"]: b["amount"] for b in j["available"]}


@dataclass
class Merchant:
    id: str
    api_key: str
    client: Client
    name: str = ""


def new_key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def new_merchant(server: Server, name: Optional[str] = None, rate_limit: Optional[dict] = None) -> Merchant:
    body: dict = {"name": name or f"merchant {uuid.uuid4().hex[:8]}"}
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    adm = server.admin()
    try:
        r = adm.post("/v1/merchants", body)
    finally:
        adm.close()
    assert r.status == 201, f"create merchant: {r}"
    j = r.json
    assert j["object"] == "merchant" and j["id"] and j["api_key"], j
    return Merchant(j["id"], j["api_key"], server.client(j["api_key"]), j["name"])


def rotate_api_key(server: Server, merchant_id: str, body: Any = None) -> Resp:
    """POST /v1/merchants/{id}/api_keys with the admin key (body: {expire_previous_after_s})."""
    adm = server.admin()
    try:
        return adm.post(f"/v1/merchants/{merchant_id}/api_keys", body)
    finally:
        adm.close()


def balance_status(server: Server, key: str) -> int:
    """The status of GET /v1/balance with `key`: whether the key authenticates there."""
    c = server.client(key)
    try:
        return c.get("/v1/balance").status
    finally:
        c.close()


def assert_error(r: Resp, status: int, code, param: Any = "__any__", type_: Optional[str] = None) -> dict:
    """Asserts an error answer. code may be a string or a set of acceptable codes."""
    assert r.status == status, f"expected {status} {code}, got {r}"
    err = r.error
    codes = {code} if isinstance(code, str) else set(code)
    assert err.get("code") in codes, f"expected code in {codes}, got {err}"
    for k in ("type", "code", "message", "param"):
        assert k in err, f"error lacks {k}: {err}"
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] in ("invalid_request_error", "authentication_error", "idempotency_error",
                           "rate_limit_error", "api_error"), err
    if param != "__any__":
        assert err["param"] == param, f"expected param {param!r}, got {err}"
    if type_ is not None:
        assert err["type"] == type_, err
    return err


# --------------------------------------------------------------------------- webhooks

def verify_webhook(secret: str, headers: dict, body: bytes, tolerance_s: int = 300) -> None:
    """Standard Webhooks verification, written independently of the server."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig_header = headers.get("webhook-signature")
    assert msg_id and ts and sig_header, f"missing webhook headers: {headers}"
    assert ts.isdigit(), f"bad timestamp {ts!r}"
    assert abs(int(ts) - time.time()) <= tolerance_s, f"timestamp {ts} too far from now"
    assert secret.startswith("whsec_"), secret
    key = base64.b64decode(secret[len("whsec_"):], validate=True)
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = []
    for part in sig_header.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1":
            candidates.append(sig)
    assert candidates, f"no v1 signature in {sig_header!r}"
    assert any(hmac.compare_digest(expected, c) for c in candidates), \
        f"signature mismatch: expected v1,{expected} in {sig_header!r}"


@dataclass
class Delivery:
    path: str
    headers: dict
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """http.server on 127.0.0.1:<port 0> in a thread. Records every POST; answers
    `self.status` (settable, e.g. 500 to force retries)."""

    def __init__(self):
        self.status = 200
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                d = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with recv.lock:
                    recv.deliveries.append(d)
                    status = recv.status
                payload = b"ok" if status < 400 else b"broken"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):  # silence
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def matching(self, pred: Callable[[Delivery], bool]) -> list[Delivery]:
        out = []
        for d in self.snapshot():
            try:
                if pred(d):
                    out.append(d)
            except (ValueError, KeyError, TypeError):
                pass
        return out

    def wait_for(self, pred: Callable[[Delivery], bool], count: int = 1, timeout_s: float = 20.0,
                 what: str = "webhook") -> list[Delivery]:
        return wait_until(lambda: (m := self.matching(pred)) and len(m) >= count and m,
                          timeout_s, 0.05, what)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def payment_event_pred(payment_id: str, type_: Optional[str] = None) -> Callable[[Delivery], bool]:
    def pred(d: Delivery) -> bool:
        j = d.json
        return j["data"]["id"] == payment_id and (type_ is None or j["type"] == type_)
    return pred
