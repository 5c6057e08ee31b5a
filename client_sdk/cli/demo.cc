// `kcnet demo` (demo.h).
#include "client_sdk/cli/demo.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/cli/child_process.h"
#include "client_sdk/cli/print.h"
#include "kcnet/client.h"
#include "kcnet/v1/domain.pb.h"

namespace kcnet::cli {
namespace {

using ::kcnet::sdk::Client;
namespace v1 = ::kcnet::v1;
namespace fs = ::std::filesystem;

// Propagates a failed absl::Status with the step it happened in.
#define KCNET_DEMO_TRY(expr)            \
  do {                                  \
    const absl::Status demo_s = (expr); \
    if (!demo_s.ok()) return demo_s;    \
  } while (0)

absl::Status Failed(absl::string_view what, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(what, ": ", OneLine(status.message())));
}

absl::Status Check(bool ok, absl::string_view what) {
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("check failed: ", what));
}

void Say(absl::string_view line) {
  std::printf("%s\n", std::string(line).c_str());
  std::fflush(stdout);
}

// --- Finding the binaries -----------------------------------------------------------------

bool Executable(const std::string& path) {
  std::error_code error;
  return !path.empty() && access(path.c_str(), X_OK) == 0 && !fs::is_directory(path, error);
}

absl::StatusOr<std::string> FindBinary(const Args& args, absl::string_view flag,
                                       const std::string& name, const std::string& self_path,
                                       const char* build_tree_path) {
  if (std::optional<std::string> given = args.Get(flag)) {
    if (!Executable(*given)) {
      return absl::NotFoundError(absl::StrCat("--", flag, ": ", *given, " is not a program"));
    }
    return *given;
  }
  std::vector<std::string> candidates;
  if (!self_path.empty()) candidates.push_back((fs::path(self_path).parent_path() / name).string());
  if (build_tree_path != nullptr) candidates.push_back(build_tree_path);
  if (const char* path = getenv("PATH")) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      candidates.push_back((fs::path(std::string(dir)) / name).string());
    }
  }
  for (const std::string& candidate : candidates) {
    if (Executable(candidate)) return candidate;
  }
  return absl::NotFoundError(
      absl::StrCat("cannot find ", name, " beside kcnet or on $PATH: give --", flag, "=PATH"));
}

#ifdef KCNET_BUILD_SERVER_BIN
constexpr const char* kBuildServerBin = KCNET_BUILD_SERVER_BIN;
#else
constexpr const char* kBuildServerBin = nullptr;
#endif
#ifdef KCNET_BUILD_ADMIN_BIN
constexpr const char* kBuildAdminBin = KCNET_BUILD_ADMIN_BIN;
#else
constexpr const char* kBuildAdminBin = nullptr;
#endif

// The password printed for `username` in seed-demo's account table.
std::string PrintedPassword(const std::string& out, const std::string& username) {
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.size() >= 2 && words[0] == username) return std::string(words[1]);
  }
  return "";
}

// --- Devices ------------------------------------------------------------------------------

// One device: a store file, the account signed in on it, and its Client while open.
struct Device {
  std::string name;  // also the device id
  std::string username;
  std::string password;
  std::string path;
  std::unique_ptr<Client> client;

  // (Re)opens the store, online (with the server's address) or offline (without).
  absl::Status Open(const std::string& server) {
    client.reset();
    sdk::ClientOptions options;
    options.path = path;
    options.device_id = name;
    options.server_address = server;
    options.durable = false;  // a demo: no fsync per write
    options.sync_timeout = absl::Seconds(60);
    absl::StatusOr<std::unique_ptr<Client>> opened = Client::Open(options);
    if (!opened.ok()) return Failed(absl::StrCat(name, ": open ", path), opened.status());
    client = *std::move(opened);
    return absl::OkStatus();
  }

  absl::StatusOr<sdk::SyncSummary> Sync() {
    absl::StatusOr<sdk::SyncSummary> summary = client->SyncNow();
    if (!summary.ok()) return Failed(absl::StrCat(name, ": sync"), summary.status());
    Say(absl::StrFormat(
        "  %s: synced, %d change(s) uploaded, %d record(s) received%s", name,
        summary->pushed_mutations, summary->received_changes,
        summary->reports.empty() ? "" : absl::StrCat(", ", summary->reports.size(), " reports")));
    return summary;
  }

