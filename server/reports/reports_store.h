// ReportsStore: the summary tables behind the reports (DATA_DIR/reports.db), kept up to date
// from the server store's change log, and the report queries over them.
//
// The summaries are a narrow projection of each live record (r_facility, r_visit,
// r_request, r_event) plus counters per month (s_visit_month, s_commune_month,
// s_coverage_year, s_request_month), so that a period of whole months is answered from rows
// per commune and month, not per visit (docs/REPORTS.md, "Which path answers a period"), and
// per commune (s_commune_facilities: live facilities; s_duplicate: the duplicate groups).
// They follow the record store (kcnet.db, attached read-only in spirit: never written here) by op:
// CatchUp() reads, in one transaction, every record whose op is above the summaries' cursor (per
// bucket, through the store's (bucket, op) index and its _buckets table), takes each record's old
// contribution out and puts its new one in, and moves the cursor to the store's last op in the same
// transaction. So the summaries always count exactly the ops up to their cursor, a crash loses
// nothing, and a catch-up after a restore or an upgrade is the same code. Within a catch-up
// transaction, the summary counters' changes are summed in memory per key and written once per key
// at its end (a visit costs its own row's statements; the counters cost one upsert per distinct key
// of the batch).
//
// A backlog (a first start over an existing store) is counted in slices of at most
// 200,000 ops, one transaction each. Within a slice the cursor is exact; between slices of
// a backlog a record changed again after the slice's last op is counted with its later
// state in a later slice (so, while a backlog is being counted, `as_of_op` can miss such a
// record's earlier version). Once caught up, every answer is exact. Rebuild() empties the
// summaries and fills them again in one transaction at one snapshot of the store: the
// per-record rows by bulk INSERT ... SELECT (secondary indexes dropped meanwhile and
// created after the load), then the counters from them in bulk.
//
// ReportsFollower runs CatchUp() on a thread of its own whenever the store's last op is
// above the cursor (it looks every `poll` interval, 50 ms by default), so a report counts
// a write well within 1 s of its commit while the writers never wait for the summaries.
//
// Thread-safety: thread-safe. CatchUp()/Rebuild() are serialised on the writer connection;
// queries run on a reader connection of their own (WAL) and see the last committed cursor.
#ifndef KCNET_SERVER_REPORTS_REPORTS_STORE_H_
#define KCNET_SERVER_REPORTS_REPORTS_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kcnet/v1/reports.pb.h"
#include "sync/sqlite.h"

namespace kcnet::server::reports {

// Vietnam's local day of a Unix time in ms (days since 1970-01-01, UTC+7).
int64_t VietnamDay(int64_t unix_ms);
// "YYYY-MM-DD" of a VietnamDay; "YYYY-MM" of its month.
std::string DayText(int64_t day);
std::string MonthText(int64_t day);
// Parses "YYYY-MM-DD" into a day; INVALID_ARGUMENT naming `field` otherwise.
absl::StatusOr<int64_t> ParseDay(const std::string& text, const std::string& field);
// Great-circle distance in km between two WGS84 points.
double DistanceKm(double lat1, double lon1, double lat2, double lon2);

// The part of a report query the store needs: which communes and which days, inclusive.
struct ReportScope {
  std::vector<int64_t> communes;
  int64_t from_day = 0;
  int64_t to_day = 0;
  int64_t today = 0;
};

// One page of a facility search: ids in order, and the position after the last one
// (empty: no more).
struct FacilitySearchPage {
  std::vector<std::string> ids;
  std::string next;
};

// Where a paged list of a report resumes: after the item whose key is (`major`, `minor`)
// (activity: the user id and ""; quality: the commune and the visit id, folded name or
// request id), or from its first item, or nowhere (`done`: an earlier page ended it).
struct ListPosition {
  bool started = false;
  bool done = false;
  int64_t major = 0;
  std::string minor;
};

// One page of the paged lists of a report: at most `page_size` items of each list (0: no
// limit, every item), each list resuming at its position in `from` (missing: the first).
// The store sets `next` to where each list resumes on the following page.
struct ReportPage {
  int page_size = 0;
  std::vector<ListPosition> from;
  std::vector<ListPosition> next;
  // True when every list ended on this page (no next page).
  bool last() const {
    for (const ListPosition& p : next) {
      if (!p.done) return false;
    }
    return true;
  }
};

class ReportsStore {
 public:
  ~ReportsStore();
  // Opens (creating when missing) the summaries at `reports_path`, following the record
  // store at `store_path` (which must exist).
  static absl::StatusOr<std::unique_ptr<ReportsStore>> Open(const std::string& reports_path,
                                                            const std::string& store_path);

