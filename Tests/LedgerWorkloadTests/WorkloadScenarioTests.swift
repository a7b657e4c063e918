import Foundation
import LedgerModel
import LedgerWorkload
import XCTest

final class WorkloadScenarioTests: XCTestCase {
    func testDefaultStartIsMidnightOf2026_11_24() {
        // Days since the epoch by the civil-calendar algorithm (H. Hinnant), not by a date library.
        let (y, m, d) = (2026, 11, 24)
        let year = m <= 2 ? y - 1 : y
        let era = year / 400
        let yearOfEra = year - era * 400
        let dayOfYear = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        XCTAssertEqual(WorkloadConfiguration.defaultStartMs, Int64(days) * 86_400_000)
        XCTAssertEqual(WorkloadConfiguration().startMs, 1_795_478_400_000)
    }

    func testMarkersAppearInOrderUniqueAndWhereTheScenarioSays() {
        for (seed, count) in [(UInt64(1), 1_000), (2, 100), (3, 10), (4, 100_003)] {
            let config = WorkloadConfiguration(seed: seed, events: count)
            let scenario = WorkloadScenario(config)
            let events = generate(config)
            let markers = events.enumerated().filter { $0.element.type.isMarker }
            XCTAssertEqual(markers.map(\.offset), scenario.markers.map(\.eventIndex), "seed \(seed) events \(count)")
            XCTAssertEqual(markers.map(\.element.marker!), scenario.markers.map(\.id), "seed \(seed) events \(count)")
            XCTAssertEqual(Set(scenario.markers.map(\.id)).count, scenario.markers.count, "seed \(seed): duplicate marker ids")
            XCTAssertEqual(scenario.markers.map(\.id), scenario.markers.map(\.id).sorted(), "seed \(seed): markers out of order")
            if count >= 1_000 {
                XCTAssertEqual(scenario.markers.map(\.id), ["m-0001", "m-0002", "m-0003", "m-0004", "m-0005"], "seed \(seed)")
            }
            for (index, event) in markers {
                let marker = scenario.markers.first { $0.eventIndex == index }!
                XCTAssertEqual(event.type, marker.type, "seed \(seed)")
                XCTAssertEqual(event.release, marker.release, "seed \(seed)")
                XCTAssertEqual(event.track, marker.track, "seed \(seed)")
                XCTAssertEqual(event.weight, marker.weight, "seed \(seed)")
                XCTAssertNil(event.token, "seed \(seed)")
            }
        }
    }

    func testScenarioDescribesTheStory() {
        let scenario = WorkloadScenario(WorkloadConfiguration(seed: 1, events: 1_000))
        XCTAssertEqual(scenario.initialRelease, "v1.4.2")
        XCTAssertEqual(scenario.stableRelease, "v1.4.3")
        XCTAssertEqual(scenario.badCanaryRelease, "v1.5.0")
        XCTAssertEqual(scenario.badCanaryMarker, "m-0004")
        XCTAssertEqual(scenario.lastGoodMarker, "m-0003")
        XCTAssertEqual(scenario.canaryGateway, "gw-06")
        XCTAssertEqual(scenario.markers.map(\.eventIndex), [0, 50, 400, 600, 850])
        XCTAssertEqual(scenario.markers.map(\.weight), [100, 10, 100, 10, 25])
        XCTAssertEqual(scenario.markers.map(\.type), [.deploy, .deploy, .promote, .deploy, .deploy])
        XCTAssertNotNil(scenario.compromised)
        XCTAssertNotNil(scenario.rawJWT)
        XCTAssertEqual(scenario, WorkloadGenerator(WorkloadConfiguration(seed: 1, events: 1_000)).scenario)
    }

