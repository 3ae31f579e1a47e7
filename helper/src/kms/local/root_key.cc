#include "kms/local/root_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "util/crypto.h"
#include "util/file_io.h"
#include "util/keystore.h"
#include "util/secret_io.h"
#include "util/unique_fd.h"

namespace envcrypt {
namespace {

constexpr std::size_t kMaxSealedFileSize = 64 * 1024;

std::filesystem::path parent_dir(const std::filesystem::path& path) {
  return path.parent_path().empty() ? "." : path.parent_path();
}

// Best effort: the file is in place either way, and a failed directory sync
// only risks the name after a crash, which the callers have always accepted.
void sync_directory(const std::filesystem::path& dir) { (void)fsync_directory(dir); }

// Opens `path` for reading, or -1 with errno; a symlink is refused (ELOOP).
int open_no_follow(const std::filesystem::path& path) {
  return ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

// Reads a 32-byte root key straight into locked memory.
Result<SecretBytes> read_root_key(const std::filesystem::path& path, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno);
  }
  if (!S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kIo, "root key " + path.string() + " is not a regular file");
  }
  ENVCRYPT_TRY(check_private_fd(fd, path));
  if (st.st_size != static_cast<off_t>(kAes256KeySize)) {
    return Error(ErrorCode::kCorrupt, "root key " + path.string() + " must be exactly 32 " +
                                          "bytes, it has " + std::to_string(st.st_size));
  }
  return read_secret(fd, kAes256KeySize, path.string());
}

Result<SecretBytes> read_root_key_file(const std::filesystem::path& path) {
  const UniqueFd fd(open_no_follow(path));
  if (!fd.valid()) {
    return error_from_errno(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                            "open root key " + path.string(), errno);
  }
  return read_root_key(path, fd.get());
}

// The directory that holds (or will hold) a root key file must exist and
// be writable by its owner only.
Status check_key_directory(const std::filesystem::path& path) {
  const std::filesystem::path dir = parent_dir(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return ensure_private_directory(dir);
  }
  if ((st.st_mode & 022) != 0) {
    return Error(ErrorCode::kDenied, "directory " + dir.string() + " of the root key is group " +
                                         "or world writable: refusing to create " + path.string());
  }
  return OkStatus();
}

// Creates `path` (mode 0600) holding `bytes`, complete or absent, never
// replacing a file; when another process created `path` meanwhile,
// `created` says that the other file won.
Status create_private_file(const std::filesystem::path& path, const std::uint8_t* bytes,
                           std::size_t size, bool& created) {
  ENVCRYPT_TRY(check_key_directory(path));
  const Status written =
      write_file_durably(path, std::string_view(reinterpret_cast<const char*>(bytes), size),
                         {.mode = 0600, .if_exists = IfExists::kRefuse});
  created = written.ok();
  if (!written.ok() && written.error().code() != ErrorCode::kConflict) {
    return written;
  }
  return OkStatus();
}

Result<SecretBytes> load_or_create_plaintext(const std::filesystem::path& path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const UniqueFd fd(open_no_follow(path));
    if (fd.valid()) {
      return read_root_key(path, fd.get());
    }
    if (errno != ENOENT) {
      return error_from_errno(ErrorCode::kIo, "open root key " + path.string(), errno);
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes key, random_secret(kAes256KeySize));
    bool created = false;
    ENVCRYPT_TRY(create_private_file(path, key.data(), key.size(), created));
  }
  return Error(ErrorCode::kIo, "root key " + path.string() + " vanished while being created");
}

// Reads and decodes <root_key>.tpm; kNotFound when it does not exist.
Result<TpmSealedBlob> read_sealed_file(const std::filesystem::path& path) {
  const UniqueFd fd(open_no_follow(path));
  if (!fd.valid()) {
    return error_from_errno(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                            "open sealed root key " + path.string(), errno);
  }
  struct stat st {};
  Status checked = ::fstat(fd.get(), &st) != 0
                       ? Status(error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno))
                       : check_private_fd(fd.get(), path);
  if (checked.ok() &&
      (!S_ISREG(st.st_mode) || st.st_size > static_cast<off_t>(kMaxSealedFileSize))) {
    checked = Error(ErrorCode::kCorrupt, "sealed root key " + path.string() +
                                             " is not a regular file of at most 64 KiB");
  }
  std::string text;
  if (checked.ok()) {
    text.resize(static_cast<std::size_t>(st.st_size));
    if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
      checked = Error(ErrorCode::kIo, "read " + path.string() + ": short read");
    }
  }
  ENVCRYPT_TRY(checked);
  Result<TpmSealedBlob> blob = decode_sealed_blob(text);
  if (!blob.ok()) {
    return blob.error().with_context(path.string());
  }
  return blob;
}

Result<SecretBytes> ask_pin(const TpmSealedBlob& blob, const RootKeyTpm& tpm,
                            const std::filesystem::path& sealed) {
  if (!blob.policy.pin) {
    return SecretBytes();
  }
  if (!tpm.pin) {
    return Error(ErrorCode::kDenied,
                 "root key " + sealed.string() + " needs its TPM PIN and nothing can ask for it");
  }
  return tpm.pin();
}

