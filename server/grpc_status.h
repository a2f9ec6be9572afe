// The one place where engine errors (absl::Status) become gRPC statuses.
#ifndef MEMSERVE_SERVER_GRPC_STATUS_H_
#define MEMSERVE_SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace memserve {

// Same code (absl and gRPC share the canonical codes) and message. The
// engine picks codes by docs/api.md's table: InvalidArgument for a bad
// request, ResourceExhausted for a full queue, Unavailable while loading or
// draining, DeadlineExceeded, Cancelled, DataLoss for a corrupt checkpoint,
// Internal for bugs and device failures.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_GRPC_STATUS_H_
