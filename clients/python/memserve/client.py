"""The memserve client: Client and the result types (see the package docstring)."""
import collections
import dataclasses
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from grpc_health.v1 import health_pb2, health_pb2_grpc
from memserve.v1 import memserve_pb2 as pb
from memserve.v1 import memserve_pb2_grpc as pb_grpc

SERVICE = "memserve.v1.MemServe"
# Token ids of a 4 MiB text can exceed gRPC's default 4 MiB receive limit.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", -1)]

_FINISH = {pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_EOS: "eos",
           pb.FINISH_REASON_STOP: "stop"}

Message = Union[Mapping[str, str], Tuple[str, str]]


class MemserveError(Exception):
    """A call failed. `code` is the gRPC status name (e.g. "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED", "UNAVAILABLE"; docs/api.md, "Errors"), `status` the
    grpc.StatusCode, `message` the server's message (it names the field and
    the limit)."""

    def __init__(self, status: grpc.StatusCode, message: str):
        super().__init__("%s: %s" % (status.name, message))
        self.status = status
        self.code = status.name
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "MemserveError":
        return cls(error.code(), error.details() or "")


@dataclasses.dataclass(frozen=True)
class TopLogprob:
    id: int
    logprob: float
    token_bytes: bytes


@dataclasses.dataclass(frozen=True)
class Token:
    """One generated token: its id, the text it released (possibly empty: see
    docs/api.md, "Streaming"), its log-probability and the top alternatives
    (with logprobs > 0)."""
    id: int
    text: str
    logprob: float
    top_logprobs: Tuple[TopLogprob, ...] = ()


@dataclasses.dataclass(frozen=True)
class Final:
    """How a generation ended: finish_reason "length", "eos" or "stop" (then
    stop_string or stop_token_id says which), the held-back tail of the text,
    token counts and server timings (milliseconds)."""
    finish_reason: str
    trailing_text: str
    prompt_tokens: int
    completion_tokens: int
    request_id: str
    queue_ms: float
    time_to_first_token_ms: float
    total_ms: float
    stop_string: Optional[str] = None
    stop_token_id: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Completion:
    """A whole generation (complete, chat): the text, every generated token id
    and its log-probability, and how it ended."""
    text: str
    token_ids: Tuple[int, ...]
    token_logprobs: Tuple[float, ...]
    final: Final

    @property
    def finish_reason(self) -> str:
        return self.final.finish_reason


def _top(tops) -> Tuple[TopLogprob, ...]:
    return tuple(TopLogprob(t.id, t.logprob, t.token_bytes) for t in tops)


def _final(f, trailing_text: str) -> Final:
    """A Final from a Final or CompleteResponse message (same field names)."""
    which = f.WhichOneof("matched_stop")
    return Final(finish_reason=_FINISH.get(f.finish_reason, "unspecified"),
                 trailing_text=trailing_text,
                 prompt_tokens=f.usage.prompt_tokens,
                 completion_tokens=f.usage.completion_tokens,
                 request_id=f.request_id,
                 queue_ms=f.timings.queue_ms,
                 time_to_first_token_ms=f.timings.time_to_first_token_ms,
                 total_ms=f.timings.total_ms,
                 stop_string=f.stop_string if which == "stop_string" else None,
                 stop_token_id=f.stop_token_id if which == "stop_token_id" else None)


class Stream:
    """A streaming generation: iterate it for Token objects; afterwards
    `final` holds the Final and `text` the whole output (token texts plus
    the trailing text). `cancel()` stops it (the server frees its KV cache);
    iterating raises MemserveError on a failed call."""

    def __init__(self, call):
        self._call = call
        self.final: Optional[Final] = None
        self._texts: List[str] = []

    def __iter__(self) -> Iterator[Token]:
        try:
            for message in self._call:
                if message.HasField("token"):
                    t = message.token
                    self._texts.append(t.text)
                    yield Token(t.id, t.text, t.logprob, _top(t.top_logprobs))
                else:
                    self.final = _final(message.final, message.final.trailing_text)
        except grpc.RpcError as e:
            raise MemserveError.from_rpc_error(e) from None

    @property
    def text(self) -> str:
        return "".join(self._texts) + (self.final.trailing_text if self.final else "")

    def cancel(self) -> None:
        self._call.cancel()


def _sampling(max_tokens=None, temperature=None, top_p=None, top_k=0, min_p=0.0,
              repetition_penalty=None, frequency_penalty=0.0, presence_penalty=0.0, seed=None,
              min_tokens=0, stop: Sequence[str] = (), stop_token_ids: Sequence[int] = (),
              ignore_eos=False, logprobs=0, include_stop_str=False) -> pb.SamplingParams:
    """SamplingParams; None leaves an optional field unset (the server's default)."""
    s = pb.SamplingParams(top_k=top_k, min_p=min_p, frequency_penalty=frequency_penalty,
                          presence_penalty=presence_penalty, min_tokens=min_tokens,
                          stop=list(stop), stop_token_ids=list(stop_token_ids),
                          ignore_eos=ignore_eos, logprobs=logprobs,
                          include_stop_str=include_stop_str)
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature),
                        ("top_p", top_p), ("repetition_penalty", repetition_penalty),
                        ("seed", seed)):
        if value is not None:
            setattr(s, name, value)
    return s


def _messages(messages: Iterable[Message]) -> List[pb.ChatMessage]:
    out = []
    for m in messages:
        if isinstance(m, Mapping):
            out.append(pb.ChatMessage(role=m["role"], content=m.get("content") or ""))
        else:
            role, content = m
            out.append(pb.ChatMessage(role=role, content=content))
    return out


