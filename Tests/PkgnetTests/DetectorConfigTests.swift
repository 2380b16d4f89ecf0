// Loading errors of darknet cfg and weights files: each a PkgnetError with
// the right status and a message naming the file, line and layer; never a
// crash. Then the real Yolo-Fastest 1.1 files of ../shared when present.
import Foundation
import XCTest
@testable import PkgnetCore

final class DetectorConfigTests: XCTestCase {
    /// A valid two-layer network, edited per case.
    private let base = """
    [net]
    width=16
    height=16
    channels=3

    [convolutional]
    filters=18
    size=3
    stride=2
    pad=1
    activation=leaky

    [yolo]
    mask=0,1
    anchors=4,6, 9,7
    classes=4
    """

    /// Weights for `base` (bias + 18x3x3x3 weights).
    private func baseWeights() -> [UInt8] {
        var bytes: [UInt8] = []
        for value: Int32 in [0, 2, 5] { withUnsafeBytes(of: value) { bytes += $0 } }
        bytes += [UInt8](repeating: 0, count: 8)
        [Float](repeating: 0.01, count: 18 + 18 * 27).withUnsafeBytes { bytes += $0 }
        return bytes
    }

    private func load(_ cfg: String, _ weights: [UInt8]? = nil) throws -> DarknetNetwork {
        try DarknetNetwork(cfg: cfg, cfgName: "net.cfg", weights: weights ?? baseWeights(), weightsName: "net.weights")
    }

