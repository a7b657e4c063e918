import Foundation
import LedgerModel
import LedgerWorkload
import XCTest

final class WorkloadGeneratorTests: XCTestCase {
    func testSameSeedGivesIdenticalEventsAndDifferentSeedsDiffer() {
        for seed: UInt64 in [1, 42, 0xDEAD_BEEF] {
            let config = WorkloadConfiguration(seed: seed, events: 20_000)
            let first = generate(config)
            let second = generate(config)
            XCTAssertEqual(first, second, "seed \(seed): two runs differ")
            var other = config
            other.seed = seed + 1
            let different = generate(other)
            let equalCount = zip(first, different).filter { $0 == $1 }.count
            // Markers at the same indices are equal by design; almost nothing else may be.
            XCTAssertLessThan(equalCount, 100, "seed \(seed) vs \(seed + 1): \(equalCount) equal events")
        }
    }

    func testOutputIsPinned() {
        // Guards "same seed, same bytes on any machine, in any version": a change here changes
        // every generated workload and benchmark fixture, so it must be deliberate.
        let events = generate(WorkloadConfiguration(seed: 7, events: 2_000))
        let bytes = encoded(events)
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 // FNV-1a
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        XCTAssertEqual(bytes.count, 650_392, "seed 7: NDJSON size changed")
        XCTAssertEqual(hash, 4_514_568_335_794_368_728, "seed 7: NDJSON content changed")
    }

    func testEventCountIsExact() {
        for count in [0, 1, 2, 3, 5, 17, 100, 1_000, 12_345] {
            let config = WorkloadConfiguration(seed: UInt64(count), events: count)
            var generator = WorkloadGenerator(config)
            var n = 0
            while generator.next() != nil { n += 1 }
            XCTAssertEqual(n, count, "seed \(config.seed): wrong number of events")
            XCTAssertNil(generator.next(), "seed \(config.seed): events after the end")
            XCTAssertEqual(generator.emitted, count, "seed \(config.seed)")
            XCTAssertEqual(generator.countsByType.values.reduce(0, +), count, "seed \(config.seed)")
        }
    }

    func testEventMixIsRealistic() {
        for seed: UInt64 in [1, 2, 3] {
            let events = generate(WorkloadConfiguration(seed: seed, events: 100_000))
            var counts = [EventType: Int]()
            for event in events { counts[event.type, default: 0] += 1 }
            let share = { (type: EventType) in fraction(counts[type] ?? 0, of: events.count) }
            XCTAssert((0.70...0.90).contains(share(.validated)), "seed \(seed): validated \(share(.validated))")
            XCTAssert((0.03...0.15).contains(share(.issued)), "seed \(seed): issued \(share(.issued))")
            XCTAssert((0.01...0.10).contains(share(.rejected)), "seed \(seed): rejected \(share(.rejected))")
            XCTAssert((0.005...0.06).contains(share(.refreshed)), "seed \(seed): refreshed \(share(.refreshed))")
            XCTAssert((0.002...0.03).contains(share(.revoked)), "seed \(seed): revoked \(share(.revoked))")
            let tokenTypes = Set(events.compactMap(\.tokenType))
            XCTAssertEqual(tokenTypes, ["access", "refresh", "api_key"], "seed \(seed)")
            let reasons = Set(events.filter { $0.type == .rejected }.compactMap(\.reason))
            XCTAssert(reasons.isSuperset(of: ["revoked", "invalid_signature", "malformed", "missing", "insufficient_scope"]),
                      "seed \(seed): \(reasons)")
            let revocationReasons = Set(events.filter { $0.type == .revoked }.compactMap(\.reason))
            XCTAssert(revocationReasons.isSuperset(of: ["logout", "admin", "compromised"]), "seed \(seed): \(revocationReasons)")
        }
    }

