/* sdk_c_attachments: a C11 program that drives the attachment calls of the C ABI
 * (kcnet_attachment_*, kcnet_c.h) against a real kcnet-server, as a tablet app would: a
 * collaborator's tablet records a visit and adds a photo offline (the bytes stored under
 * their SHA-256, the state QUEUED), bad input is refused naming the field, the sync uploads
 * it after the records with byte-level progress events (payload bytes == size: once), and a
 * second tablet receives its metadata (state REMOTE, bytes not here) and opens it,
 * downloading byte-identical bytes.
 *
 * Usage: sdk_c_attachments SERVER_ADDRESS USERNAME PASSWORD WORK_DIR (run_e2e.sh starts the
 * server). Prints each step; exits 0 when every check passed, 1 at the first failure.
 *
 * Thread-safety: single-threaded, except the progress listener, which runs on the SDK's
 * transfer threads and only touches atomics.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_check.h"
#include "kcnet_c.h"
#include "pbwire.h"

/* Field numbers of proto/kcnet/v1 (domain.proto, sdk.proto) used here. */
enum {
  USER_ORG_UNIT_IDS = 5,
  FACILITY_ID = 1,
  FACILITY_COMMUNE_ID = 2,
  FACILITY_NAME = 3,
  FACILITY_OWNER_NAME = 4,
  FACILITY_KIND = 5,
  FACILITY_SECTOR = 6,
  VISIT_ID = 1,
  VISIT_FACILITY_ID = 3,
  VISIT_PURPOSE = 8,
  NEW_OWNER_TYPE = 1,
  NEW_OWNER_ID = 2,
  NEW_DATA = 4,
  NEW_MEDIA_TYPE = 5,
  NEW_CAPTION = 6,
  NEW_HAS_LOCATION = 8,
  NEW_LATITUDE = 9,
  NEW_LONGITUDE = 10,
  INFO_ATTACHMENT = 1,
  INFO_STATE = 2,
  INFO_BYTES_SENT = 3,
  INFO_LOCAL = 7,
  ATTACHMENT_ID = 1,
  ATTACHMENT_SHA256 = 5,
  ATTACHMENT_SIZE = 6,
  ATTACHMENT_MEDIA_TYPE = 7,
  ATTACHMENT_CAPTION = 8,
  LIST_ITEMS = 1,
  SUMMARY_ATTACHMENTS = 5,
  UPLOAD_UPLOADED = 1,
  UPLOAD_PAYLOAD_BYTES = 3,
  PROGRESS_DOWNLOAD = 3,
  PROGRESS_BYTES_DONE = 4,
  PROGRESS_BYTES_SENT = 5,
  PROGRESS_SIZE = 6,
  PROGRESS_BYTES_RECEIVED = 8
};

enum { STATE_QUEUED = 1, STATE_UPLOADED = 3, STATE_REMOTE = 5 };

static void expect_error(const kcnet_error* error, int code, const char* needle, const char* what) {
  if (error->code != code || strstr(error->message, needle) == NULL) {
    FAIL("%s: expected %s mentioning \"%s\", got %s: %s", what, kcnet_code_name(code), needle,
         kcnet_code_name(error->code), error->message);
  }
  printf("      refused as expected: %s: %s\n", kcnet_code_name(error->code), error->message);
}

static kcnet_bytes as_bytes(const pb_writer* w) {
  kcnet_bytes bytes = {w->data, w->size};
  CHECK(w->ok);
  return bytes;
}

static kcnet_client* open_client(const char* path, const char* device_id, const char* server) {
  kcnet_client_options options;
  kcnet_client_options_init(&options);
  options.path = path;
  options.device_id = device_id;
  options.server_address = server;
  options.durable = false;
  options.seed = 7;
  kcnet_error error;
  kcnet_client* client = kcnet_client_open(&options, &error);
  if (client == NULL) {
    FAIL("kcnet_client_open(%s) -> %s: %s", path, kcnet_code_name(error.code), error.message);
  }
  return client;
}

/* ---- The progress listener ------------------------------------------------------------- */

