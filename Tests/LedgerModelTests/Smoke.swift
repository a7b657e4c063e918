import XCTest
@testable import LedgerModel
final class SmokeTests: XCTestCase { func testNothing() {} }
