"""openapi/openapi.json: valid OpenAPI 3.1 JSON whose routes equal `paystream routes`,
and every documented route is really routed."""
import json
import os
import re
import subprocess

import pytest

from pslib import REPO_ROOT, binary_path, new_key

SPEC = os.path.join(REPO_ROOT, "openapi", "openapi.json")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@pytest.fixture(scope="module")
def spec():
    with open(SPEC) as f:
        return json.load(f)


def spec_routes(spec):
    return {(m.upper(), path) for path, item in spec["paths"].items() for m in item if m in METHODS}


def test_valid_openapi_31(spec):
    assert re.fullmatch(r"3\.1\.\d+", spec["openapi"]), spec["openapi"]
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["paths"]
    for path, item in spec["paths"].items():
        assert path.startswith("/"), path
        for m, op in item.items():
            if m not in METHODS:
                continue
            assert op.get("responses"), f"{m} {path} has no responses"
            for p in re.findall(r"{([^}]+)}", path):
                params = op.get("parameters", []) + item.get("parameters", [])
                resolved = [resolve(spec, x) for x in params]
                assert any(x.get("in") == "path" and x.get("name") == p for x in resolved), \
                    f"{m} {path}: path parameter {p} undocumented"

    # every $ref resolves
    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(spec, node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(spec)


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        cur = spec
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(cur, dict) and part in cur, f"unresolvable $ref {ref}"
            cur = cur[part]
        node = cur
    return node


def cli_routes():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    r = subprocess.run([binary_path(), "routes"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    return {(x["method"].upper(), x["path"]) for x in json.loads(r.stdout)}


def test_routes_match_binary(spec):
    documented, served = spec_routes(spec), cli_routes()
    assert documented == served, (f"only in openapi: {sorted(documented - served)}; "
                                  f"only in the binary: {sorted(served - documented)}")


def test_every_documented_route_is_routed(spec, merchant, shared):
    adm = shared.admin()
    for method, path in sorted(spec_routes(spec)):
        concrete = re.sub(r"{[^}]+}", "x_does_not_exist", path)
        c = adm if path == "/v1/merchants" else merchant.client
        headers = {"Idempotency-Key": new_key()} if method == "POST" else {}
        r = c.request(method, concrete, body={} if method in ("POST", "PUT", "PATCH") else None,
                      headers=headers)
        assert r.status != 405, f"{method} {path}: {r}"
        assert r.status < 500, f"{method} {path}: {r}"
        if r.status == 404:
            assert r.error["code"] != "route_not_found", f"{method} {path} not routed"
        assert r.status != 401 or path.startswith("/v1/merchants"), f"{method} {path}: {r}"
