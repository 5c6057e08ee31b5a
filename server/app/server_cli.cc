#include "server/app/server_cli.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "server/app/kcnet_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "HOST:PORT to listen on (port 0: pick a free port)");
ABSL_FLAG(std::string, data_dir, "", "Directory of directory.db and kcnet.db (required)");
ABSL_FLAG(std::string, store, "",
          "Where the synced records live: sqlite:DIR or postgres:CONNINFO (default: "
          "sqlite in --data_dir); on PostgreSQL the directory (accounts, tokens) too");
ABSL_FLAG(std::string, log_format, "text", "Log lines on stderr: text or json");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for TLS (with --tls_cert)");
ABSL_FLAG(int, storage_threads, 4, "Threads that run requests against storage (1-256)");
ABSL_FLAG(bool, insecure, false, "Allow plaintext on an address off loopback (warned about)");
ABSL_FLAG(bool, reflection, true, "Serve gRPC server reflection (grpcurl needs no .proto)");
ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT of the console's HTTP bridge (Connect + static files); empty: off");
ABSL_FLAG(std::string, console_dir, "", "The console's built files, served by the HTTP bridge");
ABSL_FLAG(int64_t, attachment_max_bytes, 25 * 1024 * 1024,
          "Largest attachment accepted, in bytes (at most 25 MiB)");
ABSL_FLAG(std::vector<std::string>, attachment_media_types,
          std::vector<std::string>({"image/jpeg", "image/png", "image/webp", "application/pdf"}),
          "Media types accepted (checked by magic bytes), comma-separated");
ABSL_FLAG(int64_t, attachment_user_quota_bytes, 0, "Bytes of attachments per user; 0: none");
ABSL_FLAG(int64_t, attachment_province_quota_bytes, 0,
          "Bytes of attachments per province; 0: none");
ABSL_FLAG(int32_t, attachment_max_upload_streams, 64,
          "Attachment upload streams served at once; more are told to retry; 0: no limit");
ABSL_FLAG(absl::Duration, blob_gc_interval, absl::Hours(1),
          "How often the blob garbage collector runs; 0: never");
ABSL_FLAG(absl::Duration, blob_gc_grace, absl::Hours(24),
          "How long a blob stays unreferenced before the collector removes it");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT serving Prometheus metrics at /metrics; empty: off");
ABSL_FLAG(std::string, trusted_proxies, "",
          "Comma-separated IP addresses of proxies (nginx) whose X-Forwarded-For is believed");

namespace kcnet::server {
namespace {

constexpr char kUsage[] =
    "usage: kcnet-server --data_dir=DIR [--store=sqlite:DIR|postgres:CONNINFO]\n"
    "                    [--listen=HOST:PORT] [--log_format=text|json]\n"
    "                    [--tls_cert=PEM --tls_key=PEM | --insecure] [--reflection=false]\n"
    "                    [--storage_threads=N] [--http_listen=HOST:PORT [--console_dir=DIR]]\n"
    "                    [--metrics_listen=HOST:PORT] [--trusted_proxies=IP,...]\n"
    "  --data_dir         directory of directory.db and kcnet.db (created if missing)\n"
    "  --store            where the synced records live: sqlite:DIR (DIR/kcnet.db) or\n"
    "                     postgres:CONNINFO (the records and the directory: accounts,\n"
    "                     tokens, lock-outs, shared by instances); default sqlite in --data_dir\n"
    "  --listen           HOST:PORT to listen on, default 127.0.0.1:50051 (port 0: any)\n"
    "  --log_format       text (default) or json: one line per RPC on stderr\n"
    "  --tls_cert/key     serve TLS with this PEM certificate chain and private key;\n"
    "                     needed to listen off loopback (127.0.0.0/8, [::1], localhost)\n"
    "  --insecure         allow plaintext off loopback anyway (warned about at start, and\n"
    "                     the health check of the service kcnet.insecure says SERVING)\n"
    "  --reflection       serve gRPC server reflection, default true\n"
    "  --storage_threads  threads that run requests against storage, default 4\n"
    "  --http_listen      HOST:PORT of the console's HTTP bridge (the Connect protocol to\n"
    "                     the same services, sign-in cookie); off by default; TLS with\n"
    "                     --tls_cert/--tls_key, plain HTTP off loopback only with --insecure\n"
    "  --console_dir      the console's built files, served by the HTTP bridge\n"
    "  --attachment_max_bytes     largest attachment, default 26214400 (25 MiB, the most)\n"
    "  --attachment_media_types   accepted types, default\n"
    "                     image/jpeg,image/png,image/webp,application/pdf (by magic bytes)\n"
    "  --attachment_user_quota_bytes      bytes per user, default 0 (no quota)\n"
    "  --attachment_province_quota_bytes  bytes per province, default 0 (no quota)\n"
    "  --attachment_max_upload_streams    upload streams served at once, default 64; one\n"
    "                     more is answered RESOURCE_EXHAUSTED with a retry-after (0: no limit)\n"
    "  --blob_gc_interval  how often unreferenced blobs and expired uploads are collected,\n"
    "                     default 1h (0: never; kcnet-admin gc-blobs runs it by hand)\n"
    "  --blob_gc_grace     how long a blob stays unreferenced before removal, default 24h\n"
    "  --metrics_listen   HOST:PORT serving Prometheus metrics at /metrics (plain HTTP;\n"
    "                     keep it on loopback or a monitoring network); off by default\n"
    "  --trusted_proxies  IP addresses of the proxies in front (nginx), comma-separated:\n"
    "                     their X-Forwarded-For is believed (gRPC and the HTTP bridge),\n"
    "                     so sign-in limits count per real client; empty: it is ignored\n"
    "SIGTERM or SIGINT shut the server down gracefully.\n";

// The flags kcnet-server accepts (other flags linked into the binary are not its own).
constexpr const char* kFlagNames[] = {"listen",
                                      "data_dir",
                                      "log_format",
                                      "tls_cert",
                                      "tls_key",
                                      "storage_threads",
                                      "insecure",
                                      "reflection",
                                      "http_listen",
                                      "console_dir",
                                      "attachment_max_bytes",
                                      "attachment_media_types",
                                      "attachment_user_quota_bytes",
                                      "attachment_province_quota_bytes",
                                      "attachment_max_upload_streams",
                                      "blob_gc_interval",
                                      "blob_gc_grace",
                                      "store",
                                      "metrics_listen",
                                      "trusted_proxies"};
// The flags that may stand alone (--insecure is --insecure=true).
constexpr const char* kBooleanFlags[] = {"insecure", "reflection"};

// Sets the flags from argv. `*help` is set by --help. A bad command line is
// INVALID_ARGUMENT with a one-line message.
absl::Status ParseFlags(int argc, char** argv, bool* help) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::StartsWith(arg, "-") || arg == "-" || arg == "--") {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "': kcnet-server takes flags only"));
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    const size_t equals = arg.find('=');
    const absl::string_view name = arg.substr(0, equals);
    if (name == "help" || name == "h") {
      *help = true;
      continue;
    }
    absl::CommandLineFlag* flag =
        std::find(std::begin(kFlagNames), std::end(kFlagNames), name) != std::end(kFlagNames)
            ? absl::FindCommandLineFlag(name)
            : nullptr;
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    std::string value;
    const bool boolean = std::find(std::begin(kBooleanFlags), std::end(kBooleanFlags), name) !=
                         std::end(kBooleanFlags);
    if (equals != absl::string_view::npos) {
      value = std::string(arg.substr(equals + 1));
    } else if (boolean) {
      value = "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

// Prints one line on stderr, whatever `message` holds.
void PrintError(absl::string_view message) {
  const std::string line = absl::StrReplaceAll(message, {{"\r", " "}, {"\n", " "}});
  std::fprintf(stderr, "kcnet-server: %s\n", line.c_str());
}

}  // namespace

