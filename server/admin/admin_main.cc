// kcnet-admin: the administrator's command-line tool for the directory (DATA_DIR/directory.db,
// or the PostgreSQL database of --store=postgres:): imports the official org-unit list and
// manages user accounts; `seed-demo` fills a new data directory with a small demo world
// (seed_demo.h); it also exports reports, rebuilds the report summaries, backs up a data
// dir and collects blobs. Every command that reads or writes the server's data takes
// --store=postgres:CONNINFO, except backup and restore (SQLite's only; they say so).
// Org units are named by their official code. Passwords come from --password-file=PATH,
// the prompt (no echo) or stdin, never from an argument (tools/password.h). Errors print
// one line on stderr ("kcnet-admin: create-user: --role is required") and exit non-zero
// (1: the operation failed, 2: the command line is wrong).

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "server/admin/backup.h"
#include "server/admin/seed_demo.h"
#include "server/app/store_spec.h"
#include "server/attachments/attachment_db.h"
#include "server/attachments/blob_gc.h"
#include "server/attachments/blob_store.h"
#include "server/attachments/references.h"
#include "server/directory/csv_import.h"
#include "server/directory/directory.h"
#include "server/pgstore/pg_attachments.h"
#include "server/pgstore/pg_directory_store.h"
#include "server/pgstore/pg_plan_db.h"
#include "server/pgstore/pg_record_mirror.h"
#include "server/pgstore/pg_server_store.h"
#include "server/plans/plan_store.h"
#include "server/reports/report_service.h"
#include "server/reports/reports_store.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "tools/args.h"
#include "tools/password.h"
#include "tools/table.h"

