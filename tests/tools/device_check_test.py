"""tools/device_bundle.sh --assemble + tools/device_check.sh on this (GPU-less) machine, the way a
GPU machine runs them but without Bazel in the picture: a bundle is laid out from the programs in
this test's runfiles, then device_check.sh runs under `env -i` (PATH=/usr/bin:/bin, empty
LD_LIBRARY_PATH) against it. Checks the plumbing (docs/gpu.md): every library comes from the
bundle or the machine's glibc/CUDA, CPU steps pass, GPU steps SKIP with the programs' own "no
CUDA device" reasons, the output folder holds the few files a device call brings back, a failing
step does not stop the rest, and the time budget cuts steps instead of the whole run.

Run by Bazel (tests/tools:device_check_test); by hand from the runfiles root only.
"""
import os
import subprocess
import tarfile
import tempfile
import unittest

ROOT = os.getcwd()  # the runfiles root (tests/run_python.sh)
TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp(prefix="device_check_test_")

BINS = ["//server:memserve", "//clients/cli:memserve-cli", "//clients/loadgen:memserve-loadgen",
        "//tests/bench:decode_bench", "//kernels:cuda_devices", "//tests/bench:cuda_ceilings"]
TESTS = ["//kernels:value_gather_test"]


def pkg_path(label):
    pkg, name = label[2:].split(":")
    return f"{pkg}/{name}"


def make_bundle(out):
    """The bundle of the programs present in the runfiles (the CUDA ones only with a toolkit)."""
    lines = []
    for label in BINS:
        p = pkg_path(label)
        if os.path.exists(p):
            lines.append(f"bin\t{label}\t{p}\t{os.path.join(ROOT, p)}")
    for label in TESTS:
        p = pkg_path(label)
        if os.path.exists(p):
            lines.append(f"test\t{label}\t{p}\t{os.path.join(ROOT, p)}\t-\t")
    lst = os.path.join(TMP, "bundle.list")
    with open(lst, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["tools/device_bundle.sh", "--assemble", lst, out], check=True)


