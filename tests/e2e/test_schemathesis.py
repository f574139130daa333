"""The API checked against its OpenAPI contract by schemathesis (PyPI): generated requests
for every operation, with every check (no server error, status codes, content types,
headers and bodies conforming to the schema, schema-violating requests refused,
schema-valid requests accepted where acceptance does not depend on state or the network:
tests/e2e/schemathesis/schemathesis.toml), in the examples, coverage, fuzzing and stateful
phases. The stateful phase follows the links in openapi.json (a created payment's id to
GET, refund and ledger entries; an endpoint's id to get/update/rotate/delete; ...).
A fixed seed keeps a run reproducible: rerun a failure with the printed seed."""
import os
import subprocess
import sys

import pslib

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(pslib.REPO_ROOT, "openapi", "openapi.json")
CONFIG = os.path.join(HERE, "schemathesis", "schemathesis.toml")
SEED = os.environ.get("PAYSTREAM_SCHEMATHESIS_SEED", "1")
MAX_EXAMPLES = os.environ.get("PAYSTREAM_SCHEMATHESIS_MAX_EXAMPLES", "30")
ADMIN_OPS = ("createMerchant", "rotateApiKey")


def schemathesis(base_url: str, key: str, *selection: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks",
               PYTHONPATH=os.path.join(HERE, "schemathesis") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The CLI's entry point (console script schemathesis = schemathesis.cli:schemathesis),
    # run by this interpreter so the test uses the schemathesis installed for it.
    cmd = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()", "--config-file", CONFIG, "run", SPEC, "-u", base_url,
           "-H", f"Authorization: Bearer {key}", "--max-examples", MAX_EXAMPLES, "--seed", SEED,
           "--workers", "1", "--continue-on-failure", *selection]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_api_conforms_to_its_openapi_contract(server):
    s = server("--webhook-allow-cidrs", "127.0.0.0/8")
    m = pslib.new_merchant(s)
    m.client.close()
    base = f"http://127.0.0.1:{s.port}"
    merchant_ops = [a for op in ADMIN_OPS for a in ("--exclude-operation-id", op)]
    admin_ops = [a for op in ADMIN_OPS for a in ("--include-operation-id", op)]
    for key, selection, what in ((m.api_key, merchant_ops, "merchant operations"),
                                 (s.admin_key, admin_ops, "admin operations")):
        r = schemathesis(base, key, *selection)
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-60:])
        assert r.returncode == 0, f"schemathesis found failures in the {what} (seed {SEED}):\n{tail}"
        assert " passed" in r.stdout and "generated" in r.stdout, tail
    assert s.running(), "the server survived the run"
