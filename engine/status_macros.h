// Error-propagation macros used across memserve. Every module boundary speaks
// absl::Status / absl::StatusOr; these keep call sites short.
#ifndef MEMSERVE_ENGINE_STATUS_MACROS_H_
#define MEMSERVE_ENGINE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MEMSERVE_CONCAT_INNER_(a, b) a##b
#define MEMSERVE_CONCAT_(a, b) MEMSERVE_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status _memserve_status = (expr);        \
    if (!_memserve_status.ok()) return _memserve_status; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value of an
// absl::StatusOr or returns its error from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, rexpr)                                        \
  ASSIGN_OR_RETURN_IMPL_(MEMSERVE_CONCAT_(_memserve_sor_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(sor, lhs, rexpr) \
  auto sor = (rexpr);                           \
  if (!sor.ok()) return sor.status();           \
  lhs = std::move(sor).value()

#endif  // MEMSERVE_ENGINE_STATUS_MACROS_H_
