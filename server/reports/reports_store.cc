#include "server/reports/reports_store.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "sqlite3.h"
#include "sync/text_fold.h"

namespace kcnet::server::reports {
namespace {

using sync::Db;
using sync::Statement;

constexpr int64_t kMsPerDay = 24 * 3600 * 1000;
constexpr int64_t kVietnamOffsetMs = 7 * 3600 * 1000;
// The summaries' layout; a store of another version is rebuilt on open.
// 2: visits' indicators (outcomes); 3: monthly summaries, distances, requests' since day;
// 4: the facility search index (r_fsearch); 5: no daily counters (s_visit_day): periods
// that are not whole months read r_visit's covering index, the last visit of a
// collaborator the monthly counters' index by collaborator (s_visit_month_collaborator);
// 6: r_fsearch_key_name (the search's order); 7: live facilities per commune
// (s_commune_facilities), the duplicate groups (s_duplicate), and no visits per facility x
// month (s_facility_month: about a row per visit, one more B-tree written per visit;
// r_visit_facility, now with the commune, answers what it did).
constexpr int64_t kReportsVersion = 7;
// The most ops one catch-up transaction counts (a backlog goes in slices).
constexpr int64_t kMaxOpsPerTransaction = 200000;

constexpr char kTables[] =
    "CREATE TABLE IF NOT EXISTS r_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    // Live facilities: commune, folded name (duplicates), registered point, created day.
    "CREATE TABLE IF NOT EXISTS r_facility(id TEXT PRIMARY KEY, commune INTEGER NOT NULL,"
    " folded TEXT NOT NULL, lat REAL, lon REAL, day INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS r_facility_commune ON r_facility(commune, day);"
    "CREATE INDEX IF NOT EXISTS r_facility_folded ON r_facility(commune, folded);"
    // The facility search (ListFacilities' query): one row per live facility with its
    // folded name's words (for the order: names that begin with the query first), and
    // its folded words (name, owner, address, products) in an FTS5 index under the same
    // rowid. The ascii tokenizer splits exactly as sync::SearchWords (runs of a-z, 0-9
    // and non-ASCII); the prefix indexes make search-as-you-type prefixes cheap.
    "CREATE TABLE IF NOT EXISTS r_fsearch_key(rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    " commune INTEGER NOT NULL, name TEXT NOT NULL);"
    // The answer's order (SearchFacilities walks it when the matches are many).
    "CREATE INDEX IF NOT EXISTS r_fsearch_key_name ON r_fsearch_key(name, id, commune);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS r_fsearch USING fts5(words, tokenize = 'ascii',"
    " prefix = '1 2 3', detail = 'none');"
    // Live visits; lat/lon NULL when the visit has no GPS; the facility's indicators seen
    // at the visit (0: not recorded).
    "CREATE TABLE IF NOT EXISTS r_visit(id TEXT PRIMARY KEY, commune INTEGER NOT NULL,"
    " facility TEXT NOT NULL, collaborator INTEGER NOT NULL, day INTEGER NOT NULL,"
    " month INTEGER NOT NULL, lat REAL, lon REAL, workers INTEGER NOT NULL,"
    " product_lines INTEGER NOT NULL, output_vnd INTEGER NOT NULL,"
    // The distance in km to the facility's registered point; NULL when the visit has no
    // GPS, or the facility is unknown or has no point. Recomputed when the point changes.
    " dist_km REAL) WITHOUT ROWID;"
    // Covers the visits' counters (a rebuild reads them in this order, no sort).
    "CREATE INDEX IF NOT EXISTS r_visit_commune ON r_visit(commune, day, facility, month,"
    " collaborator, lat);"
    // A facility's visits by day (and commune: whether a facility had a visit in a commune's
    // month or year is counted over this index; no per-facility counter table is kept).
    "CREATE INDEX IF NOT EXISTS r_visit_facility ON r_visit(facility, day, commune);"
    // The visits farther than the default limit (5 km): the quality report reads only these.
    "CREATE INDEX IF NOT EXISTS r_visit_far ON r_visit(commune, day, dist_km, facility) "
    "WHERE dist_km > 5.0;"
    // Live support requests.
    "CREATE TABLE IF NOT EXISTS r_request(id TEXT PRIMARY KEY, commune INTEGER NOT NULL,"
    " facility TEXT NOT NULL, author INTEGER NOT NULL, status INTEGER NOT NULL,"
    " created_day INTEGER NOT NULL, updated_day INTEGER NOT NULL,"
    // The month of created_day (YYYYMM) and the day the request entered its status (its
    // last event into that status, else updated_day), kept by the follower.
    " created_month INTEGER NOT NULL, since_day INTEGER NOT NULL) WITHOUT ROWID;"
    // Covers the pipeline's and the activity's statements (no table lookups).
    "CREATE INDEX IF NOT EXISTS r_request_commune ON r_request(commune, created_day, status,"
    " since_day, created_month, author);"
    "CREATE INDEX IF NOT EXISTS r_request_author ON r_request(author, created_day, commune);"
    // Request events (transitions) with their day.
    "CREATE TABLE IF NOT EXISTS r_event(id TEXT PRIMARY KEY, request TEXT NOT NULL,"
    " commune INTEGER NOT NULL, action INTEGER NOT NULL, to_status INTEGER NOT NULL,"
    " day INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS r_event_request ON r_event(request, to_status, day);"
    "CREATE INDEX IF NOT EXISTS r_event_action ON r_event(commune, action, day);"
    // Counters: visits and visits without GPS per commune x month (YYYYMM) x
    // collaborator: the whole months of a period sum these. (Other days read r_visit's
    // covering index r_visit_commune: a daily counter had about one row per visit and cost
    // every visit two more B-tree writes.)
    "CREATE TABLE IF NOT EXISTS s_visit_month(commune INTEGER NOT NULL, month INTEGER NOT NULL,"
    " collaborator INTEGER NOT NULL, visits INTEGER NOT NULL, no_gps INTEGER NOT NULL,"
    " PRIMARY KEY(commune, month, collaborator)) WITHOUT ROWID;"
    // A collaborator's months with visits, newest first: its last visit (activity) is in
    // the newest month's communes (r_visit_commune then gives the day). A row is added
    // only for a collaborator's first visit of a commune's month, not for every visit.
    "CREATE INDEX IF NOT EXISTS s_visit_month_collaborator ON s_visit_month(collaborator, month);"
    // Per commune x month: visits, visits without GPS, distinct facilities visited; and
    // distinct facilities visited per commune x year (distinct counts do not add across
    // months, so each is kept).
    "CREATE TABLE IF NOT EXISTS s_commune_month(commune INTEGER NOT NULL,"
    " month INTEGER NOT NULL, visits INTEGER NOT NULL, no_gps INTEGER NOT NULL,"
    " facilities INTEGER NOT NULL, PRIMARY KEY(commune, month)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS s_coverage_year(commune INTEGER NOT NULL,"
    " year INTEGER NOT NULL, facilities INTEGER NOT NULL, PRIMARY KEY(commune, year))"
    " WITHOUT ROWID;"
    // Requests per commune x created month x author.
    "CREATE TABLE IF NOT EXISTS s_request_month(commune INTEGER NOT NULL, month INTEGER NOT NULL,"
    " author INTEGER NOT NULL, requests INTEGER NOT NULL,"
    " PRIMARY KEY(commune, month, author)) WITHOUT ROWID;"
    // Live facilities per commune: coverage's registered facilities are these less the
    // commune's facilities created after the period (r_facility_commune), not a count of
    // every facility.
    "CREATE TABLE IF NOT EXISTS s_commune_facilities(commune INTEGER PRIMARY KEY,"
    " facilities INTEGER NOT NULL) WITHOUT ROWID;"
    // The duplicate groups (quality): each (commune, folded name) with two or more live
    // facilities, and how many; the group's facilities are r_facility_folded's rows.
    "CREATE TABLE IF NOT EXISTS s_duplicate(commune INTEGER NOT NULL, folded TEXT NOT NULL,"
    " facilities INTEGER NOT NULL, PRIMARY KEY(commune, folded)) WITHOUT ROWID;"
    // Each device's last accepted Hello (not from the records: a rebuild keeps it).
    "CREATE TABLE IF NOT EXISTS r_device(device_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL,"
    " last_sync_ms INTEGER NOT NULL, pending_writes INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS r_device_user ON r_device(user_id);";

constexpr const char* kSummaryTables[] = {
    "r_facility",           "r_visit",         "r_request",       "r_event",
    "s_visit_month",        "s_commune_month", "s_coverage_year", "s_request_month",
    "s_commune_facilities", "s_duplicate",     "r_fsearch_key",   "r_fsearch"};
// Tables of older layouts, dropped with the others when the version changes.
constexpr const char* kObsoleteTables[] = {"s_visit_day", "s_facility_month"};

int64_t MonthOf(int64_t day) {
  const absl::CivilDay d = absl::CivilDay(1970, 1, 1) + day;
  return d.year() * 100 + d.month();
}

std::string MonthKeyText(int64_t month) {
  return absl::StrFormat("%04d-%02d", month / 100, month % 100);
}

bool HasGps(const Statement& row, int lat, int lon) {
  if (row.IsNull(lat) || row.IsNull(lon)) return false;
  return !(row.ColumnDouble(lat) == 0 && row.ColumnDouble(lon) == 0);
}

void BindOptionalDouble(Statement* s, int index, bool present, double value) {
  if (present) {
    s->BindDouble(index, value);
  } else {
    s->BindNull(index);
  }
}

std::vector<kcnet::v1::MonthValue> Series(const std::map<int64_t, int64_t>& by_month) {
  std::vector<kcnet::v1::MonthValue> out;
  for (const auto& [month, value] : by_month) {
    kcnet::v1::MonthValue m;
    m.set_month(MonthKeyText(month));
    m.set_value(value);
    out.push_back(std::move(m));
  }
  return out;
}

// The scope's communes as a JSON array, for `json_each(?)` in one statement over them all.
std::string CommunesJson(const ReportScope& scope) {
  return absl::StrCat("[", absl::StrJoin(scope.communes, ","), "]");
}

// The period's months (YYYYMM) when it is made of whole calendar months: from the first
// day of a month to the last day of a month. The monthly summaries answer those periods.
struct MonthRange {
  bool whole = false;  // false: not whole months (or not asked)
  int64_t from = 0, to = 0;
};
MonthRange WholeMonths(const ReportScope& scope) {
  const absl::CivilDay from = absl::CivilDay(1970, 1, 1) + scope.from_day;
  const absl::CivilDay to = absl::CivilDay(1970, 1, 1) + scope.to_day;
  if (from.day() != 1 || (to + 1).day() != 1 || scope.to_day < scope.from_day) return {};
  return MonthRange{true, MonthOf(scope.from_day), MonthOf(scope.to_day)};
}

// Runs `fn` once per row of `s`.
absl::Status ForEachRow(Statement* s, const std::function<absl::Status(Statement&)>& fn) {
  while (true) {
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) {
      s->Reset();
      return row.status();
    }
    if (!*row) {
      s->Reset();  // ready to be bound again
      return absl::OkStatus();
    }
    absl::Status status = fn(*s);
    if (!status.ok()) {
      s->Reset();
      return status;
    }
  }
}

// kc_distance_km(lat1, lon1, lat2, lon2): DistanceKm in SQL (NULL when any is NULL).
void SqlDistanceKm(sqlite3_context* context, int argc, sqlite3_value** argv) {
  for (int i = 0; i < argc; ++i) {
    if (sqlite3_value_type(argv[i]) == SQLITE_NULL) {
      sqlite3_result_null(context);
      return;
    }
  }
  sqlite3_result_double(context,
                        DistanceKm(sqlite3_value_double(argv[0]), sqlite3_value_double(argv[1]),
                                   sqlite3_value_double(argv[2]), sqlite3_value_double(argv[3])));
}

// kc_vn_day(ms): VietnamDay; kc_month(day): MonthOf (NULL reads as 0, as ColumnInt).
void SqlVietnamDay(sqlite3_context* context, int, sqlite3_value** argv) {
  sqlite3_result_int64(context, VietnamDay(sqlite3_value_int64(argv[0])));
}
void SqlMonth(sqlite3_context* context, int, sqlite3_value** argv) {
  sqlite3_result_int64(context, MonthOf(sqlite3_value_int64(argv[0])));
}
// kc_fold(text): sync::FoldForSearch; kc_words(text): sync::SearchWords joined by spaces
// (NULL reads as '', as ColumnText).
absl::string_view SqlText(sqlite3_value* value) {
  const unsigned char* text = sqlite3_value_text(value);
  if (text == nullptr) return {};
  return absl::string_view(reinterpret_cast<const char*>(text),
                           static_cast<size_t>(sqlite3_value_bytes(value)));
}
void SqlFold(sqlite3_context* context, int, sqlite3_value** argv) {
  const std::string folded = sync::FoldForSearch(SqlText(argv[0]));
  sqlite3_result_text(context, folded.data(), static_cast<int>(folded.size()), SQLITE_TRANSIENT);
}
void SqlWords(sqlite3_context* context, int, sqlite3_value** argv) {
  const std::string words = absl::StrJoin(sync::SearchWords(SqlText(argv[0])), " ");
  sqlite3_result_text(context, words.data(), static_cast<int>(words.size()), SQLITE_TRANSIENT);
}

// The registered points of the live facilities that have one (r_facility's lat, lon), by
// id: for kc_facility_km during a rebuild.
using FacilityPoints = absl::flat_hash_map<std::string, std::pair<double, double>>;

// kc_facility_km(facility, lat, lon): the distance from (lat, lon) to the facility's point,
// as `(SELECT kc_distance_km(lat, lon, f.lat, f.lon) FROM r_facility f WHERE f.id =
// facility)` gives it (NULL without a point on either side or without the facility).
void SqlFacilityKm(sqlite3_context* context, int, sqlite3_value** argv) {
  const auto* points = static_cast<const FacilityPoints*>(sqlite3_user_data(context));
  if (sqlite3_value_type(argv[1]) == SQLITE_NULL || sqlite3_value_type(argv[2]) == SQLITE_NULL) {
    sqlite3_result_null(context);
    return;
  }
  const auto it = points->find(SqlText(argv[0]));
  if (it == points->end()) {
    sqlite3_result_null(context);
    return;
  }
  sqlite3_result_double(context,
                        DistanceKm(sqlite3_value_double(argv[1]), sqlite3_value_double(argv[2]),
                                   it->second.first, it->second.second));
}

}  // namespace

int64_t VietnamDay(int64_t unix_ms) {
  const int64_t local = unix_ms + kVietnamOffsetMs;
  return local >= 0 ? local / kMsPerDay : -((-local + kMsPerDay - 1) / kMsPerDay);
}

std::string DayText(int64_t day) {
  const absl::CivilDay d = absl::CivilDay(1970, 1, 1) + day;
  return absl::StrFormat("%04d-%02d-%02d", d.year(), d.month(), d.day());
}

std::string MonthText(int64_t day) { return MonthKeyText(MonthOf(day)); }

absl::StatusOr<int64_t> ParseDay(const std::string& text, const std::string& field) {
  absl::CivilDay d;
  std::vector<std::string> parts = absl::StrSplit(text, '-');
  int y = 0, m = 0, dd = 0;
  if (parts.size() != 3 || parts[0].size() != 4 || parts[1].size() != 2 || parts[2].size() != 2 ||
      !absl::SimpleAtoi(parts[0], &y) || !absl::SimpleAtoi(parts[1], &m) ||
      !absl::SimpleAtoi(parts[2], &dd)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", text.substr(0, 32),
                                                   "' is not a date YYYY-MM-DD / không phải ngày"));
  }
  d = absl::CivilDay(y, m, dd);
  if (d.year() != y || d.month() != m || d.day() != dd || y < 2000 || y > 2100) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": '", text, "' is not a day between 2000 and 2100 / ngày không hợp lệ"));
  }
  return static_cast<int64_t>(d - absl::CivilDay(1970, 1, 1));
}

double DistanceKm(double lat1, double lon1, double lat2, double lon2) {
  constexpr double kEarthKm = 6371.0088;
  constexpr double kRad = M_PI / 180.0;
  const double dlat = (lat2 - lat1) * kRad;
  const double dlon = (lon2 - lon1) * kRad;
  const double a =
      std::sin(dlat / 2) * std::sin(dlat / 2) +
      std::cos(lat1 * kRad) * std::cos(lat2 * kRad) * std::sin(dlon / 2) * std::sin(dlon / 2);
  return 2 * kEarthKm * std::asin(std::min(1.0, std::sqrt(a)));
}

// The pending counters of one catch-up transaction (keys as the tables' primary keys).
struct ReportsStore::Pending {
  struct Pair {
    int64_t visits = 0, no_gps = 0;
  };
  // (commune, month, collaborator)
  std::map<std::array<int64_t, 3>, Pair> visit_month;
  // (commune, facility, month): visits
  std::map<std::tuple<int64_t, std::string, int64_t>, int64_t> facility_month;
  // (commune, month, author): requests
  std::map<std::array<int64_t, 3>, int64_t> request_month;
  // Requests whose since day may have changed (their row, or one of their events).
  std::set<std::string> since_requests;
  // commune: live facilities that came (+) or went (-).
  std::map<int64_t, int64_t> commune_facilities;
  // (commune, folded name) of every facility that came, went or changed: its duplicate
  // group is counted again.
  std::set<std::pair<int64_t, std::string>> folded_names;
  bool empty() const {
    return visit_month.empty() && facility_month.empty() && request_month.empty() &&
           since_requests.empty() && commune_facilities.empty() && folded_names.empty();
  }
};

ReportsStore::~ReportsStore() = default;

