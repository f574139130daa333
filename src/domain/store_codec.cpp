#include "domain/store_codec.hpp"

#include <boost/json.hpp>
#include <map>

#include "domain/event.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/money.hpp"

namespace ps {
namespace json = boost::json;

std::string metadata_to_json(const Metadata& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return json::serialize(o);
}

Metadata metadata_from_json(const std::string& s) {
  Metadata m;
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_object()) return m;
  for (const auto& [k, val] : v.get_object())
    if (val.is_string()) m[std::string(k)] = std::string(val.get_string());
  return m;
}

std::string strings_to_json(const std::vector<std::string>& xs) {
  json::array a;
  for (const auto& x : xs) a.push_back(json::value(x));
  return json::serialize(a);
}

std::vector<std::string> strings_from_json(const std::string& s) {
  std::vector<std::string> out;
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_array()) return out;
  for (const auto& x : v.get_array())
    if (x.is_string()) out.emplace_back(x.get_string());
  return out;
}

std::string encode_dead_letter(const DeadLetter& d) {
  json::object o;
  o["topic"] = d.original.topic;
  o["partition"] = d.original.partition;
  o["offset"] = d.original.offset;
  o["error"] = d.error;
  o["attempts"] = d.attempts;
  o["event"] = json::parse(event_envelope_json(d.original.event));
  return json::serialize(o);
}

Result<DeadLetter> decode_dead_letter(const std::string& s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_object()) return Error::internal("dead letter data is not a JSON object");
  const auto& o = v.get_object();
  auto str = [&](const char* k) -> std::string {
    auto* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->get_string()) : std::string();
  };
  auto num = [&](const char* k) -> int64_t {
    auto* x = o.if_contains(k);
    return x && x->is_int64() ? x->get_int64() : 0;
  };
  DeadLetter d;
  d.original.topic = str("topic");
  d.original.partition = int32_t(num("partition"));
  d.original.offset = num("offset");
  d.error = str("error");
  d.attempts = int(num("attempts"));
  if (auto* ev = o.if_contains("event"); ev && ev->is_object())
    d.original.event = parse_event_envelope(json::serialize(*ev));
  return d;
}

Result<void> check_outcome(const PaymentOutcome& o) {
  const Payment& p = o.payment;
  if (p.status == PaymentStatus::processing) return Error::internal("payment outcome for " + p.id + " is not terminal");
  if ((p.status == PaymentStatus::succeeded) != o.settlement.has_value())
    return Error::internal("payment outcome for " + p.id + ": settlement present iff succeeded");
  if (o.settlement && (o.settlement->kind != EntryKind::settlement || o.settlement->payment_id != p.id))
    return Error::internal("payment outcome for " + p.id + ": settlement entry of another kind or payment");
  if (o.settlement) assert_balanced(*o.settlement, "payment outcome");
  return {};
}

Result<void> check_outcome(const RefundOutcome& o) {
  const Refund& r = o.refund;
  if (r.status == RefundStatus::processing) return Error::internal("refund outcome for " + r.id + " is not terminal");
  if ((r.status == RefundStatus::succeeded) != o.reversal.has_value())
    return Error::internal("refund outcome for " + r.id + ": reversal present iff succeeded");
  if (o.reversal && (o.reversal->kind != EntryKind::refund || o.reversal->refund_id != r.id))
    return Error::internal("refund outcome for " + r.id + ": reversal entry of another kind or refund");
  if (o.reversal) assert_balanced(*o.reversal, "refund outcome");
  return {};
}

}  // namespace ps
