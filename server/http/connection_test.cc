// FindConnectionSocket and PeerClosed on real loopback sockets.
#include "server/http/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace memserve {
namespace {

int Port(int fd, bool peer) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (peer) {
    getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  } else {
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  }
  return ntohs(addr.sin_port);
}

// A listening socket on 127.0.0.1, a client connected to it, and the
// server's end of the connection.
struct Loopback {
  int listener = -1, client = -1, server = -1;
  Loopback() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listener, 4);
    socklen_t len = sizeof(addr);
    getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
    client = socket(AF_INET, SOCK_STREAM, 0);
    connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    server = accept(listener, nullptr, nullptr);
  }
  ~Loopback() {
    for (int fd : {listener, client, server}) {
      if (fd >= 0) close(fd);
    }
  }
};

TEST(ConnectionTest, FindsTheServerEndByAddresses) {
  Loopback l;
  ASSERT_GE(l.server, 0);
  const int local_port = Port(l.server, false);
  const int remote_port = Port(l.server, true);
  EXPECT_EQ(FindConnectionSocket(local_port, "127.0.0.1", remote_port), l.server);
  // The client's end has the ports the other way round.
  EXPECT_EQ(FindConnectionSocket(remote_port, "127.0.0.1", local_port), l.client);
  EXPECT_EQ(FindConnectionSocket(local_port, "127.0.0.2", remote_port), -1);
}

TEST(ConnectionTest, PeerClosedOnlyAfterTheClientCloses) {
  Loopback l;
  EXPECT_FALSE(PeerClosed(l.server));
  // Unread bytes (a pipelined request) are not a close.
  ASSERT_EQ(write(l.client, "GET", 3), 3);
  EXPECT_FALSE(PeerClosed(l.server));
  close(l.client);
  l.client = -1;
  EXPECT_TRUE(PeerClosed(l.server));
  EXPECT_FALSE(PeerClosed(-1));
}

}  // namespace
}  // namespace memserve
