// Photos for the attachments fault test and benchmark: random bytes behind a JPEG (JFIF)
// header and ending with the JPEG end marker, so that checks by magic bytes accept them;
// deterministic from a seed, so that a test knows a device's photo without reading it back.
//
// Thread-safety: pure functions.
#ifndef KCNET_TESTS_FAULT_PHOTO_UTIL_H_
#define KCNET_TESTS_FAULT_PHOTO_UTIL_H_

#include <cstdint>
#include <random>
#include <string>

namespace kcnet::fault {

// `size` (>= 24) bytes: a JFIF header, random bytes from `seed`, then FF D9.
inline std::string MakeJpeg(int64_t size, uint64_t seed) {
  static const char kHeader[] =
      "\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00";
  std::string photo(kHeader, sizeof(kHeader) - 1);
  photo.reserve(static_cast<size_t>(size));
  std::mt19937_64 rng(seed);
  while (static_cast<int64_t>(photo.size()) + 8 <= size - 2) {
    const uint64_t r = rng();
    photo.append(reinterpret_cast<const char*>(&r), 8);
  }
  while (static_cast<int64_t>(photo.size()) < size - 2) photo.push_back('\x5a');
  photo += "\xFF\xD9";
  return photo;
}

// Photo `n` of device `device` in the fault test: 150-600 KiB (so that cuts fall before,
// at and after the 256 KiB commit interval), different for every (device, n).
inline std::string PhotoBytes(int device, int64_t n) {
  const uint64_t seed =
      (static_cast<uint64_t>(device) << 32) ^ static_cast<uint64_t>(n) ^ 0x9e3779b97f4a7c15ULL;
  std::mt19937_64 rng(seed);
  const int64_t size = 150 * 1024 + static_cast<int64_t>(rng() % (450 * 1024));
  return MakeJpeg(size, seed);
}

}  // namespace kcnet::fault

#endif  // KCNET_TESTS_FAULT_PHOTO_UTIL_H_
