// photo_device: one tablet taking photos, as a process, for the attachments fault test
// (tests/fault/attachments_fault_test.cc). It opens a kcnet::sdk::Client on its store,
// signs in once, registers one facility once, then loops until --stop_file exists: attach
// a new photo to the facility (Client::AddAttachment), sync (records, then the upload
// queue), pause a little. The test kills it (and the server) with SIGKILL at any point and
// starts it again on the same store.
//
// Its log (--log, appended, one write(2) per line, so a kill loses at most that line):
//   start                   the process started
//   I <n>                   AddAttachment of photo n begins
//   A <n> <id> <sha256>     AddAttachment of photo n returned: the photo is the device's
//   S ok | S fail <code>    one SyncNow ended
// Photo n's bytes are PhotoBytes(device, n) (tests/fault/photo_util.h), so the test knows
// them without reading the device's files.
//
// Modes: --mode=loop (the above) or --mode=final (no new photo: sync until every
// attachment is uploaded, then exit 0; exit 3 when --final_timeout_s, plus 3 s for each
// photo still to upload, passes first).
//
// Thread-safety: a single-threaded program (the SDK's threads aside).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kcnet/attachments.h"
#include "kcnet/client.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/model/record_types.h"
#include "tests/fault/photo_util.h"

namespace kcnet::fault {
namespace {

std::map<std::string, std::string> ParseArgs(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg.substr(0, 2) != "--") continue;
    const size_t eq = arg.find('=');
    if (eq == absl::string_view::npos) {
      args[std::string(arg.substr(2))] = "1";
    } else {
      args[std::string(arg.substr(2, eq - 2))] = std::string(arg.substr(eq + 1));
    }
  }
  return args;
}

// Appends one line with one write(2).
void Log(int fd, const std::string& line) {
  const std::string text = line + "\n";
  (void)!write(fd, text.data(), text.size());
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes `text` to `path` atomically (temp file, fsync, rename).
bool WriteSmallFile(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const bool ok =
      write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
  close(fd);
  return ok && rename(temp.c_str(), path.c_str()) == 0;
}

// The next photo number: one past the highest begun in the log.
int64_t NextPhoto(const std::string& log_path) {
  std::ifstream in(log_path);
  std::string line;
  int64_t next = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    int64_t n = 0;
    if (parts.size() >= 2 && (parts[0] == "I" || parts[0] == "A") &&
        absl::SimpleAtoi(parts[1], &n)) {
      next = std::max(next, n + 1);
    }
  }
  return next;
}

// The attachments not yet uploaded; nullopt when the device cannot list them.
std::optional<int> PendingUploads(sdk::Client& client) {
  absl::StatusOr<std::vector<sdk::AttachmentInfo>> all = client.ListAttachments();
  if (!all.ok()) return std::nullopt;
  int pending = 0;
  for (const sdk::AttachmentInfo& a : *all) pending += a.state != sdk::AttachmentState::kUploaded;
  return pending;
}