    func testExpiryShowsOnceTokensLiveLongEnough() {
        // Every token is fresh at the start; after the 5-minute mobile lifetime (~100k events)
        // returning users and long-running clients present expired tokens and renew them.
        let seed: UInt64 = 13
        let events = generate(WorkloadConfiguration(seed: seed, events: 400_000))
        let tail = events[200_000...]
        let share = { (type: EventType) in fraction(tail.filter { $0.type == type }.count, of: tail.count) }
        XCTAssert((0.005...0.08).contains(share(.expired)), "seed \(seed): expired \(share(.expired))")
        let rejectedExpired = fraction(tail.filter { $0.type == .rejected && $0.reason == "expired" }.count, of: tail.count)
        XCTAssert((0.001...0.03).contains(rejectedExpired), "seed \(seed): rejected as expired \(rejectedExpired)")
        XCTAssert((0.70...0.90).contains(share(.validated)), "seed \(seed): validated \(share(.validated))")
        // A refusal as expired is followed, soon, by the same client's renewal.
        var renewedAfter401 = 0
        for (i, event) in events.enumerated() where event.type == .rejected && event.reason == "expired" && i + 3 < events.count {
            let window = events[(i + 1)...(i + 3)]
            if window.contains(where: { ($0.type == .refreshed && $0.parent == event.token) || ($0.type == .issued && $0.sub == event.sub) }) {
                renewedAfter401 += 1
            }
        }
        XCTAssertGreaterThan(renewedAfter401, 100, "seed \(seed)")
    }

    func testEveryTokenEventHasTokenReleaseAndConsistentFields() {
        let seed: UInt64 = 11
        let config = WorkloadConfiguration(seed: seed, events: 50_000)
        for (i, event) in generate(config).enumerated() {
            let at = "seed \(seed) event \(i) \(NDJSONEncoder.line(event))"
            if event.type.isMarker {
                XCTAssertNil(event.token, at)
                XCTAssertNotNil(event.marker, at)
                continue
            }
            XCTAssertNil(event.marker, at)
            XCTAssertFalse(event.token?.isEmpty ?? true, at)
            XCTAssertNotNil(event.release, at)
            XCTAssert(["stable", "canary"].contains(event.track ?? ""), at)
            XCTAssertNotNil(event.gateway, at)
            switch event.type {
            case .validated:
                XCTAssertEqual(event.status, 200, at)
                XCTAssertNotNil(event.route, at)
                XCTAssertNotNil(event.clientIP, at)
            case .rejected:
                XCTAssert([401, 403].contains(event.status ?? 0), at)
                XCTAssertNotNil(event.reason, at)
                XCTAssertEqual(event.status == 403, event.reason == "insufficient_scope", at)
            case .issued, .refreshed:
                XCTAssertEqual(event.status, 200, at)
                XCTAssertGreaterThan(event.exp ?? 0, event.ts, at)
                XCTAssertNotNil(event.sub, at)
                XCTAssertNotNil(event.clientID, at)
                XCTAssertNotNil(event.iss, at)
                XCTAssertNotNil(event.scope, at)
                XCTAssertEqual(event.parent != nil, event.type == .refreshed, at)
            case .revoked:
                XCTAssertNotNil(event.reason, at)
            case .expired:
                XCTAssertNil(event.status, at)
            default:
                XCTFail(at)
            }
        }
    }

    func testTokenIDsAreJTIsOrJWTsOrTheMissingFingerprint() {
        let seed: UInt64 = 12
        let base64URL = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for event in generate(WorkloadConfiguration(seed: seed, events: 30_000)) {
            guard let token = event.token else { continue }
            let ok = (token.count == 22 && token.allSatisfy(base64URL.contains))
                || token.hasPrefix("eyJ") && token.split(separator: ".").count == 3
                || token == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" && event.reason == "missing"
            XCTAssert(ok, "seed \(seed): unexpected token \(token) in \(NDJSONEncoder.line(event))")
        }
    }

    func testRefreshedParentsWereCreatedEarlierAndBecomeSuperseded() {
        for seed: UInt64 in [3, 4] {
            var created = Set<String>()
            var superseded = Set<String>()
            var refreshes = 0
            for (i, event) in generate(WorkloadConfiguration(seed: seed, events: 100_000)).enumerated() {
                let at = "seed \(seed) event \(i)"
                switch event.type {
                case .issued:
                    created.insert(event.token!)
                case .refreshed:
                    refreshes += 1
                    let parent = event.parent!
                    XCTAssert(created.contains(parent), "\(at): parent \(parent) never issued or refreshed before")
                    XCTAssertFalse(superseded.contains(parent), "\(at): parent \(parent) refreshed twice")
                    XCTAssertNotEqual(parent, event.token, at)
                    XCTAssertFalse(created.contains(event.token!), "\(at): refreshed token id reused")
                    superseded.insert(parent)
                    created.insert(event.token!)
                case .validated:
                    // Clients switch to the new token at once.
                    if superseded.contains(event.token!) { XCTFail("\(at): superseded token validated") }
                default:
                    break
                }
            }
            XCTAssertGreaterThan(refreshes, 500, "seed \(seed)")
        }
    }

