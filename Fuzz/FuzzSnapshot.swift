// libFuzzer entry for the snapshot decoders: header, chunked LZ4 body and the body decoder.
// None may trap, and a body that decodes must give a projection every query can walk (summary,
// every token view, anomalies, metrics, rollback plans, applying more events) and that
// re-encodes to the same bytes.
//
// Input layout: byte 0 selects the mode; 0 = the rest is a raw body, 1 = the rest is a stored
// (chunked LZ4) body of claimed raw size given by bytes 1-3, anything else = a header.
import LedgerModel
import LedgerProjection

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSnapshot(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let all = UnsafeRawBufferPointer(start: data, count: size)
    let rest = UnsafeRawBufferPointer(rebasing: all[1...])
    switch all[0] {
    case 0:
        exercise(rest)
    case 1:
        guard rest.count >= 3 else { return 0 }
        let claimed = UInt64(rest[0]) | UInt64(rest[1]) << 8 | UInt64(rest[2]) << 16
        if let raw = try? SnapshotBody.decompress(Array(rest[3...]), rawBytes: claimed) {
            raw.withUnsafeBytes { exercise($0) }
        }
    default:
        if case let .success(h) = SnapshotHeader.decode(Array(rest)) {
            guard case let .success(again) = SnapshotHeader.decode(h.encode()), again == h else { fatalError("header round trip") }
        }
    }
    return 0
}

func exercise(_ body: UnsafeRawBufferPointer) {
    guard let p = try? SnapshotBody.decode(body, options: ProjectionOptions()) else { return }
    let encoded = SnapshotBody.encode(p)
    guard let again = encoded.withUnsafeBytes({ try? SnapshotBody.decode($0, options: ProjectionOptions()) }),
          SnapshotBody.encode(again) == encoded else { fatalError("a decoded body must re-encode to what decodes the same") }
    for clock in [Int64.min, 0, p.headClock, Int64.max] {
        _ = p.summary(clock: clock)
        p.forEachToken(clock: clock) { v in _ = p.refreshChain(of: v.id) }
        _ = p.prometheusText(clock: clock)
    }
    _ = p.anomalies
    for m in p.markers { _ = try? p.rollbackPlan(to: m.marker, policy: .revoke) }
    var seq = p.lastSeq
    p.forEachToken(clock: 0) { v in
        seq &+= 1
        p.apply(Event(type: .validated, ts: 0, token: v.id, release: "r", track: "canary"), seq: seq)
        seq &+= 1
        p.apply(Event(type: .refreshed, ts: 1, token: v.id + "x", parent: v.id), seq: seq)
    }
}
