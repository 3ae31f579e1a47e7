#include "volume/image_encrypt.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "device/storage_overlap.h"
#include "header/header_io.h"
#include "kms/kms.h"
#include "util/file_io.h"
#include "util/test_hooks.h"
#include "util/xts_cipher.h"

namespace envcrypt {
namespace {

// A chunk is one worker's unit: large enough that the per-chunk syscalls
// vanish, small enough that progress moves and every CPU gets work.
constexpr std::uint64_t kChunk = 4 << 20;
constexpr std::uint64_t kZeroBlock = 1 << 20;

std::uint64_t round_up(std::uint64_t value, std::uint64_t unit) {
  return (value + unit - 1) / unit * unit;
}

Status pread_full(const Device& device, std::uint64_t offset, std::span<std::uint8_t> out) {
  for (std::size_t done = 0; done < out.size();) {
    const ssize_t n = ::pread(device.fd.get(), out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return error_from_errno(ErrorCode::kIo,
                              device.path.string() + ": read at " + std::to_string(offset + done),
                              errno);
    }
    if (n == 0) {
      return Error(ErrorCode::kIo, device.path.string() + ": read at " +
                                       std::to_string(offset + done) + ": end of file");
    }
    done += static_cast<std::size_t>(n);
  }
  return OkStatus();
}

Status pwrite_full(const Device& device, std::uint64_t offset, std::span<const std::uint8_t> in) {
  return pwrite_all(device.fd.get(), in, offset, device.path.string() + ": write");
}

Status write_zeros(const Device& device, std::uint64_t offset, std::uint64_t bytes) {
  const std::vector<std::uint8_t> zeros(kZeroBlock, 0);
  for (std::uint64_t done = 0; done < bytes;) {
    const std::uint64_t n = std::min<std::uint64_t>(kZeroBlock, bytes - done);
    ENVCRYPT_TRY(pwrite_full(device, offset + done, std::span(zeros).first(n)));
    done += n;
  }
  return OkStatus();
}

// The first byte that is not zero in SRC [offset, offset + bytes), if any.
Result<std::optional<std::uint64_t>> first_nonzero(const Device& src, std::uint64_t offset,
                                                   std::uint64_t bytes) {
  std::vector<std::uint8_t> buffer(kZeroBlock);
  for (std::uint64_t done = 0; done < bytes;) {
    const std::uint64_t n = std::min<std::uint64_t>(kZeroBlock, bytes - done);
    ENVCRYPT_TRY(pread_full(src, offset + done, std::span(buffer).first(n)));
    const auto it = std::find_if(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n),
                                 [](std::uint8_t b) { return b != 0; });
    if (it != buffer.begin() + static_cast<std::ptrdiff_t>(n)) {
      return std::optional<std::uint64_t>(offset + done +
                                          static_cast<std::uint64_t>(it - buffer.begin()));
    }
    done += n;
  }
  return std::optional<std::uint64_t>();
}

Result<PartitionTable> read_partition_table(const Device& src) {
  std::vector<std::uint8_t> head(std::min<std::uint64_t>(src.size, kPartitionTableHeadMax));
  ENVCRYPT_TRY(pread_full(src, 0, head));
  auto table = parse_partition_table(head, src.size);
  if (!table.ok()) {
    return table.error().with_context(src.path.string());
  }
  return table;
}

Result<ImageLayout> plan_partition(const Device& src, std::uint32_t sector_size,
                                   std::uint32_t number) {
  ImageLayout layout;
  layout.src_size = layout.dst_size = src.size;
  ENVCRYPT_ASSIGN_OR_RETURN(layout.table, read_partition_table(src));
  auto found = find_partition(*layout.table, number);
  if (!found.ok()) {
    return found.error().with_context(src.path.string());
  }
  const Partition p = *found;
  const std::string name = src.path.string() + ": partition " + std::to_string(number);
  if (p.extended) {
    return Error(ErrorCode::kUsage, name +
                                        " is an extended partition (a container of logical "
                                        "partitions), not a file system");
  }
  if (p.size < kDefaultDataOffset + sector_size) {
    return Error(ErrorCode::kUsage, name + ": " + std::to_string(p.size) +
                                        " bytes leaves no room after the " +
                                        std::to_string(kDefaultDataOffset) + "-byte header area");
  }
  layout.volume_start = layout.src_start = p.start;
  layout.volume_size = p.size;
  layout.plaintext = (p.size - kDefaultDataOffset) / sector_size * sector_size;
  // The header area displaces the partition's last bytes: they must be
  // empty, i.e. the file system was shrunk to fit (image-encrypt.rst).
  const std::uint64_t tail = p.size - layout.plaintext;
  ENVCRYPT_ASSIGN_OR_RETURN(auto used, first_nonzero(src, p.start + layout.plaintext, tail));
  if (used) {
    return Error(ErrorCode::kUsage,
                 name + ": its last " + std::to_string(tail) + " bytes hold data (byte " +
                     std::to_string(*used - p.start) +
                     " of the partition is not zero); shrink its file system to at most " +
                     std::to_string(layout.plaintext) + " bytes first");
  }
  return layout;
}

}  // namespace

