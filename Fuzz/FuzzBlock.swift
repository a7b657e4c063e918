// libFuzzer entry for the block decoders: block and segment headers, LZ4 decompression of
// untrusted bytes, and the dense payload decoder. None may trap; a payload that decodes must
// survive a canonical round trip (decode → encode → decode gives the same events).
//
// Input layout: byte 0 selects the mode; 0 = the rest is a raw payload, 1 = bytes 1-3 are a
// claimed raw size (little-endian, < 16 MiB) and the rest an LZ4 block, anything else = the
// rest is tried as a block header followed by its stored payload.
import LedgerModel
import LedgerStorage

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBlock(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let all = UnsafeRawBufferPointer(start: data, count: size)
    let rest = UnsafeRawBufferPointer(rebasing: all[1...])
    switch all[0] {
    case 0:
        roundTrip(rest)
    case 1:
        guard rest.count >= 3 else { return 0 }
        let claimed = Int(rest[0]) | Int(rest[1]) << 8 | Int(rest[2]) << 16
        var raw = [UInt8](repeating: 0, count: claimed)
        let ok = raw.withUnsafeMutableBytes { LZ4.decompress(UnsafeRawBufferPointer(rebasing: rest[3...]), into: $0) }
        if ok { raw.withUnsafeBytes { roundTrip($0) } }
    default:
        _ = SegmentHeader.decode(rest)
        if case let .success(header) = BlockHeader.decode(rest) {
            let stored = UnsafeRawBufferPointer(rebasing: rest[min(rest.count, BlockHeader.size)...])
            if stored.count >= Int(header.storedBytes),
               case let .success(raw) = BlockReader.rawPayload(header: header, stored: UnsafeRawBufferPointer(rebasing: stored[0..<Int(header.storedBytes)])) {
                _ = BlockReader.decode(header: header, raw: raw)
            }
        }
    }
    return 0
}

private func roundTrip(_ payload: UnsafeRawBufferPointer) {
    guard let block = try? BlockPayloadDecoder.decode(payload) else { return }
    let events = block.events
    var encoder = BlockPayloadEncoder(expectedEvents: events.count)
    for e in events { encoder.append(e) }
    let encoded = encoder.finish()
    guard let again = try? BlockPayloadDecoder.decode(encoded) else {
        fatalError("re-encoded payload of \(events.count) events does not decode")
    }
    precondition(again.events == events, "canonical round trip changed the events")
    // Every event also renders as NDJSON without trapping.
    let writer = BlockNDJSONWriter(again)
    var out = [UInt8]()
    for i in 0..<again.count { writer.append(i, seq: UInt64(i + 1), receivedAt: 0, to: &out) }
}
