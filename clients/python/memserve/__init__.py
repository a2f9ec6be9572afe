"""memserve's Python client: a typed API over the gRPC service memserve.v1.MemServe.

    from memserve import Client

    with Client("localhost:50051") as client:
        for token in client.generate("The capital of Batourkor is", max_tokens=16):
            print(token.text, end="", flush=True)
        print(client.chat([{"role": "user", "content": "Hello"}], temperature=0).text)

Errors raise MemserveError, carrying the server's status code and message.
The generated stubs (memserve.v1.memserve_pb2, grpc_health.v1.health_pb2) come from
proto/ (`bazel build //proto:memserve_py //proto:health_py`); put bazel-bin/proto (or,
under Bazel, the runfiles' proto/) on sys.path next to this package's directory.
"""
import pkgutil

# memserve.v1 (the generated code) lives in another directory on sys.path
# (bazel-bin/proto/memserve/v1): let this package span both.
__path__ = pkgutil.extend_path(__path__, __name__)  # noqa: F821

from memserve.client import (  # noqa: E402
    Client,
    Completion,
    Final,
    MemserveError,
    Stream,
    TopLogprob,
    Token,
)

__all__ = ["Client", "Completion", "Final", "MemserveError", "Stream", "Token", "TopLogprob"]
