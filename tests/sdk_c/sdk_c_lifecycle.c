/* sdk_c_lifecycle: a C11 program that checks the lifecycle guarantees of the C ABI
 * (libkcnet, kcnet_c.h) against a real kcnet-server, through the C ABI alone:
 * callbacks that re-enter the SDK (a write and a sync from an observer; stop_background and
 * free from an observer answer FAILED_PRECONDITION), observer contexts freed exactly
 * once, one handle per store file, an options struct from an app built against an older,
 * smaller kcnet_client_options, cancelling a sync stalled on a server that never answers,
 * suspend / resume / reachability, a free that returns promptly during such a sync, use
 * after free and double free answered with INVALID_ARGUMENT, the log hook, conflict
 * review, and the accounts of a shared tablet: a user switch refused while the previous
 * user has pending writes, their export and explicit discard, the previous user's data
 * purged; 180 days offline: the server's clock moved 180 days ahead (the 12-hour token
 * long expired), the offline writes upload with the device credential, without the
 * password; a password reset revokes that credential: "sign in again" (observer event and
 * status) with nothing pending lost, and the new password brings it back; a sign-out out of
 * coverage (refused with pending writes; with none, purged at once and the release sent
 * at the next user's sign-in, so that user may sync on the tablet). The last part
 * needs the environment run_e2e.sh sets with `clock` (KCNET_E2E_SEED: the seed-demo
 * output with collab2's password; KCNET_E2E_ADMIN and KCNET_E2E_DATA_DIR: kcnet-admin and
 * the server's data directory; KCNET_E2E_CLOCK_FILE: the control file of the test-only
 * kcnet-clock-server, clock_server.cc); without it, it is skipped.
 *
 * Usage: sdk_c_lifecycle SERVER_ADDRESS USERNAME PASSWORD WORK_DIR (run_e2e.sh starts the
 * server). Prints each step; exits 0 when every check passed, 1 at the first failure.
 *
 * Thread-safety: the observers run on the SDK's thread and touch only atomics and the
 * client (which is thread-safe).
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "c_check.h"
#include "kcnet_c.h"
#include "pbwire.h"

enum {
  USER_ORG_UNIT_IDS = 5,
  FACILITY_COMMUNE_ID = 2,
  FACILITY_NAME = 3,
  LIST_ITEMS = 1,
  STATUS_PENDING_UPLOADS = 1,
  STATUS_UNCONFIRMED = 2,
  STATUS_HAS_CLOCK_SKEW = 15,
  STATUS_CLOCK_SKEW_MS = 16,
  STATUS_SYNCING = 9,
  STATUS_SIGN_IN_REQUIRED = 12,
  USER_USERNAME = 2
};

static void expect_error(const kcnet_error* error, int code, const char* needle, const char* what) {
  if (error->code != code || strstr(error->message, needle) == NULL) {
    FAIL("%s: expected %s mentioning \"%s\", got %s: %s", what, kcnet_code_name(code), needle,
         kcnet_code_name(error->code), error->message);
  }
  printf("      refused as expected: %s: %s\n", kcnet_code_name(error->code), error->message);
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

/* Waits up to 10 s for *counter to reach `at_least`. */
static bool wait_for(atomic_int* counter, int at_least) {
  for (int i = 0; i < 2000 && atomic_load(counter) < at_least; ++i) sleep_ms(5);
  return atomic_load(counter) >= at_least;
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

static bool register_facility(kcnet_client* client, int64_t commune, const char* name,
                              kcnet_error* error) {
  pb_writer w;
  pb_writer_init(&w);
  pb_put_varint(&w, FACILITY_COMMUNE_ID, (uint64_t)commune);
  pb_put_string(&w, FACILITY_NAME, name);
  CHECK(w.ok);
  kcnet_bytes bytes = {w.data, w.size};
  const bool ok = kcnet_facility_register(client, bytes, NULL, error);
  pb_writer_free(&w);
  return ok;
}

static size_t facilities_of_commune(kcnet_client* client, int64_t commune) {
  kcnet_buffer list = {NULL, 0};
  MUST(kcnet_facility_list_by_commune(client, commune, &list, error));
  const size_t count = pb_count(list.data, list.size, LIST_ITEMS);
  kcnet_buffer_free(&list);
  return count;
}

/* ---- Observers that call the client ------------------------------------------------------ */

typedef struct reentrant {
  kcnet_client* client;
  int64_t commune;
  atomic_int calls;
  atomic_int done; /* the nested call returned */
  atomic_int ok;   /* ... and succeeded (or answered the expected code) */
  atomic_int code; /* its error code */
} reentrant;

static void init_reentrant(reentrant* r, kcnet_client* client, int64_t commune) {
  r->client = client;
  r->commune = commune;
  atomic_init(&r->calls, 0);
  atomic_init(&r->done, 0);
  atomic_init(&r->ok, 0);
  atomic_init(&r->code, -1);
}

/* On the first local change, writes another facility from inside the callback. */
static void write_from_observer(void* context, int source, kcnet_bytes event) {
  (void)event;
  reentrant* r = context;
  if (source != KCNET_CHANGE_LOCAL || atomic_fetch_add(&r->calls, 1) > 0) return;
  kcnet_error error;
  const bool ok = register_facility(r->client, r->commune, "Ghi từ observer (C)", &error);
  atomic_store(&r->code, ok ? 0 : error.code);
  atomic_store(&r->ok, ok);
  atomic_store(&r->done, 1);
}

/* On the first synced change, syncs again from inside the callback. */
static void sync_from_observer(void* context, int source, kcnet_bytes event) {
  (void)event;
  reentrant* r = context;
  if (source != KCNET_CHANGE_SYNC || atomic_fetch_add(&r->calls, 1) > 0) return;
  kcnet_error error;
  const bool ok = kcnet_sync_now(r->client, NULL, NULL, NULL, &error);
  atomic_store(&r->code, ok ? 0 : error.code);
  atomic_store(&r->ok, ok);
  atomic_store(&r->done, 1);
}

/* On the first local change, tries the two calls that must not run on the SDK's thread. */
static void stop_from_observer(void* context, int source, kcnet_bytes event) {
  (void)event;
  reentrant* r = context;
  if (source != KCNET_CHANGE_LOCAL || atomic_fetch_add(&r->calls, 1) > 0) return;
  kcnet_error error;
  const bool stopped = kcnet_sync_stop_background(r->client, &error);
  const int stop_code = stopped ? 0 : error.code;
  const bool freed = kcnet_client_free(r->client, &error);
  const int free_code = freed ? 0 : error.code;
  atomic_store(&r->code, stop_code);
  atomic_store(&r->ok, !stopped && !freed && stop_code == KCNET_CODE_FAILED_PRECONDITION &&
                           free_code == KCNET_CODE_FAILED_PRECONDITION);
  atomic_store(&r->done, 1);
}

static void count_change(void* context, int source, kcnet_bytes event) {
  (void)source;
  (void)event;
  atomic_fetch_add((atomic_int*)context, 1);
}

static void free_counter(void* context) { atomic_fetch_add((atomic_int*)context, 1000); }

static atomic_int g_log_messages;
static void on_log(void* context, int level, const char* message) {
  (void)context;
  (void)level;
  if (message != NULL && message[0] != '\0') atomic_fetch_add(&g_log_messages, 1);
}

/* A TCP listener that never accepts: connections complete in the kernel's backlog and
 * then hear nothing. Returns the socket; *port gets its port. */
static int stalled_listener(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  CHECK(bind(fd, (struct sockaddr*)&addr, sizeof addr) == 0);
  CHECK(listen(fd, 16) == 0);
  CHECK(getsockname(fd, (struct sockaddr*)&addr, &len) == 0);
  *port = ntohs(addr.sin_port);
  return fd;
}

typedef struct sync_args {
  kcnet_client* client;
  int code;
} sync_args;

static void* sync_thread(void* arg) {
  sync_args* args = arg;
  kcnet_error error;
  args->code = kcnet_sync_now(args->client, NULL, NULL, NULL, &error) ? 0 : error.code;
  return NULL;
}

static bool syncing(kcnet_client* client) {
  kcnet_buffer status = {NULL, 0};
  MUST(kcnet_sync_status(client, &status, error));
  const bool on = pb_get_varint(status.data, status.size, STATUS_SYNCING) != 0;
  kcnet_buffer_free(&status);
  return on;
}

static void wait_until_syncing(kcnet_client* client) {
  for (int i = 0; i < 2000 && !syncing(client); ++i) sleep_ms(5);
  CHECK(syncing(client));
  sleep_ms(100); /* well inside the stalled call */
}

/* ---- Accounts of a shared tablet ---------------------------------------------------------- */

static int64_t pending_uploads(kcnet_client* client) {
  kcnet_buffer status = {NULL, 0};
  MUST(kcnet_sync_status(client, &status, error));
  const int64_t pending = (int64_t)pb_get_varint(status.data, status.size, STATUS_PENDING_UPLOADS);
  kcnet_buffer_free(&status);
  return pending;
}

/* The first org unit of the signed-in user, and checks the username. */
static int64_t user_unit(kcnet_client* client, const char* username) {
  kcnet_buffer user = {NULL, 0};
  bool signed_in = false;
  MUST(kcnet_client_user(client, &signed_in, &user, error));
  CHECK(signed_in);
  char name[128];
  CHECK(pb_get_string(user.data, user.size, USER_USERNAME, name, sizeof name) != NULL);
  CHECK(strcmp(name, username) == 0);
  uint64_t units[8];
  CHECK(pb_get_varints(user.data, user.size, USER_ORG_UNIT_IDS, units, 8) >= 1);
  kcnet_buffer_free(&user);
  return (int64_t)units[0];
}

/* The password of `username` in the seed-demo output ("username password ..." lines). */
static bool seed_password(const char* seed_file, const char* username, char* out, size_t size) {
  FILE* f = fopen(seed_file, "r");
  if (f == NULL) return false;
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    char user[128];
    char password[256];
    if (sscanf(line, " %127s %255s", user, password) == 2 && strcmp(user, username) == 0) {
      snprintf(out, size, "%s", password);
      found = true;
    }
  }
  fclose(f);
  return found;
}

