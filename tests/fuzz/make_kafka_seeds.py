#!/usr/bin/env python3
"""Writes the seeds of fuzz_kafka_codec (tests/fuzz/corpus/fuzz_kafka_codec) in the layout
the harness's FuzzedDataProvider reads: strings from the front (each ended by a backslash
and one more byte), integers from the back (last byte first), the value in between."""
import pathlib, struct

NAMES = ["ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", "content-type", "traceparent",
         "ps_original_topic", "ps_original_partition", "ps_original_offset", "ps_error", "ps_attempts",
         "ps_replay_of"]


def seed(topic, partition, offset, ts, key, headers, value):
    front = b""
    back = []  # byte sequences in the order they are consumed

    def s(x):
        nonlocal front
        front += x.encode().replace(b"\\", b"\\\\") + b"\\x"

    def integral(v, n, signed=False):  # ConsumeIntegral of an n-byte type: from the end, MSB first
        if signed:
            v += 1 << (8 * n - 1)  # a signed type's value is its minimum plus the raw bytes
        back.append(bytes((v >> (8 * (n - 1 - i))) & 0xff for i in range(n)))

    s(topic)
    integral(partition, 4, True)
    integral(offset, 8, True)
    integral(ts, 8, True)
    s(key)
    integral(len(headers), 1)  # ConsumeIntegralInRange(0, 16): one byte
    for name, val in headers:
        integral(1, 1)  # ConsumeBool: a known name
        integral(NAMES.index(name), 1)
        s(val)
    tail = b"".join(back)[::-1]
    return front + value.encode() + tail


def main():
    out = pathlib.Path(__file__).parent / "corpus" / "fuzz_kafka_codec"
    out.mkdir(parents=True, exist_ok=True)
    data = '{"payment":{"id":"pay_1","merchant_id":"mer_1","amount":1000,"currency":"EUR","status":"processing"}}'
    ev = [("ce_id", "evt_0123456789abcdef01234567"), ("ce_type", "payment.initiated"),
          ("ce_source", "/paystream/gateway"), ("ce_time", "2025-01-02T03:04:05.678Z"),
          ("ce_specversion", "1.0"), ("content-type", "application/json"),
          ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    (out / "event").write_bytes(seed("pfx.tx.initiated", 0, 42, 1735787045678, "pay_1", ev, data))
    dl = [("ce_id", "evt_dl"), ("ce_type", "paystream.dead_letter"), ("ce_time", "2025-01-02T03:04:05+01:00"),
          ("ps_original_topic", "tx.validated"), ("ps_original_partition", "3"), ("ps_original_offset", "17"),
          ("ps_error", "event_undecodable"), ("ps_attempts", "5"), ("ps_replay_of", "tx.dlq/0/9")]
    env = '{"id":"evt_1","type":"payment.validated","source":"/paystream/fraud","time_ms":1,"key":"pay_1","data":"{}"}'
    (out / "dead_letter").write_bytes(seed("pfx.tx.dlq", 1, 5, -1, "pay_1", dl, env))
    # Regression: partition * stride overflowed int64 in dlq_entry_from_message (UBSan).
    (out / "regress_dlq_partition_overflow").write_bytes(seed("pfx.tx.dlq", -2147483647, 0, -1, "pay_1", dl, env))
    (out / "other_version").write_bytes(seed("pfx.tx.settled", 2, 0, 0, "",
                                             [("ce_specversion", "0.3"), ("ce_type", "payment.succeeded")], data))


if __name__ == "__main__":
    main()
