// The command line of kcnet-server:
//
//   kcnet-server --data_dir=DIR [--listen=HOST:PORT] [--log_format=text|json]
//                [--tls_cert=PEM --tls_key=PEM | --insecure] [--reflection=false]
//                [--storage_threads=N]
//
// Off loopback (anything but 127.0.0.0/8, [::1], localhost) it serves TLS, or plaintext
// only when told --insecure, which it warns about (kcnet_server.h).
//
// Starts a KcnetServer, prints "kcnet-server listening on HOST:PORT" on stdout (the
// actual port, also when --listen asked for port 0) once it accepts calls, and runs until
// SIGTERM or SIGINT, which shut it down gracefully (calls in flight get up to 10 s) and
// exit 0. A bad command line prints one line on stderr and exits 2; a server that cannot
// start prints one line and exits 1.
//
// Thread-safety: RunServerCli() is the program; call it once, from main().
#ifndef KCNET_SERVER_APP_SERVER_CLI_H_
#define KCNET_SERVER_APP_SERVER_CLI_H_

namespace kcnet::server {

// Runs kcnet-server and returns its exit code.
int RunServerCli(int argc, char** argv);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_APP_SERVER_CLI_H_
