#include "server/sync_stream/sync_service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/arena.h"
#include "server/records/record_access.h"
#include "server/rpc/paging.h"
#include "server/rpc/storage_rpc_runner.h"
#include "server/rpc/thread_pool.h"
#include "sync/cursor.h"
#include "sync/model/rules.h"
#include "sync/page_codec.h"

namespace kcnet::server {

using kcnet::v1::SyncClientMessage;
using kcnet::v1::SyncServerMessage;

class StreamCore;

// Routes commits to the streams holding the touched buckets; owns the worker pool and the
// scope-check ticker.
class SyncHub {
 public:
  SyncHub(Directory* directory, sync::ServerStore* store, SyncServiceOptions options)
      : directory(directory),
        store(store),
        options(options),
        pool(options.threads),
        push_limiter(options.push_limit) {
    ticker_ = std::thread([this] { Tick(); });
  }
  ~SyncHub() { Stop(); }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    ticker_.join();
    pool.Stop();
  }

  // RESOURCE_EXHAUSTED when the user already has the maximum of open streams.
  absl::Status Register(const std::shared_ptr<StreamCore>& core, int64_t user_id) {
    absl::MutexLock lock(&mu_);
    int& count = per_user_[user_id];
    if (count >= options.max_streams_per_user) {
      return absl::ResourceExhaustedError(
          absl::StrCat("at most ", options.max_streams_per_user,
                       " sync streams may be open per user; close the app on another device"));
    }
    ++count;
    streams_[core.get()] = {core, user_id};
    return absl::OkStatus();
  }

  void Unregister(StreamCore* core) {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(core);
    if (it == streams_.end()) return;
    --per_user_[it->second.user_id];
    for (int64_t b : it->second.buckets) {
      auto& set = by_bucket_[b];
      set.erase(core);
      if (set.empty()) by_bucket_.erase(b);
    }
    streams_.erase(it);
  }

  void SetBuckets(StreamCore* core, const std::set<int64_t>& buckets) {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(core);
    if (it == streams_.end()) return;
    for (int64_t b : it->second.buckets) by_bucket_[b].erase(core);
    it->second.buckets = buckets;
    for (int64_t b : buckets) by_bucket_[b].insert(core);
  }

  void OnCommit(const std::vector<int64_t>& buckets);

  int open_streams() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(streams_.size());
  }

  Directory* const directory;
  sync::ServerStore* const store;
  const SyncServiceOptions options;
  ThreadPool pool;
  RateLimiter push_limiter;  // by user id

 private:
  struct Entry {
    std::weak_ptr<StreamCore> core;
    int64_t user_id = 0;
    std::set<int64_t> buckets;
  };
  void Tick();

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<StreamCore*, Entry> streams_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, absl::flat_hash_set<StreamCore*>> by_bucket_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, int> per_user_ ABSL_GUARDED_BY(mu_);
  std::thread ticker_;
};

class SyncStream;

// One device's stream. Every method runs on the hub's pool under mu_.
class StreamCore : public std::enable_shared_from_this<StreamCore> {
 public:
  StreamCore(SyncHub* hub, SyncStream* reactor) : hub_(hub), reactor_(reactor) {}

