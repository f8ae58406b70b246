// CRC32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and
// final xor 0xFFFFFFFF), the checksum of iSCSI, ext4 and RocksDB. It detects
// every burst of up to 32 damaged bits and any 1-3 flipped bits in a chunk of
// a few KiB; other damage slips through with probability 2^-32. On x86-64
// with SSE4.2 it runs on the crc32 instruction, elsewhere from a table; both
// give the same values.
#ifndef KVRECALL_COMMON_CRC32C_H_
#define KVRECALL_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace kvrecall {

uint32_t Crc32c(const void* data, size_t size);

// The CRC32Cs of four buffers of the same size at once (out[i] of p[i]):
// four independent chains keep the crc32 unit busy, about 3x the rate of one
// buffer at a time. For verifying many small chunks.
void Crc32c4(const uint8_t* const p[4], size_t size, uint32_t out[4]);

// The table-driven computation, whatever the CPU; for tests.
uint32_t Crc32cPortable(const void* data, size_t size);

}  // namespace kvrecall

#endif  // KVRECALL_COMMON_CRC32C_H_
