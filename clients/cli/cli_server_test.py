"""memserve-cli against a real `memserve serve` on the demo model (models/demo,
a 128-token context), started by tests/e2e/harness.py:
  - `generate --output jsonl` prints the very lines `memserve generate --output
    jsonl` prints for the same request (one shape, the same defaults);
  - `chat`: Ctrl-C (SIGINT) while a reply streams cancels that reply only, the
    next turn works and keeps the history; Ctrl-C at an empty prompt exits
    130; /reset, /help, /exit; a conversation longer than the context drops
    its oldest turns instead of failing; line editing at a terminal.

Run: bazel test //clients/cli:cli_server_test, or by hand after
`bazel build //server:memserve //clients/cli:memserve-cli //proto:memserve_py //proto:health_py`:
  /usr/bin/python3 clients/cli/cli_server_test.py --memserve bazel-bin/server/memserve \
      --cli bazel-bin/clients/cli/memserve-cli
"""
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402

CLI = None
SRV = None  # a server without artificial delays
SLOW = None  # one that sleeps after every engine step: replies take a while
STEP_DELAY_MS = 50


def setUpModule():
    global SRV, SLOW
    SRV = harness.Server(name="cli").start()
    SLOW = harness.Server("--debug_step_delay", "%dms" % STEP_DELAY_MS, name="slow").start()


def tearDownModule():
    SRV.stop()
    SLOW.stop()


def cli(*args, server=None, stdin=None, timeout=120):
    cmd = [CLI, "--server", "127.0.0.1:%d" % (server or SRV).port] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)


def memserve_generate(*args):
    cmd = [harness.memserve_binary(), "generate", "--model", harness.DEMO_MODEL] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class JsonlTest(unittest.TestCase):
    """One JSONL shape: the server-side and the client-side output agree line
    for line."""

    def check_same(self, *args):
        local = memserve_generate(*args, "--output", "jsonl")
        self.assertEqual(local.returncode, 0, local.stderr)
        remote = cli("generate", *args, "--output", "jsonl", "--nosummary")
        self.assertEqual(remote.returncode, 0, remote.stderr)
        self.assertEqual(remote.stdout.splitlines(), local.stdout.splitlines())
        return [json.loads(line) for line in local.stdout.splitlines()]

    def test_default_flags_give_the_same_lines(self):
        # No sampling flags: the same defaults (greedy; max_tokens as the
        # server's) in both programs.
        fact = harness.load_facts()[0]
        lines = self.check_same("--prompt", fact["prompt"])
        final = lines[-1]
        self.assertEqual(set(final), {"finish_reason", "text", "usage"})
        self.assertEqual(final["finish_reason"], "eos")
        text = "".join(line["text"] for line in lines)
        self.assertTrue(text.startswith(fact["answer"]), (text, fact))
        for token in lines[:-1]:
            self.assertEqual(set(token), {"id", "text", "logprob", "top"})
            self.assertEqual(token["top"], [])

    def test_logprobs_and_stop_string_give_the_same_lines(self):
        fact = harness.load_facts()[1]
        lines = self.check_same("--prompt", fact["prompt"], "--logprobs", "3",
                                "--stop", fact["answer"][2:4])
        final = lines[-1]
        self.assertEqual(final["finish_reason"], "stop")
        self.assertEqual(final["stop_string"], fact["answer"][2:4])
        for token in lines[:-1]:
            self.assertEqual(len(token["top"]), 3)
            for top in token["top"]:
                self.assertEqual(set(top), {"id", "logprob", "text"})
            self.assertEqual(token["top"][0]["id"], token["id"])  # greedy

    def test_length_limit_gives_the_same_lines(self):
        lines = self.check_same("--prompt", "x", "--max_tokens", "40", "--ignore_eos",
                                "--logprobs", "1")
        self.assertEqual(len(lines), 41)
        self.assertEqual(lines[-1]["finish_reason"], "length")
        self.assertEqual(lines[-1]["usage"], {"prompt_tokens": 2, "completion_tokens": 40})


