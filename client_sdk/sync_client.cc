#include "client_sdk/sync_client.h"

#include <algorithm>
#include <deque>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/arena.h"
#include "sync/page_codec.h"

namespace kcnet::sdk {
namespace {

using kcnet::v1::BucketCursor;
using kcnet::v1::ChangeBatch;
using kcnet::v1::MutationBatch;
using kcnet::v1::PushAck;
using kcnet::v1::SyncClientMessage;
using kcnet::v1::SyncServerMessage;

// The call's own deadline lies this far past the sync's, so that the sync notices its
// deadline first and can say what it was waiting for.
constexpr absl::Duration kCallGrace = absl::Seconds(2);
// Acknowledgements in a row that settle nothing (only OUT_OF_ORDER) before giving up.
constexpr int kMaxStalledAcks = 3;

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// A received server message, parsed on its own arena: a download page's thousands of
// small objects are allocated in a few blocks and freed at once.
struct Inbound {
  std::unique_ptr<google::protobuf::Arena> arena;
  SyncServerMessage* message = nullptr;  // on `arena`
};

google::protobuf::ArenaOptions InboundArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 4096;
  options.max_block_size = 64 << 10;
  return options;
}

}  // namespace

// One SyncService.Sync call: its context, the stream, and a reader thread that queues the
// server's messages for the syncing thread (which alone writes and touches the store).
class SyncClient::Session {
 public:
  Session(const std::string& token, absl::Time deadline) {
    if (!token.empty()) context_.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    context_.set_deadline(absl::ToChronoTime(deadline));
  }
  ~Session() {
    if (started_ && !finished_) Finish(/*cancel=*/true);
  }

