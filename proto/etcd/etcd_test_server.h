// Test helper: a real etcd (Debian's etcd-server) on loopback ports in a
// fresh data directory, started as a child process and killed on
// destruction. Tests skip where /usr/bin/etcd is missing.
#ifndef KVRECALL_PROTO_ETCD_ETCD_TEST_SERVER_H_
#define KVRECALL_PROTO_ETCD_ETCD_TEST_SERVER_H_

#include <signal.h>
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

  // Ports from `base`; the data directory under $TEST_TMPDIR (or /tmp).
  explicit EtcdTestServer(int base_port) : client_port_(base_port), peer_port_(base_port + 1) {
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
  int client_port_, peer_port_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace kvrecall

#endif  // KVRECALL_PROTO_ETCD_ETCD_TEST_SERVER_H_
