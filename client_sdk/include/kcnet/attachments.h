// Attachments on the device (docs/ATTACHMENTS.md, "On the device"): the types of the
// Client's attachment calls (kcnet/client.h, "Attachments").
//
// An attachment is a photo or a document (JPEG, PNG, WebP, PDF) that belongs to a visit, a
// request or a facility. Client::AddAttachment stores its bytes under their SHA-256 in a
// folder beside the store (ClientOptions::attachment_dir) and, in one local transaction,
// its metadata (an Attachment record, synced like any record) and a row of the upload
// queue. The client's sync uploads the queue after the records (records never wait for
// photos), resumably: a cut or a restart resumes at the offset the server committed.
// Bytes already uploaded are kept under a storage budget, the least recently used evicted
// first; bytes not yet uploaded are never evicted. Attachments made on other devices
// arrive as metadata and are downloaded on demand (Client::OpenAttachment).
//
// Plain data; no thread-safety concerns.
#ifndef KCNET_CLIENT_SDK_INCLUDE_KCNET_ATTACHMENTS_H_
#define KCNET_CLIENT_SDK_INCLUDE_KCNET_ATTACHMENTS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace kcnet::sdk {

// Where an attachment's bytes are, from this device's point of view.
enum class AttachmentState {
  kQueued = 0,     // added here, waiting for its upload
  kUploading = 1,  // an upload is under way (bytes_sent says how far the server committed)
  kUploaded = 2,   // the server has the bytes (verified by their SHA-256)
  kFailed = 3,     // the upload was refused for good (failure says why); RetryAttachment
  kRemote = 4,     // made on another device: metadata here, bytes on the server
};
// "queued", "uploading", "uploaded", "failed", "remote".
const char* AttachmentStateName(AttachmentState state);

// The media type the first bytes of a file say, by their magic numbers ("image/jpeg",
// "image/png", "image/webp", "application/pdf"); "" for anything else. 12 bytes suffice.
std::string SniffMediaTypeOf(const std::string& first_bytes);

// What AddAttachment stores. Either `file_path` or `bytes` (not both).
struct NewAttachment {
  uint32_t owner_type = 0;  // sync/model/record_types.h: 1 facility, 2 visit, 3 request
  std::string owner_id;     // the owner record's UUID text
  std::string file_path;    // read once, at the call (the app may delete it afterwards)
  std::string bytes;        // or the bytes themselves
  // "image/jpeg", "image/png", "image/webp" or "application/pdf". Checked against the
  // bytes' magic numbers, never the file's name; empty: taken from the magic numbers.
  std::string media_type;
  std::string caption;             // free text (Vietnamese welcome)
  int64_t taken_ms = 0;            // when the photo was taken (Unix ms); 0: now
  std::optional<double> latitude;  // where (WGS84), both or neither
  std::optional<double> longitude;
  // Upload order: higher first; equal priorities go smallest first (the default 0 for
  // all: smallest first). SetAttachmentPriority changes it later.
  int32_t priority = 0;
};

// An attachment as this device knows it.
struct AttachmentInfo {
  std::string id;  // the Attachment record's UUID text
  uint32_t owner_type = 0;
  std::string owner_id;
  int64_t commune_id = 0;
  std::string sha256;  // 64 lower-case hex digits
  int64_t size = 0;    // bytes
  std::string media_type;
  std::string caption;
  int64_t taken_ms = 0;
  std::optional<double> latitude;
  std::optional<double> longitude;
  int64_t author_id = 0;
  AttachmentState state = AttachmentState::kQueued;
  int64_t bytes_sent = 0;  // the server's committed offset (== size once uploaded)
  std::string failure;     // kFailed (or the last retried error while queued): why
  int32_t priority = 0;
  int32_t attempts = 0;  // failed upload attempts so far (reset by success)
  bool local = false;    // the bytes are on this device now (not evicted, or downloaded)
};

// A byte-level progress event of an upload or a download. An upload's stream has one per
// acknowledgement of the server, and at least one a second while it is open: on a stalled
// link (2G: a lost segment waits for its retransmission, and every byte behind it) the same
// numbers come again, so that the app can show "đang chờ mạng / waiting for the network".
struct AttachmentProgress {
  std::string id;
  AttachmentState state = AttachmentState::kQueued;
  bool download = false;   // a download (OpenAttachment) rather than an upload
  int64_t bytes_done = 0;  // committed by the server (upload) / written here (download)
  // Upload: handed to the network, ahead of bytes_done by what is in flight (at most
  // about 320 KiB: what a cut can cost). Download: == bytes_done.
  int64_t bytes_sent = 0;
  int64_t size = 0;
  std::string failure;  // set when this event reports a failure
  // Upload: what the server said it received (bytes_done <= bytes_received <= bytes_sent).
  // Not durable past bytes_done, so never stored as uploaded: a progress bar may show it,
  // a resume starts at bytes_done. Download: == bytes_done.
  int64_t bytes_received = 0;
};

// Called on the threads that run the transfer (the sync's or OpenAttachment's caller, an upload
// pass's upload threads (two uploads overlap at their ends), and
// the upload's acknowledgement reader), one call at a time per transfer, with no SDK lock
// held; keep it short (post to the UI thread). It may call the Client's read calls and
// CancelSync; it must not call Close or add or remove listeners.
using AttachmentListener = std::function<void(const AttachmentProgress&)>;

// What one upload pass did (Client::UploadAttachments, and the sync's pass).
struct AttachmentUploadSummary {
  int64_t uploaded = 0;       // attachments that reached kUploaded in this pass
  int64_t failed = 0;         // attachments that failed (for good, or will retry)
  int64_t payload_bytes = 0;  // payload bytes sent in chunks (resent bytes count again)
  int64_t remaining = 0;      // queued or uploading attachments left
  // Times a busy server (too many uploads at once) said to come back later, and the pass
  // waited as told before trying again (not counted as a failed attempt).
  int64_t busy_waits = 0;
};

}  // namespace kcnet::sdk

#endif  // KCNET_CLIENT_SDK_INCLUDE_KCNET_ATTACHMENTS_H_