  // Called once from the reactor's constructor (on a gRPC thread, before any callback).
  void Start(grpc::CallbackServerContext* context);
  void ReadDone(bool ok);
  void WriteDone(bool ok);
  void Cancel() {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }
  // A commit touched this stream's buckets, or the ticker asks for a scope check.
  void Poke(bool check_scope);
  // The reactor is gone (OnDone): never touch it again.
  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
    finished_ = true;
  }

 private:
  void HandleHello(const kcnet::v1::Hello& hello) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandlePush(const kcnet::v1::MutationBatch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleAck(const kcnet::v1::DownloadAck& ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts a push's outcomes and conflicts into the kcnet_sync_* metrics (if any).
  void CountOutcomes(const kcnet::v1::PushAck& ack) const;
  // Sends download pages while fewer than the window wait for their ack and there is news
  // (or `force`: the first page after Welcome always goes). Pages are read with mu_
  // released, so that the previous page's write (serialisation and gzip, in StartWrite)
  // runs on another pool thread meanwhile; one read at a time, and a page read while the
  // cursors changed (an ack that diverged, a scope change) is read again.
  void SendNextBatchLocked(bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-reads the user's token and org units; a change becomes a ScopeChange.
  bool RefreshScopeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnqueueLocked(SyncServerMessage message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the queue's first message (no write may be in flight).
  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    FinishLocked(ToGrpcStatus(status));
  }

  SyncHub* const hub_;
  absl::Mutex mu_;
  SyncStream* reactor_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool hello_done_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_after_writes_ ABSL_GUARDED_BY(mu_) = false;
  std::string token_ ABSL_GUARDED_BY(mu_);
  absl::Time started_ ABSL_GUARDED_BY(mu_);  // for the stream's log line
  Principal principal_ ABSL_GUARDED_BY(mu_);
  std::string device_id_ ABSL_GUARDED_BY(mu_);
  std::string device_key_ ABSL_GUARDED_BY(mu_);  // DeviceRegistration::key
  uint64_t node_ ABSL_GUARDED_BY(mu_) = 0;       // DeviceRegistration::node
  std::set<int64_t> buckets_ ABSL_GUARDED_BY(mu_);
  // Where the device will be once it has stored every page sent so far: the next page is
  // read from here.
  std::map<int64_t, kcnet::v1::BucketCursor> cursors_ ABSL_GUARDED_BY(mu_);
  // Pages sent and not yet acknowledged, oldest first, with the cursors each should take
  // the device to; at most `window_` (Hello.download_window, capped by the options).
  struct SentPage {
    uint64_t index = 0;
    std::map<int64_t, kcnet::v1::BucketCursor> expected;
  };
  std::deque<SentPage> sent_ ABSL_GUARDED_BY(mu_);
  uint32_t window_ ABSL_GUARDED_BY(mu_) = 1;
  bool deflate_pages_ ABSL_GUARDED_BY(mu_) = false;  // Hello.deflate_pages
  uint64_t pages_sent_ ABSL_GUARDED_BY(mu_) = 0;
  // A bucket restarted from the device's own cursor after pages up to this index were
  // sent: the device skips those pages' part of it, so their acks say nothing new of it.
  std::map<int64_t, uint64_t> stale_through_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;     // a page is being read, mu_ released
  bool read_again_ ABSL_GUARDED_BY(mu_) = false;  // news arrived during that read
  // Bumped whenever cursors_ or buckets_ change other than by sending a page.
  uint64_t cursor_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int64_t, uint64_t> announced_ ABSL_GUARDED_BY(mu_);  // checkpoint op last sent
  std::deque<SyncServerMessage> queue_ ABSL_GUARDED_BY(mu_);
  SyncClientMessage in_;  // the read buffer: one read in flight
  // The stream's grpc_server_* series; null without metrics.
  std::unique_ptr<metrics::GrpcServerMetrics::Call> call_metrics_ ABSL_GUARDED_BY(mu_);
};

class SyncStream : public grpc::ServerBidiReactor<SyncClientMessage, SyncServerMessage> {
 public:
  SyncStream(SyncHub* hub, grpc::CallbackServerContext* context)
      : hub_(hub), core_(std::make_shared<StreamCore>(hub, this)) {
    core_->Start(context);
  }
  void OnReadDone(bool ok) override {
    Post([core = core_, ok] { core->ReadDone(ok); });
  }
  void OnWriteDone(bool ok) override {
    Post([core = core_, ok] { core->WriteDone(ok); });
  }
  void OnCancel() override {
    Post([core = core_] { core->Cancel(); });
  }
  void OnDone() override {
    core_->Detach();
    hub_->Unregister(core_.get());
    delete this;
  }

 private:
  void Post(std::function<void()> task) {
    // After the pool stopped (server shutdown) the work runs inline: the stream must still
    // be finished for gRPC to let go of it.
    if (!hub_->pool.Schedule(task)) task();
  }
  SyncHub* hub_;
  std::shared_ptr<StreamCore> core_;
};

// Blocks sized for a page: a thousand changes take a few hundred kilobytes.
static google::protobuf::ArenaOptions PageArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 64 << 10;
  options.max_block_size = 256 << 10;
  return options;
}

void SyncHub::OnCommit(const std::vector<int64_t>& buckets) {
  std::vector<std::shared_ptr<StreamCore>> targets;
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_set<StreamCore*> seen;
    for (int64_t b : buckets) {
      auto it = by_bucket_.find(b);
      if (it == by_bucket_.end()) continue;
      for (StreamCore* core : it->second) {
        if (!seen.insert(core).second) continue;
        if (auto strong = streams_[core].core.lock()) targets.push_back(std::move(strong));
      }
    }
  }
  for (auto& core : targets) pool.Schedule([core] { core->Poke(/*check_scope=*/false); });
}