class ChatProcess:
    """memserve-cli chat as a child process: stdout (the replies, JSONL) read
    into `lines` by a thread; stdin and stderr a pipe, or with terminal=True
    one pseudo-terminal whose master end the test types into."""

    def __init__(self, *flags, server, terminal=False):
        cmd = [CLI, "--server", "127.0.0.1:%d" % server.port, "chat", "--output", "jsonl",
               "--nosummary"] + list(flags)
        self.lines = []
        self.screen = ""
        if terminal:
            self.master, slave = os.openpty()

            def controlling_terminal():
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            self.proc = subprocess.Popen(cmd, stdin=slave, stdout=subprocess.PIPE, stderr=slave,
                                         preexec_fn=controlling_terminal)
            os.close(slave)
        else:
            self.master = None
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def type(self, data):
        if self.master is not None:
            os.write(self.master, data)
        else:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def pump(self, seconds=0.0):
        """Collects what the program wrote to the terminal for `seconds`."""
        end = time.monotonic() + seconds
        while self.master is not None:
            ready, _, _ = select.select([self.master], [], [], max(0, end - time.monotonic()))
            if not ready:
                break
            try:
                self.screen += os.read(self.master, 4096).decode("utf-8", "replace")
            except OSError:
                break
            if time.monotonic() >= end:
                break

    def wait_for(self, pred, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("timed out waiting for %s; lines %r, screen %r" %
                                     (what, self.lines, self.screen))
            self.pump(0.02)
            time.sleep(0.01)

    def finals(self):
        return [line for line in self.lines if "finish_reason" in line]

    def wait_exit(self, timeout=30):
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        self.pump(0.1)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        if self.master is not None:
            os.close(self.master)


def raw_prompt_tokens(*contents):
    """Tokens of the demo's "raw" chat prompt: BOS + the contents joined by
    newlines (bytes tokenizer: one token per byte)."""
    return 1 + len("\n".join(contents).encode())


def reply_text(lines):
    return "".join(line["text"] for line in lines)


class ChatInterruptTest(unittest.TestCase):
    """Ctrl-C while a reply streams cancels that reply only."""

    FLAGS = ["--max_tokens", "40", "--ignore_eos"]  # 40 steps of 50 ms

    def partial_reply(self, chat):
        """The text of the cancelled reply: the lines before the 40 tokens and
        the final line of the second one."""
        self.assertEqual(len(chat.finals()), 1)
        self.assertEqual(chat.lines[-1], chat.finals()[0])
        return reply_text(chat.lines[:-41])

    def test_sigint_mid_stream_cancels_the_reply_and_keeps_the_history(self):
        chat = ChatProcess(*self.FLAGS, server=SLOW)
        try:
            chat.type(b"Tell me\n")
            chat.wait_for(lambda: len(chat.lines) >= 2, "the first tokens")
            chat.proc.send_signal(signal.SIGINT)
            chat.wait_for(lambda: SLOW.status().running == 0, "the server to drop the reply")
            self.assertEqual(chat.finals(), [])
            self.assertLess(len(chat.lines), 40)
            chat.type(b"Again\n")
            chat.wait_for(lambda: chat.finals(), "the second reply")
            chat.proc.stdin.close()
            self.assertEqual(chat.wait_exit(), 0)
            stderr = chat.proc.stderr.read().decode()
        finally:
            chat.close()
        self.assertIn("memserve-cli: reply cancelled", stderr)
        partial = self.partial_reply(chat)
        final = chat.finals()[0]
        self.assertEqual(final["usage"]["completion_tokens"], 40)
        # The second prompt holds the first exchange, with the partial reply.
        self.assertEqual(final["usage"]["prompt_tokens"],
                         raw_prompt_tokens("Tell me", partial, "Again"))
        SLOW.wait_idle()

    def test_terminal_editing_history_and_ctrl_c(self):
        chat = ChatProcess(*self.FLAGS, server=SLOW, terminal=True)
        try:
            chat.wait_for(lambda: "> " in chat.screen, "the prompt")
            # Line editing: type "Tll me", go left 5 times, insert "e".
            chat.type(b"Tll me")
            chat.pump(0.2)
            chat.type(b"\x1b[D" * 5 + b"e\r")
            chat.wait_for(lambda: len(chat.lines) >= 2, "the first tokens")
            chat.type(b"\x03")  # Ctrl-C: the terminal sends SIGINT
            chat.wait_for(lambda: "reply cancelled" in chat.screen, "the cancellation")
            chat.wait_for(lambda: chat.screen.rstrip().endswith(">"), "the prompt again")
            # Ctrl-C on a typed line discards the line, not the program.
            chat.type(b"abc")
            chat.pump(0.2)
            chat.type(b"\x03")
            chat.pump(0.3)
            self.assertIsNone(chat.proc.poll(), chat.screen)
            # History: the up arrow brings back "Tell me".
            chat.type(b"\x1b[A\r")
            chat.wait_for(lambda: chat.finals(), "the second reply")
            # Ctrl-C at the empty prompt ends the program.
            chat.wait_for(lambda: chat.screen.rstrip().endswith(">"), "the prompt again")
            chat.type(b"\x03")
            self.assertEqual(chat.wait_exit(), 130, chat.screen)
        finally:
            chat.close()
        self.assertEqual(chat.finals()[0]["usage"]["prompt_tokens"],
                         raw_prompt_tokens("Tell me", self.partial_reply(chat), "Tell me"))
        SLOW.wait_idle()


class ChatCommandsTest(unittest.TestCase):

    def chat(self, stdin, *flags):
        r = cli("chat", "--output", "jsonl", "--nosummary", *flags, stdin=stdin)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        return r, [line for line in lines if "finish_reason" in line]

    def test_reset_help_and_exit(self):
        r, finals = self.chat("Hello\n/help\n/reset\nHello\n/exit\nnot sent\n", "--max_tokens", "8")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/reset", r.stderr)  # the help text
        self.assertIn("memserve-cli: conversation cleared", r.stderr)
        self.assertEqual(len(finals), 2)
        # After /reset the second "Hello" starts a new conversation.
        self.assertEqual(finals[1]["usage"]["prompt_tokens"], raw_prompt_tokens("Hello"))
        self.assertEqual(finals[0], finals[1])

    def test_unknown_command_is_not_sent(self):
        r, finals = self.chat("/frobnicate\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(finals, [])
        self.assertIn("unknown command '/frobnicate'", r.stderr)

    def test_long_conversation_drops_the_oldest_turns(self):
        # The demo's context is 128 tokens: a few facts with their answers
        # outgrow it. Each turn must still succeed, the history trimmed.
        facts = harness.load_facts()[:8]
        stdin = "".join(f["prompt"] + "\n" for f in facts)
        for flags in [[], ["--max_tokens", "24"], ["--system", "Facts."]]:
            with self.subTest(flags=flags):
                r, finals = self.chat(stdin, *flags)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(len(finals), len(facts), r.stderr)
                self.assertRegex(r.stderr, r"memserve-cli: the conversation outgrew the model's "
                                           r"context \(128 tokens\): dropped its \d+ oldest")
                for f in finals:
                    # Room was left for a reply.
                    self.assertLessEqual(f["usage"]["prompt_tokens"], 128 - 24)


if __name__ == "__main__":
    CLI = harness.take_path_arg("--cli")
    harness.main()
