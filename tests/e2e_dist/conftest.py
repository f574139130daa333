"""Fixtures for the distributed black-box tests.

One deployment per test session, against the running local stack (deploy/local/stack up;
scripts/test.sh starts it and exports the addresses):

    acquirer-sim ── processor worker
    gateway A, gateway B ─► tx.initiated ─► fraud ─► tx.validated ─► processor ─► tx.settled/failed
                                                                       ledger, notifier workers

Every process is the real binary (PAYSTREAM_BIN), on 127.0.0.1 with ephemeral ports. The
session is isolated from everything else on the shared Kafka/PostgreSQL/Redis by a unique
topic prefix, PostgreSQL schema and Redis key prefix.

Fixtures:
- `dist`: the Deployment (gateways, workers, sim, `cli()` for `paystream dlq ...` etc.).
- `gw_a`, `gw_b`: the two gateways (pslib.Server-like: `.port`, `.client(key)`, `.admin()`).
- `merchant`: a fresh merchant (created through gateway A, client bound to gateway A).
- `receiver`: a webhook receiver on 127.0.0.1.
On failure, the tail of every process's log is printed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Optional

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import pslib  # noqa: E402

STACK_VARS = ("PAYSTREAM_KAFKA_BROKERS", "PAYSTREAM_POSTGRES_URL", "PAYSTREAM_REDIS_URL",
              "PAYSTREAM_REDIS_CACHE_URL")

# Stage flags shared by every worker: a short acquirer timeout so tok_timeout resolves fast,
# a short webhook retry schedule (3 attempts) so dead-lettered deliveries do not linger.
WORKER_FLAGS = ["--acquirer-timeout-ms", "300", "--velocity-max-per-source", "1000000", "--webhook-retry-schedule-ms", "50,50",
                "--webhook-timeout-ms", "2000"]
STAGES = ("fraud", "processor", "ledger", "notifier")
CLI_TIMEOUT_S = 60.0


class Role(pslib.Server):
    """One process of the distributed shape: `paystream <args>`. It logs a JSON line with
    "msg":"listening" and its "address" like `paystream serve`; readiness is `ready_path`
    answering 200 on that address (None: the listening line is enough).

    Reuses pslib.Server's log capture, terminate/kill, tail and HTTP clients."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: str,
                 ready_path: Optional[str] = "/readyz", admin_key: Optional[str] = None):
        super().__init__(data_dir=log_dir, flags=[], env=env, admin_key=admin_key, log_dir=log_dir)
        self.name = name
        self.args = list(args)
        self.ready_path = ready_path

    def start(self, timeout_s: float = pslib.START_TIMEOUT_S) -> "Role":
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        binp = pslib.binary_path()
        if not os.path.exists(binp):
            raise AssertionError(f"paystream binary not found at {binp} (set PAYSTREAM_BIN)")
        self.starts += 1
        self.lines = []
        self.port = None
        self._listening.clear()
        self.log_path = os.path.join(self.log_dir, f"{self.name}-{self.starts}.log")
        self.proc = subprocess.Popen([binp, *self.args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=self.child_env())
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before "
                                     f"listening:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} did not log 'listening' in time:\n{self.tail()}")
        if self.ready_path is None:
            return self
        while True:
            try:
                st, _, _ = pslib.raw_request(self.port, "GET", self.ready_path, timeout_s=2)
                if st == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before "
                                     f"ready:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in time:\n{self.tail()}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"Role({self.name}, port={self.port})"


