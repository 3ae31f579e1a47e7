#include "cli/image_cli.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>

#include "volume/image_encrypt.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

struct ImageArgs {
  std::string src;
  std::string dst;
  std::string cmk;
  std::string label;
  std::uint32_t sector_size = 4096;
  std::uint32_t partition = 0;
  unsigned threads = 0;
};

double mib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// One line on a terminal, redrawn with \r at most every 200 ms: percent,
// MiB done of total, rate and time left.
class ProgressLine {
 public:
  explicit ProgressLine(std::ostream& err) : err_(err), start_(std::chrono::steady_clock::now()) {}

  void draw(std::uint64_t done, std::uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && now - last_ < std::chrono::milliseconds(200)) {
      return;
    }
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? mib(done) / seconds : 0;
    const double left = rate > 0 ? (mib(total) - mib(done)) / rate : 0;
    char line[160];
    std::snprintf(line, sizeof(line),
                  "\rimage encrypt: %3d%%  %.0f / %.0f MiB  %.1f MiB/s  ETA %d:%02d   ",
                  total != 0 ? static_cast<int>(done * 100 / total) : 100, mib(done), mib(total),
                  rate, static_cast<int>(left) / 60, static_cast<int>(left) % 60);
    err_ << line << (done == total ? "\n" : "") << std::flush;
  }

 private:
  std::ostream& err_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_{};
};

Status image_encrypt_command(const ImageArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  ImageEncryptOptions options;
  options.src = args.src;
  options.dst = args.dst;
  options.cmk = args.cmk.empty() ? kms->config().default_cmk : args.cmk;
  options.label = args.label;
  options.sector_size = args.sector_size;
  if (args.partition != 0) {
    options.partition = args.partition;
  }
  options.threads = args.threads;
  ProgressLine line(*hooks.err);
  ProgressFn progress;
  if (::isatty(STDERR_FILENO) == 1) {
    progress = [&line](std::uint64_t done, std::uint64_t total) { line.draw(done, total); };
  }
  const auto start = std::chrono::steady_clock::now();
  ENVCRYPT_ASSIGN_OR_RETURN(ImageEncrypted done, image_encrypt(*kms, options, progress));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ImageLayout& layout = done.layout;
  const std::string uuid = uuid_to_string(done.header.uuid);
  if (*hooks.json) {
    *hooks.out << json{{"src", args.src},
                       {"dst", args.dst},
                       {"partition", args.partition != 0 ? json(args.partition) : json()},
                       {"uuid", uuid},
                       {"cmk", done.header.wrapped.cmk_uri},
                       {"cmk_version", done.header.wrapped.cmk_version},
                       {"sector_size", done.header.geometry.sector_size},
                       {"volume_offset", layout.volume_start},
                       {"data_offset", done.header.geometry.data_offset},
                       {"plaintext_bytes", layout.plaintext},
                       {"threads", done.threads},
                       {"seconds", seconds}}
                      .dump(2)
               << '\n';
    return OkStatus();
  }
  char rate[64];
  std::snprintf(rate, sizeof(rate), "%.1f s, %.1f MiB/s", seconds,
                seconds > 0 ? mib(layout.plaintext) / seconds : 0.0);
  *hooks.out << "encrypted " << args.src << " to " << args.dst
             << (args.partition != 0 ? " partition " + std::to_string(args.partition) : "")
             << ": uuid " << uuid << ", CMK " << done.header.wrapped.cmk_uri << " (version "
             << done.header.wrapped.cmk_version << "), sector size "
             << done.header.geometry.sector_size << ", " << layout.plaintext
             << " bytes of plaintext at data offset " << done.header.geometry.data_offset << " ("
             << rate << ", " << done.threads << (done.threads == 1 ? " thread)\n" : " threads)\n");
  return OkStatus();
}

}  // namespace

void add_image_commands(CLI::App& app, const BootCommandHooks& hooks) {
  auto* image = app.add_subcommand("image", "offline image operations");
  image->require_subcommand(1);
  auto args = std::make_shared<ImageArgs>();
  auto* encrypt = image->add_subcommand(
      "encrypt", "copy a plaintext image or device into a new envcrypt disk, in userspace");
  encrypt->add_option("SRC", args->src, "plaintext raw image or block device")->required();
  encrypt->add_option("DST", args->dst, "new image file or empty block device")->required();
  encrypt->add_option("--cmk", args->cmk,
                      "key id, alias/<name> or CMK URI (default: config default_cmk)");
  encrypt->add_option("--label", args->label, "free text, at most 64 bytes");
  encrypt->add_option("--sector-size", args->sector_size, "encryption unit: 512 or 4096")
      ->check(CLI::IsMember({512, 4096}));
  encrypt
      ->add_option("--partition", args->partition,
                   "encrypt only this partition of a GPT or MBR image")
      ->check(CLI::Range(1, 65536));
  encrypt->add_option("--threads", args->threads, "worker threads (default: one per CPU)")
      ->check(CLI::Range(1, 1024));
  encrypt->callback([args, hooks] {
    hooks.select("image encrypt " + args->src, [args, hooks]() -> Status {
      Status status = image_encrypt_command(*args, hooks);
      // The command's name already gives SRC: "envcryptctl: image encrypt
      // SRC: <why>", not "SRC: SRC: <why>".
      if (!status.ok() && status.error().message().starts_with(args->src + ": ")) {
        return Error(status.error().code(), status.error().message().substr(args->src.size() + 2));
      }
      return status;
    });
  });
}

}  // namespace envcrypt