    func testTinyWorkloadsKeepOnlyWholeStories() {
        for count in 0..<40 {
            let scenario = WorkloadScenario(WorkloadConfiguration(seed: 1, events: count))
            let indices = scenario.markers.map(\.eventIndex) + (scenario.compromised.map {
                [$0.issuedIndex, $0.revokedIndex] + $0.validatedIndices + $0.revalidatedIndices + $0.rejectedIndices
            } ?? []) + (scenario.rawJWT.map { [$0.issuedIndex] + $0.validatedIndices } ?? [])
            XCTAssertEqual(Set(indices).count, indices.count, "events \(count): two scripted events share an index")
            XCTAssert(indices.allSatisfy { $0 < count }, "events \(count): scripted event past the end")
            XCTAssertEqual(scenario.markers.first?.id, count > 0 ? "m-0001" : nil, "events \(count)")
            if let compromised = scenario.compromised {
                XCTAssertEqual(compromised.revalidatedIndices.count, 2, "events \(count)")
                XCTAssertNotNil(scenario.badCanaryMarker, "events \(count)")
            }
            _ = generate(WorkloadConfiguration(seed: 1, events: count))
        }
        XCTAssertNil(WorkloadScenario(WorkloadConfiguration(seed: 1, events: 5)).compromised)
    }

    func testBadCanaryRejectsAtLeastThreeTimesAsOftenAsStable() {
        for seed: UInt64 in [1, 2, 3] {
            let config = WorkloadConfiguration(seed: seed, events: 100_000)
            let scenario = WorkloadScenario(config)
            let events = generate(config)
            let stable = rejectionRate(events) { $0.track == "stable" }
            let bad = rejectionRate(events) { $0.track == "canary" && $0.release == scenario.badCanaryRelease }
            let canary = rejectionRate(events) { $0.track == "canary" }
            let goodCanary = rejectionRate(events) { $0.track == "canary" && $0.release == scenario.stableRelease }
            XCTAssertGreaterThan(bad.requests, 1_000, "seed \(seed)")
            XCTAssertGreaterThan(goodCanary.requests, 500, "seed \(seed)")
            XCTAssertGreaterThanOrEqual(bad.rate, 3 * stable.rate, "seed \(seed): bad canary \(bad.rate) vs stable \(stable.rate)")
            XCTAssertGreaterThanOrEqual(canary.rate, 3 * stable.rate, "seed \(seed): canary \(canary.rate) vs stable \(stable.rate)")
            XCTAssertLessThan(goodCanary.rate, 1.5 * stable.rate, "seed \(seed): the good canary \(goodCanary.rate) misbehaves")
            let badSignatures = events.filter { $0.release == scenario.badCanaryRelease && $0.reason == "invalid_signature" }
            XCTAssert(badSignatures.allSatisfy { $0.status == 401 && $0.gateway == scenario.canaryGateway }, "seed \(seed)")
            // Canary traffic exists only while a canary is deployed, and only on the canary gateway.
            let canaryIndices = events.indices.filter { events[$0].track == "canary" && !events[$0].type.isMarker }
            XCTAssert(canaryIndices.allSatisfy { events[$0].gateway == scenario.canaryGateway }, "seed \(seed)")
            let m2 = scenario.markers[1].eventIndex, m3 = scenario.markers[2].eventIndex, m4 = scenario.markers[3].eventIndex
            XCTAssert(canaryIndices.allSatisfy { ($0 > m2 && $0 < m3 + 5) || $0 > m4 }, "seed \(seed)")
        }
    }

    func testCompromisedTokenIsRevokedThenValidatedByTheBadCanary() {
        for seed: UInt64 in [1, 99] {
            let config = WorkloadConfiguration(seed: seed, events: 20_000)
            let scenario = WorkloadScenario(config)
            let events = generate(config)
            let story = scenario.compromised!
            let issued = events[story.issuedIndex]
            XCTAssertEqual(issued.type, .issued, "seed \(seed)")
            XCTAssertEqual(issued.token, story.token, "seed \(seed)")
            XCTAssertEqual(issued.tokenType, "api_key", "seed \(seed)")
            for i in story.validatedIndices {
                XCTAssertEqual(events[i].type, .validated, "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].clientIP, story.clientIP, "seed \(seed) event \(i)")
            }
            let revoked = events[story.revokedIndex]
            XCTAssertEqual(revoked.type, .revoked, "seed \(seed)")
            XCTAssertEqual(revoked.reason, "compromised", "seed \(seed)")
            XCTAssertEqual(revoked.token, story.token, "seed \(seed)")
            XCTAssertEqual(story.revalidatedIndices.count, 2, "seed \(seed)")
            for i in story.revalidatedIndices {
                XCTAssertGreaterThan(i, story.revokedIndex, "seed \(seed)")
                XCTAssertEqual(events[i].type, .validated, "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].token, story.token, "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].release, scenario.badCanaryRelease, "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].gateway, scenario.canaryGateway, "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].clientIP, story.attackerIP, "seed \(seed) event \(i)")
            }
            for i in story.rejectedIndices {
                XCTAssertEqual(events[i].type, .rejected, "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].reason, "revoked", "seed \(seed) event \(i)")
                XCTAssertEqual(events[i].track, "stable", "seed \(seed) event \(i)")
            }
            let uses = events.indices.filter { events[$0].token == story.token }
            XCTAssertEqual(Set(uses), Set([story.issuedIndex, story.revokedIndex] + story.validatedIndices
                                              + story.revalidatedIndices + story.rejectedIndices), "seed \(seed)")
        }
    }

