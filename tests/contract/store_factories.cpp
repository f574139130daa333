// The adapters the store/event-log contract suites run against.
#include <filesystem>

#include "adapters/sqlite/sqlite_store.hpp"
#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {

std::filesystem::path make_temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ps_contract_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

class SqliteHarness final : public StoreHarness {
 public:
  SqliteHarness() : dir_(make_temp_dir()) { open(); }
  ~SqliteHarness() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  StageLog& log() override { return *store_; }
  DeadLetterStore& dead_letters() override { return *store_; }
  IntakeStore& intake() override { return *store_; }
  PaymentQueries& queries() override { return *store_; }
  MerchantStore& merchants() override { return *store_; }
  EndpointStore& endpoints() override { return *store_; }
  EventQueries& events() override { return *store_; }
  DeliveryStore& deliveries() override { return *store_; }
  void reopen() override {
    store_.reset();
    open();
  }
  int64_t count_events(const std::string& topic) override {
    auto r = store_->count_events(topic);
    if (!r) throw std::runtime_error(r.error().message);
    return *r;
  }

 private:
  void open() {
    SqliteOptions o;
    o.path = (dir_ / "paystream.db").string();
    auto r = SqliteStore::open(o, clock);
    if (!r) throw std::runtime_error("open failed: " + r.error().message);
    store_ = std::move(r.value());
  }
  std::filesystem::path dir_;
  std::unique_ptr<SqliteStore> store_;
};

}  // namespace

std::vector<HarnessFactory> store_factories() {
  return {HarnessFactory{"Sqlite", [] { return std::unique_ptr<StoreHarness>(new SqliteHarness()); }}};
}

}  // namespace ps::contract
