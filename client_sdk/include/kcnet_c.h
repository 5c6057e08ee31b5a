/* kcnet_c.h: the C ABI of the kcnet client SDK (libkcnet), for apps that cannot use the
 * C++ API (client_sdk/include/kcnet/client.h) directly: Android apps through JNI, iOS apps
 * through Swift, anything with a C FFI. Modelled on Couchbase Lite's C4 API:
 *
 *   - Opaque handles: a kcnet_client is one open local store (kcnet::sdk::Client).
 *   - Names are kcnet_noun_verb(); the library exports no other symbol.
 *   - Every call that can fail returns bool (or a handle, NULL on failure) and takes a
 *     `kcnet_error* out_error` as its last argument, which may be NULL when the caller
 *     does not want the details. On success *out_error is set to code 0 and "".
 *   - Records go in and out as serialized protobuf of proto/kcnet/v1 (kcnet.v1.Facility,
 *     Visit, SupportRequest, RequestEvent, User, and the lists and state messages of
 *     sdk.proto: FacilityList, SyncStatus, Report, ...). Apps decode them with their own
 *     generated classes (Kotlin/Java, Swift, ...). docs/EMBEDDING.md shows how.
 *   - Callbacks take a `void* context` the app passed in.
 *
 * Errors. kcnet_error::code is an absl / gRPC canonical code (KCNET_CODE_*): 3
 * INVALID_ARGUMENT names the argument or field ("facility.latitude: ...", "client: must
 * not be NULL", "facility: not a serialized kcnet.v1.Facility ..."), 5 NOT_FOUND an
 * unknown record, 7 PERMISSION_DENIED / 9 FAILED_PRECONDITION a business rule, 16
 * UNAUTHENTICATED a call that needs a signed-in user (or bad credentials at sign-in), 14
 * UNAVAILABLE an unreachable server (never a busy local store: that is 8
 * RESOURCE_EXHAUSTED, "database is locked"), 1 CANCELLED a sync that kcnet_sync_cancel,
 * suspension or kcnet_client_free ended. A call that fails changes nothing. The message
 * is UTF-8 in a fixed buffer inside the struct: nothing to free.
 *
 * Input validation. Every call checks its arguments before doing anything: NULL handles and
 * pointers, strings that are not valid UTF-8, bytes that do not parse as the expected
 * message (including fields the message does not have, and string fields that are not
 * valid UTF-8), unknown enum values. No C++ exception and no abort crosses this ABI: an
 * unexpected failure inside the library comes back as 13 INTERNAL (8 RESOURCE_EXHAUSTED
 * when out of memory).
 *
 * Memory ownership.
 *   - Inputs (kcnet_bytes, const char*) are borrowed for the duration of the call only.
 *   - Outputs are kcnet_buffer values the library allocates; the caller owns them and frees
 *     each with kcnet_buffer_free(). An output buffer is overwritten, not freed: pass an
 *     empty one ({NULL, 0}). On failure it is left empty. On success `data` is never NULL
 *     (an empty message is a valid, zero-length buffer).
 *   - Bytes passed to callbacks (kcnet_bytes) are valid only during the callback.
 *   - Strings the library returns (kcnet_version, kcnet_code_name) are static.
 *
 * Handles. A kcnet_client* is an opaque handle, not a pointer the library dereferences: a
 * call on a handle that was freed (or freed twice) is refused with INVALID_ARGUMENT
 * ("client: not an open kcnet_client ..."), never a read of freed memory.
 *
 * Thread-safety. All calls are thread-safe and may come from any thread, on one or several
 * clients. kcnet_client_free() may run while other calls on the client are in flight: it
 * cancels their syncs and waits for them; later calls on the handle are refused.
 * Callbacks never run under a library lock: change events are queued and delivered in
 * order on the SDK's notifier thread (progress callbacks on the thread of kcnet_sync_now),
 * so a callback may call any function, on any client. The two that would wait for the
 * SDK's own thread, kcnet_sync_stop_background and kcnet_client_free, answer 9
 * FAILED_PRECONDITION when called from an observer instead of deadlocking (and
 * kcnet_sync_now from its own progress callback does the same). A local write returns once
 * observers heard of it (unless it was made from an observer). Writes are serialised by the
 * store; syncs run one at a time.
 *
 * One client per store file: a second kcnet_client_open of a file that is open (in this
 * process or another) answers FAILED_PRECONDITION naming the file.
 *
 * Strings are NUL-terminated UTF-8. Ids are UUID text. Times are Unix milliseconds.
 */