/* Runs kcnet-admin on the server's data directory (the server sees the change at once). */
static void run_admin(const char* admin, const char* data_dir, const char* args) {
  char command[16384];
  snprintf(command, sizeof command, "'%s' --data_dir='%s' %s > /dev/null", admin, data_dir, args);
  if (system(command) != 0) FAIL("%s failed", command);
}

static const int64_t kDayMs = 24LL * 60 * 60 * 1000;

/* Moves the test server's clock (kcnet-clock-server, clock_server.cc) to the system clock
 * plus `offset_ms`: the offset goes to a temporary file renamed over the control file, so
 * the server never reads half of it. The server reads it at every reading of its clock. */
static void set_server_clock_offset(const char* clock_file, int64_t offset_ms) {
  char temporary[4096];
  snprintf(temporary, sizeof temporary, "%s.new", clock_file);
  FILE* f = fopen(temporary, "w");
  CHECK(f != NULL);
  fprintf(f, "%lld\n", (long long)offset_ms);
  CHECK(fclose(f) == 0);
  CHECK(rename(temporary, clock_file) == 0);
  printf("      the server's clock is now %.1f days ahead\n", (double)offset_ms / (double)kDayMs);
}

static void count_sign_in_required(void* context, int source, kcnet_bytes event) {
  (void)event;
  if (source == KCNET_CHANGE_SIGN_IN_REQUIRED) atomic_fetch_add((atomic_int*)context, 1);
}

