"""An in-process fake memserve server for testing the command-line clients
without a model: MemServe (scripted answers) and grpc.health.v1.Health.

Needs the generated modules (//proto:memserve_py, //proto:health_py) on
sys.path; the caller puts the proto root there.

Generate and Chat stream the reply text one character per token (id = the
character's code), then a final message. Prompts with special meaning:
  "fail:<n>"  stream n tokens, then end with INTERNAL (no final);
  "slow"      sleep 50 ms before each token.
Top_p = 0 is refused with INVALID_ARGUMENT, as a real server does.
"""
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from memserve.v1 import memserve_pb2 as pb
from memserve.v1 import memserve_pb2_grpc as pb_grpc

READINESS = "memserve.v1.MemServe"


class FakeMemServe(pb_grpc.MemServeServicer):

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # every request received, in order
        self.loading = False  # GetModelInfo answers UNAVAILABLE while set
        self.reply = "Hello world"

    def _record(self, request):
        with self.lock:
            self.requests.append(request)

    def _check(self, sampling, context):
        if sampling.HasField("top_p") and sampling.top_p == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "sampling.top_p must be in (0, 1], got 0")

    def _stream(self, text, prompt, sampling, request_id, prompt_tokens, context):
        fail_after = None
        if prompt.startswith("fail:"):
            fail_after = int(prompt[len("fail:"):])
        max_tokens = sampling.max_tokens if sampling.HasField("max_tokens") else len(text)
        if sampling.ignore_eos:
            text = (text * (max_tokens // max(len(text), 1) + 1))[:max_tokens]
        text = text[:max_tokens]
        start = time.monotonic()
        first = None
        for i, ch in enumerate(text):
            if fail_after is not None and i == fail_after:
                context.abort(grpc.StatusCode.INTERNAL, "fake failure after %d tokens" % i)
            if prompt == "slow":
                time.sleep(0.05)
            if first is None:
                first = time.monotonic()
            token = pb.Token(id=ord(ch), text=ch, logprob=-0.25)
            for k in range(sampling.logprobs):
                token.top_logprobs.add(id=ord(ch) + k, logprob=-0.25 - k,
                                       token_bytes=chr(ord(ch) + k).encode())
            yield pb.GenerateResponse(token=token)
        total = (time.monotonic() - start) * 1000
        finish = pb.FINISH_REASON_LENGTH if sampling.ignore_eos else pb.FINISH_REASON_EOS
        yield pb.GenerateResponse(final=pb.Final(
            finish_reason=finish, trailing_text="",
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text)),
            timings=pb.Timings(queue_ms=0.5,
                               time_to_first_token_ms=((first or start) - start) * 1000,
                               total_ms=total),
            request_id=request_id or "fake-1"))

    def Generate(self, request, context):
        self._record(request)
        self._check(request.sampling, context)
        yield from self._stream(self.reply, request.text, request.sampling,
                                request.request_id, len(request.text.encode()) + 1, context)

    def Chat(self, request, context):
        self._record(request)
        self._check(request.sampling, context)
        if not request.messages:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "messages must not be empty")
        reply = "reply %d" % len(request.messages)
        yield from self._stream(reply, request.messages[-1].content, request.sampling,
                                request.request_id, 10, context)

    def Tokenize(self, request, context):
        self._record(request)
        data = request.text.encode()
        add_bos = request.add_bos if request.HasField("add_bos") else True
        ids = ([1] if add_bos else []) + [b + 3 for b in data]
        out = pb.TokenizeResponse(token_ids=ids)
        if request.return_token_bytes:
            out.token_bytes.extend(([b""] if add_bos else []) + [bytes([b]) for b in data])
        return out

    def Detokenize(self, request, context):
        self._record(request)
        for i, t in enumerate(request.token_ids):
            if t < 0 or t >= 259:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "token_ids[%d] must be in [0, 259), got %d" % (i, t))
        data = bytes(t - 3 for t in request.token_ids if t >= 3)
        return pb.DetokenizeResponse(text=data.decode("utf-8", errors="replace"))

    def GetModelInfo(self, request, context):
        if self.loading:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the model is loading")
        return pb.ModelInfo(
            model_name="fake", architecture="llama", dim=64, n_layers=2, n_heads=4,
            n_kv_heads=2, head_dim=16, ffn_hidden_dim=128, vocab_size=259, max_seqlen=64,
            rope_theta=10000.0,
            memory=pb.MemoryLayerConfig(layers=[1], heads=2, knn=8, n_keys=16, rows=256,
                                        k_dim=32, v_dim=64, placement="cpu-mmap",
                                        value_table_bytes=65536),
            tokenizer=pb.TokenizerInfo(kind="bytes", vocab_size=259, bos_id=1, eos_id=2),
            chat_template="plain", backend="cpu",
            limits=pb.Limits(max_batch_size=8, max_num_tokens=256, max_queue=64,
                             max_prompt_bytes=4194304, max_stop_strings=64,
                             max_stop_string_bytes=256, max_stop_token_ids=64, max_logprobs=20,
                             default_max_tokens=32, max_request_bytes=8388608))

    def GetServerStatus(self, request, context):
        return pb.ServerStatus(state=pb.SERVING_STATE_SERVING, kv_blocks_total=100,
                               kv_block_tokens=16, uptime_s=1.5, requests_served=3,
                               version="0.0.0-fake")


class FakeHealth(health_pb2_grpc.HealthServicer):

    def __init__(self):
        self.status = {"": health_pb2.HealthCheckResponse.SERVING,
                       READINESS: health_pb2.HealthCheckResponse.SERVING}

    def Check(self, request, context):
        if request.service not in self.status:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=self.status[request.service])


class FakeServer:
    """Starts on a free localhost port; `address` is HOST:PORT."""

    def __init__(self, workers=16):
        self.memserve = FakeMemServe()
        self.health = FakeHealth()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        pb_grpc.add_MemServeServicer_to_server(self.memserve, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = "127.0.0.1:%d" % port
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)