#ifndef KCNET_CLIENT_SDK_INCLUDE_KCNET_C_H_
#define KCNET_CLIENT_SDK_INCLUDE_KCNET_C_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the exported functions (the library is built with hidden visibility). */
#if defined(_WIN32) && defined(KCNET_BUILDING_LIBRARY)
#define KCNET_API __declspec(dllexport)
#elif defined(_WIN32)
#define KCNET_API __declspec(dllimport)
#else
#define KCNET_API __attribute__((visibility("default")))
#endif

/* ---- Errors ------------------------------------------------------------------------- */

/* The canonical status codes (google.rpc.Code, absl::StatusCode). */
enum {
  KCNET_CODE_OK = 0,
  KCNET_CODE_CANCELLED = 1,
  KCNET_CODE_UNKNOWN = 2,
  KCNET_CODE_INVALID_ARGUMENT = 3,
  KCNET_CODE_DEADLINE_EXCEEDED = 4,
  KCNET_CODE_NOT_FOUND = 5,
  KCNET_CODE_ALREADY_EXISTS = 6,
  KCNET_CODE_PERMISSION_DENIED = 7,
  KCNET_CODE_RESOURCE_EXHAUSTED = 8,
  KCNET_CODE_FAILED_PRECONDITION = 9,
  KCNET_CODE_ABORTED = 10,
  KCNET_CODE_OUT_OF_RANGE = 11,
  KCNET_CODE_UNIMPLEMENTED = 12,
  KCNET_CODE_INTERNAL = 13,
  KCNET_CODE_UNAVAILABLE = 14,
  KCNET_CODE_DATA_LOSS = 15,
  KCNET_CODE_UNAUTHENTICATED = 16
};

#define KCNET_ERROR_MESSAGE_SIZE 1024

typedef struct kcnet_error {
  int code; /* KCNET_CODE_*; 0 on success */
  /* NUL-terminated UTF-8; a longer message is cut at a character boundary. */
  char message[KCNET_ERROR_MESSAGE_SIZE];
} kcnet_error;

/* The name of a code ("INVALID_ARGUMENT"); "UNKNOWN_CODE" for a value outside 0..16.
 * Static string. */
KCNET_API const char* kcnet_code_name(int code);

/* The library's version, e.g. "0.1.0". Static string. */
KCNET_API const char* kcnet_version(void);

/* ---- Bytes ---------------------------------------------------------------------------- */

/* Borrowed bytes: a serialized protobuf message passed in (or to a callback). */
typedef struct kcnet_bytes {
  const uint8_t* data; /* may be NULL when size is 0 */
  size_t size;
} kcnet_bytes;

/* Owned bytes the library returns: free with kcnet_buffer_free(). */
typedef struct kcnet_buffer {
  uint8_t* data;
  size_t size;
} kcnet_buffer;

/* Frees buffer->data and resets the buffer to {NULL, 0}. NULL and empty buffers are fine. */
KCNET_API void kcnet_buffer_free(kcnet_buffer* buffer);

/* ---- Opening and closing ---------------------------------------------------------------- */

typedef struct kcnet_client kcnet_client;

/* kcnet_client_options.tls_mode. */
enum {
  KCNET_TLS_AUTO = 0, /* TLS unless the server is on this machine (127.0.0.0/8, localhost, [::1]) */
  KCNET_TLS_ON = 1,
  KCNET_TLS_OFF = 2 /* plaintext: tests and demos on a trusted network only */
};

