"""The arguments of a test as Bazel passes them, from the script `bazel run --script_path` writes
for it (its last line: `cd RUNFILES && exec EXE ARGS "$@"`). Prints them shell-quoted.

    python3 tools/device_bundle_args.py SCRIPT PKG_PATH     (tools/device_bundle.sh runs it)
"""
import shlex
import sys


def test_args(script_text, exe):
    words = shlex.split(script_text.strip().splitlines()[-1])
    i = next((k for k, w in enumerate(words) if w == exe or w.endswith("/" + exe)), None)
    if i is None:
        raise ValueError(f"cannot find {exe} in the run script:\n{script_text}")
    args = words[i + 1:]
    if args and args[-1] == "$@":
        args = args[:-1]
    return args


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        text = f.read()
    try:
        print(" ".join(shlex.quote(a) for a in test_args(text, argv[2])))
    except ValueError as e:
        print(f"device_bundle: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