  // Opens the call and starts the reader. Separate from the constructor so that the
  // context can be registered for Cancel() first: opening the stream blocks while the
  // server does not answer, and a TryCancel() made before or during it ends the call.
  void Start(kcnet::v1::SyncService::Stub* stub) {
    stream_ = stub->Sync(&context_);
    reader_ = std::thread([this] { ReadLoop(); });
    started_ = true;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  grpc::ClientContext* context() { return &context_; }

  // Sends one message. False once the stream is broken or half-closed (the reader then
  // sees the end of the stream and Finish() tells why).
  bool Write(const SyncClientMessage& message) {
    if (write_closed_) return false;
    if (!stream_->Write(message)) write_closed_ = true;
    return !write_closed_;
  }
  void WritesDone() {
    if (write_closed_) return;
    write_closed_ = true;
    stream_->WritesDone();
  }
  bool write_closed() const { return write_closed_; }

  enum class Next { kMessage, kClosed, kTimeout };
  // Waits until a message is queued (moved to *out), the server has ended the stream and
  // every message was taken, or `until` passes.
  Next Wait(absl::Time until, Inbound* out) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(this, &Session::Ready), until);
    if (!inbox_.empty()) {
      *out = std::move(inbox_.front());
      inbox_.pop_front();
      return Next::kMessage;
    }
    return closed_ ? Next::kClosed : Next::kTimeout;
  }

  // Moves the download pages at the head of the inbox (already received, not waited for)
  // to *out, at most `max`.
  void TakeQueuedPages(size_t max, std::vector<Inbound>* out) {
    absl::MutexLock lock(&mu_);
    while (max > 0 && !inbox_.empty() && inbox_.front().message->has_changes()) {
      out->push_back(std::move(inbox_.front()));
      inbox_.pop_front();
      --max;
    }
  }

  // Why the reader stopped reading a stream that was still open (a malformed message).
  absl::Status error() {
    absl::MutexLock lock(&mu_);
    return error_;
  }

  // Ends the call (cancelling it first when `cancel`), waits for the reader and returns
  // the call's final status. Once only.
  grpc::Status Finish(bool cancel) {
    finished_ = true;
    if (cancel) context_.TryCancel();
    reader_.join();
    return stream_->Finish();
  }

 private:
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !inbox_.empty() || closed_; }

  void ReadLoop() {
    while (true) {
      Inbound in;
      in.arena = std::make_unique<google::protobuf::Arena>(InboundArenaOptions());
      in.message = google::protobuf::Arena::CreateMessage<SyncServerMessage>(in.arena.get());
      if (!stream_->Read(in.message)) break;
      if (in.message->has_deflated_changes()) {
        // Inflated here, beside the syncing thread that stores the previous pages.
        const std::string deflated = in.message->deflated_changes();
        absl::Status status = sync::InflatePage(deflated, in.message->mutable_changes());
        if (!status.ok()) {
          absl::MutexLock lock(&mu_);
          error_ = status;
          context_.TryCancel();
          break;
        }
      }
      absl::MutexLock lock(&mu_);
      inbox_.push_back(std::move(in));
    }
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<SyncClientMessage, SyncServerMessage>> stream_;
  std::thread reader_;
  bool started_ = false;       // syncing thread only
  bool write_closed_ = false;  // syncing thread only
  bool finished_ = false;      // syncing thread only
  absl::Mutex mu_;
  std::deque<Inbound> inbox_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

SyncClient::SyncClient(std::shared_ptr<grpc::Channel> channel, sync::DeviceStore* store,
                       SyncClientOptions options)
    : stub_(kcnet::v1::SyncService::NewStub(std::move(channel))),
      store_(store),
      options_(std::move(options)) {}

SyncClient::~SyncClient() = default;

absl::StatusOr<SyncResult> SyncClient::SyncOnce() {
  absl::Status status = Run(Mode::kOnce, nullptr, options_.timeout);
  if (!status.ok()) return status;
  // Caught up: every write of this device is on the server and back. A clock left ahead
  // by a wrong date can come back now without ordering a new write before an older one.
  if (last_result_.welcome.server_time_ms() > 0) {
    absl::StatusOr<bool> recovered = store_->RecoverClock(last_result_.welcome.server_time_ms());
    if (!recovered.ok()) return Annotate(recovered.status(), "clock");
    last_result_.clock_recovered = *recovered;
  }
  return last_result_;
}

absl::Status SyncClient::RunUntil(std::function<bool()> done, absl::Duration timeout) {
  return Run(Mode::kLive, done, timeout);
}

void SyncClient::Cancel() {
  absl::MutexLock lock(&cancel_mu_);
  // Kept until the sync running (or the next one to start) ends: a Cancel() that comes
  // before the call is registered (while the store is read for Hello) still ends it.
  cancelled_ = true;
  if (active_ != nullptr) active_->TryCancel();
}

absl::Status SyncClient::Run(Mode mode, const std::function<bool()>& done, absl::Duration timeout) {
  last_result_ = SyncResult();
  SyncResult& result = last_result_;
  const absl::Time deadline = absl::Now() + timeout;
  // This sync takes the cancellation made while it ran (or before it started): the next
  // one starts afresh.
  absl::Cleanup consume_cancel = [this] {
    absl::MutexLock lock(&cancel_mu_);
    cancelled_ = false;
  };

  if (options_.verify_buckets) {
    absl::StatusOr<std::vector<int64_t>> damaged = store_->VerifyBuckets();
    if (!damaged.ok()) return Annotate(damaged.status(), "verify buckets");
    for (int64_t bucket : *damaged) {
      absl::Status status = store_->ResetBucket(bucket);
      if (!status.ok()) return Annotate(status, absl::StrCat("reset bucket ", bucket));
      result.reset_buckets.push_back(bucket);
    }
  }
  absl::StatusOr<std::vector<BucketCursor>> cursors = store_->Cursors();
  if (!cursors.ok()) return Annotate(cursors.status(), "cursors");

  Session session(options_.token, deadline + kCallGrace);
  {
    absl::MutexLock lock(&cancel_mu_);
    if (cancelled_) return absl::CancelledError("sync cancelled");
    active_ = session.context();
  }
  absl::Cleanup deactivate = [this] {
    absl::MutexLock lock(&cancel_mu_);
    active_ = nullptr;
  };
  session.Start(stub_.get());
  auto cancelled = [this] {
    absl::MutexLock lock(&cancel_mu_);
    return cancelled_;
  };
  // Ends the call early (a local failure, the deadline, Cancel()) and returns `status`.
  auto abandon = [&](absl::Status status) {
    result.server_status = FromGrpc(session.Finish(/*cancel=*/true));
    return status;
  };

  {
    SyncClientMessage hello;
    hello.mutable_hello()->set_device_id(store_->device_id());
    hello.mutable_hello()->set_schema_version(options_.schema_version);
    hello.mutable_hello()->set_download_window(std::max<uint32_t>(options_.download_window, 1));
    hello.mutable_hello()->set_deflate_pages(options_.deflate_pages);
    // What waits in the outbox, for the server's activity report (0 when unknown).
    absl::StatusOr<int64_t> pending = store_->PendingCount();
    if (pending.ok() && *pending > 0) {
      hello.mutable_hello()->set_pending_writes(
          static_cast<uint32_t>(std::min<int64_t>(*pending, UINT32_MAX)));
    }
    for (BucketCursor& c : *cursors) *hello.mutable_hello()->add_cursors() = std::move(c);
    session.Write(hello);  // on failure the reader sees the end and Finish() says why
  }

  bool welcomed = false;
  bool first_batch = false;     // the first page after Welcome has arrived
  bool more = false;            // the last page said another one is waiting
  bool push_in_flight = false;  // one MutationBatch at a time
  bool half_closed = false;
  int stalled_acks = 0;
  std::set<int64_t> to_purge;  // removed buckets, purged once nothing is pending
  std::set<int64_t> complete;  // buckets completed by a matching checkpoint

  // What SyncOnce() still waits for, or "" when caught up.
  auto awaiting = [&]() -> absl::StatusOr<std::string> {
    if (!welcomed) return std::string("the server's Welcome");
    if (push_in_flight) return std::string("a push acknowledgement");
    if (!first_batch) return std::string("the first download page");
    if (more) return std::string("the next download page (the last one said more)");
    if (!to_purge.empty()) {
      return absl::StrCat("pending mutations to be answered before purging buckets ",
                          absl::StrJoin(to_purge, ","));
    }
    absl::StatusOr<std::vector<BucketCursor>> now = store_->Cursors();
    if (!now.ok()) return now.status();
    std::vector<int64_t> incomplete;
    for (const BucketCursor& c : *now) {
      if (!complete.contains(c.bucket())) incomplete.push_back(c.bucket());
    }
    if (!incomplete.empty()) {
      return absl::StrCat("a checkpoint completing buckets ", absl::StrJoin(incomplete, ","));
    }
    absl::StatusOr<int64_t> pending = store_->PendingCount();
    if (!pending.ok()) return pending.status();
    if (*pending > 0) return absl::StrCat(*pending, " pending mutations to be pushed");
    absl::StatusOr<int64_t> count = store_->UnconfirmedCount();
    if (!count.ok()) return count.status();
    if (*count > 0) {
      return absl::StrCat(*count, " acknowledged mutations to come back in a download");
    }
    return std::string();
  };

  Inbound inbound;  // the message being handled
  while (true) {
    if (cancelled()) return abandon(absl::CancelledError("sync cancelled"));

    if (welcomed && !half_closed && !session.write_closed()) {
      // Push what is pending; once nothing is, purge the buckets the device lost.
      if (!push_in_flight) {
        absl::StatusOr<MutationBatch> batch =
            store_->PendingBatch(options_.max_push_mutations, options_.max_push_bytes);
        if (!batch.ok()) return abandon(Annotate(batch.status(), "pending batch"));
        if (batch->mutations_size() > 0) {
          const size_t n = static_cast<size_t>(batch->mutations_size());
          SyncClientMessage push;
          *push.mutable_push() = *std::move(batch);
          if (session.Write(push)) {
            push_in_flight = true;
            ++result.push_batches;
            result.pushed_mutations += n;
          }
        } else if (!to_purge.empty()) {
          for (int64_t bucket : to_purge) {
            absl::Status status = store_->Unsubscribe(bucket);
            if (!status.ok()) return abandon(Annotate(status, absl::StrCat("purge ", bucket)));
            result.purged.push_back(bucket);
            complete.erase(bucket);
          }
          to_purge.clear();
        }
      }
      bool finished = false;
      if (mode == Mode::kOnce) {
        absl::StatusOr<std::string> wait = awaiting();
        if (!wait.ok()) return abandon(wait.status());
        finished = wait->empty();
      } else {
        finished = done();
      }
      if (finished && !session.write_closed()) {
        session.WritesDone();
        half_closed = true;
      }
    }

    absl::Time until = deadline;
    if (mode == Mode::kLive && !half_closed) {
      until = std::min(deadline, absl::Now() + options_.live_poll_interval);
    }
    const Session::Next next = session.Wait(until, &inbound);
    if (next == Session::Next::kTimeout) {
      if (absl::Now() < deadline) continue;  // a live poll
      if (cancelled()) return abandon(absl::CancelledError("sync cancelled"));
      std::string what;
      if (half_closed) {
        what = "the server to end the stream after the device half-closed";
      } else if (mode == Mode::kLive) {
        what = "the live condition";
      } else {
        absl::StatusOr<std::string> wait = awaiting();
        what = wait.ok() ? *wait : wait.status().ToString();
      }
      return abandon(absl::DeadlineExceededError(absl::StrCat(
          "sync did not finish within ", absl::FormatDuration(timeout), "; waiting for ", what)));
    }
    if (next == Session::Next::kClosed) {
      result.server_status = FromGrpc(session.Finish(/*cancel=*/false));
      if (cancelled()) return absl::CancelledError("sync cancelled");
      if (absl::Status bad = session.error(); !bad.ok()) {
        return absl::Status(bad.code(), absl::StrCat("a page from the server: ", bad.message()));
      }
      if (half_closed) return absl::OkStatus();  // caught up (or done) before the end
      if (!result.server_status.ok()) return result.server_status;
      return absl::UnavailableError(
          "the server ended the sync stream before the device was caught up");
    }

    const SyncServerMessage& message = *inbound.message;
    switch (message.kind_case()) {
      case SyncServerMessage::kWelcome: {
        const kcnet::v1::Welcome& welcome = message.welcome();
        result.welcome = welcome;
        welcomed = true;
        if (welcome.server_time_ms() > 0) {
          result.clock_skew_ms = store_->WallMs() - welcome.server_time_ms();
        }
        // A restored server: renumber, queue hand-backs and reset the cursors before
        // anything is pushed or stored. The pages the server already read from the old
        // cursors are skipped (their `from` no longer matches) or re-verified by their
        // checkpoints; the acknowledgement sends the reset cursors.
        absl::StatusOr<sync::Recovery> recovery = store_->ObserveServer(welcome);
        if (!recovery.ok()) {
          return abandon(Annotate(recovery.status(), "server incarnation"));
        }
        result.recovery = *std::move(recovery);
        for (int64_t bucket : welcome.buckets()) {
          absl::Status status = store_->Subscribe(bucket);
          if (!status.ok()) {
            return abandon(Annotate(status, absl::StrCat("subscribe ", bucket)));
          }
          result.subscribed.push_back(bucket);
        }
        for (int64_t bucket : welcome.removed()) to_purge.insert(bucket);
        break;
      }
      case SyncServerMessage::kChanges: {
        // This page and the ones right behind it, stored in one transaction.
        std::vector<Inbound> group;
        group.push_back(std::move(inbound));
        session.TakeQueuedPages(std::max<size_t>(options_.max_pages_per_transaction, 1) - 1,
                                &group);
        std::vector<const ChangeBatch*> pages;
        for (const Inbound& in : group) pages.push_back(&in.message->changes());
        absl::StatusOr<sync::DownloadResult> applied = store_->ApplyDownload(pages);
        if (!applied.ok()) return abandon(Annotate(applied.status(), "apply download"));
        result.download_batches += pages.size();
        for (const ChangeBatch* page : pages) {
          result.received_changes += static_cast<size_t>(page->changes_size());
        }
        result.applied_changes += applied->applied;
        for (int64_t bucket : applied->moved) complete.erase(bucket);
        for (int64_t bucket : applied->completed) complete.insert(bucket);
        for (int64_t bucket : applied->mismatched) {
          // The checksum disagrees: purge the bucket and ask for it again from scratch.
          absl::Status status = store_->ResetBucket(bucket);
          if (!status.ok()) return abandon(Annotate(status, absl::StrCat("reset ", bucket)));
          result.reset_buckets.push_back(bucket);
          complete.erase(bucket);
        }
        first_batch = true;
        more = pages.back()->more();
        if (!half_closed) {
          absl::StatusOr<std::vector<BucketCursor>> now = store_->Cursors();
          if (!now.ok()) return abandon(Annotate(now.status(), "cursors"));
          SyncClientMessage ack;
          for (BucketCursor& c : *now) *ack.mutable_download_ack()->add_cursors() = std::move(c);
          if (pages.size() > 1) {
            ack.mutable_download_ack()->set_pages(static_cast<uint32_t>(pages.size()));
          }
          session.Write(ack);
        }
        // Every page but the last is reported here; the last goes below, as `inbound`.
        if (options_.on_message) {
          for (size_t i = 0; i + 1 < group.size(); ++i) options_.on_message(*group[i].message);
        }
        inbound = std::move(group.back());
        break;
      }
      case SyncServerMessage::kPushAck: {
        const PushAck& ack = message.push_ack();
        absl::StatusOr<std::vector<sync::Report>> reports = store_->Acknowledge(ack);
        if (!reports.ok()) return abandon(Annotate(reports.status(), "acknowledge"));
        for (sync::Report& r : *reports) result.reports.push_back(std::move(r));
        push_in_flight = false;
        bool progress = false;
        for (const kcnet::v1::MutationResult& r : ack.results()) {
          progress = progress || (r.outcome() != kcnet::v1::MUTATION_OUTCOME_OUT_OF_ORDER &&
                                  r.outcome() != kcnet::v1::MUTATION_OUTCOME_UNSPECIFIED);
        }
        stalled_acks = progress ? 0 : stalled_acks + 1;
        if (stalled_acks >= kMaxStalledAcks) {
          return abandon(absl::AbortedError(absl::StrCat(
              "push: the server answered ", kMaxStalledAcks,
              " pushes in a row without settling a mutation (OUT_OF_ORDER); its last applied "
              "sequence is ",
              ack.last_applied_seq())));
        }
        break;
      }
      case SyncServerMessage::kScopeChange: {
        const kcnet::v1::ScopeChange& change = message.scope_change();
        for (int64_t bucket : change.added()) {
          absl::Status status = store_->Subscribe(bucket);
          if (!status.ok()) {
            return abandon(Annotate(status, absl::StrCat("subscribe ", bucket)));
          }
          result.subscribed.push_back(bucket);
          complete.erase(bucket);
        }
        for (int64_t bucket : change.removed()) {
          to_purge.insert(bucket);
          complete.erase(bucket);
        }
        break;
      }
      default:
        break;  // a message kind this build does not know: ignore it
    }
    if (options_.on_message) options_.on_message(*inbound.message);
  }
}

}  // namespace kcnet::sdk