typedef struct kcnet_client_options {
  /* sizeof(kcnet_client_options), set by kcnet_client_options_init(): lets later versions
   * of the library add fields without breaking apps built against this one. A library
   * accepts the struct_size of every version of this struct up to its own: the fields an
   * older app's struct does not have keep their defaults. Fields are only ever added at
   * the end. */
  size_t struct_size;
  const char* path;           /* the local store file (created when missing); required */
  const char* device_id;      /* stable per installation, 1-128 bytes; required */
  const char* server_address; /* "host:port"; NULL or "": offline only */
  /* true: TLS (as tls_mode KCNET_TLS_ON). With tls_mode KCNET_TLS_AUTO, false means auto.
   * Apps built before tls_mode existed get exactly what they asked: false is plaintext. */
  bool use_tls;
  const char* tls_root_certs; /* PEM text of the CAs to trust; NULL or "": see tls_ca_file */
  bool durable;               /* fsync each local commit (default true) */
  int64_t sync_timeout_ms;    /* one sync's limit (default 120000) */
  /* Background sync: after a failure wait a random time in
   * [0, min(max_backoff, initial_backoff * 2^failures)]; after a success `interval`; a
   * local write starts a sync after `write_delay`. Defaults 1000, 300000, 60000, 2000. */
  int64_t initial_backoff_ms;
  int64_t max_backoff_ms;
  int64_t interval_ms;
  int64_t write_delay_ms;
  uint64_t seed; /* seed of the jitter; 0: random (tests fix it) */
  /* ---- added in 0.2 (the first version ended with `seed`) ---- */
  int tls_mode; /* KCNET_TLS_AUTO (default), KCNET_TLS_ON or KCNET_TLS_OFF */
  /* A PEM file of the CA(s) to trust, read at open (INVALID_ARGUMENT naming it when it
   * cannot be read). NULL and tls_root_certs NULL: the system's roots, which gRPC on iOS
   * does not have: iOS apps bundle their CA file and pass its path here. */
  const char* tls_ca_file;
  /* ---- added in 0.3 (attachments) ---- */
  /* The folder of the attachments' bytes; NULL or "": `path` + ".attachments". */
  const char* attachment_dir;
  /* Bytes of uploaded (and downloaded) attachments kept, least recently used evicted
   * first; bytes not yet uploaded never count and are never evicted. Default 256 MiB. */
  int64_t attachment_budget_bytes;
} kcnet_client_options;

/* Fills the first `struct_size` bytes of *options with the defaults and sets
 * options->struct_size to it: pass sizeof(kcnet_client_options) as the app's header
 * knows it (kcnet_client_options_init below does). Never writes past `struct_size`, so an
 * app built against an older, smaller struct is safe with a newer library. A size smaller
 * than the first version's writes nothing. */
KCNET_API void kcnet_client_options_init_sized(kcnet_client_options* options, size_t struct_size);

#ifdef KCNET_BUILDING_LIBRARY
/* The first version's exported init, still called by apps built against it: fills the
 * first version's fields only (its struct has no more). */
KCNET_API void kcnet_client_options_init(kcnet_client_options* options);
#else
/* Fills *options with the defaults (and struct_size). Call it first, then set fields.
 * Inline, so that the size is the one of the struct this app was compiled with. */
static inline void kcnet_client_options_init(kcnet_client_options* options) {
  kcnet_client_options_init_sized(options, sizeof(*options));
}
#endif

/* Opens (or creates) the local store. Returns NULL on failure: INVALID_ARGUMENT for bad
 * options (the field named, e.g. "options.device_id: ..."; "options.struct_size: ..." for
 * a size no version of the struct had), FAILED_PRECONDITION with the file's name when it
 * is not a kcnet device store, belongs to another device, was written by a newer kcnet,
 * or is open in another client. The options' strings are copied. */
KCNET_API kcnet_client* kcnet_client_open(const kcnet_client_options* options,
                                          kcnet_error* out_error);

/* Closes the client: cancels every sync (within about a second, whatever the server
 * does), stops the background sync, delivers the queued change events, removes the
 * observers (calling their free callbacks), waits for calls in flight on other threads,
 * and closes the store. NULL is a no-op. INVALID_ARGUMENT for a handle that is not open (a
 * second free); FAILED_PRECONDITION, closing nothing, from an observer or a progress
 * callback (free it from an app thread). */
KCNET_API bool kcnet_client_free(kcnet_client* client, kcnet_error* out_error);

/* kcnet_client_free without an error: a refusal goes to the log callback. */
KCNET_API void kcnet_client_close(kcnet_client* client);

/* ---- Account ---------------------------------------------------------------------------- */

/* Signs in online. The token, a device credential and the user are kept in the store, so
 * the app works offline afterwards and after restarts, and syncs for months without the
 * password (the token is renewed with the credential). UNAUTHENTICATED for a wrong username
 * or password. A store belongs to one user at a time: signing in as another user purges
 * the previous user's data, and while that user has writes not uploaded it is
 * FAILED_PRECONDITION naming them (sync as that user first, or kcnet_client_export_pending
 * and kcnet_client_sign_in_with KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER). */
KCNET_API bool kcnet_client_sign_in(kcnet_client* client, const char* username,
                                    const char* password, kcnet_error* out_error);

