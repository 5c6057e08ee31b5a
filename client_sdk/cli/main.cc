// kcnet: the field tool (see commands.h); main() alone.
#include <unistd.h>

#include <climits>
#include <string>
#include <vector>

#include "client_sdk/cli/commands.h"

int main(int argc, char** argv) {
  char self[PATH_MAX] = {};
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  const std::string self_path = n > 0 ? std::string(self, static_cast<size_t>(n)) : argv[0];
  std::vector<std::string> args(argv + 1, argv + argc);
  return kcnet::cli::RunKcnet(args, self_path);
}