int Run(int argc, char** argv) {
  std::map<std::string, std::string> args = ParseArgs(argc, argv);
  const std::string store = args["store"], log_path = args["log"], stop_file = args["stop_file"];
  int device = 0, final_timeout_s = 60;
  (void)absl::SimpleAtoi(args["device"], &device);
  if (args.count("final_timeout_s"))
    (void)absl::SimpleAtoi(args["final_timeout_s"], &final_timeout_s);
  const bool final_mode = args["mode"] == "final";
  const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return 2;
  Log(log, "start");

  sdk::ClientOptions o;
  o.path = store;
  o.device_id = absl::StrCat("photo-device-", device);
  o.server_address = args["server"];
  o.sync_timeout = absl::Seconds(20);
  o.initial_backoff = absl::Milliseconds(20);
  o.max_backoff = absl::Milliseconds(200);
  o.max_upload_attempts = 1'000'000;  // cuts and kills are expected; never give up
  o.seed = static_cast<uint64_t>(device) + 1;
  absl::StatusOr<std::unique_ptr<sdk::Client>> opened = sdk::Client::Open(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 2;
  }
  sdk::Client& client = **opened;

  // Sign in once (the session is kept in the store), retrying through the faults.
  const std::string signed_marker = store + ".signed";
  while (!std::filesystem::exists(signed_marker)) {
    absl::Status s = client.SignIn(args["user"], args["password"]);
    if (s.ok()) {
      WriteSmallFile(signed_marker, "1");
      break;
    }
    if (s.code() != absl::StatusCode::kUnavailable &&
        s.code() != absl::StatusCode::kDeadlineExceeded) {
      std::fprintf(stderr, "sign in: %s\n", s.ToString().c_str());
      return 2;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  // One facility, registered once (offline: no server needed).
  const std::string facility_file = store + ".facility";
  std::string facility_id = ReadSmallFile(facility_file);
  if (facility_id.empty()) {
    int64_t commune = 0;
    (void)absl::SimpleAtoi(args["commune"], &commune);
    v1::Facility f;
    f.set_commune_id(commune);
    f.set_name(absl::StrCat("Xưởng gốm thiết bị ", device));
    f.set_latitude(21.0);
    f.set_longitude(105.8);
    absl::StatusOr<v1::Facility> registered = client.RegisterFacility(f);
    if (!registered.ok()) {
      std::fprintf(stderr, "register: %s\n", registered.status().ToString().c_str());
      return 2;
    }
    facility_id = registered->id();
    WriteSmallFile(facility_file, facility_id);
  }

  if (final_mode) {
    // The backlog drains at the link's rate (the test shapes it to 1 MB/s: about 2 s a
    // photo), so the time allowed grows with it: --final_timeout_s plus 3 s a photo.
    const int pending = PendingUploads(client).value_or(0);
    std::fprintf(stderr, "final: %d photos to upload\n", pending);
    const absl::Time deadline = absl::Now() + absl::Seconds(final_timeout_s + 3 * pending);
    while (absl::Now() < deadline) {
      // On stderr too, with the time: the test prints it when a device does not finish.
      std::fprintf(stderr, "%s final: sync starts\n",
                   absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()).c_str());
      absl::StatusOr<sdk::SyncSummary> sync = client.SyncNow();
      std::fprintf(stderr, "%s final: sync %s\n",
                   absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()).c_str(),
                   sync.status().ToString().c_str());
      Log(log, sync.ok() ? "S ok" : absl::StrCat("S fail ", sync.status().code()));
      if (sync.ok() && PendingUploads(client) == 0) return 0;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return 3;
  }

  std::mt19937_64 rng(static_cast<uint64_t>(device) * 7919 +
                      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())));
  int64_t n = NextPhoto(log_path);
  while (!std::filesystem::exists(stop_file)) {
    Log(log, absl::StrCat("I ", n));
    sdk::NewAttachment a;
    a.owner_type = model::kFacilityType;
    a.owner_id = facility_id;
    a.bytes = PhotoBytes(device, n);
    a.media_type = "image/jpeg";
    a.caption = absl::StrCat("Ảnh ", n, " của thiết bị ", device);
    absl::StatusOr<sdk::AttachmentInfo> added = client.AddAttachment(std::move(a));
    if (!added.ok()) {
      std::fprintf(stderr, "add attachment: %s\n", added.status().ToString().c_str());
      return 2;
    }
    Log(log, absl::StrCat("A ", n, " ", added->id, " ", added->sha256));
    ++n;
    absl::StatusOr<sdk::SyncSummary> sync = client.SyncNow();
    Log(log, sync.ok() ? "S ok" : absl::StrCat("S fail ", sync.status().code()));
    // A field worker takes a photo now and then, not three a second while the link is down.
    absl::SleepFor(absl::Milliseconds(static_cast<int64_t>(rng() % 300) + (sync.ok() ? 0 : 500)));
  }
  return 0;
}

}  // namespace
}  // namespace kcnet::fault

int main(int argc, char** argv) { return kcnet::fault::Run(argc, argv); }
