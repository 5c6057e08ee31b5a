// The device's replica store: confirmed state from the server, the outbox of local
// mutations, per-bucket cursors, and the reports (refusals, conflicts) owed to the user.
//
// Model (DESIGN.md 2.7, 2.8): a local write and its outbox row commit in one transaction.
// Reads see confirmed state with pending mutations laid over it. Downloads change only
// confirmed state, one transaction per batch, with the cursors they reach. A mutation the
// server applied stays in the overlay until the download covering its op arrives, so the
// user never sees an edit flicker away; a refused one leaves the overlay at once (the
// confirmed state already holds the server's values) and becomes a report.
//
// Thread-safety: thread-safe (one mutex); the SDK drives it from one serial queue.
#ifndef KCNET_SYNC_DEVICE_STORE_H_
#define KCNET_SYNC_DEVICE_STORE_H_

#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/hlc.h"
#include "sync/record_store.h"
#include "sync/schema.h"
#include "sync/sqlite.h"
#include "sync/validator.h"

namespace kcnet::sync {

// A record type whose text fields the store keeps in a full-text index (SQLite FTS5),
// folded by FoldForSearch (sync/text_fold.h) so that search ignores case and diacritics.
struct SearchSpec {
  uint32_t type = 0;
  std::vector<uint32_t> fields;  // string fields to index, in rank-weight order
  std::vector<double> weights;   // bm25 weight per field (same length as fields)
};

// The device store's migrations, keyed on PRAGMA user_version (RecordStore runs them at
// Open, in one transaction): step i takes a store from format i to i+1. To change the
// device's own tables, append one SQL step; never edit a step that has shipped. (The record
// tables are not listed: they follow the schema, see record_store.h.)
inline constexpr const char* kDeviceStoreMigrations[] = {
    // 0 -> 1: cursors, outbox, reports, the pending index, the app's key/value entries.
    "CREATE TABLE IF NOT EXISTS _cursors(bucket INTEGER PRIMARY KEY, op INTEGER NOT NULL, "
    "floor INTEGER NOT NULL DEFAULT 0, synced INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS _outbox(seq INTEGER PRIMARY KEY, body BLOB NOT NULL, "
    "buckets TEXT NOT NULL, acked_op INTEGER);"
    "CREATE TABLE IF NOT EXISTS _reports(seq INTEGER PRIMARY KEY, mutation BLOB NOT NULL, "
    "result BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS _pending(type INTEGER NOT NULL, id BLOB NOT NULL, "
    "seq INTEGER NOT NULL, PRIMARY KEY(type, id, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS _kv(key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    // 1 -> 2: fields and record types of a newer schema, kept as downloaded (record_store.h).
    "CREATE TABLE _unknown(type INTEGER NOT NULL, id TEXT NOT NULL, field INTEGER NOT NULL, "
    "value BLOB NOT NULL, hlc INTEGER NOT NULL, node INTEGER NOT NULL, op INTEGER NOT NULL, "
    "bucket INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY(type, id, field)) WITHOUT ROWID;"
    "CREATE INDEX _unknown_bucket ON _unknown(bucket);",
    // 2 -> 3: the SDK's copy of its directory (client_sdk/device_directory.h reads and
    // writes these; DeviceStoreOptions::app_tables lists them for PurgeAll).
    "CREATE TABLE _dir_org_units(id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL, "
    "code TEXT NOT NULL, name TEXT NOT NULL, level INTEGER NOT NULL, "
    "effective_from_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX _dir_org_units_code ON _dir_org_units(code);"
    "CREATE TABLE _dir_users(id INTEGER PRIMARY KEY, display_name TEXT NOT NULL, "
    "role INTEGER NOT NULL, active INTEGER NOT NULL);"
    "CREATE TABLE _dir_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 3 -> 4: the SDK's attachments (client_sdk/attachment_queue.h): the upload queue (one
    // row per attachment added here) and the bytes held in the attachment folder (one row
    // per blob file, for the storage budget's LRU eviction).
    "CREATE TABLE _att_queue(id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
    "media_type TEXT NOT NULL, state INTEGER NOT NULL, bytes_sent INTEGER NOT NULL DEFAULT 0, "
    "failure TEXT NOT NULL DEFAULT '', priority INTEGER NOT NULL DEFAULT 0, "
    "attempts INTEGER NOT NULL DEFAULT 0, next_try_ms INTEGER NOT NULL DEFAULT 0, "
    "added_ms INTEGER NOT NULL);"
    "CREATE INDEX _att_queue_sha ON _att_queue(sha256);"
    "CREATE TABLE _att_blobs(sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
    "last_used_ms INTEGER NOT NULL);",
};
// The version of the device store's on-disk layout (PRAGMA user_version).
inline constexpr int kDeviceStoreFormatVersion = std::size(kDeviceStoreMigrations);

struct DeviceStoreOptions {
  Clock* clock = SystemClock();
  bool durable = true;
  std::vector<SearchSpec> search;
  // Tables of the store's user beside the replica (the SDK's copy of its directory,
  // created by a step of kDeviceStoreMigrations): PurgeAll empties every table named here
  // with the rest. Read and write them with WithAppTables().
  std::vector<std::string> app_tables;
};

// Which records List() returns: live records of `type` in `buckets` (every subscribed
// bucket when empty) whose fields equal every (field number, value) of `equals`.
struct ListFilter {
  uint32_t type = 0;
  std::vector<int64_t> buckets;
  std::vector<std::pair<uint32_t, kcnet::v1::Value>> equals;
};

// One search result: the record id (16 bytes) and its rank (lower is better).
struct SearchHit {
  std::string id;
  double rank = 0;
};

// What a download batch did.
struct DownloadResult {
  size_t applied = 0;  // record changes that changed confirmed state
  // Record changes not applied: of buckets the device does not hold, or stale parts of a
  // page (its `from` cursor is not where the device is).
  size_t skipped = 0;
  // Buckets whose checksum disagrees with the server's checkpoint: call ResetBucket() on
  // each and download it again from cursor 0.
  std::vector<int64_t> mismatched;
  // Buckets whose cursor the pages moved, and of those the ones the last page touching
  // them completed (a checkpoint that matched, or one older than the cursor).
  std::vector<int64_t> moved;
  std::vector<int64_t> completed;
};

// What DeviceStore::ObserveServer found and did (docs/SYNC.md, "Server restore").
struct Recovery {
  bool recovered = false;  // the server lost part of what this device synced with it
  std::string why;         // which sign of it the device saw
  size_t handbacks = 0;    // confirmed records queued to hand back (Mutation.handback)
  size_t renumbered = 0;   // unsettled mutations renumbered after the server's sequence
  uint64_t first_seq = 0;  // the first sequence of the new numbering
};

// A report owed to the user: a refused mutation, or one applied with conflicts.
struct Report {
  kcnet::v1::Mutation mutation;
  kcnet::v1::MutationResult result;
};

class DeviceStore {
 public:
  // Opens or creates the store at `path` for `device_id`, migrating an older store
  // (kDeviceStoreMigrations) and bringing its record tables up to `schema`: a schema that
  // knows fields or record types the store kept unknown folds them into the real columns
  // (docs/SYNC.md, "Upgrades"). `schema` is the app's record types (the SDK's default:
  // model::KcnetSchema()); it must outlive the store. FAILED_PRECONDITION when the file
  // belongs to another device, is a server store, not a kcnet store, or newer.
  static absl::StatusOr<std::unique_ptr<DeviceStore>> Open(const std::string& path,
                                                           const Schema* schema,
                                                           const std::string& device_id,
                                                           DeviceStoreOptions options = {});