void SyncHub::Tick() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options.scope_check_interval)) return;
    }
    std::vector<std::shared_ptr<StreamCore>> all;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [ptr, entry] : streams_) {
        if (auto strong = entry.core.lock()) all.push_back(std::move(strong));
      }
    }
    for (auto& core : all) pool.Schedule([core] { core->Poke(/*check_scope=*/true); });
  }
}

void StreamCore::Start(grpc::CallbackServerContext* context) {
  absl::MutexLock lock(&mu_);
  started_ = absl::Now();
  if (hub_->options.grpc_metrics != nullptr) {
    call_metrics_ = std::make_unique<metrics::GrpcServerMetrics::Call>(
        hub_->options.grpc_metrics, "/kcnet.v1.SyncService/Sync");
  }
  absl::StatusOr<std::string> token = BearerToken(*context);
  absl::StatusOr<Principal> principal = token.ok() ? hub_->directory->Authenticate(*token)
                                                   : absl::StatusOr<Principal>(token.status());
  if (!principal.ok()) {
    // As every unary RPC says it (docs/API.md): the message starts with "authorization:".
    absl::Status status = principal.status();
    if (absl::IsUnauthenticated(status) && !absl::StartsWith(status.message(), "authorization:")) {
      status = absl::UnauthenticatedError(
          absl::StrCat("authorization: ", status.message(), "; sign in again (AuthService.Login)"));
    }
    FinishLocked(status);
    return;
  }
  token_ = *token;
  principal_ = *principal;
  // Pages compress well (repeated clocks, ops, field tags): gzip when the device accepts it.
  context->set_compression_algorithm(GRPC_COMPRESS_GZIP);
  absl::Status registered = hub_->Register(shared_from_this(), principal_.user_id);
  if (!registered.ok()) {
    FinishLocked(registered);
    return;
  }
  reactor_->StartRead(&in_);
}

void StreamCore::ReadDone(bool ok) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  if (!ok) {
    // The device closed its side: finish once the queued messages are out.
    if (write_in_flight_ || !queue_.empty()) {
      finish_after_writes_ = true;
    } else {
      FinishLocked(grpc::Status::OK);
    }
    return;
  }
  if (call_metrics_ != nullptr) call_metrics_->Received();
  const SyncClientMessage message = std::move(in_);
  in_.Clear();
  if (!hello_done_ && message.kind_case() != SyncClientMessage::kHello) {
    FinishLocked(absl::FailedPreconditionError("hello: the first message must be a Hello"));
    return;
  }
  switch (message.kind_case()) {
    case SyncClientMessage::kHello:
      if (hello_done_) {
        FinishLocked(absl::InvalidArgumentError("hello: sent twice on one stream"));
        return;
      }
      HandleHello(message.hello());
      break;
    case SyncClientMessage::kPush:
      HandlePush(message.push());
      break;
    case SyncClientMessage::kDownloadAck:
      HandleAck(message.download_ack());
      break;
    default:
      FinishLocked(absl::InvalidArgumentError("message: empty or unknown kind"));
      return;
  }
  if (!finished_) reactor_->StartRead(&in_);
}