  absl::Status SignInAndSync(const std::string& server) {
    KCNET_DEMO_TRY(Open(server));
    absl::Status signed_in = client->SignIn(username, password);
    if (!signed_in.ok()) return Failed(absl::StrCat(name, ": sign in ", username), signed_in);
    std::optional<v1::User> user = client->user();
    KCNET_DEMO_TRY(Check(user.has_value(), "signed-in user kept"));
    Say(absl::StrCat("  ", name, ": signed in as ", UserLine(*user, Names(client.get()))));
    return Sync().status();
  }

  int64_t Pending() { return client->Status().pending_uploads; }
};

template <typename T>
absl::Status Got(const absl::StatusOr<T>& value, absl::string_view what) {
  return value.ok() ? absl::OkStatus() : Failed(what, value.status());
}

struct BucketState {
  uint64_t checksum = 0;
  uint64_t records = 0;
};

// --- The scenario -------------------------------------------------------------------------

class Demo {
 public:
  Demo(std::string dir, std::string server_bin, std::string admin_bin)
      : dir_(std::move(dir)),
        server_bin_(std::move(server_bin)),
        admin_bin_(std::move(admin_bin)) {}

  ~Demo() {
    for (Device* d : {&a_, &b_, &coord_, &officer_, &fresh_}) d->client.reset();
    if (server_ != nullptr) server_->Stop(absl::Seconds(12));
  }

  std::string server_log() const { return dir_ + "/server.log"; }

  absl::Status Run() {
    KCNET_DEMO_TRY(StartServer());
    KCNET_DEMO_TRY(TabletsSignIn());
    KCNET_DEMO_TRY(WorkOffline());
    KCNET_DEMO_TRY(Reconnect());
    KCNET_DEMO_TRY(CoordinatorReviews());
    KCNET_DEMO_TRY(OfficerApproves());
    KCNET_DEMO_TRY(ConcurrentEdits());
    return Converge();
  }

 private:
  absl::Status StartServer() {
    Say("== 1. a kcnet server with the demo province");
    const std::string data = dir_ + "/server";
    RunOutput seed = RunProgram({admin_bin_, "seed-demo", "--data_dir=" + data},
                                dir_ + "/admin.log", absl::Seconds(60));
    if (seed.exit_code != 0) {
      return absl::InternalError(absl::StrCat("kcnet-admin seed-demo failed (exit ", seed.exit_code,
                                              "): see ", dir_, "/admin.log ",
                                              OneLine(seed.output)));
    }
    for (Device* d : {&a_, &coord_, &officer_}) {
      d->password = PrintedPassword(seed.output, d->username);
      KCNET_DEMO_TRY(Check(!d->password.empty(),
                           absl::StrCat("seed-demo printed no password for ", d->username)));
    }
    fresh_.password = officer_.password;
    // seed-demo has one collaborator per commune: a second one for commune 90101.
    b_.password = "demo-collab3-pass";
    // The password goes in a file, never in an argument (it would show in `ps`).
    const std::string password_file = dir_ + "/" + b_.username + ".password";
    {
      std::ofstream out(password_file, std::ios::trunc);
      out << b_.password << "\n";
      if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", password_file));
    }
    RunOutput created =
        RunProgram({admin_bin_, "create-user", "--data_dir=" + data, "--username=" + b_.username,
                    "--display_name=Võ Thị Cúc (demo)", "--role=commune_collaborator",
                    "--org_units=90101", "--password-file=" + password_file},
                   dir_ + "/admin.log", absl::Seconds(60));
    if (created.exit_code != 0) {
      return absl::InternalError(
          absl::StrCat("kcnet-admin create-user failed: see ", dir_, "/admin.log"));
    }
    Say(absl::StrCat("  seeded ", data, " (kcnet-admin seed-demo) and added ", b_.username,
                     ", a second collaborator of commune 90101"));
    absl::StatusOr<std::unique_ptr<ChildProcess>> server = ChildProcess::Start(
        {server_bin_, "--data_dir=" + data, "--listen=127.0.0.1:0"}, server_log());
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    std::optional<std::string> ready = server_->ReadLine(absl::Seconds(30));
    constexpr absl::string_view kReady = "kcnet-server listening on ";
    if (!ready.has_value() || !absl::StartsWith(*ready, kReady)) {
      return absl::UnavailableError(absl::StrCat("kcnet-server did not start: see ", server_log()));
    }
    address_ = ready->substr(kReady.size());
    Say(absl::StrCat("  kcnet-server listening on ", address_, " (log: ", server_log(), ")"));
    return absl::OkStatus();
  }

