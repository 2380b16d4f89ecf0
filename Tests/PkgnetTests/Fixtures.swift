import Foundation
import XCTest

/// Paths and model files the tests share. Model files are made by the
/// project's Python tools (pkgnet.synthetic, pkgnet.convert), which are
/// independent of the Swift loader under test.
enum Fixtures {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared = repo.deletingLastPathComponent().appendingPathComponent("shared")
    static let golden = shared.appendingPathComponent("golden")
    static let scratch: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pkgnet-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    /// Runs `python3 -c code` (or `-m module args`) with the binding's package on the path.
    static func python(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONPATH"] = repo.appendingPathComponent("bindings/python").path
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw XCTSkip("python3 \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: message, as: UTF8.self).suffix(600))")
        }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var made: [String: URL] = [:]

    /// A random-weight model file with non-trivial BatchNorm statistics, made once per process.
    static func randomModel(k: Int = 2, width: Int = 16, arch: String = "resnet18", task: String = "pred",
                            channels: Int = 3, dtype: String = "f32") throws -> URL {
        let name = "random-k\(k)-w\(width)-\(arch)-\(task)-c\(channels)-\(dtype).safetensors"
        lock.lock()
        defer { lock.unlock() }
        if let url = made[name] { return url }
        let url = scratch.appendingPathComponent(name)
        try python(["-c", "from pkgnet import synthetic; synthetic.random_model('\(url.path)', k=\(k), width=\(width), arch='\(arch)', task='\(task)', channels=\(channels), seed=\(k * 100 + width), dtype='\(dtype)')"])
        made[name] = url
        return url
    }

    static func requireShared() throws {
        guard FileManager.default.fileExists(atPath: golden.path) else {
            throw XCTSkip("../shared/golden not found next to the repository (\(golden.path)): golden tests need the shared test data")
        }
    }
}

/// A safetensors file opened up for the tests: the header as JSON objects
/// plus the raw data section, to read golden tensors and to forge broken files.
struct SafeTensorsFixture {
    var header: [String: Any]
    var data: Data

    init(_ url: URL) throws {
        let bytes = try Data(contentsOf: url)
        let length = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        header = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + length))) as! [String: Any]
        data = bytes.subdata(in: (8 + length)..<bytes.count)
    }

    func entry(_ name: String) -> [String: Any] { header[name] as! [String: Any] }

    func shape(_ name: String) -> [Int] { entry(name)["shape"] as! [Int] }

    func range(_ name: String) -> Range<Int> {
        let offsets = entry(name)["data_offsets"] as! [Int]
        return offsets[0]..<offsets[1]
    }

    func floats(_ name: String) -> [Float] {
        data.subdata(in: range(name)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    func bytes(_ name: String) -> [UInt8] { [UInt8](data.subdata(in: range(name))) }

    /// The file again, with this header (JSON-encoded) and data.
    func encoded() throws -> Data {
        let json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(data)
        return out
    }
}

/// Largest |a - b| / max(|b|, floor) over two arrays.
func maxRelativeDifference(_ a: [Float], _ b: [Float], floor: Float = 1e-3) -> Float {
    precondition(a.count == b.count, "arrays differ in length: \(a.count) vs \(b.count)")
    var worst: Float = 0
    for (x, y) in zip(a, b) { worst = max(worst, abs(x - y) / max(abs(y), floor)) }
    return worst
}

/// Output memory for a scoring call, NaN-filled so unwritten values show.
final class OutputBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: .nan, count: max(count, 1))
    }

    deinit { pointer.deallocate() }

    var values: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// Largest |a - b| over the largest |b|: the error relative to the tensor's
/// scale, the fair measure for feature maps whose elements pass through zero.
func maxScaledDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "arrays differ in length: \(a.count) vs \(b.count)")
    let scale = b.map(abs).max() ?? 0
    return zip(a, b).map { abs($0 - $1) }.max().map { $0 / max(scale, .leastNormalMagnitude) } ?? 0
}
