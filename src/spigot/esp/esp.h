// ESP tunnel-mode encapsulation and decapsulation (RFC 4303) of IPv4/IPv6 inner packets, with
// 32-bit or 64-bit extended sequence numbers (RFC 4304) and the AEAD AAD of RFC 4106 5 /
// RFC 7634 2.1, plus the UDP-encapsulation classifier of RFC 3948.
//
// Nothing here allocates: packets are transformed in place inside a caller's buffer that has
// kSealHeadroom bytes before and kSealTailroom bytes after the inner packet.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "spigot/bounds.h"
#include "spigot/crypto/esp_cipher.h"
#include "spigot/esp/constants.h"
#include "spigot/esp/replay_window.h"

namespace spigot::esp {

// Why a packet was not delivered. Every rejection has a reason; callers count them.
enum class Status : std::uint8_t {
  kOk = 0,
  kShort,          // shorter than header + IV + minimal payload + ICV
  kMalformed,      // lengths not aligned, bad next header, inner packet inconsistent
  kBadPadding,     // pad bytes not 1, 2, 3, ... (RFC 4303 2.4) or pad length too large
  kBadIcv,         // integrity check failed
  kReplay,         // duplicate, or older than the replay window
  kUnknownSpi,     // no inbound SA for the SPI (decided by the caller's SA lookup)
  kDummy,          // next header 59: a traffic-flow-confidentiality dummy, discard silently
  kSeqExhausted,   // outbound: the sequence space is used up; the SA must be rekeyed
  kNoRoom,         // the caller's buffer lacks head- or tailroom
};
const char* ToString(Status s);

// A packet inside a larger buffer: bytes [offset, offset + length) of `buffer`.
struct PacketView {
  std::span<std::uint8_t> buffer;
  std::size_t offset = 0;
  std::size_t length = 0;

  std::span<std::uint8_t> bytes() const { return buffer.subspan(offset, length); }
};

// Sending side of one SA.
struct OutboundState {
  std::uint32_t spi = 0;
  bool esn = false;
  // Next sequence number to send; the first packet carries 1 (RFC 4303 3.3.3).
  std::uint64_t next_seq = 1;
  // Several threads seal with one SA (each with its own OutboundState and keys): the next
  // sequence number is this shared counter instead of next_seq, taken with a compare-and-swap
  // so that no two packets carry the same one and none past the last is ever taken. Null: one
  // thread, next_seq. Must outlive the state.
  std::atomic<std::uint64_t>* shared_next_seq = nullptr;
};

// Receiving side of one SA.
struct InboundState {
  std::uint32_t spi = 0;
  ReplayWindow replay;
};

// Length of the ESP packet that sealing `inner_len` bytes with `suite` produces.
std::size_t SealedLength(crypto::EspSuite suite, std::size_t inner_len);

// Encapsulates the inner packet `pkt` in place: on kOk, `pkt` describes the ESP packet (SPI
// first). On kSeqExhausted nothing is sent and the SA must be replaced: the counter never
// wraps (RFC 4303 3.3.3; 2^32 - 1 without ESN, 2^64 - 1 with it).
Status Seal(crypto::ImbManager& mgr, const crypto::EspCipher& cipher, OutboundState& out,
            std::uint8_t next_header, PacketView& pkt);

// The cipher step of Seal() / Open(), split from the framing so that a lookaside crypto engine
// (engine/crypto_engine.h) can run it on another thread while the data-path thread keeps the
// per-SA state: sequence numbers and the replay window never leave that thread. Offsets are
// from the start of the ESP packet (its SPI).
struct CryptoOp {
  bool seal = true;
  bool esn = false;
  std::uint32_t spi = 0;
  std::uint64_t seq = 0;       // full (ESN-inferred) sequence number: the IV and the AAD
  std::uint16_t head = 0;      // ESP header + IV
  std::uint16_t payload = 0;   // encrypted bytes (padded); the ICV follows them
};

// Seal() without the cipher: assigns the sequence number, writes header, padding and trailer,
// and leaves `pkt` describing the whole ESP packet (ICV still to be written). Then
// RunCrypto(op, pkt.bytes().data()) completes it. Statuses as Seal().
Status SealPrepare(const crypto::EspCipher& cipher, OutboundState& out, std::uint8_t next_header,
                   PacketView& pkt, CryptoOp& op);

// Open() up to the cipher: lengths, SPI and replay check. On kOk run RunCrypto() (false is
// kBadIcv), then OpenFinish(). Statuses as Open().
Status OpenPrepare(const crypto::EspCipher& cipher, const InboundState& in, PacketView& pkt,
                   CryptoOp& op);

// Encrypts and writes the ICV (op.seal), or verifies the ICV and decrypts (true iff authentic).
// Touches only the ESP packet at `esp` and reads `cipher`: any thread may run it with its own
// ImbManager while the owner keeps both alive and unchanged.
bool RunCrypto(crypto::ImbManager& mgr, const crypto::EspCipher& cipher, const CryptoOp& op,
               std::uint8_t* esp);

// The cipher steps of several packets together: the result of RunCrypto() for each, byte for
// byte, but the CBC + HMAC suites' packets go through intel-ipsec-mb's multi-buffer scheduler
// as one chained job each (crypto::RunCbcHmacBatch), so its SIMD lanes work on up to 16 of them
// at once, where RunCrypto() runs three jobs per packet one after another (IV, cipher, MAC).
// The IV is still E_K(sequence number): CBC with a zero IV over the counter block followed by
// the payload makes E_K(counter) its first output block (the IV) and encrypts the payload
// under it, in the same job. The AEADs (GCM, ChaCha20-Poly1305) run their direct calls one
// packet at a time, as in RunCrypto(). Unlike RunCrypto(), an open that fails its ICV has
// been decrypted too (the job chains both): its bytes are garbage either way and dropped.
// Bound: kCapacity packets; Add() refuses more until Clear(). Nothing allocates.
class CryptoBatch {
 public:
  static constexpr std::size_t kCapacity = bounds::kMultiBufferBatch;