/* Flags of kcnet_client_sign_in_with / kcnet_client_sign_out_with. */
enum {
  /* Drop the previous user's writes not yet uploaded (export them first). */
  KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER = 1,
  /* Drop this user's writes not yet uploaded (export them first). */
  KCNET_SIGN_OUT_DISCARD_PENDING = 1
};

/* kcnet_client_sign_in with flags (0 or KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER);
 * INVALID_ARGUMENT for unknown flags. */
KCNET_API bool kcnet_client_sign_in_with(kcnet_client* client, const char* username,
                                         const char* password, uint32_t flags,
                                         kcnet_error* out_error);

/* Signs the user out of this device (a shared tablet): online, releases the device on the
 * server and revokes the token and the device credential, then purges the user's data
 * from the store. FAILED_PRECONDITION while writes are not uploaded (sync first, or
 * export them and use kcnet_client_sign_out_with KCNET_SIGN_OUT_DISCARD_PENDING).
 * Without a network it succeeds too: the data is purged now and the release and
 * revocation are sent at the next connection (the next sign-in or sync, whoever is
 * signed in then); UNAVAILABLE (nothing changes) only while an earlier offline sign-out
 * is still owed to the server. */
KCNET_API bool kcnet_client_sign_out(kcnet_client* client, kcnet_error* out_error);
KCNET_API bool kcnet_client_sign_out_with(kcnet_client* client, uint32_t flags,
                                          kcnet_error* out_error);

/* Writes the writes not yet uploaded to the file `path` (a serialized
 * kcnet.v1.MutationBatch, replaced atomically); *out_count (may be NULL) gets how many. */
KCNET_API bool kcnet_client_export_pending(kcnet_client* client, const char* path,
                                           int64_t* out_count, kcnet_error* out_error);

/* *out_required is true when the server refused this device's credential (revoked, user
 * deactivated): the background sync stopped trying, nothing pending is lost, and the app
 * must ask the user to sign in again. Observers also hear KCNET_CHANGE_SIGN_IN_REQUIRED
 * once, and kcnet.v1.SyncStatus.sign_in_required says the same. */
KCNET_API bool kcnet_client_sign_in_required(kcnet_client* client, bool* out_required,
                                             kcnet_error* out_error);

/* The signed-in user: *out_signed_in says whether somebody is; if so, *out_user gets a
 * serialized kcnet.v1.User (otherwise it stays empty). out_user may be NULL. */
KCNET_API bool kcnet_client_user(kcnet_client* client, bool* out_signed_in, kcnet_buffer* out_user,
                                 kcnet_error* out_error);

/* ---- Directory: names and codes (offline) ----------------------------------------------- */
/* The org units of the user's scope and of the path above it, and the users who work
 * there, as the SDK last fetched them (at sign-in, and after each sync when they changed).
 * Read from the store, offline too; purged with the user's data on sign-out and user
 * switch. NOT_FOUND when the device's directory does not hold the id or code: show the id
 * then. Show a unit as "<name> (<code>)", e.g. "Xã An Bình (90101)". */

/* An org unit by id: a serialized kcnet.v1.OrgUnit. */
KCNET_API bool kcnet_directory_org_unit(kcnet_client* client, int64_t id, kcnet_buffer* out_unit,
                                        kcnet_error* out_error);

/* An org unit by official code, exactly as the server spells it ("90101"): a serialized
 * kcnet.v1.OrgUnit. INVALID_ARGUMENT for an empty code. */
KCNET_API bool kcnet_directory_org_unit_by_code(kcnet_client* client, const char* code,
                                                kcnet_buffer* out_unit, kcnet_error* out_error);

/* Every org unit of the directory: a serialized kcnet.v1.OrgUnitList, ordered by id. */
KCNET_API bool kcnet_directory_org_units(kcnet_client* client, kcnet_buffer* out_list,
                                         kcnet_error* out_error);

/* A user of the directory: a serialized kcnet.v1.User with only id, display_name, role and
 * active set (never a username or phone). */
KCNET_API bool kcnet_directory_user(kcnet_client* client, int64_t user_id, kcnet_buffer* out_user,
                                    kcnet_error* out_error);

/* ---- Facilities ------------------------------------------------------------------------- */
/* Writes work offline: the record and its upload are stored in one local transaction. The
 * `out_*` result of a write (the record as stored) may be NULL; the results of queries are
 * required. */

/* Registers a facility (serialized kcnet.v1.Facility) in one of the user's communes; the
 * id is made here when empty, created_by / created_ms are set here. */
