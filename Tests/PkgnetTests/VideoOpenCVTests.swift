// Cross-check of object cubes and motion proposals against OpenCV on real
// Ped2 frames. bindings/python/tests/make_video_fixtures.py computes the
// expected outputs with cv2 (crop + cv2.resize; GaussianBlur, absdiff,
// threshold, findContours, boundingRect) and writes them as raw files; it
// exits with status 3 when OpenCV or the shared data is missing (skip).
import Foundation
import XCTest
import PkgnetCore
import PkgnetKernels

final class VideoOpenCVTests: XCTestCase {
    private struct FixtureSet {
        let directory: URL
        let manifest: [String: Any]
    }

    nonisolated(unsafe) private static var cached: FixtureSet?
    private static let lock = NSLock()

    /// Runs the fixture script once per process.
    private static func fixtures() throws -> FixtureSet {
        lock.lock()
        defer { lock.unlock() }
        if let cached { return cached }
        let directory = Fixtures.scratch.appendingPathComponent("video-opencv")
        let script = Fixtures.repo.appendingPathComponent("bindings/python/tests/make_video_fixtures.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, directory.path]
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch { throw XCTSkip("python3 cannot be started: \(error)") }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        switch process.terminationStatus {
        case 0: break
        case 3: throw XCTSkip("OpenCV fixtures unavailable: \(message)")
        default:
            XCTFail("make_video_fixtures.py failed (status \(process.terminationStatus)): \(message.suffix(1500))")
            throw XCTSkip("fixture script failed")
        }
        let data = try Data(contentsOf: directory.appendingPathComponent("manifest.json"))
        let manifest = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let set = FixtureSet(directory: directory, manifest: manifest)
        cached = set
        return set
    }

    /// The fixtures take ~65 MB: remove them when the class is done.
    override class func tearDown() {
        lock.lock()
        defer { lock.unlock() }
        if let cached { try? FileManager.default.removeItem(at: cached.directory) }
        cached = nil
        super.tearDown()
    }

    private final class FrameStore {
        let directory: URL
        let table: [String: [String: Any]]
        var loaded: [String: (bytes: [UInt8], width: Int, height: Int, format: PixelFormat)] = [:]
        init(_ set: FixtureSet) {
            directory = set.directory
            table = set.manifest["frames"] as! [String: [String: Any]]
        }
        func frame(_ name: String) throws -> (bytes: [UInt8], width: Int, height: Int, format: PixelFormat) {
            if let f = loaded[name] { return f }
            let entry = table[name]!
            let bytes = [UInt8](try Data(contentsOf: directory.appendingPathComponent(entry["file"] as! String)))
            let format: PixelFormat = (entry["format"] as! String) == "grey" ? .grey : .bgr
            let f = (bytes, entry["width"] as! Int, entry["height"] as! Int, format)
            loaded[name] = f
            return f
        }
    }

    /// Calls body with views of the named frames (kept alive for the call).
    private func withFrames<R>(_ names: [String], _ store: FrameStore, _ body: ([FrameView]) throws -> R) throws -> R {
        let frames = try names.map { try store.frame($0) }
        var buffers = frames.map { f -> UnsafeMutableBufferPointer<UInt8> in
            let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: f.bytes.count)
            _ = b.initialize(from: f.bytes)
            return b
        }
        defer { buffers.forEach { $0.deallocate() }; buffers.removeAll() }
        let views = zip(frames, buffers).map { f, b in
            FrameView(data: UnsafePointer(b.baseAddress!), width: f.width, height: f.height,
                      stride: f.width * f.format.channels, format: f.format)
        }
        return try body(views)
    }

    private func boxes(_ any: Any?) -> [Box] {
        (any as! [[Double]]).map { Box(x1: Float($0[0]), y1: Float($0[1]), x2: Float($0[2]), y2: Float($0[3])) }
    }

