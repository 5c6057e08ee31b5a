// Backup and restore of a kcnet server's data directory (kcnet-admin backup / restore).
//
// BackupDataDir copies every SQLite database of the data directory (directory.db, kcnet.db,
// any other *.db) into a new backup directory while the server keeps serving: each copy is
// one consistent snapshot, taken with SQLite's online backup in a single step
// (sqlite3_backup_step(-1)) inside one read transaction, so a live writer is never blocked
// (WAL) and the copy never restarts. A stepwise copy (step(100) in a loop) restarts every
// time the writer commits and may never finish under load.
//
// The record store (kcnet.db) and the plans (plans.db) are written together (an approval
// draws on the plan: the draw commits in plans.db, then the approval in kcnet.db), but each
// file's copy is its own snapshot. The backup therefore copies kcnet.db FIRST: every
// approval in the copy has its draw in the later plans.db copy; the plans.db copy may also
// hold what committed after kcnet.db's snapshot (a draw whose approval is not in the copy,
// a payment to a request not yet started there). RestoreDataDir reconciles those
// (ReconcileWithRecords, server/plans/budget.h), so the restored data directory is one
// consistent point: the moment kcnet.db was copied.
//
// RestoreDataDir puts a backup back into a data directory whose server is stopped. It
// refuses while any process holds one of the directory's databases open (the server
// would keep writing into files that no longer exist), replaces each database and drops
// its old write-ahead log (which belongs to the replaced file), and gives the restored
// record store a new incarnation (ServerStore::BeginIncarnation), so that every device
// learns that the server went back in time and recovers (docs/SYNC.md, "Server restore").
//
// Thread-safety: the functions are thread-compatible; run one at a time per directory.
#ifndef KCNET_SERVER_ADMIN_BACKUP_H_
#define KCNET_SERVER_ADMIN_BACKUP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kcnet::server {

// One database copied by a backup or a restore, or the attachment bytes' folder (name
// "blobs/ (N new files)": the blobs the target lacked, copied after the databases).
struct CopiedDatabase {
  std::string name;  // file name, e.g. "kcnet.db"
  int64_t bytes = 0;
  double seconds = 0;
};

// Copies every *.db of `data_dir` into `to`, which must not exist or be empty (it is
// created): kcnet.db first, then the others by name, then the finished attachment blobs
// (DATA_DIR/blobs; temp files of uploads are skipped). On success returns what was copied.
// Fails with NOT_FOUND when `data_dir` holds no database, ALREADY_EXISTS when `to` is not
// empty, or the SQLite/file error; then `to` holds no complete file under a database's
// name. `after_copy` (tests) runs after each file is copied, with its name.
absl::StatusOr<std::vector<CopiedDatabase>> BackupDataDir(
    const std::string& data_dir, const std::string& to,
    const std::function<void(const std::string& name)>& after_copy = nullptr);

// Replaces the databases of `data_dir` by those of the backup `from` (every *.db in it),
// and copies back the backup's blobs that `data_dir` lacks (the others are left alone).
// FAILED_PRECONDITION when a process has one of `data_dir`'s databases open (the server
// runs); NOT_FOUND when `from` holds no database. On success the record store (kcnet.db)
// has a new incarnation and the plans (plans.db) agree with it (ReconcileWithRecords). A
// failure part way leaves each database either the old or the restored one; run the
// restore again.
absl::StatusOr<std::vector<CopiedDatabase>> RestoreDataDir(const std::string& data_dir,
                                                           const std::string& from);

// The pid of a process holding `db_path` open in WAL mode (it keeps a shared lock on
// the database's -shm file while it is open), or 0 when none does.
int64_t DatabaseHolder(const std::string& db_path);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ADMIN_BACKUP_H_