static void shared_tablet(const char* server, const char* work_dir, const char* username,
                          const char* password) {
  const char* seed = getenv("KCNET_E2E_SEED");
  const char* admin = getenv("KCNET_E2E_ADMIN");
  const char* data_dir = getenv("KCNET_E2E_DATA_DIR");
  const char* clock_file = getenv("KCNET_E2E_CLOCK_FILE");
  char password2[256];
  if (seed == NULL || admin == NULL || data_dir == NULL || clock_file == NULL ||
      clock_file[0] == '\0' || !seed_password(seed, "collab2", password2, sizeof password2)) {
    printf(
        "      (skipped: KCNET_E2E_SEED, KCNET_E2E_ADMIN, KCNET_E2E_DATA_DIR,"
        " KCNET_E2E_CLOCK_FILE not set)\n");
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/shared.db", work_dir);
  char exported[4096];
  snprintf(exported, sizeof exported, "%s/collab1-pending.pb", work_dir);
  kcnet_error error;

  step("a shared tablet: switching users with pending writes is refused, naming them");
  kcnet_client* s = open_client(path, "c-life-shared", server);
  MUST(kcnet_client_sign_in(s, username, password, error));
  MUST(kcnet_sync_now(s, NULL, NULL, NULL, error));
  const int64_t commune1 = user_unit(s, username);
  CHECK(facilities_of_commune(s, commune1) > 0);
  CHECK(register_facility(s, commune1, "Cơ sở của collab1, chưa gửi", &error));
  CHECK(!kcnet_client_sign_in(s, "collab2", password2, &error));
  expect_error(&error, KCNET_CODE_FAILED_PRECONDITION, username, "switch with pending writes");
  CHECK(!kcnet_client_sign_out(s, &error));
  expect_error(&error, KCNET_CODE_FAILED_PRECONDITION, "ExportPending", "sign-out with pending");
  CHECK(!kcnet_client_sign_in_with(s, "collab2", password2, 8, &error));
  expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "flags", "unknown flags");
  CHECK(pending_uploads(s) == 1);

  step("export, then an explicit discard: the next user sees nothing of the previous one");
  int64_t count = -1;
  MUST(kcnet_client_export_pending(s, exported, &count, error));
  CHECK(count == 1);
  FILE* f = fopen(exported, "rb");
  CHECK(f != NULL);
  CHECK(fseek(f, 0, SEEK_END) == 0 && ftell(f) > 0);
  fclose(f);
  MUST(kcnet_client_sign_in_with(s, "collab2", password2,
                                 KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER, error));
  const int64_t commune2 = user_unit(s, "collab2");
  CHECK(facilities_of_commune(s, commune1) == 0);
  CHECK(pending_uploads(s) == 0);
  CHECK(!register_facility(s, commune1, "Không được ghi ở xã khác", &error));
  expect_error(&error, KCNET_CODE_PERMISSION_DENIED, "", "a write in the previous user's commune");
  MUST(kcnet_sync_now(s, NULL, NULL, NULL, error));
  CHECK(facilities_of_commune(s, commune1) == 0);

  step(
      "180 days offline: the server's clock moves 180 days, the 12-hour token long expired;"
      " the offline writes upload without the password");
  const size_t before_offline = facilities_of_commune(s, commune2);
  CHECK(register_facility(s, commune2, "Cơ sở ghi khi mất sóng, ngày 1", &error));
  CHECK(register_facility(s, commune2, "Cơ sở ghi khi mất sóng, ngày 180", &error));
  CHECK(pending_uploads(s) == 2);
  set_server_clock_offset(clock_file, (int64_t)180 * kDayMs);
  MUST(kcnet_sync_now(s, NULL, NULL, NULL, error));
  bool required = true;
  MUST(kcnet_client_sign_in_required(s, &required, error));
  CHECK(!required);
  {
    kcnet_buffer status = {NULL, 0};
    MUST(kcnet_sync_status(s, &status, error));
    CHECK(pb_get_varint(status.data, status.size, STATUS_PENDING_UPLOADS) == 0);
    CHECK(pb_get_varint(status.data, status.size, STATUS_UNCONFIRMED) == 0); /* downloaded back */
    /* The tablet's clock is now 180 days behind the server's: the server's time did move. */
    CHECK(pb_get_varint(status.data, status.size, STATUS_HAS_CLOCK_SKEW) == 1);
    const int64_t skew = (int64_t)pb_get_varint(status.data, status.size, STATUS_CLOCK_SKEW_MS);
    printf("      measured clock skew: %.1f days\n", (double)skew / (double)kDayMs);
    CHECK(skew < -179 * kDayMs && skew > -181 * kDayMs);
    kcnet_buffer_free(&status);
  }
  CHECK(facilities_of_commune(s, commune2) == before_offline + 2);

  step(
      "a password reset revokes the device credential: \"sign in again\" (event and status),"
      " nothing pending lost; the new password brings it back");
  atomic_int asked;
  atomic_init(&asked, 0);
  const int handle = kcnet_client_add_observer(s, count_sign_in_required, &asked, &error);
  CHECK(handle > 0);
  CHECK(register_facility(s, commune2, "Cơ sở chờ đăng nhập lại", &error));
  const char* new_password = "mat-khau-moi-sau-180-ngay";
  {
    char password_file[4096];
    snprintf(password_file, sizeof password_file, "%s/collab2.pw", work_dir);
    FILE* pw = fopen(password_file, "w");
    CHECK(pw != NULL);
    fprintf(pw, "%s\n", new_password);
    fclose(pw);
    char args[4200];
    snprintf(args, sizeof args, "reset-password --username=collab2 --password_file='%s'",
             password_file);
    run_admin(admin, data_dir, args);
  }
  CHECK(!kcnet_sync_now(s, NULL, NULL, NULL, &error));
  expect_error(&error, KCNET_CODE_UNAUTHENTICATED, "sign in again", "sync after a password reset");
  CHECK(wait_for(&asked, 1));
  MUST(kcnet_client_sign_in_required(s, &required, error));
  CHECK(required);
  CHECK(pending_uploads(s) == 1);
  {
    kcnet_buffer status = {NULL, 0};
    MUST(kcnet_sync_status(s, &status, error));
    CHECK(pb_get_varint(status.data, status.size, STATUS_SIGN_IN_REQUIRED) == 1);
    kcnet_buffer_free(&status);
  }
  CHECK(!kcnet_sync_now(s, NULL, NULL, NULL, &error));
  CHECK(atomic_load(&asked) == 1);                               /* told once */
  CHECK(!kcnet_client_sign_in(s, "collab2", password2, &error)); /* the old password */
  expect_error(&error, KCNET_CODE_UNAUTHENTICATED, "", "the old password");
  CHECK(pending_uploads(s) == 1);
  MUST(kcnet_client_sign_in(s, "collab2", new_password, error));
  MUST(kcnet_sync_now(s, NULL, NULL, NULL, error));
  CHECK(pending_uploads(s) == 0);
  CHECK(facilities_of_commune(s, commune2) == before_offline + 3);
  MUST(kcnet_client_remove_observer(s, handle, error));
  kcnet_client_close(s);

  step("sign-out out of coverage: purged at once, the release owed to the next sign-in");
  s = open_client(path, "c-life-shared", "127.0.0.1:1"); /* nothing listens there */
  CHECK(register_facility(s, commune2, "Cơ sở chưa gửi, mất sóng", &error));
  CHECK(!kcnet_client_sign_out(s, &error)); /* pending: still the choice, as online */
  expect_error(&error, KCNET_CODE_FAILED_PRECONDITION, "ExportPending", "offline, pending");
  kcnet_client_close(s);
  s = open_client(path, "c-life-shared", server);
  MUST(kcnet_sync_now(s, NULL, NULL, NULL, error));
  CHECK(pending_uploads(s) == 0);
  kcnet_client_close(s);
  s = open_client(path, "c-life-shared", "127.0.0.1:1");
  MUST(kcnet_client_sign_out(s, error));
  bool still = true;
  MUST(kcnet_client_user(s, &still, NULL, error));
  CHECK(!still);
  CHECK(facilities_of_commune(s, commune2) == 0);
  kcnet_client_close(s);
  /* collab1 signs in: collab2's release goes first, so collab1 may sync on the tablet
   * (a device still registered to collab2 would be refused with PERMISSION_DENIED). */
  s = open_client(path, "c-life-shared", server);
  MUST(kcnet_client_sign_in(s, username, password, error));
  MUST(kcnet_sync_now(s, NULL, NULL, NULL, error));
  CHECK(facilities_of_commune(s, commune1) > 0);
  kcnet_client_close(s);
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s SERVER_ADDRESS USERNAME PASSWORD WORK_DIR\n", argv[0]);
    return 2;
  }
  const char* server = argv[1];
  const char* username = argv[2];
  const char* password = argv[3];
  char path_a[4096];
  snprintf(path_a, sizeof path_a, "%s/lifecycle-a.db", argv[4]);
  kcnet_error error;

  step("sign in and sync once");
  kcnet_client* a = open_client(path_a, "c-life-a", server);
  MUST(kcnet_client_sign_in(a, username, password, error));
  MUST(kcnet_sync_now(a, NULL, NULL, NULL, error));
  kcnet_buffer user = {NULL, 0};
  bool signed_in = false;
  MUST(kcnet_client_user(a, &signed_in, &user, error));
  uint64_t units[8];
  CHECK(pb_get_varints(user.data, user.size, USER_ORG_UNIT_IDS, units, 8) >= 1);
  const int64_t commune = (int64_t)units[0];
  kcnet_buffer_free(&user);

  step("a second handle on the same store file is refused, naming the file");
  {
    kcnet_client_options options;
    kcnet_client_options_init(&options);
    options.path = path_a;
    options.device_id = "c-life-a";
    kcnet_client* second = kcnet_client_open(&options, &error);
    if (second != NULL) kcnet_client_close(second);
    CHECK(second == NULL);
    expect_error(&error, KCNET_CODE_FAILED_PRECONDITION, "lifecycle-a.db", "second handle");
  }

  step("an observer writes from its callback");
  {
    reentrant r;
    init_reentrant(&r, a, commune);
    const size_t before = facilities_of_commune(a, commune);
    const int handle = kcnet_client_add_observer(a, write_from_observer, &r, &error);
    CHECK(handle > 0);
    CHECK(register_facility(a, commune, "Cơ sở C thứ nhất", &error));
    CHECK(wait_for(&r.done, 1));
    CHECK(atomic_load(&r.ok));
    CHECK(facilities_of_commune(a, commune) == before + 2);
    MUST(kcnet_client_remove_observer(a, handle, error));
  }

  step("an observer syncs from a sync callback");
  {
    reentrant r;
    init_reentrant(&r, a, commune);
    const int handle = kcnet_client_add_observer(a, sync_from_observer, &r, &error);
    CHECK(handle > 0);
    MUST(kcnet_sync_now(a, NULL, NULL, NULL, error));
    CHECK(wait_for(&r.done, 1));
    printf("      nested sync answered %s\n", kcnet_code_name(atomic_load(&r.code)));
    CHECK(atomic_load(&r.ok));
    MUST(kcnet_client_remove_observer(a, handle, error));
  }

  step("an app built against the first, smaller kcnet_client_options");
  {
    kcnet_client_close(a);
    a = NULL;
    kcnet_client_options options;
    kcnet_client_options_init(&options);
    options.path = path_a;
    options.device_id = "c-life-a";
    options.server_address = server;
    /* The first version ended with `seed`. */
    options.struct_size = offsetof(kcnet_client_options, seed) + sizeof options.seed;
    a = kcnet_client_open(&options, &error);
    if (a == NULL) FAIL("old struct_size: %s: %s", kcnet_code_name(error.code), error.message);
    /* The init of an app built against the first header writes its struct's bytes only. */
    union {
      kcnet_client_options options;
      unsigned char raw[sizeof(kcnet_client_options) + 16];
    } old_app;
    memset(old_app.raw, 0xab, sizeof old_app.raw);
    const size_t first = offsetof(kcnet_client_options, seed) + sizeof options.seed;
    kcnet_client_options_init_sized(&old_app.options, first);
    CHECK(old_app.options.struct_size == first && old_app.options.durable);
    for (size_t i = first; i < sizeof old_app.raw; ++i) CHECK(old_app.raw[i] == 0xab);
    options.struct_size = 8;
    kcnet_client* tiny = kcnet_client_open(&options, &error);
    CHECK(tiny == NULL);
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "options.struct_size", "too small");
    options.struct_size = sizeof options + 64;
    kcnet_client* future = kcnet_client_open(&options, &error);
    CHECK(future == NULL);
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "options.struct_size", "too large");
  }
  step("stop_background and free from an observer answer FAILED_PRECONDITION");
  {
    reentrant r;
    init_reentrant(&r, a, commune);
    MUST(kcnet_sync_start_background(a, error));
    const int handle = kcnet_client_add_observer(a, stop_from_observer, &r, &error);
    CHECK(handle > 0);
    CHECK(register_facility(a, commune, "Cơ sở C thứ hai", &error));
    CHECK(wait_for(&r.done, 1));
    printf("      stop from an observer answered %s\n", kcnet_code_name(atomic_load(&r.code)));
    CHECK(atomic_load(&r.ok));
    MUST(kcnet_client_remove_observer(a, handle, error));
    MUST(kcnet_sync_stop_background(a, error)); /* from an app thread: fine */
  }

  step("observer contexts are freed exactly once: on removal, and when the client is freed");
  atomic_int changes_1, changes_2;
  atomic_init(&changes_1, 0);
  atomic_init(&changes_2, 0);
  {
    const int h1 =
        kcnet_client_add_observer_with_free(a, count_change, &changes_1, free_counter, &error);
    const int h2 =
        kcnet_client_add_observer_with_free(a, count_change, &changes_2, free_counter, &error);
    CHECK(h1 > 0 && h2 > 0);
    CHECK(register_facility(a, commune, "Cơ sở C thứ ba", &error));
    CHECK(atomic_load(&changes_1) == 1 && atomic_load(&changes_2) == 1);
    MUST(kcnet_client_remove_observer(a, h1, error));
    CHECK(atomic_load(&changes_1) == 1001); /* freed once, at removal */
    CHECK(atomic_load(&changes_2) == 1);
  }

  step("cancel a sync stalled on a server that never answers; suspend, resume, reachability");
  atomic_init(&g_log_messages, 0);
  kcnet_log_set_callback(on_log, NULL, KCNET_LOG_INFO);
  int port = 0;
  const int stalled = stalled_listener(&port);
  char stalled_address[64];
  snprintf(stalled_address, sizeof stalled_address, "127.0.0.1:%d", port);
  kcnet_client_close(a);
  CHECK(atomic_load(&changes_2) == 1001); /* freed once, when the client was freed */
  a = open_client(path_a, "c-life-a", stalled_address);
  {
    sync_args args = {a, -1};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, sync_thread, &args) == 0);
    wait_until_syncing(a);
    const double start = now_ms();
    MUST(kcnet_sync_cancel(a, error));
    CHECK(pthread_join(thread, NULL) == 0);
    printf("      cancelled sync answered %s after %.0f ms\n", kcnet_code_name(args.code),
           now_ms() - start);
    CHECK(args.code == KCNET_CODE_CANCELLED);
    CHECK(now_ms() - start < 5000); /* liveness, not a speed goal */
    MUST(kcnet_sync_set_suspended(a, true, error));
    MUST(kcnet_sync_set_suspended(a, false, error));
    MUST(kcnet_sync_set_host_reachable(a, false, error));
    MUST(kcnet_sync_set_host_reachable(a, true, error));
    CHECK(atomic_load(&g_log_messages) >= 1); /* "sync cancelled: ..." reached the hook */
  }

  step("free returns promptly while a sync waits on the stalled server");
  {
    sync_args args = {a, -1};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, sync_thread, &args) == 0);
    MUST(kcnet_sync_start_background(a, error)); /* queued behind it */
    wait_until_syncing(a);
    const double start = now_ms();
    MUST(kcnet_client_free(a, error));
    printf("      freed in %.0f ms\n", now_ms() - start);
    CHECK(now_ms() - start < 5000);
    CHECK(pthread_join(thread, NULL) == 0);
    printf("      the sync in flight answered %s\n", kcnet_code_name(args.code));
    CHECK(args.code == KCNET_CODE_CANCELLED || args.code == KCNET_CODE_FAILED_PRECONDITION ||
          args.code == KCNET_CODE_INVALID_ARGUMENT);
  }
  close(stalled);
  kcnet_log_set_callback(NULL, NULL, 0);

  step("use after free and double free are refused, reading no freed memory");
  {
    kcnet_buffer status = {NULL, 0};
    CHECK(!kcnet_sync_status(a, &status, &error));
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "not an open kcnet_client", "use after free");
    CHECK(!kcnet_facility_register(a, (kcnet_bytes){NULL, 0}, NULL, &error));
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "client", "write after free");
    CHECK(!kcnet_client_free(a, &error));
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "closed already", "double free");
    kcnet_client_close(a); /* the void form: a no-op, logged */
    CHECK(!kcnet_sync_cancel((kcnet_client*)(uintptr_t)0x1234, &error));
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "not an open", "made-up handle");
  }

  step("conflict review goes through the C ABI (a collaborator may not)");
  a = open_client(path_a, "c-life-a", server);
  {
    kcnet_buffer list = {NULL, 0};
    CHECK(!kcnet_conflict_list(a, 0, false, &list, &error));
    expect_error(&error, KCNET_CODE_PERMISSION_DENIED, "", "collaborator lists conflicts");
    CHECK(!kcnet_conflict_resolve(a, 0, false, NULL, &error));
    expect_error(&error, KCNET_CODE_INVALID_ARGUMENT, "conflict_id", "conflict 0");
  }

  kcnet_client_close(a);

  shared_tablet(server, argv[4], username, password);
  printf("OK: the C ABI's lifecycle holds\n");
  return 0;
}