Result<ImageLayout> plan_image_layout(const Device& src, std::uint32_t sector_size,
                                      std::optional<std::uint32_t> partition) {
  if (src.size == 0) {
    return Error(ErrorCode::kUsage, src.path.string() + ": empty, nothing to encrypt");
  }
  if (partition) {
    return plan_partition(src, sector_size, *partition);
  }
  ImageLayout layout;
  layout.src_size = layout.plaintext = src.size;
  // A SRC that ends mid-unit is padded with zeros to a whole unit.
  layout.data_size = round_up(src.size, sector_size);
  layout.volume_size = layout.dst_size = kDefaultDataOffset + layout.data_size;
  return layout;
}

namespace {

// One piece of work: SRC [src_offset, + src_bytes) padded with zeros to
// `bytes`, encrypted or not, to DST dst_offset.
struct Job {
  std::uint64_t src_offset = 0;
  std::uint64_t src_bytes = 0;
  std::uint64_t dst_offset = 0;
  std::uint64_t bytes = 0;
  bool encrypt = false;
  std::uint64_t first_sector = 0;  // IV of the first unit, data-area relative
};

void add_copy_jobs(std::uint64_t from, std::uint64_t to, std::vector<Job>& jobs) {
  for (std::uint64_t at = from; at < to; at += kChunk) {
    const std::uint64_t n = std::min(kChunk, to - at);
    jobs.push_back(Job{at, n, at, n, false, 0});
  }
}

// The data area, then (with a partition) every byte of SRC outside it but
// the partition table's, which is written after the header.
std::vector<Job> plan_jobs(const ImageLayout& layout) {
  std::vector<Job> jobs;
  const std::uint64_t area =
      layout.data_size != 0 ? layout.data_size : layout.plaintext;  // whole disk: padded
  const std::uint64_t data_start = layout.volume_start + kDefaultDataOffset;
  for (std::uint64_t at = 0; at < area; at += kChunk) {
    const std::uint64_t n = std::min(kChunk, area - at);
    const std::uint64_t have = at < layout.plaintext ? std::min(n, layout.plaintext - at) : 0;
    jobs.push_back(Job{layout.src_start + at, have, data_start + at, n, true, at / kIvSectorSize});
  }
  if (layout.table) {
    const std::uint64_t tail_end =
        layout.table->backup_start != 0 ? layout.table->backup_start : layout.src_size;
    add_copy_jobs(layout.table->table_end, layout.volume_start, jobs);
    add_copy_jobs(layout.volume_start + layout.volume_size, tail_end, jobs);
  }
  return jobs;
}

// The copy, on every CPU: workers take jobs in order from a shared index.
class Copier {
 public:
  Copier(const Device& src, const Device& dst, const SecretBytes& data_key,
         std::uint32_t sector_size, std::vector<Job> jobs)
      : src_(src), dst_(dst), key_(data_key), sector_size_(sector_size), jobs_(std::move(jobs)) {
    for (const Job& job : jobs_) {
      total_ += job.bytes;
    }
  }

