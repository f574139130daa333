// Pieces every role's wiring shares: options -> stage/API/HTTP settings, signal handling.
#pragma once
#include <signal.h>

#include <string>
#include <vector>

#include "adapters/http/http_server.hpp"
#include "api/api.hpp"
#include "app/config.hpp"
#include "stages/fraud_stage.hpp"
#include "stages/ledger_stage.hpp"
#include "stages/notifier_stage.hpp"
#include "stages/processor_stage.hpp"

namespace ps::app {

void apply_log_level(const std::string& level);
// Blocks SIGTERM/SIGINT in this thread and every thread started after (so sigwait in the
// role's main thread receives them) and ignores SIGPIPE.
sigset_t block_shutdown_signals();
// Waits for SIGTERM/SIGINT; returns its name.
std::string wait_for_shutdown(sigset_t& signals);

FraudConfig fraud_config(const ServeConfig& cfg);
ProcessorConfig processor_config(const ServeConfig& cfg);
FeeConfig fee_config(const ServeConfig& cfg);
DispatcherOptions dispatcher_options(const ServeConfig& cfg);
ApiConfig api_config(const ServeConfig& cfg, std::string admin_key);
// Logs (warn) the non-global ranges webhook URLs may reach, when any are allow-listed.
void log_webhook_targets(const ServeConfig& cfg);
HttpServerOptions http_options(const ServeConfig& cfg);

// The data directory of `serve` and `acquirer-sim`: created if missing and made 0700, and
// those of `files` (names in it) that exist made 0600 (new ones are created 0600 by their
// writers: SQLite files through files::create_private, the admin key). A directory or file
// that cannot be tightened (not ours) is logged as a warning; only a directory that cannot
// be created is an error.
Result<void> prepare_data_dir(const std::string& dir, const std::vector<std::string>& files);

// A handler for processes without the API (workers, the acquirer simulator):
// GET /metrics, /healthz, and /readyz (200 while `ready` is true).
HttpHandler ops_handler(const std::atomic<bool>& ready);

}  // namespace ps::app