    /// Loading fails with `status` and a message containing every piece of `parts`.
    private func assertFails(_ cfg: String, _ weights: [UInt8]? = nil, _ status: Status, _ parts: [String],
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(cfg, weights), file: file, line: line) { error in
            guard let error = error as? PkgnetError else { return XCTFail("not a PkgnetError: \(error)", file: file, line: line) }
            XCTAssertEqual(error.status, status, error.message, file: file, line: line)
            for part in parts {
                XCTAssertTrue(error.message.contains(part), "'\(error.message)' lacks '\(part)'", file: file, line: line)
            }
        }
    }

    func testBaseLoads() throws {
        let network = try load(base)
        XCTAssertEqual(network.input, TensorShape(channels: 3, height: 16, width: 16))
        XCTAssertEqual(network.classes, 4)
        XCTAssertEqual(network.heads.map(\.anchors), [[4, 6, 9, 7]])
    }

    func testSyntaxErrors() {
        assertFails("batch=1\n" + base, nil, .format, ["net.cfg:1:", "before the first section"])
        assertFails("[convolutional]\nfilters=1\n", nil, .format, ["net.cfg:1:", "first section must be [net]"])
        assertFails(base.replacingOccurrences(of: "stride=2", with: "stride 2"), nil, .format, ["net.cfg:9:", "stride2", "neither"])
        assertFails(base.replacingOccurrences(of: "[yolo]", with: "[yolo"), nil, .format, ["net.cfg:13:", "section header"])
        assertFails(base.replacingOccurrences(of: "stride=2", with: "stride=2\nfilters=4"), nil, .format, ["net.cfg:10:", "given twice", "line 7"])
        assertFails(base.replacingOccurrences(of: "size=3", with: "size="), nil, .format, ["net.cfg:8:", "empty value"])
        assertFails("[net]\nwidth=16\nheight=16\n", nil, .format, ["no layer"])
        assertFails("", nil, .format, ["no [net] section"])
        // Binary garbage given as a cfg: an error with a printable excerpt.
        let garbage = String(decoding: (0..<300).map { UInt8(truncatingIfNeeded: $0 * 37 + 1) }, as: UTF8.self)
        XCTAssertThrowsError(try load(garbage)) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .format)
            XCTAssertLessThan("\(error)".count, 200)
        }
    }

    func testValueErrors() {
        assertFails(base.replacingOccurrences(of: "filters=18", with: "filters=abc"), nil, .format, ["net.cfg:7:", "layer 0 [convolutional]", "filters=abc", "not an integer"])
        assertFails(base.replacingOccurrences(of: "filters=18\n", with: ""), nil, .format, ["net.cfg:6:", "layer 0 [convolutional]", "filters= is missing"])
        assertFails(base.replacingOccurrences(of: "size=3", with: "size=0"), nil, .format, ["net.cfg:8:", "size=0", "must be in 1...63"])
        assertFails(base.replacingOccurrences(of: "width=16", with: "width=-3"), nil, .format, ["net.cfg:2:", "[net]", "width=-3"])
        assertFails(base.replacingOccurrences(of: "width=16\n", with: ""), nil, .format, ["width= is missing"])
        assertFails(base.replacingOccurrences(of: "activation=leaky\n", with: ""), nil, .format, ["layer 0 [convolutional]", "activation= is missing"])
        assertFails(base.replacingOccurrences(of: "pad=1", with: "pad=1\ngroups=2"), nil, .format, ["groups=2", "multiples of groups"])
        assertFails(base.replacingOccurrences(of: "classes=4", with: "classes=5"), nil, .format, ["layer 1 [yolo]", "takes 18 channels", "need 20"])
        assertFails(base.replacingOccurrences(of: "mask=0,1", with: "mask=0,2"), nil, .format, ["mask=0,2", "anchor indices"])
        assertFails(base.replacingOccurrences(of: "anchors=4,6, 9,7", with: "anchors=4,6,9"), nil, .format, ["anchors=4,6,9", "pairs"])
        assertFails(base.replacingOccurrences(of: "stride=2", with: "stride=2\nsize=99").replacingOccurrences(of: "size=3\n", with: ""),
                    nil, .format, ["size=99"])
    }

    func testUnsupportedLayers() {
        let region = base + "\n\n[region]\nclasses=4\n"
        assertFails(region, nil, .unsupported, ["net.cfg:18:", "layer 2 [region]", "not [region]"])
        assertFails(base.replacingOccurrences(of: "activation=leaky", with: "activation=mish"), nil, .unsupported, ["activation=mish", "leaky"])
        assertFails(base.replacingOccurrences(of: "pad=1", with: "pad=1\ndilation=2"), nil, .unsupported, ["dilation=2"])
        assertFails(base.replacingOccurrences(of: "classes=4", with: "classes=4\nnew_coords=1"), nil, .unsupported, ["new_coords"])
        assertFails(base.replacingOccurrences(of: "channels=3", with: "channels=1"), nil, .unsupported, ["channels=1"])
        let maxpool = base.replacingOccurrences(of: "[yolo]", with: "[maxpool]\nsize=2\nstride=1\n\n[yolo]")
        assertFails(maxpool, nil, .unsupported, ["layer 1 [maxpool]", "odd padding"])
    }

    func testLayerReferenceErrors() {
        let route = base.replacingOccurrences(of: "[yolo]", with: "[route]\nlayers=-5\n\n[yolo]")
        assertFails(route, nil, .format, ["net.cfg:14:", "layer 1 [route]", "layers=-5", "before the first layer"])
        let forward = base.replacingOccurrences(of: "[yolo]", with: "[route]\nlayers=3\n\n[yolo]")
        assertFails(forward, nil, .format, ["layer 1 [route]", "layers=3", "not before"])
        let shortcut = base.replacingOccurrences(of: "[yolo]", with: "[maxpool]\nsize=3\nstride=2\n\n[shortcut]\nfrom=-2\n\n[yolo]")
        assertFails(shortcut, nil, .unsupported, ["layer 2 [shortcut]", "18x8x8", "18x4x4"])
        let afterHead = base + "\n\n[route]\nlayers=-1\n"
        assertFails(afterHead, nil, .unsupported, ["layer 2 [route]", "[yolo] head"])
        let sizes = base.replacingOccurrences(of: "[yolo]", with: "[maxpool]\nsize=3\nstride=2\n\n[route]\nlayers=-1,-2\n\n[yolo]")
        assertFails(sizes, nil, .format, ["layer 2 [route]", "sizes differ"])
    }

    func testWeightsErrors() {
        let good = baseWeights()
        assertFails(base, Array(good.dropLast(4)), .modelMismatch, ["net.weights", "truncated", "layer 0 [convolutional] (net.cfg:6)", "20..<2036", "2036 in all"])
        assertFails(base, good + [0, 0, 0, 0], .modelMismatch, ["net.weights", "4 bytes are left over"])
        assertFails(base, Array(good.prefix(10)), .format, ["net.weights", "10 bytes", "too short"])
        assertFails(base, Array(good.prefix(18)), .format, ["net.weights", "20-byte header"])
        var transposed = good
        transposed[0] = 0xE9; transposed[1] = 0x03  // major 1001
        assertFails(base, transposed, .unsupported, ["net.weights", "transposed"])
        var nan = good
        withUnsafeBytes(of: Float.nan) { nan.replaceSubrange(20 + 4 * 20..<20 + 4 * 21, with: $0) }
        assertFails(base, nan, .format, ["net.weights", "layer 0 [convolutional]", "weight value 2 is nan"])

        let bn = base.replacingOccurrences(of: "pad=1", with: "pad=1\nbatch_normalize=1")
        var weights = good
        [Float](repeating: 1, count: 3 * 18).withUnsafeBytes { weights.insert(contentsOf: $0, at: 20 + 4 * 18) }
        XCTAssertNoThrow(try load(bn, weights))
        withUnsafeBytes(of: Float(-1)) { weights.replaceSubrange(20 + 4 * 54..<20 + 4 * 55, with: $0) }  // variance 0
        assertFails(bn, weights, .format, ["BatchNorm variance 0 is negative"])
    }

    func testFileErrors() {
        XCTAssertThrowsError(try DarknetNetwork(cfgPath: "/nonexistent/net.cfg", weightsPath: "/nonexistent/net.weights")) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .io)
            XCTAssertTrue("\(error)".contains("/nonexistent/net.cfg"), "\(error)")
        }
        XCTAssertThrowsError(try DarknetNetwork(cfgPath: "/", weightsPath: "/")) { error in
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
    }

    // MARK: the real models

    static let weights = Fixtures.shared.appendingPathComponent("weights/yolo-fastest-1.1")

    static func requireYoloFastest() throws {
        guard FileManager.default.fileExists(atPath: weights.appendingPathComponent("yolo-fastest-1.1.weights").path) else {
            throw XCTSkip("Yolo-Fastest 1.1 weights not found at \(weights.path) (the 'shared' folder beside the repository)")
        }
    }

    func testYoloFastestLoads() throws {
        try Self.requireYoloFastest()
        for (name, parameters, floats) in [("yolo-fastest-1.1", 346_062, 1_400_000), ("yolo-fastest-1.1-xl", 923_486, 2_500_000)] {
            let network = try DarknetNetwork(cfgPath: Self.weights.appendingPathComponent(name + ".cfg").path,
                                             weightsPath: Self.weights.appendingPathComponent(name + ".weights").path)
            XCTAssertEqual(network.input, TensorShape(channels: 3, height: 320, width: 320))
            XCTAssertEqual(network.classes, 80)
            XCTAssertEqual(network.layerCount, 131)
            XCTAssertEqual(network.parameterCount, parameters)
            XCTAssertEqual(network.headShapes, [TensorShape(channels: 255, height: 10, width: 10), TensorShape(channels: 255, height: 20, width: 20)])
            // Six reused buffers instead of one per layer: 5.4 MB and 9.6 MB of working memory.
            XCTAssertEqual(network.bufferFloats.count, 6, name)
            XCTAssertLessThanOrEqual(network.workspaceFloats, floats, name)
        }
        // The XL weights do not fit the small cfg.
        XCTAssertThrowsError(try DarknetNetwork(cfgPath: Self.weights.appendingPathComponent("yolo-fastest-1.1.cfg").path,
                                                weightsPath: Self.weights.appendingPathComponent("yolo-fastest-1.1-xl.weights").path)) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .modelMismatch)
            XCTAssertTrue("\(error)".contains("left over"), "\(error)")
        }
    }
}