namespace kcnet::server {
namespace {

constexpr char kUsage[] =
    "usage: kcnet-admin --data_dir=DIR COMMAND [flags]\n"
    "       kcnet-admin [--data_dir=DIR] --store=postgres:CONNINFO COMMAND [flags]\n"
    "With --store=postgres: the commands read and write the database kcnet-server\n"
    "--store=postgres: shares (the directory commands need no --data_dir; seed-demo,\n"
    "rebuild-reports, export, gc-blobs and verify-blobs also name an instance's --data_dir,\n"
    "for its report summaries and its mirror of the records); backup and restore\n"
    "are SQLite's only (back PostgreSQL up with pg_basebackup; docs/DEPLOY.md).\n"
    "Commands:\n"
    "  import-org-units FILE [--dry_run]\n"
    "  create-user --username=U --display_name=NAME --role=ROLE --org_units=CODE[,CODE...]\n"
    "              [--password-file=PATH]\n"
    "  assign-user --username=U --role=ROLE --org_units=CODE[,CODE...]\n"
    "  reset-password --username=U [--password-file=PATH]\n"
    "  deactivate-user --username=U\n"
    "  list-users\n"
    "  list-org-units [--parent=CODE]\n"
    "  list-audit [--after=ID]   (account changes: who, when, which user, what changed)\n"
    "  seed-demo [--store=postgres:CONNINFO]   (a new, empty --data_dir only: demo org units,\n"
    "                 accounts, facilities with a survey visit each, this year's extension\n"
    "                 plan; with --store the accounts and facilities go into that database)\n"
    "  backup --to=DIR      (online: a consistent copy of every database while the server runs)\n"
    "  restore --from=DIR   (the server stopped: the data dir becomes the backup, as a new\n"
    "                        incarnation that every device recovers from; docs/SYNC.md)\n"
    "  new-incarnation [--restored] [--store=postgres:CONNINFO]   (every server stopped:\n"
    "                 makes the record store a new incarnation that every device recovers\n"
    "                 from; --restored after restoring it from a backup by other means, e.g.\n"
    "                 pg_restore or a point-in-time recovery of PostgreSQL; docs/DEPLOY.md)\n"
    "  rebuild-reports [--store=postgres:CONNINFO]   (recounts the report summaries,\n"
    "      DATA_DIR/reports.db, from the records; on PostgreSQL through DATA_DIR/pg_mirror.db)\n"
    "  export REPORT --format=csv|xlsx [--out=FILE] [--org_unit=CODE] [--from=YYYY-MM-DD]\n"
    "                [--to=YYYY-MM-DD] [--year=YYYY] [--store=postgres:CONNINFO]\n"
    "                (REPORT: coverage, pipeline, activity,\n"
    "                 quality, budget or outcomes; the whole country unless --org_unit (budget:\n"
    "                 a province, district or commune; --year, default this year); stdout\n"
    "                 unless --out)\n"
    "  gc-blobs [--grace=24h] [--store=postgres:CONNINFO]   (removes blobs no attachment\n"
    "                 record has referenced for the grace, expired uploads and stray temp\n"
    "                 files; safe online; with --store, those every instance shares)\n"
    "  verify-blobs [--store=postgres:CONNINFO]   (re-hashes every attachment blob; exit\n"
    "                 status 1 and the damaged blobs listed when any bytes no longer match\n"
    "                 their SHA-256; also lists as missing the hashes live records name\n"
    "                 with no blob here; with --store, the blobs in PostgreSQL)\n"
    "The password of create-user and reset-password is the first line of --password-file,\n"
    "else it is asked for (without echo) or read from stdin; never given as an argument.\n"
    "ROLE: commune_collaborator, district_coordinator, province_officer or administrator.\n";

using ::kcnet::tools::Args;
using ::kcnet::tools::UsageError;

absl::StatusOr<std::unique_ptr<Directory>> OpenDirectory(const Args& args) {
  const std::string data_dir = args.GetOr("data_dir", "");
  // --store=postgres:CONNINFO: the directory kcnet-server instances share on PostgreSQL
  // (no --data_dir needed); else --data_dir/directory.db, as kcnet-server keeps it.
  const std::string store = args.GetOr("store", "");
  if (!store.empty()) {
    absl::StatusOr<StoreSpec> spec = ParseStoreSpec(store, data_dir);
    if (!spec.ok()) return UsageError(absl::StrCat("--", spec.status().message()));
    if (spec->kind == StoreSpec::Kind::kPostgres) {
      absl::StatusOr<std::unique_ptr<DirectoryStore>> pg =
          pgstore::OpenPgDirectoryStore(spec->location);
      if (!pg.ok()) return pg.status();
      return Directory::Open(*std::move(pg));
    }
  }
  if (data_dir.empty()) return UsageError("--data_dir is required");
  std::error_code error;
  std::filesystem::create_directories(data_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create --data_dir ", data_dir, ": ", error.message()));
  }
  return Directory::Open((std::filesystem::path(data_dir) / "directory.db").string());
}

// The ids of the org units named by comma-separated official codes.
absl::StatusOr<std::vector<int64_t>> ResolveCodes(Directory& directory, absl::string_view codes) {
  std::vector<int64_t> ids;
  for (absl::string_view code : absl::StrSplit(codes, ',', absl::SkipWhitespace())) {
    absl::StatusOr<v1::OrgUnit> unit = directory.FindByCode(code);
    if (!unit.ok()) {
      return absl::Status(unit.status().code(),
                          absl::StrCat("--org_units: no org unit with code '", code, "'"));
    }
    ids.push_back(unit->id());
  }
  if (ids.empty()) return UsageError("--org_units names no org unit");
  return ids;
}

std::string Codes(Directory& directory, const v1::User& user) {
  std::vector<std::string> codes;
  for (int64_t id : user.org_unit_ids()) {
    absl::StatusOr<v1::OrgUnit> unit = directory.GetOrgUnit(id);
    codes.push_back(unit.ok() ? unit->code() : absl::StrCat("#", id));
  }
  return absl::StrJoin(codes, ",");
}

absl::StatusOr<v1::User> FindUserFlag(const Args& args, Directory& directory) {
  absl::StatusOr<std::string> username = args.Required("username");
  if (!username.ok()) return username.status();
  return directory.FindUser(*username);
}

absl::Status ImportOrgUnitsCommand(const Args& args) {
  if (args.words().size() != 2) return UsageError("import-org-units FILE [--dry_run]");
  const std::string& file = args.words()[1];
  absl::StatusOr<std::optional<bool>> dry_run_flag = args.Bool("dry_run");
  if (!dry_run_flag.ok()) return dry_run_flag.status();
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", file));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  const bool dry_run = dry_run_flag->value_or(false);
  const ImportReport report =
      ImportOrgUnits(**directory, text.str(), dry_run ? ImportMode::kDryRun : ImportMode::kApply);
  if (!report.status.ok()) return report.status;
  std::printf("%s %s\n",
              dry_run ? "dry run, nothing changed:" : "imported:", report.Summary().c_str());
  return absl::OkStatus();
}

absl::Status CreateUserCommand(const Args& args) {
  absl::StatusOr<std::string> username = args.Required("username");
  if (!username.ok()) return username.status();
  absl::StatusOr<std::string> display_name = args.Required("display_name");
  if (!display_name.ok()) return display_name.status();
  absl::StatusOr<std::string> role_name = args.Required("role");
  if (!role_name.ok()) return role_name.status();
  absl::StatusOr<v1::Role> role = ParseRole(*role_name);
  if (!role.ok()) return role.status();
  absl::StatusOr<std::string> codes = args.Required("org_units");
  if (!codes.ok()) return codes.status();
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::vector<int64_t>> units = ResolveCodes(**directory, *codes);
  if (!units.ok()) return units.status();
  absl::StatusOr<std::string> password = tools::ReadPassword(args.Get("password_file"));
  if (!password.ok()) return password.status();
  absl::StatusOr<v1::User> user =
      (*directory)->CreateUser(*username, *display_name, *password, *role, *units);
  if (!user.ok()) return user.status();
  std::printf("created user %s (id %lld, %s at %s)\n", user->username().c_str(),
              static_cast<long long>(user->id()), RoleName(user->role()).c_str(),
              Codes(**directory, *user).c_str());
  return absl::OkStatus();
}

absl::Status AssignUserCommand(const Args& args) {
  absl::StatusOr<std::string> role_name = args.Required("role");
  if (!role_name.ok()) return role_name.status();
  absl::StatusOr<v1::Role> role = ParseRole(*role_name);
  if (!role.ok()) return role.status();
  absl::StatusOr<std::string> codes = args.Required("org_units");
  if (!codes.ok()) return codes.status();
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<v1::User> user = FindUserFlag(args, **directory);
  if (!user.ok()) return user.status();
  absl::StatusOr<std::vector<int64_t>> units = ResolveCodes(**directory, *codes);
  if (!units.ok()) return units.status();
  absl::StatusOr<v1::User> updated = (*directory)->AssignUser(user->id(), *role, *units);
  if (!updated.ok()) return updated.status();
  std::printf("assigned user %s: %s at %s\n", updated->username().c_str(),
              RoleName(updated->role()).c_str(), Codes(**directory, *updated).c_str());
  return absl::OkStatus();
}

absl::Status ResetPasswordCommand(const Args& args) {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<v1::User> user = FindUserFlag(args, **directory);
  if (!user.ok()) return user.status();
  absl::StatusOr<std::string> password = tools::ReadPassword(args.Get("password_file"));
  if (!password.ok()) return password.status();
  absl::Status status = (*directory)->ResetPassword(user->id(), *password);
  if (!status.ok()) return status;
  std::printf("reset the password of %s; its sessions are signed out\n", user->username().c_str());
  return absl::OkStatus();
}

absl::Status DeactivateUserCommand(const Args& args) {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<v1::User> user = FindUserFlag(args, **directory);
  if (!user.ok()) return user.status();
  absl::Status status = (*directory)->DeactivateUser(user->id());
  if (!status.ok()) return status;
  std::printf("deactivated %s; its sessions are signed out\n", user->username().c_str());
  return absl::OkStatus();
}

absl::Status ListUsersCommand(const Args& args) {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::vector<v1::User>> users = (*directory)->ListUsers();
  if (!users.ok()) return users.status();
  for (const v1::User& user : *users) {
    std::printf("%s\t%s\t%s\t%s\t%s\n", user.username().c_str(), RoleName(user.role()).c_str(),
                user.active() ? "active" : "inactive", Codes(**directory, user).c_str(),
                user.display_name().c_str());
  }
  std::fprintf(stderr, "%zu users\n", users->size());
  return absl::OkStatus();
}

// The account audit trail, oldest first: who changed which account, when, and what.
absl::Status ListAuditCommand(const Args& args) {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  int64_t after = 0;
  const std::string after_text = args.GetOr("after", "0");
  if (!absl::SimpleAtoi(after_text, &after) || after < 0) {
    return UsageError(absl::StrCat("--after: '", after_text, "' is not an audit entry id"));
  }
  tools::Table table({"id", "time (UTC)", "by", "action", "user", "what changed"});
  size_t rows = 0;
  while (true) {
    absl::StatusOr<std::vector<AuditEntry>> page = (*directory)->ListAudit(after, 500);
    if (!page.ok()) return page.status();
    for (const AuditEntry& e : *page) {
      absl::StatusOr<v1::User> target = (*directory)->GetUser(e.target_user_id);
      table.AddRow({absl::StrCat(e.id),
                    absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(e.at_ms),
                                     absl::UTCTimeZone()),
                    e.actor.empty() ? absl::StrCat("#", e.actor_id) : e.actor, e.action,
                    target.ok() ? target->username() : absl::StrCat("#", e.target_user_id),
                    e.details});
      after = e.id;
      ++rows;
    }
    if (page->size() < 500) break;
  }
  std::fputs(table.Render().c_str(), stdout);
  std::fprintf(stderr, "%zu audit entries\n", rows);
  return absl::OkStatus();
}

absl::Status ListOrgUnitsCommand(const Args& args) {
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  int64_t parent_id = 0;
  const std::string parent_code = args.GetOr("parent", "");
  if (!parent_code.empty()) {
    absl::StatusOr<v1::OrgUnit> parent = (*directory)->FindByCode(parent_code);
    if (!parent.ok()) {
      return absl::Status(parent.status().code(),
                          absl::StrCat("--parent: no org unit with code '", parent_code, "'"));
    }
    parent_id = parent->id();
  }
  absl::StatusOr<std::vector<v1::OrgUnit>> units = (*directory)->ListChildren(parent_id);
  if (!units.ok()) return units.status();
  for (const v1::OrgUnit& unit : *units) {
    std::printf("%s\t%s\t%s\n", unit.code().c_str(), LevelName(unit.level()).c_str(),
                unit.name().c_str());
  }
  std::fprintf(stderr, "%zu org units\n", units->size());
  return absl::OkStatus();
}

absl::Status SeedDemoCommand(const Args& args) {
  const std::string data_dir = args.GetOr("data_dir", "");
  if (data_dir.empty()) return UsageError("--data_dir is required");
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(args.GetOr("store", ""), data_dir);
  if (!spec.ok()) return UsageError(absl::StrCat("--", spec.status().message()));
  absl::StatusOr<DemoSeed> seed =
      SeedDemo(data_dir, {}, spec->kind == StoreSpec::Kind::kPostgres ? spec->location : "");
  if (!seed.ok()) return seed.status();
  std::printf(
      "seeded %s: %d org units (province 90 \"Tỉnh Demo\"), %d facilities, %d visits, the %d "
      "extension plan\n",
      data_dir.c_str(), seed->org_units, seed->facilities, seed->visits, seed->plan_year);
  std::printf("demo accounts (change these passwords before any real use):\n");
  tools::Table accounts({"USERNAME", "PASSWORD", "ROLE", "ORG UNIT"});
  for (const DemoAccount& account : seed->accounts) {
    accounts.AddRow({account.username, account.password, account.role, account.org_unit_code});
  }
  std::fputs(accounts.Render("  ", "   ").c_str(), stdout);
  return absl::OkStatus();
}

// backup and restore copy a data dir's SQLite files. With --store=postgres: the records,
// the directory and the plans are in the database, which PostgreSQL's own tools back up
// consistently (a copy of the data dir alone would restore none of them): refused, saying
// what to use instead.
absl::Status RefusePostgres(const Args& args, absl::string_view command) {
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(args.GetOr("store", ""), "");
  if (!spec.ok()) return UsageError(absl::StrCat("--", spec.status().message()));
  if (spec->kind != StoreSpec::Kind::kPostgres) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      command,
      " chỉ dùng cho thư mục dữ liệu SQLite; với PostgreSQL hãy dùng pg_basebackup và lưu "
      "WAL / works on a SQLite data dir only: on PostgreSQL the records, accounts and plans "
      "are in the database; back it up with pg_basebackup and WAL archiving, then run "
      "new-incarnation --restored after a restore (docs/DEPLOY.md, \"Backups\")"));
}