    func testCubesMatchOpenCVResize() throws {
        let set = try Self.fixtures()
        let store = FrameStore(set)
        var total = 0, exact = 0, worst = 0, boxesChecked = 0
        for case let c as [String: Any] in set.manifest["cube_cases"] as! [Any] {
            let boxList = boxes(c["boxes"])
            for case let v as [String: Any] in c["variants"] as! [Any] {
                let channels = v["channels"] as! Int
                let order: ModelConfig.ChannelOrder = (v["order"] as! String) == "rgb" ? .rgb : .bgr
                let names = (v["frames"] as? [String]) ?? (c["frames"] as! [String])
                let expected = [UInt8](try Data(contentsOf: set.directory.appendingPathComponent(v["file"] as! String)))
                var out = [UInt8](repeating: 0xAB, count: boxList.count * 5 * 32 * 32 * channels)
                let problems = try withFrames(names, store) { views in
                    try out.withUnsafeMutableBufferPointer {
                        try makeObjectCubes(frames: views, boxes: boxList, channels: channels, order: order, into: $0.baseAddress!)
                    }
                }
                XCTAssertEqual(expected.count, out.count)
                // The fixture skips exactly one box per case (zero width) and zero-fills it.
                XCTAssertEqual(problems.filter { $0 != .none }, [.empty], "\(c["clip"]!) t=\(c["t"]!)")
                total += out.count
                if out == expected {  // the common case, fast even in debug builds
                    exact += out.count
                } else {
                    for (a, b) in zip(out, expected) {
                        let d = abs(Int(a) - Int(b))
                        worst = max(worst, d)
                        if d == 0 { exact += 1 }
                    }
                }
                boxesChecked += boxList.count
            }
        }
        let fraction = Double(exact) / Double(max(total, 1))
        print("cubes vs OpenCV \(set.manifest["opencv"]!): \(boxesChecked) box-variants, \(total) values, max |diff| \(worst), exact \(String(format: "%.6f", fraction))")
        XCTAssertGreaterThan(total, 0)
        XCTAssertLessThanOrEqual(worst, 1, "cubes differ from cv2.resize by more than 1 grey level")
        // Bit-exact on x86 opencv-python (SSE baseline path); a build taking another
        // SIMD path may round a few values differently, never by more than 1.
        XCTAssertGreaterThan(fraction, 0.999)
    }

    func testMotionProposalsMatchOpenCV() throws {
        let set = try Self.fixtures()
        let store = FrameStore(set)
        var cases = 0, proposals = 0, mismatched: [String] = []
        for case let c as [String: Any] in set.manifest["motion_cases"] as! [Any] {
            let scene = SceneSettings.preset(named: c["scene"] as! String)!
            let names = c["frames"] as! [String]
            let detector = boxes(c["detector_boxes"])
            let expected = (c["expected"] as! [[Int]]).map { $0.map(Float.init) }.sorted { $0.lexicographicallyPrecedes($1) }
            let got = try withFrames(names, store) { v in
                try motionProposals(previous: v[0], current: v[1], next: v[2], detectorBoxes: detector, settings: scene)
            }
            let gotSorted = got.map { [$0.x1, $0.y1, $0.x2, $0.y2] }.sorted { $0.lexicographicallyPrecedes($1) }
            if gotSorted != expected {
                mismatched.append("\(c["clip"]!) t=\(c["t"]!) \(c["scene"]!) \(c["boxes"]!) \(names[0]): got \(gotSorted) expected \(expected)")
            }
            cases += 1
            proposals += expected.count
        }
        print("motion proposals vs OpenCV: \(cases) cases, \(proposals) expected boxes, \(mismatched.count) cases differ")
        XCTAssertGreaterThan(proposals, 0)
        XCTAssertEqual(mismatched, [], "proposals differ from the OpenCV implementation")
    }

    func testExternalComponentsMatchFindContours() throws {
        let set = try Self.fixtures()
        for case let c as [String: Any] in set.manifest["component_cases"] as! [Any] {
            let mask = [UInt8](try Data(contentsOf: set.directory.appendingPathComponent(c["file"] as! String)))
            let width = c["width"] as! Int, height = c["height"] as! Int
            var rects: UnsafeMutablePointer<Int32>?
            var count = 0
            XCTAssertEqual(pkk_external_components(mask, Int32(width), Int32(height), &rects, &count), 0)
            defer { free(rects) }
            let got = (0..<count).map { k in (0..<4).map { Int(rects![4 * k + $0]) } }.sorted { $0.lexicographicallyPrecedes($1) }
            let expected = (c["expected"] as! [[Int]]).sorted { $0.lexicographicallyPrecedes($1) }
            XCTAssertEqual(got, expected, "mask \(c["file"]!) \(width)x\(height)")
        }
    }
}
