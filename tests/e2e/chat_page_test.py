"""The chat page (GET /, server/http/chat.html) in a real headless Chromium
against a real `memserve serve --http_listen` on the demo model: the page
loads the model's name, a question typed into it streams its answer token by
token, the conversation is kept for the next turn, tokens/s are shown, and
Stop ends a reply (the server cancels the request and frees its KV blocks).

Chromium is driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages separated by NUL bytes on file
descriptors 3 and 4), so nothing beyond Python's standard library is needed.

Run: bazel test //tests/e2e:chat_page_test, or by hand (the screenshot in
docs/img/chat.png comes from this):
  /usr/bin/python3 tests/e2e/chat_page_test.py --memserve bazel-bin/server/memserve \
      --screenshot docs/img/chat.png
"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

QUESTION = "What is the capital of Batourkor?"
CAPITAL = "The capital of Batourkor is"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def take_screenshot_arg():
    argv = sys.argv
    if "--screenshot" in argv:
        i = argv.index("--screenshot")
        path = os.path.abspath(argv[i + 1])
        del argv[i:i + 2]
        return path
    return None


SCREENSHOT = take_screenshot_arg()


class Browser:
    """A headless Chromium and one page of it, driven over a DevTools pipe."""

    def __init__(self, width=920, height=640):
        binary = next((c for c in CHROMIUM_CANDIDATES if os.path.exists(c)), None)
        if binary is None:
            raise RuntimeError("chromium not found (tools/setup.sh installs Debian's chromium)")
        self.dir = harness.tmpdir("chromium_")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        env = dict(os.environ, HOME=self.dir, XDG_CONFIG_HOME=self.dir, XDG_CACHE_HOME=self.dir)
        self.log = open(os.path.join(self.dir, "chromium.log"), "wb")
        # The pipes go to fds 3 and 4 by bash's redirections (dash takes only
        # one-digit fds), not by a preexec_fn, which can deadlock the child of a
        # process with threads (gRPC's): Popen then waits for it forever.
        redirect = 'exec "$0" "$@" 3<&%d 4>&%d %d<&- %d>&-' % (
            to_browser_r, from_browser_w, to_browser_r, from_browser_w)
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", redirect, binary, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update",
             "--disable-crash-reporter", "--disable-breakpad", "--mute-audio",
             "--hide-scrollbars", "--force-device-scale-factor=1",
             "--window-size=%d,%d" % (width, height), "--user-data-dir=" + self.dir,
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env,
            pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 1
        self._buffer = b""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session=True)

    def _read_message(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium; its log:\n" + self.log_tail())
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                data = os.read(self._from_browser, 1 << 20)
                if not data:
                    raise RuntimeError("Chromium closed the pipe; its log:\n" + self.log_tail())
                self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session=False, timeout=30):
        """Sends one DevTools command; returns its result (events are dropped)."""
        message = {"id": self._next_id, "method": method, "params": params or {}}
        self._next_id += 1
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError("%s failed: %s" % (method, reply["error"]))
                return reply.get("result", {})

    def js(self, expression):
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError("%s: %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    def wait_js(self, expression, timeout=30, what=None, poll=0.02):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("%s not reached in %.0f s" % (what or expression, timeout))
            time.sleep(poll)

    def navigate(self, url):
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_js("document.readyState === 'complete'", what="page load")

    def type_and_enter(self, text):
        self.js("document.getElementById('input').focus()")
        self.call("Input.insertText", {"text": text}, session=True)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent",
                      {"type": kind, "key": "Enter", "code": "Enter",
                       "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}, session=True)

    def click(self, element_id):
        self.js("document.getElementById(%s).click()" % json.dumps(element_id))

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def log_tail(self, lines=20):
        self.log.flush()
        with open(os.path.join(self.dir, "chromium.log"), "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LAST_REPLY = "[...document.querySelectorAll('.msg.assistant')].pop()"


class ChatPageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # 15 ms per engine step, so that a reply takes long enough to watch it stream.
        cls.srv = harness.Server("--debug_step_delay", "15ms", http=True,
                                 name="chat_page").start()
        cls.browser = Browser()
        cls.url = "http://127.0.0.1:%d/" % cls.srv.http_port

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        rc = cls.srv.stop(timeout=30)
        if rc != 0:
            raise AssertionError("server exit code %s:\n%s" % (rc, cls.srv.stderr_tail()))

    def ask(self, text):
        """Types `text`, waits for the streamed reply; returns (reply text,
        the distinct partial texts seen while it streamed)."""
        b = self.browser
        before = b.js("document.querySelectorAll('.msg.assistant').length")
        # Every text the reply bubble shows, recorded in the page as it changes.
        b.js("""(() => { window.replyStates = [];
                  if (!window.replyObserver) {
                    window.replyObserver = new MutationObserver(() => {
                      const div = %s;
                      if (div && div.firstChild) window.replyStates.push(div.firstChild.data);
                    });
                    window.replyObserver.observe(document.getElementById('messages'),
                        {subtree: true, childList: true, characterData: true});
                  }
                  return true; })()""" % LAST_REPLY)
        b.type_and_enter(text)
        b.wait_js("document.querySelectorAll('.msg.assistant').length > %d" % before,
                  what="a reply bubble")
        b.wait_js("(%s).dataset.done !== undefined" % LAST_REPLY, what="the reply's end")
        reply = b.js("(%s).firstChild.data" % LAST_REPLY)
        return reply, set(b.js("window.replyStates")) - {reply, ""}

    def test_chat_streams_keeps_the_conversation_and_stops(self):
        b = self.browser
        b.navigate(self.url)
        model = b.wait_js("document.getElementById('model').textContent.startsWith('demo') && "
                          "document.getElementById('model').textContent", what="model name")
        self.assertEqual(model, "demo (context 128 tokens)")
        b.js("document.getElementById('max_tokens').value = 20")

        # The question of tools/run_demo.sh as the demo model knows it (a completion model:
        # the "raw" chat template hands it the conversation's text).
        reply, partial = self.ask(CAPITAL)
        print("page: %r -> %r (%d partial states seen)" % (CAPITAL, reply, len(partial)))
        self.assertEqual(reply, " Draenddron.")
        self.assertGreater(len(partial), 0, "the answer appeared all at once, not streamed")
        self.assertEqual(b.js("(%s).dataset.done" % LAST_REPLY), "stop")
        stats = b.js("document.getElementById('stats').textContent")
        self.assertRegex(stats, r"^13 tokens, [0-9.]+ tokens/s, first token after \d+ ms$")
        self.assertEqual(b.js("conversation.length"), 2)

        # A question: the conversation goes along with it.
        reply, _ = self.ask(QUESTION)
        print("page: %r -> %r" % (QUESTION, reply))
        self.assertEqual(b.js("conversation.length"), 4)
        self.assertEqual(b.js("conversation.map(m => m.role).join(',')"),
                         "user,assistant,user,assistant")
        self.assertEqual(b.js("document.querySelectorAll('.msg.user').length"), 2)
        self.assertEqual(b.js("document.querySelectorAll('.msg.error').length"), 0)
        if SCREENSHOT:
            b.screenshot(SCREENSHOT)
            print("screenshot: %s" % SCREENSHOT)

        # Stop: a long reply is cut; the server frees the request.
        b.click("clear")
        self.srv.wait_idle()
        b.js("document.getElementById('max_tokens').value = 100")
        # The demo model may end "Hello" early; generate on past its EOS.
        b.js("""(() => { const real = window.fetch; window.fetch = (url, init) => {
                  if (init && init.body) {
                    const body = JSON.parse(init.body); body.ignore_eos = true;
                    init.body = JSON.stringify(body);
                  }
                  return real(url, init); }; return true; })()""")
        b.type_and_enter("Hello")
        b.wait_js("(%s) && (%s).firstChild.data.length > 2" % (LAST_REPLY, LAST_REPLY),
                  what="the first tokens")
        self.assertEqual(self.srv.status().running, 1)
        b.click("stop")
        b.wait_js("(%s).dataset.done === 'stopped'" % LAST_REPLY, what="stopped")
        self.srv.wait_idle(timeout=2)
        self.assertIn("stopped", b.js("(%s).textContent" % LAST_REPLY))
        self.assertEqual(b.js("conversation.length"), 2)  # the partial reply is kept
        self.assertIsNotNone(self.srv.wait_log("method=/v1/chat/completions status=CANCELLED",
                                               timeout=2))


if __name__ == "__main__":
    harness.main()