absl::Status BackupCommand(const Args& args) {
  if (absl::Status refused = RefusePostgres(args, "backup"); !refused.ok()) return refused;
  const std::string data_dir = args.GetOr("data_dir", "");
  if (data_dir.empty()) return UsageError("--data_dir is required");
  const std::string to = args.GetOr("to", "");
  if (to.empty()) return UsageError("--to is required");
  absl::StatusOr<std::vector<CopiedDatabase>> copied = BackupDataDir(data_dir, to);
  if (!copied.ok()) return copied.status();
  for (const CopiedDatabase& db : *copied) {
    std::printf("backed up %s: %lld bytes in %.3f s\n", db.name.c_str(),
                static_cast<long long>(db.bytes), db.seconds);
  }
  return absl::OkStatus();
}

absl::Status RestoreCommand(const Args& args) {
  if (absl::Status refused = RefusePostgres(args, "restore"); !refused.ok()) return refused;
  const std::string data_dir = args.GetOr("data_dir", "");
  if (data_dir.empty()) return UsageError("--data_dir is required");
  const std::string from = args.GetOr("from", "");
  if (from.empty()) return UsageError("--from is required");
  absl::StatusOr<std::vector<CopiedDatabase>> copied = RestoreDataDir(data_dir, from);
  if (!copied.ok()) return copied.status();
  for (const CopiedDatabase& db : *copied) {
    std::printf("restored %s: %lld bytes in %.3f s\n", db.name.c_str(),
                static_cast<long long>(db.bytes), db.seconds);
  }
  std::printf("the record store is a new incarnation: devices recover at their next sync\n");
  // The report summaries counted the replaced records: they are recounted from the
  // restored ones at the next start (or by rebuild-reports).
  for (const char* file : {"reports.db", "reports.db-wal", "reports.db-shm"}) {
    std::error_code ignored;
    std::filesystem::remove(std::filesystem::path(data_dir) / file, ignored);
  }
  return absl::OkStatus();
}