  const std::string& device_id() const { return device_id_; }
  uint64_t node() const { return node_; }

  // Records one user action. Each change names a type, an id and the fields it sets (or
  // `deleted`); the store stamps the clock and the base op. `validator` (the business
  // rules; optional) runs inside the write's transaction on the records as they read now,
  // so that the check and the write see the same state. On success returns the mutation's
  // sequence; on failure (INVALID_ARGUMENT / NOT_FOUND naming the change and field, or the
  // validator's status) nothing is stored.
  // `also` (optional) runs last inside the same transaction, on the store's connection,
  // with the mutation's sequence: the SDK writes rows of its app tables with the record
  // (an attachment's upload-queue row); its failure stores nothing.
  absl::StatusOr<uint64_t> Write(std::vector<kcnet::v1::RecordChange> changes,
                                 const MutationValidator& validator = nullptr,
                                 const std::function<absl::Status(Db&, uint64_t)>& also = nullptr);

  // Mutations not yet acknowledged, oldest first.
  absl::StatusOr<kcnet::v1::MutationBatch> PendingBatch(size_t max_mutations = 500,
                                                        size_t max_bytes = 4 << 20);
  absl::StatusOr<int64_t> PendingCount();
  // Mutations written here that confirmed state does not show yet: pending ones plus
  // acknowledged ones whose download has not arrived. 0 means fully in sync.
  absl::StatusOr<int64_t> UnconfirmedCount();

  // Takes the server's answer to a push. Returns the reports it created (refused
  // mutations, conflicts); they also stay in the store until TakeReports().
  absl::StatusOr<std::vector<Report>> Acknowledge(const kcnet::v1::PushAck& ack);

