// The one table of how an error reaches a client. The engine and the request
// conversion pick an absl::StatusCode by docs/api.md's table
// (InvalidArgument for a bad request, ResourceExhausted for a full queue,
// Unavailable while loading or draining, DeadlineExceeded, Cancelled,
// DataLoss for a corrupt checkpoint, Internal for bugs and device failures);
// gRPC sends that code as is, HTTP maps it here to a status and an
// OpenAI-style error type (docs/api.md, "HTTP API").
#ifndef MEMSERVE_SERVER_API_ERRORS_H_
#define MEMSERVE_SERVER_API_ERRORS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace memserve {

// Same code (absl and gRPC share the canonical codes) and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// An error as the HTTP API reports it: the response status and the
// `error.type` of the OpenAI-shaped body.
struct HttpError {
  int status = 500;
  const char* type = "server_error";
};

//   InvalidArgument, OutOfRange, FailedPrecondition  400 invalid_request_error
//   Unauthenticated (a missing or wrong API key)     401 invalid_request_error
//   NotFound                                         404 not_found_error
//   ResourceExhausted                                429 rate_limit_error
//   Cancelled                                        499 cancelled (the client is gone)
//   Unimplemented                                    501 not_implemented_error
//   Unavailable                                      503 service_unavailable_error
//   DeadlineExceeded                                 504 timeout_error
//   anything else (DataLoss, Internal, ...)          500 server_error
// (413 request_too_large is the HTTP layer's own: a body over --max_request_bytes.)
HttpError ToHttpError(absl::StatusCode code);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_API_ERRORS_H_