// Brings DATA_DIR/pg_mirror.db (the local copy of the PostgreSQL records that kcnet-server
// keeps) up to every op committed in PostgreSQL; returns its path.
absl::StatusOr<std::string> CaughtUpMirror(const std::string& conninfo,
                                           const std::filesystem::path& dir) {
  const std::string mirror_path = (dir / "pg_mirror.db").string();
  absl::StatusOr<std::unique_ptr<pgstore::PgRecordMirror>> mirror =
      pgstore::PgRecordMirror::Open(conninfo, mirror_path, &kcnet::model::KcnetSchema());
  absl::Status status = mirror.ok() ? (*mirror)->CatchUp().status() : mirror.status();
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("store: postgres: mirror: ", status.message()));
  }
  return mirror_path;
}

// The report summaries of DATA_DIR. With --store=postgres:CONNINFO they follow the local
// mirror of the PostgreSQL records (DATA_DIR/pg_mirror.db, as kcnet-server keeps it), first
// brought up to every op committed in PostgreSQL.
absl::StatusOr<std::unique_ptr<reports::ReportsStore>> OpenReports(const Args& args,
                                                                   const std::string& data_dir) {
  const std::filesystem::path dir(data_dir);
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(args.GetOr("store", ""), data_dir);
  if (!spec.ok()) return spec.status();
  if (spec->kind == StoreSpec::Kind::kPostgres) {
    absl::StatusOr<std::string> mirror_path = CaughtUpMirror(spec->location, dir);
    if (!mirror_path.ok()) return mirror_path.status();
    return reports::ReportsStore::Open((dir / "reports.db").string(), *mirror_path);
  }
  if (!std::filesystem::exists(dir / "kcnet.db")) {
    return absl::NotFoundError(
        absl::StrCat("--data_dir: no record store (kcnet.db) in ", data_dir));
  }
  return reports::ReportsStore::Open((dir / "reports.db").string(), (dir / "kcnet.db").string());
}