typedef struct progress_seen {
  atomic_int uploads;
  atomic_int downloads;
  atomic_llong max_upload_done;
  atomic_llong max_upload_received;
  atomic_llong max_download_done;
} progress_seen;

static void on_attachment_progress(void* context, kcnet_bytes progress) {
  progress_seen* seen = context;
  const long long done =
      (long long)pb_get_varint(progress.data, progress.size, PROGRESS_BYTES_DONE);
  CHECK(done <= (long long)pb_get_varint(progress.data, progress.size, PROGRESS_SIZE));
  if (pb_get_varint(progress.data, progress.size, PROGRESS_DOWNLOAD)) {
    atomic_fetch_add(&seen->downloads, 1);
    if (done > atomic_load(&seen->max_download_done)) atomic_store(&seen->max_download_done, done);
  } else {
    atomic_fetch_add(&seen->uploads, 1);
    if (done > atomic_load(&seen->max_upload_done)) atomic_store(&seen->max_upload_done, done);
    /* bytes_received (field 8, added in 0.3): never past what was handed to the network. */
    const long long received =
        (long long)pb_get_varint(progress.data, progress.size, PROGRESS_BYTES_RECEIVED);
    CHECK(received <= (long long)pb_get_varint(progress.data, progress.size, PROGRESS_BYTES_SENT));
    if (received > atomic_load(&seen->max_upload_received)) {
      atomic_store(&seen->max_upload_received, received);
    }
  }
}

