"""Protobuf and gRPC code generation with Debian's protoc and gRPC plugins.

No rule sets are downloaded: each macro is a genrule running /usr/bin/protoc
(protobuf-compiler 3.21) with the plugins from protobuf-compiler-grpc (1.51).

The package that calls a macro is the proto root: a file `memserve/v1/x.proto`
in package `//proto` is imported by other protos as "memserve/v1/x.proto", its
C++ headers are included as "memserve/v1/x.pb.h" and "memserve/v1/x.grpc.pb.h",
and its Python modules are `memserve.v1.x_pb2` and `memserve.v1.x_pb2_grpc`.
All `srcs` go to one protoc run, so they may import each other; importing a
proto outside `srcs` (other than protobuf's own well-known types in
/usr/include) is not supported.
"""

PROTOC = "/usr/bin/protoc"
GRPC_CPP_PLUGIN = "/usr/bin/grpc_cpp_plugin"
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

def _proto_root():
    # The package directory relative to the execution root (the main
    # repository only).
    return native.package_name() or "."

def _stems(srcs):
    for src in srcs:
        if not src.endswith(".proto"):
            fail("proto srcs must end in .proto: " + src)
    return [src[:-len(".proto")] for src in srcs]

def cc_grpc_library(name, srcs, deps = [], visibility = None, testonly = False):
    """C++ messages and gRPC service code for `srcs`, as a cc_library `name`.

    Args:
      name: the cc_library; its genrule is `name + "_gen"`.
      srcs: .proto files relative to this package (the proto root).
      deps: more cc deps of the generated code.
      visibility: of the cc_library.
      testonly: as for any rule.
    """
    stems = _stems(srcs)
    hdrs = [s + ext for s in stems for ext in [".pb.h", ".grpc.pb.h"]]
    cc_srcs = [s + ext for s in stems for ext in [".pb.cc", ".grpc.pb.cc"]]
    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = hdrs + cc_srcs,
        cmd = " ".join([
            PROTOC,
            "-I" + _proto_root(),
            "--cpp_out=$(RULEDIR)",
            "--grpc_out=$(RULEDIR)",
            "--plugin=protoc-gen-grpc=" + GRPC_CPP_PLUGIN,
            "$(SRCS)",
        ]),
        message = "protoc (C++, gRPC) " + name,
        visibility = ["//visibility:private"],
        testonly = testonly,
    )
    native.cc_library(
        name = name,
        srcs = cc_srcs,
        hdrs = hdrs,
        # Generated code includes its headers as "memserve/v1/x.pb.h", i.e.
        # relative to the proto root, which is this package.
        includes = ["."],
        deps = deps + [
            "//third_party:grpc",
            "//third_party:protobuf",
        ],
        visibility = visibility,
        testonly = testonly,
    )

def py_grpc_sources(name, srcs, visibility = None, testonly = False):
    """Python messages (`x_pb2.py`, type stubs `x_pb2.pyi`) and gRPC stubs
    (`x_pb2_grpc.py`) for `srcs`, as a filegroup `name`.

    The modules import each other as `memserve.v1.x_pb2`, so put this
    package's directory (in runfiles: `<workspace>/<package>`) on sys.path.
    They need python3-protobuf >= 3.20 and python3-grpcio (Debian 12: 3.21
    and 1.51).

    Args:
      name: the filegroup; its genrule is `name + "_gen"`.
      srcs: .proto files relative to this package (the proto root).
      visibility: of the filegroup.
      testonly: as for any rule.
    """
    stems = _stems(srcs)
    outs = [s + ext for s in stems for ext in ["_pb2.py", "_pb2.pyi", "_pb2_grpc.py"]]
    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = outs,
        cmd = " ".join([
            PROTOC,
            "-I" + _proto_root(),
            "--python_out=$(RULEDIR)",
            "--pyi_out=$(RULEDIR)",
            "--grpc_python_out=$(RULEDIR)",
            "--plugin=protoc-gen-grpc_python=" + GRPC_PYTHON_PLUGIN,
            "$(SRCS)",
        ]),
        message = "protoc (Python, gRPC) " + name,
        visibility = ["//visibility:private"],
        testonly = testonly,
    )
    native.filegroup(
        name = name,
        srcs = outs,
        visibility = visibility,
        testonly = testonly,
    )
