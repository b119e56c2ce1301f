#include "spigot/test_tools/hex.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#ifndef SPIGOT_SOURCE_DIR
#define SPIGOT_SOURCE_DIR "."
#endif

namespace spigot::test_tools {

std::vector<std::uint8_t> FromHex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  int nibble = -1;
  for (char c : hex) {
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == ':') continue;
    else {
      std::fprintf(stderr, "FromHex: bad character '%c'\n", c);
      std::abort();
    }
    if (nibble < 0) {
      nibble = v;
    } else {
      out.push_back(static_cast<std::uint8_t>(nibble << 4 | v));
      nibble = -1;
    }
  }
  if (nibble >= 0) {
    std::fprintf(stderr, "FromHex: odd number of digits\n");
    std::abort();
  }
  return out;
}

std::string ToHex(const std::uint8_t* p, std::size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(kDigits[p[i] >> 4]);
    s.push_back(kDigits[p[i] & 15]);
  }
  return s;
}

static std::string Trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::vector<VectorBlock> ReadVectorFile(const std::string& relative_path) {
  const std::string path = std::string(SPIGOT_SOURCE_DIR) + "/" + relative_path;
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "cannot open test vector file %s\n", path.c_str());
    std::abort();
  }
  std::vector<VectorBlock> blocks;
  VectorBlock cur;
  std::string last_key;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    if (Trim(line).empty()) {
      if (!cur.empty()) blocks.push_back(std::move(cur));
      cur.clear();
      last_key.clear();
      continue;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !last_key.empty()) {
      cur[last_key] += Trim(line);
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "%s: line without '=': %s\n", path.c_str(), line.c_str());
      std::abort();
    }
    last_key = Trim(line.substr(0, eq));
    cur[last_key] = Trim(line.substr(eq + 1));
  }
  if (!cur.empty()) blocks.push_back(std::move(cur));
  return blocks;
}

}  // namespace spigot::test_tools