absl::Status RebuildReportsCommand(const Args& args) {
  const std::string data_dir = args.GetOr("data_dir", "");
  if (data_dir.empty()) return UsageError("--data_dir is required");
  absl::StatusOr<std::unique_ptr<reports::ReportsStore>> store = OpenReports(args, data_dir);
  if (!store.ok()) return store.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<uint64_t> op = (*store)->Rebuild();
  if (!op.ok()) return op.status();
  std::printf("rebuilt the report summaries up to op %llu in %.3f s\n",
              static_cast<unsigned long long>(*op), absl::ToDoubleSeconds(absl::Now() - start));
  return absl::OkStatus();
}

// What the budget export reads besides the summaries: the plans and the record store, where
// kcnet-server keeps them for --store (PostgreSQL: the shared database; else --data_dir).
absl::Status OpenBudgetSources(const Args& args, const std::string& data_dir,
                               std::unique_ptr<PlanStore>* plans,
                               std::unique_ptr<sync::ServerStore>* records) {
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(args.GetOr("store", ""), data_dir);
  if (!spec.ok()) return UsageError(absl::StrCat("--", spec.status().message()));
  if (spec->kind == StoreSpec::Kind::kPostgres) {
    absl::StatusOr<std::unique_ptr<pgstore::PgServerStore>> pg =
        pgstore::PgServerStore::Open(spec->location, &kcnet::model::KcnetSchema());
    if (!pg.ok()) {
      return absl::Status(pg.status().code(),
                          absl::StrCat("store: postgres: ", pg.status().message()));
    }
    *records = *std::move(pg);
    absl::StatusOr<std::unique_ptr<PlanDb>> plan_db = pgstore::OpenPgPlanDb(spec->location);
    if (!plan_db.ok()) {
      return absl::Status(plan_db.status().code(),
                          absl::StrCat("store: postgres: ", plan_db.status().message()));
    }
    absl::StatusOr<std::unique_ptr<PlanStore>> plan_store = PlanStore::Open(*std::move(plan_db));
    if (!plan_store.ok()) return plan_store.status();
    *plans = *std::move(plan_store);
    return absl::OkStatus();
  }
  const std::filesystem::path dir(data_dir);
  absl::StatusOr<std::unique_ptr<sync::ServerStore>> opened =
      sync::ServerStore::Open((dir / "kcnet.db").string(), &kcnet::model::KcnetSchema());
  if (!opened.ok()) return opened.status();
  *records = *std::move(opened);
  absl::StatusOr<std::unique_ptr<PlanStore>> plan_store =
      PlanStore::Open((dir / "plans.db").string());
  if (!plan_store.ok()) return plan_store.status();
  *plans = *std::move(plan_store);
  return absl::OkStatus();
}

