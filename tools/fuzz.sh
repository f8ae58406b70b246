#!/usr/bin/env bash
# Builds a libFuzzer target with clang (-fsanitize=fuzzer,address,undefined)
# and runs it for a number of seconds.
#   tools/fuzz.sh container [seconds=60]
#   tools/fuzz.sh list
# Corpus and crash artifacts go to .fuzz/<target>/ (git-ignored). Exits
# non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

ABSL_LIBS="-labsl_status -labsl_statusor -labsl_str_format_internal -labsl_strings
  -labsl_strings_internal -labsl_cord -labsl_cordz_info -labsl_cord_internal
  -labsl_cordz_functions -labsl_cordz_handle -labsl_raw_hash_set -labsl_hash -labsl_city
  -labsl_low_level_hash -labsl_hashtablez_sampler -labsl_exponential_biased
  -labsl_synchronization -labsl_graphcycles_internal -labsl_stacktrace -labsl_symbolize
  -labsl_debugging_internal -labsl_demangle_internal -labsl_malloc_internal -labsl_time
  -labsl_civil_time -labsl_time_zone -labsl_strerror -labsl_bad_optional_access
  -labsl_bad_variant_access -labsl_base -labsl_spinlock_wait -labsl_int128
  -labsl_throw_delegate -labsl_raw_logging_internal -labsl_log_severity"

# target -> sources (the fuzzer entry point first).
declare -A SRCS=(
  [container]="codec/container_fuzzer.cc codec/container.cc codec/kv_layout.cc codec/rope.cc common/crc32c.cc common/hash.cc common/hash_avx2.cc"
  [codec]="codec/codec_fuzzer.cc codec/codec.cc codec/attention.cc codec/kivi.cc codec/gear.cc codec/squat.cc codec/commvq.cc
    codec/group_quant.cc codec/half.cc codec/linalg.cc codec/container.cc codec/kv_layout.cc codec/rope.cc common/crc32c.cc common/hash.cc common/hash_avx2.cc
    common/status.cc"
  [index]="index/index_fuzzer.cc index/retrieval_index.cc index/indexes.cc codec/codec.cc codec/attention.cc codec/kivi.cc codec/gear.cc
    codec/squat.cc codec/commvq.cc codec/group_quant.cc codec/half.cc codec/container.cc codec/linalg.cc codec/kv_layout.cc
    codec/rope.cc common/crc32c.cc common/hash.cc common/hash_avx2.cc common/status.cc"
  [protocol]="store/protocol_fuzzer.cc store/protocol.cc common/hash.cc common/hash_avx2.cc"
)

target="${1:-}"
secs="${2:-60}"
if [ -z "$target" ] || [ "$target" = list ]; then
  echo "fuzz targets: ${!SRCS[*]}"
  exit 0
fi
[ -n "${SRCS[$target]:-}" ] || { echo "unknown fuzz target '$target' (have: ${!SRCS[*]})" >&2; exit 2; }

EXTRA_LIBS=""
case "$target" in index|codec) EXTRA_LIBS="-lfaiss -fopenmp -llapack -lblas" ;; esac
out=".fuzz/$target"
mkdir -p "$out/corpus" "$out/artifacts"
bin="$out/${target}_fuzzer"
echo "building $bin" >&2
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I. ${SRCS[$target]} -o "$bin" $ABSL_LIBS -lxxhash $EXTRA_LIBS
# Seed the corpus with valid inputs where the target has a seeder.
if [ -x "tools/fuzz_seed_$target.sh" ]; then "tools/fuzz_seed_$target.sh" "$out/corpus"; fi
echo "fuzzing $target for ${secs}s" >&2
"$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
  -max_len=65536 "$out/corpus"