    func testOnlyTheBadCanaryAcceptsRevokedTokens() {
        for seed: UInt64 in [1, 2] {
            let config = WorkloadConfiguration(seed: seed, events: 100_000)
            let scenario = WorkloadScenario(config)
            var revoked = Set<String>()
            var accepted = 0, refused = 0
            for (i, event) in generate(config).enumerated() {
                guard let token = event.token else { continue }
                if event.type == .revoked { revoked.insert(token); continue }
                guard revoked.contains(token) else { continue }
                if event.type == .validated {
                    accepted += 1
                    XCTAssertEqual(event.release, scenario.badCanaryRelease, "seed \(seed) event \(i): revoked token accepted")
                    XCTAssertEqual(event.track, "canary", "seed \(seed) event \(i)")
                } else if event.type == .rejected {
                    refused += 1
                }
            }
            XCTAssertGreaterThan(accepted, 2, "seed \(seed): the canary's revocation bug never fired beyond the script")
            XCTAssertGreaterThan(refused, 20, "seed \(seed): stale clients never presented revoked tokens")
        }
    }

    func testRawJWTsAppearAndLookReal() throws {
        let config = WorkloadConfiguration(seed: 3, events: 1_000)
        let scenario = WorkloadScenario(config)
        let events = generate(config)
        let story = try XCTUnwrap(scenario.rawJWT)
        XCTAssertEqual(events[story.issuedIndex].type, .issued)
        XCTAssertEqual(events[story.issuedIndex].token, story.token)
        for i in story.validatedIndices {
            XCTAssertEqual(events[i].type, .validated, "event \(i)")
            XCTAssertEqual(events[i].token, story.token, "event \(i)")
            XCTAssertLessThan(events[i].ts, events[story.issuedIndex].exp!, "event \(i): used after expiry")
        }
        try assertLooksLikeJWT(story.token, sub: story.sub)

        // Ordinary traffic logs a raw JWT now and then too (1 in 500 web logins).
        var organic = Set<String>()
        let seed: UInt64 = 21
        for event in generate(WorkloadConfiguration(seed: seed, events: 400_000)) where event.type == .issued {
            if let token = event.token, token.hasPrefix("eyJ") { organic.insert(token) }
        }
        XCTAssertGreaterThanOrEqual(organic.count, 3, "seed \(seed): \(organic.count) raw JWTs")
        for token in organic { try assertLooksLikeJWT(token, sub: nil) }
    }

    private func assertLooksLikeJWT(_ token: String, sub: String?) throws {
        var bytes = token
        let looksLikeJWT = bytes.withUTF8 { TokenFingerprint.looksLikeJWT(UnsafeRawBufferPointer($0)) }
        XCTAssert(looksLikeJWT, token)
        XCTAssertTrue(TokenFingerprint.normalize(token).hasPrefix("sha256:"), token)
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        XCTAssertEqual(parts.count, 3, token)
        let header = try XCTUnwrap(JSONSerialization.jsonObject(with: XCTUnwrap(base64URLDecode(parts[0]))) as? [String: Any])
        XCTAssertEqual(header["alg"] as? String, "RS256")
        XCTAssertEqual(header["typ"] as? String, "JWT")
        let claims = try XCTUnwrap(JSONSerialization.jsonObject(with: XCTUnwrap(base64URLDecode(parts[1]))) as? [String: Any])
        XCTAssertNotNil(claims["exp"] as? Int)
        XCTAssertNotNil(claims["jti"] as? String)
        if let sub { XCTAssertEqual(claims["sub"] as? String, sub) }
        XCTAssertEqual(try XCTUnwrap(base64URLDecode(parts[2])).count, 256, "RSA-2048 signature length")
    }
}
