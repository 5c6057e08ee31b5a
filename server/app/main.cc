// kcnet-server: the kcnet gRPC server (see server_cli.h for its flags and behaviour).
#include "server/app/server_cli.h"

int main(int argc, char** argv) { return kcnet::server::RunServerCli(argc, argv); }