void StreamCore::HandleHello(const kcnet::v1::Hello& hello) {
  if (hello.device_id().empty() || hello.device_id().size() > 128 ||
      !sync::IsValidUtf8(hello.device_id())) {
    FinishLocked(absl::InvalidArgumentError("hello.device_id: must be 1-128 bytes of UTF-8"));
    return;
  }
  if (hello.schema_version() != kcnet::v1::SCHEMA_VERSION_1) {
    FinishLocked(absl::FailedPreconditionError(
        absl::StrCat("hello.schema_version: this server speaks schema version 1 and the app sent ",
                     static_cast<int>(hello.schema_version()),
                     hello.schema_version() > kcnet::v1::SCHEMA_VERSION_1
                         ? "; the server needs an upgrade before this app version can sync"
                         : "; update the app")));
    return;
  }
  // The device id belongs to the user who registered it: another user's Hello is refused
  // until that registration is released, and the device's writes carry the identity the
  // server derives from the registration, never one the device chose.
  absl::StatusOr<sync::DeviceRegistration> registration =
      hub_->store->RegisterDevice(hello.device_id(), principal_.user_id);
  if (!registration.ok()) {
    FinishLocked(registration.status());
    return;
  }
  device_id_ = hello.device_id();
  device_key_ = registration->key;
  node_ = registration->node;
  deflate_pages_ = hello.deflate_pages();
  window_ = std::clamp<uint32_t>(hello.download_window(), 1,
                                 std::max<uint32_t>(hub_->options.max_pages_in_flight, 1));
  absl::StatusOr<std::vector<int64_t>> communes =
      hub_->directory->Communes(principal_.org_unit_ids);
  if (!communes.ok()) {
    FinishLocked(communes.status());
    return;
  }
  buckets_ = std::set<int64_t>(communes->begin(), communes->end());
  kcnet::v1::Welcome welcome;
  for (const kcnet::v1::BucketCursor& c : hello.cursors()) {
    if (buckets_.contains(c.bucket())) {
      cursors_[c.bucket()] = c;
    } else {
      welcome.add_removed(c.bucket());
    }
  }
  for (int64_t b : buckets_) {
    welcome.add_buckets(b);
    if (!cursors_.contains(b)) cursors_[b].set_bucket(b);
  }
  welcome.set_server_op(hub_->store->last_op());
  welcome.set_node(node_);
  welcome.set_server_time_ms(sync::HlcWallMs(hub_->store->clock().Now()));
  // What the device needs to notice a restore (docs/SYNC.md, "Server restore").
  const sync::ServerStore::Incarnation incarnation = hub_->store->incarnation();
  welcome.set_incarnation(incarnation.id);
  welcome.set_incarnation_op(incarnation.base_op);
  welcome.set_last_applied_seq(registration->last_applied_seq);
  hub_->SetBuckets(this, buckets_);
  hello_done_ = true;
  if (hub_->options.on_hello) {
    hub_->options.on_hello(device_id_, principal_.user_id, hello.pending_writes());
  }
  SyncServerMessage out;
  *out.mutable_welcome() = std::move(welcome);
  EnqueueLocked(std::move(out));
  SendNextBatchLocked(/*force=*/true);
}

void StreamCore::HandlePush(const kcnet::v1::MutationBatch& batch) {
  if (!RefreshScopeLocked()) return;
  absl::Duration retry_after;
  absl::Status allowed = hub_->push_limiter.Acquire(absl::StrCat(principal_.user_id), absl::Now(),
                                                    "push", &retry_after);
  if (!allowed.ok()) {
    SetRetryDelay(&allowed, retry_after);
    FinishLocked(allowed);
    return;
  }
  model::Actor actor = ActorFor(hub_->directory, principal_);
  const sync::Writer writer{device_key_, node_, actor.in_scope};
  absl::StatusOr<kcnet::v1::PushAck> ack = hub_->store->Apply(
      writer, batch, GuardedValidator(hub_->directory, hub_->options.guard, principal_));
  if (!ack.ok()) {
    FinishLocked(absl::Status(ack.status().code(), absl::StrCat("push.", ack.status().message())));
    return;
  }
  CountOutcomes(*ack);
  SyncServerMessage out;
  *out.mutable_push_ack() = std::move(*ack);
  EnqueueLocked(std::move(out));
}

