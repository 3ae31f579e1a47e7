#include "cli/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "cli/cli_app.h"
#include "cli/exit_codes.h"
#include "cli/image_cli.h"
#include "cli/keystore_backup_cli.h"
#include "cli/lifecycle_cli.h"
#include "cli/ops_cli.h"
#include "cli/recovery_cli.h"
#include "cli/root_key_cli.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

constexpr const char* kVersion = "envcryptctl " ENVCRYPT_VERSION;

}  // namespace

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(unit == 0 ? 0 : 1) << value << ' ' << kUnits[unit];
  return out.str();
}

ProgressBar::ProgressBar(std::ostream& err) : err_(err), enabled_(::isatty(STDERR_FILENO) == 1) {}

ProgressFn ProgressBar::callback() {
  if (!enabled_) {
    return {};
  }
  start_ = std::chrono::steady_clock::now();
  return [this](std::uint64_t done, std::uint64_t total) { draw(done, total); };
}

void ProgressBar::draw(std::uint64_t done, std::uint64_t total) {
  const auto now = std::chrono::steady_clock::now();
  if (done != total && now - last_ < std::chrono::milliseconds(200)) {
    return;
  }
  last_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  const auto eta =
      rate > 0 ? static_cast<std::uint64_t>(static_cast<double>(total - done) / rate) : 0;
  const int percent = total != 0 ? static_cast<int>(done * 100 / total) : 100;
  char eta_text[32];
  std::snprintf(eta_text, sizeof(eta_text), "%llu:%02llu",
                static_cast<unsigned long long>(eta / 60),
                static_cast<unsigned long long>(eta % 60));
  err_ << "\rwipe: " << std::setw(3) << percent << "%  " << human_bytes(done) << " / "
       << human_bytes(total) << "  " << human_bytes(static_cast<std::uint64_t>(rate)) << "/s  ETA "
       << eta_text << "   " << (done == total ? "\n" : "") << std::flush;
}

std::string copy_text(const CopyReport& copy) {
  std::string text(to_string(copy.state));
  if (copy.state == CopyState::kValid || copy.state == CopyState::kStale) {
    text += " (sequence " + std::to_string(copy.sequence) + ")";
  }
  if (!copy.detail.empty()) {
    text += ": " + copy.detail;
  }
  return text;
}

BootCommandHooks Cli::command_hooks() {
  BootCommandHooks hooks;
  hooks.registry = [this] { return registry(); };
  hooks.json = &json_;
  hooks.out = &out_;
  hooks.err = &err_;
  hooks.select = [this](std::string what, std::function<Status()> action) {
    what_ = std::move(what);
    action_ = std::move(action);
  };
  return hooks;
}

// attach-all, detach-all and the udev/systemd helpers: boot_cli.cc;
// preflight and the header backup commands: ops_cli.cc.
void Cli::add_boot_commands(CLI::App& app) {
  const BootCommandHooks hooks = command_hooks();
  envcrypt::add_boot_commands(app, hooks);
  add_ops_commands(app, hooks);
  add_recovery_commands(app, hooks);
  add_image_commands(app, hooks);
}

int Cli::run(int argc, const char* const* argv) {
  CLI::App app{"envcryptctl: envelope-encrypted block devices", "envcryptctl"};
  app.fallthrough();
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);
  app.add_option("--config", config_path_,
                 "configuration file (default: $ENVCRYPT_CONFIG, "
                 "else /etc/envcrypt/envcrypt.conf)");
  app.add_flag("--json", json_, "machine-readable output");
  add_volume_commands(app);
  add_kms_commands(app);
  add_boot_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out_, err_);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, out_, err_);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e, out_, err_);
  } catch (const CLI::ParseError& e) {
    err_ << "envcryptctl: " << e.what() << " (see envcryptctl --help)\n";
    return exit_code_for(ErrorCode::kUsage);
  }
  if (!action_) {
    err_ << "envcryptctl: no command (see envcryptctl --help)\n";
    return exit_code_for(ErrorCode::kUsage);
  }
  Status status = [this]() -> Status {
    try {
      return action_();
    } catch (const std::exception& e) {  // a library threw: keep the one-line contract
      return Error(ErrorCode::kInternal, e.what());
    }
  }();
  if (!status.ok()) {
    // Errors from below often start with the path the command already names.
    std::string_view message = status.error().message();
    for (const std::string& object : {device_, header_file_}) {
      if (!object.empty() && message.starts_with(object + ": ")) {
        message.remove_prefix(object.size() + 2);
      }
    }
    err_ << "envcryptctl: " << printable(what_) << ": " << printable(message) << '\n';
    return exit_code_for(status.error());
  }
  return 0;
}

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Cli cli(out, err);
  return cli.run(argc, argv);
}

}  // namespace envcrypt