// ---------------------------------------------------------------------------------------
// Following the store
// ---------------------------------------------------------------------------------------

namespace {

// Opens a connection on the summaries at `path` with the SQL functions registered and
// the record store attached as `st`.
absl::StatusOr<std::unique_ptr<Db>> OpenWriter(const std::string& path,
                                               const std::string& store_path) {
  sync::DbOptions options;
  options.durable = false;  // the summaries can always be rebuilt from the store
  absl::StatusOr<std::unique_ptr<Db>> writer = Db::Open(path, options);
  if (!writer.ok()) return writer.status();
  struct SqlFunction {
    const char* name;
    int args;
    void (*fn)(sqlite3_context*, int, sqlite3_value**);
  };
  for (const SqlFunction& f :
       {SqlFunction{"kc_distance_km", 4, &SqlDistanceKm},
        SqlFunction{"kc_vn_day", 1, &SqlVietnamDay}, SqlFunction{"kc_month", 1, &SqlMonth},
        SqlFunction{"kc_fold", 1, &SqlFold}, SqlFunction{"kc_words", 1, &SqlWords}}) {
    if (sqlite3_create_function_v2((*writer)->raw(), f.name, f.args,
                                   SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr, f.fn, nullptr,
                                   nullptr, nullptr) != SQLITE_OK) {
      return absl::InternalError(absl::StrCat("reports: cannot register ", f.name));
    }
  }
  absl::Status status = (*writer)->Exec(
      absl::StrCat("ATTACH DATABASE '", absl::StrReplaceAll(store_path, {{"'", "''"}}), "' AS st"));
  if (!status.ok()) return status;
  // Large caches: a catch-up touches index pages all over both files, and the summaries
  // of a national data set are a few hundred MB.
  status = (*writer)->Exec("PRAGMA main.cache_size = -262144; PRAGMA st.cache_size = -131072");
  if (!status.ok()) return status;
  return writer;
}

// The file a rebuild builds the new summaries in, renamed over `reports_path` once whole.
std::string RebuildPath(const std::string& reports_path) {
  return absl::StrCat(reports_path, ".rebuild");
}

void RemoveRebuildFile(const std::string& reports_path) {
  for (const char* suffix : {"", "-journal", "-wal", "-shm"}) {
    std::error_code ignored;
    std::filesystem::remove(absl::StrCat(RebuildPath(reports_path), suffix), ignored);
  }
}

// Sets the journal mode of `db`'s main file; returns the mode it is in after.
absl::StatusOr<std::string> SetJournalMode(Db* db, absl::string_view mode) {
  absl::StatusOr<Statement*> s = db->Prepare(absl::StrCat("PRAGMA main.journal_mode = ", mode));
  if (!s.ok()) return s.status();
  absl::StatusOr<bool> row = (*s)->Step();
  std::string result = row.ok() && *row ? std::string((*s)->ColumnText(0)) : std::string();
  (*s)->Reset();
  if (!row.ok()) return row.status();
  return result;
}

// fsync() of a file or a directory, so that what was written (or renamed) survives a
// power loss.
absl::Status SyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(error)));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Db>> OpenReader(const std::string& path) {
  sync::DbOptions options;
  options.durable = false;
  absl::StatusOr<std::unique_ptr<Db>> reader = Db::Open(path, options);
  if (!reader.ok()) return reader.status();
  absl::Status status =
      (*reader)->Exec("PRAGMA cache_size = -262144; PRAGMA mmap_size = 1073741824");
  if (!status.ok()) return status;
  return reader;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReportsStore>> ReportsStore::Open(const std::string& reports_path,
                                                                 const std::string& store_path) {
  std::unique_ptr<ReportsStore> store(new ReportsStore());
  store->reports_path_ = reports_path;
  store->store_path_ = store_path;
  // A rebuild killed before it replaced the summaries leaves its new file: never used.
  RemoveRebuildFile(reports_path);
  absl::StatusOr<std::unique_ptr<Db>> writer = OpenWriter(reports_path, store_path);
  if (!writer.ok()) return writer.status();
  absl::Status status = store->CreateTables(writer->get());
  if (!status.ok()) return status;
  // The store must be a record store (not a new empty file).
  absl::StatusOr<int64_t> tables = (*writer)->QueryInt(
      "SELECT count(*) FROM st.sqlite_schema WHERE type='table' AND name='_buckets'");
  if (!tables.ok()) return tables.status();
  if (*tables == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(store_path, ": not a kcnet record store (no _buckets table)"));
  }
  // Summaries ahead of the store counted other records (a store restored or replaced):
  // they start again from op 0.
  // So do summaries whose rebuild did not finish (their counters are not filled).
  absl::StatusOr<int64_t> ahead = (*writer)->QueryInt(
      "SELECT (SELECT value FROM r_meta WHERE key='cursor') > "
      "(SELECT coalesce(max(last_op), 0) FROM st._buckets) OR "
      "EXISTS (SELECT 1 FROM r_meta WHERE key = 'rebuilding')");
  if (!ahead.ok()) return ahead.status();
  if (*ahead != 0) {
    std::string reset = "BEGIN IMMEDIATE;";
    for (const char* t : kSummaryTables) absl::StrAppend(&reset, "DELETE FROM main.", t, ";");
    absl::StrAppend(&reset,
                    "UPDATE r_meta SET value = 0 WHERE key = 'cursor'; "
                    "DELETE FROM r_meta WHERE key = 'rebuilding'; COMMIT;");
    status = (*writer)->Exec(reset);
    if (!status.ok()) return status;
  }
  absl::StatusOr<std::unique_ptr<Db>> reader = OpenReader(reports_path);
  if (!reader.ok()) return reader.status();
  {
    absl::MutexLock lock(&store->write_mu_);
    store->writer_ = *std::move(writer);
  }
  absl::MutexLock lock(&store->read_mu_);
  store->reader_ = *std::move(reader);
  return store;
}

absl::Status ReportsStore::CreateTables(Db* db) {
  absl::StatusOr<int64_t> version =
      db->QueryInt("SELECT count(*) FROM sqlite_schema WHERE name='r_meta'");
  if (!version.ok()) return version.status();
  if (*version > 0) {
    version = db->QueryInt("SELECT value FROM r_meta WHERE key='version'", 0);
    if (!version.ok()) return version.status();
    if (*version != kReportsVersion) {
      // Another layout: start again (CatchUp() recounts from op 0).
      std::string drop;
      for (const char* t : kSummaryTables) absl::StrAppend(&drop, "DROP TABLE IF EXISTS ", t, ";");
      for (const char* t : kObsoleteTables) {
        absl::StrAppend(&drop, "DROP TABLE IF EXISTS ", t, ";");
      }
      absl::StrAppend(&drop, "DROP TABLE r_meta;");
      absl::Status status = db->Exec(drop);
      if (!status.ok()) return status;
    }
  }
  absl::Status status = db->Exec(kTables);
  if (!status.ok()) return status;
  return db->Exec(absl::StrCat("INSERT OR IGNORE INTO r_meta(key, value) VALUES ('version', ",
                               kReportsVersion, "), ('cursor', 0)"));
}

absl::StatusOr<uint64_t> ReportsStore::CatchUp() {
  // A long backlog (a first start, a rebuild) goes in slices of ops, each its own
  // transaction, so that RecordDeviceSync() never waits long for the writer.
  while (true) {
    bool done = false;
    absl::StatusOr<uint64_t> cursor;
    {
      absl::MutexLock lock(&write_mu_);
      cursor = CatchUpLocked(kMaxOpsPerTransaction, &done);
    }
    if (!cursor.ok() || done) return cursor;
  }
}

absl::StatusOr<uint64_t> ReportsStore::TryCatchUp() {
  if (!write_mu_.TryLock()) return Cursor();
  bool done = false;
  absl::StatusOr<uint64_t> cursor = CatchUpLocked(kMaxOpsPerTransaction, &done);
  write_mu_.Unlock();
  return cursor;
}

absl::StatusOr<uint64_t> ReportsStore::Rebuild() {
  absl::MutexLock lock(&write_mu_);
  absl::MutexLock read_lock(&read_mu_);
  // Alone on the summaries (no server has them open): build a new file and rename it
  // over them. Leaving WAL mode needs every other connection closed, ours included, so
  // it is the test; it also takes the old file's WAL into the file.
  reader_.reset();
  absl::StatusOr<std::string> mode = SetJournalMode(writer_.get(), "DELETE");
  absl::StatusOr<uint64_t> cursor;
  if (mode.ok() && *mode == "delete") {
    cursor = RebuildIntoNewFile();
  } else {
    // Another process (a running server) reads them: rebuild in place, in one
    // transaction, which its readers never see half done.
    (void)SetJournalMode(writer_.get(), "WAL");
    cursor = RebuildInPlace();
  }
  if (writer_ == nullptr) {
    absl::StatusOr<std::unique_ptr<Db>> writer = OpenWriter(reports_path_, store_path_);
    if (!writer.ok()) return writer.status();
    writer_ = *std::move(writer);
  }
  (void)SetJournalMode(writer_.get(), "WAL");
  absl::StatusOr<std::unique_ptr<Db>> reader = OpenReader(reports_path_);
  if (!reader.ok()) return reader.status();
  reader_ = *std::move(reader);
  if (pending_ != nullptr) *pending_ = Pending();
  return cursor;
}

absl::StatusOr<uint64_t> ReportsStore::RebuildIntoNewFile() {
  // The new file is written without a journal and without syncs (nothing in it counts
  // until it is whole), then synced and renamed over the summaries: a crash or a kill
  // before the rename leaves the old summaries, after it the new ones.
  const std::string path = RebuildPath(reports_path_);
  RemoveRebuildFile(reports_path_);
  absl::StatusOr<uint64_t> cursor;
  {
    absl::StatusOr<std::unique_ptr<Db>> db = OpenWriter(path, store_path_);
    if (!db.ok()) return db.status();
    if (std::getenv("KCNET_REPORTS_TRACE") != nullptr) {
      sqlite3_trace_v2((*db)->raw(), SQLITE_TRACE_PROFILE,
                       [](unsigned, void*, void* stmt, void* ns) {
                         const double seconds =
                             static_cast<double>(*static_cast<sqlite3_int64*>(ns)) / 1e9;
                         if (seconds >= 0.05) {
                           std::fprintf(stderr, "reports rebuild: %8.3f s  %.100s\n", seconds,
                                        sqlite3_sql(static_cast<sqlite3_stmt*>(stmt)));
                         }
                         return 0;
                       },
                       nullptr);
    }
    absl::StatusOr<std::string> mode = SetJournalMode(db->get(), "OFF");
    absl::Status status = mode.ok() ? absl::OkStatus() : mode.status();
    // A big cache (the pages of the tables being filled), and SQLite's sorter (the
    // ORDER BY of the loads, CREATE INDEX) on two threads.
    if (status.ok()) {
      status = (*db)->Exec(
          "PRAGMA main.synchronous = OFF; PRAGMA main.cache_size = -65536; "
          "PRAGMA threads = 2");
    }
    if (status.ok()) status = CreateTables(db->get());
    // The devices' last syncs are not in the records: the old summaries keep them.
    if (status.ok()) {
      status = (*db)->Exec(absl::StrCat("ATTACH DATABASE '",
                                        absl::StrReplaceAll(reports_path_, {{"'", "''"}}),
                                        "' AS old; BEGIN; INSERT INTO main.r_device SELECT * "
                                        "FROM old.r_device"));
    }
    cursor = status.ok() ? FillTables(db->get()) : status;
    if (cursor.ok()) {
      status = (*db)->Exec("COMMIT; DETACH DATABASE old; DETACH DATABASE st");
      if (!status.ok()) cursor = status;
    }
  }  // closed
  absl::Status status = cursor.ok() ? SyncPath(path) : cursor.status();
  if (status.ok()) {
    // Still alone (a server started meanwhile would hold the old file open in WAL mode),
    // and no one may open it until it is replaced.
    absl::StatusOr<std::string> mode = SetJournalMode(writer_.get(), "DELETE");
    if (!mode.ok() || *mode != "delete" || !writer_->Exec("BEGIN EXCLUSIVE").ok()) {
      status = absl::FailedPreconditionError(absl::StrCat(
          reports_path_,
          ": opened by another process during the rebuild (kcnet-server?); nothing replaced: "
          "run rebuild-reports again / tệp đang được tiến trình khác mở, chưa thay thế gì"));
    }
  }
  if (status.ok()) {
    if (std::rename(path.c_str(), reports_path_.c_str()) != 0) {
      status = absl::InternalError(
          absl::StrCat("rename ", path, " to ", reports_path_, ": ", std::strerror(errno)));
    }
    writer_.reset();  // the old file closed (its transaction rolled back: nothing in it)
  }
  if (status.ok()) {
    status = SyncPath(std::filesystem::path(reports_path_).parent_path().empty()
                          ? std::string(".")
                          : std::filesystem::path(reports_path_).parent_path().string());
  }
  if (!status.ok()) {
    RemoveRebuildFile(reports_path_);
    return status;
  }
  return cursor;
}

absl::StatusOr<uint64_t> ReportsStore::RebuildInPlace() {
  // One transaction at one snapshot of the store (deferred: the store is only read, so
  // its writers never wait). A rebuild that fails or is interrupted leaves the summaries
  // as they were.
  absl::Status status = writer_->Exec("PRAGMA threads = 2; BEGIN");
  if (!status.ok()) return status;
  std::string sql;
  for (const char* t : kSummaryTables) absl::StrAppend(&sql, "DELETE FROM main.", t, ";");
  status = writer_->Exec(sql);
  absl::StatusOr<uint64_t> cursor = status.ok() ? FillTables(writer_.get()) : status;
  if (cursor.ok()) status = writer_->Exec("COMMIT");
  if (!cursor.ok() || !status.ok()) {
    (void)writer_->Exec("ROLLBACK");
    return cursor.ok() ? status : cursor.status();
  }
  return cursor;
}

namespace {

// With KCNET_REPORTS_TRACE set, a rebuild says on stderr what each phase cost: wall time,
// the CPU time of the calling thread, and of the whole process (SQLite's sorter threads
// and the counter job included).
class PhaseClock {
 public:
  PhaseClock() : on_(std::getenv("KCNET_REPORTS_TRACE") != nullptr) { Reset(); }
  void Mark(const char* phase) {
    if (!on_) return;
    const Times now = Now();
    std::fprintf(
        stderr, "reports rebuild: %-24s wall %7.3f s  thread cpu %7.3f s  process cpu %7.3f s\n",
        phase, now.wall - last_.wall, now.thread - last_.thread, now.process - last_.process);
    last_ = now;
  }
  void Reset() { last_ = Now(); }

 private:
  struct Times {
    double wall = 0, thread = 0, process = 0;
  };
  static double Seconds(const struct rusage& u) {
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  }
  static Times Now() {
    Times t;
    t.wall = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
    struct rusage u = {};
    getrusage(RUSAGE_THREAD, &u);
    t.thread = Seconds(u);
    getrusage(RUSAGE_SELF, &u);
    t.process = Seconds(u);
    return t;
  }
  bool on_;
  Times last_;
};

}  // namespace

absl::StatusOr<uint64_t> ReportsStore::FillTables(Db* db) {
  PhaseClock clock;
  // Empty tables in `db`'s open transaction: their secondary indexes dropped, the
  // per-record rows loaded in bulk statements, each index then built once (sorted), the
  // counters computed from the rows, the cursor moved.
  std::string sql;
  absl::StatusOr<Statement*> indexes = db->Prepare(
      "SELECT name FROM main.sqlite_schema WHERE type = 'index' AND sql IS NOT NULL AND "
      "(tbl_name LIKE 'r\\_%' ESCAPE '\\' OR tbl_name LIKE 's\\_%' ESCAPE '\\') AND "
      "tbl_name NOT IN ('r_meta', 'r_device')");
  if (!indexes.ok()) return indexes.status();
  absl::Status status = ForEachRow(*indexes, [&](Statement& row) {
    absl::StrAppend(&sql, "DROP INDEX main.", row.ColumnText(0), ";");
    return absl::OkStatus();
  });
  if (status.ok()) status = db->Exec(sql);
  if (!status.ok()) return status;
  if (counters_on_a_thread_) StartCounterJob();
  absl::StatusOr<uint64_t> cursor = LoadRecords(db);
  if (!cursor.ok()) {
    counter_job_.reset();  // joined
    return cursor;
  }
  clock.Mark("per-record rows");
  // The indexes again, over the loaded rows; the counters' own index after the counters.
  status = db->Exec(kTables);
  if (status.ok()) status = db->Exec("DROP INDEX s_visit_month_collaborator");
  clock.Mark("indexes");
  if (status.ok()) status = FillDerived(db, *cursor);
  counter_job_.reset();  // joined, when FillDerived() was not reached
  clock.Mark("counters");
  if (status.ok()) status = db->Exec(kTables);
  clock.Mark("counters' index");
  if (status.ok()) {
    absl::StatusOr<Statement*> move =
        db->Prepare("UPDATE r_meta SET value = ?1 WHERE key = 'cursor'");
    status = move.ok() ? absl::OkStatus() : move.status();
    if (status.ok()) {
      (*move)->BindInt(1, static_cast<int64_t>(*cursor));
      status = (*move)->Run();
    }
  }
  if (!status.ok()) return status;
  return cursor;
}

