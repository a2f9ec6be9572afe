"""Tests that the generated Python code of memserve/v1 imports with Debian's
python3-protobuf and python3-grpcio, builds requests with the documented
presence rules, and streams through a real (in-test, Python) gRPC server.

Run: bazel test //proto:memserve_proto_py_test, or by hand after
`bazel build //proto:memserve_py`:
  PYTHONPATH=bazel-bin/proto /usr/bin/python3 proto/memserve_proto_py_test.py
"""
import os
import sys
import unittest
from concurrent import futures

# The proto root (this package): memserve/v1/memserve_pb2.py lives under it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from memserve.v1 import memserve_pb2 as pb  # noqa: E402
from memserve.v1 import memserve_pb2_grpc as pb_grpc  # noqa: E402


class MessagesTest(unittest.TestCase):

    def test_request_round_trips_and_optional_presence(self):
        req = pb.GenerateRequest(
            text="Hello, memory",
            request_id="py-1",
            sampling=pb.SamplingParams(temperature=0.0, seed=7, max_tokens=2, stop=["\n\n"],
                                       logprobs=3),
        )
        back = pb.GenerateRequest.FromString(req.SerializeToString())
        self.assertEqual(back.WhichOneof("input"), "text")
        self.assertEqual(back.text, "Hello, memory")
        s = back.sampling
        self.assertTrue(s.HasField("temperature"))  # greedy, not "unset"
        self.assertEqual(s.temperature, 0.0)
        self.assertFalse(s.HasField("top_p"))
        self.assertFalse(s.HasField("repetition_penalty"))
        self.assertEqual(s.seed, 7)
        self.assertEqual(list(s.stop), ["\n\n"])

    def test_token_ids_input(self):
        req = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2, 300]))
        self.assertEqual(req.WhichOneof("input"), "token_ids")
        req.text = "switches the oneof"
        self.assertEqual(req.WhichOneof("input"), "text")
        self.assertEqual(len(req.token_ids.ids), 0)

    def test_enums_and_service_shape(self):
        self.assertEqual(pb.FinishReason.Name(0), "FINISH_REASON_UNSPECIFIED")
        self.assertEqual(pb.FINISH_REASON_STOP, 3)
        self.assertEqual(pb.ServingState.Name(pb.SERVING_STATE_DRAINING), "SERVING_STATE_DRAINING")
        service = pb.DESCRIPTOR.services_by_name["MemServe"]
        self.assertEqual(service.full_name, "memserve.v1.MemServe")
        methods = {m.name: m for m in service.methods}
        self.assertEqual(set(methods), {"Generate", "Complete", "Chat", "ChatComplete", "Tokenize",
                                        "Detokenize", "GetModelInfo", "GetServerStatus"})
        self.assertEqual(pb.DESCRIPTOR.name, "memserve/v1/memserve.proto")


class FakeMemServe(pb_grpc.MemServeServicer):

    def Generate(self, request, context):
        if request.WhichOneof("input") is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input: set text or token_ids")
        yield pb.GenerateResponse(token=pb.Token(id=11, text="Hel", logprob=-0.25))
        yield pb.GenerateResponse(token=pb.Token(id=12, text="lo", logprob=-1.5))
        yield pb.GenerateResponse(final=pb.Final(
            finish_reason=pb.FINISH_REASON_LENGTH, trailing_text="!",
            usage=pb.Usage(prompt_tokens=4, completion_tokens=2),
            request_id=request.request_id))


class StreamingTest(unittest.TestCase):

    def setUp(self):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_MemServeServicer_to_server(FakeMemServe(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        self.stub = pb_grpc.MemServeStub(self.channel)

    def tearDown(self):
        self.channel.close()
        self.server.stop(grace=None)

    def test_generate_streams_tokens_then_final(self):
        messages = list(self.stub.Generate(pb.GenerateRequest(text="Hi", request_id="py-2"),
                                           timeout=30))
        self.assertEqual([m.WhichOneof("event") for m in messages], ["token", "token", "final"])
        text = "".join(m.token.text for m in messages[:-1]) + messages[-1].final.trailing_text
        self.assertEqual(text, "Hello!")
        self.assertEqual(messages[-1].final.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(messages[-1].final.request_id, "py-2")

    def test_stub_call_shapes(self):
        self.assertIsInstance(self.stub.Generate, grpc.UnaryStreamMultiCallable)
        self.assertIsInstance(self.stub.Chat, grpc.UnaryStreamMultiCallable)
        self.assertIsInstance(self.stub.Complete, grpc.UnaryUnaryMultiCallable)
        self.assertIsInstance(self.stub.GetServerStatus, grpc.UnaryUnaryMultiCallable)

    def test_error_status_and_unimplemented(self):
        with self.assertRaises(grpc.RpcError) as err:
            list(self.stub.Generate(pb.GenerateRequest(), timeout=30))
        self.assertEqual(err.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("input", err.exception.details())
        with self.assertRaises(grpc.RpcError) as err:
            self.stub.Tokenize(pb.TokenizeRequest(text="abc"), timeout=30)
        self.assertEqual(err.exception.code(), grpc.StatusCode.UNIMPLEMENTED)


if __name__ == "__main__":
    unittest.main()