absl::Status ExportCommand(const Args& args) {
  const std::string data_dir = args.GetOr("data_dir", "");
  if (data_dir.empty()) return UsageError("--data_dir is required");
  if (args.words().size() != 2) return UsageError("export REPORT --format=csv|xlsx");
  const std::string format_text = args.GetOr("format", "");
  v1::ExportFormat format = v1::EXPORT_FORMAT_UNSPECIFIED;
  if (format_text == "csv") format = v1::EXPORT_FORMAT_CSV;
  if (format_text == "xlsx") format = v1::EXPORT_FORMAT_XLSX;
  if (format == v1::EXPORT_FORMAT_UNSPECIFIED) {
    return UsageError(absl::StrCat("--format: '", format_text, "' is not csv or xlsx"));
  }
  absl::StatusOr<std::unique_ptr<Directory>> directory = OpenDirectory(args);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::unique_ptr<reports::ReportsStore>> store = OpenReports(args, data_dir);
  if (!store.ok()) return store.status();
  absl::StatusOr<uint64_t> op = (*store)->CatchUp();  // counts everything committed
  if (!op.ok()) return op.status();
  // The budget reads the plans and the record store (BudgetFor confirms committed draws in
  // the plans, as the server does at every budget call): on PostgreSQL both are the
  // database's (schema kcnet_plans, kcnet_records), else DATA_DIR/plans.db and kcnet.db.
  std::unique_ptr<PlanStore> plans;
  std::unique_ptr<sync::ServerStore> records;
  if (args.words()[1] == "budget") {
    absl::Status opened = OpenBudgetSources(args, data_dir, &plans, &records);
    if (!opened.ok()) return opened;
  }
  reports::Reporter reporter(directory->get(), store->get(), sync::SystemClock(), plans.get(),
                             records.get());
  absl::StatusOr<std::vector<int64_t>> roots = reporter.AllRoots();
  if (!roots.ok()) return roots.status();
  v1::ExportRequest request;
  request.set_report(args.words()[1]);
  request.set_format(format);
  const std::string year = args.GetOr("year", "");
  if (!year.empty()) {
    int32_t y = 0;
    if (!absl::SimpleAtoi(year, &y)) {
      return UsageError(absl::StrCat("--year: '", year, "' is not a year"));
    }
    request.set_year(y);
  }
  v1::ReportFilter& filter = *request.mutable_filter();
  filter.set_from_date(args.GetOr("from", ""));
  filter.set_to_date(args.GetOr("to", ""));
  const std::string unit = args.GetOr("org_unit", "");
  if (!unit.empty()) {
    absl::StatusOr<v1::OrgUnit> found = (*directory)->FindByCode(unit);
    if (!found.ok()) {
      return absl::Status(found.status().code(),
                          absl::StrCat("--org_unit: no org unit with code '", unit, "'"));
    }
    filter.set_org_unit_id(found->id());
  }
  std::string file_name;
  absl::StatusOr<std::string> bytes = reporter.Export(*roots, request, &file_name);
  if (!bytes.ok()) return bytes.status();
  const std::string out = args.GetOr("out", "");
  if (out.empty()) {
    std::fwrite(bytes->data(), 1, bytes->size(), stdout);
    return absl::OkStatus();
  }
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
  file.close();
  if (!file) return absl::PermissionDeniedError(absl::StrCat("--out: cannot write ", out));
  std::fprintf(stderr, "wrote %s (%zu bytes, up to op %llu)\n", out.c_str(), bytes->size(),
               static_cast<unsigned long long>(*op));
  return absl::OkStatus();
}

// The attachment stores of the data dir (server/attachments), opened as the server does,
// and the references of the live attachment records. With --store=postgres:CONNINFO: the
// stores every instance shares in PostgreSQL, and the references of the local mirror of the
// records (DATA_DIR/pg_mirror.db), first brought up to every op committed there.
struct BlobStores {
  std::unique_ptr<AttachmentDb> db;
  std::unique_ptr<BlobStore> blobs;
  std::unique_ptr<UploadStaging> staging;  // null: the temp files of uploads_dir
  std::string uploads_dir;
  std::unique_ptr<RecordReferences> references;
  FileBlobStore* files = nullptr;  // `blobs` when on files
};