KCNET_API bool kcnet_facility_register(kcnet_client* client, kcnet_bytes facility,
                                       kcnet_buffer* out_facility, kcnet_error* out_error);

/* Sets the fields named in `fields` ("name", "workers", ...; `field_count` entries) of the
 * facility `facility.id` from `facility`. */
KCNET_API bool kcnet_facility_update(kcnet_client* client, kcnet_bytes facility,
                                     const char* const* fields, size_t field_count,
                                     kcnet_buffer* out_facility, kcnet_error* out_error);

/* A facility (serialized kcnet.v1.Facility); NOT_FOUND when unknown. */
KCNET_API bool kcnet_facility_get(kcnet_client* client, const char* id, kcnet_buffer* out_facility,
                                  kcnet_error* out_error);

/* Facilities of a commune, by name: a serialized kcnet.v1.FacilityList. */
KCNET_API bool kcnet_facility_list_by_commune(kcnet_client* client, int64_t commune_id,
                                              kcnet_buffer* out_list, kcnet_error* out_error);

/* Facilities whose name, owner or products contain every word of `query` (as a prefix),
 * ignoring case and Vietnamese diacritics (đ reads as d): "Hà Nội", "ha noi" and "HA NOI"
 * match each other. At most `limit` (1..1000) hits, best first: a serialized
 * kcnet.v1.FacilityHitList. */
KCNET_API bool kcnet_facility_search(kcnet_client* client, const char* query, int limit,
                                     kcnet_buffer* out_hits, kcnet_error* out_error);

/* ---- Visits ----------------------------------------------------------------------------- */

/* Records a visit (serialized kcnet.v1.Visit) to a facility; commune, collaborator and,
 * when 0, the time are set here. */
KCNET_API bool kcnet_visit_record(kcnet_client* client, kcnet_bytes visit, kcnet_buffer* out_visit,
                                  kcnet_error* out_error);

/* Visits of a facility, newest first: a serialized kcnet.v1.VisitList. */
KCNET_API bool kcnet_visit_list_by_facility(kcnet_client* client, const char* facility_id,
                                            kcnet_buffer* out_list, kcnet_error* out_error);

/* ---- Support requests ------------------------------------------------------------------- */
/* Results are serialized kcnet.v1.SupportRequest. */

/* Drafts a request (serialized kcnet.v1.SupportRequest) for a facility: status DRAFT,
 * author = the user. */
KCNET_API bool kcnet_request_draft(kcnet_client* client, kcnet_bytes request,
                                   kcnet_buffer* out_request, kcnet_error* out_error);

/* Edits the fields named in `fields` of a draft or returned request. */
KCNET_API bool kcnet_request_update(kcnet_client* client, kcnet_bytes request,
                                    const char* const* fields, size_t field_count,
                                    kcnet_buffer* out_request, kcnet_error* out_error);

/* A life-cycle action (a kcnet.v1.RequestAction value: 2 SUBMIT, 3 ENDORSE, 4 RETURN,
 * 5 REJECT, 7 START, 8 COMPLETE, 9 CANCEL) or 10 COMMENT, checked offline against the same
 * rules as the server. `note` may be NULL (no note). Use kcnet_request_approve to approve. */
KCNET_API bool kcnet_request_act(kcnet_client* client, const char* request_id, int action,
                                 const char* note, kcnet_buffer* out_request,
                                 kcnet_error* out_error);

/* Shorthands of kcnet_request_act. */
KCNET_API bool kcnet_request_submit(kcnet_client* client, const char* request_id,
                                    kcnet_buffer* out_request, kcnet_error* out_error);
KCNET_API bool kcnet_request_endorse(kcnet_client* client, const char* request_id, const char* note,
                                     kcnet_buffer* out_request, kcnet_error* out_error);
KCNET_API bool kcnet_request_return(kcnet_client* client, const char* request_id, const char* note,
                                    kcnet_buffer* out_request, kcnet_error* out_error);
KCNET_API bool kcnet_request_reject(kcnet_client* client, const char* request_id, const char* note,
                                    kcnet_buffer* out_request, kcnet_error* out_error);
KCNET_API bool kcnet_request_comment(kcnet_client* client, const char* request_id, const char* text,
                                     kcnet_buffer* out_request, kcnet_error* out_error);

/* Approves a request (province officer): the amount in whole VND and the funding source
 * (a kcnet.v1.FundingSource value: 1 LOCAL, 2 NATIONAL; 3 COUNTERPART is a plan line, never
 * an approval's funding, and is refused). The approval draws on the province's extension
 * plan when it syncs: beyond what remains it is refused (docs/API.md). */