  absl::Status TabletsSignIn() {
    Say("== 2. two collaborator tablets of the same commune sign in and download it");
    KCNET_DEMO_TRY(a_.SignInAndSync(address_));
    KCNET_DEMO_TRY(b_.SignInAndSync(address_));
    commune_ = a_.client->user()->org_unit_ids(0);
    KCNET_DEMO_TRY(Check(b_.client->user()->org_unit_ids(0) == commune_, "same commune"));
    absl::StatusOr<std::vector<v1::Facility>> known = a_.client->FacilitiesOfCommune(commune_);
    KCNET_DEMO_TRY(Got(known, "tablet-a: facilities of the commune"));
    KCNET_DEMO_TRY(Check(!known->empty(), "the seeded facilities reached tablet-a"));
    Say(absl::StrCat("  commune ", commune_, " holds ", known->size(), " facilities"));
    return absl::OkStatus();
  }

  // One tablet's offline work: a facility, a visit, a submitted request.
  absl::Status FieldWork(Device& d, const std::string& name, const std::string& owner,
                         const std::string& products, v1::SupportCategory category, int64_t amount,
                         const std::string& description, std::string* facility_id,
                         std::string* request_id) {
    v1::Facility f;
    f.set_commune_id(commune_);
    f.set_name(name);
    f.set_owner_name(owner);
    f.set_kind(v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(v1::SECTOR_FOOD_PROCESSING);
    f.set_main_products(products);
    f.set_workers(8);
    f.set_latitude(20.105);
    f.set_longitude(105.503);
    absl::StatusOr<v1::Facility> added = d.client->RegisterFacility(f);
    KCNET_DEMO_TRY(Got(added, absl::StrCat(d.name, ": register facility")));
    *facility_id = added->id();
    Say(absl::StrCat("  ", d.name, ": registered \"", name, "\" ", added->id()));
    v1::Visit visit;
    visit.set_facility_id(added->id());
    visit.set_purpose(v1::VISIT_PURPOSE_SURVEY);
    visit.set_findings("Cơ sở cần máy móc và đào tạo tay nghề");
    visit.add_needs(category);
    absl::StatusOr<v1::Visit> recorded = d.client->RecordVisit(visit);
    KCNET_DEMO_TRY(Got(recorded, absl::StrCat(d.name, ": record visit")));
    Say(absl::StrCat("  ", d.name, ": recorded a survey visit ", recorded->id()));
    v1::SupportRequest request;
    request.set_facility_id(added->id());
    request.set_category(category);
    request.set_description(description);
    request.set_requested_amount_vnd(amount);
    request.set_own_contribution_vnd(amount / 4);
    request.set_proposed_funding(v1::FUNDING_SOURCE_LOCAL);
    absl::StatusOr<v1::SupportRequest> drafted = d.client->DraftRequest(request);
    KCNET_DEMO_TRY(Got(drafted, absl::StrCat(d.name, ": draft request")));
    *request_id = drafted->id();
    absl::StatusOr<v1::SupportRequest> submitted = d.client->Submit(drafted->id());
    KCNET_DEMO_TRY(Got(submitted, absl::StrCat(d.name, ": submit request")));
    KCNET_DEMO_TRY(Check(submitted->status() == v1::REQUEST_STATUS_SUBMITTED, "submitted"));
    Say(absl::StrCat("  ", d.name, ": drafted and submitted ", RequestLine(*submitted)));
    return absl::OkStatus();
  }

  absl::Status WorkOffline() {
    Say("== 3. the tablets work offline");
    KCNET_DEMO_TRY(a_.Open(""));
    KCNET_DEMO_TRY(b_.Open(""));
    KCNET_DEMO_TRY(FieldWork(a_, "Cơ sở bánh đa Nguyễn Văn Tư (demo)", "Nguyễn Văn Tư",
                             "Bánh đa nem, bánh đa vừng", v1::SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY,
                             120000000, "Máy tráng bánh đa tự động", &facility_a_, &request_1_));
    KCNET_DEMO_TRY(FieldWork(b_, "Xưởng nón lá Phú Hậu (demo)", "Đỗ Thị Hậu", "Nón lá bài thơ",
                             v1::SUPPORT_CATEGORY_TRAINING, 45000000,
                             "Đào tạo nghề làm nón cho 20 lao động", &facility_b_, &request_2_));
    absl::StatusOr<sdk::SyncSummary> offline = a_.client->SyncNow();
    KCNET_DEMO_TRY(Check(!offline.ok(), "a sync without a server fails"));
    Say(absl::StrCat("  tablet-a: sync while offline fails (", OneLine(offline.status().message()),
                     "); ", a_.Pending(), " changes kept"));
    KCNET_DEMO_TRY(Check(a_.Pending() >= 4 && b_.Pending() >= 4, "4+ pending writes per tablet"));
    Say(absl::StrCat("  pending uploads: tablet-a ", a_.Pending(), ", tablet-b ", b_.Pending()));
    return absl::OkStatus();
  }

  absl::Status Reconnect() {
    Say("== 4. the tablets reconnect and sync");
    KCNET_DEMO_TRY(a_.Open(address_));
    KCNET_DEMO_TRY(b_.Open(address_));
    for (Device* d : {&a_, &b_, &a_}) KCNET_DEMO_TRY(d->Sync().status());
    KCNET_DEMO_TRY(Got(a_.client->GetFacility(facility_b_), "tablet-a sees tablet-b's facility"));
    KCNET_DEMO_TRY(Got(b_.client->GetFacility(facility_a_), "tablet-b sees tablet-a's facility"));
    KCNET_DEMO_TRY(Check(a_.Pending() == 0 && b_.Pending() == 0, "nothing left to upload"));
    Say("  each tablet now has the other's facility, visit and request; nothing pending");
    return absl::OkStatus();
  }

  absl::Status CoordinatorReviews() {
    Say("== 5. the district coordinator reviews");
    KCNET_DEMO_TRY(coord_.SignInAndSync(address_));
    absl::StatusOr<std::vector<v1::SupportRequest>> waiting =
        coord_.client->RequestsAwaitingMyReview();
    KCNET_DEMO_TRY(Got(waiting, "coordinator: requests awaiting review"));
    bool has_1 = false, has_2 = false;
    for (const v1::SupportRequest& r : *waiting) {
      has_1 = has_1 || r.id() == request_1_;
      has_2 = has_2 || r.id() == request_2_;
    }
    KCNET_DEMO_TRY(Check(has_1 && has_2, "both submitted requests await the coordinator"));
    Say(absl::StrCat("  coord-tablet: ", waiting->size(), " requests await review"));
    absl::StatusOr<v1::SupportRequest> endorsed =
        coord_.client->Endorse(request_1_, "Phù hợp kế hoạch khuyến công năm nay");
    KCNET_DEMO_TRY(Got(endorsed, "coordinator: endorse"));
    Say(absl::StrCat("  coord-tablet: endorsed ", RequestLine(*endorsed)));
    absl::StatusOr<v1::SupportRequest> returned =
        coord_.client->Return(request_2_, "Bổ sung danh sách học viên và báo giá");
    KCNET_DEMO_TRY(Got(returned, "coordinator: return"));
    Say(absl::StrCat("  coord-tablet: returned ", RequestLine(*returned)));
    return coord_.Sync().status();
  }

  absl::Status OfficerApproves() {
    Say("== 6. the province officer approves the endorsed request");
    KCNET_DEMO_TRY(officer_.SignInAndSync(address_));
    absl::StatusOr<std::vector<v1::SupportRequest>> waiting =
        officer_.client->RequestsAwaitingMyReview();
    KCNET_DEMO_TRY(Got(waiting, "officer: requests awaiting review"));
    bool has_1 = false;
    for (const v1::SupportRequest& r : *waiting) has_1 = has_1 || r.id() == request_1_;
    KCNET_DEMO_TRY(Check(has_1, "the endorsed request awaits the officer"));
    absl::StatusOr<v1::SupportRequest> approved = officer_.client->Approve(
        request_1_, 100000000, v1::FUNDING_SOURCE_LOCAL, "Duyệt 100 triệu từ ngân sách tỉnh");
    KCNET_DEMO_TRY(Got(approved, "officer: approve"));
    Say(absl::StrCat("  officer-laptop: approved ", RequestLine(*approved)));
    KCNET_DEMO_TRY(officer_.Sync().status());
    KCNET_DEMO_TRY(a_.Sync().status());
    KCNET_DEMO_TRY(b_.Sync().status());
    absl::StatusOr<v1::SupportRequest> seen_1 = a_.client->GetRequest(request_1_);
    KCNET_DEMO_TRY(Got(seen_1, "tablet-a: the approved request"));
    KCNET_DEMO_TRY(
        Check(seen_1->status() == v1::REQUEST_STATUS_APPROVED, "tablet-a sees approved"));
    absl::StatusOr<v1::SupportRequest> seen_2 = b_.client->GetRequest(request_2_);
    KCNET_DEMO_TRY(Got(seen_2, "tablet-b: the returned request"));
    KCNET_DEMO_TRY(
        Check(seen_2->status() == v1::REQUEST_STATUS_RETURNED, "tablet-b sees returned"));
    absl::StatusOr<std::vector<v1::RequestEvent>> events = a_.client->RequestEvents(request_1_);
    KCNET_DEMO_TRY(Got(events, "tablet-a: request events"));
    Say(absl::StrCat("  tablet-a: its request is ", StatusName(seen_1->status()),
                     "; audit trail:"));
    for (const v1::RequestEvent& e : *events)
      Say(absl::StrCat("    ", EventLine(e, Names(a_.client.get()))));
    Say(absl::StrCat("  tablet-b: its request is ", StatusName(seen_2->status()), " (\"",
                     seen_2->decision_note(), "\")"));
    return absl::OkStatus();
  }

  absl::Status ConcurrentEdits() {
    Say("== 7. both tablets edit the same facility offline");
    KCNET_DEMO_TRY(a_.Open(""));
    KCNET_DEMO_TRY(b_.Open(""));
    v1::Facility edit;
    edit.set_id(facility_a_);
    edit.set_workers(12);
    KCNET_DEMO_TRY(Got(a_.client->UpdateFacility(edit, {"workers"}), "tablet-a: update"));
    Say("  tablet-a: workers = 12");
    absl::SleepFor(absl::Milliseconds(20));  // tablet-b's edit is the later one
    edit.set_workers(15);
    KCNET_DEMO_TRY(Got(b_.client->UpdateFacility(edit, {"workers"}), "tablet-b: update"));
    Say("  tablet-b: workers = 15 (later)");
    KCNET_DEMO_TRY(a_.Open(address_));
    KCNET_DEMO_TRY(b_.Open(address_));
    absl::StatusOr<sdk::SyncSummary> first = b_.Sync();
    KCNET_DEMO_TRY(first.status());
    absl::StatusOr<sdk::SyncSummary> second = a_.Sync();
    KCNET_DEMO_TRY(second.status());
    KCNET_DEMO_TRY(b_.Sync().status());
    absl::StatusOr<std::vector<sdk::Report>> reports = a_.client->ListReports();
    KCNET_DEMO_TRY(Got(reports, "tablet-a: reports"));
    bool conflict = false;
    for (const sdk::Report& report : *reports) {
      Say(absl::StrCat("  tablet-a report: ", ReportLine(*a_.client, report)));
      for (const v1::Conflict& c : report.result.conflicts()) {
        Say(absl::StrCat("    ", ConflictLine(c)));
        conflict = conflict || (!report.refused && UuidText(c.record_id()) == facility_a_);
      }
    }
    KCNET_DEMO_TRY(Check(conflict, "tablet-a got a conflict report for the facility"));
    for (Device* d : {&a_, &b_}) {
      absl::StatusOr<v1::Facility> f = d->client->GetFacility(facility_a_);
      KCNET_DEMO_TRY(Got(f, absl::StrCat(d->name, ": the edited facility")));
      KCNET_DEMO_TRY(Check(f->workers() == 15, absl::StrCat(d->name, " shows the later edit")));
    }
    Say("  both tablets show workers = 15 (the later edit); tablet-a was told its edit lost");
    return absl::OkStatus();
  }

  absl::Status Converge() {
    Say("== 8. every store equals the server");
    for (Device* d : {&b_, &coord_, &officer_, &a_}) KCNET_DEMO_TRY(d->Sync().status());
    // A fresh store that downloads everything: the sync checks each commune's checksum
    // against the server's checkpoint, so it holds exactly the server's records.
    KCNET_DEMO_TRY(fresh_.SignInAndSync(address_));
    absl::StatusOr<std::vector<v1::BucketCheckpoint>> server = fresh_.client->Checkpoints();
    KCNET_DEMO_TRY(Got(server, "fresh store: checkpoints"));
    std::map<int64_t, BucketState> reference;
    for (const v1::BucketCheckpoint& c : *server) {
      reference[c.bucket()] = {c.checksum(), c.records()};
    }
    std::map<int64_t, int> stores_per_bucket;
    for (Device* d : {&a_, &b_, &coord_, &officer_}) {
      const sdk::SyncStatus status = d->client->Status();
      KCNET_DEMO_TRY(Check(status.pending_uploads == 0 && status.unconfirmed == 0,
                           absl::StrCat(d->name, " has nothing pending")));
      absl::StatusOr<std::vector<v1::BucketCheckpoint>> mine = d->client->Checkpoints();
      KCNET_DEMO_TRY(Got(mine, absl::StrCat(d->name, ": checkpoints")));
      KCNET_DEMO_TRY(Check(!mine->empty(), absl::StrCat(d->name, " holds communes")));
      for (const v1::BucketCheckpoint& c : *mine) {
        auto it = reference.find(c.bucket());
        if (it == reference.end() || it->second.checksum != c.checksum() ||
            it->second.records != c.records()) {
          return absl::InternalError(absl::StrFormat(
              "%s: commune %d differs from the server: checksum %016x, %d records vs %s", d->name,
              c.bucket(), c.checksum(), c.records(),
              it == reference.end()
                  ? std::string("absent")
                  : absl::StrFormat("%016x, %d records", it->second.checksum, it->second.records)));
        }
        ++stores_per_bucket[c.bucket()];
      }
    }
    for (const auto& [bucket, state] : reference) {
      Say(
          absl::StrFormat("  commune %d: %d record(s), checksum %016x, equal on %d device(s) and "
                          "the server",
                          bucket, state.records, state.checksum, stores_per_bucket[bucket]));
    }
    for (Device* d : {&a_, &b_, &coord_, &officer_, &fresh_}) {
      absl::StatusOr<v1::SupportRequest> r1 = d->client->GetRequest(request_1_);
      absl::StatusOr<v1::SupportRequest> r2 = d->client->GetRequest(request_2_);
      KCNET_DEMO_TRY(Got(r1, absl::StrCat(d->name, ": request 1")));
      KCNET_DEMO_TRY(Got(r2, absl::StrCat(d->name, ": request 2")));
      KCNET_DEMO_TRY(Check(r1->status() == v1::REQUEST_STATUS_APPROVED &&
                               r1->approved_amount_vnd() == 100000000 &&
                               r2->status() == v1::REQUEST_STATUS_RETURNED,
                           absl::StrCat(d->name, " shows the decisions")));
    }
    Say("converged");
    return absl::OkStatus();
  }

  const std::string dir_;
  const std::string server_bin_;
  const std::string admin_bin_;
  std::unique_ptr<ChildProcess> server_;
  std::string address_;
  int64_t commune_ = 0;
  Device a_{"tablet-a", "collab1", "", dir_ + "/tablet-a.db", nullptr};
  Device b_{"tablet-b", "collab3", "", dir_ + "/tablet-b.db", nullptr};
  Device coord_{"coord-tablet", "coord1", "", dir_ + "/coord-tablet.db", nullptr};
  Device officer_{"officer-laptop", "officer1", "", dir_ + "/officer-laptop.db", nullptr};
  Device fresh_{"fresh-check", "officer1", "", dir_ + "/fresh-check.db", nullptr};
  std::string facility_a_, facility_b_, request_1_, request_2_;
};

}  // namespace

