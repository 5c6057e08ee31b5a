// SHA-256 and CRC32C of attachments (client_sdk/attachment_digest.h) against published
// test vectors, whole and fed in pieces; the magic-number check of media types.
#include "client_sdk/attachment_digest.h"

#include <string>

#include "absl/strings/escaping.h"
#include "client_sdk/attachment_queue.h"
#include "gtest/gtest.h"
#include "sync/crc32c.h"

namespace kcnet::sdk {
namespace {

TEST(AttachmentDigestTest, Sha256MatchesFips180Vectors) {
  EXPECT_EQ(Sha256HexOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256HexOf("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256HexOf("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256HexOf(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(AttachmentDigestTest, Sha256InPiecesEqualsWhole) {
  std::string data;
  for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>(i * 31 + 7));
  for (size_t step : {1u, 3u, 63u, 64u, 65u, 1000u}) {
    Sha256 sha;
    for (size_t at = 0; at < data.size(); at += step) sha.Update(data.substr(at, step));
    EXPECT_EQ(absl::BytesToHexString(sha.Finish()), Sha256HexOf(data)) << "step " << step;
  }
}

TEST(AttachmentDigestTest, Crc32cMatchesTheCastagnoliCheckValue) {
  EXPECT_EQ(sync::Crc32c("123456789"), 0xE3069283u);  // the standard check value
  EXPECT_EQ(sync::Crc32c(""), 0u);
  EXPECT_EQ(sync::Crc32c(std::string(32, '\0')), 0x8A9136AAu);          // RFC 3720 B.4
  EXPECT_EQ(sync::Crc32c("56789", sync::Crc32c("1234")), 0xE3069283u);  // continued
}

TEST(AttachmentDigestTest, MediaTypeComesFromTheMagicNumbers) {
  EXPECT_EQ(SniffMediaType("\xFF\xD8\xFF\xE0rest"), "image/jpeg");
  EXPECT_EQ(SniffMediaType(std::string("\x89PNG\r\n\x1a\n", 8) + "IHDR"), "image/png");
  EXPECT_EQ(SniffMediaType(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16)), "image/webp");
  EXPECT_EQ(SniffMediaType("%PDF-1.7"), "application/pdf");
  EXPECT_EQ(SniffMediaType("GIF89a"), "");
  EXPECT_EQ(SniffMediaType("photo.jpg"), "");  // a name is not content
  EXPECT_EQ(SniffMediaType(""), "");
}

}  // namespace
}  // namespace kcnet::sdk