class Deployment:
    """The processes of one test session and the environment they share."""

    def __init__(self, base_dir: str, sim_flags: tuple = (), stage_flags: Optional[dict] = None):
        """sim_flags: extra `acquirer-sim` flags; stage_flags: extra worker flags by stage."""
        missing = [v for v in STACK_VARS if not os.environ.get(v)]
        if missing:
            raise AssertionError(
                f"{', '.join(missing)} not set: the distributed tests need the local stack. Run "
                "`eval \"$(deploy/local/stack up)\"` and export the four PAYSTREAM_* variables "
                "(scripts/test.sh does both).")
        self.base_dir = base_dir
        self.sim_flags = list(sim_flags)
        self.stage_flags = dict(stage_flags or {})
        self.session = uuid.uuid4().hex[:12]
        self.admin_key = "adm_dist_" + uuid.uuid4().hex
        self.env = {v: os.environ[v] for v in STACK_VARS}
        self.env.update({
            "PAYSTREAM_TOPIC_PREFIX": f"e2e-{self.session}.",
            "PAYSTREAM_POSTGRES_SCHEMA": f"s_{self.session}",
            "PAYSTREAM_REDIS_PREFIX": f"e2e{self.session}:",
            "PAYSTREAM_ADMIN_KEY": self.admin_key,
            # The webhook receivers listen on loopback: the gateways (creation) and the
            # notifier worker (sending) must allow-list it (SPEC §3).
            "PAYSTREAM_WEBHOOK_ALLOW_CIDRS": pslib.LOOPBACK_CIDRS,
        })
        self.roles: list[Role] = []
        self.sim: Optional[Role] = None
        self.workers: dict[str, Role] = {}
        self.gateways: list[Role] = []

    # ---- one-shot commands with the session's environment
    def cli(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
        env.update(self.env)
        return subprocess.run([pslib.binary_path(), *args], capture_output=True, text=True,
                              timeout=timeout_s, env=env)

    def cli_ok(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.returncode == 0, f"paystream {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    # ---- processes
    def role(self, name: str, args: list[str], ready_path: Optional[str] = "/readyz") -> Role:
        d = os.path.join(self.base_dir, name)
        os.makedirs(d, exist_ok=True)
        r = Role(name, args, dict(self.env), d, ready_path=ready_path, admin_key=self.admin_key)
        self.roles.append(r)
        return r

    def start_gateway(self, name: str, listen: str = "127.0.0.1:0") -> Role:
        """An extra gateway (the test stops it; stop() catches what is left)."""
        return self.role(name, ["gateway", "--listen", listen, "--reuse-port"]).start()

    def start(self) -> "Deployment":
        self.cli_ok("migrate")
        self.cli_ok("topics", "create", "--partitions", "3", "--replication-factor", "1")
        sim_dir = os.path.join(self.base_dir, "sim-data")
        os.makedirs(sim_dir, exist_ok=True)
        self.sim = self.role("acquirer-sim", ["acquirer-sim", "--listen", "127.0.0.1:0",
                                              "--data-dir", sim_dir, *self.sim_flags],
                             ready_path=None).start()
        acquirer_url = f"http://127.0.0.1:{self.sim.port}"
        # Start the workers in parallel: each joins consumer groups, which takes a moment.
        for stage in STAGES:
            args = ["worker", "--stage", stage, "--metrics-listen", "127.0.0.1:0",
                    "--instance-id", f"e2e-{self.session}-{stage}", *WORKER_FLAGS]
            if stage == "processor":
                args += ["--acquirer-url", acquirer_url]
            args += self.stage_flags.get(stage, [])
            self.workers[stage] = self.role(f"worker-{stage}", args)
        errors: list[BaseException] = []

        def start_one(r: Role) -> None:
            try:
                r.start()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        # Two gateways on their own ports (tests address each one); both set SO_REUSEPORT so
        # test_reuse_port can add a third on gateway A's port.
        self.gateways = [self.role(name, ["gateway", "--listen", "127.0.0.1:0", "--reuse-port"])
                         for name in ("gateway-a", "gateway-b")]
        threads = [threading.Thread(target=start_one, args=(r,))
                   for r in [*self.workers.values(), *self.gateways]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=pslib.START_TIMEOUT_S + 10)
        if errors:
            raise errors[0]
        # Warm the pipeline (consumer group assignment happens on the first poll) through
        # both gateways, so the first test does not pay for it.
        m = pslib.new_merchant(self.gateways[0])
        try:
            for g in self.gateways:
                c = g.client(m.api_key)
                try:
                    p = c.pay_ok(100)
                    if p["status"] != "succeeded":
                        raise AssertionError(f"warm-up payment did not succeed: {p}")
                finally:
                    c.close()
        finally:
            m.client.close()
        return self

    def stop(self) -> list[str]:
        """SIGTERM every process (gateways first, then workers, then the simulator); returns
        one complaint per process that did not exit 0 in time."""
        problems = []
        order = ([r for r in self.roles if r.name.startswith("gateway")]
                 + [r for r in self.roles if r.name.startswith("worker")]
                 + [r for r in self.roles if r.name == "acquirer-sim"])
        for r in order:
            if not r.running():
                continue
            try:
                rc = r.terminate(timeout_s=30)
                if rc != 0:
                    problems.append(f"{r.name} exited with {rc} on SIGTERM:\n{r.tail(20)}")
            except AssertionError as e:
                problems.append(f"{r.name}: {e}")
        return problems

    def cleanup_state(self) -> None:
        """Drops the session's PostgreSQL schema and Redis keys (best effort). Kafka topics
        stay: nothing in paystream deletes topics yet."""
        schema = self.env["PAYSTREAM_POSTGRES_SCHEMA"]
        try:
            subprocess.run(["psql", self.env["PAYSTREAM_POSTGRES_URL"], "-X", "-q", "-c",
                            f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'],
                           capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for url in (self.env["PAYSTREAM_REDIS_URL"], self.env["PAYSTREAM_REDIS_CACHE_URL"]):
            try:
                keys = subprocess.run(["redis-cli", "-u", url, "--scan", "--pattern",
                                       self.env["PAYSTREAM_REDIS_PREFIX"] + "*"],
                                      capture_output=True, text=True, timeout=30).stdout.split()
                for i in range(0, len(keys), 500):
                    subprocess.run(["redis-cli", "-u", url, "unlink", *keys[i:i + 500]],
                                   capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass

    # ---- conveniences
    def metric_sum(self, name: str, roles: Optional[list[Role]] = None) -> float:
        """Sum of every sample of metric `name` over the given roles' /metrics."""
        total = 0.0
        for r in roles if roles is not None else list(self.workers.values()) + self.gateways:
            st, _, body = pslib.raw_request(r.port, "GET", "/metrics")
            assert st == 200, f"{r.name} /metrics: {st}"
            for line in body.decode().splitlines():
                if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total


_dist_holder: list[Deployment] = []


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call") and _dist_holder:
        for r in _dist_holder[0].roles:
            if r.starts:
                rep.sections.append((f"{r.name} log (start #{r.starts})", r.tail(40)))


def run_deployment(d: Deployment):
    """A fixture's body for a deployment: start it (stopped again if that fails), hand it
    to the tests, then stop it gracefully and remove its state. Use: yield from."""
    _dist_holder.append(d)
    try:
        d.start()
    except BaseException:
        d.stop()
        raise
    yield d
    problems = d.stop()
    d.cleanup_state()
    assert not problems, "graceful shutdown failed:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def dist(tmp_path_factory):
    yield from run_deployment(Deployment(str(tmp_path_factory.mktemp("dist"))))


@pytest.fixture
def gw_a(dist) -> Role:
    return dist.gateways[0]


@pytest.fixture
def gw_b(dist) -> Role:
    return dist.gateways[1]


@pytest.fixture
def merchant(dist, gw_a) -> pslib.Merchant:
    m = pslib.new_merchant(gw_a)
    yield m
    m.client.close()


@pytest.fixture
def receiver():
    r = pslib.WebhookReceiver()
    yield r
    r.close()
