// XXH3-64 compiled for AVX2 (about 3x the SSE2 build Debian ships: 56 vs 19
// GB/s here), used by Checksum64 when the CPU has AVX2. XXH3's output does
// not depend on the vector width; hash_test checks both paths agree.
// GCC only: other compilers (clang for the fuzz builds) use the library.
#include <cstddef>
#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC target("avx2")
#include <immintrin.h>
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>
namespace kvrecall::hash_internal {
bool HaveAvx2Checksum() { return true; }
uint64_t Checksum64Avx2(const void* data, size_t size) { return XXH3_64bits(data, size); }
}  // namespace kvrecall::hash_internal
#else
#include <xxhash.h>
namespace kvrecall::hash_internal {
bool HaveAvx2Checksum() { return false; }
uint64_t Checksum64Avx2(const void* data, size_t size) { return XXH3_64bits(data, size); }
}  // namespace kvrecall::hash_internal
#endif
