#include "server/app/kcnet_server.h"

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/resource_quota.h"
#include "server/app/store_spec.h"
#include "server/attachments/attachment_service.h"
#include "server/pgstore/pg_attachments.h"
#include "server/pgstore/pg_directory_store.h"
#include "server/pgstore/pg_plan_db.h"
#include "server/pgstore/pg_server_store.h"
#include "server/plans/plan_service.h"
#include "server/records/record_export.h"
#include "server/records/record_services.h"
#include "server/rpc/parse_error_interceptor.h"
#include "server/rpc/stream_log_interceptor.h"
#include "server/services/directory_services.h"
#include "sync/model/record_types.h"
#include "sync/sqlite.h"
#include "tools/address.h"

namespace kcnet::server {
namespace {

// ListFacilities' search over the reports follower's index (reports.db, r_fsearch). Each
// search first brings the index up to the store's last op when it is behind (normally a
// few ops: the follower looks every 50 ms), or waits up to 1 s for the follower already
// doing it, so a search sees every write committed before it; a longer backlog (a first
// start over a large store) is the follower's to count, and the search answers
// UNAVAILABLE meanwhile (the service then scans the records). On PostgreSQL the index
// follows the local mirror of the records: the search first waits (up to 1 s) for the
// mirror's follower to copy every op up to the store's last op.
class ReportsFacilitySearch final : public FacilitySearch {
 public:
  ReportsFacilitySearch(reports::ReportsStore* reports, sync::ServerStore* store,
                        pgstore::PgRecordMirror* mirror)
      : reports_(reports), store_(store), mirror_(mirror) {}

  absl::StatusOr<Page> Search(const std::vector<int64_t>& communes,
                              const std::vector<std::string>& words, absl::string_view after,
                              int limit) override {
    uint64_t last = store_->last_op();
    if (mirror_ != nullptr) {
      if (last > mirror_->watermark() + kMaxCatchUp) {
        return absl::UnavailableError("facility search: the mirror is still being filled");
      }
      const absl::Time deadline = absl::Now() + absl::Seconds(1);
      while (mirror_->watermark() < last) {
        if (absl::Now() > deadline) {
          return absl::UnavailableError("facility search: the mirror is catching up");
        }
        absl::SleepFor(absl::Milliseconds(2));
      }
      last = mirror_->last_op();  // the index counts the mirror's ops
    }
    absl::StatusOr<uint64_t> cursor = reports_->Cursor();
    if (!cursor.ok()) return cursor.status();
    if (*cursor < last) {
      if (last - *cursor > kMaxCatchUp) {
        return absl::UnavailableError("facility search: the index is still being built");
      }
      // Catch up here, or wait for the follower doing it (never behind a long slice).
      const absl::Time deadline = absl::Now() + absl::Seconds(1);
      while (true) {
        cursor = reports_->TryCatchUp();
        if (!cursor.ok()) return cursor.status();
        if (*cursor >= last) break;
        if (absl::Now() > deadline) {
          return absl::UnavailableError("facility search: the index is catching up");
        }
        absl::SleepFor(absl::Milliseconds(2));
      }
    }
    absl::StatusOr<reports::FacilitySearchPage> page =
        reports_->SearchFacilities(communes, words, after, limit);
    if (!page.ok()) return page.status();
    return Page{.ids = std::move(page->ids), .next = std::move(page->next)};
  }

