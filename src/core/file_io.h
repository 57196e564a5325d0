// strand/core/file_io.h — opening files that come from strangers.
//
// Every file strand reads is checked to be a regular file before a byte is read (a FIFO would
// block forever, /dev/zero would never end), opened without blocking, and read with a size cap
// that fits its kind. Every failure is a strand::Error of one line that names the file:
//   "config.json /m/config.json: no such file"
//   "vocab.json /m/vocab.json: is a FIFO, not a regular file"
//   "merges.txt /m/merges.txt: 3.2 GB, more than the 64 MiB a merges.txt may have"
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace strand {

// Size caps by kind of file (generous: GPT-2's own files are far below them).
constexpr uint64_t kMaxJsonConfigBytes = uint64_t(16) << 20;   // config.json, *.index.json
constexpr uint64_t kMaxTokenizerBytes = uint64_t(256) << 20;   // vocab.json, merges.txt, tokenizer.json
constexpr uint64_t kMaxTextBytes = uint64_t(1) << 30;          // a text to tokenize or score

// An open regular file: its descriptor (O_RDONLY | O_CLOEXEC) and size. Closes on destruction.
class RegularFile {
 public:
  // Opens `path` without blocking and checks it is a regular file (symlinks followed).
  // `what` names the file's role in messages ("config.json", "-f"): "<what> <path>: <problem>".
  RegularFile(const std::string& path, const std::string& what);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  const std::string& what() const { return what_; }

  // The whole file, refused when it is larger than max_bytes (checked before reading, and
  // again while reading in case the file grows).
  std::string read_all(uint64_t max_bytes);

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_, what_;
};

// RegularFile(path, what).read_all(max_bytes).
std::string read_regular_file(const std::string& path, const std::string& what, uint64_t max_bytes);

// Whether `path` names something (a file of any kind, symlinks followed): false when it does
// not exist (ENOENT, or a part of the path is not a directory); every other failure, above all
// a directory that cannot be searched, is an error naming `what` and the path
// ("config.json /m/config.json: permission denied"), so that a file that cannot be looked at
// is never reported as absent.
bool path_exists(const std::string& path, const std::string& what);

// Reads standard input up to max_bytes (for "-f -"); more is an error naming `what`.
std::string read_stdin(const std::string& what, uint64_t max_bytes);

// "1.35 GB", "64 MiB"-style sizes for messages (decimal units, 3 significant digits).
std::string human_bytes(uint64_t bytes);

}  // namespace strand