  // Queues one packet's cipher step (`op` as from SealPrepare() / OpenPrepare(), `esp` the
  // ESP packet); `cipher` and the packet must stay as they are until Run() returned.
  // False when full.
  bool Add(const crypto::EspCipher& cipher, const CryptoOp& op, std::uint8_t* esp);
  // Runs every queued step. ok(i): RunCrypto()'s result for the i-th packet added.
  void Run(crypto::ImbManager& mgr);
  bool ok(std::size_t i) const { return items_[i].ok; }
  std::size_t size() const { return size_; }
  bool full() const { return size_ == kCapacity; }
  void Clear() { size_ = 0; }

 private:
  struct Item {
    const crypto::EspCipher* cipher;
    CryptoOp op;
    std::uint8_t* esp;
    bool ok;
    std::uint8_t received[crypto::kEspIcvLen];  // open with ESN: the ICV, while seq_hi is there
  };
  Item items_[kCapacity];
  crypto::CbcHmacJob jobs_[kCapacity];
  std::size_t size_ = 0;
};

// True for the suites CryptoBatch runs through the multi-buffer scheduler (CBC + HMAC).
inline bool MultiBuffer(crypto::EspSuite suite) { return !crypto::SuiteInfo(suite).aead; }

// After RunCrypto() verified `pkt`: checks the replay window again (packets of one SA may be
// in flight together, so a duplicate may have been accepted since OpenPrepare()), updates it,
// and parses the trailer. On kOk `pkt` is the inner packet, as Open().
Status OpenFinish(InboundState& in, const CryptoOp& op, PacketView& pkt, std::uint8_t& next_header,
                  std::uint64_t* seq_out = nullptr);

// The drop reason of a packet whose ICV did not verify after OpenPrepare(): kReplay if the
// window, moved on since by packets finished before it, refuses it now (what Open() would have
// said, checking it only after them), else kBadIcv.
Status OpenFailed(const InboundState& in, const CryptoOp& op);

// The SPI of an ESP packet, for the SA lookup that precedes Open(). False if too short.
bool PeekSpi(std::span<const std::uint8_t> esp, std::uint32_t& spi);

// Decapsulates the ESP packet `pkt` (SPI first) in place: checks length and alignment, the
// replay window, the ICV, padding and next header, then updates the window. On kOk `pkt`
// describes the inner IP packet and `next_header` is 4 or 41. On any other status nothing
// may be delivered. The window moves only for packets whose ICV verified (so also for an
// authentic packet rejected afterwards for its padding or contents), never for forgeries.
Status Open(crypto::ImbManager& mgr, const crypto::EspCipher& cipher, InboundState& in,
            PacketView& pkt, std::uint8_t& next_header, std::uint64_t* seq_out = nullptr);

// RFC 3948: what a datagram received on UDP 4500 carries.
enum class UdpPayload : std::uint8_t { kIke, kEsp, kKeepalive, kMalformed };
// For kIke, `inner` is the IKE message after the non-ESP marker; for kEsp, the ESP packet.
UdpPayload ClassifyUdpEncap(std::span<const std::uint8_t> datagram,
                            std::span<const std::uint8_t>& inner);

}  // namespace spigot::esp