 private:
  static constexpr uint64_t kMaxCatchUp = 20000;  // ops a search may count itself
  reports::ReportsStore* reports_;
  sync::ServerStore* store_;
  pgstore::PgRecordMirror* mirror_;  // null on SQLite
};

constexpr char kDirectoryFile[] = "directory.db";
constexpr char kStoreFile[] = "kcnet.db";
// On PostgreSQL: the local copy of the records that the reports and the attachment
// references read (pgstore::PgRecordMirror), rebuilt from PostgreSQL when missing.
constexpr char kMirrorFile[] = "pg_mirror.db";
constexpr char kPlansFile[] = "plans.db";
constexpr char kAttachmentsFile[] = "attachments.db";  // server/attachments
// The report summaries (server/reports): rebuilt from kcnet.db when missing.
constexpr char kReportsFile[] = "reports.db";
// The health-check service name an insecure server answers SERVING for.
constexpr char kInsecureHealthService[] = "kcnet.insecure";
// The services the console's HTTP bridge lets a browser call. SyncService for its conflict
// inbox (the bridge never forwards a client stream, so its Sync stream stays the tablets').
// Health's Watch is the console's "is the server there" stream.
// WatchService's stream is the console's live-change signal (one per tab).
// AttachmentService for the photos (Download; its Upload is a client stream, never forwarded).
// RecordExportService for the record downloads (a server stream).
constexpr std::array<const char*, 13> kBrowserServices = {
    "kcnet.v1.AuthService",        "kcnet.v1.OrgUnitService",    "kcnet.v1.UserService",
    "kcnet.v1.FacilityService",    "kcnet.v1.VisitService",      "kcnet.v1.SupportRequestService",
    "kcnet.v1.SyncService",        "kcnet.v1.PlanService",       "kcnet.v1.ReportService",
    "kcnet.v1.WatchService",       "kcnet.v1.AttachmentService", "grpc.health.v1.Health",
    "kcnet.v1.RecordExportService"};

// Server reflection for this server alone: gRPC's InitProtoReflectionServerBuilderPlugin()
// would turn it on for every server the process builds after it, so the plugin is added
// (or, when off, removed) per builder.
class ReflectionOption : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool on) : on_(on) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
      return plugin->name() == "proto_server_reflection";
    });
    if (on_) plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }

 private:
  const bool on_;
};

absl::StatusOr<std::string> ReadPemFile(absl::string_view option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(option, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(option, ": ", path, " is empty"));
  }
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& options) {
  const bool has_cert = !options.tls_cert_file.empty();
  const bool has_key = !options.tls_key_file.empty();
  if (!has_cert && !has_key) return grpc::InsecureServerCredentials();
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(
        absl::StrCat(has_cert ? "tls_key_file" : "tls_cert_file",
                     ": TLS needs both a certificate and its private key"));
  }
  absl::StatusOr<std::string> cert = ReadPemFile("tls_cert_file", options.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile("tls_key_file", options.tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  return grpc::SslServerCredentials(ssl);
}

// Moves a database's write-ahead log into its main file and empties the log, through a
// connection of its own (the owner's connection stays open and idle).
absl::Status CheckpointWal(const std::string& path) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path);
  if (!db.ok()) return db.status();
  // The first column is 1 when a reader or writer kept the checkpoint from finishing.
  absl::StatusOr<int64_t> busy = (*db)->QueryInt("PRAGMA wal_checkpoint(TRUNCATE)");
  if (!busy.ok()) return busy.status();
  if (*busy != 0) return absl::UnavailableError(absl::StrCat(path, ": checkpoint was blocked"));
  return absl::OkStatus();
}

