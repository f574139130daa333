// paystream: one binary, every role. `paystream serve` runs the embedded shape.
#include <CLI/CLI.hpp>
#include <iostream>

#include "app/commands.hpp"
#include "app/config.hpp"

int main(int argc, char** argv) {
  CLI::App app{"paystream — payment transaction platform"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "paystream 0.1.0");

  ps::app::ServeConfig serve_cfg;
  auto* serve = app.add_subcommand("serve", "run every role in one process (embedded shape, SQLite)");
  ps::app::add_serve_options(*serve, serve_cfg);

  std::string dlq_dir = "./paystream-data";
  int64_t dlq_limit = 100, dlq_offset = 0;
  auto* dlq = app.add_subcommand("dlq", "inspect and replay dead letters");
  dlq->require_subcommand(1);
  auto* dlq_list = dlq->add_subcommand("list", "list dead letters, one JSON object per line");
  dlq_list->add_option("--limit", dlq_limit, "most letters to list")->check(CLI::Range(1, 100000));
  auto* dlq_show = dlq->add_subcommand("show", "show one dead letter with its original event");
  dlq_show->add_option("offset", dlq_offset, "offset of the letter in tx.dlq")->required();
  auto* dlq_replay = dlq->add_subcommand("replay", "append the original event to its topic again");
  dlq_replay->add_option("offset", dlq_offset, "offset of the letter in tx.dlq")->required();
  for (auto* c : {dlq_list, dlq_show, dlq_replay})
    c->add_option("--data-dir", dlq_dir, "data directory of the embedded store")
        ->envname("PAYSTREAM_DATA_DIR")->capture_default_str();

  auto* routes = app.add_subcommand("routes", "print the HTTP routes as JSON");

  CLI11_PARSE(app, argc, argv);

  if (serve->parsed()) return ps::app::run_serve(serve_cfg);
  if (dlq_list->parsed()) return ps::app::run_dlq_list(dlq_dir, dlq_limit);
  if (dlq_show->parsed()) return ps::app::run_dlq_show(dlq_dir, dlq_offset);
  if (dlq_replay->parsed()) return ps::app::run_dlq_replay(dlq_dir, dlq_offset);
  if (routes->parsed()) return ps::app::run_routes();
  return 2;
}