/* The AttachmentInfo's state and its record's id. */
static int64_t info_state(const kcnet_buffer* info, char* id, size_t id_size) {
  pb_field record;
  CHECK(pb_find(info->data, info->size, INFO_ATTACHMENT, &record));
  if (id != NULL) pb_get_string(record.data, record.size, ATTACHMENT_ID, id, id_size);
  return (int64_t)pb_get_varint(info->data, info->size, INFO_STATE);
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s SERVER_ADDRESS USERNAME PASSWORD WORK_DIR\n", argv[0]);
    return 2;
  }
  const char* server = argv[1];
  const char* username = argv[2];
  const char* password = argv[3];
  char path_a[4096], path_b[4096];
  snprintf(path_a, sizeof path_a, "%s/photo-tablet-a.db", argv[4]);
  snprintf(path_b, sizeof path_b, "%s/photo-tablet-b.db", argv[4]);
  kcnet_error error;

  step("sign in, then offline: a facility and a visit");
  kcnet_client* a = open_client(path_a, "c-abi-photo-a", server);
  MUST(kcnet_client_sign_in(a, username, password, error));
  bool signed_in = false;
  kcnet_buffer user = {NULL, 0};
  MUST(kcnet_client_user(a, &signed_in, &user, error));
  uint64_t units[8];
  CHECK(pb_get_varints(user.data, user.size, USER_ORG_UNIT_IDS, units, 8) >= 1);
  kcnet_buffer_free(&user);
  pb_writer w;
  pb_writer_init(&w);
  pb_put_varint(&w, FACILITY_COMMUNE_ID, units[0]);
  pb_put_string(&w, FACILITY_NAME, "Cơ sở mây tre đan Phú Vinh (ảnh)");
  pb_put_string(&w, FACILITY_OWNER_NAME, "Nguyễn Thị Hoa");
  pb_put_varint(&w, FACILITY_KIND, 1);
  pb_put_varint(&w, FACILITY_SECTOR, 1);
  kcnet_buffer facility = {NULL, 0};
  MUST(kcnet_facility_register(a, as_bytes(&w), &facility, error));
  pb_writer_free(&w);
  char facility_id[64];
  pb_get_string(facility.data, facility.size, FACILITY_ID, facility_id, sizeof facility_id);
  kcnet_buffer_free(&facility);
  pb_writer_init(&w);
  pb_put_string(&w, VISIT_FACILITY_ID, facility_id);
  pb_put_varint(&w, VISIT_PURPOSE, 1);
  kcnet_buffer visit = {NULL, 0};
  MUST(kcnet_visit_record(a, as_bytes(&w), &visit, error));
  pb_writer_free(&w);
  char visit_id[64];
  pb_get_string(visit.data, visit.size, VISIT_ID, visit_id, sizeof visit_id);
  kcnet_buffer_free(&visit);

  step("offline: add a photo (bytes of a JPEG, the type from its magic number)");
  const size_t photo_size = 300 * 1024 + 17;
  uint8_t* photo = malloc(photo_size);
  CHECK(photo != NULL);
  uint32_t x = 12345;
  for (size_t i = 0; i < photo_size; ++i) {
    x = x * 1103515245u + 12345u;
    photo[i] = (uint8_t)(x >> 16);
  }
  photo[0] = 0xFF;
  photo[1] = 0xD8;
  photo[2] = 0xFF;
  photo[3] = 0xE0;
  pb_writer_init(&w);
  pb_put_varint(&w, NEW_OWNER_TYPE, KCNET_RECORD_VISIT);
  pb_put_string(&w, NEW_OWNER_ID, visit_id);
  pb_put_bytes(&w, NEW_DATA, photo, photo_size);
  pb_put_string(&w, NEW_CAPTION, "Sản phẩm mây tre");
  pb_put_varint(&w, NEW_HAS_LOCATION, 1);
  pb_put_double(&w, NEW_LATITUDE, 20.95);
  pb_put_double(&w, NEW_LONGITUDE, 105.70);
  kcnet_buffer info = {NULL, 0};
  MUST(kcnet_attachment_add(a, as_bytes(&w), &info, error));
  pb_writer_free(&w);
  char attachment_id[64];
  CHECK(info_state(&info, attachment_id, sizeof attachment_id) == STATE_QUEUED);
  CHECK(pb_get_varint(info.data, info.size, INFO_LOCAL) == 1);
  {
    pb_field record;
    CHECK(pb_find(info.data, info.size, INFO_ATTACHMENT, &record));
    char text[128];
    CHECK(strcmp(pb_get_string(record.data, record.size, ATTACHMENT_MEDIA_TYPE, text, sizeof text),
                 "image/jpeg") == 0);
    CHECK(pb_get_varint(record.data, record.size, ATTACHMENT_SIZE) == photo_size);
    CHECK(strlen(pb_get_string(record.data, record.size, ATTACHMENT_SHA256, text, sizeof text)) ==
          64);
  }
  kcnet_buffer_free(&info);
  printf("      attachment %s queued\n", attachment_id);

  step("bad input is refused naming the field; nothing is stored");
  pb_writer_init(&w);
  pb_put_varint(&w, NEW_OWNER_TYPE, KCNET_RECORD_VISIT);
  pb_put_string(&w, NEW_OWNER_ID, visit_id);
  pb_put_bytes(&w, NEW_DATA, "GIF89a, not an accepted type", 28);
  CHECK(!kcnet_attachment_add(a, as_bytes(&w), &info, &error));
  pb_writer_free(&w);
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "attachment.media_type", "a GIF");
  pb_writer_init(&w);
  pb_put_varint(&w, NEW_OWNER_TYPE, KCNET_RECORD_VISIT);
  pb_put_string(&w, NEW_OWNER_ID, visit_id);
  pb_put_bytes(&w, NEW_DATA, photo, 1000);
  pb_put_string(&w, NEW_MEDIA_TYPE, "application/pdf");
  CHECK(!kcnet_attachment_add(a, as_bytes(&w), &info, &error));
  pb_writer_free(&w);
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "attachment.media_type", "a JPEG called a PDF");
  const uint8_t junk[] = {0xFF, 0xFF, 0xFF};
  CHECK(!kcnet_attachment_add(a, (kcnet_bytes){junk, sizeof junk}, &info, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "new_attachment", "not a NewAttachment");
  CHECK(!kcnet_attachment_get(a, NULL, &info, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "id", "a NULL id");
  kcnet_buffer list = {NULL, 0};
  MUST(kcnet_attachment_list(a, &list, error));
  CHECK(pb_count(list.data, list.size, LIST_ITEMS) == 1);
  kcnet_buffer_free(&list);

  step("sync: the records, then the photo, once, with progress events");
  progress_seen seen;
  atomic_init(&seen.uploads, 0);
  atomic_init(&seen.downloads, 0);
  atomic_init(&seen.max_upload_done, 0);
  atomic_init(&seen.max_upload_received, 0);
  atomic_init(&seen.max_download_done, 0);
  const int listener =
      kcnet_attachment_add_listener(a, on_attachment_progress, &seen, NULL, &error);
  CHECK(listener > 0);
  kcnet_buffer summary = {NULL, 0};
  MUST(kcnet_sync_now(a, NULL, NULL, &summary, error));
  pb_field uploads;
  CHECK(pb_find(summary.data, summary.size, SUMMARY_ATTACHMENTS, &uploads));
  CHECK(pb_get_varint(uploads.data, uploads.size, UPLOAD_UPLOADED) == 1);
  CHECK(pb_get_varint(uploads.data, uploads.size, UPLOAD_PAYLOAD_BYTES) == photo_size);
  kcnet_buffer_free(&summary);
  CHECK(atomic_load(&seen.uploads) >= 2);
  CHECK(atomic_load(&seen.max_upload_done) == (long long)photo_size);
  CHECK(atomic_load(&seen.max_upload_received) == (long long)photo_size);
  MUST(kcnet_attachment_get(a, attachment_id, &info, error));
  CHECK(info_state(&info, NULL, 0) == STATE_UPLOADED);
  CHECK(pb_get_varint(info.data, info.size, INFO_BYTES_SENT) == photo_size);
  kcnet_buffer_free(&info);
  MUST(kcnet_attachment_remove_listener(a, listener, error));
  CHECK(!kcnet_attachment_remove_listener(a, listener, &error));
  expect_error(&error, KCNET_CODE_NOT_FOUND, "handle", "a listener removed twice");

  step("a second tablet gets the metadata, then opens the photo (downloaded, identical)");
  kcnet_client* b = open_client(path_b, "c-abi-photo-b", server);
  MUST(kcnet_client_sign_in(b, username, password, error));
  MUST(kcnet_sync_now(b, NULL, NULL, NULL, error));
  MUST(kcnet_attachment_list_by_owner(b, KCNET_RECORD_VISIT, visit_id, &list, error));
  CHECK(pb_count(list.data, list.size, LIST_ITEMS) == 1);
  pb_field item;
  CHECK(pb_get_nth(list.data, list.size, LIST_ITEMS, 0, &item));
  CHECK(pb_get_varint(item.data, item.size, INFO_STATE) == STATE_REMOTE);
  CHECK(pb_get_varint(item.data, item.size, INFO_LOCAL) == 0);
  kcnet_buffer_free(&list);
  const int listener_b =
      kcnet_attachment_add_listener(b, on_attachment_progress, &seen, NULL, &error);
  CHECK(listener_b > 0);
  kcnet_buffer path = {NULL, 0};
  MUST(kcnet_attachment_open(b, attachment_id, &path, error));
  CHECK(path.size > 0 && path.data[path.size] == 0);
  FILE* in = fopen((const char*)path.data, "rb");
  CHECK(in != NULL);
  uint8_t* got = malloc(photo_size + 1);
  CHECK(got != NULL);
  const size_t n = fread(got, 1, photo_size + 1, in);
  fclose(in);
  CHECK(n == photo_size);
  CHECK(memcmp(got, photo, photo_size) == 0);
  free(got);
  kcnet_buffer_free(&path);
  CHECK(atomic_load(&seen.downloads) >= 1);
  CHECK(atomic_load(&seen.max_download_done) == (long long)photo_size);
  MUST(kcnet_attachment_get(b, attachment_id, &info, error));
  CHECK(pb_get_varint(info.data, info.size, INFO_LOCAL) == 1);
  kcnet_buffer_free(&info);

  free(photo);
  MUST(kcnet_client_free(b, error));
  MUST(kcnet_client_free(a, error));
  printf("all attachment checks passed\n");
  return 0;
}
