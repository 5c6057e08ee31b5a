/* sdk_c_e2e: a C11 program that drives the kcnet client SDK through its C ABI (libkcnet,
 * kcnet_c.h) against a real kcnet-server, as a tablet app's native layer would:
 * sign in online, then work offline after a restart (register a facility, record a
 * visit, draft and submit a request), observe the changes, sync, check the status and
 * that a second tablet receives the records, search without diacritics, and check that
 * bad input is refused with INVALID_ARGUMENT naming the argument, changing nothing.
 *
 * Usage: sdk_c_e2e SERVER_ADDRESS USERNAME PASSWORD WORK_DIR (run_e2e.sh starts the
 * server). Prints each step; exits 0 when every check passed, 1 at the first failure.
 *
 * Records are built and read with the tiny protobuf wire codec of pbwire.h.
 *
 * Thread-safety: single-threaded, except the observer callback, which may run on the
 * SDK's sync thread and only touches atomics there.
 */
/* POSIX threads rather than C11 <threads.h>: ThreadSanitizer (gcc 12) does not intercept
 * thrd_create, so a TSan build crashes in threads it starts. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
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
  USER_ID = 1,
  USER_USERNAME = 2,
  USER_DISPLAY_NAME = 3,
  USER_ROLE = 4,
  USER_PHONE = 7,
  ORG_UNIT_ID = 1,
  ORG_UNIT_PARENT_ID = 2,
  ORG_UNIT_CODE = 3,
  ORG_UNIT_NAME = 4,
  USER_ORG_UNIT_IDS = 5,
  FACILITY_ID = 1,
  FACILITY_COMMUNE_ID = 2,
  FACILITY_NAME = 3,
  FACILITY_OWNER_NAME = 4,
  FACILITY_KIND = 5,
  FACILITY_SECTOR = 6,
  FACILITY_ADDRESS = 7,
  FACILITY_LATITUDE = 8,
  FACILITY_LONGITUDE = 9,
  FACILITY_WORKERS = 10,
  FACILITY_MAIN_PRODUCTS = 11,
  VISIT_ID = 1,
  VISIT_COMMUNE_ID = 2,
  VISIT_FACILITY_ID = 3,
  VISIT_COLLABORATOR_ID = 4,
  VISIT_PURPOSE = 8,
  VISIT_FINDINGS = 9,
  VISIT_NEEDS = 10,
  REQUEST_ID = 1,
  REQUEST_FACILITY_ID = 3,
  REQUEST_AUTHOR_ID = 4,
  REQUEST_CATEGORY = 5,
  REQUEST_DESCRIPTION = 6,
  REQUEST_AMOUNT = 7,
  REQUEST_OWN_CONTRIBUTION = 8,
  REQUEST_FUNDING = 9,
  REQUEST_STATUS = 10,
  EVENT_ACTION = 5,
  LIST_ITEMS = 1, /* the repeated field of every sdk.proto list */
  HIT_FACILITY = 1,
  CHANGE_RECORDS = 2,
  REF_TYPE = 1,
  REF_ID = 2,
  STATUS_PENDING_UPLOADS = 1,
  STATUS_LAST_SUCCESS_MS = 4,
  STATUS_LAST_ERROR_CODE = 6,
  STATUS_LAST_ERROR_MESSAGE = 7,
  STATUS_BACKGROUND = 10,
  SUMMARY_PUSHED = 1,
  SUMMARY_RECEIVED = 2,
  SUMMARY_REPORTS = 4,
  PROGRESS_BUCKETS_TOTAL = 1
};

enum {
  ROLE_COMMUNE_COLLABORATOR = 1,
  REQUEST_STATUS_DRAFT = 1,
  REQUEST_STATUS_SUBMITTED = 2,
  REQUEST_ACTION_CREATE = 1,
  REQUEST_ACTION_SUBMIT = 2,
  REQUEST_ACTION_COMMENT = 10
};

/* Checks that `error` holds `code` and that its message contains `needle`. */
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

/* ---- The observer -------------------------------------------------------------------- */

typedef struct observed {
  atomic_int local;
  atomic_int sync;
  atomic_int report;
  atomic_int facility_refs; /* records of type facility seen in local changes */
} observed;