void StreamCore::CountOutcomes(const kcnet::v1::PushAck& ack) const {
  const metrics::SyncMetrics* m = hub_->options.metrics;
  if (m == nullptr) return;
  for (const kcnet::v1::MutationResult& result : ack.results()) {
    switch (result.outcome()) {
      case kcnet::v1::MUTATION_OUTCOME_APPLIED:
      case kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT:
        m->applied->Increment();
        break;
      case kcnet::v1::MUTATION_OUTCOME_REFUSED:
        m->refused->Increment();
        break;
      case kcnet::v1::MUTATION_OUTCOME_DUPLICATE:
        m->duplicate->Increment();
        break;
      case kcnet::v1::MUTATION_OUTCOME_OUT_OF_ORDER:
        m->out_of_order->Increment();
        break;
      default:
        break;
    }
    m->conflicts->Increment(static_cast<uint64_t>(result.conflicts_size()));
  }
}

void StreamCore::HandleAck(const kcnet::v1::DownloadAck& ack) {
  // The oldest `pages` sent pages are acknowledged; compare where the device says it is
  // with where the last of them should have taken it.
  const size_t pages = std::min<size_t>(std::max<uint32_t>(ack.pages(), 1), sent_.size());
  if (pages == 0) return;  // nothing was waiting for an ack (e.g. a page already retired)
  SentPage acked;
  for (size_t i = 0; i < pages; ++i) {
    acked = std::move(sent_.front());
    sent_.pop_front();
  }
  for (const kcnet::v1::BucketCursor& c : ack.cursors()) {
    const int64_t bucket = c.bucket();
    if (!buckets_.contains(bucket)) continue;
    auto expected = acked.expected.find(bucket);
    if (expected == acked.expected.end()) continue;  // added after that page was sent
    auto stale = stale_through_.find(bucket);
    if (stale != stale_through_.end() && acked.index <= stale->second) continue;
    if (sync::SamePosition(c, expected->second)) continue;
    // The device is elsewhere (it reset the bucket after a checksum mismatch, or skipped a
    // stale page): continue from its cursor, and send the checkpoint again when reached.
    cursors_[bucket] = c;
    announced_.erase(bucket);
    stale_through_[bucket] = pages_sent_;
    ++cursor_epoch_;
  }
  SendNextBatchLocked(/*force=*/false);
}

void StreamCore::Poke(bool check_scope) {
  absl::MutexLock lock(&mu_);
  if (finished_ || !hello_done_) return;
  // A scope check reads a page only when the scope changed (RefreshScopeLocked sends it);
  // a commit always may have news.
  if (check_scope) {
    RefreshScopeLocked();
    return;
  }
  SendNextBatchLocked(/*force=*/false);
}

bool StreamCore::RefreshScopeLocked() {
  absl::StatusOr<Principal> principal = hub_->directory->Authenticate(token_);
  if (!principal.ok()) {
    FinishLocked(principal.status());
    return false;
  }
  principal_ = *principal;
  absl::StatusOr<std::vector<int64_t>> communes =
      hub_->directory->Communes(principal_.org_unit_ids);
  if (!communes.ok()) {
    FinishLocked(communes.status());
    return false;
  }
  const std::set<int64_t> now(communes->begin(), communes->end());
  if (now == buckets_) return true;
  kcnet::v1::ScopeChange change;
  for (int64_t b : now) {
    if (!buckets_.contains(b)) {
      change.add_added(b);
      cursors_[b].set_bucket(b);
    }
  }
  for (int64_t b : buckets_) {
    if (!now.contains(b)) {
      change.add_removed(b);
      cursors_.erase(b);
      announced_.erase(b);
    }
  }
  buckets_ = now;
  ++cursor_epoch_;
  hub_->SetBuckets(this, buckets_);
  SyncServerMessage out;
  *out.mutable_scope_change() = std::move(change);
  EnqueueLocked(std::move(out));
  SendNextBatchLocked(/*force=*/false);
  return !finished_;
}