int RunServerCli(int argc, char** argv) {
  // Block the shutdown signals before any thread starts, so that every thread inherits
  // the mask and they are taken only by sigwait() below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  bool help = false;
  absl::Status status = ParseFlags(argc, argv, &help);
  if (!status.ok()) {
    PrintError(absl::StrCat(status.message(), " (see --help)"));
    return 2;
  }
  if (help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.store = absl::GetFlag(FLAGS_store);
  options.log_format = absl::GetFlag(FLAGS_log_format);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.storage_threads = absl::GetFlag(FLAGS_storage_threads);
  options.insecure = absl::GetFlag(FLAGS_insecure);
  options.reflection = absl::GetFlag(FLAGS_reflection);
  options.http_listen = absl::GetFlag(FLAGS_http_listen);
  options.console_dir = absl::GetFlag(FLAGS_console_dir);
  options.attachments.max_bytes = absl::GetFlag(FLAGS_attachment_max_bytes);
  options.attachments.media_types = absl::GetFlag(FLAGS_attachment_media_types);
  options.attachments.user_quota_bytes = absl::GetFlag(FLAGS_attachment_user_quota_bytes);
  options.attachments.province_quota_bytes = absl::GetFlag(FLAGS_attachment_province_quota_bytes);
  options.attachments.max_upload_streams = absl::GetFlag(FLAGS_attachment_max_upload_streams);
  options.attachments.gc_interval = absl::GetFlag(FLAGS_blob_gc_interval);
  options.attachments.gc_grace = absl::GetFlag(FLAGS_blob_gc_grace);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  for (absl::string_view proxy :
       absl::StrSplit(absl::GetFlag(FLAGS_trusted_proxies), ',', absl::SkipWhitespace())) {
    options.trusted_proxies.emplace_back(absl::StripAsciiWhitespace(proxy));
  }
  if (options.data_dir.empty()) {
    PrintError("--data_dir is required (see --help)");
    return 2;
  }

  absl::StatusOr<std::unique_ptr<KcnetServer>> server = KcnetServer::Start(options);
  if (!server.ok()) {
    // Options the command line gave wrong are usage errors; the rest are failures. The
    // messages name ServerOptions' fields, the same as the flags ("listen: ..."), with
    // tls_cert_file for --tls_cert.
    const bool usage = server.status().code() == absl::StatusCode::kInvalidArgument;
    std::string message(server.status().message());
    for (const char* flag : kFlagNames) {
      const std::string option = absl::StrCat(flag, ": ");
      if (absl::StartsWith(message, option)) message = absl::StrCat("--", message);
    }
    PrintError(message);
    return usage ? 2 : 1;
  }
  std::printf("kcnet-server listening on %s\n", (*server)->address().c_str());
  if ((*server)->http_port() != 0) {
    const std::string& http = options.http_listen;
    std::printf("console on %s://%s:%d/\n", options.tls_cert_file.empty() ? "http" : "https",
                http.substr(0, http.rfind(':')).c_str(), (*server)->http_port());
  }
  if ((*server)->metrics_port() != 0) {
    const std::string& listen = options.metrics_listen;
    std::printf("metrics on http://%s:%d/metrics\n", listen.substr(0, listen.rfind(':')).c_str(),
                (*server)->metrics_port());
  }
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  (*server)->logger()->Info(
      absl::StrCat(signal_number == SIGINT ? "SIGINT" : "SIGTERM", ": shutting down"));
  (*server)->Shutdown(absl::Seconds(10));
  (*server)->Wait();
  (*server)->logger()->Info("stopped");
  return 0;
}

}  // namespace kcnet::server
