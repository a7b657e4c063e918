import Foundation
import LedgerServer
import LedgerStorage
import XCTest

/// `FrameParser` gives back exactly the frames it was given, whatever the pieces the stream
/// arrives in, whether bytes are fed or received in place, and whether a payload is small
/// (through the buffer) or large (read straight into its own array).
final class FrameParserTests: XCTestCase {
    func randomFrames(_ rng: inout SplitMix64, count: Int) -> [Frame] {
        let types: [FrameType] = [.batch, .ping, .binaryBatch, .hello]
        return (0..<count).map { k in
            let size: Int
            switch rng.next() % 4 {
            case 0: size = 0
            case 1: size = Int(rng.next() % 300)
            case 2: size = FrameParser.inPlacePayloadBytesMin - 1 + Int(rng.next() % 3)
            default: size = FrameParser.inPlacePayloadBytesMin + Int(rng.next() % 400_000)
            }
            var payload = [UInt8](repeating: 0, count: size)
            for i in stride(from: 0, to: size, by: 7) { payload[i] = UInt8(truncatingIfNeeded: rng.next()) }
            if size > 0 { payload[size - 1] = UInt8(truncatingIfNeeded: k) }
            return Frame(types[Int(rng.next() % UInt64(types.count))], id: rng.next(), payload: payload)
        }
    }

    func testFramesComeBackWholeAndInOrderWhateverThePiecesAndPath() throws {
        for seed: UInt64 in [1, 2, 3, 4, 5, 6] {
            var rng = SplitMix64(seed: seed)
            let frames = randomFrames(&rng, count: 40)
            let stream = frames.flatMap { $0.encoded }
            var parser = FrameParser(payloadBytesMax: 1 << 20)
            var got = [Frame]()
            var at = 0
            while at < stream.count {
                // Pieces from one byte to a few reads' worth, alternately fed and received.
                let piece = rng.next() % 5 == 0 ? 1 + Int(rng.next() % 20) : 1 + Int(rng.next() % 300_000)
                if rng.next() % 2 == 0 {
                    let end = min(stream.count, at + piece)
                    stream[at..<end].withUnsafeBytes { parser.feed($0) }
                    at = end
                } else {
                    let n = try parser.receive { buffer throws(SocketError) in
                        let k = min(buffer.count, piece, stream.count - at)
                        stream.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!.advanced(by: at), byteCount: k) }
                        return k
                    }
                    XCTAssertGreaterThan(n, 0, "seed \(seed): a read with bytes left returns some")
                    at += n
                }
                while let f = try parser.next() { got.append(f) }
            }
            XCTAssertEqual(got.count, frames.count, "seed \(seed)")
            for (k, (a, b)) in zip(got, frames).enumerated() where a != b {
                XCTFail("seed \(seed): frame \(k) differs: \(a.type) id \(a.id) \(a.payload.count) bytes, sent \(b.type) id \(b.id) \(b.payload.count) bytes")
                break
            }
            XCTAssertEqual(parser.bufferedBytes, 0, "seed \(seed)")
        }
    }

    /// A stream that ends inside a large frame reports every byte of it held, header included,
    /// as the server logs it; a bad header is refused once the header is in, before its payload.
    func testACutLargeFrameCountsItsBytesAndABadHeaderIsRefusedAtItsOffset() throws {
        let first = Frame(.ping, id: 1, payload: [1, 2, 3])
        let large = Frame(.batch, id: 2, payload: [UInt8](repeating: 0x41, count: 300_000)).encoded
        var parser = FrameParser(payloadBytesMax: 1 << 20)
        parser.feed(first.encoded + large.prefix(100_000))
        XCTAssertEqual(try parser.next(), first)
        XCTAssertNil(try parser.next())
        XCTAssertEqual(parser.bufferedBytes, 100_000)
        parser.feed(Array(large[100_000..<250_000]))
        XCTAssertNil(try parser.next())
        XCTAssertEqual(parser.bufferedBytes, 250_000)

        var bad = FrameParser(payloadBytesMax: 1 << 20)
        var header = Frame(.batch, id: 3, payload: [UInt8](repeating: 0, count: 200_000)).encoded.prefix(16)
        header[4] = 0x7E
        bad.feed(first.encoded + Array(header))
        XCTAssertEqual(try bad.next(), first)
        XCTAssertThrowsError(try bad.next()) { error in
            let e = error as? FrameError
            XCTAssertEqual(e?.offset, UInt64(first.encoded.count))
            XCTAssertEqual(e?.reason, "unknown frame type 0x7e")
        }
    }
}
