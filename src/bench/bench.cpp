#include "bench/bench.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <sstream>
#include <thread>

#include "bench/api_client.hpp"
#include "bench/load_worker.hpp"
#include "bench/reconcile.hpp"
#include "bench/report.hpp"

namespace ps::bench {
namespace {
using SteadyClock = std::chrono::steady_clock;
namespace json = boost::json;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch()).count();
}

void say(const std::string& s) {
  std::fprintf(stderr, "bench: %s\n", s.c_str());
  std::fflush(stderr);
}

// VmRSS of a process in MiB; nullopt when it is gone.
std::optional<double> rss_mib(int64_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream in(line.substr(6));
      double kb = 0;
      in >> kb;
      return kb / 1024.0;
    }
  }
  return std::nullopt;
}

double cpu_s(const rusage& u) {
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string json_escape(const std::string& s) { return json::serialize(json::value(s)); }

struct Merchant {
  std::string id, api_key;
};

Result<Merchant> create_merchant(const ValidConfig& cfg, const std::string& address) {
  ApiClient admin(address, cfg.target, cfg.raw.admin_key);
  std::string body = "{\"name\":" + json_escape("bench-" + cfg.run_id) +
                     ",\"rate_limit\":{\"per_second\":1000000,\"burst\":10000000}}";
  auto a = admin.post("/v1/merchants", body);
  if (!a) return a.error();
  if (a->status != 201 && a->status != 200)
    return Error::internal("POST /v1/merchants answered " + std::to_string(a->status) + ": " + a->body.substr(0, 300));
  try {
    auto o = json::parse(a->body).as_object();
    return Merchant{std::string(o.at("id").as_string()), std::string(o.at("api_key").as_string())};
  } catch (const std::exception& e) {
    return Error::internal(std::string("unexpected merchant answer: ") + e.what());
  }
}

struct Child {
  pid_t pid = 0;
  std::string result_path;
  bool exited = false;
  int status = 0;
};

class Runner {
 public:
  explicit Runner(const ValidConfig& cfg) : cfg_(cfg) { out_.cfg = &cfg_; }

  int run() {
    const auto wall0 = SteadyClock::now();
    auto address = resolve_target(cfg_.target);
    if (!address) return fail_setup(address.error().message);
    address_ = *address;
    api_key_ = cfg_.raw.api_key;
    if (!cfg_.raw.admin_key.empty()) {
      auto m = create_merchant(cfg_, address_);
      if (!m) return fail_setup("cannot create the bench merchant: " + m.error().message);
      api_key_ = m->api_key;
      out_.merchant_id = m->id;
    }
    int64_t balance_before = 0;
    if (!cfg_.raw.no_reconcile) {
      ApiClient api(address_, cfg_.target, api_key_);
      auto b = fetch_balance(api, cfg_.raw.currency);
      if (!b) return fail_setup("cannot read the starting balance: " + b.error().message);
      balance_before = *b;
    }
    say("run " + cfg_.run_id + ": " + std::to_string(cfg_.raw.connections) + " connections over " +
        std::to_string(cfg_.processes) + " processes" + (out_.merchant_id.empty() ? "" : ", merchant " + out_.merchant_id));

    if (auto r = fork_workers(); !r) {
      out_.failures.push_back(r.error().message);
      say("FAILED: " + r.error().message);
      if (shared_) shared_->abort.store(1);
      if (children_.empty()) return report();
    }
    supervise();
    collect();
    rusage ch{}, self{};
    ::getrusage(RUSAGE_CHILDREN, &ch);
    ::getrusage(RUSAGE_SELF, &self);
    out_.generator_cpu_s = cpu_s(ch);
    out_.parent_cpu_s = cpu_s(self);

    if (!cfg_.raw.no_reconcile && out_.failures.empty()) {
      say("load done; reconciling");
      ApiClient api(address_, cfg_.target, api_key_);
      auto rec = run_reconciliation(api, cfg_, out_.merged.accepted, out_.merged.replay_mismatch,
                                    out_.merged.pair_mismatch, balance_before, [](const std::string& s) { say(s); });
      if (rec) out_.reconciliation = std::move(*rec);
      else out_.reconcile_error = rec.error().message;
    } else if (!cfg_.raw.no_reconcile) {
      out_.reconcile_error = "skipped because the load phase failed";
    }
    finish_failures();
    out_.wall_s = std::chrono::duration<double>(SteadyClock::now() - wall0).count();
    return report();
  }

 private:
  int fail_setup(const std::string& msg) {
    out_.failures.push_back(msg);
    std::fprintf(stderr, "bench: FAILED: %s\n", msg.c_str());
    write_json();
    return 1;
  }

  Result<void> fork_workers() {
    void* mem = ::mmap(nullptr, sizeof(SharedProgress), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return Error::internal(std::string("mmap: ") + std::strerror(errno));
    shared_ = new (mem) SharedProgress();
    char tmpl[] = "/tmp/paystream-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) return Error::internal(std::string("mkdtemp: ") + std::strerror(errno));
    tmp_dir_ = tmpl;
    std::fflush(stdout);
    std::fflush(stderr);
    for (int k = 0; k < cfg_.processes; ++k) {
      Child c;
      c.result_path = tmp_dir_ + "/worker-" + std::to_string(k) + ".json";
      WorkerParams p;
      p.cfg = &cfg_;
      p.index = k;
      p.target_address = address_;
      p.source_address = cfg_.source_addresses[size_t(k)];
      p.api_key = api_key_;
      p.connections = connections_of_worker(cfg_.raw.connections, cfg_.processes, k);
      p.shared = shared_;
      p.result_path = c.result_path;
      pid_t pid = ::fork();
      if (pid < 0) {
        shared_->abort.store(1);
        return Error::internal(std::string("fork: ") + std::strerror(errno));
      }
      if (pid == 0) {
        int rc = run_load_worker(p);
        std::fflush(stderr);
        ::_exit(rc);
      }
      c.pid = pid;
      children_.push_back(c);
    }
    return {};
  }

  bool reap() {  // true when every child has exited
    bool all = true;
    for (auto& c : children_) {
      if (c.exited) continue;
      int st = 0;
      pid_t r = ::waitpid(c.pid, &st, WNOHANG);
      if (r == c.pid) {
        c.exited = true;
        c.status = st;
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
          std::string why = WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st))
                                            : "exit code " + std::to_string(WEXITSTATUS(st));
          out_.failures.push_back("worker " + std::to_string(&c - children_.data()) + " (pid " +
                                  std::to_string(c.pid) + ") crashed: " + why);
          say("FAILED: " + out_.failures.back());
          shared_->abort.store(1);
        }
      } else {
        all = false;
      }
    }
    return all;
  }

  void supervise() {
    const int64_t t0 = now_ns();
    const int64_t warmup_limit_ns = int64_t(120 + cfg_.raw.connections / 100) * 1'000'000'000;
    const double interval = cfg_.raw.progress_interval_s;
    int64_t next_progress = 0, next_rss = 0;
    uint64_t last_sent = 0;
    int64_t last_t = 0;
    for (;;) {
      if (reap()) break;
      const int64_t now = now_ns();
      if (shared_->start_ns.load() == 0) {
        if (int(shared_->ready_workers.load()) == cfg_.processes && shared_->open.load() == 0) {
          if (!shared_->abort.load()) {
            out_.failures.push_back("no connection could be opened to " + cfg_.raw.url);
            say("FAILED: " + out_.failures.back());
            shared_->abort.store(1);
          }
        } else if (int(shared_->ready_workers.load()) == cfg_.processes) {
          const int64_t start = now + 20'000'000;
          shared_->start_ns.store(start);
          say("all workers ready, " + std::to_string(shared_->open.load()) + " connections open; load starts");
          next_progress = start + int64_t(interval * 1e9);
          last_t = start;
        } else if (now - t0 > warmup_limit_ns && !shared_->abort.load()) {
          out_.failures.push_back("connections were not all opened or given up within the warm-up limit");
          say("FAILED: " + out_.failures.back());
          shared_->abort.store(1);
        }
      } else if (interval > 0 && now >= next_progress) {
        progress(now, last_sent, last_t);
        next_progress = now + int64_t(interval * 1e9);
      }
      if (!cfg_.raw.watch_pids.empty() && now >= next_rss) {
        sample_rss();
        next_rss = now + 1'000'000'000;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!cfg_.raw.watch_pids.empty()) sample_rss();
  }

  void progress(int64_t now, uint64_t& last_sent, int64_t& last_t) {
    const auto& s = *shared_;
    uint64_t sent = s.sent.load(), ok = s.ok.load(), err = s.errors.load();
    double dt = double(now - last_t) / 1e9;
    double rate = dt > 0 ? double(sent - last_sent) / dt : 0;
    last_sent = sent;
    last_t = now;
    uint64_t p99 = 0;
    for (int k = 0; k < cfg_.processes; ++k) p99 = std::max<uint64_t>(p99, s.p99_1s_us[k].load());
    double t = double(now - s.start_ns.load()) / 1e9;
    std::fprintf(stderr, "t=%.0fs sent=%llu ok=%llu err=%llu rate=%.0f/s p99(1s)=%.1fms open=%llu inflight=%llu\n", t,
                 (unsigned long long)sent, (unsigned long long)ok, (unsigned long long)err, rate, double(p99) / 1000.0,
                 (unsigned long long)s.open.load(), (unsigned long long)s.inflight.load());
    std::fflush(stderr);
  }

  void sample_rss() {
    double total = 0;
    bool any = false;
    for (int64_t pid : cfg_.raw.watch_pids) {
      auto r = rss_mib(pid);
      if (!r) continue;
      any = true;
      total += *r;
      auto& m = out_.server_rss_max_mib_by_pid[pid];
      m = std::max(m, *r);
    }
    if (any) out_.server_rss_max_mib = std::max(out_.server_rss_max_mib.value_or(0), total);
  }

  void collect() {
    for (size_t k = 0; k < children_.size(); ++k) {
      std::ifstream f(children_[k].result_path);
      std::stringstream ss;
      ss << f.rdbuf();
      if (!f) {
        if (out_.failures.empty()) out_.failures.push_back("worker " + std::to_string(k) + " wrote no result");
        continue;
      }
      auto r = WorkerResult::from_json(ss.str());
      if (!r) {
        out_.failures.push_back("worker " + std::to_string(k) + ": " + r.error().message);
        continue;
      }
      out_.merged.merge(*r);
    }
    std::error_code ec;
    if (!tmp_dir_.empty()) std::filesystem::remove_all(tmp_dir_, ec);
    if (shared_) ::munmap(shared_, sizeof(SharedProgress));
    shared_ = nullptr;
  }

  void finish_failures() {
    const auto& m = out_.merged;
    if (m.errors_total() > 0) {
      std::string what;
      for (const auto& [s, n] : m.by_status) what += " " + std::to_string(n) + "×" + std::to_string(s);
      if (m.timeout) what += " " + std::to_string(m.timeout) + "×timeout";
      if (m.io) what += " " + std::to_string(m.io) + "×io";
      if (m.connect) what += " " + std::to_string(m.connect) + "×connect";
      if (m.replay_mismatch) what += " " + std::to_string(m.replay_mismatch) + "×replay_mismatch";
      out_.failures.push_back(std::to_string(m.errors_total()) + " request errors:" + what);
    }
    if (!out_.reconcile_error.empty() && !cfg_.raw.no_reconcile)
      out_.failures.push_back("reconciliation failed: " + out_.reconcile_error);
    if (out_.reconciliation)
      for (const auto& f : out_.reconciliation->failures) out_.failures.push_back("reconciliation: " + f);
    if (cfg_.raw.no_reconcile) {  // the checks that need no API still apply
      if (m.pair_mismatch)
        out_.failures.push_back(std::to_string(m.pair_mismatch) + " concurrent duplicates got two different payment ids");
    }
  }

  void write_json() {
    if (cfg_.raw.out_path.empty()) return;
    std::ofstream f(cfg_.raw.out_path, std::ios::trunc);
    f << report_json(out_) << "\n";
    if (!f) say("cannot write " + cfg_.raw.out_path);
  }

  int report() {
    std::fputs(report_text(out_).c_str(), stdout);
    std::fflush(stdout);
    write_json();
    if (!out_.failures.empty()) {
      std::string all;
      for (const auto& f : out_.failures) all += (all.empty() ? "" : "; ") + f;
      std::fprintf(stderr, "bench: FAILED: %s\n", all.c_str());
      return 1;
    }
    return 0;
  }

  const ValidConfig& cfg_;
  RunOutcome out_;
  std::string address_, api_key_, tmp_dir_;
  SharedProgress* shared_ = nullptr;
  std::vector<Child> children_;
};

}  // namespace

int run_bench(const BenchConfig& raw) {
  auto cfg = validate_config(raw);
  if (!cfg) {
    std::fprintf(stderr, "bench: %s\n", cfg.error().message.c_str());
    return 2;
  }
  Runner r(*cfg);
  return r.run();
}

}  // namespace ps::bench
