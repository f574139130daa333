#include "domain/store_codec.hpp"

#include <boost/json.hpp>
#include <map>

#include "domain/event.hpp"
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

Result<void> check_balanced(const JournalEntry& e) {
  if (e.id.empty() || e.postings.empty())
    return Error::internal("journal entry " + e.id + " has no id or no postings");
  std::map<std::string, int64_t> sums;
  for (const auto& p : e.postings) {
    int64_t out = 0;
    if (add_overflows(sums[p.currency], p.amount_minor, &out))
      return Error::internal("journal entry " + e.id + " overflows");
    sums[p.currency] = out;
  }
  for (const auto& [cur, sum] : sums)
    if (sum != 0)
      return Error::internal("journal entry " + e.id + " does not balance in " + cur + " (sum " +
                             std::to_string(sum) + ")");
  return {};
}

}  // namespace ps