// The analysis cannot follow mu_ released around the read.
void StreamCore::SendNextBatchLocked(bool force) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (reading_) {
    // The read in progress (another pool thread) reads again when it is done.
    read_again_ = true;
    return;
  }
  reading_ = true;
  while (!finished_ && sent_.size() < window_) {
    std::vector<kcnet::v1::BucketCursor> cursors;
    for (int64_t b : buckets_) cursors.push_back(cursors_[b]);
    const uint64_t epoch = cursor_epoch_;
    read_again_ = false;
    const bool deflate = deflate_pages_;
    mu_.Unlock();
    // A page to deflate lives on an arena until it is deflated; a plain one is moved into
    // the outgoing queue, so it lives on the heap.
    google::protobuf::Arena arena(PageArenaOptions());
    kcnet::v1::ChangeBatch heap_page;
    kcnet::v1::ChangeBatch* batch =
        deflate ? google::protobuf::Arena::CreateMessage<kcnet::v1::ChangeBatch>(&arena)
                : &heap_page;
    // A deflated page is read serialized: a store that keeps each record's download as
    // bytes splices them in rather than parse them into `batch` (pgsync18b).
    sync::SerializedPage wire(batch);
    const absl::Status read =
        deflate ? hub_->store->SerializedChangesSince(cursors, hub_->options.page, &wire)
                : hub_->store->ChangesSince(cursors, hub_->options.page, batch);
    mu_.Lock();
    if (finished_) break;
    if (epoch != cursor_epoch_) continue;  // read from cursors that no longer hold
    if (!read.ok()) {
      FinishLocked(read);
      break;
    }
    bool news = force || wire.changes_size() > 0;
    for (const kcnet::v1::BucketCheckpoint& cp : batch->checkpoints()) {
      auto it = announced_.find(cp.bucket());
      if (it == announced_.end() || it->second != cp.op()) news = true;
    }
    if (!news) {
      if (read_again_) continue;  // a commit came during the read: it may be news
      break;
    }
    force = false;
    for (const kcnet::v1::BucketCheckpoint& cp : batch->checkpoints()) {
      announced_[cp.bucket()] = cp.op();
    }
    for (const kcnet::v1::BucketCursor& c : batch->cursors()) {
      kcnet::v1::BucketCursor& mine = cursors_[c.bucket()];
      // A device taking several pages checks that each continues from where it is.
      if (window_ > 1) *batch->add_from() = mine;
      sync::AdvanceCursor(c, &mine);
    }
    sent_.push_back(SentPage{++pages_sent_, cursors_});
    SyncServerMessage out;
    if (deflate) {
      out.set_deflated_changes(sync::DeflatePage(wire));
    } else {
      *out.mutable_changes() = std::move(*batch);
    }
    if (const metrics::SyncMetrics* m = hub_->options.metrics; m != nullptr) {
      m->download_pages->Increment();
      m->download_bytes->Increment(deflate ? out.deflated_changes().size()
                                           : out.changes().ByteSizeLong());
    }
    EnqueueLocked(std::move(out));
  }
  reading_ = false;
}

void StreamCore::EnqueueLocked(SyncServerMessage message) {
  if (finished_) return;
  if (queue_.size() >= hub_->options.max_queued_messages) {
    FinishLocked(absl::ResourceExhaustedError(
        "stream: the device is not reading its messages; reconnect to resume"));
    return;
  }
  queue_.push_back(std::move(message));
  if (!write_in_flight_) StartWriteLocked();
}

void StreamCore::StartWriteLocked() {
  write_in_flight_ = true;
  grpc::WriteOptions options;
  // A deflated page is compressed already: gzip would only cost CPU.
  if (queue_.front().has_deflated_changes()) options.set_no_compression();
  reactor_->StartWrite(&queue_.front(), options);
}

void StreamCore::WriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!queue_.empty()) queue_.pop_front();
  if (finished_) return;
  if (!ok) {
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream: write failed"));
    return;
  }
  if (call_metrics_ != nullptr) call_metrics_->Sent();
  if (!queue_.empty()) {
    StartWriteLocked();
  } else if (finish_after_writes_) {
    FinishLocked(grpc::Status::OK);
  }
}

