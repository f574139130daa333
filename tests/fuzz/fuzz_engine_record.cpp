// The embedded engine's log record codec (adapters/embedded/engine_record.hpp): the first
// byte is the record type, the rest the payload, as recovery reads them from the log.
// Asserts: no crash, over-read (ASan) or UB on any bytes; a failure is internal
// "log_record_undecodable"; what decodes has the kind of its type byte and re-encodes to a
// payload that decodes again and encodes to the same bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "adapters/embedded/engine_record.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_engine_record: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t type = data[0];
  // A copy of exactly the payload's bytes, so ASan sees any read past its end.
  std::unique_ptr<char[]> buf(new char[size - 1]);
  std::memcpy(buf.get(), data + 1, size - 1);
  std::string_view payload(buf.get(), size - 1);

  auto w = ps::engine_record::decode(type, payload);
  if (!w) {
    check(w.error().kind == ps::ErrorKind::internal && w.error().message.rfind("log_record_undecodable", 0) == 0,
          "a bad record is internal log_record_undecodable");
    return 0;
  }
  check(ps::engine_record::record_type(*w) == type, "the decoded kind is the type byte");
  std::string once = ps::engine_record::encode(*w);
  auto again = ps::engine_record::decode(type, once);
  check(bool(again), "an encoded record decodes");
  check(ps::engine_record::encode(*again) == once, "encode(decode(encode(x))) == encode(x)");
  if (w->kind == ps::ProjectedWrite::Kind::payment && w->payment)
    check(ps::engine_record::encode_payment(w->now_ms, *w->payment) == once, "encode_payment == encode");
  return 0;
}
