"""system_py_test: a Python test run by Debian's /usr/bin/python3 (which has
torch, numpy, grpcio) from the repository root of its runfiles."""

def system_py_test(name, script, args = [], data = [], size = "medium"):
    """Runs `script` (in this package) with `args`.

    Args:
      name: test name.
      script: the .py file in this package.
      args: command-line arguments ($(location) is expanded).
      data: runfiles the script needs besides itself.
      size: Bazel test size.
    """
    native.sh_test(
        name = name,
        size = size,
        srcs = ["//tests:run_python.sh"],
        args = [native.package_name() + "/" + script] + args,
        data = [script] + data,
    )
