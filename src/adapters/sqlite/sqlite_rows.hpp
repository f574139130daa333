// Internal to the SQLite adapter: the error-propagating statement macros, the column
// lists and row decoders, and the write helpers every part of the store uses inside its
// jobs (sqlite_core.hpp). Not for use outside src/adapters/sqlite.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/sqlite/sqlite_core.hpp"
#include "adapters/sqlite/sqlite_db.hpp"
#include "adapters/sqlite/sqlite_projection.hpp"
#include "common/result.hpp"
#include "domain/event.hpp"
#include "domain/model.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

#define PS_TRY(expr)                   \
  do {                                 \
    auto ps_try_r_ = (expr);           \
    if (!ps_try_r_) return ps_try_r_.error(); \
  } while (0)

#define PS_QUERY(var, db, sql)          \
  auto var##_res = (db).query(sql);     \
  if (!var##_res) return var##_res.error(); \
  ::ps::sqlite::Query& var = *var##_res

#define PS_STEP(row, q)                 \
  auto row##_res = (q).step();          \
  if (!row##_res) return row##_res.error(); \
  bool row = *row##_res

// Borrows a read connection from `core` as `var` for the rest of the scope.
#define PS_LEASE_FROM(core, var)                  \
  auto var##_lease = (core).lease_reader();       \
  if (!var##_lease) return var##_lease.error();   \
  ::ps::sqlite::Db& var = var##_lease->db()

namespace ps::sqlite {

inline constexpr size_t kMaxPollRecords = 10000;
inline constexpr size_t kMaxListRows = 1000;

// ---- column lists and row decoders (the column order of each list) ----
extern const char* const kPaymentCols;
inline constexpr int kPaymentColCount = 13;   // columns of kPaymentCols
Payment read_payment(const Query& q);
extern const char* const kRefundCols;
Refund read_refund(const Query& q);
extern const char* const kMerchantCols;      // SELECT kMerchantCols kMerchantKeyFrom WHERE ...
extern const char* const kMerchantKeyFrom;
Merchant read_merchant(const Query& q);
extern const char* const kEndpointCols;
WebhookEndpoint read_endpoint(const Query& q, int b = 0);
extern const char* const kMerchantEventCols;
MerchantEvent read_merchant_event(const Query& q, int b = 0);
DeliveryStatus parse_delivery_status(const std::string& s);
WebhookDelivery read_delivery(const Query& q, int b = 0);
extern const char* const kEventCols;
Record read_record(const Query& q);

// ---- write helpers (on the writer connection, inside a job) ----
// Appends `e` to `topic` with replay generation `replay`; false if (topic, id, replay)
// already existed. An appended event is noted in `ctx` (wakes pollers, pipeline backlog).
Result<bool> append_event(Db& db, std::string_view topic, const Event& e, int64_t replay, int64_t now_ms,
                          JobCtx& ctx, int64_t* offset_out = nullptr);
Result<void> append_dead_letter(Db& db, const DeadLetter& d, const std::string& id, int64_t now_ms, JobCtx& ctx);
// Deterministic from (original topic, offset, event id).
std::string stage_dead_letter_id(const DeadLetter& d);
// Writes the entry and its postings and adds each posting to its account's maintained
// balance; an unbalanced entry stops the process (domain/ledger_rules.hpp).
Result<void> insert_entry(Db& db, const JournalEntry& e);
// Refunds still processing, reserved on their payment and per merchant and currency
// (added at intake, released when the refund is terminal). `delta` may be negative.
Result<void> reserve_refund(Db& db, const std::string& payment_id, const std::string& merchant_id,
                            const std::string& currency, int64_t delta);
Result<std::optional<IdempotencyRecord>> read_idempotency(Db& db, const std::string& merchant_id,
                                                          const std::string& key);
Result<void> insert_idempotency(Db& db, const IdempotencyRecord& r);
// A stage's effects (ports/event_log.hpp Effects) on the store, idempotently: outcomes of
// payments and refunds that are still processing (with their entries, balances and
// reservations), merchant events, deliveries, dead letters; the produced events too when
// `append_produced` (the intake log's bus keeps them in memory instead).
Result<void> apply_effects(Db& db, const Effects& fx, int64_t now, JobCtx& ctx, bool append_produced);
// Moves `group`'s position on each topic to the offset given, never backwards.
Result<void> store_positions(Db& db, const std::string& group, const std::map<std::string, int64_t>& positions,
                             JobCtx& ctx);
// What refund admission reads (sqlite_projection.hpp RefundBasis): the payment and the
// maintained rows, in one statement. nullopt: no such payment of the merchant.
Result<std::optional<RefundBasis>> read_refund_basis(Db& db, const std::string& merchant_id,
                                                     const std::string& payment_id);
// Stores an admitted refund (amount and currency resolved), reserves its amount, appends
// its refund.requested event when given (the intake log's bus keeps it otherwise) and
// stores its idempotency record.
Result<void> store_new_refund(Db& db, const Refund& refund, const Event* requested, const IdempotencyRecord& rec,
                              int64_t now_ms, JobCtx& ctx);
// Stores a new payment, its payment.initiated event (unless !append_initiated: the
// engine's bus holds it) and its idempotency record (the key
// is known to be new: a duplicate fails with conflict "payment_exists"). Both intake
// paths call it: the per-request job (SqliteIntake) and the log projection.
Result<void> store_new_payment(Db& db, const AcceptPayment& c, int64_t now_ms, JobCtx& ctx,
                               bool append_initiated = true);
Result<int64_t> scalar_i64(Query& q);
Result<void> upsert_delivery_if_failed(Db& db, const WebhookDelivery& d);
// A page size within 1 .. kMaxListRows.
int clamp_limit(int limit);
// The merchant's endpoints that are not deleted, oldest first.
Result<std::vector<WebhookEndpoint>> live_endpoints(Db& db, const std::string& merchant_id);

// A read transaction for several statements that must see one snapshot.
class ReadTx {
 public:
  explicit ReadTx(Db& db) : db_(db) { ok_ = bool(db_.exec("BEGIN")); }
  ~ReadTx() {
    if (ok_) (void)db_.exec("COMMIT");
  }
  bool ok() const { return ok_; }

 private:
  Db& db_;
  bool ok_ = false;
};

}  // namespace ps::sqlite
