#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace strand {

namespace {

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a plain file";
}

std::string open_problem(int err) {
  switch (err) {
    case ENOENT: return "no such file";
    case EACCES:
    case EPERM: return "permission denied";
    case ENOTDIR: return "a part of the path is not a directory";
    case ELOOP: return "too many levels of symbolic links";
    case ENAMETOOLONG: return "the path is too long";
    default: return std::string("cannot open: ") + std::strerror(err);
  }
}

}  // namespace

std::string human_bytes(uint64_t b) {
  const double v = double(b);
  if (b < 1000) return fmt::format("{} bytes", b);
  if (v < 1e6) return fmt::format("{:.3g} kB", v / 1e3);
  if (v < 1e9) return fmt::format("{:.3g} MB", v / 1e6);
  if (v < 1e12) return fmt::format("{:.3g} GB", v / 1e9);
  return fmt::format("{:.3g} TB", v / 1e12);
}

RegularFile::RegularFile(const std::string& path, const std::string& what) : path_(path), what_(what) {
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; it is refused below.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd_ < 0) fail("{} {}: {}", what, path, open_problem(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    fail("{} {}: cannot stat: {}", what, path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail("{} {}: is {}, not a regular file", what, path, kind_of(st.st_mode));
  }
  // Back to blocking reads (a regular file never blocks, but say what we mean).
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
  size_ = uint64_t(st.st_size);
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string RegularFile::read_all(uint64_t max_bytes) {
  if (size_ > max_bytes)
    fail("{} {}: {}, more than the {} this kind of file may have", what_, path_, human_bytes(size_),
         human_bytes(max_bytes));
  std::string s;
  s.resize(size_t(size_));
  size_t got = 0;
  for (;;) {
    if (got == s.size()) {
      // The file may have grown since fstat: read on, within the cap.
      if (s.size() >= max_bytes + 1) break;
      s.resize(size_t(std::min<uint64_t>(max_bytes + 1, std::max<uint64_t>(4096, s.size() * 2))));
    }
    const ssize_t n = ::read(fd_, s.data() + got, s.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{} {}: read error: {}", what_, path_, std::strerror(errno));
    }
    if (n == 0) break;
    got += size_t(n);
  }
  if (got > max_bytes)
    fail("{} {}: more than the {} this kind of file may have", what_, path_, human_bytes(max_bytes));
  s.resize(got);
  return s;
}

std::string read_regular_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  RegularFile f(path, what);
  return f.read_all(max_bytes);
}

bool path_exists(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return true;
  const int err = errno;
  if (err == ENOENT || err == ENOTDIR) return false;
  fail("{} {}: {}", what, path, open_problem(err));
}

std::string read_stdin(const std::string& what, uint64_t max_bytes) {
  std::string s;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{} (standard input): read error: {}", what, std::strerror(errno));
    }
    if (n == 0) break;
    if (s.size() + size_t(n) > max_bytes)
      fail("{} (standard input): more than the {} it may have", what, human_bytes(max_bytes));
    s.append(buf, size_t(n));
  }
  return s;
}

}  // namespace strand