absl::StatusOr<BlobStores> OpenBlobStores(const Args& args) {
  const std::string data_dir = args.GetOr("data_dir", "");
  if (data_dir.empty()) return UsageError("--data_dir is required");
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(args.GetOr("store", ""), data_dir);
  if (!spec.ok()) return UsageError(absl::StrCat("--", spec.status().message()));
  const bool postgres = spec->kind == StoreSpec::Kind::kPostgres;
  const std::filesystem::path dir(data_dir);
  if (postgres) {
    std::error_code error;
    std::filesystem::create_directories(dir, error);
    absl::StatusOr<std::string> mirror_path = CaughtUpMirror(spec->location, dir);
    if (!mirror_path.ok()) return mirror_path.status();
    BlobStores out;
    absl::StatusOr<std::unique_ptr<AttachmentDb>> db = pgstore::OpenPgAttachmentDb(spec->location);
    if (!db.ok()) return db.status();
    out.db = *std::move(db);
    absl::StatusOr<pgstore::PgBlobStorage> bytes = pgstore::OpenPgBlobStorage(spec->location);
    if (!bytes.ok()) return bytes.status();
    out.blobs = std::move(bytes->blobs);
    out.staging = std::move(bytes->staging);
    absl::StatusOr<std::unique_ptr<RecordReferences>> refs = RecordReferences::Open(*mirror_path);
    if (!refs.ok()) return refs.status();
    out.references = *std::move(refs);
    return out;
  }
  if (!std::filesystem::exists(dir / "kcnet.db")) {
    return absl::NotFoundError(absl::StrCat("--data_dir ", data_dir, ": no kcnet.db"));
  }
  BlobStores out;
  absl::StatusOr<std::unique_ptr<AttachmentDb>> db =
      AttachmentDb::Open((dir / "attachments.db").string());
  if (!db.ok()) return db.status();
  out.db = *std::move(db);
  absl::StatusOr<std::unique_ptr<FileBlobStore>> blobs =
      FileBlobStore::Open((dir / "blobs").string());
  if (!blobs.ok()) return blobs.status();
  out.files = blobs->get();
  out.blobs = *std::move(blobs);
  out.uploads_dir = (dir / "uploads").string();
  absl::StatusOr<std::unique_ptr<RecordReferences>> refs =
      RecordReferences::Open((dir / "kcnet.db").string());
  if (!refs.ok()) return refs.status();
  out.references = *std::move(refs);
  return out;
}

absl::Status GcBlobsCommand(const Args& args) {
  absl::Duration grace = absl::Hours(24);
  if (args.Has("grace") && !absl::ParseDuration(args.GetOr("grace", ""), &grace)) {
    return UsageError("--grace: not a duration (e.g. 24h, 90m, 0s)");
  }
  if (grace < absl::ZeroDuration()) return UsageError("--grace: must not be negative");
  absl::StatusOr<BlobStores> stores = OpenBlobStores(args);
  if (!stores.ok()) return stores.status();
  GcOptions gc;
  gc.now_ms = absl::ToUnixMillis(absl::Now());
  gc.grace = grace;
  gc.staging = stores->staging.get();
  gc.uploads_dir = stores->uploads_dir;
  absl::StatusOr<GcReport> report =
      CollectGarbage(*stores->db, *stores->blobs, *stores->references, gc);
  if (!report.ok()) return report.status();
  std::printf(
      "removed %lld blobs (%lld bytes), %lld expired uploads, %lld temp files; %lld "
      "unreferenced blobs within their grace\n",
      static_cast<long long>(report->blobs_removed), static_cast<long long>(report->bytes_removed),
      static_cast<long long>(report->sessions_expired),
      static_cast<long long>(report->temp_files_removed),
      static_cast<long long>(report->blobs_marked));
  return absl::OkStatus();
}

absl::Status VerifyBlobsCommand(const Args& args) {
  absl::StatusOr<BlobStores> stores = OpenBlobStores(args);
  if (!stores.ok()) return stores.status();
  absl::StatusOr<VerifyReport> report = VerifyBlobs(*stores->blobs, stores->references.get());
  if (!report.ok()) return report.status();
  for (const std::string& sha : report->damaged) {
    // On files, where the damaged bytes are; in PostgreSQL, the blob's name.
    std::printf("damaged %s\n",
                stores->files != nullptr ? stores->files->PathOf(sha).c_str() : sha.c_str());
  }
  // Not an error by itself: a device may not have uploaded them yet. After a restore the
  // devices that still hold them upload them again (docs/RELIABILITY.md).
  for (const std::string& sha : report->missing) std::printf("missing %s\n", sha.c_str());
  std::printf("verified %lld blobs (%lld bytes): %zu damaged, %zu missing\n",
              static_cast<long long>(report->blobs), static_cast<long long>(report->bytes),
              report->damaged.size(), report->missing.size());
  if (!report->damaged.empty()) {
    return absl::DataLossError(
        absl::StrCat(report->damaged.size(),
                     " blob(s) hỏng / damaged: their bytes no longer match their "
                     "SHA-256 (restore them from a backup)"));
  }
  return absl::OkStatus();
}

