"""Secrets at rest: the data directory is 0700 and every file in it 0600 -- paystream.db,
its -wal/-shm, acquirer-sim.db and its side files, admin.key -- even under umask 000,
for `paystream serve` and `paystream acquirer-sim`; looser files from an older start are
tightened."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
import urllib.request

import pslib
from pslib import new_merchant

SERVE_FILES = ["paystream.db", "paystream.db-wal", "paystream.db-shm",
               "acquirer-sim.db", "acquirer-sim.db-wal", "acquirer-sim.db-shm", "admin.key"]
SIM_FILES = ["acquirer-sim.db", "acquirer-sim.db-wal", "acquirer-sim.db-shm"]


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_private(data_dir: str, expected: list[str]) -> None:
    assert mode(data_dir) == 0o700, oct(mode(data_dir))
    names = sorted(os.listdir(data_dir))
    for name in expected:
        assert name in names, (name, names)
    loose = {n: oct(mode(os.path.join(data_dir, n))) for n in names
             if os.path.isfile(os.path.join(data_dir, n)) and mode(os.path.join(data_dir, n)) != 0o600}
    assert not loose, loose


class umask:
    def __init__(self, value: int):
        self.value = value

    def __enter__(self):
        self.old = os.umask(self.value)

    def __exit__(self, *exc):
        os.umask(self.old)


def test_serve_data_dir_is_private(server, tmp_path):
    data_dir = str(tmp_path / "fresh" / "data")   # serve creates it
    with umask(0):   # the child inherits it: nothing masked
        srv = server(admin_key=None, data_dir=data_dir)
    srv.admin_client_key = open(os.path.join(data_dir, "admin.key")).read().strip()
    m = new_merchant(srv)
    p = m.client.pay_ok(1000, "USD", "tok_approve")   # writes both databases
    assert p["status"] == "succeeded", p
    assert_private(data_dir, SERVE_FILES)


def test_serve_tightens_an_older_data_dir(server, tmp_path):
    data_dir = str(tmp_path / "old")
    os.makedirs(data_dir)
    os.chmod(data_dir, 0o755)
    for name in ("paystream.db", "acquirer-sim.db"):   # empty files are empty databases
        open(os.path.join(data_dir, name), "w").close()
        os.chmod(os.path.join(data_dir, name), 0o644)
    srv = server(data_dir=data_dir)
    m = new_merchant(srv)
    assert m.client.pay_ok(500, "EUR", "tok_decline")["status"] == "failed"
    assert_private(data_dir, [n for n in SERVE_FILES if n != "admin.key"])


def test_acquirer_sim_data_dir_is_private(tmp_path):
    data_dir = str(tmp_path / "sim" / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    with umask(0):
        proc = subprocess.Popen([pslib.binary_path(), "acquirer-sim", "--listen", "127.0.0.1:0",
                                 "--data-dir", data_dir], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    port: list[int] = []
    lines: list[str] = []

    def read():
        for raw in proc.stderr:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("msg") == "listening" and not port:
                port.append(int(str(obj["address"]).rpartition(":")[2]))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        pslib.wait_until(lambda: port, 30, what="acquirer-sim listening")
        body = json.dumps({"payment_id": "pay_at_rest", "amount": 100, "currency": "EUR",
                           "source": "tok_approve"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port[0]}/v1/charges", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["approved"] is True
        assert_private(data_dir, SIM_FILES)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)
    assert proc.returncode == 0, "".join(lines[-20:])
