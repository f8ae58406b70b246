// Little-endian fixed-width encoding helpers for on-disk and wire formats.
#ifndef KVRECALL_CODEC_BYTES_H_
#define KVRECALL_CODEC_BYTES_H_

#include <cstdint>
#include <cstring>
#include <string>

namespace kvrecall {

template <typename T>
inline void StoreLE(uint8_t* p, T v) {
  static_assert(sizeof(T) <= 8, "");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(u >> (8 * i));
}

template <typename T>
inline T LoadLE(const uint8_t* p) {
  static_assert(sizeof(T) <= 8, "");
  uint64_t u = 0;
  for (size_t i = 0; i < sizeof(T); ++i) u |= static_cast<uint64_t>(p[i]) << (8 * i);
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

template <typename T>
inline void AppendLE(std::string* out, T v) {
  uint8_t b[sizeof(T)];
  StoreLE<T>(b, v);
  out->append(reinterpret_cast<const char*>(b), sizeof(T));
}

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_BYTES_H_