def run_check(bundle, logs, **env):
    clean = {"PATH": "/usr/bin:/bin", "HOME": TMP, "LD_LIBRARY_PATH": "", "TMPDIR": TMP,
             "MEMSERVE_BUNDLE_DIR": bundle, **env}
    r = subprocess.run(["env", "-i"] + [f"{k}={v}" for k, v in clean.items()] +
                       ["tools/device_check.sh", logs],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    print(r.stdout)
    return r


def steps(summary):
    """{step name: (status, detail)} from summary.txt."""
    out = {}
    for line in summary.splitlines():
        parts = line.split()
        for i, w in enumerate(parts):
            if w in ("PASS", "SKIP", "FAIL") and i > 0:
                detail = line.split(w, 1)[1].strip().split(None, 1)
                out[" ".join(parts[:i])] = (w, detail[1] if len(detail) > 1 else "")
                break
    return out


class DeviceCheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bundle = os.path.join(TMP, "bundle")
        make_bundle(cls.bundle)
        cls.logs = os.path.join(TMP, "logs")
        cls.result = run_check(cls.bundle, cls.logs)
        with open(os.path.join(cls.logs, "summary.txt")) as f:
            cls.summary = f.read()
        cls.steps = steps(cls.summary)
        cls.have_cuda = os.path.exists("tests/bench/cuda_ceilings")

    def test_exit_code_and_totals(self):
        self.assertEqual(self.result.returncode, 0, self.summary)
        self.assertRegex(self.summary, r"total: \d+ pass, \d+ skip, 0 fail")

    def test_cpu_steps_pass(self):
        for name in ("facts", "libs", "e2e_cpu", "decode_bench_cpu"):
            self.assertEqual(self.steps[name][0], "PASS", (name, self.steps.get(name)))
        self.assertIn("every library found in the bundle", self.steps["libs"][1])
        self.assertIn("Draenddron", self.steps["e2e_cpu"][1])
        self.assertIn("memory_plan=host", self.steps["e2e_cpu"][1])
        self.assertIn("loadgen 32/32 ok", self.steps["e2e_cpu"][1])

    def test_gpu_steps_skip_with_the_reason(self):
        # The programs' own one-line errors (today: no CUDA backend in this build; with the
        # backend: no CUDA device).
        status, detail = self.steps["e2e_cuda"]
        self.assertEqual(status, "SKIP")
        self.assertRegex(detail, r"(?i)error:? .*cuda")
        status, detail = self.steps["decode_bench_cuda"]
        self.assertEqual(status, "SKIP")
        self.assertRegex(detail, r"(?i)error:? .*cuda")
        self.assertEqual(self.steps["make_pkplus"][0], "SKIP")
        self.assertEqual(self.steps["torch_decode"][0], "SKIP")
        # The product-key lab, its PyTorch twin and decode_bench on the legacy kernels.
        for name in ("pk_lab", "torch_pk_lookup", "decode_bench_cuda_legacy"):
            self.assertEqual(self.steps[name][0], "SKIP", (name, self.steps.get(name)))
        # Issue 13's measurements (the memory pool's host and sharded placements).
        for name in ("pool_host", "pool_sharded"):
            self.assertEqual(self.steps[name], ("SKIP", "no 373M model (make_pkplus did not run)"))
        self.assertEqual(self.steps["pool_big_table"], ("SKIP", "no CUDA device"))
        if self.have_cuda:
            status, detail = self.steps["ceilings"]
            self.assertEqual(status, "SKIP")
            self.assertIn("no CUDA device", detail)
            status, detail = self.steps["test //kernels:value_gather_test"]
            self.assertEqual(status, "SKIP")
            self.assertRegex(detail, r"\d+ passed, \d+ skipped: .*CUDA")

    def test_few_output_files(self):
        # A device call brings back at most 8 files.
        files = sorted(os.listdir(self.logs))
        self.assertEqual(files, ["all.log", "report.md", "steps.tar.gz", "summary.txt"])
        with tarfile.open(os.path.join(self.logs, "steps.tar.gz")) as t:
            names = t.getnames()
        self.assertIn("steps/e2e_cpu.log", names)
        with open(os.path.join(self.logs, "report.md")) as f:
            report = f.read()
        self.assertIn("not measured", report)

    def test_failing_step_does_not_stop_the_rest(self):
        # A bundle missing a library: libs fails (the library is found outside the bundle, which
        # a bare GPU machine would not have); the next step still runs.
        broken = os.path.join(TMP, "broken")
        subprocess.run(["cp", "-a", self.bundle, broken], check=True)
        libs = sorted(f for f in os.listdir(os.path.join(broken, "lib")) if "grpc++" in f)
        self.assertTrue(libs, "the bundle carries no libgrpc++")
        os.unlink(os.path.join(broken, "lib", libs[0]))
        logs = os.path.join(TMP, "logs_broken")
        r = run_check(broken, logs, DEVICE_CHECK_ONLY="^(libs|e2e_cpu)$")
        self.assertEqual(r.returncode, 1)
        with open(os.path.join(logs, "summary.txt")) as f:
            s = steps(f.read())
        self.assertEqual(sorted(s), ["e2e_cpu", "libs"])
        self.assertEqual(s["libs"][0], "FAIL")
        self.assertIn("not from the bundle", s["libs"][1])
        self.assertIn(libs[0], s["libs"][1])
        self.assertEqual(s["e2e_cpu"][0], "PASS")

    def test_spent_budget_skips_steps(self):
        logs = os.path.join(TMP, "logs_budget")
        r = run_check(self.bundle, logs, DEVICE_CHECK_BUDGET_S="9")
        self.assertEqual(r.returncode, 0)
        with open(os.path.join(logs, "summary.txt")) as f:
            s = steps(f.read())
        self.assertEqual(s["facts"], ("SKIP", "the check's time budget (9 s) is spent"))
        self.assertEqual(s["decode_bench_cpu"][0], "SKIP")
        self.assertTrue(os.path.exists(os.path.join(logs, "report.md")))

if __name__ == "__main__":
    unittest.main()