static void on_change(void* context, int source, kcnet_bytes event) {
  observed* seen = context;
  if (source == KCNET_CHANGE_LOCAL) {
    atomic_fetch_add(&seen->local, 1);
    const size_t refs = pb_count(event.data, event.size, CHANGE_RECORDS);
    for (size_t i = 0; i < refs; ++i) {
      pb_field ref;
      if (pb_get_nth(event.data, event.size, CHANGE_RECORDS, i, &ref) &&
          pb_get_varint(ref.data, ref.size, REF_TYPE) == KCNET_RECORD_FACILITY) {
        atomic_fetch_add(&seen->facility_refs, 1);
      }
    }
  } else if (source == KCNET_CHANGE_SYNC) {
    atomic_fetch_add(&seen->sync, 1);
  } else if (source == KCNET_CHANGE_REPORT) {
    atomic_fetch_add(&seen->report, 1);
  }
}

static void on_progress(void* context, kcnet_bytes progress) {
  int* calls = context;
  ++*calls;
  (void)pb_get_varint(progress.data, progress.size, PROGRESS_BUCKETS_TOTAL);
}

/* ---- Helpers --------------------------------------------------------------------------- */

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

static int64_t pending_uploads(kcnet_client* client) {
  kcnet_buffer status = {NULL, 0};
  MUST(kcnet_sync_status(client, &status, error));
  const int64_t pending = (int64_t)pb_get_varint(status.data, status.size, STATUS_PENDING_UPLOADS);
  kcnet_buffer_free(&status);
  return pending;
}

static size_t facilities_of_commune(kcnet_client* client, int64_t commune) {
  kcnet_buffer list = {NULL, 0};
  MUST(kcnet_facility_list_by_commune(client, commune, &list, error));
  const size_t count = pb_count(list.data, list.size, LIST_ITEMS);
  kcnet_buffer_free(&list);
  return count;
}

/* Whether a search finds the facility `id`. */
static bool search_finds(kcnet_client* client, const char* query, const char* id) {
  kcnet_buffer hits = {NULL, 0};
  MUST(kcnet_facility_search(client, query, 20, &hits, error));
  bool found = false;
  const size_t count = pb_count(hits.data, hits.size, LIST_ITEMS);
  for (size_t i = 0; i < count && !found; ++i) {
    pb_field hit, facility;
    char hit_id[64];
    CHECK(pb_get_nth(hits.data, hits.size, LIST_ITEMS, i, &hit));
    CHECK(pb_find(hit.data, hit.size, HIT_FACILITY, &facility));
    found = strcmp(pb_get_string(facility.data, facility.size, FACILITY_ID, hit_id, sizeof hit_id),
                   id) == 0;
  }
  printf("      search \"%s\": %zu hit(s)%s\n", query, count, found ? ", ours among them" : "");
  kcnet_buffer_free(&hits);
  return found;
}

static int64_t request_status(kcnet_client* client, const char* id) {
  kcnet_buffer request = {NULL, 0};
  MUST(kcnet_request_get(client, id, &request, error));
  const int64_t status = (int64_t)pb_get_varint(request.data, request.size, REQUEST_STATUS);
  kcnet_buffer_free(&request);
  return status;
}

static void sync_now(kcnet_client* client, int64_t* pushed, int64_t* received) {
  kcnet_buffer summary = {NULL, 0};
  int progress_calls = 0;
  MUST(kcnet_sync_now(client, on_progress, &progress_calls, &summary, error));
  *pushed = (int64_t)pb_get_varint(summary.data, summary.size, SUMMARY_PUSHED);
  *received = (int64_t)pb_get_varint(summary.data, summary.size, SUMMARY_RECEIVED);
  printf("      synced: pushed %lld, received %lld, %zu report(s), %d progress call(s)\n",
         (long long)*pushed, (long long)*received,
         pb_count(summary.data, summary.size, SUMMARY_REPORTS), progress_calls);
  CHECK(progress_calls >= 1);
  kcnet_buffer_free(&summary);
}

/* ---- Concurrent writers ------------------------------------------------------------------ */

enum { kWriters = 4, kWritesEach = 10 };

typedef struct writer_args {
  kcnet_client* client;
  int64_t commune;
  int index;
  int failures;
} writer_args;

