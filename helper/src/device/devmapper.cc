#include "device/devmapper.h"

#include <fcntl.h>
#include <libdevmapper.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <memory>

#include "util/unique_fd.h"

namespace envcrypt {
namespace {

// The last error libdevmapper logged in this thread, for our one-line
// errors: text only, it decides nothing.  It cannot travel with the task:
// libdevmapper's log hook takes no user pointer, and a create with a table
// runs the table load as an inner task whose errno it discards (only its
// log line says why the target refused the table).  new_task() clears it.
thread_local std::string last_dm_error;

void capture_dm_log(int level, const char* /*file*/, int /*line*/, int /*dm_errno*/,
                    const char* format, ...) {
  if ((level & 7) > 3) {  // keep _LOG_ERR and worse; drop warnings and debug
    return;
  }
  char buffer[512];
  va_list args;
  va_start(args, format);
  // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is right above
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  last_dm_error = buffer;
}

void init_libdevmapper() {
  static const bool initialised = [] {
    dm_log_with_errno_init(capture_dm_log);
    // udevd creates its control socket when it runs; without it, waiting
    // for udev would hang, so libdevmapper makes the nodes itself.
    dm_udev_set_sync_support(::access("/run/udev/control", F_OK) == 0 ? 1 : 0);
    return true;
  }();
  (void)initialised;
}

struct TaskDeleter {
  void operator()(dm_task* task) const { dm_task_destroy(task); }
};
using Task = std::unique_ptr<dm_task, TaskDeleter>;

Result<Task> new_task(int type, const std::string& name) {
  init_libdevmapper();
  last_dm_error.clear();
  Task task(dm_task_create(type));
  if (!task) {
    return Error(ErrorCode::kInternal, "device-mapper: cannot create task (is dm_mod loaded?)");
  }
  if (!name.empty() && dm_task_set_name(task.get(), name.c_str()) == 0) {
    return Error(ErrorCode::kUsage, "device-mapper: invalid name '" + name + "'");
  }
  return task;
}

Error run_error(const std::string& what, const std::string& name) {
  const std::string why = last_dm_error.empty() ? "ioctl failed" : last_dm_error;
  return {ErrorCode::kIo, "device-mapper " + what + " " + name + ": " + why};
}

// Runs a task that changes devices, waiting for udev (or making the nodes).
bool run_with_udev(dm_task* task) {
  std::uint32_t cookie = 0;
  if (dm_task_set_cookie(task, &cookie, 0) == 0) {
    return false;
  }
  const int ok = dm_task_run(task);
  (void)dm_udev_wait(cookie);
  return ok != 0;
}

Result<DmDevice> info_of(dm_task* task, const std::string& name) {
  struct dm_info info {};
  if (dm_task_get_info(task, &info) == 0) {
    return Error(ErrorCode::kInternal, "device-mapper info " + name + ": no info");
  }
  if (info.exists == 0) {
    return Error(ErrorCode::kNotFound, "no mapping named " + name);
  }
  DmDevice device;
  device.name = name;
  const char* uuid = dm_task_get_uuid(task);
  device.uuid = uuid != nullptr ? uuid : "";
  device.major = info.major;
  device.minor = info.minor;
  device.open_count = info.open_count;
  device.read_only = info.read_only != 0;
  device.suspended = info.suspended != 0;
  return device;
}

}  // namespace

bool device_mapper_available() {
  const UniqueFd control(::open("/dev/mapper/control", O_RDWR | O_CLOEXEC));
  return control.valid();
}

Status create_mapping(const std::string& name, const std::string& uuid, const DmTarget& target,
                      bool read_only) {
  ENVCRYPT_ASSIGN_OR_RETURN(Task task, new_task(DM_DEVICE_CREATE, name));
  if (!uuid.empty() && dm_task_set_uuid(task.get(), uuid.c_str()) == 0) {
    return Error(ErrorCode::kUsage, "device-mapper: invalid uuid '" + uuid + "'");
  }
  if (read_only && dm_task_set_ro(task.get()) == 0) {
    return Error(ErrorCode::kInternal, "device-mapper: cannot set read-only");
  }
  if (dm_task_add_target(task.get(), target.start, target.length, target.type.c_str(),
                         target.params.c_str()) == 0) {
    return Error(ErrorCode::kInternal, "device-mapper: cannot add target");
  }
  // With a table, libdevmapper creates, loads and resumes, and removes the
  // device again if the load fails.
  if (!run_with_udev(task.get())) {
    return run_error("create", name);
  }
  return OkStatus();
}

Status remove_mapping(const std::string& name) {
  ENVCRYPT_ASSIGN_OR_RETURN(Task task, new_task(DM_DEVICE_REMOVE, name));
  dm_task_retry_remove(task.get());
  if (!run_with_udev(task.get())) {
    return run_error("remove", name);
  }
  return OkStatus();
}

Result<DmDevice> mapping_info(const std::string& name) {
  ENVCRYPT_ASSIGN_OR_RETURN(Task task, new_task(DM_DEVICE_INFO, name));
  if (dm_task_run(task.get()) == 0) {
    return run_error("info", name);
  }
  return info_of(task.get(), name);
}

Result<std::vector<DmDevice>> list_mappings() {
  ENVCRYPT_ASSIGN_OR_RETURN(Task task, new_task(DM_DEVICE_LIST, ""));
  if (dm_task_run(task.get()) == 0) {
    return run_error("list", "");
  }
  std::vector<DmDevice> devices;
  dm_names* names = dm_task_get_names(task.get());
  if (names == nullptr || names->dev == 0) {
    return devices;
  }
  for (;;) {
    auto device = mapping_info(names->name);
    if (device.ok()) {  // a device removed meanwhile is simply not listed
      devices.push_back(std::move(device).value());
    }
    if (names->next == 0) {
      break;
    }
    names = reinterpret_cast<dm_names*>(reinterpret_cast<char*>(names) + names->next);
  }
  return devices;
}

Result<DmTarget> mapping_target(const std::string& name, bool status) {
  ENVCRYPT_ASSIGN_OR_RETURN(Task task, new_task(status ? DM_DEVICE_STATUS : DM_DEVICE_TABLE, name));
  if (dm_task_run(task.get()) == 0) {
    return run_error(status ? "status" : "table", name);
  }
  ENVCRYPT_TRY(info_of(task.get(), name));
  std::uint64_t start = 0;
  std::uint64_t length = 0;
  char* type = nullptr;
  char* params = nullptr;
  dm_get_next_target(task.get(), nullptr, &start, &length, &type, &params);
  if (type == nullptr) {
    return Error(ErrorCode::kNotFound, name + ": no live table");
  }
  return DmTarget{start, length, type, params != nullptr ? params : ""};
}

}  // namespace envcrypt
