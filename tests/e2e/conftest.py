"""Fixtures for the black-box tests (see pslib.py for the helpers).

- `server`: a factory `server(*flags, env=None, admin_key=ADMIN_KEY, data_dir=None)` that
  starts `paystream serve` on a fresh temp data dir (or the given one) and stops every
  process it started at teardown. Restart on the same data dir with `srv.restart()` or
  `server(data_dir=srv.data_dir)` after stopping.
- `shared`: one session-wide default server for tests that only need fresh merchants.
- `merchant`: a fresh merchant on `shared`.
- `receiver`: a webhook receiver on 127.0.0.1.
On failure, the tail of every involved server's log is printed.
"""
from __future__ import annotations

import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import pslib  # noqa: E402

# Flags of the shared server: short acquirer timeout so tok_timeout resolves fast, short
# webhook retry schedule so failing deliveries do not linger.
SHARED_FLAGS = ["--acquirer-timeout-ms", "200", "--webhook-retry-schedule-ms", "100,200,400",
                "--webhook-timeout-ms", "2000"]

_servers_by_test: dict[str, list] = {}


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        servers = list(_servers_by_test.get(item.nodeid, []))
        if "shared" in item.fixturenames and _shared_holder:
            servers.append(_shared_holder[0])
        for s in servers:
            rep.sections.append((f"paystream log ({s.data_dir}, start #{s.starts})", s.tail(80)))


def _stop(s: pslib.Server) -> None:
    if s.running():
        try:
            s.terminate(timeout_s=20)
        except AssertionError:
            s.kill()


@pytest.fixture
def server(request, tmp_path_factory):
    started: list[pslib.Server] = []
    _servers_by_test[request.node.nodeid] = started

    def factory(*flags: str, env=None, admin_key=pslib.ADMIN_KEY, data_dir=None,
                start=True) -> pslib.Server:
        d = data_dir or str(tmp_path_factory.mktemp("data"))
        s = pslib.Server(d, list(flags), env=env, admin_key=admin_key,
                         log_dir=str(tmp_path_factory.mktemp("logs")))
        started.append(s)
        if start:
            s.start()
        return s

    yield factory
    for s in started:
        _stop(s)
    _servers_by_test.pop(request.node.nodeid, None)


_shared_holder: list[pslib.Server] = []


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    s = pslib.Server(str(tmp_path_factory.mktemp("shared")), SHARED_FLAGS)
    s.start()
    _shared_holder.append(s)
    yield s
    _stop(s)


@pytest.fixture
def merchant(shared) -> pslib.Merchant:
    m = pslib.new_merchant(shared)
    yield m
    m.client.close()


@pytest.fixture
def receiver():
    r = pslib.WebhookReceiver()
    yield r
    r.close()
