"""Two gateway processes on one port (SO_REUSEPORT): both serve, and stopping one leaves
the port served by the other."""
from pslib import new_merchant, raw_request


def test_second_gateway_on_the_same_port(dist, gw_a):
    extra = dist.start_gateway("gateway-extra", f"127.0.0.1:{gw_a.port}")
    assert extra.port == gw_a.port
    m = new_merchant(gw_a)
    try:
        # Fresh connections are spread over both processes; all of them must work.
        for _ in range(20):
            st, _, body = raw_request(gw_a.port, "GET", "/v1/balance",
                                      headers={"Authorization": f"Bearer {m.api_key}"})
            assert st == 200, (st, body)
        assert extra.terminate(timeout_s=30) == 0
        for _ in range(10):
            st, _, _ = raw_request(gw_a.port, "GET", "/readyz")
            assert st == 200
        assert m.client.pay_ok(100)["status"] == "succeeded"
    finally:
        m.client.close()
        if extra.running():
            extra.kill()