  Status run(unsigned threads, const ProgressFn& progress) {
    threads = std::max(1U, std::min<unsigned>(threads, static_cast<unsigned>(jobs_.size())));
    std::vector<std::thread> workers;
    for (unsigned i = 0; i < threads; ++i) {
      workers.emplace_back([this] { work(); });
    }
    // Progress is drawn here, on the caller's thread, never by a worker.
    while (finished_.load() != threads) {
      if (progress) {
        progress(done_.load(), total_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (std::thread& worker : workers) {
      worker.join();
    }
    if (error_) {
      return *error_;
    }
    if (progress) {
      progress(done_.load(), total_);
    }
    return OkStatus();
  }

  [[nodiscard]] std::uint64_t total() const { return total_; }

 private:
  void work() {
    Status status = work_loop();
    if (!status.ok()) {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) {
        error_ = status.error();
      }
      stop_.store(true);
    }
    finished_.fetch_add(1);
  }

  Status work_loop() {
    auto cipher = XtsCipher::create(key_, sector_size_);
    if (!cipher.ok()) {
      return cipher.error();
    }
    std::vector<std::uint8_t> buffer(kChunk);
    for (std::size_t i = next_.fetch_add(1); i < jobs_.size() && !stop_.load();
         i = next_.fetch_add(1)) {
      if (i == jobs_.size() / 2) {
        fault_point("image-encrypt:half");  // the crash tests' mid-copy point
      }
      ENVCRYPT_TRY(do_job(jobs_[i], *cipher, std::span(buffer).first(jobs_[i].bytes)));
      done_.fetch_add(jobs_[i].bytes);
    }
    return OkStatus();
  }

  Status do_job(const Job& job, XtsCipher& cipher, std::span<std::uint8_t> buffer) {
    // pread, not read_at: read_at toggles O_DIRECT on the shared descriptor.
    ENVCRYPT_TRY(pread_full(src_, job.src_offset, buffer.first(job.src_bytes)));
    std::fill(buffer.begin() + static_cast<std::ptrdiff_t>(job.src_bytes), buffer.end(), 0);
    if (job.encrypt) {
      ENVCRYPT_TRY(cipher.encrypt(buffer, buffer, job.first_sector));
    }
    ENVCRYPT_TRY(pwrite_full(dst_, job.dst_offset, buffer));
    start_writeback(job.dst_offset, buffer.size());
    return OkStatus();
  }

  // Starts writing the chunk back now, without waiting for it: the kernel
  // would otherwise hold it dirty until the final fsync (below the
  // background dirty ratio a whole image fits in the page cache) and the
  // disk would sit idle while the CPUs encrypt.  Only a hint: a failure
  // shows at the fsync, which waits for every byte.
  void start_writeback(std::uint64_t offset, std::size_t bytes) const {
    (void)::sync_file_range(dst_.fd.get(), static_cast<off_t>(offset), static_cast<off_t>(bytes),
                            SYNC_FILE_RANGE_WRITE);
  }

  const Device& src_;
  const Device& dst_;
  const SecretBytes& key_;
  std::uint32_t sector_size_;
  std::vector<Job> jobs_;
  std::uint64_t total_ = 0;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<unsigned> finished_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::optional<Error> error_;
};

// Removes a DST file this run created unless the run completed.
class CreatedFile {
 public:
  explicit CreatedFile(std::filesystem::path path) : path_(std::move(path)) {}
  ~CreatedFile() {
    if (!path_.empty()) {
      ::unlink(path_.c_str());
    }
  }
  CreatedFile(const CreatedFile&) = delete;
  CreatedFile& operator=(const CreatedFile&) = delete;
  void keep() { path_.clear(); }

 private:
  std::filesystem::path path_;
};

// Creates DST as an empty 0600 file when it does not exist.
Result<bool> create_if_missing(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.valid()) {
    return true;
  }
  if (errno == EEXIST) {
    return false;
  }
  return error_from_errno(ErrorCode::kIo, path.string(), errno);
}

// DST must hold the layout: a block device as it is, a file grown to it.
Status fit_dst(Device& dst, std::uint64_t needed) {
  if (dst.size >= needed) {
    return OkStatus();
  }
  if (dst.is_block) {
    return Error(ErrorCode::kUsage, dst.path.string() + ": " + std::to_string(dst.size) +
                                        " bytes, too small: the encrypted image needs " +
                                        std::to_string(needed));
  }
  if (::ftruncate(dst.fd.get(), static_cast<off_t>(needed)) != 0) {
    return error_from_errno(ErrorCode::kIo, dst.path.string(), errno);
  }
  dst.size = needed;
  return OkStatus();
}

// A block SRC is held exclusively, read-only, for the copy: a mounted or
// mapped SRC would change under it and give an image of no instant.
Result<UniqueFd> hold_src(const Device& src) {
  if (!src.is_block) {
    return UniqueFd();
  }
  const std::string self = "/proc/self/fd/" + std::to_string(src.fd.get());
  UniqueFd held(::open(self.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
  if (!held.valid()) {
    if (errno == EBUSY) {
      return Error(ErrorCode::kConflict, src.path.string() + ": in use (mounted or mapped)");
    }
    return error_from_errno(ErrorCode::kIo, src.path.string(), errno);
  }
  return held;
}

Result<DiskHeader> new_header(KmsRegistry& kms, const ImageEncryptOptions& options,
                              const ImageLayout& layout, SecretBytes& data_key) {
  DiskHeader header;
  ENVCRYPT_ASSIGN_OR_RETURN(header.uuid, random_uuid());
  header.label = options.label;
  header.geometry.sector_size = options.sector_size;
  header.geometry.data_offset = kDefaultDataOffset;
  header.geometry.data_size = layout.data_size;
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * backend, kms.for_key(options.cmk));
  ENVCRYPT_ASSIGN_OR_RETURN(DataKey generated,
                            backend->envelope().generate(options.cmk, encryption_context(header),
                                                         header.geometry.key_size));
  header.wrapped = std::move(generated.wrapped);
  data_key = std::move(generated.plaintext);
  ENVCRYPT_ASSIGN_OR_RETURN(header.kcv, key_check_value(data_key, header.uuid));
  ENVCRYPT_TRY(validate(header));
  ENVCRYPT_TRY(check_on_device_geometry(header));
  return header;
}

// Both copies at the volume's start in DST, secondary first, each flushed:
// header_io's write_header, for a volume that need not start at byte 0.
Status write_header_at(const Device& dst, std::uint64_t base, const DiskHeader& header) {
  for (const std::uint64_t offset : {kSecondaryOffset, kPrimaryOffset}) {
    ENVCRYPT_ASSIGN_OR_RETURN(HeaderBytes bytes, encode_header(header, offset));
    ENVCRYPT_TRY(write_at(dst, base + offset, bytes));
    ENVCRYPT_TRY(flush(dst));
  }
  return OkStatus();
}

// The bytes written last: the partition table (start of the disk, and a
// GPT's backup at its end).  Until they are, DST has no table.
std::vector<std::pair<std::uint64_t, std::uint64_t>> table_ranges(const ImageLayout& layout) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  if (layout.table) {
    ranges.emplace_back(0, layout.table->table_end);
    if (layout.table->backup_start != 0) {
      ranges.emplace_back(layout.table->backup_start, layout.src_size - layout.table->backup_start);
    }
  }
  return ranges;
}

Status copy_table(const Device& src, const Device& dst, const ImageLayout& layout) {
  for (const auto& [offset, bytes] : table_ranges(layout)) {
    std::vector<std::uint8_t> buffer(bytes);
    ENVCRYPT_TRY(pread_full(src, offset, buffer));
    ENVCRYPT_TRY(pwrite_full(dst, offset, buffer));
  }
  return flush(dst);
}

// Erases what could make DST look valid before the copy ends: the
// volume's header area and the table's places.
Status erase_metadata(const Device& dst, const ImageLayout& layout) {
  ENVCRYPT_TRY(write_zeros(dst, layout.volume_start, kDefaultDataOffset));
  for (const auto& [offset, bytes] : table_ranges(layout)) {
    ENVCRYPT_TRY(write_zeros(dst, offset, bytes));
  }
  return flush(dst);
}

// The CPUs this process may run on (a CI runner's cpuset or affinity), not
// every CPU of the host: more threads than that only take turns.
unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    return static_cast<unsigned>(CPU_COUNT(&set));
  }
  return std::max(1U, std::thread::hardware_concurrency());
}