KCNET_API bool kcnet_request_approve(kcnet_client* client, const char* request_id,
                                     int64_t amount_vnd, int funding, const char* note,
                                     kcnet_buffer* out_request, kcnet_error* out_error);

KCNET_API bool kcnet_request_get(kcnet_client* client, const char* id, kcnet_buffer* out_request,
                                 kcnet_error* out_error);

/* The request's audit trail, oldest first: a serialized kcnet.v1.RequestEventList. */
KCNET_API bool kcnet_request_events(kcnet_client* client, const char* request_id,
                                    kcnet_buffer* out_list, kcnet_error* out_error);

/* Requests on which the user may take a review action now (district coordinator: endorse /
 * return / reject; province: approve), oldest first; for a collaborator, their own returned
 * requests. A serialized kcnet.v1.SupportRequestList. */
KCNET_API bool kcnet_request_list_awaiting_review(kcnet_client* client, kcnet_buffer* out_list,
                                                  kcnet_error* out_error);

/* Requests of a facility, newest first: a serialized kcnet.v1.SupportRequestList. */
KCNET_API bool kcnet_request_list_by_facility(kcnet_client* client, const char* facility_id,
                                              kcnet_buffer* out_list, kcnet_error* out_error);

/* ---- Uploads and reports ---------------------------------------------------------------- */

/* Local writes waiting for upload: a serialized kcnet.v1.PendingUploadList. */
KCNET_API bool kcnet_upload_list_pending(kcnet_client* client, kcnet_buffer* out_list,
                                         kcnet_error* out_error);

/* Reports (refused writes, conflicts) not yet taken, oldest first: a serialized
 * kcnet.v1.ReportList. `list` leaves them; `take` removes them. */
KCNET_API bool kcnet_report_list(kcnet_client* client, kcnet_buffer* out_list,
                                 kcnet_error* out_error);
KCNET_API bool kcnet_report_take(kcnet_client* client, kcnet_buffer* out_list,
                                 kcnet_error* out_error);

/* ---- Attachments (docs/ATTACHMENTS.md) ------------------------------------------------ */

/* Adds a photo or document to a visit, request or facility, offline. `new_attachment` is a
 * serialized kcnet.v1.NewAttachment (owner, file_path or data, media type, caption, time,
 * place, priority). The bytes are stored under their SHA-256 beside the store, then the
 * attachment's record and its upload-queue row in one local transaction; the sync uploads
 * them after the records, resumably. *out_info (may be NULL): a kcnet.v1.AttachmentInfo.
 * INVALID_ARGUMENT names the field ("attachment.media_type: ..." for bytes that are not a
 * JPEG, PNG, WebP or PDF by their magic numbers, "attachment.bytes: ... too big"), NOT_FOUND
 * an owner this device does not hold ("attachment.owner_id: ..."); nothing is stored then. */
KCNET_API bool kcnet_attachment_add(kcnet_client* client, kcnet_bytes new_attachment,
                                    kcnet_buffer* out_info, kcnet_error* out_error);
/* One attachment: a kcnet.v1.AttachmentInfo. */
KCNET_API bool kcnet_attachment_get(kcnet_client* client, const char* id, kcnet_buffer* out_info,
                                    kcnet_error* out_error);
/* Every attachment the device knows (the upload queue first, in the order it runs), or
 * those of one record (owner_type: KCNET_RECORD_*; by time taken): a
 * kcnet.v1.AttachmentInfoList. */
KCNET_API bool kcnet_attachment_list(kcnet_client* client, kcnet_buffer* out_list,
                                     kcnet_error* out_error);
KCNET_API bool kcnet_attachment_list_by_owner(kcnet_client* client, uint32_t owner_type,
                                              const char* owner_id, kcnet_buffer* out_list,
                                              kcnet_error* out_error);
/* The path of a local file with the attachment's bytes (UTF-8, in *out_path, not
 * NUL-terminated), downloading them first when they are not here (online; resumable;
 * verified by SHA-256; cached under the storage budget). Read it, or copy it to keep it:
 * an eviction may remove it later. UNAVAILABLE offline when the bytes are not here. */
KCNET_API bool kcnet_attachment_open(kcnet_client* client, const char* id, kcnet_buffer* out_path,
                                     kcnet_error* out_error);
