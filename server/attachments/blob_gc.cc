#include "server/attachments/blob_gc.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kcnet::server {

absl::StatusOr<GcReport> CollectGarbage(AttachmentDb& db, BlobStore& blobs,
                                        AttachmentReferences& references,
                                        const GcOptions& options) {
  GcReport report;
  // The temp files first, then the sessions: a session's row is written before its file
  // and removed after it, so a file seen here whose session is missing below is no one's.
  FileUploadStaging files(options.uploads_dir, nullptr);
  UploadStaging* staging = options.staging;
  if (staging == nullptr && !options.uploads_dir.empty()) staging = &files;
  std::vector<std::string> temp_ids;
  if (staging != nullptr) {
    absl::StatusOr<std::vector<std::string>> staged = staging->List();
    if (!staged.ok()) return staged.status();
    temp_ids = *std::move(staged);
  }
  absl::StatusOr<std::vector<UploadSession>> sessions = db.AllUploads();
  if (!sessions.ok()) return sessions.status();
  absl::flat_hash_set<std::string> live;
  for (const UploadSession& s : *sessions) {
    const bool active = options.active && options.active(s.id);
    if (s.expires_ms > options.now_ms || active) {
      live.insert(s.id);
      continue;
    }
    if (staging != nullptr) {
      absl::StatusOr<bool> removed = staging->Remove(s.id);
      if (!removed.ok()) return removed.status();
      if (*removed) ++report.temp_files_removed;
    }
    if (absl::Status st = db.DeleteUpload(s.id); !st.ok()) return st;
    ++report.sessions_expired;
  }
  for (const std::string& id : temp_ids) {
    if (live.contains(id)) continue;
    absl::StatusOr<bool> removed = staging->Remove(id);
    if (!removed.ok()) return removed.status();
    if (*removed) ++report.temp_files_removed;
  }

  absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> counts = references.Counts();
  if (!counts.ok()) return counts.status();
  const int64_t grace_ms = absl::ToInt64Milliseconds(options.grace);
  struct Doomed {
    std::string sha;
    int64_t size;
  };
  std::vector<Doomed> doomed;
  absl::Status status = blobs.ForEach([&](const std::string& sha, int64_t size) -> absl::Status {
    if (counts->contains(sha)) return db.ClearMark(sha);
    absl::StatusOr<int64_t> since = db.MarkUnreferenced(sha, options.now_ms);
    if (!since.ok()) return since.status();
    if (options.now_ms - *since >= grace_ms) {
      doomed.push_back({sha, size});
    } else {
      ++report.blobs_marked;
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (doomed.empty()) return report;
  // Records may have arrived while the blobs were listed: look again before removing.
  counts = references.Counts();
  if (!counts.ok()) return counts.status();
  for (const Doomed& d : doomed) {
    if (counts->contains(d.sha)) {
      if (absl::Status s = db.ClearMark(d.sha); !s.ok()) return s;
      continue;
    }
    if (absl::Status s = blobs.Remove(d.sha); !s.ok()) return s;
    if (absl::Status s = db.ForgetBlob(d.sha); !s.ok()) return s;
    ++report.blobs_removed;
    report.bytes_removed += d.size;
  }
  return report;
}

absl::StatusOr<VerifyReport> VerifyBlobs(BlobStore& blobs, AttachmentReferences* references) {
  VerifyReport report;
  std::set<std::string> present;
  absl::Status status = blobs.ForEach([&](const std::string& sha, int64_t size) -> absl::Status {
    present.insert(sha);
    ++report.blobs;
    report.bytes += size;
    absl::StatusOr<std::string> actual = blobs.Rehash(sha);
    if (!actual.ok()) return actual.status();
    if (*actual != sha) report.damaged.push_back(sha);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (references != nullptr) {
    absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> counts = references->Counts();
    if (!counts.ok()) return counts.status();
    for (const auto& entry : *counts) {
      if (!present.contains(entry.first)) report.missing.push_back(entry.first);
    }
    std::sort(report.missing.begin(), report.missing.end());
  }
  return report;
}

}  // namespace kcnet::server
