import Foundation
import XCTest
@testable import PkgnetCore

/// Inputs the fuzz targets (scripts/fuzz.sh) found or that once got through:
/// each must now be refused with a PkgnetError, never load, crash or hang.
/// New findings go to Fuzz/regressions/loader-<what>, optionally with a
/// loader-<what>.expect file holding the message fragment the error must contain.
final class FuzzRegressionTests: XCTestCase {
    func testLoaderRegressionsAreRefused() throws {
        let folder = Fixtures.repo.appendingPathComponent("Fuzz/regressions")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasPrefix("loader-") && !$0.hasSuffix(".expect") }.sorted()
        XCTAssertFalse(names.isEmpty, "no regression inputs in \(folder.path)")
        for name in names {
            let bytes = try Data(contentsOf: folder.appendingPathComponent(name))
            let expected = try? String(contentsOf: folder.appendingPathComponent(name + ".expect"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            do {
                _ = try bytes.withUnsafeBytes { try Model(bytes: $0, source: name) }
                XCTFail("\(name) loaded")
            } catch let error as PkgnetError {
                XCTAssertFalse(error.message.isEmpty, name)
                if let expected { XCTAssertTrue(error.message.contains(expected), "\(name): '\(error.message)' lacks '\(expected)'") }
            }
        }
    }
}