/* Uploads the queue now on the calling thread (the sync does it after each push):
 * *out_summary (may be NULL) a kcnet.v1.AttachmentUploadSummary. UNAVAILABLE when the link
 * fails (the queue resumes at the server's committed offset next time). */
KCNET_API bool kcnet_attachment_upload_now(kcnet_client* client, kcnet_buffer* out_summary,
                                           kcnet_error* out_error);
/* Upload order: higher priority first (then smallest first). */
KCNET_API bool kcnet_attachment_set_priority(kcnet_client* client, const char* id,
                                             int32_t priority, kcnet_error* out_error);
/* Puts a FAILED attachment back in the queue. */
KCNET_API bool kcnet_attachment_retry(kcnet_client* client, const char* id,
                                      kcnet_error* out_error);

/* Byte-level progress of uploads and downloads: `progress` is a serialized
 * kcnet.v1.AttachmentProgress, valid during the call. Called on the transfer's threads
 * with no library lock held; keep it short. It may call read functions and
 * kcnet_sync_cancel; it must not free the client or add/remove listeners. */
typedef void (*kcnet_attachment_progress_fn)(void* context, kcnet_bytes progress);
/* Frees a callback's context (listeners, observers). */
typedef void (*kcnet_context_free_fn)(void* context);
/* Returns a handle (> 0) for kcnet_attachment_remove_listener, 0 on failure. `free_context`
 * (may be NULL) runs once when the listener is removed or the client freed. */
KCNET_API int kcnet_attachment_add_listener(kcnet_client* client,
                                            kcnet_attachment_progress_fn callback, void* context,
                                            kcnet_context_free_fn free_context,
                                            kcnet_error* out_error);
KCNET_API bool kcnet_attachment_remove_listener(kcnet_client* client, int handle,
                                                kcnet_error* out_error);

/* ---- Observers -------------------------------------------------------------------------- */

/* Where a change came from: kcnet.v1.ChangeSource. */
enum {
  KCNET_CHANGE_LOCAL = 1,  /* a write on this device */
  KCNET_CHANGE_SYNC = 2,   /* records received from the server */
  KCNET_CHANGE_REPORT = 3, /* a refusal or conflict report */
  /* the server refused the device credential: sign in again (no records) */
  KCNET_CHANGE_SIGN_IN_REQUIRED = 4
};

/* Record types of kcnet.v1.RecordRef.type. */
enum {
  KCNET_RECORD_FACILITY = 1,
  KCNET_RECORD_VISIT = 2,
  KCNET_RECORD_SUPPORT_REQUEST = 3,
  KCNET_RECORD_REQUEST_EVENT = 4
};

/* Called after records changed. `source` is a KCNET_CHANGE_* value; `event` a serialized
 * kcnet.v1.ChangeEvent (source and the kcnet.v1.RecordRef of each changed record), valid
 * during the call only. */
typedef void (*kcnet_observer_fn)(void* context, int source, kcnet_bytes event);

/* Adds an observer; returns its handle (> 0), or 0 on failure. `context` is passed back
 * as is; it must stay valid until the observer is removed or the client closed. Observers
 * run on the SDK's notifier thread, one event at a time, in order, with no library lock
 * held: they may call the client (see Thread-safety). */
KCNET_API int kcnet_client_add_observer(kcnet_client* client, kcnet_observer_fn callback,
                                        void* context, kcnet_error* out_error);

/* An observer's context is freed with a kcnet_context_free_fn (declared with the
 * attachments' listeners above; e.g. it deletes a JNI global reference). */

/* kcnet_client_add_observer, and the library owns `context`: `free_context` (may be NULL)
 * is called exactly once, after the observer's last call, when the observer is removed or
 * the client is freed, on the thread that removed it or on the notifier thread. On failure
 * (0 returned) it is not called: the context stays the caller's. */
KCNET_API int kcnet_client_add_observer_with_free(kcnet_client* client, kcnet_observer_fn callback,
                                                  void* context, kcnet_context_free_fn free_context,
                                                  kcnet_error* out_error);

/* Removes an observer: once this returns, it is not called again (a call in progress
 * finishes first, except when removed from an observer, which is fine). NOT_FOUND for an
 * unknown handle. */
KCNET_API bool kcnet_client_remove_observer(kcnet_client* client, int handle,
                                            kcnet_error* out_error);

/* ---- Sync ------------------------------------------------------------------------------- */

