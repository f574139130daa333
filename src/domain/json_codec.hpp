// JSON encodings of domain objects as the HTTP API shows them (also the `data` of
// merchant-facing events and webhook bodies). Field names follow SPEC §3.
#pragma once
#include <string>

#include "domain/model.hpp"

namespace ps {

std::string payment_json(const Payment& p);   // id, object, amount, currency, status, ...
std::string refund_json(const Refund& r);
std::string journal_entry_json(const JournalEntry& e);
std::string endpoint_json(const WebhookEndpoint& e, bool include_secret);
std::string merchant_event_json(const MerchantEvent& e);  // id, type, created, data

}  // namespace ps
