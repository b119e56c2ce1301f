#include <gtest/gtest.h>

#include <vector>

#include "spigot/wire/byte_reader.h"
#include "spigot/wire/byte_writer.h"

namespace spigot::wire {
namespace {

// A nested TLV message shaped like an IKE payload chain: each payload has a 4-byte generic
// header (next, flags, u16 length counting the header) and a body with a u8-length string.
std::vector<std::uint8_t> BuildMessage() {
  std::vector<std::uint8_t> out;
  ByteWriter w(out);
  w.WriteU32(0xDEADBEEF);
  w.WriteU64(0x0102030405060708ull);
  {
    const std::size_t start = w.size();
    w.WriteU8(41);
    w.WriteU8(0x80);
    LengthScope len = w.OpenU16Length(start);
    w.WriteU24(0xABCDEF);
    {
      LengthScope inner = w.OpenU16Length();
      w.WriteBytes(std::vector<std::uint8_t>{'h', 'e', 'l', 'l', 'o'});
    }
  }
  EXPECT_TRUE(w.ok());
  return out;
}

// Parses what BuildMessage wrote; false on any inconsistency.
bool ParseMessage(std::span<const std::uint8_t> msg) {
  ByteReader r(msg);
  std::uint32_t magic;
  std::uint64_t big;
  std::uint8_t next, flags;
  std::uint16_t payload_len;
  if (!r.ReadU32(magic) || !r.ReadU64(big) || !r.ReadU8(next) || !r.ReadU8(flags) ||
      !r.ReadU16(payload_len) || payload_len < 4)
    return false;
  ByteReader body;
  if (!r.ReadChild(payload_len - 4u, body)) return false;
  std::uint32_t u24;
  std::uint16_t str_len;
  std::span<const std::uint8_t> str;
  if (!body.ReadU24(u24) || !body.ReadU16(str_len) || !body.ReadBytes(str_len, str)) return false;
  return body.empty() && r.empty() && magic == 0xDEADBEEF && u24 == 0xABCDEF && str.size() == 5;
}

TEST(Wire, RoundTrip) {
  const auto msg = BuildMessage();
  ASSERT_EQ(msg.size(), 4u + 8u + 4u + 3u + 2u + 5u);
  EXPECT_EQ(msg[14], 0);   // payload length counts its own header: 4 + 3 + 2 + 5 = 14
  EXPECT_EQ(msg[15], 14);
  EXPECT_EQ(msg[19], 0);   // inner length counts only what follows it
  EXPECT_EQ(msg[20], 5);
  EXPECT_TRUE(ParseMessage(msg));
}

TEST(Wire, EveryTruncatedPrefixIsRejected) {
  const auto msg = BuildMessage();
  for (std::size_t n = 0; n < msg.size(); ++n) {
    EXPECT_FALSE(ParseMessage({msg.data(), n})) << "prefix of " << n << " bytes accepted";
  }
}

TEST(Wire, ReaderFailureIsSticky) {
  const std::uint8_t data[] = {1, 2, 3};
  ByteReader r(data);
  std::uint32_t v32 = 7;
  EXPECT_FALSE(r.ReadU32(v32));
  EXPECT_EQ(v32, 0u);
  std::uint8_t v8 = 7;
  EXPECT_FALSE(r.ReadU8(v8));  // would fit, but the reader already failed
  EXPECT_EQ(v8, 0);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(Wire, ReaderReturnsViewsNotCopies) {
  const std::uint8_t data[] = {0, 2, 0xAA, 0xBB, 0xCC};
  ByteReader r(data);
  std::uint16_t n;
  std::span<const std::uint8_t> view;
  ASSERT_TRUE(r.ReadU16(n));
  ASSERT_TRUE(r.ReadBytes(n, view));
  EXPECT_EQ(view.data(), data + 2);
  std::span<const std::uint8_t> peek;
  ASSERT_TRUE(r.Peek(1, peek));
  EXPECT_EQ(peek[0], 0xCC);
  EXPECT_EQ(r.remaining(), 1u);
  EXPECT_FALSE(r.Peek(2, peek));
  EXPECT_TRUE(r.ok());  // a failed peek does not poison the reader
}

TEST(Wire, BigEndian) {
  std::uint8_t buf[15];
  ByteWriter w(buf);
  w.WriteU16(0x0102);
  w.WriteU24(0x030405);
  w.WriteU32(0x06070809);
  w.WriteU8(0x0A);
  w.WriteU16(0x0B0C);
  w.WriteU24(0x0D0E0F);
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 15; ++i) EXPECT_EQ(buf[i], i + 1);
}

TEST(Wire, FixedWriterOverflowIsSticky) {
  std::uint8_t buf[5] = {};
  ByteWriter w(buf);
  EXPECT_TRUE(w.WriteU32(1));
  EXPECT_FALSE(w.WriteU16(2));
  EXPECT_FALSE(w.WriteU8(3));  // would fit, but the writer already failed
  EXPECT_FALSE(w.ok());
  EXPECT_TRUE(w.Reserve(1).empty());
}

TEST(Wire, LengthOverflowFails) {
  std::vector<std::uint8_t> out;
  ByteWriter w(out);
  {
    LengthScope len = w.OpenU16Length();
    w.WriteZeros(0x10000);
  }
  EXPECT_FALSE(w.ok());
}

TEST(Wire, U24RejectsWideValues) {
  std::vector<std::uint8_t> out;
  ByteWriter w(out);
  EXPECT_FALSE(w.WriteU24(0x1000000));
  EXPECT_FALSE(w.ok());
}

TEST(Wire, GrowingWriterAppendsAfterExistingBytes) {
  std::vector<std::uint8_t> out = {9, 9};
  ByteWriter w(out);
  {
    LengthScope len = w.OpenU32Length();
    w.WriteU8(7);
  }
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(out, (std::vector<std::uint8_t>{9, 9, 0, 0, 0, 1, 7}));
  EXPECT_EQ(w.size(), 5u);
}

}  // namespace
}  // namespace spigot::wire
