"""cuda_library: .cu files compiled by /usr/local/cuda/bin/nvcc under Bazel 4.

Each .cu becomes one PIC object via a genrule; the objects go into an ordinary
cc_library. Only buildable with --config=cuda (--define=cuda=1); otherwise the
target is incompatible, and `bazel build/test //...` skip it (and everything
that depends on it) instead of failing on a machine without CUDA.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

# sm_90 (H100/H200) SASS + compute_90 PTX for forward compatibility.
DEFAULT_CUDA_ARCH_FLAGS = [
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]

CUDA_ONLY = select({
    "//third_party/cuda:enabled": [],
    "//conditions:default": ["@platforms//:incompatible"],
})

def cuda_library(
        name,
        srcs,
        hdrs = [],
        deps = [],
        nvcc_flags = [],
        arch_flags = DEFAULT_CUDA_ARCH_FLAGS,
        **kwargs):
    """A cc_library made of nvcc-compiled .cu files.

    Args:
      name: target name.
      srcs: .cu files and the .cuh/.h headers they include.
      hdrs: public headers (the C++-visible host API of the kernels).
      deps: cc deps (their headers are not passed to nvcc: list headers the
        .cu files include in srcs or hdrs).
      nvcc_flags: extra nvcc flags.
      arch_flags: -gencode flags.
      **kwargs: passed to the cc_library.
    """
    cu_srcs = [s for s in srcs if s.endswith(".cu")]
    other = [s for s in srcs if not s.endswith(".cu")]
    objs = []
    for src in cu_srcs:
        obj = "_cuda_objs/%s/%s.o" % (name, src[:-len(".cu")])
        objs.append(obj)
        native.genrule(
            name = "%s_nvcc_%s" % (name, src.replace("/", "_").replace(".", "_")),
            srcs = [src] + other + hdrs,
            outs = [obj],
            cmd = " ".join([
                NVCC,
                "-ccbin=/usr/bin/g++",
                "-std=c++17",
                "-O3",
                "-Xcompiler=-fPIC",
                "-I.",
                "-I$(GENDIR)",
            ] + arch_flags + nvcc_flags + [
                "-c $(location %s)" % src,
                "-o $@",
            ]),
            message = "nvcc " + src,
            target_compatible_with = CUDA_ONLY,
            visibility = ["//visibility:private"],
        )
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["//third_party/cuda:cudart_static"],
        # cudart_static's symbols must resolve at the final executable link:
        # never turn these objects into a separate .so.
        linkstatic = True,
        target_compatible_with = CUDA_ONLY,
        **kwargs
    )
