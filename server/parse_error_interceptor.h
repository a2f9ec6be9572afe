// Maps "the request message does not parse" to INVALID_ARGUMENT
// (docs/api.md, "Invalid UTF-8").
//
// A request whose bytes protobuf refuses to parse (most often a `string`
// field holding invalid UTF-8, which a C++ client's serializer sends after
// logging an error) never reaches a handler: gRPC 1.51's callback API answers
// it with UNIMPLEMENTED and an empty message (its sync API with INTERNAL).
// The interceptor rewrites that status to INVALID_ARGUMENT with a message
// naming the offending field when protobuf reported it, e.g.
//   request does not parse: string field 'memserve.v1.GenerateRequest.text'
//   contains invalid UTF-8
// (a field of a nested message adds " (in memserve.v1.ChatRequest)"), and
// otherwise the request message type (or, for a method outside protobuf's
// generated pool, the method):
//   request does not parse: memserve.v1.TokenizeRequest has a string field
//   that is not valid UTF-8, or the message is malformed or missing
//
// Only unary and server-streaming methods are affected (there a missing
// request message can only mean a parse failure; in client-streaming and
// bidi methods it also means end of stream). Statuses set by handlers, and
// calls whose request parsed, pass unchanged.
//
// Use: builder.experimental().SetInterceptorCreators(...) with the factory
// in the vector (gRPC owns it from then on).
//
// Naming the field: protobuf reports it only in a log line, so the first call
// of NewParseErrorInterceptorFactory() installs a process-wide protobuf log
// handler (google::protobuf::SetLogHandler) that records, per thread, the
// field of the last "contains invalid UTF-8 data when parsing" message (not
// logged: the call's status and request log line report it) and writes every
// other message as one log line of ours (server/logging.h), replacing
// protobuf's stderr output. REQUIRES: call it at start-up, before other
// threads use protobuf (SetLogHandler is not thread-safe). A handler
// installed later without forwarding only loses the field name (the
// type-level message remains).
#ifndef MEMSERVE_SERVER_PARSE_ERROR_INTERCEPTOR_H_
#define MEMSERVE_SERVER_PARSE_ERROR_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

namespace memserve {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewParseErrorInterceptorFactory();

}  // namespace memserve

#endif  // MEMSERVE_SERVER_PARSE_ERROR_INTERCEPTOR_H_