absl::Status NewIncarnationCommand(const Args& args) {
  const std::string data_dir = args.GetOr("data_dir", "");
  const bool restored = args.Has("restored");
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(args.GetOr("store", ""), data_dir);
  if (!spec.ok()) return spec.status();
  if (spec->location.empty()) return UsageError("--data_dir or --store is required");
  absl::Status status =
      spec->kind == StoreSpec::Kind::kPostgres
          ? pgstore::PgServerStore::BeginIncarnation(spec->location, restored)
          : sync::ServerStore::BeginIncarnation(spec->location + "/kcnet.db", restored);
  if (!status.ok()) return status;
  std::printf("the record store is a new incarnation%s: devices recover at their next sync\n",
              restored ? " (restored)" : "");
  return absl::OkStatus();
}

struct Command {
  const char* name;
  std::set<std::string> flags;  // besides --data_dir (--store: the directory commands)
  absl::Status (*run)(const Args& args);
};

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"import-org-units", {"dry_run", "store"}, ImportOrgUnitsCommand},
      {"create-user",
       {"username", "display_name", "role", "org_units", "password_file", "store"},
       CreateUserCommand},
      {"assign-user", {"username", "role", "org_units", "store"}, AssignUserCommand},
      {"reset-password", {"username", "password_file", "store"}, ResetPasswordCommand},
      {"deactivate-user", {"username", "store"}, DeactivateUserCommand},
      {"list-users", {"store"}, ListUsersCommand},
      {"list-org-units", {"parent", "store"}, ListOrgUnitsCommand},
      {"list-audit", {"after", "store"}, ListAuditCommand},
      {"seed-demo", {"store"}, SeedDemoCommand},
      {"backup", {"to", "store"}, BackupCommand},
      {"restore", {"from", "store"}, RestoreCommand},
      {"new-incarnation", {"restored", "store"}, NewIncarnationCommand},
      {"rebuild-reports", {"store"}, RebuildReportsCommand},
      {"export", {"format", "out", "org_unit", "from", "to", "year", "store"}, ExportCommand},
      {"gc-blobs", {"grace", "store"}, GcBlobsCommand},
      {"verify-blobs", {"store"}, VerifyBlobsCommand},
  };
  return *commands;
}

// Runs the command line; `*label` is set to the command's name once it is known.
absl::Status Run(const Args& args, std::string* label) {
  if (args.words().empty()) {
    if (args.help()) {
      std::fputs(kUsage, stdout);
      return absl::OkStatus();
    }
    return UsageError("no command given (see --help)");
  }
  const std::string& name = args.words()[0];
  for (const Command& command : Commands()) {
    if (name != command.name) continue;
    *label = name;
    if (args.help()) {
      std::fputs(kUsage, stdout);
      return absl::OkStatus();
    }
    // A password in an argument would show in `ps`.
    if (args.Has("password")) return tools::PasswordArgumentError();
    absl::Status flags = args.CheckFlags(command.flags, {"data_dir"});
    if (!flags.ok()) return flags;
    if (name != "import-org-units" && name != "export" && args.words().size() > 1) {
      return UsageError(
          absl::StrCat(name, " takes no arguments besides flags, got '", args.words()[1], "'"));
    }
    return command.run(args);
  }
  return UsageError(absl::StrCat("unknown command '", name, "' (see --help)"));
}

}  // namespace
}  // namespace kcnet::server

int main(int argc, char** argv) {
  const std::vector<std::string> argument_list(argv + 1, argv + argc);
  std::string label;
  absl::Status status;
  absl::StatusOr<kcnet::tools::Args> args =
      kcnet::tools::Args::Parse(argument_list, /*boolean_flags=*/{"dry_run", "restored"});
  status = args.ok() ? kcnet::server::Run(*args, &label) : args.status();
  if (status.ok()) return 0;
  // One line, whatever the message holds.
  const std::string message = absl::StrReplaceAll(status.message(), {{"\r", " "}, {"\n", " "}});
  std::fprintf(stderr, "kcnet-admin: %s%s%s\n", label.c_str(), label.empty() ? "" : ": ",
               message.c_str());
  return kcnet::tools::IsUsageError(status) ? 2 : 1;
}
