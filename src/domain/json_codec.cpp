#include "domain/json_codec.hpp"

#include <boost/json.hpp>

namespace ps {
namespace json = boost::json;
namespace {
json::object metadata_obj(const Metadata& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}
}  // namespace

std::string payment_json(const Payment& p) {
  json::object o;
  o["id"] = p.id;
  o["object"] = "payment";
  o["amount"] = p.amount_minor;
  o["currency"] = p.currency;
  o["status"] = to_string(p.status);
  if (p.failure_code.empty()) o["failure_code"] = nullptr; else o["failure_code"] = p.failure_code;
  o["amount_refunded"] = p.amount_refunded_minor;
  o["description"] = p.description.empty() ? json::value(nullptr) : json::value(p.description);
  o["metadata"] = metadata_obj(p.metadata);
  o["created"] = p.created_ms;
  o["updated"] = p.updated_ms;
  return json::serialize(o);
}

std::string refund_json(const Refund& r) {
  json::object o;
  o["id"] = r.id;
  o["object"] = "refund";
  o["payment_id"] = r.payment_id;
  o["amount"] = r.amount_minor;
  o["currency"] = r.currency;
  o["status"] = to_string(r.status);
  if (r.failure_code.empty()) o["failure_code"] = nullptr; else o["failure_code"] = r.failure_code;
  o["created"] = r.created_ms;
  o["updated"] = r.updated_ms;
  return json::serialize(o);
}

std::string journal_entry_json(const JournalEntry& e) {
  json::object o;
  o["id"] = e.id;
  o["object"] = "journal_entry";
  o["kind"] = to_string(e.kind);
  o["payment_id"] = e.payment_id;
  o["refund_id"] = e.refund_id.empty() ? json::value(nullptr) : json::value(e.refund_id);
  json::array postings;
  for (const auto& p : e.postings) {
    json::object po;
    po["account"] = p.account;
    po["currency"] = p.currency;
    po["amount"] = p.amount_minor;
    postings.push_back(std::move(po));
  }
  o["postings"] = std::move(postings);
  o["created"] = e.created_ms;
  return json::serialize(o);
}

std::string endpoint_json(const WebhookEndpoint& e, bool include_secret) {
  json::object o;
  o["id"] = e.id;
  o["object"] = "webhook_endpoint";
  o["url"] = e.url;
  json::array ev;
  for (const auto& t : e.enabled_events) ev.push_back(json::value(t));
  if (ev.empty()) ev.push_back("*");
  o["enabled_events"] = std::move(ev);
  o["disabled"] = e.disabled;
  if (include_secret) o["secret"] = e.secret;
  // While a rotated-out secret still signs: when it stops (no secret is shown).
  if (!e.previous_secret.empty() && e.previous_secret_expires_ms > 0)
    o["previous_secret_expires"] = e.previous_secret_expires_ms;
  o["created"] = e.created_ms;
  return json::serialize(o);
}

std::string merchant_event_json(const MerchantEvent& e) {
  json::object o;
  o["id"] = e.id;
  o["object"] = "event";
  o["type"] = e.type;
  o["created"] = e.created_ms;
  o["data"] = json::parse(e.data_json);
  return json::serialize(o);
}

}  // namespace ps
