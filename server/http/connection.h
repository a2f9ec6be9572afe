// The socket of the HTTP connection a request arrived on, so that a handler
// can notice that its client went away (and cancel the engine request)
// while it waits for tokens. cpp-httplib 0.11 (Debian 12) hands handlers the
// peer and local addresses but not the socket; the socket is found by those
// addresses among the process's open sockets. Linux only (/proc/self/fd).
#ifndef MEMSERVE_SERVER_HTTP_CONNECTION_H_
#define MEMSERVE_SERVER_HTTP_CONNECTION_H_

#include <string>

namespace memserve {

// The connected TCP socket whose local end is `local_port` and whose peer is
// `remote_addr`:`remote_port` (the numeric host as getnameinfo writes it,
// e.g. "127.0.0.1" or "::1"), or -1 when none is open. The descriptor stays
// owned by the HTTP server: use it only while the request it was found for
// is being handled (the server closes it after the handler and its content
// provider return).
int FindConnectionSocket(int local_port, const std::string& remote_addr, int remote_port);

// True once the peer of connected socket `fd` has closed its end (an orderly
// shutdown or a reset): nothing more can be read and nothing is pending.
// Bytes the client sent but the server has not read yet (a pipelined next
// request) do not count as closed. False for fd < 0.
bool PeerClosed(int fd);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_HTTP_CONNECTION_H_
