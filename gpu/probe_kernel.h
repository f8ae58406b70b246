// A one-thread kernel that writes a known value and reads it back: proves the
// device runs this binary's SASS/PTX. Returns a cudaError_t as int.
#ifndef KVRECALL_GPU_PROBE_KERNEL_H_
#define KVRECALL_GPU_PROBE_KERNEL_H_

namespace kvrecall {
int LaunchProbeKernel();
}

#endif  // KVRECALL_GPU_PROBE_KERNEL_H_
