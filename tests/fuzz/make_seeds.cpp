// Writes the binary seeds of the event harnesses with the product's own encoders:
//   fuzz_make_seeds DIR   → DIR/fuzz_event_payload/*, DIR/fuzz_engine_record/*
// (scripts/fuzz.sh --seeds; the output is checked in under tests/fuzz/corpus).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "adapters/embedded/engine_record.hpp"
#include "domain/event.hpp"

namespace fs = std::filesystem;

static void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds DIR\n");
    return 2;
  }
  fs::path out = argv[1];
  const int64_t now = 1'700'000'000'000;

  ps::Payment p;
  p.id = "pay_0123456789abcdef01234567";
  p.merchant_id = "mer_fuzz";
  p.idempotency_key = "k1";
  p.amount_minor = 1000;
  p.currency = "EUR";
  p.source = "tok_approve";
  p.description = "order 42";
  p.metadata = {{"order", "42"}};
  p.created_ms = p.updated_ms = now;
  ps::Refund r;
  r.id = "re_0123456789abcdef01234567";
  r.payment_id = p.id;
  r.merchant_id = p.merchant_id;
  r.idempotency_key = "r1";
  r.amount_minor = 400;
  r.currency = "EUR";
  r.created_ms = r.updated_ms = now;

  ps::Event pe = ps::make_payment_event(p, ps::event_types::payment_initiated, "/paystream/gateway", now,
                                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  ps::Event re = ps::make_refund_event(r, ps::event_types::refund_requested, "/paystream/gateway", now, "");

  fs::path ep = out / "fuzz_event_payload";
  put(ep, "payment", pe.data);
  put(ep, "refund", re.data);
  put(ep, "envelope", ps::event_envelope_json(pe));

  fs::path er = out / "fuzz_engine_record";
  auto rec = [](uint8_t type, const std::string& payload) { return std::string(1, char(type)) + payload; };
  ps::AcceptPayment ap{p, pe, ps::IdempotencyRecord{p.merchant_id, "k1", "fp", 202, "{}", p.id, now}};
  put(er, "payment", rec(ps::engine_record::kPaymentAccepted, ps::engine_record::encode_payment(now, ap)));
  ps::ProjectedWrite w;
  w.kind = ps::ProjectedWrite::Kind::response;
  w.now_ms = now;
  w.merchant_id = p.merchant_id;
  w.key = "k1";
  w.http_status = 201;
  w.body = "{\"id\":\"pay_1\"}";
  put(er, "response", rec(ps::engine_record::record_type(w), ps::engine_record::encode(w)));
  ps::ProjectedWrite rw;
  rw.kind = ps::ProjectedWrite::Kind::refund;
  rw.now_ms = now;
  rw.refund = r;
  rw.refund_event = re;
  rw.refund_record = ps::IdempotencyRecord{r.merchant_id, "r1", "fp", 202, "{}", r.id, now};
  put(er, "refund", rec(ps::engine_record::record_type(rw), ps::engine_record::encode(rw)));
  ps::ProjectedWrite sc;
  sc.kind = ps::ProjectedWrite::Kind::stage_commit;
  sc.now_ms = now;
  sc.group = "settlement";
  sc.positions = {{"tx.validated", 7}};
  sc.effects.produce.push_back(pe);
  put(er, "stage_commit", rec(ps::engine_record::record_type(sc), ps::engine_record::encode(sc)));
  ps::ProjectedWrite rp;
  rp.kind = ps::ProjectedWrite::Kind::replay;
  rp.now_ms = now;
  rp.dlq_offset = 3;
  rp.new_offset = 9;
  rp.replay_topic = "tx.initiated";
  rp.replay_event = pe;
  put(er, "replay", rec(ps::engine_record::record_type(rp), ps::engine_record::encode(rp)));
  return 0;
}
