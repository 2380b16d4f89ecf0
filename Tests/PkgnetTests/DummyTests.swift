import XCTest
@testable import PkgnetCore
final class DummyTests: XCTestCase { func testX() { XCTAssertEqual(coreDummy("{\"a\":3}"), 3) } }
