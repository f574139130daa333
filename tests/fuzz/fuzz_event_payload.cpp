// Pipeline event decoding (domain/event.hpp): decode_payload (the JSON data of every
// payment.* / refund.* event, as stages read it from the log) and parse_event_envelope
// (dead letters), on arbitrary bytes.
// Asserts: no crash/UB/exception; decode_payload fails with an invalid_request error or
// yields a payment or a refund; what decodes re-encodes to data that decodes again and
// encodes to the same bytes (the codec is stable on its own output); an envelope that
// parses round-trips through event_envelope_json unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "domain/event.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_event_payload: invariant broken: %s\n", what);
    std::abort();
  }
}

bool same(const ps::Event& a, const ps::Event& b) {
  return a.id == b.id && a.type == b.type && a.source == b.source && a.time_ms == b.time_ms && a.key == b.key &&
         a.traceparent == b.traceparent && a.data == b.data;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  auto p = ps::decode_payload(in);
  if (!p) {
    check(p.error().kind == ps::ErrorKind::invalid_request, "a bad payload is invalid_request");
    check(!p.error().code.empty(), "a bad payload names its code");
  } else {
    check(p->payment.has_value() || p->refund.has_value(), "a payload holds a payment or a refund");
    std::string once = ps::encode_payload(*p);
    auto again = ps::decode_payload(once);
    check(bool(again), "an encoded payload decodes");
    check(ps::encode_payload(*again) == once, "encode(decode(encode(x))) == encode(x)");
  }

  ps::Event e = ps::parse_event_envelope(in);
  std::string env = ps::event_envelope_json(e);
  check(same(ps::parse_event_envelope(env), e), "an envelope round-trips");
  return 0;
}