/* Sync progress: `progress` is a serialized kcnet.v1.SyncProgress, valid during the call. */
typedef void (*kcnet_progress_fn)(void* context, kcnet_bytes progress);

/* Syncs now on the calling thread (after a running background sync ends): pushes
 * everything pending, pulls until caught up. Needs a signed-in user. `progress` may be
 * NULL; it is called on this thread. *out_summary (may be NULL) gets a serialized
 * kcnet.v1.SyncSummary. */
KCNET_API bool kcnet_sync_now(kcnet_client* client, kcnet_progress_fn progress,
                              void* progress_context, kcnet_buffer* out_summary,
                              kcnet_error* out_error);

/* Starts / stops the background sync thread (idempotent). Stop cancels a running sync and
 * waits for the thread to end: FAILED_PRECONDITION from an observer (the SDK's thread). */
KCNET_API bool kcnet_sync_start_background(kcnet_client* client, kcnet_error* out_error);
KCNET_API bool kcnet_sync_stop_background(kcnet_client* client, kcnet_error* out_error);

/* Ends the running sync (kcnet_sync_now answers CANCELLED) and those waiting for their
 * turn, at once, whatever the server does. Nothing stored is undone; the background sync
 * tries again after its interval. Fine from any thread and callback. */
KCNET_API bool kcnet_sync_cancel(kcnet_client* client, kcnet_error* out_error);

/* The app went to the background (true) or the foreground (false). Suspended: the
 * background sync starts no attempt and the running sync is cancelled (kcnet_sync_now
 * still works, e.g. from a WorkManager job or a BGTask). Resuming retries at once. */
KCNET_API bool kcnet_sync_set_suspended(kcnet_client* client, bool suspended,
                                        kcnet_error* out_error);

/* The network changed. false: the background sync waits (no failing attempts, no
 * growing backoff); true: it retries now instead of waiting out its backoff. */
KCNET_API bool kcnet_sync_set_host_reachable(kcnet_client* client, bool reachable,
                                             kcnet_error* out_error);

/* The sync state (pending uploads, last success, last error, ...): a serialized
 * kcnet.v1.SyncStatus. */
KCNET_API bool kcnet_sync_status(kcnet_client* client, kcnet_buffer* out_status,
                                 kcnet_error* out_error);

/* Every bucket's checksum, for comparing the replica with the server: a serialized
 * kcnet.v1.BucketCheckpointList. */
KCNET_API bool kcnet_sync_checkpoints(kcnet_client* client, kcnet_buffer* out_list,
                                      kcnet_error* out_error);

/* ---- Conflict review (online; district coordinators and province officers) ---------- */

/* Conflicts the server recorded in the user's communes (or under `org_unit_id`; 0: all of
 * the user's), oldest first, every page fetched: a serialized kcnet.v1.ListConflictsResponse
 * (next_page_token empty). PERMISSION_DENIED for a collaborator. */
KCNET_API bool kcnet_conflict_list(kcnet_client* client, int64_t org_unit_id, bool include_resolved,
                                   kcnet_buffer* out_list, kcnet_error* out_error);

/* Marks a conflict resolved, keeping the winning value or (restore_loser) writing the
 * overwritten one back; *out_conflict (may be NULL) gets the serialized kcnet.v1.Conflict. */
KCNET_API bool kcnet_conflict_resolve(kcnet_client* client, uint64_t conflict_id,
                                      bool restore_loser, kcnet_buffer* out_conflict,
                                      kcnet_error* out_error);

/* ---- Log ------------------------------------------------------------------------------ */

enum { KCNET_LOG_DEBUG = 0, KCNET_LOG_INFO = 1, KCNET_LOG_WARNING = 2, KCNET_LOG_ERROR = 3 };

/* A log message of the SDK (sync failures and cancellations, refused calls) or of gRPC
 * itself ("grpc: ..."; its errors, more with GRPC_VERBOSITY=info): `message` is UTF-8,
 * valid during the call. Called on any thread with no library lock held. */
typedef void (*kcnet_log_fn)(void* context, int level, const char* message);

/* Sends the SDK's messages at `min_level` and above to `callback` (Android: logcat through
 * __android_log_write; iOS: os_log), for every client of the process. NULL restores the
 * default: errors on stderr (which Android drops). `context` must stay valid
 * until the callback is replaced (a call in progress may finish after that). */
KCNET_API void kcnet_log_set_callback(kcnet_log_fn callback, void* context, int min_level);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KCNET_CLIENT_SDK_INCLUDE_KCNET_C_H_ */