void StreamCore::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  if (hub_->options.logger != nullptr) {
    // One line per stream, as for every unary RPC; the latency is the stream's lifetime.
    hub_->options.logger->Rpc({.method = "/kcnet.v1.SyncService/Sync",
                               .caller = principal_.username.empty()
                                             ? absl::string_view("-")
                                             : absl::string_view(principal_.username),
                               .code = static_cast<absl::StatusCode>(status.error_code()),
                               .message = status.error_message(),
                               .latency_ms = absl::ToDoubleMilliseconds(absl::Now() - started_)});
  }
  if (call_metrics_ != nullptr) call_metrics_->Handled(status.error_code());
  hub_->Unregister(this);
  if (reactor_ != nullptr) reactor_->Finish(status);
}

// ---------------------------------------------------------------------------------------

SyncServiceImpl::SyncServiceImpl(Directory* directory, sync::ServerStore* store, RpcRunner* runner,
                                 SyncServiceOptions options)
    : directory_(directory),
      store_(store),
      runner_(runner),
      hub_(std::make_shared<SyncHub>(directory, store, options)) {
  std::weak_ptr<SyncHub> weak = hub_;
  store_->SetCommitListener([weak](const std::vector<int64_t>& buckets, uint64_t) {
    if (auto hub = weak.lock()) hub->OnCommit(buckets);
  });
}

SyncServiceImpl::~SyncServiceImpl() {
  store_->SetCommitListener(nullptr);
  Stop();
}

void SyncServiceImpl::Stop() { hub_->Stop(); }

int SyncServiceImpl::open_streams() const { return hub_->open_streams(); }

grpc::ServerBidiReactor<SyncClientMessage, SyncServerMessage>* SyncServiceImpl::Sync(
    grpc::CallbackServerContext* context) {
  return new SyncStream(hub_.get(), context);
}

