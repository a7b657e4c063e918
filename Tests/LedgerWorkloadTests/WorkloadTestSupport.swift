import Foundation
import Glibc
import LedgerModel
import LedgerWorkload
import XCTest

/// Generates all events of `config` (the tests' workloads are small enough to hold in memory).
func generate(_ config: WorkloadConfiguration) -> [Event] {
    var generator = WorkloadGenerator(config)
    var events = [Event]()
    events.reserveCapacity(config.events)
    while let event = generator.next() { events.append(event) }
    return events
}

/// The bytes `writeNDJSON` produces for `config`, through a temporary file.
func writtenNDJSON(_ config: WorkloadConfiguration, progress: ((Int) -> Void)? = nil,
                   file: StaticString = #filePath, line: UInt = #line) throws -> (bytes: [UInt8], summary: WorkloadSummary) {
    let path = NSTemporaryDirectory() + "tokenledger-workload-\(getpid())-\(config.seed)-\(config.events).ndjson"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    XCTAssertGreaterThanOrEqual(fd, 0, "cannot create \(path)", file: file, line: line)
    defer { unlink(path) }
    let summary: WorkloadSummary
    do {
        defer { close(fd) }
        summary = try WorkloadGenerator.writeNDJSON(config, to: fd, progress: progress)
    }
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    return ([UInt8](data), summary)
}

/// The NDJSON of `events` through the model's own encoder: the reference for `writeNDJSON`.
func encoded(_ events: [Event]) -> [UInt8] {
    var out = [UInt8]()
    for event in events { NDJSONEncoder.append(event, to: &out) }
    return out
}

func fraction(_ part: Int, of whole: Int) -> Double { whole == 0 ? 0 : Double(part) / Double(whole) }

/// Rejections over requests (validated + rejected) of the events matching `where`.
func rejectionRate(_ events: [Event], where matches: (Event) -> Bool) -> (rate: Double, requests: Int) {
    var requests = 0, rejected = 0
    for event in events where (event.type == .validated || event.type == .rejected) && matches(event) {
        requests += 1
        if event.type == .rejected { rejected += 1 }
    }
    return (fraction(rejected, of: requests), requests)
}

/// Decodes one unpadded base64url part (for looking inside generated JWTs).
func base64URLDecode(_ text: Substring) -> Data? {
    var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while base64.count % 4 != 0 { base64 += "=" }
    return Data(base64Encoded: base64)
}
