// Internal to the PostgreSQL adapter: the error-propagating statement macros, the column
// lists and row decoders, and the statement helpers several parts of PgStore use (the
// idempotency record, a journal entry's CTEs and parameters, the delivery upsert). Not
// for use outside src/adapters/postgres. Free of libpq includes.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/postgres/pg_conn.hpp"
#include "common/result.hpp"
#include "domain/model.hpp"
#include "ports/stores.hpp"

#define PS_TRY(expr)                          \
  do {                                        \
    auto ps_try_r_ = (expr);                  \
    if (!ps_try_r_) return ps_try_r_.error(); \
  } while (0)

#define PS_EXEC(var, conn, ...)             \
  auto var##_res = (conn).exec(__VA_ARGS__); \
  if (!var##_res) return var##_res.error(); \
  ::ps::pg::Res& var = *var##_res

namespace ps::pg {

inline constexpr size_t kMaxListRows = 1000;

// ---------- row decoders (the column order of each list) ----------
extern const char* const kPaymentCols;
extern const char* const kPaymentColsP;  // kPaymentCols qualified with "p."
Payment read_payment(const Res& q, int r);
extern const char* const kRefundCols;
Refund read_refund(const Res& q, int r);
// A merchant as found by one of its keys: FROM kMerchantKeyFrom.
extern const char* const kMerchantCols;
extern const char* const kMerchantKeyFrom;
Merchant read_merchant(const Res& q, int r);
extern const char* const kEndpointCols;
WebhookEndpoint read_endpoint(const Res& q, int r, int b = 0);
extern const char* const kMerchantEventCols;
MerchantEvent read_merchant_event(const Res& q, int r, int b = 0);
DeliveryStatus parse_delivery_status(const std::string& s);
WebhookDelivery read_delivery(const Res& q, int r, int b = 0);

// ---------- statement helpers ----------
extern const char* const kIdemSelect;  // $1 merchant_id, $2 key
std::optional<IdempotencyRecord> read_idem_row(const Res& q, const std::string& merchant_id, const std::string& key);
Result<std::optional<IdempotencyRecord>> read_idempotency(Conn& c, const std::string& merchant_id,
                                                          const std::string& key);
// Statement inserting a journal entry and its postings once `gate` (a CTE name) yields a
// row; parameters from `first` on, as add_entry_params adds them (pg_rows.cpp).
std::string entry_ctes(const std::string& gate, int first);
void add_entry_params(Params& ps, const std::optional<JournalEntry>& e);
// A delivery (re)scheduled by a stage: inserted, or reset to pending if it had failed;
// parameters delivery_params(d).
extern const char* const kUpsertDeliveryIfFailed;
Params delivery_params(const WebhookDelivery& d);
// A page size within 1 .. kMaxListRows.
int clamp_limit(int limit);
// The merchant's endpoints that are not deleted, oldest first.
Result<std::vector<WebhookEndpoint>> live_endpoints(Conn& c, const std::string& merchant_id);

}  // namespace ps::pg