  // Takes a Welcome's account of the server's history (incarnation, incarnation_op,
  // last_applied_seq, server_op). When the server lost part of what this device synced
  // with it (a new incarnation after one it knew, a cursor above the server's last op, or
  // a settled sequence above the server's last applied one), recovers in one transaction:
  //   1. every mutation above the server's last applied sequence (pending, or applied by
  //      the lost history) is renumbered to follow it, so nothing answers OUT_OF_ORDER
  //      forever and no lost sequence is answered DUPLICATE;
  //   2. before them, hand-backs (Mutation.handback) of every confirmed record holding a
  //      field above incarnation_op, with its writers' own stamps, so that the server gets
  //      back what it lost, whoever wrote it;
  //   3. every bucket's cursor goes back to 0 (floor 0): the next download re-verifies it
  //      against the server's checkpoints.
  // Confirmed state and the overlay stay as they are (nothing is purged), and the new
  // incarnation is kept. Otherwise only keeps the incarnation. A Welcome without one (an
  // older server) changes nothing. Fails with the storage error; then nothing changed.
  absl::StatusOr<Recovery> ObserveServer(const kcnet::v1::Welcome& welcome);

  // A tablet whose date was wrong stamped its writes ahead of the server (the server
  // re-stamps them; nothing is lost) and its clock, persisted as max_hlc, stays ahead after
  // the date is fixed. Given the server's time (Welcome.server_time_ms), brings the clock
  // back to the wall clock (never below a clock it received) when it is more than the skew
  // bound ahead of the server, the wall clock no longer is, and no
  // write of this device waits for upload or for its download (so no new write can be
  // ordered before one of them). Returns whether the clock moved back (not while the wall
  // clock itself is still ahead); fails with the storage error.
  absl::StatusOr<bool> RecoverClock(int64_t server_time_ms);
  // The device's wall clock (DeviceStoreOptions::clock), Unix ms.
  int64_t WallMs() { return options_.clock->NowMs(); }

  // Applies download pages, in order, to confirmed state in one transaction (one commit
  // for all of them): idempotent (a change whose op a field already has is skipped) and
  // safe to repeat or reorder. A page with `from` cursors is applied per bucket only where
  // its `from` equals the device's cursor at that point; other buckets' parts are stale
  // and skipped (see ChangeBatch.from in sync.proto).
  absl::StatusOr<DownloadResult> ApplyDownload(
      absl::Span<const kcnet::v1::ChangeBatch* const> pages);
  absl::StatusOr<DownloadResult> ApplyDownload(const kcnet::v1::ChangeBatch& batch);

  // Buckets: Subscribe starts a bucket at cursor 0; Unsubscribe purges its records;
  // ResetBucket purges and restarts it at 0 (after a checksum mismatch).
  absl::Status Subscribe(int64_t bucket);
  absl::Status Unsubscribe(int64_t bucket);
  absl::Status ResetBucket(int64_t bucket);
  absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> Cursors();

  // A record's full state as a change: confirmed, with pending mutations laid over it
  // unless `confirmed_only`. nullopt when absent.
  absl::StatusOr<std::optional<kcnet::v1::RecordChange>> Read(uint32_t type, absl::string_view id,
                                                              bool confirmed_only = false);

  // Every record matching `filter` as it reads now (pending mutations laid over confirmed
  // state; deleted ones left out), in no particular order. Reads are served from
  // indexes: the bucket's rows, plus the few records with pending mutations.
  absl::StatusOr<std::vector<kcnet::v1::RecordChange>> List(const ListFilter& filter);

  // Full-text search of a type named in options.search: records whose indexed fields hold
  // every word of `query` (the last word as a prefix; case and diacritics ignored), best
  // first, at most `limit`. Ranking weighs each field (SearchSpec.weights) by the share of
  // the query it holds, damped by its length; it ranks every match when at most a few
  // hundred match, else a bounded set of candidates, first-field matches first, so a
  // query's cost does not grow with the number of matches. INVALID_ARGUMENT when the
  // query has no word or the type is not indexed.
  absl::StatusOr<std::vector<SearchHit>> Search(uint32_t type, absl::string_view query,
                                                size_t limit);

  // The app's own small state (the signed-in account, sync status), kept in the same
  // file. GetValue returns nullopt for an unknown key; SetValue(key, nullopt) removes it.
  absl::StatusOr<std::optional<std::string>> GetValue(absl::string_view key);
  absl::Status SetValue(absl::string_view key, const std::optional<std::string>& value);

  absl::StatusOr<kcnet::v1::BucketCheckpoint> Checkpoint(int64_t bucket);
  absl::StatusOr<kcnet::v1::BucketCheckpoint> RecomputeCheckpoint(int64_t bucket);
  // Recomputes every subscribed bucket's checksum from its rows and returns those that
  // disagree with the running sum (local damage the running sum cannot see); reset them.
  // Costs a scan of the buckets: run it at start-up or on a schedule, not per batch.
  absl::StatusOr<std::vector<int64_t>> VerifyBuckets();