// The partition key of a bucket on PostgreSQL: the id of the province above the org unit
// `bucket` (itself when it is a province); 0 for a unit the directory does not know or one
// with no province above it. Walks at most a few levels of the directory's cached units.
int32_t ProvinceOfUnit(Directory& directory, int64_t bucket) {
  int64_t id = bucket;
  for (int depth = 0; depth < 8 && id != 0; ++depth) {
    absl::StatusOr<kcnet::v1::OrgUnit> unit = directory.GetOrgUnit(id);
    if (!unit.ok()) return 0;
    if (unit->level() == kcnet::v1::ORG_UNIT_LEVEL_PROVINCE)
      return static_cast<int32_t>(unit->id());
    id = unit->parent_id();
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KcnetServer>> KcnetServer::Start(const ServerOptions& options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir: required");
  absl::StatusOr<LogFormat> format = ParseLogFormat(options.log_format);
  if (!format.ok()) return format.status();
  if (options.grpc_memory_quota_bytes != 0 &&
      options.grpc_memory_quota_bytes < (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("grpc_memory_quota_bytes: must be 0 (none) or at least 1 MiB, got ",
                     options.grpc_memory_quota_bytes));
  }
  if (options.max_receive_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_receive_bytes: must be > 0, got ", options.max_receive_bytes));
  }
  if (options.storage_threads < 1 || options.storage_threads > kMaxStorageThreads) {
    return absl::InvalidArgumentError(absl::StrCat("storage_threads: must be between 1 and ",
                                                   kMaxStorageThreads, ", got ",
                                                   options.storage_threads));
  }
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock: must not be null");
  // Before anything is created in the data dir.
  if (absl::Status s = CheckAttachmentOptions(options.attachments); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  const bool tls = !options.tls_cert_file.empty();
  const bool loopback = tools::IsLoopbackAddress(options.listen);
  if (!tls && !loopback && !options.insecure) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen: ", options.listen,
        " is not a loopback address and TLS is off: serve TLS with --tls_cert and --tls_key, "
        "or give --insecure to send passwords and tokens readable on the network"));
  }
  absl::StatusOr<StoreSpec> store_spec = ParseStoreSpec(options.store, options.data_dir);
  if (!store_spec.ok()) return store_spec.status();
  const bool postgres = store_spec->kind == StoreSpec::Kind::kPostgres;
  // On PostgreSQL the report summaries still live in --data_dir (docs/POSTGRES.md), with
  // the local mirror of the records they read.
  const std::string sqlite_dir = postgres ? options.data_dir : store_spec->location;
  std::error_code error;
  std::filesystem::create_directories(sqlite_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("store: cannot create ", store_spec->location, ": ", error.message()));
  }
  std::filesystem::create_directories(options.data_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("data_dir: cannot create ", options.data_dir, ": ", error.message()));
  }

  std::unique_ptr<KcnetServer> server(new KcnetServer());
  server->data_dir_ = options.data_dir;
  server->store_path_ =
      (std::filesystem::path(sqlite_dir) / (postgres ? kMirrorFile : kStoreFile)).string();
  server->logger_ = std::make_unique<Logger>(*format, options.log_sink);
  {
    std::vector<std::string> services(kBrowserServices.begin(), kBrowserServices.end());
    services.push_back("grpc.reflection.v1alpha.ServerReflection");
    server->metrics_ = std::make_unique<metrics::ServerMetrics>(services);
  }
  metrics::ServerMetrics* server_metrics = server->metrics_.get();

  const std::filesystem::path dir(options.data_dir);
  // The directory (accounts, tokens, lock-outs) follows the record store: on PostgreSQL it
  // is shared by every instance on the database (docs/POSTGRES.md).
  absl::StatusOr<std::unique_ptr<Directory>> directory =
      absl::InternalError("directory: not opened");
  if (postgres) {
    absl::StatusOr<std::unique_ptr<DirectoryStore>> directory_store =
        pgstore::OpenPgDirectoryStore(store_spec->location);
    if (!directory_store.ok()) {
      return absl::Status(directory_store.status().code(),
                          absl::StrCat("store: postgres: ", directory_store.status().message()));
    }
    directory = Directory::Open(*std::move(directory_store), options.directory);
    server->directory_on_postgres_ = true;
  } else {
    directory = Directory::Open((dir / kDirectoryFile).string(), options.directory);
  }
  if (!directory.ok()) return directory.status();
  server->directory_ = *std::move(directory);

  sync::ServerStoreOptions store_options;
  store_options.clock = options.clock;
  store_options.on_group_commit = [server_metrics](size_t batches, absl::Duration elapsed) {
    server_metrics->ObserveGroupCommit(batches, elapsed);
  };
  absl::StatusOr<std::unique_ptr<sync::ServerStore>> store =
      postgres ? absl::StatusOr<std::unique_ptr<sync::ServerStore>>(nullptr)
               : sync::ServerStore::Open(server->store_path_, &kcnet::model::KcnetSchema(),
                                         store_options);
  if (!store.ok()) return store.status();
  if (postgres) {
    // Tables are partitioned by province (docs/POSTGRES.md): a bucket (a commune) belongs
    // to the province above it in the directory, keyed by the province's org unit id.
    pgstore::PgServerStoreOptions pg_options;
    pg_options.province_of = [directory = server->directory_.get()](int64_t bucket) {
      return ProvinceOfUnit(*directory, bucket);
    };
    absl::StatusOr<std::unique_ptr<pgstore::PgServerStore>> pg = pgstore::PgServerStore::Open(
        store_spec->location, &kcnet::model::KcnetSchema(), store_options, std::move(pg_options));
    if (!pg.ok()) {
      return absl::Status(pg.status().code(),
                          absl::StrCat("store: postgres: ", pg.status().message()));
    }
    store = std::unique_ptr<sync::ServerStore>(std::move(*pg));
    // What the reports and attachment references read: a local copy of the records,
    // filled from PostgreSQL by its own thread (a first start copies everything).
    absl::StatusOr<std::unique_ptr<pgstore::PgRecordMirror>> mirror = pgstore::PgRecordMirror::Open(
        store_spec->location, server->store_path_, &kcnet::model::KcnetSchema());
    if (!mirror.ok()) {
      return absl::Status(mirror.status().code(),
                          absl::StrCat("store: postgres: mirror: ", mirror.status().message()));
    }
    server->mirror_ = *std::move(mirror);
    Logger* log = server->logger_.get();
    server->mirror_->Start([log](const absl::Status& status) {
      log->Warning(absl::StrCat("pg mirror: catch-up failed (retrying): ", status.message()));
    });
  }
  server->store_ = *std::move(store);

  // The plans follow the record store too: on PostgreSQL every instance draws on the same
  // plan lines (schema kcnet_plans), so two instances cannot over-commit one line.
  absl::StatusOr<std::unique_ptr<PlanStore>> plans = absl::InternalError("plans: not opened");
  if (postgres) {
    absl::StatusOr<std::unique_ptr<PlanDb>> plan_db = pgstore::OpenPgPlanDb(store_spec->location);
    if (!plan_db.ok()) {
      return absl::Status(plan_db.status().code(),
                          absl::StrCat("store: postgres: ", plan_db.status().message()));
    }
    plans = PlanStore::Open(*std::move(plan_db), options.clock);
  } else {
    plans = PlanStore::Open((dir / kPlansFile).string(), options.clock);
  }
  if (!plans.ok()) return plans.status();
  server->plans_ = *std::move(plans);
  // Every path that can approve a request draws on the plan through this guard.
  server->approval_guard_ =
      std::make_unique<ApprovalGuard>(server->directory_.get(), server->plans_.get());
  absl::StatusOr<std::unique_ptr<reports::ReportsStore>> summaries =
      reports::ReportsStore::Open((dir / kReportsFile).string(), server->store_path_);
  if (!summaries.ok()) return summaries.status();
  server->reports_ = *std::move(summaries);
  sync::ServerStore* store_ptr = server->store_.get();
  pgstore::PgRecordMirror* mirror = server->mirror_.get();
  Logger* logger = server->logger_.get();
  // The summaries follow the file they attach: the store, or on PostgreSQL its mirror.
  std::function<uint64_t()> followed = [store_ptr] { return store_ptr->last_op(); };
  if (mirror != nullptr) followed = [mirror] { return mirror->last_op(); };
  server->reports_follower_ = std::make_unique<reports::ReportsFollower>(
      server->reports_.get(), std::move(followed), [logger](const absl::Status& status) {
        logger->Warning(absl::StrCat("reports: catch-up failed (retrying): ", status.message()));
      });
  server->reporter_ = std::make_unique<reports::Reporter>(
      server->directory_.get(), server->reports_.get(), options.clock, server->plans_.get(),
      server->store_.get());

  // On PostgreSQL the references are read from the mirror, brought up to PostgreSQL's
  // last commit before the collector trusts them (it removes nothing when it cannot).
  std::function<absl::Status()> refresh_references;
  if (mirror != nullptr) refresh_references = [mirror] { return mirror->CatchUp().status(); };
  // The attachments' sessions, provinces' blobs and bytes follow the record store too: on
  // PostgreSQL every instance serves and resumes the same uploads (schema kcnet_attachments).
  Attachments::Storage attachment_storage;
  if (postgres) {
    absl::StatusOr<Attachments::Storage> pg_storage =
        pgstore::OpenPgAttachmentStorage(store_spec->location);
    if (!pg_storage.ok()) {
      return absl::Status(pg_storage.status().code(), absl::StrCat("store: postgres: attachments: ",
                                                                   pg_storage.status().message()));
    }
    attachment_storage = *std::move(pg_storage);
  }
  absl::StatusOr<std::unique_ptr<Attachments>> attachments =
      Attachments::Open(options.data_dir, server->store_path_, options.attachments,
                        {.directory = server->directory_.get(),
                         .store = server->store_.get(),
                         .clock = options.clock,
                         .logger = server->logger_.get(),
                         .refresh_references = std::move(refresh_references)},
                        std::move(attachment_storage));
  if (!attachments.ok()) return attachments.status();
  server->attachments_ = *std::move(attachments);

  RpcRunnerOptions runner_options;
  runner_options.storage_threads = options.storage_threads;
  runner_options.sign_in = options.sign_in;
  runner_options.sign_in.trusted_proxies = options.trusted_proxies;
  runner_options.logger = server->logger_.get();
  absl::StatusOr<std::unique_ptr<StorageRpcRunner>> runner =
      StorageRpcRunner::Create(server->directory_.get(), runner_options);
  if (!runner.ok()) return runner.status();
  server->runner_ = *std::move(runner);

  server->services_ = MakeDirectoryServices(server->directory_.get(), server->runner_.get());
  RecordServiceDeps deps;
  deps.directory = server->directory_.get();
  deps.store = server->store_.get();
  deps.runner = server->runner_.get();
  deps.clock = options.clock;
  deps.guard = server->approval_guard_.get();
  server->facility_search_ =
      std::make_unique<ReportsFacilitySearch>(server->reports_.get(), server->store_.get(), mirror);
  deps.search = server->facility_search_.get();
  for (std::unique_ptr<grpc::Service>& service : MakeRecordServices(deps)) {
    server->services_.push_back(std::move(service));
  }
  server->services_.push_back(MakeRecordExportService(deps));
  server->services_.push_back(MakePlanService({.directory = server->directory_.get(),
                                               .plans = server->plans_.get(),
                                               .records = server->store_.get(),
                                               .runner = server->runner_.get(),
                                               .clock = options.clock}));

  server->services_.push_back(MakeAttachmentService(
      server->attachments_.get(), server->directory_.get(), server->runner_.get(),
      {.logger = server->logger_.get(), .grpc_metrics = &server_metrics->grpc()}));

  server->services_.push_back(reports::MakeReportService(
      server->directory_.get(), server->reporter_.get(), server->runner_.get()));

  SyncServiceOptions sync_options = options.sync;
  if (sync_options.logger == nullptr) sync_options.logger = server->logger_.get();
  sync_options.guard = server->approval_guard_.get();
  sync_options.grpc_metrics = &server_metrics->grpc();
  sync_options.metrics = &server_metrics->sync();
  reports::ReportsStore* summaries_ptr = server->reports_.get();
  sync::Clock* clock = options.clock;
  auto previous_on_hello = sync_options.on_hello;
  sync_options.on_hello = [summaries_ptr, clock, logger, previous_on_hello](
                              const std::string& device_id, int64_t user_id, uint32_t pending) {
    absl::Status status =
        summaries_ptr->RecordDeviceSync(device_id, user_id, clock->NowMs(), pending);
    if (!status.ok()) logger->Warning(absl::StrCat("reports: device sync: ", status.message()));
    if (previous_on_hello) previous_on_hello(device_id, user_id, pending);
  };
  server->sync_service_ = std::make_unique<SyncServiceImpl>(
      server->directory_.get(), server->store_.get(), server->runner_.get(), sync_options);

  // A process-wide switch that takes effect for servers built after it.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(options.reflection));
  builder.AddListeningPort(options.listen, *credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_bytes);
  // A second server on the same port is an error, not a silent load-balancing partner.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (const std::unique_ptr<grpc::Service>& service : server->services_) {
    builder.RegisterService(service.get());
  }
  builder.RegisterService(server->sync_service_.get());
  server->watch_service_ =
      std::make_unique<WatchServiceImpl>(server->directory_.get(), server->store_.get());
  builder.RegisterService(server->watch_service_.get());
  // A request protobuf cannot parse gets INVALID_ARGUMENT, not gRPC's bare UNIMPLEMENTED.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<ParseErrorInterceptorFactory>());
  // grpc_server_* metrics of unary and server-streaming calls (the sync stream counts its own).
  interceptors.push_back(server_metrics->grpc().InterceptorFactory());
  // A log line for every server stream, as the runner writes for unary calls.
  Directory* callers = server->directory_.get();
  interceptors.push_back(std::make_unique<StreamLogInterceptorFactory>(
      server->logger_.get(), [callers](absl::string_view token) -> absl::StatusOr<std::string> {
        absl::StatusOr<Principal> principal = callers->Authenticate(token);
        if (!principal.ok()) return principal.status();
        return principal->username;
      }));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Sync streams stay open for hours over weak links: ping idle connections so that dead
  // ones are noticed, and let tablets ping us (within reason).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  // Memory per incoming stream (issue 17: 200 concurrent photo uploads): a fixed HTTP/2
  // receive window instead of one that BDP probing grows to megabytes per connection on a
  // fast link. 64 KiB per round trip is still 1 MB/s at 64 ms, more than a tablet's uplink.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // And, when configured, a bound on gRPC's buffers as a whole (docs/API.md, "Limits").
  if (options.grpc_memory_quota_bytes > 0) {
    grpc::ResourceQuota quota("kcnet-server");
    quota.Resize(static_cast<size_t>(options.grpc_memory_quota_bytes));
    builder.SetResourceQuota(quota);
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("listen: cannot listen on '", options.listen,
                                               "' (address in use, or not HOST:PORT?)"));
  }
  const size_t colon = options.listen.rfind(':');
  server->host_ = colon == std::string::npos ? options.listen : options.listen.substr(0, colon);
  server->insecure_ = !tls && !loopback;
  if (server->insecure_) {
    server->logger_->Warning(absl::StrCat(
        "--insecure: plaintext on ", server->address(),
        ", off loopback: passwords and tokens cross the network readable; serve TLS with "
        "--tls_cert and --tls_key"));
    grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
    if (health != nullptr) health->SetServingStatus(kInsecureHealthService, true);
  }
  if (!options.http_listen.empty()) {
    ConnectBridgeOptions http = options.http;
    http.listen = options.http_listen;
    http.console_dir = options.console_dir;
    http.tls_cert_file = options.tls_cert_file;
    http.tls_key_file = options.tls_key_file;
    http.logger = server->logger_.get();
    http.trusted_proxies = options.trusted_proxies;
    http.on_request = [server_metrics](const std::string& method, const std::string& path,
                                       int status) {
      server_metrics->CountHttpRequest(method, path, status);
    };
    // The console's services: never the sync stream (tablets only) nor reflection.
    http.services = {kBrowserServices.begin(), kBrowserServices.end()};
    // Links health.proto's descriptors into the pool, for Health's JSON.
    (void)grpc::health::v1::HealthCheckRequest::descriptor();
    if (!tls && !tools::IsLoopbackAddress(options.http_listen)) {
      if (!options.insecure) {
        return absl::InvalidArgumentError(
            absl::StrCat("http_listen: ", options.http_listen,
                         " is not a loopback address and TLS is off: serve TLS with --tls_cert and "
                         "--tls_key, or give --insecure"));
      }
      server->logger_->Warning(absl::StrCat("--insecure: plain HTTP on ", options.http_listen,
                                            ", off loopback: passwords and tokens cross the "
                                            "network readable"));
    }
    absl::StatusOr<std::unique_ptr<ConnectBridge>> bridge =
        ConnectBridge::Start(http, server->server_->InProcessChannel(grpc::ChannelArguments()));
    if (!bridge.ok()) return bridge.status();
    server->bridge_ = *std::move(bridge);
  }
  sync::ServerStore* records = server->store_.get();
  SyncServiceImpl* sync_service = server->sync_service_.get();
  server_metrics->registry().AddCallbackGauge(
      "kcnet_sync_streams_open", "Open sync streams.",
      [sync_service] { return static_cast<double>(sync_service->open_streams()); });
  server_metrics->registry().AddCallbackGauge(
      "kcnet_store_readers_in_use", "Reader connections of the record store busy now.",
      [records] { return static_cast<double>(records->readers_in_use()); });
  server_metrics->registry().AddCallbackGauge(
      "kcnet_store_readers", "Reader connections in the record store's pool.",
      [records] { return static_cast<double>(records->reader_count()); });
  if (!options.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<metrics::MetricsHttpServer>> metrics_http =
        metrics::MetricsHttpServer::Start(options.metrics_listen, &server_metrics->registry());
    if (!metrics_http.ok()) return metrics_http.status();
    server->metrics_http_ = *std::move(metrics_http);
    server->logger_->Info(absl::StrCat(
        "metrics on http://", options.metrics_listen.substr(0, options.metrics_listen.rfind(':')),
        ":", server->metrics_http_->port(), "/metrics"));
  }
  return server;
}