Result<SecretBytes> unseal_file(const std::filesystem::path& sealed, const TpmSealedBlob& blob,
                                const RootKeyTpm& tpm) {
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes pin, ask_pin(blob, tpm, sealed));
  Result<SecretBytes> key = tpm_unseal(tpm.tcti, blob, pin);
  if (!key.ok()) {
    return key.error().with_context("root key " + sealed.string());
  }
  if (key->size() != kAes256KeySize) {
    return Error(ErrorCode::kCorrupt, "root key " + sealed.string() + ": the TPM gave back " +
                                          std::to_string(key->size()) + " bytes, not 32");
  }
  return key;
}

// Overwrites the file's bytes with zeros in place, syncs, then removes it,
// so neither the name nor (on a file system that writes in place, as ext4
// and XFS do for an overwrite of allocated blocks) the blocks keep the key.
Status wipe_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return error_from_errno(ErrorCode::kIo, "open " + path.string() + " to wipe it", errno);
  }
  struct stat st {};
  bool wiped = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (wiped) {
    const std::vector<std::uint8_t> zeros(static_cast<std::size_t>(st.st_size), 0);
    wiped = ::pwrite(fd, zeros.data(), zeros.size(), 0) == static_cast<ssize_t>(zeros.size()) &&
            ::fsync(fd) == 0;
  }
  const int saved_errno = errno;
  ::close(fd);
  if (!wiped) {
    return error_from_errno(ErrorCode::kIo, "overwrite " + path.string(), saved_errno);
  }
  if (::unlink(path.c_str()) != 0) {
    return error_from_errno(ErrorCode::kIo, "remove " + path.string(), errno);
  }
  sync_directory(parent_dir(path));
  return OkStatus();
}

}  // namespace

std::filesystem::path sealed_root_key_path(const std::filesystem::path& root_key) {
  std::filesystem::path sealed = root_key;
  sealed += ".tpm";
  return sealed;
}

Result<SecretBytes> load_root_key(const std::filesystem::path& root_key, const RootKeyTpm& tpm) {
  if (root_key.empty()) {
    return Error(ErrorCode::kUsage, "root key path is not set");
  }
  const std::filesystem::path sealed = sealed_root_key_path(root_key);
  Result<TpmSealedBlob> blob = read_sealed_file(sealed);
  if (blob.ok()) {
    return unseal_file(sealed, *blob, tpm);
  }
  if (blob.error().code() != ErrorCode::kNotFound) {
    return blob.error();
  }
  return load_or_create_plaintext(root_key);
}

Result<SealOutcome> seal_root_key(const std::filesystem::path& root_key, const RootKeyTpm& tpm,
                                  const TpmSealPolicy& policy, const SecretBytes& pin) {
  const std::filesystem::path sealed = sealed_root_key_path(root_key);
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes key, read_root_key_file(root_key));
  Result<TpmSealedBlob> existing = read_sealed_file(sealed);
  if (existing.ok()) {
    // An earlier run stopped between writing the sealed file and wiping the
    // plaintext: finish it, but only for the same key.
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes unsealed, unseal_file(sealed, *existing, tpm));
    if (!unsealed.equals(key.span())) {
      return Error(ErrorCode::kConflict, "both " + root_key.string() + " and " + sealed.string() +
                                             " exist and hold different keys: refusing to "
                                             "choose; move one away");
    }
  } else if (existing.error().code() != ErrorCode::kNotFound) {
    return existing.error();
  } else {
    ENVCRYPT_ASSIGN_OR_RETURN(const TpmSealedBlob blob, tpm_seal(tpm.tcti, key, policy, pin));
    // Proven to unseal before the plaintext goes.
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes check, tpm_unseal(tpm.tcti, blob, pin));
    if (!check.equals(key.span())) {
      return Error(ErrorCode::kInternal, "the TPM unsealed a different key: nothing changed");
    }
    const std::string text = encode_sealed_blob(blob);
    bool created = false;
    ENVCRYPT_TRY(create_private_file(sealed, reinterpret_cast<const std::uint8_t*>(text.data()),
                                     text.size(), created));
    if (!created) {
      return Error(ErrorCode::kConflict, sealed.string() +
                                             " appeared while sealing: another seal-root-key ran; "
                                             "nothing changed");
    }
  }
  ENVCRYPT_TRY(wipe_file(root_key));
  return SealOutcome{sealed, root_key};
}

Result<std::filesystem::path> unseal_root_key(const std::filesystem::path& root_key,
                                              const RootKeyTpm& tpm) {
  const std::filesystem::path sealed = sealed_root_key_path(root_key);
  ENVCRYPT_ASSIGN_OR_RETURN(const TpmSealedBlob blob, read_sealed_file(sealed));
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes key, unseal_file(sealed, blob, tpm));
  bool created = false;
  ENVCRYPT_TRY(create_private_file(root_key, key.data(), key.size(), created));
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes written, read_root_key_file(root_key));
  if (!written.equals(key.span())) {
    return Error(ErrorCode::kConflict, root_key.string() +
                                           " already holds another key: the "
                                           "sealed key stays in " +
                                           sealed.string());
  }
  if (::unlink(sealed.c_str()) != 0) {
    return error_from_errno(ErrorCode::kIo, "remove " + sealed.string(), errno);
  }
  sync_directory(parent_dir(sealed));
  return root_key;
}

}  // namespace envcrypt
