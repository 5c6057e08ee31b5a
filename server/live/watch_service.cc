#include "server/live/watch_service.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/rpc_runner.h"
#include "server/rpc/storage_rpc_runner.h"

namespace kcnet::server {

using kcnet::v1::ChangeNotice;

class WatchStream;

// The open streams and the communes each watches; told of every commit by the store.
class WatchHub {
 public:
  WatchHub(Directory* directory, WatchServiceOptions options)
      : directory_(directory), options_(options) {}

  Directory* directory() const { return directory_; }

  // RESOURCE_EXHAUSTED when the user already has the maximum of open streams.
  absl::Status Add(WatchStream* stream, int64_t user_id, std::set<int64_t> buckets) {
    absl::MutexLock lock(&mu_);
    int& count = per_user_[user_id];
    if (count >= options_.max_streams_per_user) {
      return absl::ResourceExhaustedError(
          absl::StrCat("at most ", options_.max_streams_per_user,
                       " open watches per user: close another tab or window of the console"));
    }
    ++count;
    streams_[stream] = Entry{user_id, std::move(buckets)};
    return absl::OkStatus();
  }

  void SetBuckets(WatchStream* stream, std::set<int64_t> buckets) {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(stream);
    if (it != streams_.end()) it->second.buckets = std::move(buckets);
  }

  // After this returns no Notify() of `stream` runs or will run.
  void Remove(WatchStream* stream) {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(stream);
    if (it == streams_.end()) return;
    if (--per_user_[it->second.user_id] == 0) per_user_.erase(it->second.user_id);
    streams_.erase(it);
  }

  // On the committing thread: `buckets` ascending (ServerStore's listener contract).
  void OnCommit(const std::vector<int64_t>& buckets);

  int open() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(streams_.size());
  }

 private:
  struct Entry {
    int64_t user_id = 0;
    std::set<int64_t> buckets;
  };
  Directory* const directory_;
  const WatchServiceOptions options_;
  mutable absl::Mutex mu_;
  std::map<WatchStream*, Entry> streams_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, int> per_user_ ABSL_GUARDED_BY(mu_);
};

// One WatchChanges call. Deletes itself when gRPC is done with it.
class WatchStream : public grpc::ServerWriteReactor<ChangeNotice> {
 public:
  WatchStream(std::shared_ptr<WatchHub> hub, grpc::CallbackServerContext* context)
      : hub_(std::move(hub)) {
    absl::StatusOr<std::string> token = BearerToken(*context);
    if (!token.ok()) {
      Fail(token.status());
      return;
    }
    token_ = *std::move(token);
    absl::StatusOr<std::pair<int64_t, std::set<int64_t>>> scope = ReadScope();
    if (!scope.ok()) {
      Fail(scope.status());
      return;
    }
    absl::Status added = hub_->Add(this, scope->first, std::move(scope->second));
    if (!added.ok()) {
      Fail(added);
      return;
    }
    registered_ = true;
    absl::MutexLock lock(&mu_);
    if (!writing_ && seq_ == 0) WriteLocked();  // a commit may have sent seq 0 already
  }

  // Called by the hub under its lock: send a notice now, or after the one in flight.
  void Notify() {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (writing_) {
      pending_ = true;
      return;
    }
    WriteLocked();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok || cancelled_) {
        FinishLocked(grpc::Status::CANCELLED);
        return;
      }
      if (finished_) return;
    }
    // The scope (and the token) as of now, for the next notice.
    absl::StatusOr<std::pair<int64_t, std::set<int64_t>>> scope = ReadScope();
    if (!scope.ok()) {
      absl::MutexLock lock(&mu_);
      FinishLocked(ToGrpcStatus(scope.status()));
      return;
    }
    hub_->SetBuckets(this, std::move(scope->second));
    absl::MutexLock lock(&mu_);
    if (finished_ || writing_ || !pending_) return;
    WriteLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);  // else OnWriteDone finishes
  }

  void OnDone() override {
    if (registered_) hub_->Remove(this);
    delete this;
  }

 private:
  // The caller's user id and communes, from its token (which may have been revoked).
  absl::StatusOr<std::pair<int64_t, std::set<int64_t>>> ReadScope() {
    absl::StatusOr<Principal> principal = hub_->directory()->Authenticate(token_);
    if (!principal.ok()) {
      absl::Status status = principal.status();
      // As every unary RPC says it (docs/API.md): the message starts with "authorization:".
      if (absl::IsUnauthenticated(status) &&
          !absl::StartsWith(status.message(), "authorization:")) {
        status = absl::UnauthenticatedError(absl::StrCat("authorization: ", status.message(),
                                                         "; sign in again (AuthService.Login)"));
      }
      return status;
    }
    absl::StatusOr<std::vector<int64_t>> communes =
        hub_->directory()->Communes(principal->org_unit_ids);
    if (!communes.ok()) return communes.status();
    return std::make_pair(principal->user_id,
                          std::set<int64_t>(communes->begin(), communes->end()));
  }

  void Fail(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(ToGrpcStatus(status));
  }

  void WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    pending_ = false;
    writing_ = true;
    notice_.set_seq(seq_++);
    StartWrite(&notice_);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  const std::shared_ptr<WatchHub> hub_;
  std::string token_;
  bool registered_ = false;  // set in the constructor only
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool pending_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  ChangeNotice notice_ ABSL_GUARDED_BY(mu_);
};

void WatchHub::OnCommit(const std::vector<int64_t>& buckets) {
  absl::MutexLock lock(&mu_);
  for (const auto& item : streams_) {
    const std::set<int64_t>& watched = item.second.buckets;
    const bool touched = std::any_of(buckets.begin(), buckets.end(),
                                     [&watched](int64_t b) { return watched.contains(b); });
    if (touched) item.first->Notify();
  }
}

WatchServiceImpl::WatchServiceImpl(Directory* directory, sync::ServerStore* store,
                                   WatchServiceOptions options)
    : hub_(std::make_shared<WatchHub>(directory, options)) {
  std::weak_ptr<WatchHub> weak = hub_;
  store->AddCommitObserver([weak](const std::vector<int64_t>& buckets, uint64_t) {
    if (std::shared_ptr<WatchHub> hub = weak.lock()) hub->OnCommit(buckets);
  });
}

WatchServiceImpl::~WatchServiceImpl() = default;

grpc::ServerWriteReactor<ChangeNotice>* WatchServiceImpl::WatchChanges(
    grpc::CallbackServerContext* context, const kcnet::v1::WatchChangesRequest*) {
  return new WatchStream(hub_, context);
}

int WatchServiceImpl::open_streams() const { return hub_->open(); }

}  // namespace kcnet::server