KcnetServer::~KcnetServer() { Shutdown(absl::ZeroDuration()); }

std::string KcnetServer::address() const { return absl::StrCat(host_, ":", port_); }

void KcnetServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (metrics_http_ != nullptr) metrics_http_->Stop();
  // The bridge's calls go to the gRPC server: it stops first (cancelling its streams).
  if (bridge_ != nullptr) bridge_->Stop();
  // In-flight calls still need the storage threads to finish, so they stop after.
  // (A server whose Start() failed part way has only some of its parts.)
  if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  if (sync_service_ != nullptr) sync_service_->Stop();
  if (runner_ != nullptr) runner_->Stop();
  if (reports_follower_ != nullptr) reports_follower_->Stop();
  if (attachments_ != nullptr) attachments_->Stop();
  if (mirror_ != nullptr) mirror_->Stop();
  if (store_ == nullptr) return;
  const std::filesystem::path dir(data_dir_);
  for (const std::string& file : {(dir / kDirectoryFile).string(), store_path_,
                                  (dir / kPlansFile).string(), (dir / kAttachmentsFile).string()}) {
    if (directory_on_postgres_ &&
        (file == (dir / kDirectoryFile).string() || file == (dir / kPlansFile).string() ||
         file == (dir / kAttachmentsFile).string())) {
      continue;
    }
    absl::Status status = CheckpointWal(file);
    if (!status.ok()) logger_->Warning(absl::StrCat("WAL checkpoint: ", status.message()));
  }
}

void KcnetServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace kcnet::server