static void* write_facilities(void* arg) {
  writer_args* args = arg;
  for (int i = 0; i < kWritesEach; ++i) {
    char facility_name[128];
    snprintf(facility_name, sizeof facility_name, "Lò gốm Bát Tràng số %d-%d", args->index, i);
    pb_writer w;
    pb_writer_init(&w);
    pb_put_varint(&w, FACILITY_COMMUNE_ID, (uint64_t)args->commune);
    pb_put_string(&w, FACILITY_NAME, facility_name);
    pb_put_string(&w, FACILITY_MAIN_PRODUCTS, "Gốm sứ");
    kcnet_bytes bytes = {w.data, w.size};
    kcnet_error error;
    if (!w.ok || !kcnet_facility_register(args->client, bytes, NULL, &error)) {
      fprintf(stderr, "writer %d: %s\n", args->index, error.message);
      ++args->failures;
    }
    pb_writer_free(&w);
  }
  return NULL;
}

/* ---- The scenario ---------------------------------------------------------------------- */

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s SERVER_ADDRESS USERNAME PASSWORD WORK_DIR\n", argv[0]);
    return 2;
  }
  const char* server = argv[1];
  const char* username = argv[2];
  const char* password = argv[3];
  char path_a[4096], path_b[4096];
  snprintf(path_a, sizeof path_a, "%s/tablet-a.db", argv[4]);
  snprintf(path_b, sizeof path_b, "%s/tablet-b.db", argv[4]);
  printf("libkcnet %s, server %s\n", kcnet_version(), server);

  kcnet_error error;
  step("a file that is not a kcnet store, and bad options, are refused at open");
  char path_bad[4096];
  snprintf(path_bad, sizeof path_bad, "%s/not-a-store.db", argv[4]);
  FILE* bad = fopen(path_bad, "wb");
  CHECK(bad != NULL);
  fputs("this is a shopping list, not a SQLite database\n", bad);
  fclose(bad);
  kcnet_client_options bad_options;
  kcnet_client_options_init(&bad_options);
  bad_options.path = path_bad;
  bad_options.device_id = "c-abi-tablet-a";
  CHECK(kcnet_client_open(&bad_options, &error) == NULL);
  expect_error(&error, KCNET_CODE_FAILED_PRECONDITION, "not-a-store.db", "corrupt store");
  bad_options.path = path_a;
  bad_options.device_id = "bad\xff";
  CHECK(kcnet_client_open(&bad_options, &error) == NULL);
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "options.device_id", "bad UTF-8 device id");

  step("open a client and sign in online (a wrong password is refused first)");
  kcnet_client* a = open_client(path_a, "c-abi-tablet-a", server);
  CHECK(!kcnet_client_sign_in(a, username, "not-the-password", &error));
  expect_error(&error, KCNET_CODE_UNAUTHENTICATED, "", "wrong password");
  MUST(kcnet_client_sign_in(a, username, password, error));

  bool signed_in = false;
  kcnet_buffer user = {NULL, 0};
  MUST(kcnet_client_user(a, &signed_in, &user, error));
  CHECK(signed_in);
  char name[256];
  CHECK(strcmp(pb_get_string(user.data, user.size, USER_USERNAME, name, sizeof name), username) ==
        0);
  CHECK(pb_get_varint(user.data, user.size, USER_ROLE) == ROLE_COMMUNE_COLLABORATOR);
  const int64_t user_id = (int64_t)pb_get_varint(user.data, user.size, USER_ID);
  uint64_t units[8];
  CHECK(pb_get_varints(user.data, user.size, USER_ORG_UNIT_IDS, units, 8) >= 1);
  const int64_t commune = (int64_t)units[0];
  kcnet_buffer_free(&user);
  printf("      signed in as %s (user %lld, commune %lld)\n", username, (long long)user_id,
         (long long)commune);

  step("the directory arrived with the sign-in: names and codes instead of ids");
  {
    kcnet_buffer unit = {NULL, 0};
    MUST(kcnet_directory_org_unit(a, commune, &unit, error));
    char text[256];
    CHECK(strcmp(pb_get_string(unit.data, unit.size, ORG_UNIT_CODE, text, sizeof text), "90101") ==
          0);
    CHECK(strcmp(pb_get_string(unit.data, unit.size, ORG_UNIT_NAME, text, sizeof text),
                 "Xã An Bình Demo") == 0);
    const int64_t district = (int64_t)pb_get_varint(unit.data, unit.size, ORG_UNIT_PARENT_ID);
    kcnet_buffer_free(&unit);
    MUST(kcnet_directory_org_unit_by_code(a, "90101", &unit, error));
    CHECK((int64_t)pb_get_varint(unit.data, unit.size, ORG_UNIT_ID) == commune);
    kcnet_buffer_free(&unit);
    MUST(kcnet_directory_org_unit(a, district, &unit, error)); /* the path above */
    CHECK(strcmp(pb_get_string(unit.data, unit.size, ORG_UNIT_CODE, text, sizeof text), "901") ==
          0);
    kcnet_buffer_free(&unit);
    /* A sibling commune of the same district is not in a collaborator's directory. */
    CHECK(!kcnet_directory_org_unit_by_code(a, "90102", &unit, &error));
    expect_error(&error, KCNET_CODE_NOT_FOUND, "90102", "a commune outside the scope");
    CHECK(!kcnet_directory_org_unit_by_code(a, "", &unit, &error));
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "code", "an empty code");
    kcnet_buffer list = {NULL, 0};
    MUST(kcnet_directory_org_units(a, &list, error));
    CHECK(pb_count(list.data, list.size, LIST_ITEMS) == 3); /* province, district, commune */
    kcnet_buffer_free(&list);
    kcnet_buffer me = {NULL, 0};
    MUST(kcnet_directory_user(a, user_id, &me, error));
    CHECK(strcmp(pb_get_string(me.data, me.size, USER_DISPLAY_NAME, text, sizeof text),
                 "Nguyễn Văn An (demo)") == 0);
    pb_field absent;
    CHECK(!pb_find(me.data, me.size, USER_USERNAME, &absent)); /* only id, name, role */
    CHECK(!pb_find(me.data, me.size, USER_PHONE, &absent));
    kcnet_buffer_free(&me);
    printf("      commune %lld is Xã An Bình Demo (90101)\n", (long long)commune);
  }

  step("first sync: the commune's facilities arrive");
  int64_t pushed = 0, received = 0;
  sync_now(a, &pushed, &received);
  const size_t facilities_before = facilities_of_commune(a, commune);
  printf("      %zu facilities in commune %lld\n", facilities_before, (long long)commune);
  CHECK(facilities_before >= 1);

  step("restart offline (no server address): the signed-in user is kept");
  kcnet_client_close(a);
  bad_options.path = path_a;
  bad_options.device_id = "someone-elses-tablet";
  CHECK(kcnet_client_open(&bad_options, &error) == NULL);
  expect_error(&error, KCNET_CODE_FAILED_PRECONDITION, "tablet-a.db", "another device's store");
  a = open_client(path_a, "c-abi-tablet-a", NULL);
  MUST(kcnet_client_user(a, &signed_in, NULL, error));
  CHECK(signed_in);

  step("add an observer");
  observed seen;
  atomic_init(&seen.local, 0);
  atomic_init(&seen.sync, 0);
  atomic_init(&seen.report, 0);
  atomic_init(&seen.facility_refs, 0);
  int observer = 0;
  {
    kcnet_error e;
    observer = kcnet_client_add_observer(a, on_change, &seen, &e);
    if (observer <= 0) FAIL("kcnet_client_add_observer: %s", e.message);
  }

  step("offline: register a facility");
  pb_writer w;
  pb_writer_init(&w);
  pb_put_varint(&w, FACILITY_COMMUNE_ID, (uint64_t)commune);
  pb_put_string(&w, FACILITY_NAME, "Cơ sở bánh đa nem Hà Nội (C ABI)");
  pb_put_string(&w, FACILITY_OWNER_NAME, "Đỗ Văn Hùng");
  pb_put_varint(&w, FACILITY_KIND, 1);   /* household business */
  pb_put_varint(&w, FACILITY_SECTOR, 1); /* food processing */
  pb_put_string(&w, FACILITY_ADDRESS, "Thôn Đông, xã An Bình");
  pb_put_double(&w, FACILITY_LATITUDE, 20.105);
  pb_put_double(&w, FACILITY_LONGITUDE, 105.503);
  pb_put_varint(&w, FACILITY_WORKERS, 7);
  pb_put_string(&w, FACILITY_MAIN_PRODUCTS, "Bánh đa nem, bánh đa vừng");
  kcnet_buffer facility = {NULL, 0};
  MUST(kcnet_facility_register(a, as_bytes(&w), &facility, error));
  pb_writer_free(&w);
  char facility_id[64];
  pb_get_string(facility.data, facility.size, FACILITY_ID, facility_id, sizeof facility_id);
  CHECK(strlen(facility_id) == 36);
  CHECK(pb_get_varint(facility.data, facility.size, FACILITY_COMMUNE_ID) == (uint64_t)commune);
  CHECK(pb_get_varint(facility.data, facility.size, FACILITY_WORKERS) == 7);
  kcnet_buffer_free(&facility);
  printf("      facility %s\n", facility_id);
  CHECK(atomic_load(&seen.local) >= 1);
  CHECK(atomic_load(&seen.facility_refs) >= 1);
  printf("      the observer heard %d local change(s)\n", atomic_load(&seen.local));

  step("offline: update it (workers)");
  pb_writer_init(&w);
  pb_put_string(&w, FACILITY_ID, facility_id);
  pb_put_varint(&w, FACILITY_WORKERS, 9);
  const char* fields[] = {"workers"};
  MUST(kcnet_facility_update(a, as_bytes(&w), fields, 1, NULL, error));
  pb_writer_free(&w);
  MUST(kcnet_facility_get(a, facility_id, &facility, error));
  CHECK(pb_get_varint(facility.data, facility.size, FACILITY_WORKERS) == 9);
  kcnet_buffer_free(&facility);

  step("offline: record a visit");
  pb_writer_init(&w);
  pb_put_string(&w, VISIT_FACILITY_ID, facility_id);
  pb_put_varint(&w, VISIT_PURPOSE, 1); /* survey */
  pb_put_string(&w, VISIT_FINDINGS, "Cần máy cán bánh mới; muốn tập huấn an toàn thực phẩm");
  const uint64_t needs[] = {2, 3}; /* machinery, training */
  pb_put_packed(&w, VISIT_NEEDS, needs, 2);
  kcnet_buffer visit = {NULL, 0};
  MUST(kcnet_visit_record(a, as_bytes(&w), &visit, error));
  pb_writer_free(&w);
  CHECK(pb_get_varint(visit.data, visit.size, VISIT_COMMUNE_ID) == (uint64_t)commune);
  CHECK(pb_get_varint(visit.data, visit.size, VISIT_COLLABORATOR_ID) == (uint64_t)user_id);
  uint64_t got_needs[4];
  CHECK(pb_get_varints(visit.data, visit.size, VISIT_NEEDS, got_needs, 4) == 2);
  kcnet_buffer_free(&visit);
  kcnet_buffer visits = {NULL, 0};
  MUST(kcnet_visit_list_by_facility(a, facility_id, &visits, error));
  CHECK(pb_count(visits.data, visits.size, LIST_ITEMS) == 1);
  kcnet_buffer_free(&visits);

  step("offline: draft a support request, comment on it, submit it");
  pb_writer_init(&w);
  pb_put_string(&w, REQUEST_FACILITY_ID, facility_id);
  pb_put_varint(&w, REQUEST_CATEGORY, 2); /* machinery and technology */
  pb_put_string(&w, REQUEST_DESCRIPTION, "Hỗ trợ máy cán và máy sấy bánh đa");
  pb_put_varint(&w, REQUEST_AMOUNT, 60000000);
  pb_put_varint(&w, REQUEST_OWN_CONTRIBUTION, 25000000);
  pb_put_varint(&w, REQUEST_FUNDING, 1); /* local budget */
  kcnet_buffer request = {NULL, 0};
  MUST(kcnet_request_draft(a, as_bytes(&w), &request, error));
  pb_writer_free(&w);
  char request_id[64];
  pb_get_string(request.data, request.size, REQUEST_ID, request_id, sizeof request_id);
  CHECK(pb_get_varint(request.data, request.size, REQUEST_STATUS) == REQUEST_STATUS_DRAFT);
  CHECK(pb_get_varint(request.data, request.size, REQUEST_AUTHOR_ID) == (uint64_t)user_id);
  kcnet_buffer_free(&request);
  MUST(kcnet_request_comment(a, request_id, "Chủ cơ sở góp 25 triệu", NULL, error));
  MUST(kcnet_request_submit(a, request_id, &request, error));
  CHECK(pb_get_varint(request.data, request.size, REQUEST_STATUS) == REQUEST_STATUS_SUBMITTED);
  kcnet_buffer_free(&request);
  kcnet_buffer requests = {NULL, 0};
  MUST(kcnet_request_list_by_facility(a, facility_id, &requests, error));
  CHECK(pb_count(requests.data, requests.size, LIST_ITEMS) == 1);
  kcnet_buffer_free(&requests);
  kcnet_buffer events = {NULL, 0};
  MUST(kcnet_request_events(a, request_id, &events, error));
  const size_t event_count = pb_count(events.data, events.size, LIST_ITEMS);
  printf("      request %s: %zu audit event(s)\n", request_id, event_count);
  CHECK(event_count >= 2);
  kcnet_buffer_free(&events);

  step("search ignoring diacritics and case");
  CHECK(search_finds(a, "ha noi", facility_id));
  CHECK(search_finds(a, "HA NOI", facility_id));
  CHECK(search_finds(a, "Hà Nội", facility_id));
  CHECK(search_finds(a, "do van hung", facility_id)); /* the owner, đ read as d */
  CHECK(search_finds(a, "banh da", facility_id));     /* the products */
  CHECK(!search_finds(a, "xyzzy", facility_id));

  step("pending uploads while offline");
  kcnet_buffer uploads = {NULL, 0};
  MUST(kcnet_upload_list_pending(a, &uploads, error));
  const size_t upload_count = pb_count(uploads.data, uploads.size, LIST_ITEMS);
  kcnet_buffer_free(&uploads);
  const int64_t pending = pending_uploads(a);
  printf("      %zu pending upload(s), status says %lld\n", upload_count, (long long)pending);
  CHECK(upload_count >= 5 && pending == (int64_t)upload_count);
  {
    kcnet_error e;
    CHECK(!kcnet_sync_now(a, NULL, NULL, NULL, &e)); /* no server address */
    printf("      sync while offline refused: %s: %s\n", kcnet_code_name(e.code), e.message);
    CHECK(e.code != 0);
  }

  step("back online: restart with the server address and sync");
  MUST(kcnet_client_remove_observer(a, observer, error));
  kcnet_client_close(a);
  a = open_client(path_a, "c-abi-tablet-a", server);
  atomic_store(&seen.sync, 0);
  observer = kcnet_client_add_observer(a, on_change, &seen, NULL);
  CHECK(observer > 0);
  sync_now(a, &pushed, &received);
  CHECK(pushed >= 5);
  printf("      the observer heard %d synced change(s)\n", atomic_load(&seen.sync));
  CHECK(received == 0 || atomic_load(&seen.sync) >= 1);
  CHECK(pending_uploads(a) == 0);
  kcnet_buffer status = {NULL, 0};
  MUST(kcnet_sync_status(a, &status, error));
  char message[256];
  printf(
      "      status: pending 0, last error %lld \"%s\", last success %lld ms\n",
      (long long)pb_get_varint(status.data, status.size, STATUS_LAST_ERROR_CODE),
      pb_get_string(status.data, status.size, STATUS_LAST_ERROR_MESSAGE, message, sizeof message),
      (long long)pb_get_varint(status.data, status.size, STATUS_LAST_SUCCESS_MS));
  CHECK(pb_get_varint(status.data, status.size, STATUS_LAST_ERROR_CODE) == 0);
  CHECK(pb_get_varint(status.data, status.size, STATUS_LAST_SUCCESS_MS) > 0);
  kcnet_buffer_free(&status);
  kcnet_buffer reports = {NULL, 0};
  MUST(kcnet_report_take(a, &reports, error));
  CHECK(pb_count(reports.data, reports.size, LIST_ITEMS) == 0); /* nothing refused */
  kcnet_buffer_free(&reports);
  CHECK(request_status(a, request_id) == REQUEST_STATUS_SUBMITTED);
  CHECK(facilities_of_commune(a, commune) == facilities_before + 1);
  kcnet_buffer checkpoints = {NULL, 0};
  MUST(kcnet_sync_checkpoints(a, &checkpoints, error));
  printf("      %zu bucket checkpoint(s)\n",
         pb_count(checkpoints.data, checkpoints.size, LIST_ITEMS));
  CHECK(pb_count(checkpoints.data, checkpoints.size, LIST_ITEMS) >= 1);
  kcnet_buffer_free(&checkpoints);
  kcnet_buffer awaiting = {NULL, 0};
  MUST(kcnet_request_list_awaiting_review(a, &awaiting, error));
  CHECK(pb_count(awaiting.data, awaiting.size, LIST_ITEMS) == 0); /* nothing returned to us */
  kcnet_buffer_free(&awaiting);

  step("a second tablet of the same user receives the records through the server");
  kcnet_client* b = open_client(path_b, "c-abi-tablet-b", server);
  MUST(kcnet_client_sign_in(b, username, password, error));
  sync_now(b, &pushed, &received);
  MUST(kcnet_facility_get(b, facility_id, &facility, error));
  CHECK(strcmp(pb_get_string(facility.data, facility.size, FACILITY_NAME, name, sizeof name),
               "Cơ sở bánh đa nem Hà Nội (C ABI)") == 0);
  CHECK(pb_get_varint(facility.data, facility.size, FACILITY_WORKERS) == 9);
  kcnet_buffer_free(&facility);
  CHECK(request_status(b, request_id) == REQUEST_STATUS_SUBMITTED);
  CHECK(search_finds(b, "HA NOI", facility_id));
  MUST(kcnet_request_events(b, request_id, &events, error));
  bool saw_submit = false;
  for (size_t i = 0; i < pb_count(events.data, events.size, LIST_ITEMS); ++i) {
    pb_field event;
    CHECK(pb_get_nth(events.data, events.size, LIST_ITEMS, i, &event));
    saw_submit |= pb_get_varint(event.data, event.size, EVENT_ACTION) == REQUEST_ACTION_SUBMIT;
  }
  CHECK(saw_submit);
  kcnet_buffer_free(&events);
  kcnet_client_close(b);

  step("four threads register facilities at once while the background sync runs");
  {
    const size_t before = facilities_of_commune(a, commune);
    const int local_before = atomic_load(&seen.local);
    MUST(kcnet_sync_start_background(a, error));
    pthread_t threads[kWriters];
    writer_args args[kWriters];
    for (int i = 0; i < kWriters; ++i) {
      args[i] = (writer_args){a, commune, i, 0};
      CHECK(pthread_create(&threads[i], NULL, write_facilities, &args[i]) == 0);
    }
    for (int i = 0; i < kWriters; ++i) {
      CHECK(pthread_join(threads[i], NULL) == 0);
      CHECK(args[i].failures == 0);
    }
    MUST(kcnet_sync_stop_background(a, error));
    sync_now(a, &pushed, &received);
    CHECK(pending_uploads(a) == 0);
    CHECK(facilities_of_commune(a, commune) == before + kWriters * kWritesEach);
    CHECK(atomic_load(&seen.local) - local_before >= kWriters * kWritesEach);
    kcnet_buffer hits = {NULL, 0};
    MUST(kcnet_facility_search(a, "lo gom bat trang", 100, &hits, error));
    CHECK(pb_count(hits.data, hits.size, LIST_ITEMS) == kWriters * kWritesEach);
    kcnet_buffer_free(&hits);
  }

  step("bad input is refused with INVALID_ARGUMENT naming the argument, changing nothing");
  const size_t facilities_now = facilities_of_commune(a, commune);
  const int local_before = atomic_load(&seen.local);
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x07};
  const kcnet_bytes garbage_bytes = {garbage, sizeof garbage};
  kcnet_buffer out = {NULL, 0};
  CHECK(!kcnet_facility_register(NULL, garbage_bytes, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "client", "NULL client");
  CHECK(!kcnet_sync_now(NULL, NULL, NULL, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "client", "NULL client (sync)");
  CHECK(!kcnet_facility_register(a, garbage_bytes, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "facility:", "garbage facility");
  CHECK(out.data == NULL && out.size == 0);
  CHECK(!kcnet_visit_record(a, garbage_bytes, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "visit:", "garbage visit");
  CHECK(!kcnet_request_draft(a, garbage_bytes, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "request:", "garbage request");
  const kcnet_bytes null_data = {NULL, 3};
  CHECK(!kcnet_facility_register(a, null_data, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "facility: data is NULL", "NULL data");
  pb_writer_init(&w);
  pb_put_varint(&w, FACILITY_COMMUNE_ID, (uint64_t)commune);
  pb_put_string(&w, FACILITY_NAME, "bad \xc3\x28 name");
  CHECK(!kcnet_facility_register(a, as_bytes(&w), NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "facility.name", "bad UTF-8 in a field");
  pb_writer_free(&w);
  pb_writer_init(&w);
  pb_put_varint(&w, FACILITY_COMMUNE_ID, (uint64_t)commune);
  pb_put_string(&w, FACILITY_NAME, "Cơ sở lệch tọa độ");
  pb_put_varint(&w, FACILITY_KIND, 99);
  CHECK(!kcnet_facility_register(a, as_bytes(&w), NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "facility.kind", "unknown enum value");
  pb_writer_free(&w);
  pb_writer_init(&w);
  pb_put_varint(&w, FACILITY_COMMUNE_ID, (uint64_t)commune);
  pb_put_string(&w, FACILITY_NAME, "Cơ sở lệch tọa độ");
  pb_put_double(&w, FACILITY_LATITUDE, 200.0);
  CHECK(!kcnet_facility_register(a, as_bytes(&w), NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "latitude", "latitude out of range (SDK)");
  pb_writer_free(&w);
  CHECK(!kcnet_facility_search(a, "ha \xff noi", 20, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "query", "bad UTF-8 query");
  CHECK(!kcnet_facility_search(a, "ha noi", 0, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "limit", "zero limit");
  CHECK(!kcnet_facility_get(a, facility_id, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "out_facility", "NULL output");
  CHECK(!kcnet_facility_get(a, NULL, &out, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "id", "NULL id");
  pb_writer_init(&w);
  pb_put_string(&w, FACILITY_ID, facility_id);
  pb_put_varint(&w, FACILITY_WORKERS, 1000);
  CHECK(!kcnet_facility_update(a, as_bytes(&w), NULL, 1, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "fields", "NULL field list");
  const char* bad_fields[] = {"workers", NULL};
  CHECK(!kcnet_facility_update(a, as_bytes(&w), bad_fields, 2, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "fields[1]", "NULL field name");
  pb_writer_free(&w);
  CHECK(!kcnet_request_act(a, request_id, 99, NULL, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "action", "unknown action");
  CHECK(!kcnet_request_comment(a, request_id, "", NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "text", "empty comment");
  CHECK(!kcnet_client_sign_in(a, NULL, password, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "username", "NULL username");
  CHECK(kcnet_client_open(NULL, &error) == NULL);
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "options", "NULL options");
  kcnet_client_options zeroed;
  memset(&zeroed, 0, sizeof zeroed);
  CHECK(kcnet_client_open(&zeroed, &error) == NULL);
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "options.struct_size", "uninitialised options");
  CHECK(!kcnet_client_add_observer(a, NULL, NULL, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "callback", "NULL callback");
  CHECK(!kcnet_facility_get(a, "00000000-0000-4000-8000-000000000000", &out, &error));
  expect_error(&error, KCNET_CODE_NOT_FOUND, "", "unknown facility");
  CHECK(!kcnet_facility_register(NULL, garbage_bytes, NULL, NULL)); /* no error struct: fine */
  CHECK(out.data == NULL && out.size == 0);
  CHECK(pending_uploads(a) == 0);
  CHECK(facilities_of_commune(a, commune) == facilities_now);
  CHECK(atomic_load(&seen.local) == local_before);
  MUST(kcnet_facility_get(a, facility_id, &facility, error));
  CHECK(pb_get_varint(facility.data, facility.size, FACILITY_WORKERS) == 9);
  kcnet_buffer_free(&facility);

  step("observers: remove, and removing again is NOT_FOUND");
  MUST(kcnet_client_remove_observer(a, observer, error));
  CHECK(!kcnet_client_remove_observer(a, observer, &error));
  expect_error(&error, KCNET_CODE_NOT_FOUND, "handle", "removed twice");

  step("background sync starts and stops");
  MUST(kcnet_sync_start_background(a, error));
  MUST(kcnet_sync_status(a, &status, error));
  CHECK(pb_get_varint(status.data, status.size, STATUS_BACKGROUND) == 1);
  kcnet_buffer_free(&status);
  MUST(kcnet_sync_stop_background(a, error));
  MUST(kcnet_sync_status(a, &status, error));
  CHECK(pb_get_varint(status.data, status.size, STATUS_BACKGROUND) == 0);
  kcnet_buffer_free(&status);

  step("sign out, close");
  MUST(kcnet_client_sign_out(a, error));
  MUST(kcnet_client_user(a, &signed_in, &user, error));
  CHECK(!signed_in && user.data == NULL);
  kcnet_client_close(a);
  kcnet_client_close(NULL);
  kcnet_buffer_free(NULL);

  printf("OK: the C ABI works end to end\n");
  return 0;
}
