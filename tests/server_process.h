// A kvrecall-server child process (the //store:kvrecall-server binary from the
// caller's runfiles) on ephemeral loopback ports, for tests and benchmarks;
// its "ready" line gives the addresses. Killed on destruction.
#ifndef KVRECALL_TESTS_SERVER_PROCESS_H_
#define KVRECALL_TESTS_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvrecall {

inline constexpr char kAdmin[] = "test-admin-token";

// Under `bazel test` (TEST_SRCDIR), `bazel run` (the runfiles tree is the
// working directory) or from the workspace root after a build.
inline std::string ServerBinary() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  if (srcdir && ws) return absl::StrCat(srcdir, "/", ws, "/store/kvrecall-server");
  if (access("store/kvrecall-server", X_OK) == 0) return "store/kvrecall-server";
  return "bazel-bin/store/kvrecall-server";
}

inline std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/" + name + "_" + std::to_string(getpid());
  (void)std::system(("rm -rf '" + dir + "'").c_str());
  return dir;
}

// Resident set size of process `pid`, from /proc/<pid>/status (0 if unreadable).
inline uint64_t RssBytes(pid_t pid) {
  FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/status").c_str(), "r");
  char line[256];
  uint64_t kb = 0;
  while (f && fgets(line, sizeof(line), f)) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) kb = std::strtoull(line + 6, nullptr, 10);
  }
  if (f) std::fclose(f);
  return kb * 1024;
}

// GET `path` from an HTTP server at host:port (bash's /dev/tcp): the raw response.
inline std::string HttpGet(const std::string& hostport, const std::string& path) {
  const std::string cmd = absl::StrCat("exec 3<>/dev/tcp/", hostport.substr(0, hostport.find(':')), "/",
                                       hostport.substr(hostport.find(':') + 1), "; printf 'GET ", path,
                                       " HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3");
  FILE* p = popen(absl::StrCat("bash -c \"", cmd, "\"").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// A running server; its "ready" line gives the addresses.
struct Server {
  pid_t pid = -1;
  FILE* out = nullptr;
  std::string data, grpc, metrics;

  // file_limit > 0: the server may not write files larger than this
  // (RLIMIT_FSIZE; writes beyond fail with EFBIG): a disk that fills up.
  bool Start(const std::vector<std::string>& extra, rlim_t file_limit = 0) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test or benchmark that started it
      dup2(fds[1], 1);
      close(fds[0]);
      if (file_limit > 0) {
        setenv("UCX_TLS", "tcp", 1);  // UCX's shared-memory segments are files too
        signal(SIGXFSZ, SIG_IGN);
        rlimit rl{file_limit, file_limit};
        setrlimit(RLIMIT_FSIZE, &rl);
      }
      std::vector<std::string> args = {ServerBinary(), "--port=0", "--grpc_port=0", "--metrics_port=0",
                                       "--host_bytes=8388608", absl::StrCat("--admin_token=", kAdmin)};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out = fdopen(fds[0], "r");
    char line[1024];
    while (fgets(line, sizeof(line), out)) {
      const std::string l = line;
      if (l.rfind("kvrecall-server ready", 0) != 0) continue;
      auto field = [&](const std::string& k) {
        const size_t a = l.find(k + "=") + k.size() + 1;
        return l.substr(a, l.find(' ', a) - a);
      };
      data = field("data"), grpc = field("grpc"), metrics = field("metrics");
      return true;
    }
    return false;
  }
  int Stop(int sig) {
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    if (out) fclose(out), out = nullptr;
    pid = -1;
    return status;
  }
  ~Server() {
    if (pid > 0) Stop(SIGKILL);
  }
};

}  // namespace kvrecall

#endif  // KVRECALL_TESTS_SERVER_PROCESS_H_
