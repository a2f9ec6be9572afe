"""cuda_library: compiles .cu files with nvcc (sm_80 and sm_90 SASS plus
compute_90 PTX) into objects and wraps them in a cc_library.

Without a CUDA toolkit (@local_cuda//:defs.bzl HAS_CUDA = False) the macro
creates nothing; BUILD files guard CUDA-only targets with HAS_CUDA.
"""

load("@local_cuda//:defs.bzl", "HAS_CUDA", "NVCC")

NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
    "-Xcompiler=-fPIC",
    "-Xcompiler=-Wall",
    # Warnings are errors, from nvcc's front end and from the host compiler
    # (as --copt=-Werror in .bazelrc does for C++).
    "-Xcompiler=-Werror",
    "--Werror=all-warnings",
    "--expt-relaxed-constexpr",
]

def cuda_library(name, srcs, hdrs = [], deps = [], cuda_hdrs = [], nvcc_flags = [], **kwargs):
    """A cc_library whose .cu sources are compiled by nvcc.

    Args:
      name: target name.
      srcs: .cu files (and optionally .cc/.h files compiled by the host compiler).
      hdrs: public headers (plain C++, no CUDA syntax).
      deps: cc deps of the host-side code.
      cuda_hdrs: extra headers (.cuh/.h) the .cu files include.
      nvcc_flags: extra nvcc flags.
      **kwargs: passed to the cc_library.
    """
    if not HAS_CUDA:
        return
    objs = []
    host_srcs = []
    for src in srcs:
        if not src.endswith(".cu"):
            host_srcs.append(src)
            continue
        obj = name + "_" + src.replace("/", "_")[:-3] + ".o"
        native.genrule(
            name = obj.replace(".", "_"),
            srcs = [src] + hdrs + cuda_hdrs,
            outs = [obj],
            cmd = "%s %s %s -I. -I$(GENDIR) -c $(location %s) -o $@" % (
                NVCC,
                " ".join(NVCC_FLAGS),
                " ".join(nvcc_flags),
                src,
            ),
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs + host_srcs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart"],
        **kwargs
    )