  // Counts every op committed to the store since the cursor; returns the new cursor.
  absl::StatusOr<uint64_t> CatchUp();
  // One slice of CatchUp(), unless another catch-up (the follower's) holds the writer: then
  // the cursor as committed, at once. For readers that must not wait behind a long slice.
  absl::StatusOr<uint64_t> TryCatchUp();
  // Empties the summaries and counts everything again from op 0 (kcnet-admin
  // rebuild-reports). Returns the cursor reached.
  absl::StatusOr<uint64_t> Rebuild();
  // Records a device's accepted Hello (its last successful sync) with the writes it said
  // were waiting in its outbox.
  absl::Status RecordDeviceSync(const std::string& device_id, int64_t user_id, int64_t at_ms,
                                uint32_t pending_writes);

  // Facilities of `communes` whose folded words (name, owner, address, main products)
  // hold every one of `words` (sync::SearchWords of the query), the last one possibly as
  // a prefix: those whose name begins with the query first, then by folded name and id.
  // At most `limit`, after `after` (a previous page's `next`; empty: from the start;
  // INVALID_ARGUMENT "page_token: ..." when it is not one). Sees the summaries' cursor.
  absl::StatusOr<FacilitySearchPage> SearchFacilities(const std::vector<int64_t>& communes,
                                                      const std::vector<std::string>& words,
                                                      absl::string_view after, int limit);

  // The last op the summaries count (as committed).
  absl::StatusOr<uint64_t> Cursor();

  // The summary tables' content as text, in a fixed order: for tests comparing an
  // incremental result with a rebuild.
  absl::StatusOr<std::string> Dump();

  // The reports; `as_of_op` is set. Names of communes and users come from the caller.
  absl::StatusOr<kcnet::v1::CoverageReport> Coverage(const ReportScope& scope);
  absl::StatusOr<kcnet::v1::PipelineReport> Pipeline(const ReportScope& scope,
                                                     const kcnet::v1::PipelineRequest& request);
  // The listing is `users` (their ids set) and any other user with activity in the period,
  // by user id; the answer holds one page of it (`page`, one list: the users) with
  // visits/requests/last activity/devices and inactivity, and the whole listing's totals
  // (total_collaborators, total_inactive), computed from the counters, not per user.
  absl::StatusOr<kcnet::v1::ActivityReport> Activity(
      const ReportScope& scope, uint32_t inactive_days,
      std::vector<kcnet::v1::CollaboratorActivity> users, ReportPage* page = nullptr);
  // The counts of the whole scope, and one page (`page`: three lists, far visits,
  // duplicate groups, approvals without a recent visit) of each list.
  absl::StatusOr<kcnet::v1::QualityReport> Quality(const ReportScope& scope, double max_km,
                                                   ReportPage* page = nullptr);
  // Completed requests of the period with their facility's indicators before and after
  // (docs/REPORTS.md, "Outcomes"); commune names come from the caller.
  absl::StatusOr<kcnet::v1::OutcomesReport> Outcomes(const ReportScope& scope);

  // For tests: false makes every report read the per-record rows only
  // (the path of periods that are not whole months), to compare with the monthly summaries.
  void set_use_monthly_summaries(bool use) { use_monthly_ = use; }
  // For tests: false makes a rebuild compute the visit counters from the loaded visits
  // (what it does when the second thread's snapshot is not its own).
  void set_rebuild_counters_on_a_thread(bool on) { counters_on_a_thread_ = on; }
  // How SearchFacilities finds a page. kAuto (the default): the matches' rowids first; up
  // to `match_first_up_to` of them, the match-first plan (every match in the scope read
  // and sorted); more, a walk of the names in the answer's order keeping the matches of
  // the scope until the page is full, unless that walk is expected (from a sample of
  // names) or found to pass more than kWalkRowsPerMatch rows per match: then the
  // match-first plan. For tests and benches: kMatchFirst and kNameOrder force one plan
  // (the answers are the same), and kAuto with a lower `match_first_up_to` reaches the
  // choice with few matches.
  enum class SearchPlan { kAuto, kMatchFirst, kNameOrder };
  static constexpr int64_t kWalkRowsPerMatch = 6;
  static constexpr int64_t kMatchFirstUpTo = 2000;
  void set_search_plan(SearchPlan plan, int64_t match_first_up_to = kMatchFirstUpTo) {
    search_plan_ = plan;
    search_match_first_up_to_ = match_first_up_to;
  }

