// Test helpers: hex decoding and test-vector files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace spigot::test_tools {

// Decodes hex, ignoring whitespace. Aborts the test binary on a bad digit.
std::vector<std::uint8_t> FromHex(std::string_view hex);
std::string ToHex(const std::uint8_t* p, std::size_t n);
template <typename C>
std::string ToHex(const C& c) {
  return ToHex(c.data(), c.size());
}

// A test-vector file: blocks separated by blank lines, each line `key = value`; lines starting
// with '#' are comments. A value may continue on following lines that start with whitespace
// (long hex strings). Path is relative to the source tree.
using VectorBlock = std::map<std::string, std::string>;
std::vector<VectorBlock> ReadVectorFile(const std::string& relative_path);

}  // namespace spigot::test_tools