class _ApiKeyInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <key>` to every call."""

    def __init__(self, api_key: str):
        self._header = ("authorization", "Bearer " + api_key)

    def _details(self, details):
        return _CallDetails(details.method, details.timeout,
                            list(details.metadata or []) + [self._header], details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class Client:
    """A connection to one memserve server (gRPC; plaintext, or TLS when
    root_certificates is given).

    Generation methods take the sampling parameters of docs/api.md as keyword
    arguments (max_tokens, temperature, top_p, top_k, min_p, repetition_penalty,
    frequency_penalty, presence_penalty, seed, min_tokens, stop, stop_token_ids,
    ignore_eos, logprobs, include_stop_str); left out (or None), an optional one
    takes the server's default. `timeout` (seconds) is the call's deadline;
    `request_id` is echoed in Final.request_id and the server's log. A prompt is
    a str (encoded with BOS) or a list of token ids (used as given).
    """

    def __init__(self, address: str = "localhost:50051", timeout: Optional[float] = None,
                 channel: Optional[grpc.Channel] = None,
                 root_certificates: Optional[bytes] = None, private_key: Optional[bytes] = None,
                 certificate_chain: Optional[bytes] = None, api_key: Optional[str] = None):
        """root_certificates (PEM bytes: the CA of the server's certificate)
        connects with TLS; private_key and certificate_chain (PEM bytes) add a
        client certificate for a server with --tls_client_ca (mTLS); api_key
        is sent as `authorization: Bearer <key>` on every call (a server with
        --api_keys_file)."""
        if channel is None and root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates,
                                                       private_key=private_key,
                                                       certificate_chain=certificate_chain)
            channel = grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        elif channel is None and (private_key is not None or certificate_chain is not None):
            raise ValueError("private_key and certificate_chain require root_certificates")
        self._channel = channel or grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        calls = self._channel
        if api_key:  # memserve serve --api_keys_file: every call presents the key
            calls = grpc.intercept_channel(self._channel, _ApiKeyInterceptor(api_key))
        self._stub = pb_grpc.MemServeStub(calls)
        self._health = health_pb2_grpc.HealthStub(calls)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, fn, request, timeout):
        try:
            return fn(request, timeout=timeout if timeout is not None else self._timeout)
        except grpc.RpcError as e:
            raise MemserveError.from_rpc_error(e) from None

    @staticmethod
    def _generate_request(prompt, request_id, params) -> pb.GenerateRequest:
        request = pb.GenerateRequest(sampling=_sampling(**params), request_id=request_id)
        if isinstance(prompt, str):
            request.text = prompt
        else:
            request.token_ids.ids.extend(prompt)
        return request

    def generate(self, prompt: Union[str, Sequence[int]], *, request_id: str = "",
                 timeout: Optional[float] = None, **params) -> Stream:
        """Streams the continuation of `prompt`: a Stream of Token objects."""
        request = self._generate_request(prompt, request_id, params)
        return Stream(self._stub.Generate(
            request, timeout=timeout if timeout is not None else self._timeout))

    def complete(self, prompt: Union[str, Sequence[int]], *, request_id: str = "",
                 timeout: Optional[float] = None, **params) -> Completion:
        """The whole continuation of `prompt` in one call."""
        reply = self._call(self._stub.Complete, self._generate_request(prompt, request_id, params),
                           timeout)
        return self._completion(reply)

    def chat(self, messages: Iterable[Message], *, request_id: str = "",
             timeout: Optional[float] = None, **params) -> Completion:
        """The assistant's reply to `messages` ({"role", "content"} dicts or
        (role, content) pairs, oldest first), rendered by the model's chat template."""
        request = pb.ChatRequest(messages=_messages(messages), sampling=_sampling(**params),
                                 request_id=request_id)
        return self._completion(self._call(self._stub.ChatComplete, request, timeout))

    def chat_stream(self, messages: Iterable[Message], *, request_id: str = "",
                    timeout: Optional[float] = None, **params) -> Stream:
        """Streams the assistant's reply to `messages`, as chat() but token by token."""
        request = pb.ChatRequest(messages=_messages(messages), sampling=_sampling(**params),
                                 request_id=request_id)
        return Stream(self._stub.Chat(
            request, timeout=timeout if timeout is not None else self._timeout))

    def tokenize(self, text: str, add_bos: bool = True,
                 timeout: Optional[float] = None) -> List[int]:
        """The token ids the model sees for `text` (BOS first unless add_bos=False)."""
        reply = self._call(self._stub.Tokenize, pb.TokenizeRequest(text=text, add_bos=add_bos),
                           timeout)
        return list(reply.token_ids)

    def detokenize(self, token_ids: Sequence[int], timeout: Optional[float] = None) -> str:
        reply = self._call(self._stub.Detokenize, pb.DetokenizeRequest(token_ids=list(token_ids)),
                           timeout)
        return reply.text

    def info(self, timeout: Optional[float] = None) -> pb.ModelInfo:
        """The served model (shape, memory layers, tokenizer, chat template, limits)."""
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def status(self, timeout: Optional[float] = None) -> pb.ServerStatus:
        """Load and state of the server (always answers)."""
        return self._call(self._stub.GetServerStatus, pb.GetServerStatusRequest(), timeout)

    def health(self, ready: bool = True, timeout: Optional[float] = 5.0) -> bool:
        """True when the server is ready for generation traffic (ready=True:
        the model is loaded and it is not draining) or merely alive
        (ready=False). Raises MemserveError when it cannot be reached."""
        request = health_pb2.HealthCheckRequest(service=SERVICE if ready else "")
        reply = self._call(self._health.Check, request, timeout)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    @staticmethod
    def _completion(reply) -> Completion:
        return Completion(text=reply.text, token_ids=tuple(reply.token_ids),
                          token_logprobs=tuple(reply.token_logprobs), final=_final(reply, ""))
