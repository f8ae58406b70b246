// Test helper: a real etcd (Debian's etcd-server) on loopback ports in a
// fresh data directory, started as a child process and killed on
// destruction. Tests skip where /usr/bin/etcd is missing.
#ifndef KVRECALL_PROTO_ETCD_ETCD_TEST_SERVER_H_
#define KVRECALL_PROTO_ETCD_ETCD_TEST_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

namespace kvrecall {

class EtcdTestServer {
 public:
  static bool Available() { return access("/usr/bin/etcd", X_OK) == 0; }

  // Ports: the first free pair from `base` on (tests in PID namespaces, as
  // under Bazel's sandbox, see the same getpid() and so the same base); the
  // data directory under $TEST_TMPDIR (or /tmp).
  explicit EtcdTestServer(int base_port) {
    int port = base_port;
    for (int i = 0; i < 200 && !(Free(port) && Free(port + 1)); ++i) port += 2;
    client_port_ = port;
    peer_port_ = port + 1;
    const char* t = std::getenv("TEST_TMPDIR");
    dir_ = std::string(t ? t : "/tmp") + "/etcd_" + std::to_string(getpid()) + "_" + std::to_string(base_port);
    (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  ~EtcdTestServer() { Stop(); }

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }

  // Starts (or restarts, keeping the data) and waits until it answers.
  bool Start() {
    pid_ = fork();
    if (pid_ == 0) {
      const std::string c = "http://127.0.0.1:" + std::to_string(client_port_);
      const std::string p = "http://127.0.0.1:" + std::to_string(peer_port_);
      const std::string cluster = "default=" + p;
      freopen("/dev/null", "w", stdout);
      freopen("/dev/null", "w", stderr);
      execl("/usr/bin/etcd", "etcd", "--name", "default", "--data-dir", dir_.c_str(), "--listen-client-urls",
            c.c_str(), "--advertise-client-urls", c.c_str(), "--listen-peer-urls", p.c_str(),
            "--initial-advertise-peer-urls", p.c_str(), "--initial-cluster", cluster.c_str(), (char*)nullptr);
      _exit(127);
    }
    const std::string probe = "ETCDCTL_API=3 etcdctl --endpoints=" + endpoint() + " endpoint health >/dev/null 2>&1";
    for (int i = 0; i < 100; ++i) {
      // Our child must still be running: an etcd that could not bind exits,
      // and the probe would then be answered by someone else's.
      if (waitpid(pid_, nullptr, WNOHANG) != 0) {
        pid_ = -1;
        return false;
      }
      if (std::system(probe.c_str()) == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  // Whether a TCP port on 127.0.0.1 can be bound now.
  static bool Free(int port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    return ok;
  }

  int client_port_, peer_port_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace kvrecall

#endif  // KVRECALL_PROTO_ETCD_ETCD_TEST_SERVER_H_