 private:
  ReportsStore() = default;
  absl::Status CreateTables(sync::Db* db);
  // One transaction counting the ops after the cursor, at most `max_ops` of them; `*done`
  // is false when more remain.
  absl::StatusOr<uint64_t> CatchUpLocked(int64_t max_ops, bool* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status ApplyFacility(sync::Statement& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status IndexFacility(sync::Statement& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status ApplyVisit(sync::Statement& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status ApplyRequest(sync::Statement& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status ApplyEvent(sync::Statement& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // The summary counters' changes of one catch-up transaction, summed in memory per key
  // by the Apply* functions and written once per key by FlushPending() before the cursor
  // moves (one upsert per commune x month x collaborator, etc., not one per visit).
  struct Pending;
  // Adds a visit (+1) or takes it out (-1) of the pending counters.
  void AddVisit(int64_t commune, int64_t day, int64_t collaborator, absl::string_view facility,
                int64_t visits, int64_t no_gps) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Writes the pending counters and the pending requests' since days; empties them.
  absl::Status FlushPending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Rebuild() when no other process has the summaries open: builds them in a new file
  // (no journal), then renames it over them; writer_ is closed (reset) on success.
  absl::StatusOr<uint64_t> RebuildIntoNewFile() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Rebuild() otherwise: one transaction on writer_.
  absl::StatusOr<uint64_t> RebuildInPlace() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Fills the empty summary tables of `db` (the store attached as st) in its open
  // transaction and moves its cursor; returns the cursor.
  absl::StatusOr<uint64_t> FillTables(sync::Db* db) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Rebuild(): the per-record rows from the store in bulk INSERT ... SELECT statements, in
  // the caller's transaction; returns the store's last op (the cursor they count).
  absl::StatusOr<uint64_t> LoadRecords(sync::Db* db) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // After a rebuild's LoadRecords() (which counted up to `op`): the counters, from the
  // counter job when it counted the same op, else from the loaded visits.
  absl::Status FillDerived(sync::Db* db, uint64_t op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // A rebuild's visit counters, computed on a thread of their own (reports_store.cc).
  struct CounterJob;
  void StartCounterJob() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // The cursor read inside the reader's open transaction.
  absl::StatusOr<uint64_t> ReadCursor() ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);

  std::string reports_path_;  // DATA_DIR/reports.db
  std::string store_path_;    // DATA_DIR/kcnet.db
  absl::Mutex write_mu_;
  std::unique_ptr<sync::Db> writer_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<Pending> pending_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<CounterJob> counter_job_ ABSL_GUARDED_BY(write_mu_);
  absl::Mutex read_mu_;
  std::unique_ptr<sync::Db> reader_ ABSL_GUARDED_BY(read_mu_);
  std::atomic<bool> use_monthly_{true};
  std::atomic<bool> counters_on_a_thread_{true};
  std::atomic<SearchPlan> search_plan_{SearchPlan::kAuto};
  std::atomic<int64_t> search_match_first_up_to_{kMatchFirstUpTo};
};

// Runs ReportsStore::CatchUp() whenever `last_op()` is above the cursor: at the next poll
// after a quiet spell; while writes keep coming, at most every `busy_interval` unless
// kBusyBatchOps ops wait (larger catch-ups cost less per write; docs/REPORTS.md).
class ReportsFollower {
 public:
  static constexpr uint64_t kBusyBatchOps = 5000;
  static constexpr absl::Duration kDefaultPoll = absl::Milliseconds(50);
  static constexpr absl::Duration kDefaultBusyInterval = absl::Milliseconds(500);
  // `last_op` is the store's last committed op (ServerStore::last_op). `on_error` gets
  // catch-up failures (it retries at the next poll).
  ReportsFollower(ReportsStore* reports, std::function<uint64_t()> last_op,
                  std::function<void(const absl::Status&)> on_error,
                  absl::Duration poll = kDefaultPoll,
                  absl::Duration busy_interval = kDefaultBusyInterval);
  ~ReportsFollower();  // Stop()
  void Stop();

 private:
  void Run();
  ReportsStore* reports_;
  std::function<uint64_t()> last_op_;
  std::function<void(const absl::Status&)> on_error_;
  absl::Duration poll_;
  absl::Duration busy_interval_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace kcnet::server::reports

#endif  // KCNET_SERVER_REPORTS_REPORTS_STORE_H_
