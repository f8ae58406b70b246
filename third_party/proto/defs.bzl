"""C++ protobuf + gRPC code generation with Debian's /usr/bin/protoc and
/usr/bin/grpc_cpp_plugin, offline, without @com_google_protobuf."""

def cc_proto_grpc_library(name, srcs, proto_deps = [], deps = [], grpc = True, **kwargs):
    """Generates and compiles <x>.pb.{h,cc} (+ <x>.grpc.pb.{h,cc}) for srcs.

    Args:
      name: name of the resulting cc_library.
      srcs: .proto files of this package.
      proto_deps: .proto files that srcs import (compiled by their own rule).
      deps: cc deps, e.g. the cc_proto_grpc_library of imported protos.
      grpc: also run grpc_cpp_plugin (services); False for messages only.
      **kwargs: passed to the cc_library.
    """
    hdrs = []
    cc_srcs = []
    for src in srcs:
        if not src.endswith(".proto"):
            fail("srcs must be .proto files: " + src)
        base = src[:-len(".proto")]
        hdrs.append(base + ".pb.h")
        cc_srcs.append(base + ".pb.cc")
        if grpc:
            hdrs.append(base + ".grpc.pb.h")
            cc_srcs.append(base + ".grpc.pb.cc")
    cmd = "/usr/bin/protoc -I. -I$(GENDIR) --cpp_out=$(GENDIR)"
    if grpc:
        cmd += (" --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin" +
                " --grpc_out=$(GENDIR)")
    cmd += " " + " ".join(["$(location %s)" % s for s in srcs])
    native.genrule(
        name = name + "_codegen",
        srcs = srcs + proto_deps,
        outs = hdrs + cc_srcs,
        cmd = cmd,
        message = "protoc " + native.package_name(),
        visibility = ["//visibility:private"],
    )
    runtime = ["//third_party:grpc++"] if grpc else ["//third_party:protobuf"]
    native.cc_library(
        name = name,
        srcs = cc_srcs,
        hdrs = hdrs,
        deps = deps + runtime,
        **kwargs
    )