absl::Status RunDemo(const Args& args, const std::string& self_path) {
  const std::string keep = args.GetOr("keep", "no");
  if (keep != "yes" && keep != "no") return UsageError("--keep: yes or no");
  absl::StatusOr<std::string> server_bin =
      FindBinary(args, "server_bin", "kcnet-server", self_path, kBuildServerBin);
  if (!server_bin.ok()) return server_bin.status();
  absl::StatusOr<std::string> admin_bin =
      FindBinary(args, "admin_bin", "kcnet-admin", self_path, kBuildAdminBin);
  if (!admin_bin.ok()) return admin_bin.status();
  std::error_code error;
  fs::path temp = fs::temp_directory_path(error);
  if (error) temp = "/tmp";
  std::string pattern = (temp / "kcnet-demo-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create a temp dir like ", pattern));
  }
  const std::string dir = pattern;
  Say(absl::StrCat("kcnet demo in ", dir));
  absl::Status status;
  std::string log;
  {
    Demo demo(dir, *server_bin, *admin_bin);
    log = demo.server_log();
    status = demo.Run();
  }
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(status.message(), " (files kept in ", dir,
                                                    ", server log ", log, ")"));
  }
  if (keep == "yes") {
    Say(absl::StrCat("files kept in ", dir));
  } else {
    fs::remove_all(dir, error);
  }
  return absl::OkStatus();
}

}  // namespace kcnet::cli