grpc::ServerUnaryReactor* SyncServiceImpl::ListConflicts(
    grpc::CallbackServerContext* context, const kcnet::v1::ListConflictsRequest* request,
    kcnet::v1::ListConflictsResponse* response) {
  return runner_->Run(
      context, "kcnet.v1.SyncService/ListConflicts", [=, this](const Principal* p) -> absl::Status {
        if (p->role != kcnet::v1::ROLE_DISTRICT_COORDINATOR &&
            p->role != kcnet::v1::ROLE_PROVINCE_OFFICER) {
          return absl::PermissionDeniedError(
              "role: conflicts are reviewed by coordinators and province officers");
        }
        std::vector<int64_t> roots = p->org_unit_ids;
        if (request->org_unit_id() != 0) {
          bool within = false;
          for (int64_t root : p->org_unit_ids) {
            within = within || directory_->IsWithin(request->org_unit_id(), root);
          }
          if (!within) {
            return absl::NotFoundError(absl::StrCat(
                "org_unit_id: org unit ", request->org_unit_id(), " not found in your org units"));
          }
          roots = {request->org_unit_id()};
        }
        absl::StatusOr<std::vector<int64_t>> buckets = directory_->Communes(roots);
        if (!buckets.ok()) return buckets.status();
        if (buckets->empty()) return absl::OkStatus();
        absl::StatusOr<int> size = PageSize(request->page_size());
        if (!size.ok()) return size.status();
        const uint64_t fingerprint = QueryFingerprint(*request, absl::StrCat(p->user_id));
        absl::StatusOr<std::string> position = DecodePageToken(request->page_token(), fingerprint);
        if (!position.ok()) return position.status();
        uint64_t after = 0;
        if (!position->empty() && !absl::SimpleAtoi(*position, &after)) {
          return absl::InvalidArgumentError("page_token: not a position of this list");
        }
        absl::StatusOr<std::vector<kcnet::v1::Conflict>> conflicts = store_->ListConflicts(
            *buckets, request->include_resolved(), after, static_cast<size_t>(*size));
        if (!conflicts.ok()) return conflicts.status();
        for (auto& c : *conflicts) *response->add_conflicts() = c;
        if (static_cast<int>(conflicts->size()) == *size) {
          response->set_next_page_token(
              EncodePageToken(fingerprint, absl::StrCat(conflicts->back().id())));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SyncServiceImpl::ResolveConflict(
    grpc::CallbackServerContext* context, const kcnet::v1::ResolveConflictRequest* request,
    kcnet::v1::Conflict* response) {
  return runner_->Run(
      context, "kcnet.v1.SyncService/ResolveConflict",
      [=, this](const Principal* p) -> absl::Status {
        if (p->role != kcnet::v1::ROLE_DISTRICT_COORDINATOR &&
            p->role != kcnet::v1::ROLE_PROVINCE_OFFICER) {
          return absl::PermissionDeniedError(
              "role: conflicts are resolved by coordinators and province officers");
        }
        if (request->id() == 0) return absl::InvalidArgumentError("id: required");
        // The same answer for a conflict that does not exist and one outside the scope.
        const absl::Status not_found =
            absl::NotFoundError(absl::StrCat("id: conflict ", request->id(), " not found"));
        absl::StatusOr<std::vector<int64_t>> buckets = directory_->Communes(p->org_unit_ids);
        if (!buckets.ok()) return buckets.status();
        // No commune, no conflict: an empty list would mean every bucket to the store.
        if (buckets->empty()) return not_found;
        absl::StatusOr<std::vector<kcnet::v1::Conflict>> all =
            store_->ListConflicts(*buckets, /*include_resolved=*/true, request->id() - 1, 1);
        if (!all.ok()) return all.status();
        if (all->empty() || (*all)[0].id() != request->id()) return not_found;
        kcnet::v1::Conflict conflict = (*all)[0];
        const absl::Status already = absl::FailedPreconditionError(
            absl::StrCat("id: conflict ", request->id(), " is already resolved"));
        if (conflict.resolved()) return already;
        if (request->restore_loser() && conflict.field() != 0) {
          // Write the overwritten value back as the caller's own edit: every device gets it.
          // The restore and the mark commit in one transaction, and the mark is
          // conditional: a second coordinator's restore of the same conflict is dropped.
          absl::StatusOr<std::optional<kcnet::v1::RecordChange>> current =
              store_->ReadRecord(conflict.type(), conflict.record_id());
          if (!current.ok()) return current.status();
          if (!current->has_value() || (*current)->deleted()) {
            return absl::FailedPreconditionError("id: the record was deleted; nothing to restore");
          }
          kcnet::v1::MutationBatch batch;
          kcnet::v1::RecordChange* change = batch.add_mutations()->add_changes();
          change->set_type(conflict.type());
          change->set_id(conflict.record_id());
          change->set_base_op((*current)->op());
          change->set_hlc(store_->clock().Now());
          auto* f = change->add_fields();
          f->set_field(conflict.field());
          *f->mutable_value() = conflict.loser_value();
          absl::StatusOr<kcnet::v1::PushAck> ack = store_->ApplyAndResolve(
              sync::Writer{"", sync::NodeIdFor(absl::StrCat("user:", p->user_id))}, batch,
              GuardedValidator(directory_, hub_->options.guard, *p), conflict.id());
          if (!ack.ok()) {
            if (ack.status().code() == absl::StatusCode::kFailedPrecondition) return already;
            return ack.status();
          }
          if (ack->results(0).outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED) {
            return absl::Status(static_cast<absl::StatusCode>(ack->results(0).code()),
                                ack->results(0).reason());
          }
        } else {
          absl::Status status = store_->MarkConflictResolved(conflict.id());
          if (status.code() == absl::StatusCode::kFailedPrecondition) return already;
          if (!status.ok()) return status;
        }
        conflict.set_resolved(true);
        *response = conflict;
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SyncServiceImpl::ReleaseDevice(
    grpc::CallbackServerContext* context, const kcnet::v1::ReleaseDeviceRequest* request,
    kcnet::v1::ReleaseDeviceResponse* response) {
  return runner_->Run(context, "kcnet.v1.SyncService/ReleaseDevice",
                      [=, this](const Principal* p) -> absl::Status {
                        if (request->device_id().empty() || request->device_id().size() > 128) {
                          return absl::InvalidArgumentError("device_id: must be 1-128 bytes");
                        }
                        return store_->ReleaseDevice(request->device_id(), p->user_id,
                                                     p->role == kcnet::v1::ROLE_ADMINISTRATOR);
                      });
}

}  // namespace kcnet::server