    func testExpiredEventsComeAfterExpiryForTokensStillActive() {
        let seed: UInt64 = 5
        var expiry = [String: Int64]()
        var ended = Set<String>()
        var expiredCount = 0
        for (i, event) in generate(WorkloadConfiguration(seed: seed, events: 250_000)).enumerated() {
            let at = "seed \(seed) event \(i) \(NDJSONEncoder.line(event))"
            switch event.type {
            case .issued, .refreshed:
                expiry[event.token!] = event.exp
                if let parent = event.parent { ended.insert(parent) }
            case .revoked:
                ended.insert(event.token!)
            case .expired:
                expiredCount += 1
                guard let exp = expiry[event.token!] else { XCTFail("\(at): never issued"); continue }
                XCTAssertGreaterThanOrEqual(event.ts, exp, at)
                XCTAssertFalse(ended.contains(event.token!), "\(at): expired after it was revoked or superseded")
                ended.insert(event.token!)
            default:
                break
            }
        }
        XCTAssertGreaterThan(expiredCount, 100, "seed \(seed)")
    }

    func testTimestampsAdvanceFewMillisecondsWithSmallSkew() {
        let seed: UInt64 = 6
        let config = WorkloadConfiguration(seed: seed, events: 50_000, startMs: 1_000_000)
        let events = generate(config)
        XCTAssertEqual(events.first?.ts, 1_000_000, "seed \(seed): first event (a marker) is at the start time")
        var latest = config.startMs
        var backwards = 0
        for (i, event) in events.enumerated() {
            XCTAssertGreaterThanOrEqual(event.ts, latest - 10, "seed \(seed) event \(i): clock went back more than skew")
            if event.ts < latest { backwards += 1 }
            latest = max(latest, event.ts)
        }
        let meanStepMs = Double(latest - 1_000_000) / Double(events.count)
        XCTAssert((2.0...4.0).contains(meanStepMs), "seed \(seed): mean step \(meanStepMs) ms")
        XCTAssertGreaterThan(backwards, 0, "seed \(seed): gateway clock skew should reorder some events")
    }

    func testTokensRecurWithTemporalLocality() {
        // What the ledger's per-block dictionaries rely on: most reuses of a token are close.
        let seed: UInt64 = 8
        var lastSeen = [String: Int]()
        var gaps = [Int]()
        for (i, event) in generate(WorkloadConfiguration(seed: seed, events: 100_000)).enumerated() {
            guard let token = event.token else { continue }
            if let previous = lastSeen[token] { gaps.append(i - previous) }
            lastSeen[token] = i
        }
        gaps.sort()
        let p90 = gaps[gaps.count * 9 / 10]
        XCTAssertLessThan(p90, 4_096, "seed \(seed): 90th percentile reuse distance \(p90) events")
        let meanUses = Double(gaps.count + lastSeen.count) / Double(lastSeen.count)
        XCTAssert((4...20).contains(meanUses), "seed \(seed): \(meanUses) events per token")
    }

    func testOutOfRangeConfigurationIsClampedNotTrapped() {
        let config = WorkloadConfiguration(seed: 1, events: -5, tokens: 0, startMs: -1, subjects: -3)
        XCTAssertEqual(config.effective, WorkloadConfiguration(seed: 1, events: 0, tokens: 1, startMs: 0, subjects: 1))
        var generator = WorkloadGenerator(config)
        XCTAssertNil(generator.next())
        let one = generate(WorkloadConfiguration(seed: 1, events: 3_000, tokens: 0, subjects: 0))
        XCTAssertEqual(one.count, 3_000)
        XCTAssertEqual(Set(one.compactMap(\.sub).filter { $0.hasPrefix("user-") }), ["user-00000"])
    }

    func testClientAddressIsStablePerSubject() {
        let seed: UInt64 = 9
        var address = [String: String]()
        for event in generate(WorkloadConfiguration(seed: seed, events: 50_000)) {
            guard let sub = event.sub, sub.hasPrefix("user-"), let ip = event.clientIP else { continue }
            if let known = address[sub] { XCTAssertEqual(known, ip, "seed \(seed): \(sub) changed address") }
            address[sub] = ip
        }
        XCTAssertGreaterThan(address.count, 1_000, "seed \(seed): too few users")
    }

    func testRequestIDsAreRare() {
        let seed: UInt64 = 10
        let events = generate(WorkloadConfiguration(seed: seed, events: 50_000))
        let share = fraction(events.filter { $0.requestID != nil }.count, of: events.count)
        XCTAssert(share > 0 && share < 0.02, "seed \(seed): request_id on \(share) of events")
    }
}
