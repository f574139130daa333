"""schemathesis hooks for the API contract run (tests/e2e/test_schemathesis.py).

A request that carries an Idempotency-Key gets a fresh one: schemathesis draws header
values from the schema, so two different bodies would otherwise often share a key and be
answered 422 idempotency_key_mismatch (correct, but it hides the request's own
validation). Requests without the header are left without it. Replays are tested in
test_idempotency.py."""
import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = kwargs.get("headers")
    if headers and headers.get("Idempotency-Key"):
        headers["Idempotency-Key"] = "st-" + uuid.uuid4().hex
