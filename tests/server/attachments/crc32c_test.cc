// CRC32C against the standard check values (RFC 3720 appendix B.4 and the "123456789"
// check), and its chaining.
#include "sync/crc32c.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace kcnet::server {
namespace {

TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(sync::Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(sync::Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(sync::Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(sync::Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(sync::Crc32c(""), 0u);
}

TEST(Crc32cTest, ChainsAcrossSplits) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7 + 3));
  for (size_t split : {0, 1, 7, 8, 9, 500, 999, 1000}) {
    EXPECT_EQ(sync::Crc32c(data.substr(split), sync::Crc32c(data.substr(0, split))),
              sync::Crc32c(data))
        << split;
  }
}

// The hardware path (SSE4.2 where the CPU has it) and the tables agree on every length and
// alignment, and the portable one passes the check values too.
TEST(Crc32cTest, HardwareAndTablesAgree) {
  EXPECT_EQ(sync::Crc32cPortable("123456789"), 0xE3069283u);
  std::mt19937 rng(17);
  std::string data(70000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 65536}) {
      const absl::string_view piece = absl::string_view(data).substr(start, n);
      EXPECT_EQ(sync::Crc32c(piece), sync::Crc32cPortable(piece)) << start << " " << n;
      EXPECT_EQ(sync::Crc32c(piece, 0x12345678u), sync::Crc32cPortable(piece, 0x12345678u));
    }
  }
}

}  // namespace
}  // namespace kcnet::server
