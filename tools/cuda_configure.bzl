"""Repository rule exposing the local CUDA toolkit as @local_cuda.

Looks for nvcc under $CUDA_PATH (default /usr/local/cuda). When found, the
repository offers :cudart, :cudart_static and :cublas plus defs.bzl with
HAS_CUDA = True and NVCC = <path>. When absent it still exists, with
HAS_CUDA = False, so BUILD files can skip CUDA targets instead of failing.
"""

def _cuda_configure_impl(ctx):
    cuda_path = ctx.os.environ.get("CUDA_PATH", "/usr/local/cuda")
    nvcc = ctx.path(cuda_path + "/bin/nvcc")
    if not nvcc.exists:
        ctx.file("defs.bzl", "HAS_CUDA = False\nNVCC = \"\"\nCUDA_PATH = \"\"\n")
        ctx.file("BUILD", "# No CUDA toolkit found at %s.\n" % cuda_path)
        return
    ctx.symlink(cuda_path, "cuda")
    ctx.file("defs.bzl", "HAS_CUDA = True\nNVCC = \"%s\"\nCUDA_PATH = \"%s\"\n" % (nvcc, cuda_path))
    lib = cuda_path + "/lib64"
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "headers",
    # nv/ holds extensionless headers (nv/target) that cuda_fp16.h, and so
    # cublas_v2.h, include.
    hdrs = glob(["cuda/include/**/*.h", "cuda/include/**/*.hpp", "cuda/include/nv/**"]),
    includes = ["cuda/include"],
)

# Dynamic CUDA runtime (rpath to the toolkit).
cc_library(
    name = "cudart",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcudart"],
    deps = [":headers"],
)

# Static CUDA runtime: binaries that run on a GPU machine without the toolkit.
cc_library(
    name = "cudart_static",
    srcs = ["cuda/lib64/libcudart_static.a"],
    linkopts = ["-ldl", "-lrt", "-lpthread"],
    deps = [":headers"],
)

cc_library(
    name = "cublas",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcublasLt", "-lcublas"],
    deps = [":headers"],
)
""".format(lib = lib))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_PATH"],
    local = True,
)