  // Reports not yet taken, oldest first; Take removes them.
  absl::StatusOr<std::vector<Report>> ListReports();
  absl::StatusOr<std::vector<Report>> TakeReports();

  // Every mutation of the outbox, oldest first: pending ones, and those the server
  // acknowledged whose download has not arrived yet (`acknowledged`). For the SDK's list of
  // uploads (PendingUpload.sent).
  struct OutboxEntry {
    kcnet::v1::Mutation mutation;
    bool acknowledged = false;
  };
  absl::StatusOr<std::vector<OutboxEntry>> Outbox();

  // Forgets everything the store holds for its user, in one transaction: every record,
  // cursor, checkpoint, search row, outbox mutation (pending ones too: the caller decided
  // to drop them) and report. With `restart_sequences` the next Write is sequence 1 (a new
  // user's registration of the device is a new generation on the server, whose sequences
  // start at 1). The device id, node and key/value entries stay. Nothing changes on
  // failure. (device_store_purge.cc)
  absl::Status PurgeAll(bool restart_sequences);

  // Runs `fn` on the store's connection, under the store's lock, in one transaction (a
  // write transaction when `write`, committed when `fn` returns OK, rolled back otherwise).
  // For DeviceStoreOptions::app_tables only; `fn` must not call the store.
  // (device_store_purge.cc)
  absl::Status WithAppTables(bool write, const std::function<absl::Status(Db&)>& fn);

  HybridClock& clock() { return hlc_; }

 private:
  DeviceStore(const Schema* schema, std::string device_id, DeviceStoreOptions options);
  absl::StatusOr<std::optional<kcnet::v1::RecordChange>> ReadLocked(uint32_t type,
                                                                    absl::string_view id,
                                                                    bool confirmed_only)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `confirmed` (a record's confirmed state) with the record's pending mutations laid over.
  absl::StatusOr<std::optional<kcnet::v1::RecordChange>> OverlayLocked(
      uint32_t type, absl::string_view id, std::optional<kcnet::v1::RecordChange> confirmed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PruneAcked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ApplyDownload: a change of a record type the schema does not know, kept as downloaded
  // (RecordStore::WriteUnknown) and merged field by field like the others.
  absl::Status KeepUnknownLocked(const kcnet::v1::RecordChange& change, absl::string_view id_text,
                                 uint64_t* max_hlc, DownloadResult* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A column expression of the bucket's _cursors row; nullopt when not subscribed.
  absl::StatusOr<std::optional<uint64_t>> CursorColumnLocked(int64_t bucket, const char* expression)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<uint64_t>> CursorLocked(int64_t bucket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return CursorColumnLocked(bucket, "op");
  }
  // How far the bucket is known complete: max(cursor, last complete snapshot's server op).
  absl::StatusOr<std::optional<uint64_t>> SyncedThroughLocked(int64_t bucket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return CursorColumnLocked(bucket, "max(op, synced)");
  }
  absl::Status AddReport(const kcnet::v1::Mutation& m, const kcnet::v1::MutationResult& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports oldest first, with the largest row key listed in *max_key (0 when none).
  absl::StatusOr<std::vector<Report>> ListReportsLocked(int64_t* max_key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The recovery of ObserveServer, inside its transaction.
  absl::Status RecoverLocked(const kcnet::v1::Welcome& welcome, Recovery* recovery)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes an outbox row and its entries in the pending index.
  absl::Status DeleteOutboxRow(int64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CreateSearchTables() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings the search index entry of one record up to date with how it reads now.
  absl::Status RefreshSearchLocked(uint32_t type, absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DropSearchBucketLocked(int64_t bucket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const SearchSpec* FindSearch(uint32_t type) const;

  const Schema* schema_;
  const std::string device_id_;
  const uint64_t node_;
  HybridClock hlc_;
  uint64_t max_download_hlc_ ABSL_GUARDED_BY(mu_) = 0;  // see RecoverClock
  const DeviceStoreOptions options_;
  absl::Mutex mu_;
  std::unique_ptr<Db> db_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<RecordStore> records_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;  // the last Write's sequence (_meta last_seq)
  // A first download is under way with the secondary indexes dropped (ApplyDownload).
  bool indexes_deferred_ ABSL_GUARDED_BY(mu_) = false;
};

// Lays `change` (a pending write) over `base` (a record's full state, or nullopt).
// Returns the resulting full state, nullopt when there is no record. The writer is
// `node` (the device) unless the change names its own (a hand-back's fields keep theirs).
std::optional<kcnet::v1::RecordChange> LayOver(const std::optional<kcnet::v1::RecordChange>& base,
                                               const kcnet::v1::RecordChange& change,
                                               uint64_t node);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_DEVICE_STORE_H_