absl::StatusOr<uint64_t> ReportsStore::LoadRecords(Db* db) {
  // The store's last op at this transaction's snapshot: every row read below is at or
  // before it.
  absl::StatusOr<int64_t> target =
      db->QueryInt("SELECT coalesce(max(last_op), 0) FROM st._buckets");
  if (!target.ok()) return target.status();
  // Each statement writes its table's rows as the Apply* functions do, one at a time,
  // (NULLs read as ColumnInt/ColumnText read them: 0 and ''), sorted by primary key so
  // that the B-trees fill in order. A point needs both coordinates and is not (0, 0).
  const std::string gps =
      "(latitude IS NOT NULL AND longitude IS NOT NULL AND NOT (latitude = 0 AND "
      "longitude = 0))";
  const std::string sql = absl::StrCat(
      "INSERT INTO r_facility(id, commune, folded, lat, lon, day) "
      "SELECT id, coalesce(commune_id, 0), kc_fold(name), CASE WHEN ",
      gps, " THEN latitude END, CASE WHEN ", gps,
      " THEN longitude END, kc_vn_day(created_ms) FROM st.facility WHERE _del = 0 "
      "ORDER BY id || '';"
      "\n"
      // The search index: the words of the name, and of name, owner, address and products.
      "INSERT INTO r_fsearch_key(id, commune, name) "
      "SELECT id, coalesce(commune_id, 0), kc_words(name) FROM st.facility WHERE _del = 0;"
      "INSERT INTO r_fsearch(rowid, words) SELECT k.rid, kc_words(coalesce(f.name, '') || "
      "char(10) || coalesce(f.owner_name, '') || char(10) || coalesce(f.address, '') || "
      "char(10) || coalesce(f.main_products, '')) FROM r_fsearch_key k JOIN st.facility f "
      "ON f.id = k.id;"
      // Visits with their distance to their facility's point (NULL without GPS, or when
      // the facility is unknown or has no point).
      "INSERT INTO r_visit(id, commune, facility, collaborator, day, month, lat, lon, workers, "
      "product_lines, output_vnd, dist_km) "
      "SELECT v.id, v.commune, v.facility, v.collaborator, v.day, kc_month(v.day), v.lat, "
      "v.lon, v.workers, v.product_lines, v.output_vnd, kc_facility_km(v.facility, v.lat, v.lon) "
      "FROM (SELECT id, "
      "coalesce(commune_id, 0) AS commune, coalesce(facility_id, '') AS facility, "
      "coalesce(collaborator_id, 0) AS collaborator, kc_vn_day(visited_ms) AS day, CASE WHEN ",
      gps, " THEN latitude END AS lat, CASE WHEN ", gps,
      " THEN longitude END AS lon, coalesce(workers, 0) AS workers, coalesce(product_lines, 0) "
      "AS product_lines, coalesce(annual_output_vnd, 0) AS output_vnd FROM st.visit "
      "WHERE _del = 0) AS v ORDER BY v.id || '';"
      "INSERT INTO r_event(id, request, commune, action, to_status, day) "
      "SELECT id, coalesce(request_id, ''), coalesce(commune_id, 0), coalesce(action, 0), "
      "coalesce(to_status, 0), kc_vn_day(at_ms) FROM st.request_event WHERE _del = 0 "
      "ORDER BY id || '';"
      // Requests with the day each entered its status: its last event into that status,
      // else its last update.
      "INSERT INTO r_request(id, commune, facility, author, status, created_day, updated_day, "
      "created_month, since_day) "
      "SELECT r.id, r.commune, r.facility, r.author, r.status, r.created_day, r.updated_day, "
      "kc_month(r.created_day), coalesce(e.day, r.updated_day) FROM (SELECT id, "
      "coalesce(commune_id, 0) AS commune, coalesce(facility_id, '') AS facility, "
      "coalesce(author_id, 0) AS author, coalesce(status, 0) AS status, "
      "kc_vn_day(created_ms) AS created_day, kc_vn_day(coalesce(updated_ms, created_ms)) AS "
      "updated_day FROM st.support_request WHERE _del = 0) AS r LEFT JOIN (SELECT request, "
      "to_status, max(day) AS day FROM r_event GROUP BY request, to_status) AS e "
      "ON e.request = r.id AND e.to_status = r.status ORDER BY r.id || '';");
  // The facilities first (one statement up to the mark), then their points in memory:
  // a visit's distance is a hash lookup, not a seek in r_facility per visit.
  const size_t split = sql.find("\n");
  absl::Status status = db->Exec(absl::string_view(sql).substr(0, split));
  if (!status.ok()) return status;
  FacilityPoints points;
  absl::StatusOr<Statement*> rows =
      db->Prepare("SELECT id, lat, lon FROM r_facility WHERE lat IS NOT NULL AND lon IS NOT NULL");
  if (!rows.ok()) return rows.status();
  status = ForEachRow(*rows, [&](Statement& row) {
    points.emplace(row.ColumnText(0), std::make_pair(row.ColumnDouble(1), row.ColumnDouble(2)));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (sqlite3_create_function_v2(db->raw(), "kc_facility_km", 3, SQLITE_UTF8, &points,
                                 &SqlFacilityKm, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return absl::InternalError("reports: cannot register kc_facility_km");
  }
  status = db->Exec(absl::string_view(sql).substr(split + 1));
  // `points` goes: so does the function.
  sqlite3_create_function_v2(db->raw(), "kc_facility_km", 3, SQLITE_UTF8, nullptr, nullptr, nullptr,
                             nullptr, nullptr);
  if (!status.ok()) return status;
  return static_cast<uint64_t>(*target);
}

namespace {

// The visit counters' rows (s_visit_month, s_commune_month, s_coverage_year), each
// table's in primary-key order.
struct VisitCounterRows {
  struct Count {
    int64_t commune, month, collaborator, visits, no_gps;
  };
  struct CommuneMonth {
    int64_t commune, month, visits, no_gps, facilities;
  };
  struct Year {
    int64_t commune, year, facilities;
  };
  std::vector<Count> month;
  std::vector<CommuneMonth> commune_month;
  std::vector<Year> coverage_year;
  void clear() { *this = VisitCounterRows(); }
};

// Sums visits into the counters, one commune at a time: Add() the visits of a commune
// (any order within it), the communes one after the other; Close() after the last.
// Each commune's rows are appended to `rows` when the next commune begins.
class VisitCounters {
 public:
  explicit VisitCounters(VisitCounterRows* rows) : rows_(rows) {}

  void Add(int64_t commune, absl::string_view facility, int64_t month, int64_t collaborator,
           int64_t no_gps) {
    if (commune != commune_) {
      Close();
      commune_ = commune;
    }
    for (Pair* p : {&by_month_[{month, collaborator}], &commune_month_[month]}) {
      p->visits += 1;
      p->no_gps += no_gps;
    }
    auto name = facilities_.find(facility);
    if (name == facilities_.end()) name = facilities_.emplace(facility).first;
    by_facility_month_[{*name, month}] += 1;
  }

  // Appends the current commune's rows.
  void Close() {
    if (commune_ < 0) return;
    for (const auto& [key, n] : by_month_) {
      rows_->month.push_back({commune_, key.first, key.second, n.visits, n.no_gps});
    }
    std::map<int64_t, int64_t> facilities_by_month;
    std::map<int64_t, int64_t> facilities_by_year;
    absl::string_view last_facility;
    int64_t last_year = 0;
    bool first = true;
    for (const auto& entry : by_facility_month_) {
      const std::pair<absl::string_view, int64_t>& key = entry.first;
      facilities_by_month[key.second] += 1;
      // Keys come by facility, then month: a facility's first month of a year counts it.
      const int64_t year = key.second / 100;
      if (first || last_facility != key.first || last_year != year) {
        facilities_by_year[year] += 1;
      }
      first = false;
      last_facility = key.first;
      last_year = year;
    }
    for (const auto& [month, n] : commune_month_) {
      rows_->commune_month.push_back(
          {commune_, month, n.visits, n.no_gps, facilities_by_month[month]});
    }
    for (const auto& [year, n] : facilities_by_year) {
      rows_->coverage_year.push_back({commune_, year, n});
    }
    by_month_.clear();
    by_facility_month_.clear();
    commune_month_.clear();
    commune_ = -1;
  }

 private:
  struct Pair {
    int64_t visits = 0, no_gps = 0;
  };
  VisitCounterRows* rows_;
  int64_t commune_ = -1;
  // Each facility id once (stable addresses: by_facility_month_'s keys point at them).
  absl::node_hash_set<std::string> facilities_;
  std::map<std::pair<int64_t, int64_t>, Pair> by_month_;  // (month, collaborator)
  std::map<std::pair<absl::string_view, int64_t>, int64_t> by_facility_month_;
  std::map<int64_t, Pair> commune_month_;
};

// Writes `rows` into the counter tables of `db`.
absl::Status WriteCounterRows(Db* db, const VisitCounterRows& rows) {
  const char* kInserts[] = {
      "INSERT INTO s_visit_month(commune, month, collaborator, visits, no_gps) "
      "VALUES (?1,?2,?3,?4,?5)",
      "INSERT INTO s_commune_month(commune, month, visits, no_gps, facilities) "
      "VALUES (?1,?2,?3,?4,?5)",
      "INSERT INTO s_coverage_year(commune, year, facilities) VALUES (?1,?2,?3)"};
  std::vector<Statement*> inserts;
  for (const char* sql : kInserts) {
    absl::StatusOr<Statement*> s = db->Prepare(sql);
    if (!s.ok()) return s.status();
    inserts.push_back(*s);
  }
  // Binds `values` to the statement and runs it.
  auto run = [](Statement* s, std::initializer_list<int64_t> values) {
    s->Reset();  // Run() leaves it done
    int i = 1;
    for (int64_t v : values) s->BindInt(i++, v);
    return s->Run();
  };
  for (const auto& r : rows.month) {
    absl::Status st = run(inserts[0], {r.commune, r.month, r.collaborator, r.visits, r.no_gps});
    if (!st.ok()) return st;
  }
  for (const auto& r : rows.commune_month) {
    absl::Status st = run(inserts[1], {r.commune, r.month, r.visits, r.no_gps, r.facilities});
    if (!st.ok()) return st;
  }
  for (const auto& r : rows.coverage_year) {
    absl::Status st = run(inserts[2], {r.commune, r.year, r.facilities});
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace

// The visit counters computed from the record store on a thread and a connection of
// their own, while the rebuild's connection loads the per-record rows and builds their
// indexes. They count the store at the snapshot their connection read (`op`); the
// rebuild uses them only when that is its own snapshot's op.
struct ReportsStore::CounterJob {
  uint64_t op = 0;
  absl::Status status;
  VisitCounterRows rows;
  VisitCounters counters{&rows};
  std::thread thread;

  ~CounterJob() {
    if (thread.joinable()) thread.join();
  }
  void Run(const std::string& store_path) {
    PhaseClock clock;
    sync::DbOptions options;
    options.read_only = true;
    absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(store_path, options);
    if (!db.ok()) {
      status = db.status();
      return;
    }
    // The sort by commune in memory chunks of 64 MB.
    status = (*db)->Exec("PRAGMA cache_size = -65536; BEGIN");
    absl::StatusOr<int64_t> last =
        status.ok() ? (*db)->QueryInt("SELECT coalesce(max(last_op), 0) FROM _buckets")
                    : absl::StatusOr<int64_t>(status);
    if (!last.ok()) {
      status = last.status();
      return;
    }
    op = static_cast<uint64_t>(*last);
    // The visits as r_visit holds them (LoadRecords): commune, day, facility, month,
    // collaborator, no point.
    absl::StatusOr<Statement*> scan = (*db)->Prepare(
        "SELECT coalesce(commune_id, 0) AS commune, visited_ms, coalesce(facility_id, ''), "
        "coalesce(collaborator_id, 0), CASE WHEN latitude IS NOT NULL AND longitude IS NOT "
        "NULL AND NOT (latitude = 0 AND longitude = 0) THEN 0 ELSE 1 END FROM visit "
        "WHERE _del = 0 ORDER BY commune");
    if (!scan.ok()) {
      status = scan.status();
      return;
    }
    status = ForEachRow(*scan, [&](Statement& row) {
      counters.Add(row.ColumnInt(0), row.ColumnText(2), MonthOf(VietnamDay(row.ColumnInt(1))),
                   row.ColumnInt(3), row.ColumnInt(4));
      return absl::OkStatus();
    });
    counters.Close();
    (void)(*db)->Exec("COMMIT");
    clock.Mark("counter job (its thread)");
  }
};

void ReportsStore::StartCounterJob() {
  counter_job_ = std::make_unique<CounterJob>();
  CounterJob* job = counter_job_.get();
  const std::string store_path = store_path_;
  job->thread = std::thread([job, store_path] { job->Run(store_path); });
}

absl::Status ReportsStore::FillDerived(Db* db, uint64_t op) {
  // Every statement reads the per-record rows just loaded (in Rebuild()'s transaction);
  // the store is not read.
  absl::Status status = db->Exec(
      "INSERT INTO s_request_month(commune, month, author, requests) "
      "SELECT commune, created_month, author, count(*) FROM r_request "
      "GROUP BY commune, created_month, author;"
      "INSERT INTO s_commune_facilities(commune, facilities) "
      "SELECT commune, count(*) FROM r_facility GROUP BY commune;"
      "INSERT INTO s_duplicate(commune, folded, facilities) "
      "SELECT commune, folded, count(*) FROM r_facility INDEXED BY r_facility_folded "
      "GROUP BY commune, folded HAVING count(*) >= 2;");
  if (!status.ok()) return status;
  // The visit counters: those of the counter job when it counted the same snapshot.
  if (counter_job_ != nullptr) {
    std::unique_ptr<CounterJob> job = std::move(counter_job_);
    PhaseClock wait;
    job->thread.join();
    wait.Mark("waiting for the job");
    if (job->status.ok() && job->op == op) {
      status = WriteCounterRows(db, job->rows);
      if (status.ok()) status = db->Exec("DELETE FROM r_meta WHERE key = 'rebuilding'");
      return status;
    }
  }
  // Otherwise one pass over the visits in (commune, day) order through the covering index
  // r_visit_commune (no sort), written when each commune ends.
  VisitCounterRows rows;
  VisitCounters counters(&rows);
  absl::StatusOr<Statement*> scan = db->Prepare(
      "SELECT commune, day, facility, month, collaborator, lat IS NULL FROM r_visit "
      "INDEXED BY r_visit_commune ORDER BY commune, day");
  if (!scan.ok()) return scan.status();
  int64_t commune = -1;
  status = ForEachRow(*scan, [&](Statement& row) {
    if (row.ColumnInt(0) != commune) {
      counters.Close();
      absl::Status st = WriteCounterRows(db, rows);
      rows.clear();
      if (!st.ok()) return st;
      commune = row.ColumnInt(0);
    }
    counters.Add(commune, row.ColumnText(2), row.ColumnInt(3), row.ColumnInt(4), row.ColumnInt(5));
    return absl::OkStatus();
  });
  counters.Close();
  if (status.ok()) status = WriteCounterRows(db, rows);
  if (status.ok()) status = db->Exec("DELETE FROM r_meta WHERE key = 'rebuilding'");
  return status;
}

absl::StatusOr<uint64_t> ReportsStore::CatchUpLocked(int64_t max_ops, bool* done) {
  *done = true;
  if (pending_ == nullptr) pending_ = std::make_unique<Pending>();
  *pending_ = Pending();  // nothing left over from a failed transaction
  // Deferred: the store (st) is only read, at one snapshot; only main is written.
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(writer_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  absl::StatusOr<int64_t> cursor = writer_->QueryInt("SELECT value FROM r_meta WHERE key='cursor'");
  if (!cursor.ok()) return cursor.status();
  absl::StatusOr<int64_t> target =
      writer_->QueryInt("SELECT coalesce(max(last_op), 0) FROM st._buckets");
  if (!target.ok()) return target.status();
  if (*target <= *cursor) return static_cast<uint64_t>(*cursor);
  if (*target - *cursor > max_ops) {
    *target = *cursor + max_ops;
    *done = false;
  }

  // Each source's rows whose op is in (cursor, target], bucket by bucket: the buckets
  // whose last op is above the cursor, then the store's (bucket, op) index of each, in
  // one statement per source.
  struct Source {
    const char* sql;
    absl::Status (ReportsStore::*apply)(Statement&);
  };
  // Facilities before visits and requests before events; order matters to nothing stored
  // (every figure that joins is computed at query time), only to readability.
  const Source sources[] = {
      {"SELECT s.id, s._del, s.commune_id, s.name, s.latitude, s.longitude, s.created_ms, "
       "s.owner_name, s.address, s.main_products FROM st._buckets AS b CROSS JOIN "
       "st.facility AS s",
       &ReportsStore::ApplyFacility},
      {"SELECT s.id, s._del, s.commune_id, s.facility_id, s.collaborator_id, s.visited_ms, "
       "s.latitude, s.longitude, coalesce(s.workers, 0), coalesce(s.product_lines, 0), "
       "coalesce(s.annual_output_vnd, 0) FROM st._buckets AS b CROSS JOIN st.visit AS s",
       &ReportsStore::ApplyVisit},
      {"SELECT s.id, s._del, s.commune_id, s.facility_id, s.author_id, s.status, s.created_ms, "
       "s.updated_ms FROM st._buckets AS b CROSS JOIN st.support_request AS s",
       &ReportsStore::ApplyRequest},
      {"SELECT s.id, s._del, s.commune_id, s.request_id, s.action, s.to_status, s.at_ms "
       "FROM st._buckets AS b CROSS JOIN st.request_event AS s",
       &ReportsStore::ApplyEvent},
  };
  absl::Status status;
  for (const Source& source : sources) {
    absl::StatusOr<Statement*> rows = writer_->Prepare(
        absl::StrCat(source.sql,
                     " WHERE b.last_op > ?1 AND s.commune_id = b.bucket AND s._op > ?1 AND "
                     "s._op <= ?2"));
    if (!rows.ok()) return rows.status();
    (*rows)->BindInt(1, *cursor);
    (*rows)->BindInt(2, *target);
    status = ForEachRow(*rows, [&](Statement& s) { return (this->*source.apply)(s); });
    if (!status.ok()) return status;
  }
  status = FlushPending();
  if (!status.ok()) return status;
  absl::StatusOr<Statement*> move =
      writer_->Prepare("UPDATE r_meta SET value = ?1 WHERE key = 'cursor'");
  if (!move.ok()) return move.status();
  (*move)->BindInt(1, *target);
  status = (*move)->Run();
  if (!status.ok()) return status;
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  return static_cast<uint64_t>(*target);
}

// Each Apply* gets a source row: 0 id, 1 _del, 2 commune_id, then the type's columns.
absl::Status ReportsStore::ApplyFacility(Statement& row) {
  // The registered point before (absent: no row, or a row without a point), and what
  // the old row counted (its commune's facilities, its duplicate group).
  absl::StatusOr<Statement*> old =
      writer_->Prepare("SELECT lat, lon, commune, folded FROM r_facility WHERE id = ?1");
  if (!old.ok()) return old.status();
  (*old)->BindText(1, row.ColumnText(0));
  std::optional<std::pair<double, double>> point_before;
  absl::Status status = ForEachRow(*old, [&](Statement& s) {
    if (!s.IsNull(0)) point_before = std::make_pair(s.ColumnDouble(0), s.ColumnDouble(1));
    pending_->commune_facilities[s.ColumnInt(2)] -= 1;
    pending_->folded_names.emplace(s.ColumnInt(2), s.ColumnText(3));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  absl::StatusOr<Statement*> del = writer_->Prepare("DELETE FROM r_facility WHERE id = ?1");
  if (!del.ok()) return del.status();
  (*del)->BindText(1, row.ColumnText(0));
  status = (*del)->Run();
  if (!status.ok()) return status;
  status = IndexFacility(row);
  if (!status.ok()) return status;
  std::optional<std::pair<double, double>> point_after;
  if (row.ColumnInt(1) == 0) {
    absl::StatusOr<Statement*> ins = writer_->Prepare(
        "INSERT INTO r_facility(id, commune, folded, lat, lon, day) VALUES (?1,?2,?3,?4,?5,?6)");
    if (!ins.ok()) return ins.status();
    Statement* s = *ins;
    std::string folded = sync::FoldForSearch(row.ColumnText(3));
    s->BindText(1, row.ColumnText(0));
    s->BindInt(2, row.ColumnInt(2));
    s->BindText(3, folded);
    const bool gps = HasGps(row, 4, 5);
    BindOptionalDouble(s, 4, gps, row.ColumnDouble(4));
    BindOptionalDouble(s, 5, gps, row.ColumnDouble(5));
    s->BindInt(6, VietnamDay(row.ColumnInt(6)));
    status = s->Run();
    if (!status.ok()) return status;
    if (gps) point_after = std::make_pair(row.ColumnDouble(4), row.ColumnDouble(5));
    pending_->commune_facilities[row.ColumnInt(2)] += 1;
    pending_->folded_names.emplace(row.ColumnInt(2), std::move(folded));
  }
  // The point moved, appeared or went: the distances of the facility's visits follow
  if (point_before == point_after) return absl::OkStatus();
  absl::StatusOr<Statement*> update = writer_->Prepare(
      "UPDATE r_visit SET dist_km = CASE WHEN lat IS NULL OR ?2 IS NULL THEN NULL "
      "ELSE kc_distance_km(lat, lon, ?2, ?3) END WHERE facility = ?1");
  if (!update.ok()) return update.status();
  (*update)->BindText(1, row.ColumnText(0));
  BindOptionalDouble(*update, 2, point_after.has_value(), point_after ? point_after->first : 0);
  BindOptionalDouble(*update, 3, point_after.has_value(), point_after ? point_after->second : 0);
  return (*update)->Run();
}

// The search index's row of the facility in `row` (ApplyFacility's columns, then 7
// owner_name, 8 address, 9 main_products): the old one out, the new one in when live.
absl::Status ReportsStore::IndexFacility(Statement& row) {
  absl::StatusOr<Statement*> old = writer_->Prepare("SELECT rid FROM r_fsearch_key WHERE id = ?1");
  if (!old.ok()) return old.status();
  (*old)->BindText(1, row.ColumnText(0));
  std::optional<int64_t> rid;
  absl::Status status = ForEachRow(*old, [&](Statement& s) {
    rid = s.ColumnInt(0);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (rid.has_value()) {
    for (const char* sql :
         {"DELETE FROM r_fsearch WHERE rowid = ?1", "DELETE FROM r_fsearch_key WHERE rid = ?1"}) {
      absl::StatusOr<Statement*> out = writer_->Prepare(sql);
      if (!out.ok()) return out.status();
      (*out)->BindInt(1, *rid);
      status = (*out)->Run();
      if (!status.ok()) return status;
    }
  }
  if (row.ColumnInt(1) != 0) return absl::OkStatus();
  absl::StatusOr<Statement*> key =
      writer_->Prepare("INSERT INTO r_fsearch_key(id, commune, name) VALUES (?1, ?2, ?3)");
  if (!key.ok()) return key.status();
  (*key)->BindText(1, row.ColumnText(0));
  (*key)->BindInt(2, row.ColumnInt(2));
  (*key)->BindText(3, absl::StrJoin(sync::SearchWords(row.ColumnText(3)), " "));
  status = (*key)->Run();
  if (!status.ok()) return status;
  rid = writer_->LastInsertRowId();
  absl::StatusOr<Statement*> words =
      writer_->Prepare("INSERT INTO r_fsearch(rowid, words) VALUES (?1, ?2)");
  if (!words.ok()) return words.status();
  (*words)->BindInt(1, *rid);
  (*words)->BindText(
      2,
      absl::StrJoin(sync::SearchWords(absl::StrCat(row.ColumnText(3), "\n", row.ColumnText(7), "\n",
                                                   row.ColumnText(8), "\n", row.ColumnText(9))),
                    " "));
  return (*words)->Run();
}

void ReportsStore::AddVisit(int64_t commune, int64_t day, int64_t collaborator,
                            absl::string_view facility, int64_t visits, int64_t no_gps) {
  const int64_t month = MonthOf(day);
  Pending::Pair& p = pending_->visit_month[{commune, month, collaborator}];
  p.visits += visits;
  p.no_gps += no_gps;
  pending_->facility_month[{commune, std::string(facility), month}] += visits;
}

absl::Status ReportsStore::FlushPending() {
  Pending& p = *pending_;
  // An upsert adding a delta to a counter, then the counter's row goes when it is at zero
  // (as if it had never been: equal to a rebuild).
  auto add = [&](const std::string& upsert, const std::string& zero,
                 const std::function<void(Statement*)>& bind_key,
                 const std::function<void(Statement*)>& bind_delta, bool may_fall) {
    absl::StatusOr<Statement*> up = writer_->Prepare(upsert);
    if (!up.ok()) return up.status();
    bind_key(*up);
    bind_delta(*up);
    absl::Status status = (*up)->Run();
    if (!status.ok() || !may_fall) return status;
    absl::StatusOr<Statement*> del = writer_->Prepare(zero);
    if (!del.ok()) return del.status();
    bind_key(*del);
    return (*del)->Run();
  };
  for (const auto& entry : p.visit_month) {
    const std::array<int64_t, 3>& k = entry.first;
    const Pending::Pair& n = entry.second;
    if (n.visits == 0 && n.no_gps == 0) continue;  // a visit out and in again
    absl::Status status = add(
        "INSERT INTO s_visit_month(commune, month, collaborator, visits, no_gps) "
        "VALUES (?1,?2,?3,?4,?5) ON CONFLICT(commune, month, collaborator) DO UPDATE SET "
        "visits = visits + excluded.visits, no_gps = no_gps + excluded.no_gps",
        "DELETE FROM s_visit_month WHERE commune = ?1 AND month = ?2 AND collaborator = ?3 AND "
        "visits = 0",
        [&](Statement* s) {
          for (int i = 0; i < 3; ++i) s->BindInt(i + 1, k[i]);
        },
        [&](Statement* s) {
          s->BindInt(4, n.visits);
          s->BindInt(5, n.no_gps);
        },
        n.visits < 0);
    if (!status.ok()) return status;
  }
  // A facility's first visit of a month appearing or its last going changes the distinct
  // count of its commune's month, and likewise for its commune's year.
  std::map<std::pair<int64_t, int64_t>, Pending::Pair> commune_month;  // visits, no_gps
  std::map<std::pair<int64_t, int64_t>, int64_t> commune_month_facilities;
  // (commune, year): facilities that appeared minus facilities that went.
  std::map<std::pair<int64_t, int64_t>, int64_t> coverage_year;
  for (const auto& entry : p.visit_month) {
    const std::array<int64_t, 3>& k = entry.first;
    Pending::Pair& c = commune_month[{k[0], k[1]}];
    c.visits += entry.second.visits;
    c.no_gps += entry.second.no_gps;
  }
  // The visits' changes per (commune, facility, year), by month.
  std::map<std::tuple<int64_t, absl::string_view, int64_t>, std::map<int64_t, int64_t>> by_year;
  for (const auto& entry : p.facility_month) {
    if (entry.second == 0) continue;  // a visit out and in again
    const int64_t month = std::get<2>(entry.first);
    by_year[{std::get<0>(entry.first), std::get<1>(entry.first), month / 100}][month] +=
        entry.second;
  }
  // Whether the facility has a visit in the commune's month (and year) now, after this
  // catch-up's rows, from its visits of that year (r_visit_facility: a facility has a few
  // visits a year), and whether it had one before: now less this catch-up's changes.
  for (const auto& [key, months] : by_year) {
    const auto& [commune, facility, year] = key;
    absl::StatusOr<Statement*> days = writer_->Prepare(
        "SELECT day FROM r_visit INDEXED BY r_visit_facility WHERE facility = ?1 AND "
        "day BETWEEN ?2 AND ?3 AND commune = ?4");
    if (!days.ok()) return days.status();
    const absl::CivilDay epoch(1970, 1, 1);
    (*days)->BindText(1, facility);
    (*days)->BindInt(2, absl::CivilDay(year, 1, 1) - epoch);
    (*days)->BindInt(3, absl::CivilDay(year, 12, 31) - epoch);
    (*days)->BindInt(4, commune);
    std::map<int64_t, int64_t> now_by_month;
    int64_t now_year = 0;
    absl::Status status = ForEachRow(*days, [&](Statement& s) {
      now_by_month[MonthOf(s.ColumnInt(0))] += 1;
      now_year += 1;
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    int64_t year_delta = 0;
    for (const auto& [month, delta] : months) {
      year_delta += delta;
      auto it = now_by_month.find(month);
      const int64_t now = it == now_by_month.end() ? 0 : it->second;
      const int64_t before = now - delta;
      const int64_t move = (now > 0 ? 1 : 0) - (before > 0 ? 1 : 0);
      if (move != 0) commune_month_facilities[{commune, month}] += move;
    }
    const int64_t move = (now_year > 0 ? 1 : 0) - (now_year - year_delta > 0 ? 1 : 0);
    if (move != 0) coverage_year[{commune, year}] += move;
  }
  for (const auto& entry : commune_month) {
    const std::pair<int64_t, int64_t>& k = entry.first;
    const Pending::Pair& n = entry.second;
    auto f = commune_month_facilities.find(k);
    const int64_t facilities = f == commune_month_facilities.end() ? 0 : f->second;
    if (n.visits == 0 && n.no_gps == 0 && facilities == 0) continue;
    absl::Status status = add(
        "INSERT INTO s_commune_month(commune, month, visits, no_gps, facilities) "
        "VALUES (?1,?2,?3,?4,?5) ON CONFLICT(commune, month) DO UPDATE SET "
        "visits = visits + excluded.visits, no_gps = no_gps + excluded.no_gps, "
        "facilities = facilities + excluded.facilities",
        "DELETE FROM s_commune_month WHERE commune = ?1 AND month = ?2 AND visits = 0",
        [&](Statement* s) {
          s->BindInt(1, k.first);
          s->BindInt(2, k.second);
        },
        [&](Statement* s) {
          s->BindInt(3, n.visits);
          s->BindInt(4, n.no_gps);
          s->BindInt(5, facilities);
        },
        n.visits < 0);
    if (!status.ok()) return status;
  }
  for (const auto& entry : coverage_year) {
    if (entry.second == 0) continue;
    absl::Status status = add(
        "INSERT INTO s_coverage_year(commune, year, facilities) VALUES (?1, ?2, ?3) "
        "ON CONFLICT(commune, year) DO UPDATE SET facilities = facilities + excluded.facilities",
        "DELETE FROM s_coverage_year WHERE commune = ?1 AND year = ?2 AND facilities = 0",
        [&](Statement* s) {
          s->BindInt(1, entry.first.first);
          s->BindInt(2, entry.first.second);
        },
        [&](Statement* s) { s->BindInt(3, entry.second); }, entry.second < 0);
    if (!status.ok()) return status;
  }
  for (const auto& entry : p.request_month) {
    const std::array<int64_t, 3>& k = entry.first;
    if (entry.second == 0) continue;
    absl::Status status = add(
        "INSERT INTO s_request_month(commune, month, author, requests) VALUES (?1,?2,?3,?4) "
        "ON CONFLICT(commune, month, author) DO UPDATE SET requests = requests + "
        "excluded.requests",
        "DELETE FROM s_request_month WHERE commune = ?1 AND month = ?2 AND author = ?3 AND "
        "requests = 0",
        [&](Statement* s) {
          for (int i = 0; i < 3; ++i) s->BindInt(i + 1, k[i]);
        },
        [&](Statement* s) { s->BindInt(4, entry.second); }, entry.second < 0);
    if (!status.ok()) return status;
  }
  for (const auto& entry : p.commune_facilities) {
    // Named copies: clang 14 (the fuzz build) cannot capture structured bindings.
    const auto commune = entry.first;
    const auto delta = entry.second;
    if (delta == 0) continue;
    absl::Status status = add(
        "INSERT INTO s_commune_facilities(commune, facilities) VALUES (?1, ?2) "
        "ON CONFLICT(commune) DO UPDATE SET facilities = facilities + excluded.facilities",
        "DELETE FROM s_commune_facilities WHERE commune = ?1 AND facilities = 0",
        [&](Statement* s) { s->BindInt(1, commune); }, [&](Statement* s) { s->BindInt(2, delta); },
        delta < 0);
    if (!status.ok()) return status;
  }
  // Each touched (commune, folded name): a duplicate group when two or more live
  // facilities have it (counted over r_facility_folded, after this catch-up's rows).
  for (const auto& [commune, folded] : p.folded_names) {
    absl::StatusOr<Statement*> count =
        writer_->Prepare("SELECT count(*) FROM r_facility WHERE commune = ?1 AND folded = ?2");
    if (!count.ok()) return count.status();
    (*count)->BindInt(1, commune);
    (*count)->BindText(2, folded);
    int64_t n = 0;
    absl::Status status = ForEachRow(*count, [&](Statement& s) {
      n = s.ColumnInt(0);
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    absl::StatusOr<Statement*> write =
        writer_->Prepare(n >= 2 ? "INSERT OR REPLACE INTO s_duplicate(commune, folded, facilities) "
                                  "VALUES (?1, ?2, ?3)"
                                : "DELETE FROM s_duplicate WHERE commune = ?1 AND folded = ?2");
    if (!write.ok()) return write.status();
    (*write)->BindInt(1, commune);
    (*write)->BindText(2, folded);
    if (n >= 2) (*write)->BindInt(3, n);
    status = (*write)->Run();
    if (!status.ok()) return status;
  }
  // The day each touched request entered its status (its last event into it, else its
  // last update).
  for (const std::string& request : p.since_requests) {
    absl::StatusOr<Statement*> update = writer_->Prepare(
        "UPDATE r_request SET since_day = coalesce((SELECT max(e.day) FROM r_event e WHERE "
        "e.request = r_request.id AND e.to_status = r_request.status), updated_day) "
        "WHERE id = ?1");
    if (!update.ok()) return update.status();
    (*update)->BindText(1, request);
    absl::Status status = (*update)->Run();
    if (!status.ok()) return status;
  }
  *pending_ = Pending();
  return absl::OkStatus();
}

absl::Status ReportsStore::ApplyVisit(Statement& row) {
  // The old row out, with what it counted. (Its point is returned as is: SQLite 3.40
  // evaluates `lat IS NULL` in a RETURNING clause as 0 even for a NULL.)
  absl::StatusOr<Statement*> old = writer_->Prepare(
      "DELETE FROM r_visit WHERE id = ?1 RETURNING commune, day, collaborator, lat, facility");
  if (!old.ok()) return old.status();
  (*old)->BindText(1, row.ColumnText(0));
  absl::Status status = ForEachRow(*old, [&](Statement& s) {
    AddVisit(s.ColumnInt(0), s.ColumnInt(1), s.ColumnInt(2), s.ColumnText(4), -1,
             s.IsNull(3) ? -1 : 0);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (row.ColumnInt(1) != 0) return absl::OkStatus();
  // The new one in: 3 facility_id, 4 collaborator_id, 5 visited_ms, 6 latitude, 7 longitude,
  // 8 workers, 9 product_lines, 10 annual_output_vnd. Its distance to the facility's point
  // in the same statement (NULL without GPS, or when the facility has no point).
  const int64_t commune = row.ColumnInt(2);
  const int64_t day = VietnamDay(row.ColumnInt(5));
  const int64_t collaborator = row.ColumnInt(4);
  const bool gps = HasGps(row, 6, 7);
  absl::StatusOr<Statement*> ins = writer_->Prepare(
      "INSERT INTO r_visit(id, commune, facility, collaborator, day, month, lat, lon, workers, "
      "product_lines, output_vnd, dist_km) SELECT ?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,"
      "(SELECT kc_distance_km(?7, ?8, f.lat, f.lon) FROM r_facility f WHERE f.id = ?3)");
  if (!ins.ok()) return ins.status();
  Statement* s = *ins;
  s->BindText(1, row.ColumnText(0));
  s->BindInt(2, commune);
  s->BindText(3, row.ColumnText(3));
  s->BindInt(4, collaborator);
  s->BindInt(5, day);
  s->BindInt(6, MonthOf(day));
  BindOptionalDouble(s, 7, gps, row.ColumnDouble(6));
  BindOptionalDouble(s, 8, gps, row.ColumnDouble(7));
  s->BindInt(9, row.ColumnInt(8));
  s->BindInt(10, row.ColumnInt(9));
  s->BindInt(11, row.ColumnInt(10));
  status = s->Run();
  if (!status.ok()) return status;
  AddVisit(commune, day, collaborator, row.ColumnText(3), 1, gps ? 0 : 1);
  return absl::OkStatus();
}

absl::Status ReportsStore::ApplyRequest(Statement& row) {
  absl::StatusOr<Statement*> old = writer_->Prepare(
      "DELETE FROM r_request WHERE id = ?1 RETURNING commune, created_month, author");
  if (!old.ok()) return old.status();
  (*old)->BindText(1, row.ColumnText(0));
  absl::Status status = ForEachRow(*old, [&](Statement& s) {
    pending_->request_month[{s.ColumnInt(0), s.ColumnInt(1), s.ColumnInt(2)}] -= 1;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (row.ColumnInt(1) != 0) return absl::OkStatus();
  // 3 facility_id, 4 author_id, 5 status, 6 created_ms, 7 updated_ms.
  absl::StatusOr<Statement*> ins = writer_->Prepare(
      "INSERT INTO r_request(id, commune, facility, author, status, created_day, updated_day, "
      "created_month, since_day) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?7)");
  if (!ins.ok()) return ins.status();
  Statement* s = *ins;
  const int64_t created_day = VietnamDay(row.ColumnInt(6));
  s->BindText(1, row.ColumnText(0));
  s->BindInt(2, row.ColumnInt(2));
  s->BindText(3, row.ColumnText(3));
  s->BindInt(4, row.ColumnInt(4));
  s->BindInt(5, row.ColumnInt(5));
  s->BindInt(6, created_day);
  s->BindInt(7, VietnamDay(row.ColumnInt(row.IsNull(7) ? 6 : 7)));
  s->BindInt(8, MonthOf(created_day));
  status = s->Run();
  if (!status.ok()) return status;
  pending_->since_requests.emplace(row.ColumnText(0));
  pending_->request_month[{row.ColumnInt(2), MonthOf(created_day), row.ColumnInt(4)}] += 1;
  return absl::OkStatus();
}

absl::Status ReportsStore::ApplyEvent(Statement& row) {
  absl::StatusOr<Statement*> del =
      writer_->Prepare("DELETE FROM r_event WHERE id = ?1 RETURNING request");
  if (!del.ok()) return del.status();
  (*del)->BindText(1, row.ColumnText(0));
  // The request(s) the event entered or left: their since day.
  absl::Status status = ForEachRow(*del, [&](Statement& s) {
    pending_->since_requests.emplace(s.ColumnText(0));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  pending_->since_requests.emplace(row.ColumnText(3));
  if (row.ColumnInt(1) != 0) return absl::OkStatus();
  // 3 request_id, 4 action, 5 to_status, 6 at_ms.
  absl::StatusOr<Statement*> ins = writer_->Prepare(
      "INSERT INTO r_event(id, request, commune, action, to_status, day) "
      "VALUES (?1,?2,?3,?4,?5,?6)");
  if (!ins.ok()) return ins.status();
  Statement* s = *ins;
  s->BindText(1, row.ColumnText(0));
  s->BindText(2, row.ColumnText(3));
  s->BindInt(3, row.ColumnInt(2));
  s->BindInt(4, row.ColumnInt(4));
  s->BindInt(5, row.ColumnInt(5));
  s->BindInt(6, VietnamDay(row.ColumnInt(6)));
  return s->Run();
}

absl::Status ReportsStore::RecordDeviceSync(const std::string& device_id, int64_t user_id,
                                            int64_t at_ms, uint32_t pending_writes) {
  absl::MutexLock lock(&write_mu_);
  absl::StatusOr<Statement*> s = writer_->Prepare(
      "INSERT OR REPLACE INTO r_device(device_id, user_id, last_sync_ms, pending_writes) "
      "VALUES (?1, ?2, ?3, ?4)");
  if (!s.ok()) return s.status();
  (*s)->BindText(1, device_id);
  (*s)->BindInt(2, user_id);
  (*s)->BindInt(3, at_ms);
  (*s)->BindInt(4, pending_writes);
  return (*s)->Run();
}

absl::StatusOr<uint64_t> ReportsStore::Cursor() {
  absl::MutexLock lock(&read_mu_);
  return ReadCursor();
}

absl::StatusOr<uint64_t> ReportsStore::ReadCursor() {
  absl::StatusOr<int64_t> cursor = reader_->QueryInt("SELECT value FROM r_meta WHERE key='cursor'");
  if (!cursor.ok()) return cursor.status();
  return static_cast<uint64_t>(*cursor);
}

namespace {

// One facility search, as SearchFacilities() received it (see there).
struct SearchQuery {
  std::string match;         // the FTS5 query: "w1" "w2" ... "wn"*
  std::string typed;         // the words joined by spaces: names that begin with it come first
  std::string scope;         // the communes as a JSON array (for json_each)
  int64_t after_later = -1;  // the position to go on after; -1: from the start
  std::string after_name, after_id;
  int limit = 0;
};

// The search position of a facility (a page's `next`: "<later>\x1f<name>\x1f<id>").
std::string SearchPosition(int64_t later, absl::string_view name, absl::string_view id) {
  return absl::StrCat(later, "\x1f", name, "\x1f", id);
}

// The match-first plan: every match of the query in the scope is read, joined to its key
// row and sorted (ORDER BY ... LIMIT limit + 1). Its cost grows with the match count.
absl::StatusOr<FacilitySearchPage> SearchMatchFirst(Db* reader, const SearchQuery& q) {
  FacilitySearchPage page;
  absl::StatusOr<Statement*> s = reader->Prepare(
      "SELECT id, name, later FROM (SELECT k.id AS id, k.name AS name,"
      " substr(k.name, 1, length(?3)) <> ?3 AS later"
      " FROM r_fsearch f JOIN r_fsearch_key k ON k.rid = f.rowid"
      " WHERE r_fsearch MATCH ?1 AND k.commune IN (SELECT value FROM json_each(?2)))"
      " WHERE (later, name, id) > (?4, ?5, ?6) ORDER BY later, name, id LIMIT ?7");
  if (!s.ok()) return s.status();
  (*s)->BindText(1, q.match);
  (*s)->BindText(2, q.scope);
  (*s)->BindText(3, q.typed);
  (*s)->BindInt(4, q.after_later);
  (*s)->BindText(5, q.after_name);
  (*s)->BindText(6, q.after_id);
  (*s)->BindInt(7, q.limit + 1);  // one more says whether a next page exists
  std::string last;
  absl::Status status = ForEachRow(*s, [&](Statement& row) {
    if (static_cast<int>(page.ids.size()) == q.limit) {
      page.next = last;
      return absl::OkStatus();
    }
    page.ids.emplace_back(row.ColumnText(0));
    last = SearchPosition(row.ColumnInt(2), row.ColumnText(1), row.ColumnText(0));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return page;
}

// The name-order plan: walks r_fsearch_key_name in the answer's order (the names that
// begin with the query, then the names before them, then the names after them) and keeps
// each facility of the scope whose rowid is in `matches`, until the page is full. Its cost
// grows with the rows walked, not with the matches; nullopt when more than `budget` rows
// would be walked (the caller then takes the match-first plan).
absl::StatusOr<std::optional<FacilitySearchPage>> SearchInNameOrder(
    Db* reader, const SearchQuery& q, const std::vector<int64_t>& matches,
    const absl::flat_hash_set<int64_t>& communes, int64_t budget) {
  FacilitySearchPage page;
  if (matches.empty()) return page;
  // The matches' rowids as a bitmap over [first, last] (FTS5 answers in rowid order).
  const int64_t first = matches.front();
  std::vector<uint64_t> bits(static_cast<size_t>((matches.back() - first) / 64 + 1));
  for (int64_t rid : matches) bits[(rid - first) / 64] |= uint64_t{1} << ((rid - first) % 64);
  auto matched = [&](int64_t rid) {
    if (rid < first || rid > matches.back()) return false;
    return (bits[(rid - first) / 64] >> ((rid - first) % 64) & 1) != 0;
  };
  // The names that begin with `typed` are exactly [typed, typed with its last byte plus
  // one) in the index's (binary) order; words hold no 0xff byte (UTF-8 never does).
  std::string beyond = q.typed;
  beyond.back() = static_cast<char>(static_cast<unsigned char>(beyond.back()) + 1);
  struct Range {
    int64_t later;
    const std::string* from;  // name >= from (null: from the first name)
    const std::string* to;    // name < to (null: to the last name)
  };
  const Range ranges[] = {{0, &q.typed, &beyond}, {1, nullptr, &q.typed}, {1, &beyond, nullptr}};
  int64_t walked = 0;
  std::string last;
  for (const Range& range : ranges) {
    if (range.later < q.after_later) continue;         // the position is past this range
    const bool resume = range.later == q.after_later;  // after (after_name, after_id)
    const std::string sql = absl::StrCat(
        "SELECT rid, id, name, commune FROM r_fsearch_key WHERE 1",
        range.from != nullptr ? " AND name >= ?1" : "", range.to != nullptr ? " AND name < ?2" : "",
        resume ? " AND (name, id) > (?3, ?4)" : "", " ORDER BY name, id");
    absl::StatusOr<Statement*> s = reader->Prepare(sql);
    if (!s.ok()) return s.status();
    if (range.from != nullptr) (*s)->BindText(1, *range.from);
    if (range.to != nullptr) (*s)->BindText(2, *range.to);
    if (resume) {
      (*s)->BindText(3, q.after_name);
      (*s)->BindText(4, q.after_id);
    }
    bool full = false;
    while (true) {
      absl::StatusOr<bool> row = (*s)->Step();
      if (!row.ok()) {
        (*s)->Reset();
        return row.status();
      }
      if (!*row) break;
      if (++walked > budget) {
        (*s)->Reset();
        return std::nullopt;
      }
      if (!matched((*s)->ColumnInt(0)) || !communes.contains((*s)->ColumnInt(3))) continue;
      if (static_cast<int>(page.ids.size()) == q.limit) {  // one more: a next page exists
        page.next = last;
        full = true;
        break;
      }
      page.ids.emplace_back((*s)->ColumnText(1));
      last = SearchPosition(range.later, (*s)->ColumnText(2), (*s)->ColumnText(1));
    }
    (*s)->Reset();
    if (full) break;
  }
  return page;
}

// The rows the name-order walk is expected to pass before its page is full, from samples:
// the names of kSamples matches (evenly spaced by rowid) and of kSamples rows of the whole
// index. The walk's order is (later, name); the page is full at about the sampled match
// of the scope at the page's share of the scope's matches; the walk passes every row
// before it, whose share of all rows the row sample tells. A few hundred point lookups
// (a fraction of a ms at 200,000 facilities) against a walk that may pass them all.
absl::StatusOr<int64_t> EstimateWalk(Db* reader, const SearchQuery& q,
                                     const std::vector<int64_t>& matches,
                                     const absl::flat_hash_set<int64_t>& communes) {
  constexpr int kSamples = 64;
  struct Key {
    int64_t later;
    std::string name;
    bool operator<(const Key& o) const { return std::tie(later, name) < std::tie(o.later, o.name); }
  };
  auto key_of = [&](absl::string_view name) {
    return Key{absl::StartsWith(name, q.typed) ? 0 : 1, std::string(name)};
  };
  const Key after{q.after_later, q.after_name};
  absl::StatusOr<int64_t> rows = reader->QueryInt("SELECT count(*) FROM r_fsearch_key");
  if (!rows.ok()) return rows.status();
  // The sampled matches of the scope still ahead of the position, in the walk's order.
  absl::StatusOr<Statement*> by_rid =
      reader->Prepare("SELECT name, commune FROM r_fsearch_key WHERE rid = ?1");
  if (!by_rid.ok()) return by_rid.status();
  std::vector<Key> ahead;
  const size_t step = std::max<size_t>(1, matches.size() / kSamples);
  size_t sampled = 0;
  for (size_t i = 0; i < matches.size(); i += step, ++sampled) {
    (*by_rid)->BindInt(1, matches[i]);
    absl::StatusOr<bool> row = (*by_rid)->Step();
    if (row.ok() && *row && communes.contains((*by_rid)->ColumnInt(1))) {
      Key key = key_of((*by_rid)->ColumnText(0));
      if (q.after_later < 0 || after < key) ahead.push_back(std::move(key));
    }
    (*by_rid)->Reset();
    if (!row.ok()) return row.status();
  }
  if (ahead.empty()) return *rows;  // few matches ahead: the walk may pass everything
  std::sort(ahead.begin(), ahead.end());
  // Matches ahead in all; the page (limit + 1) is full at this sampled one.
  const double share = static_cast<double>(ahead.size()) / static_cast<double>(sampled);
  const double total = share * static_cast<double>(matches.size());
  if (total < q.limit + 1) return *rows;  // the page is not filled: the walk passes every row
  const size_t at =
      std::min(ahead.size() - 1, static_cast<size_t>(static_cast<double>(q.limit + 1) / total *
                                                     static_cast<double>(ahead.size())));
  const Key& full = ahead[at];
  // The share of all rows between the position and that match.
  absl::StatusOr<Statement*> from_rid =
      reader->Prepare("SELECT name FROM r_fsearch_key WHERE rid >= ?1 ORDER BY rid LIMIT 1");
  if (!from_rid.ok()) return from_rid.status();
  absl::StatusOr<int64_t> max_rid = reader->QueryInt("SELECT max(rid) FROM r_fsearch_key");
  if (!max_rid.ok()) return max_rid.status();
  int64_t before = 0;
  for (int i = 0; i < kSamples; ++i) {
    (*from_rid)->BindInt(1, 1 + *max_rid * i / kSamples);
    absl::StatusOr<bool> row = (*from_rid)->Step();
    if (row.ok() && *row) {
      const Key key = key_of((*from_rid)->ColumnText(0));
      if ((q.after_later < 0 || after < key) && !(full < key)) ++before;
    }
    (*from_rid)->Reset();
    if (!row.ok()) return row.status();
  }
  return (before + 1) * *rows / kSamples;
}

}  // namespace

absl::StatusOr<FacilitySearchPage> ReportsStore::SearchFacilities(
    const std::vector<int64_t>& communes, const std::vector<std::string>& words,
    absl::string_view after, int limit) {
  if (words.empty() || communes.empty() || limit <= 0) return FacilitySearchPage();
  SearchQuery q;
  q.limit = limit;
  // Every word a whole word of the facility, the last one possibly a prefix. Words hold no
  // quote (sync::SearchWords: a-z, 0-9 and non-ASCII), so quoting each is enough.
  for (size_t w = 0; w < words.size(); ++w) {
    absl::StrAppend(&q.match, w == 0 ? "" : " ", "\"", words[w], "\"",
                    w + 1 == words.size() ? "*" : "");
  }
  q.typed = absl::StrJoin(words, " ");
  q.scope = absl::StrCat("[", absl::StrJoin(communes, ","), "]");
  // The position after which to go on: "<0|1> name \x1f id" of the last facility returned
  // (0: its name begins with the query).
  if (!after.empty()) {
    std::vector<std::string> parts = absl::StrSplit(after, absl::MaxSplits('\x1f', 2));
    if (parts.size() != 3 || (parts[0] != "0" && parts[0] != "1")) {
      return absl::InvalidArgumentError("page_token: not a search position");
    }
    q.after_later = parts[0] == "1";
    q.after_name = std::move(parts[1]);
    q.after_id = std::move(parts[2]);
  }
  const SearchPlan plan = search_plan_.load();
  absl::MutexLock lock(&read_mu_);
  if (plan == SearchPlan::kMatchFirst) return SearchMatchFirst(reader_.get(), q);
  // The matches' rowids first (a few ms for 100,000: FTS5 reads its doclists, nothing
  // else), in one read transaction with the walk.
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> s =
      reader_->Prepare("SELECT rowid FROM r_fsearch WHERE r_fsearch MATCH ?1");
  if (!s.ok()) return s.status();
  (*s)->BindText(1, q.match);
  std::vector<int64_t> matches;
  absl::Status status = ForEachRow(*s, [&](Statement& row) {
    matches.push_back(row.ColumnInt(0));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (!std::is_sorted(matches.begin(), matches.end())) std::sort(matches.begin(), matches.end());
  // A row walked costs about a sixth of what the match-first plan costs per match
  // (docs/BENCHMARKS.md, fsearch): a walk expected to pass more than kWalkRowsPerMatch rows
  // per match (the matches are few, or far down the names) is left to the match-first
  // plan, and so is one that passes them after all (the estimate is a sample's).
  const absl::flat_hash_set<int64_t> scope(communes.begin(), communes.end());
  const int64_t budget = plan == SearchPlan::kNameOrder
                             ? std::numeric_limits<int64_t>::max()
                             : kWalkRowsPerMatch * static_cast<int64_t>(matches.size());
  if (plan == SearchPlan::kAuto) {
    // A few matches cost the match-first plan little (~1.5 ms for 2,000), less than the
    // estimate below.
    if (static_cast<int64_t>(matches.size()) <= search_match_first_up_to_.load()) {
      return SearchMatchFirst(reader_.get(), q);
    }
    absl::StatusOr<int64_t> expected = EstimateWalk(reader_.get(), q, matches, scope);
    if (!expected.ok()) return expected.status();
    if (*expected > budget) return SearchMatchFirst(reader_.get(), q);
  }
  absl::StatusOr<std::optional<FacilitySearchPage>> walked =
      SearchInNameOrder(reader_.get(), q, matches, scope, budget);
  if (!walked.ok()) return walked.status();
  if (walked->has_value()) return **walked;
  return SearchMatchFirst(reader_.get(), q);
}

absl::StatusOr<std::string> ReportsStore::Dump() {
  absl::MutexLock lock(&read_mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  std::string out;
  for (const char* t : kSummaryTables) {
    if (absl::string_view(t) == "r_fsearch") continue;  // in r_fsearch_key's lines
    absl::StrAppend(&out, "# ", t, "\n");
    // The search index's rowids depend on the order of inserts: left out.
    const std::string sql =
        absl::string_view(t) == "r_fsearch_key"
            ? "SELECT k.id, k.commune, k.name, f.words FROM r_fsearch_key k "
              "LEFT JOIN r_fsearch f ON f.rowid = k.rid ORDER BY 1"
            : absl::StrCat("SELECT * FROM ", t, " ORDER BY 1, 2",
                           absl::string_view(t) == "s_commune_facilities" ? "" : ", 3");
    absl::StatusOr<Statement*> s = reader_->Prepare(sql);
    if (!s.ok()) return s.status();
    const int columns = sqlite3_column_count((*s)->raw());
    absl::Status status = ForEachRow(*s, [&](Statement& row) {
      for (int c = 0; c < columns; ++c) {
        if (row.IsNull(c)) {
          absl::StrAppend(&out, "NULL|");
        } else if (row.ColumnType(c) == SQLITE_FLOAT) {
          absl::StrAppend(&out, absl::StrFormat("%.7f|", row.ColumnDouble(c)));
        } else {
          absl::StrAppend(&out, row.ColumnText(c), "|");
        }
      }
      absl::StrAppend(&out, "\n");
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// The reports
// ---------------------------------------------------------------------------------------

absl::StatusOr<kcnet::v1::CoverageReport> ReportsStore::Coverage(const ReportScope& scope) {
  absl::MutexLock lock(&read_mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  kcnet::v1::CoverageReport report;
  absl::StatusOr<uint64_t> cursor = ReadCursor();
  if (!cursor.ok()) return cursor.status();
  report.set_as_of_op(*cursor);
  // One statement per figure over every commune of the scope (json_each of the list, one
  // index seek per commune): a national answer runs three statements, not three per
  // commune.
  const std::string communes = CommunesJson(scope);
  // Registered facilities: each commune's live facilities (s_commune_facilities) less
  // those created after the period's last day (r_facility_commune: none for a period
  // ending today), instead of counting every facility of the scope.
  absl::StatusOr<Statement*> registered = reader_->Prepare(
      use_monthly_
          ? "SELECT c.commune, c.facilities - (SELECT count(*) FROM r_facility f INDEXED BY "
            "r_facility_commune WHERE f.commune = c.commune AND f.day > ?2) FROM json_each(?1) "
            "AS j CROSS JOIN s_commune_facilities c WHERE c.commune = j.value"
          : "SELECT f.commune, count(*) FROM json_each(?1) AS j CROSS JOIN r_facility f "
            "WHERE f.commune = j.value AND f.day <= ?2 GROUP BY f.commune");
  if (!registered.ok()) return registered.status();
  std::map<int64_t, kcnet::v1::CoverageRow> rows;
  (*registered)->BindText(1, communes);
  (*registered)->BindInt(2, scope.to_day);
  absl::Status status = ForEachRow(*registered, [&](Statement& s) {
    if (s.ColumnInt(1) > 0) rows[s.ColumnInt(0)].set_registered_facilities(s.ColumnInt(1));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  // Facilities visited in the period, per commune. Whole months use the monthly
  // summaries: a whole year or a single month has its distinct count kept
  // (s_coverage_year, s_commune_month); other periods (other runs of months too) count
  // the period's visits (r_visit_commune: commune, day, facility).
  const MonthRange months = use_monthly_ ? WholeMonths(scope) : MonthRange{};
  std::string visited_sql;
  int64_t from_key = scope.from_day, to_key = scope.to_day;
  if (!months.whole ||
      (months.from != months.to && !(months.from % 100 == 1 && months.to == months.from + 11))) {
    visited_sql =
        "SELECT v.commune, count(DISTINCT v.facility) FROM json_each(?1) AS j CROSS JOIN "
        "r_visit v WHERE v.commune = j.value AND v.day BETWEEN ?2 AND ?3 GROUP BY v.commune";
  } else if (months.from % 100 == 1 && months.to == months.from + 11) {
    visited_sql =
        "SELECT c.commune, c.facilities FROM json_each(?1) AS j CROSS JOIN s_coverage_year c "
        "WHERE c.commune = j.value AND c.year BETWEEN ?2 AND ?3";
    from_key = to_key = months.from / 100;
  } else if (months.from == months.to) {
    visited_sql =
        "SELECT c.commune, c.facilities FROM json_each(?1) AS j CROSS JOIN s_commune_month c "
        "WHERE c.commune = j.value AND c.month BETWEEN ?2 AND ?3";
    from_key = to_key = months.from;
  }
  absl::StatusOr<Statement*> visited = reader_->Prepare(visited_sql);
  if (!visited.ok()) return visited.status();
  (*visited)->BindText(1, communes);
  (*visited)->BindInt(2, from_key);
  (*visited)->BindInt(3, to_key);
  status = ForEachRow(*visited, [&](Statement& s) {
    rows[s.ColumnInt(0)].set_visited_facilities(s.ColumnInt(1));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  // Per month: visits and distinct facilities visited (a facility's visits in a commune
  // count in that commune: per-commune counts add up).
  std::map<int64_t, int64_t> visits_by_month, facilities_by_month;
  absl::StatusOr<Statement*> monthly = reader_->Prepare(
      months.whole
          ? "SELECT c.month, sum(c.facilities), sum(c.visits) FROM json_each(?1) AS j "
            "CROSS JOIN s_commune_month c WHERE c.commune = j.value AND c.month BETWEEN ?2 "
            "AND ?3 GROUP BY c.month"
          : "SELECT v.month, count(DISTINCT v.facility), count(*) FROM json_each(?1) AS j "
            "CROSS JOIN r_visit v WHERE v.commune = j.value AND v.day BETWEEN ?2 AND ?3 "
            "GROUP BY v.commune, v.month");
  if (!monthly.ok()) return monthly.status();
  (*monthly)->BindText(1, communes);
  (*monthly)->BindInt(2, months.whole ? months.from : scope.from_day);
  (*monthly)->BindInt(3, months.whole ? months.to : scope.to_day);
  status = ForEachRow(*monthly, [&](Statement& s) {
    facilities_by_month[s.ColumnInt(0)] += s.ColumnInt(1);
    visits_by_month[s.ColumnInt(0)] += s.ColumnInt(2);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  kcnet::v1::CoverageRow total;
  for (auto& [commune, row] : rows) {  // communes with a registered or a visited facility
    row.set_commune_id(commune);
    if (row.registered_facilities() > 0) {
      row.set_share(static_cast<double>(row.visited_facilities()) / row.registered_facilities());
    }
    total.set_registered_facilities(total.registered_facilities() + row.registered_facilities());
    total.set_visited_facilities(total.visited_facilities() + row.visited_facilities());
    *report.add_communes() = std::move(row);
  }
  if (total.registered_facilities() > 0) {
    total.set_share(static_cast<double>(total.visited_facilities()) /
                    total.registered_facilities());
  }
  *report.mutable_total() = total;
  for (auto& m : Series(visits_by_month)) *report.add_visits_by_month() = std::move(m);
  for (auto& m : Series(facilities_by_month)) {
    *report.add_visited_facilities_by_month() = std::move(m);
  }
  return report;
}

absl::StatusOr<kcnet::v1::PipelineReport> ReportsStore::Pipeline(
    const ReportScope& scope, const kcnet::v1::PipelineRequest& request) {
  absl::flat_hash_map<int, uint32_t> limits;
  for (const kcnet::v1::StepLimit& l : request.limits()) limits[l.status()] = l.max_days();
  size_t max_items = request.max_items() == 0 ? 100 : std::min<uint32_t>(request.max_items(), 1000);
  absl::MutexLock lock(&read_mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  kcnet::v1::PipelineReport report;
  absl::StatusOr<uint64_t> cursor = ReadCursor();
  if (!cursor.ok()) return cursor.status();
  report.set_as_of_op(*cursor);
  if (!use_monthly_) {
    // For tests (set_use_monthly_summaries(false)): the same figures by three statements,
    // SQLite grouping and sorting (the pass below must answer exactly the same).
    const std::string communes = CommunesJson(scope);
    absl::StatusOr<Statement*> ages = reader_->Prepare(
        "SELECT r.status, r.since_day, count(*) FROM json_each(?1) AS j CROSS JOIN r_request r "
        "WHERE r.commune = j.value AND r.created_day BETWEEN ?2 AND ?3 "
        "GROUP BY r.status, r.since_day");
    if (!ages.ok()) return ages.status();
    std::map<int, kcnet::v1::PipelineStatusRow> statuses;
    (*ages)->BindText(1, communes);
    (*ages)->BindInt(2, scope.from_day);
    (*ages)->BindInt(3, scope.to_day);
    absl::Status status = ForEachRow(*ages, [&](Statement& s) {
      const int st = static_cast<int>(s.ColumnInt(0));
      const int64_t age = std::max<int64_t>(0, scope.today - s.ColumnInt(1));
      const int64_t n = s.ColumnInt(2);
      auto limit = limits.find(st);
      const bool overdue = limit != limits.end() && age > limit->second;
      kcnet::v1::PipelineStatusRow& row = statuses[st];
      row.set_status(static_cast<kcnet::v1::RequestStatus>(st));
      row.set_requests(row.requests() + n);
      row.set_overdue(row.overdue() + (overdue ? n : 0));
      row.set_max_age_days(std::max(row.max_age_days(), age));
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    for (auto& [st, row] : statuses) *report.add_statuses() = row;
    absl::StatusOr<Statement*> created = reader_->Prepare(
        "SELECT r.created_month, count(*) FROM json_each(?1) AS j CROSS JOIN r_request r "
        "WHERE r.commune = j.value AND r.created_day BETWEEN ?2 AND ?3 GROUP BY r.created_month");
    if (!created.ok()) return created.status();
    std::map<int64_t, int64_t> created_by_month;
    (*created)->BindText(1, communes);
    (*created)->BindInt(2, scope.from_day);
    (*created)->BindInt(3, scope.to_day);
    status = ForEachRow(*created, [&](Statement& s) {
      created_by_month[s.ColumnInt(0)] += s.ColumnInt(1);
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    // Oldest first; requests that are closed (completed, rejected, cancelled) do not wait.
    absl::StatusOr<Statement*> oldest = reader_->Prepare(
        "SELECT r.id, r.status, r.since_day, r.commune FROM json_each(?1) AS j "
        "CROSS JOIN r_request r WHERE r.commune = j.value AND r.created_day BETWEEN ?2 AND ?3 "
        "AND r.status NOT IN (?4, ?5, ?6) ORDER BY max(0, ?7 - r.since_day) DESC, r.id LIMIT ?8");
    if (!oldest.ok()) return oldest.status();
    (*oldest)->BindText(1, communes);
    (*oldest)->BindInt(2, scope.from_day);
    (*oldest)->BindInt(3, scope.to_day);
    (*oldest)->BindInt(4, kcnet::v1::REQUEST_STATUS_COMPLETED);
    (*oldest)->BindInt(5, kcnet::v1::REQUEST_STATUS_REJECTED);
    (*oldest)->BindInt(6, kcnet::v1::REQUEST_STATUS_CANCELLED);
    (*oldest)->BindInt(7, scope.today);
    (*oldest)->BindInt(8, static_cast<int64_t>(max_items));
    status = ForEachRow(*oldest, [&](Statement& s) {
      const int st = static_cast<int>(s.ColumnInt(1));
      kcnet::v1::PipelineItem* item = report.add_oldest();
      item->set_request_id(std::string(s.ColumnText(0)));
      item->set_commune_id(s.ColumnInt(3));
      item->set_status(static_cast<kcnet::v1::RequestStatus>(st));
      item->set_since_date(DayText(s.ColumnInt(2)));
      item->set_age_days(std::max<int64_t>(0, scope.today - s.ColumnInt(2)));
      auto limit = limits.find(st);
      item->set_overdue(limit != limits.end() && item->age_days() > limit->second);
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    for (auto& m : Series(created_by_month)) *report.add_created_by_month() = std::move(m);
    return report;
  }
  // Every figure comes from one pass over the period's requests in the covering index of
  // r_request (commune, created_day, status, since_day, created_month; the id is the
  // key): no request is read whole, and no row is sorted in SQLite. Per row: its status's
  // count, overdue count and largest age, its created month, and, when it is open, a
  // place among the `max_items` oldest (a bounded heap here). (Three statements before,
  // the ages and the months each grouped by a sort, read the year's requests three times.)
  // since_day is the day a request entered its status (its last event into that status,
  // else its last update), kept by the follower.
  const std::string communes = CommunesJson(scope);
  absl::StatusOr<Statement*> rows = reader_->Prepare(
      "SELECT r.status, r.since_day, r.created_month, r.commune, r.id FROM json_each(?1) AS j "
      "CROSS JOIN r_request r INDEXED BY r_request_commune WHERE r.commune = j.value AND "
      "r.created_day BETWEEN ?2 AND ?3");
  if (!rows.ok()) return rows.status();
  struct StatusCount {
    int64_t requests = 0, overdue = 0, max_age = 0;
  };
  std::map<int, StatusCount> statuses;
  std::map<int64_t, int64_t> created_by_month;
  // The oldest open requests: (age, id) with the greatest age first, ties by id; the heap's
  // top is the one that would leave first (the youngest, then the greatest id).
  struct Waiting {
    int64_t age, since_day, commune;
    int status;
    std::string id;
  };
  auto after = [](const Waiting& a, const Waiting& b) {  // a comes after b in the answer
    return a.age != b.age ? a.age < b.age : a.id > b.id;
  };
  auto heap_less = [&](const Waiting& a, const Waiting& b) { return after(b, a); };
  std::vector<Waiting> oldest;
  oldest.reserve(max_items + 1);
  (*rows)->BindText(1, communes);
  (*rows)->BindInt(2, scope.from_day);
  (*rows)->BindInt(3, scope.to_day);
  int last_status = -1;
  StatusCount* count = nullptr;
  absl::Status status = ForEachRow(*rows, [&](Statement& s) {
    const int st = static_cast<int>(s.ColumnInt(0));
    const int64_t since = s.ColumnInt(1);
    const int64_t age = std::max<int64_t>(0, scope.today - since);
    if (st != last_status) {
      count = &statuses[st];
      last_status = st;
    }
    count->requests += 1;
    auto limit = limits.find(st);
    if (limit != limits.end() && age > limit->second) count->overdue += 1;
    count->max_age = std::max(count->max_age, age);
    created_by_month[s.ColumnInt(2)] += 1;
    // Requests that are closed (completed, rejected, cancelled) do not wait.
    if (st == kcnet::v1::REQUEST_STATUS_COMPLETED || st == kcnet::v1::REQUEST_STATUS_REJECTED ||
        st == kcnet::v1::REQUEST_STATUS_CANCELLED) {
      return absl::OkStatus();
    }
    if (oldest.size() == max_items && age < oldest.front().age) return absl::OkStatus();
    Waiting w{age, since, s.ColumnInt(3), st, std::string(s.ColumnText(4))};
    if (oldest.size() == max_items) {
      if (!after(oldest.front(), w)) return absl::OkStatus();
      std::pop_heap(oldest.begin(), oldest.end(), heap_less);
      oldest.pop_back();
    }
    oldest.push_back(std::move(w));
    std::push_heap(oldest.begin(), oldest.end(), heap_less);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  for (const auto& [st, c] : statuses) {
    kcnet::v1::PipelineStatusRow* row = report.add_statuses();
    row->set_status(static_cast<kcnet::v1::RequestStatus>(st));
    row->set_requests(c.requests);
    row->set_overdue(c.overdue);
    row->set_max_age_days(c.max_age);
  }
  // Oldest first, ties by id.
  std::sort(oldest.begin(), oldest.end(),
            [&](const Waiting& a, const Waiting& b) { return after(b, a); });
  for (Waiting& w : oldest) {
    kcnet::v1::PipelineItem* item = report.add_oldest();
    item->set_request_id(std::move(w.id));
    item->set_commune_id(w.commune);
    item->set_status(static_cast<kcnet::v1::RequestStatus>(w.status));
    item->set_since_date(DayText(w.since_day));
    item->set_age_days(w.age);
    auto limit = limits.find(w.status);
    item->set_overdue(limit != limits.end() && w.age > limit->second);
  }
  for (auto& m : Series(created_by_month)) *report.add_created_by_month() = std::move(m);
  return report;
}

namespace {

// The days [from, to] split for the counters: the whole calendar months inside them
// (YYYYMM, `months_from` > `months_to` when none) and the days before and after those
// months (each range empty when its from is above its to).
struct DaySplit {
  int64_t head_from = 1, head_to = 0;
  int64_t months_from = 1, months_to = 0;
  int64_t tail_from = 1, tail_to = 0;
};
DaySplit SplitByWholeMonths(int64_t from, int64_t to, bool use_months) {
  DaySplit split;
  const absl::CivilDay epoch(1970, 1, 1);
  const absl::CivilDay first = epoch + from, last = epoch + to;
  // The first day of the first whole month, and the last day of the last one.
  const absl::CivilDay start =
      first.day() == 1 ? first : absl::CivilDay(absl::CivilMonth(first) + 1);
  const absl::CivilDay end =
      (last + 1).day() == 1 ? last : absl::CivilDay(absl::CivilMonth(last)) - 1;
  if (!use_months || start > end || to < from) {
    split.head_from = from;
    split.head_to = to;
    return split;
  }
  split.head_from = from;
  split.head_to = (start - epoch) - 1;
  split.months_from = MonthOf(start - epoch);
  split.months_to = MonthOf(end - epoch);
  split.tail_from = (end - epoch) + 1;
  split.tail_to = to;
  return split;
}

// The position of a list, or the first item when the page has none for it.
ListPosition PositionOf(const ReportPage& page, size_t list) {
  return list < page.from.size() ? page.from[list] : ListPosition();
}

}  // namespace

absl::StatusOr<kcnet::v1::ActivityReport> ReportsStore::Activity(
    const ReportScope& scope, uint32_t inactive_days,
    std::vector<kcnet::v1::CollaboratorActivity> users, ReportPage* page) {
  if (inactive_days == 0) inactive_days = 30;
  ReportPage everything;  // no paging asked: one page of every row
  if (page == nullptr) page = &everything;
  absl::MutexLock lock(&read_mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  kcnet::v1::ActivityReport report;
  absl::StatusOr<uint64_t> cursor = ReadCursor();
  if (!cursor.ok()) return cursor.status();
  report.set_as_of_op(*cursor);
  struct Counts {
    int64_t visits = 0, requests = 0, last_day = -1;
  };
  absl::flat_hash_map<int64_t, Counts> by_user;
  std::map<int64_t, int64_t> visits_by_month;
  // Counts in the period: the period's rows of every commune of the scope, summed by the
  // statements (json_each of the communes, one index seek each). Whole months read the
  // monthly counters (s_visit_month, s_request_month), other periods the visits (the
  // covering index r_visit_commune) and the requests.
  const std::string communes = CommunesJson(scope);
  const MonthRange months = use_monthly_ ? WholeMonths(scope) : MonthRange{};
  absl::StatusOr<Statement*> visits = reader_->Prepare(
      months.whole
          // Rows in the primary key's order, summed here (no sort in SQLite).
          ? "SELECT v.collaborator, v.month, v.visits FROM json_each(?1) AS j CROSS JOIN "
            "s_visit_month v WHERE v.commune = j.value AND v.month BETWEEN ?2 AND ?3"
          : "SELECT v.collaborator, v.day, count(*) FROM json_each(?1) AS j CROSS JOIN "
            "r_visit v INDEXED BY r_visit_commune WHERE v.commune = j.value AND v.day BETWEEN "
            "?2 AND ?3 GROUP BY v.collaborator, v.day");
  if (!visits.ok()) return visits.status();
  absl::StatusOr<Statement*> requests = reader_->Prepare(
      months.whole
          ? "SELECT r.author, sum(r.requests) FROM json_each(?1) AS j CROSS JOIN "
            "s_request_month r WHERE r.commune = j.value AND r.month BETWEEN ?2 AND ?3 "
            "GROUP BY r.author"
          : "SELECT r.author, count(*) FROM json_each(?1) AS j CROSS JOIN r_request r "
            "WHERE r.commune = j.value AND r.created_day BETWEEN ?2 AND ?3 GROUP BY r.author");
  if (!requests.ok()) return requests.status();
  for (Statement* s : {*visits, *requests}) {
    s->BindText(1, communes);
    s->BindInt(2, months.whole ? months.from : scope.from_day);
    s->BindInt(3, months.whole ? months.to : scope.to_day);
  }
  const bool monthly = months.whole;
  absl::Status counted = ForEachRow(*visits, [&](Statement& s) {
    by_user[s.ColumnInt(0)].visits += s.ColumnInt(2);
    visits_by_month[monthly ? s.ColumnInt(1) : MonthOf(s.ColumnInt(1))] += s.ColumnInt(2);
    return absl::OkStatus();
  });
  if (!counted.ok()) return counted;
  counted = ForEachRow(*requests, [&](Statement& s) {
    by_user[s.ColumnInt(0)].requests += s.ColumnInt(1);
    return absl::OkStatus();
  });
  if (!counted.ok()) return counted;
  // The whole listing, by user id: the given users and every user active in the period.
  std::set<int64_t> listing;
  for (const auto& u : users) listing.insert(u.user_id());
  for (const auto& [user, counts] : by_user) {
    if (counts.visits != 0 || counts.requests != 0) listing.insert(user);
  }
  report.set_total_collaborators(static_cast<int64_t>(listing.size()));
  // The inactive users of the whole listing, without each one's last activity: a user is
  // active when it has a visit or a request creation in the scope on a day in
  // (today - inactive_days, period's end] (its last activity up to the period's end is
  // then less than inactive_days old). Whole months of that window read the monthly
  // counters, its other days the visits and requests.
  const int64_t window_from = scope.today - static_cast<int64_t>(inactive_days) + 1;
  absl::flat_hash_set<int64_t> active;
  if (window_from <= scope.to_day) {
    const DaySplit w = SplitByWholeMonths(window_from, scope.to_day, use_monthly_);
    absl::StatusOr<Statement*> recent = reader_->Prepare(
        "SELECT v.collaborator FROM json_each(?1) AS j CROSS JOIN r_visit v "
        "INDEXED BY r_visit_commune WHERE v.commune = j.value AND v.day BETWEEN ?2 AND ?3 "
        "UNION SELECT v.collaborator FROM json_each(?1) AS j CROSS JOIN r_visit v "
        "INDEXED BY r_visit_commune WHERE v.commune = j.value AND v.day BETWEEN ?4 AND ?5 "
        "UNION SELECT v.collaborator FROM json_each(?1) AS j CROSS JOIN s_visit_month v "
        "WHERE v.commune = j.value AND v.month BETWEEN ?6 AND ?7 "
        "UNION SELECT r.author FROM json_each(?1) AS j CROSS JOIN r_request r "
        "WHERE r.commune = j.value AND r.created_day BETWEEN ?2 AND ?3 "
        "UNION SELECT r.author FROM json_each(?1) AS j CROSS JOIN r_request r "
        "WHERE r.commune = j.value AND r.created_day BETWEEN ?4 AND ?5 "
        "UNION SELECT r.author FROM json_each(?1) AS j CROSS JOIN s_request_month r "
        "WHERE r.commune = j.value AND r.month BETWEEN ?6 AND ?7");
    if (!recent.ok()) return recent.status();
    (*recent)->BindText(1, communes);
    (*recent)->BindInt(2, w.head_from);
    (*recent)->BindInt(3, w.head_to);
    (*recent)->BindInt(4, w.tail_from);
    (*recent)->BindInt(5, w.tail_to);
    (*recent)->BindInt(6, w.months_from);
    (*recent)->BindInt(7, w.months_to);
    counted = ForEachRow(*recent, [&](Statement& s) {
      active.insert(s.ColumnInt(0));
      return absl::OkStatus();
    });
    if (!counted.ok()) return counted;
  }
  int64_t inactive_total = 0;
  for (int64_t user : listing) inactive_total += active.contains(user) ? 0 : 1;
  report.set_total_inactive(inactive_total);
  // This page: the listing's users after the position, at most page_size of them.
  const ListPosition from = PositionOf(*page, 0);
  page->next.assign(1, ListPosition());
  std::vector<int64_t> user_ids;
  if (!from.done) {
    auto it = from.started ? listing.upper_bound(from.major) : listing.begin();
    for (; it != listing.end(); ++it) {
      if (page->page_size > 0 && static_cast<int>(user_ids.size()) == page->page_size) break;
      user_ids.push_back(*it);
    }
    if (it != listing.end()) {
      page->next[0].started = true;
      page->next[0].major = user_ids.back();
    } else {
      page->next[0].done = true;
    }
  } else {
    page->next[0].done = true;
  }
  // The last activity of each user of the page in the scope, any time up to the period's
  // end, and each one's devices: one statement each over the page's users (json_each of
  // the ids), the scope's communes read once into a set by SQLite; each user is one index
  // seek into its own rows, newest first.
  const std::string users_json = absl::StrCat("[", absl::StrJoin(user_ids, ","), "]");
  absl::StatusOr<Statement*> last = reader_->Prepare(
      "SELECT u.value, coalesce((SELECT r.created_day FROM r_request r "
      "INDEXED BY r_request_author WHERE r.author = u.value AND r.created_day <= ?2 AND "
      "r.commune IN (SELECT value FROM json_each(?3)) ORDER BY r.created_day DESC LIMIT 1), -1) "
      "FROM json_each(?1) AS u");
  if (!last.ok()) return last.status();
  (*last)->BindText(1, users_json);
  (*last)->BindInt(2, scope.to_day);
  (*last)->BindText(3, communes);
  absl::Status found = ForEachRow(*last, [&](Statement& s) {
    Counts& c = by_user[s.ColumnInt(0)];
    c.last_day = std::max(c.last_day, s.ColumnInt(1));
    return absl::OkStatus();
  });
  if (!found.ok()) return found;
  // Each user's last visit: the user's months with visits in the scope, newest first
  // (the counters' index by collaborator), and in each month's communes the user's last
  // visit on a day up to the period's end (r_visit_commune: the commune's visits of that
  // month). The first month that has one holds the last visit; only the period's own
  // month can have none (its visits all after the period's end).
  absl::StatusOr<Statement*> user_months = reader_->Prepare(
      "SELECT m.month, m.commune FROM s_visit_month m INDEXED BY s_visit_month_collaborator "
      "WHERE m.collaborator = ?1 AND m.month <= ?2 ORDER BY m.month DESC");
  if (!user_months.ok()) return user_months.status();
  absl::StatusOr<Statement*> last_visit = reader_->Prepare(
      "SELECT max(v.day) FROM r_visit v INDEXED BY r_visit_commune WHERE v.commune = ?1 AND "
      "v.day BETWEEN ?2 AND ?3 AND v.collaborator = ?4");
  if (!last_visit.ok()) return last_visit.status();
  // (The scope's communes are tested here: an IN (json_each) in the statement would read
  // the whole list again for every user.)
  const absl::flat_hash_set<int64_t> scope_communes(scope.communes.begin(), scope.communes.end());
  for (int64_t user : user_ids) {
    (*user_months)->BindInt(1, user);
    (*user_months)->BindInt(2, MonthOf(scope.to_day));
    int64_t best = -1, best_month = -1;
    while (true) {
      absl::StatusOr<bool> row = (*user_months)->Step();
      if (!row.ok()) {
        (*user_months)->Reset();
        return row.status();
      }
      if (!*row) break;
      const int64_t month = (*user_months)->ColumnInt(0);
      if (best >= 0 && month < best_month) break;  // an older month: not the last visit
      if (!scope_communes.contains((*user_months)->ColumnInt(1))) continue;
      const absl::CivilDay first(month / 100, month % 100, 1);
      const int64_t from = first - absl::CivilDay(1970, 1, 1);
      const int64_t to = std::min(scope.to_day, absl::CivilDay(absl::CivilMonth(first) + 1) -
                                                    absl::CivilDay(1970, 1, 1) - 1);
      (*last_visit)->BindInt(1, (*user_months)->ColumnInt(1));
      (*last_visit)->BindInt(2, from);
      (*last_visit)->BindInt(3, to);
      (*last_visit)->BindInt(4, user);
      absl::Status status = ForEachRow(*last_visit, [&](Statement& s) {
        if (!s.IsNull(0) && s.ColumnInt(0) > best) {
          best = s.ColumnInt(0);
          best_month = month;
        }
        return absl::OkStatus();
      });
      if (!status.ok()) {
        (*user_months)->Reset();
        return status;
      }
    }
    (*user_months)->Reset();
    Counts& c = by_user[user];
    c.last_day = std::max(c.last_day, best);
  }
  std::map<int64_t, kcnet::v1::CollaboratorActivity> out;
  for (int64_t user : user_ids) out[user].set_user_id(user);
  for (auto& u : users) {
    auto it = out.find(u.user_id());
    if (it != out.end()) it->second = std::move(u);
  }
  absl::StatusOr<Statement*> devices = reader_->Prepare(
      "SELECT d.user_id, d.device_id, d.last_sync_ms, d.pending_writes FROM json_each(?1) AS u "
      "CROSS JOIN r_device d WHERE d.user_id = u.value ORDER BY d.device_id");
  if (!devices.ok()) return devices.status();
  (*devices)->BindText(1, users_json);
  found = ForEachRow(*devices, [&](Statement& s) {
    kcnet::v1::DeviceActivity* d = out[s.ColumnInt(0)].add_devices();
    d->set_device_id(std::string(s.ColumnText(1)));
    d->set_last_sync_ms(s.ColumnInt(2));
    d->set_pending_writes(static_cast<uint32_t>(s.ColumnInt(3)));
    return absl::OkStatus();
  });
  if (!found.ok()) return found;
  for (auto& entry : out) {
    const int64_t user = entry.first;
    kcnet::v1::CollaboratorActivity& a = entry.second;
    auto it = by_user.find(user);
    const Counts c = it == by_user.end() ? Counts{} : it->second;
    a.set_visits(c.visits);
    a.set_requests(c.requests);
    if (c.last_day >= 0) a.set_last_activity_date(DayText(c.last_day));
    a.set_inactive(c.last_day < 0 || scope.today - c.last_day >= inactive_days);
    if (a.inactive()) report.add_inactive_user_ids(user);
    *report.add_collaborators() = std::move(a);
  }
  for (auto& m : Series(visits_by_month)) *report.add_visits_by_month() = std::move(m);
  return report;
}

absl::StatusOr<kcnet::v1::QualityReport> ReportsStore::Quality(const ReportScope& scope,
                                                               double max_km, ReportPage* page) {
  if (max_km <= 0) max_km = 5.0;
  ReportPage everything;  // no paging asked: one page of every item
  if (page == nullptr) page = &everything;
  const int64_t limit = page->page_size > 0 ? page->page_size : -1;  // SQLite: -1, none
  absl::MutexLock lock(&read_mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  kcnet::v1::QualityReport report;
  absl::StatusOr<uint64_t> cursor = ReadCursor();
  if (!cursor.ok()) return cursor.status();
  report.set_as_of_op(*cursor);
  // One statement per figure over every commune of the scope (json_each of the list).
  const std::string communes = CommunesJson(scope);
  // Visits and visits without GPS: whole months from the monthly counters, other periods
  // from the visits (the covering index r_visit_commune).
  const MonthRange months = use_monthly_ ? WholeMonths(scope) : MonthRange{};
  absl::StatusOr<Statement*> counts = reader_->Prepare(
      months.whole
          ? "SELECT v.month, sum(v.visits), sum(v.no_gps) FROM json_each(?1) AS j CROSS JOIN "
            "s_commune_month v WHERE v.commune = j.value AND v.month BETWEEN ?2 AND ?3 "
            "GROUP BY v.month"
          : "SELECT v.day, count(*), sum(v.lat IS NULL) FROM json_each(?1) AS j CROSS JOIN "
            "r_visit v INDEXED BY r_visit_commune WHERE v.commune = j.value AND v.day BETWEEN "
            "?2 AND ?3 GROUP BY v.day");
  if (!counts.ok()) return counts.status();
  // Far visits: each visit keeps its distance to its facility's point (dist_km); at the
  // default limit or above, only the index of visits beyond 5 km is read. Their number
  // is counted over the index, the page read after the position in (commune, id) order.
  const bool far_index = max_km >= 5.0 && use_monthly_;
  const std::string far_from =
      far_index ? "FROM json_each(?1) AS j CROSS JOIN r_visit v INDEXED BY r_visit_far "
                  "WHERE v.commune = j.value AND v.day BETWEEN ?2 AND ?3 AND v.dist_km > 5.0 "
                  "AND v.dist_km > ?4"
                : "FROM json_each(?1) AS j CROSS JOIN r_visit v WHERE v.commune = j.value AND "
                  "v.day BETWEEN ?2 AND ?3 AND v.dist_km > ?4";
  absl::StatusOr<Statement*> far_count = reader_->Prepare("SELECT count(*) " + far_from);
  if (!far_count.ok()) return far_count.status();
  // The page: the scope's communes in order (an IN list, which SQLite reads sorted), each
  // commune's far visits sorted by id, until the page is full: a first page reads the far
  // visits of its first few dozen communes, not every far visit of the scope sorted.
  const std::string far_page_from =
      far_index ? "FROM r_visit v INDEXED BY r_visit_far WHERE v.commune IN (SELECT value FROM "
                  "json_each(?1)) AND v.commune >= ?5 AND v.day BETWEEN ?2 AND ?3 AND "
                  "v.dist_km > 5.0 AND v.dist_km > ?4"
                : "FROM r_visit v WHERE v.commune IN (SELECT value FROM json_each(?1)) AND "
                  "v.commune >= ?5 AND v.day BETWEEN ?2 AND ?3 AND v.dist_km > ?4";
  absl::StatusOr<Statement*> far =
      reader_->Prepare("SELECT v.id, v.facility, v.dist_km, v.commune " + far_page_from +
                       " AND (v.commune, v.id) > (?5, ?6) ORDER BY v.commune, v.id LIMIT ?7");
  if (!far.ok()) return far.status();
  // Duplicate groups: one pass over the scope's facilities in (commune, folded name, id)
  // order (the index r_facility_folded, the communes' IN list read in order: no sort),
  // grouped here; every group is counted, the page's are listed.
  absl::StatusOr<Statement*> dups = reader_->Prepare(
      "SELECT f.commune, f.folded, f.id FROM r_facility f WHERE f.commune IN "
      "(SELECT value FROM json_each(?1)) ORDER BY f.commune, f.folded, f.id");
  if (!dups.ok()) return dups.status();
  // Approvals in the period whose facility had no visit in the 365 days up to the
  // approval: each is found once (the visits' check is the cost), counted, and kept
  // when it is on the page.
  absl::StatusOr<Statement*> approvals = reader_->Prepare(
      "SELECT DISTINCT e.commune, r.id FROM json_each(?1) AS j CROSS JOIN r_event e "
      "JOIN r_request r ON r.id = e.request "
      "WHERE e.commune = j.value AND e.action = ?4 AND e.day BETWEEN ?2 AND ?3 AND NOT EXISTS "
      "(SELECT 1 FROM r_visit v WHERE v.facility = r.facility AND v.day > e.day - 365 AND "
      "v.day <= e.day) ORDER BY e.commune, r.id");
  if (!approvals.ok()) return approvals.status();
  std::map<int64_t, int64_t> no_gps_by_month;
  (*counts)->BindText(1, communes);
  (*counts)->BindInt(2, months.whole ? months.from : scope.from_day);
  (*counts)->BindInt(3, months.whole ? months.to : scope.to_day);
  absl::Status status = ForEachRow(*counts, [&](Statement& s) {
    report.set_visits(report.visits() + s.ColumnInt(1));
    report.set_visits_without_gps(report.visits_without_gps() + s.ColumnInt(2));
    if (s.ColumnInt(2) > 0) {
      no_gps_by_month[months.whole ? s.ColumnInt(0) : MonthOf(s.ColumnInt(0))] += s.ColumnInt(2);
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  for (Statement* s : {*far_count, *far, *approvals}) {
    s->BindText(1, communes);
    s->BindInt(2, scope.from_day);
    s->BindInt(3, scope.to_day);
  }
  (*far_count)->BindDouble(4, max_km);
  status = ForEachRow(*far_count, [&](Statement& s) {
    report.set_visits_far_from_facility(s.ColumnInt(0));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  page->next.assign(3, ListPosition());
  // Reads one list's page: `bind` binds the position and the limit (one more than the
  // page, to know whether another follows), `add` takes a row and returns its key.
  auto read_page = [&](size_t list, Statement* s,
                       const std::function<void(int64_t, std::string)>& bind,
                       const std::function<std::pair<int64_t, std::string>(Statement&)>& add) {
    const ListPosition from = PositionOf(*page, list);
    ListPosition& next = page->next[list];
    if (from.done) {
      next.done = true;
      return absl::OkStatus();
    }
    bind(from.started ? from.major : std::numeric_limits<int64_t>::min(),
         from.started ? from.minor : std::string());
    int64_t rows = 0;
    bool more = false;
    absl::Status st = ForEachRow(s, [&](Statement& row) {
      if (limit > 0 && rows == limit) {
        more = true;
        return absl::OkStatus();
      }
      ++rows;
      std::pair<int64_t, std::string> key = add(row);
      next.major = key.first;
      next.minor = std::move(key.second);
      return absl::OkStatus();
    });
    next.started = more;
    next.done = !more;
    return st;
  };
  status = read_page(
      0, *far,
      [&](int64_t commune, std::string id) {
        (*far)->BindDouble(4, max_km);
        (*far)->BindInt(5, commune);
        (*far)->BindText(6, id);
        (*far)->BindInt(7, limit > 0 ? limit + 1 : -1);
      },
      [&](Statement& s) {
        kcnet::v1::FarVisit* v = report.add_far_visits();
        v->set_visit_id(std::string(s.ColumnText(0)));
        v->set_facility_id(std::string(s.ColumnText(1)));
        v->set_commune_id(s.ColumnInt(3));
        v->set_distance_km(s.ColumnDouble(2));
        return std::make_pair(v->commune_id(), v->visit_id());
      });
  if (!status.ok()) return status;
  if (use_monthly_) {
    // The groups kept by the follower (s_duplicate: every (commune, folded name) with two
    // or more live facilities): counted over the scope's communes, one page of them read
    // after the position, each group's facilities from r_facility_folded.
    const ListPosition from = PositionOf(*page, 1);
    ListPosition& next = page->next[1];
    next.done = true;
    absl::StatusOr<Statement*> count = reader_->Prepare(
        "SELECT count(*) FROM json_each(?1) AS j CROSS JOIN s_duplicate d "
        "WHERE d.commune = j.value");
    if (!count.ok()) return count.status();
    (*count)->BindText(1, communes);
    status = ForEachRow(*count, [&](Statement& s) {
      report.set_duplicate_groups(s.ColumnInt(0));
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    absl::StatusOr<Statement*> groups = reader_->Prepare(
        "SELECT d.commune, d.folded FROM s_duplicate d WHERE d.commune IN "
        "(SELECT value FROM json_each(?1)) AND (d.commune, d.folded) > (?2, ?3) "
        "ORDER BY d.commune, d.folded LIMIT ?4");
    if (!groups.ok()) return groups.status();
    absl::StatusOr<Statement*> members = reader_->Prepare(
        "SELECT id FROM r_facility INDEXED BY r_facility_folded WHERE commune = ?1 AND "
        "folded = ?2 ORDER BY id");
    if (!members.ok()) return members.status();
    if (!from.done) {
      (*groups)->BindText(1, communes);
      (*groups)->BindInt(2, from.started ? from.major : std::numeric_limits<int64_t>::min());
      (*groups)->BindText(3, from.started ? from.minor : std::string());
      (*groups)->BindInt(4, limit > 0 ? limit + 1 : -1);
      int64_t listed = 0;
      status = ForEachRow(*groups, [&](Statement& s) {
        if (limit > 0 && listed == limit) {
          next.done = false;  // more follow: resume after the last one listed
          next.started = true;
          return absl::OkStatus();
        }
        ++listed;
        kcnet::v1::DuplicateFacilities* d = report.add_duplicates();
        d->set_commune_id(s.ColumnInt(0));
        d->set_folded_name(std::string(s.ColumnText(1)));
        (*members)->BindInt(1, d->commune_id());
        (*members)->BindText(2, d->folded_name());
        absl::Status st = ForEachRow(*members, [&](Statement& m) {
          d->add_facility_ids(std::string(m.ColumnText(0)));
          return absl::OkStatus();
        });
        next.major = d->commune_id();
        next.minor = d->folded_name();
        return st;
      });
      if (!status.ok()) return status;
    }
  } else {
    // For tests (set_use_monthly_summaries(false)): one pass over the scope's facilities in
    // (commune, folded name, id) order, the groups found here.
    const ListPosition from = PositionOf(*page, 1);
    ListPosition& next = page->next[1];
    next.done = true;
    int64_t listed = 0, groups = 0;
    // The group being read: its commune, folded name and facilities.
    int64_t commune = 0;
    std::string folded;
    std::vector<std::string> ids;
    auto end_group = [&]() {
      if (ids.size() < 2) return;
      ++groups;
      if (from.done || !next.done) return;
      if (from.started && std::make_pair(commune, absl::string_view(folded)) <=
                              std::make_pair(from.major, absl::string_view(from.minor))) {
        return;
      }
      if (limit > 0 && listed == limit) {
        next.done = false;  // more follow: resume after the last one listed
        next.started = true;
        return;
      }
      ++listed;
      kcnet::v1::DuplicateFacilities* d = report.add_duplicates();
      d->set_commune_id(commune);
      d->set_folded_name(folded);
      for (std::string& id : ids) d->add_facility_ids(std::move(id));
      next.major = commune;
      next.minor = folded;
    };
    (*dups)->BindText(1, communes);
    status = ForEachRow(*dups, [&](Statement& s) {
      if (ids.empty() || s.ColumnInt(0) != commune || s.ColumnText(1) != folded) {
        end_group();
        ids.clear();
        commune = s.ColumnInt(0);
        folded = std::string(s.ColumnText(1));
      }
      ids.emplace_back(s.ColumnText(2));
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    end_group();
    report.set_duplicate_groups(groups);
  }
  // Approvals: every one counted, the page's listed.
  {
    const ListPosition from = PositionOf(*page, 2);
    ListPosition& next = page->next[2];
    next.done = true;
    (*approvals)->BindInt(4, kcnet::v1::REQUEST_ACTION_APPROVE);
    int64_t listed = 0;
    status = ForEachRow(*approvals, [&](Statement& s) {
      report.set_approved_without_recent_visit(report.approved_without_recent_visit() + 1);
      if (from.done || !next.done) return absl::OkStatus();
      const int64_t commune = s.ColumnInt(0);
      const absl::string_view id = s.ColumnText(1);
      if (from.started && std::make_pair(commune, id) <=
                              std::make_pair(from.major, absl::string_view(from.minor))) {
        return absl::OkStatus();
      }
      if (limit > 0 && listed == limit) {
        next.done = false;  // more follow: resume after the last one listed
        next.started = true;
        return absl::OkStatus();
      }
      ++listed;
      report.add_approved_without_recent_visit_ids(std::string(id));
      next.major = commune;
      next.minor = std::string(id);
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
  }
  for (auto& m : Series(no_gps_by_month)) *report.add_visits_without_gps_by_month() = std::move(m);
  return report;
}

namespace {

// Adds a measured row's indicators to a summary.
void AddMeasured(const kcnet::v1::OutcomeRow& row, kcnet::v1::OutcomeSummary* sum) {
  sum->set_measured_requests(sum->measured_requests() + 1);
  sum->set_workers_before(sum->workers_before() + row.workers_before());
  sum->set_workers_after(sum->workers_after() + row.workers_after());
  sum->set_workers_delta(sum->workers_after() - sum->workers_before());
  sum->set_product_lines_before(sum->product_lines_before() + row.product_lines_before());
  sum->set_product_lines_after(sum->product_lines_after() + row.product_lines_after());
  sum->set_product_lines_delta(sum->product_lines_after() - sum->product_lines_before());
  sum->set_annual_output_vnd_before(sum->annual_output_vnd_before() +
                                    row.annual_output_vnd_before());
  sum->set_annual_output_vnd_after(sum->annual_output_vnd_after() + row.annual_output_vnd_after());
  sum->set_annual_output_vnd_delta(sum->annual_output_vnd_after() -
                                   sum->annual_output_vnd_before());
}

}  // namespace

absl::StatusOr<kcnet::v1::OutcomesReport> ReportsStore::Outcomes(const ReportScope& scope) {
  absl::MutexLock lock(&read_mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx =
      sync::Transaction::Begin(reader_.get(), sync::Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  kcnet::v1::OutcomesReport report;
  absl::StatusOr<uint64_t> cursor = ReadCursor();
  if (!cursor.ok()) return cursor.status();
  report.set_as_of_op(*cursor);
  // Completed requests with the day they entered COMPLETED (as in the pipeline: the last
  // event into it, else the last update) and their baseline day (the last APPROVE event,
  // else the creation day).
  absl::StatusOr<Statement*> requests = reader_->Prepare(
      "SELECT id, facility, done, base FROM (SELECT r.id AS id, r.facility AS facility, "
      "coalesce((SELECT max(e.day) FROM r_event e WHERE e.request = r.id AND e.to_status = ?4), "
      "r.updated_day) AS done, coalesce((SELECT max(e.day) FROM r_event e WHERE e.request = "
      "r.id AND e.action = ?5), r.created_day) AS base FROM r_request r WHERE r.commune = ?1 "
      "AND r.status = ?4) WHERE done BETWEEN ?2 AND ?3 ORDER BY done, id");
  if (!requests.ok()) return requests.status();
  // A visit records the indicators when its workers are above 0 (a facility has at least
  // its owner working); ties on a day go by visit id.
  absl::StatusOr<Statement*> before = reader_->Prepare(
      "SELECT id, day, workers, product_lines, output_vnd FROM r_visit WHERE facility = ?1 AND "
      "day <= ?2 AND workers > 0 ORDER BY day DESC, id DESC LIMIT 1");
  if (!before.ok()) return before.status();
  absl::StatusOr<Statement*> after = reader_->Prepare(
      "SELECT id, day, workers, product_lines, output_vnd FROM r_visit WHERE facility = ?1 AND "
      "day >= ?2 AND workers > 0 ORDER BY day, id LIMIT 1");
  if (!after.ok()) return after.status();
  kcnet::v1::OutcomeSummary total;
  std::map<int64_t, int64_t> completed_by_month;
  for (int64_t commune : scope.communes) {
    kcnet::v1::OutcomeSummary sum;
    sum.set_commune_id(commune);
    struct Pending {
      kcnet::v1::OutcomeRow row;
      int64_t baseline_day, completed_day;
    };
    std::vector<Pending> rows;
    (*requests)->BindInt(1, commune);
    (*requests)->BindInt(2, scope.from_day);
    (*requests)->BindInt(3, scope.to_day);
    (*requests)->BindInt(4, kcnet::v1::REQUEST_STATUS_COMPLETED);
    (*requests)->BindInt(5, kcnet::v1::REQUEST_ACTION_APPROVE);
    absl::Status status = ForEachRow(*requests, [&](Statement& s) {
      kcnet::v1::OutcomeRow row;
      row.set_request_id(std::string(s.ColumnText(0)));
      row.set_facility_id(std::string(s.ColumnText(1)));
      row.set_commune_id(commune);
      row.set_completed_date(DayText(s.ColumnInt(2)));
      row.set_baseline_date(DayText(s.ColumnInt(3)));
      completed_by_month[MonthOf(s.ColumnInt(2))] += 1;
      rows.push_back(Pending{std::move(row), s.ColumnInt(3), s.ColumnInt(2)});
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    for (Pending& pending : rows) {
      kcnet::v1::OutcomeRow& row = pending.row;
      // The request rows were read first: one statement steps at a time on the reader.
      bool has_before = false, has_after = false;
      for (Statement* s : {*before, *after}) {
        const bool is_before = s == *before;
        s->BindText(1, row.facility_id());
        s->BindInt(2, is_before ? pending.baseline_day : pending.completed_day);
        status = ForEachRow(s, [&](Statement& v) {
          if (is_before) {
            has_before = true;
            row.set_before_visit_id(std::string(v.ColumnText(0)));
            row.set_before_date(DayText(v.ColumnInt(1)));
            row.set_workers_before(v.ColumnInt(2));
            row.set_product_lines_before(v.ColumnInt(3));
            row.set_annual_output_vnd_before(v.ColumnInt(4));
          } else {
            has_after = true;
            row.set_after_visit_id(std::string(v.ColumnText(0)));
            row.set_after_date(DayText(v.ColumnInt(1)));
            row.set_workers_after(v.ColumnInt(2));
            row.set_product_lines_after(v.ColumnInt(3));
            row.set_annual_output_vnd_after(v.ColumnInt(4));
          }
          return absl::OkStatus();
        });
        if (!status.ok()) return status;
      }
      row.set_measured(has_before && has_after);
      sum.set_completed_requests(sum.completed_requests() + 1);
      total.set_completed_requests(total.completed_requests() + 1);
      if (row.measured()) {
        AddMeasured(row, &sum);
        AddMeasured(row, &total);
      }
      *report.add_rows() = std::move(row);
    }
    if (sum.completed_requests() > 0) *report.add_communes() = std::move(sum);
  }
  *report.mutable_total() = std::move(total);
  for (auto& m : Series(completed_by_month)) *report.add_completed_by_month() = std::move(m);
  return report;
}

// ---------------------------------------------------------------------------------------

ReportsFollower::ReportsFollower(ReportsStore* reports, std::function<uint64_t()> last_op,
                                 std::function<void(const absl::Status&)> on_error,
                                 absl::Duration poll, absl::Duration busy_interval)
    : reports_(reports),
      last_op_(std::move(last_op)),
      on_error_(std::move(on_error)),
      poll_(poll),
      busy_interval_(busy_interval),
      thread_([this] { Run(); }) {}

ReportsFollower::~ReportsFollower() { Stop(); }

void ReportsFollower::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void ReportsFollower::Run() {
  uint64_t cursor = 0;
  absl::StatusOr<uint64_t> start = reports_->Cursor();
  if (start.ok()) cursor = *start;
  bool first = true;
  absl::Time last_catch_up = absl::InfinitePast();
  while (!stop_.WaitForNotificationWithTimeout(first ? absl::ZeroDuration() : poll_)) {
    first = false;
    const uint64_t last = last_op_();
    if (last <= cursor) continue;
    // While writes keep coming (the last catch-up began less than busy_interval ago), the
    // backlog grows until busy_interval has passed or it holds kBusyBatchOps ops: a
    // catch-up's cost per write falls with its size (each transaction rewrites the same
    // counters' pages and commits once), and a write is still counted well within 1 s.
    // A write after a quiet spell is counted at the next poll.
    const absl::Time now = absl::Now();
    if (now - last_catch_up < busy_interval_ && last - cursor < kBusyBatchOps) continue;
    last_catch_up = now;
    absl::StatusOr<uint64_t> reached = reports_->CatchUp();
    if (!reached.ok()) {
      if (on_error_) on_error_(reached.status());
      continue;
    }
    cursor = *reached;
  }
}

}  // namespace kcnet::server::reports