struct OpenedPair {
  Device src;
  Device dst;
  UniqueFd src_hold;
  bool created = false;
};

Result<OpenedPair> open_pair(const ImageEncryptOptions& options) {
  OpenedPair pair;
  ENVCRYPT_ASSIGN_OR_RETURN(pair.src, open_device(options.src, OpenMode::kRead));
  ENVCRYPT_ASSIGN_OR_RETURN(pair.created, create_if_missing(options.dst));
  return pair;
}

}  // namespace

Result<ImageEncrypted> image_encrypt(KmsRegistry& kms, const ImageEncryptOptions& options,
                                     const ProgressFn& progress) {
  ENVCRYPT_ASSIGN_OR_RETURN(OpenedPair pair, open_pair(options));
  CreatedFile created(pair.created ? options.dst : std::filesystem::path());
  ENVCRYPT_ASSIGN_OR_RETURN(pair.dst, open_device(options.dst, OpenMode::kExclusive));
  // In place first: the same file also "holds data" and "is in use".
  ENVCRYPT_TRY(refuse_shared_storage(pair.src, pair.dst, options.sysfs));
  if (!pair.dst.is_block) {
    ENVCRYPT_TRY(require_no_loop_over(pair.dst));
  }
  if (!pair.created) {
    ENVCRYPT_TRY(refuse_existing_data(pair.dst));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(pair.src_hold, hold_src(pair.src));
  ENVCRYPT_ASSIGN_OR_RETURN(ImageLayout layout,
                            plan_image_layout(pair.src, options.sector_size, options.partition));
  ENVCRYPT_TRY(fit_dst(pair.dst, layout.dst_size));

  SecretBytes data_key;
  ENVCRYPT_ASSIGN_OR_RETURN(DiskHeader header, new_header(kms, options, layout, data_key));
  ENVCRYPT_TRY(erase_metadata(pair.dst, layout));
  std::vector<Job> jobs = plan_jobs(layout);
  const unsigned threads = static_cast<unsigned>(
      std::min<std::size_t>(options.threads != 0 ? options.threads : usable_cpus(), jobs.size()));
  Copier copier(pair.src, pair.dst, data_key, options.sector_size, std::move(jobs));
  ENVCRYPT_TRY(copier.run(threads, progress));
  data_key = SecretBytes();  // the header carries it wrapped; nothing else needs it
  ENVCRYPT_TRY(flush(pair.dst));
  fault_point("image-encrypt:copied");
  ENVCRYPT_TRY(write_header_at(pair.dst, layout.volume_start, header));
  ENVCRYPT_TRY(copy_table(pair.src, pair.dst, layout));
  created.keep();
  return ImageEncrypted{std::move(header), std::move(layout), pair.created, threads};
}

}  // namespace envcrypt
