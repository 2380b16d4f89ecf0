import Foundation
import XCTest
@testable import PkgnetCore

/// Frame scores, the median filter (offline, streaming, causal) and the
/// "frame" metadata, against naive references and scipy.signal.medfilt.
final class FrameScoringTests: XCTestCase {
    // MARK: references, written the obvious way

    /// Sort descending, average the first min(k, n).
    private func naiveFrameScore(_ scores: [Float], k: Int, floor: Float) -> Float {
        if scores.isEmpty { return floor }
        let top = scores.sorted(by: >).prefix(max(k, 1))
        return Float(top.reduce(0.0) { $0 + Double($1) } / Double(top.count))
    }

    /// The series with window/2 explicit zeros on both sides, then the middle
    /// of each sorted window.
    private func naiveMedian(_ x: [Float], window: Int) -> [Float] {
        let h = window / 2
        let padded = [Float](repeating: 0, count: h) + x + [Float](repeating: 0, count: h)
        return x.indices.map { i in padded[i..<(i + window)].sorted()[h] }
    }

    /// Median of the last `window` values, zeros before the start.
    private func naiveCausalMedian(_ x: [Float], window: Int) -> [Float] {
        let padded = [Float](repeating: 0, count: window - 1) + x
        return x.indices.map { i in padded[i..<(i + window)].sorted()[window / 2] }
    }

    /// Values drawn from a few levels (many ties, negatives, zeros) or continuous.
    private func series<G: RandomNumberGenerator>(_ n: Int, tied: Bool, _ rng: inout G) -> [Float] {
        (0..<n).map { _ in tied ? Float(Int.random(in: -3...4, using: &rng)) * 0.5 : Float.random(in: -2...3, using: &rng) }
    }

    // MARK: frame score

    func testFrameScoreIsTheMeanOfTheTopK() {
        var rng = VideoRNG(seed: 1)
        for trial in 0..<2000 {
            let scores = series(Int.random(in: 0...9, using: &rng), tied: trial % 2 == 0, &rng)
            let k = Int.random(in: 1...7, using: &rng)
            let floor = Float.random(in: -1...1, using: &rng)
            let got = frameScore(objectScores: scores, topK: k, emptyFloor: floor)
            let want = naiveFrameScore(scores, k: k, floor: floor)
            XCTAssertEqual(got, want, accuracy: 1e-6 * max(1, abs(want)), "scores \(scores) k \(k)")
            if k == 1 && !scores.isEmpty { XCTAssertEqual(got, scores.max()!, "k=1 is the maximum, exactly") }
        }
    }

    func testFrameScoreEdgeCases() {
        XCTAssertEqual(frameScore(objectScores: [], topK: 3, emptyFloor: -7.5), -7.5)
        // Fewer objects than k: the mean of those there are, no floor mixed in.
        XCTAssertEqual(frameScore(objectScores: [2, 4], topK: 5, emptyFloor: -100), 3)
        XCTAssertEqual(frameScore(objectScores: [1, 9, 5, 7], topK: 2, emptyFloor: 0), 8)
        // k below 1 counts as 1.
        XCTAssertEqual(frameScore(objectScores: [1, 9, 5], topK: 0, emptyFloor: 0), 9)
        XCTAssertEqual(frameScore(objectScores: [1, 9, 5], topK: -4, emptyFloor: 0), 9)
        // A NaN object score is not hidden.
        XCTAssertTrue(frameScore(objectScores: [1, .nan, 3], topK: 1, emptyFloor: 0).isNaN)
        XCTAssertTrue(frameScore(objectScores: [.nan, 1, 3], topK: 2, emptyFloor: 0).isNaN)
        XCTAssertEqual(frameScore(objectScores: [-.infinity, -1], topK: 1, emptyFloor: 0), -1)
    }

    // MARK: median filter

    func testMedianFilterMatchesBruteForce() {
        var rng = VideoRNG(seed: 2)
        for trial in 0..<600 {
            let x = series(Int.random(in: 0...60, using: &rng), tied: trial % 3 != 0, &rng)
            let window = 2 * Int.random(in: 0...20, using: &rng) + 1
            XCTAssertEqual(medianFilter(x, window: window), naiveMedian(x, window: window), "window \(window) series \(x)")
        }
    }

    func testMedianFilterSmallCases() {
        XCTAssertEqual(medianFilter([], window: 19), [])
        XCTAssertEqual(medianFilter([3, -1, 2], window: 1), [3, -1, 2])
        // Zero padding: the ends are pulled towards 0.
        XCTAssertEqual(medianFilter([6, 2, 6], window: 3), [2, 6, 2])
        XCTAssertEqual(medianFilter([5, 5, 5, 5], window: 7), [5, 5, 5, 5])
        XCTAssertEqual(medianFilter([5, 5, 5, 5], window: 9), [0, 0, 0, 0])
        // A window longer than the series (scipy pads and warns).
        XCTAssertEqual(medianFilter([4, 8], window: 19), [0, 0])
        XCTAssertEqual(medianFilter([-4, -8, -1], window: 5), [-1, -1, -1])
        // Documented fallbacks: even -> next odd, below 1 -> identity.
        let x: [Float] = [1, 7, 3, 9, 2, 8]
        XCTAssertEqual(medianFilter(x, window: 4), medianFilter(x, window: 5))
        XCTAssertEqual(medianFilter(x, window: 0), x)
        XCTAssertEqual(medianFilter(x, window: -3), x)
    }

    func testStreamingEqualsOfflineDelayed() {
        var rng = VideoRNG(seed: 3)
        for trial in 0..<300 {
            let window = 2 * Int.random(in: 0...12, using: &rng) + 1
            var filter = StreamingMedian(window: window, causal: false)
            XCTAssertEqual(filter.delay, window / 2)
            // Two series through one filter: finish() must reset it.
            for _ in 0..<2 {
                let x = series(Int.random(in: 0...50, using: &rng), tied: trial % 2 == 0, &rng)
                let offline = naiveMedian(x, window: window)
                var got: [Float] = []
                for (t, value) in x.enumerated() {
                    let out = filter.push(value)
                    if t < window / 2 {
                        XCTAssertNil(out, "frame \(t) is not final before \(window / 2) more frames")
                    } else {
                        XCTAssertEqual(out, offline[t - window / 2], "push \(t), window \(window)")
                        got.append(out ?? .nan)
                    }
                }
                let tail = filter.finish()
                XCTAssertEqual(tail.count, min(x.count, window / 2))
                XCTAssertEqual(got + tail, offline, "window \(window) series \(x)")
            }
        }
    }

    func testCausalMatchesBruteForce() {
        var rng = VideoRNG(seed: 4)
        for trial in 0..<300 {
            let window = 2 * Int.random(in: 0...12, using: &rng) + 1
            var filter = StreamingMedian(window: window, causal: true)
            XCTAssertEqual(filter.delay, 0)
            for _ in 0..<2 {
                let x = series(Int.random(in: 0...50, using: &rng), tied: trial % 2 == 0, &rng)
                let got = x.map { filter.push($0) }
                XCTAssertEqual(got, naiveCausalMedian(x, window: window).map { Optional($0) }, "window \(window) series \(x)")
                XCTAssertEqual(filter.finish(), [])
            }
        }
    }

    func testSignedZerosAndInfinitiesDoNotConfuseTheWindow() {
        // -0 and +0 compare equal; removal must still take out the right one.
        let x: [Float] = [-0.0, 0.0, -0.0, 1, -0.0, .infinity, -.infinity, 0.0, 2, -0.0, -1]
        for window in [1, 3, 5, 7] {
            XCTAssertEqual(medianFilter(x, window: window), naiveMedian(x, window: window), "window \(window)")
        }
    }

    /// scipy.signal.medfilt itself on fixed random float32 series: exact.
    func testMedianFilterAgainstScipy() throws {
        var rng = VideoRNG(seed: 5)
        var cases: [(x: [Float], window: Int)] = []
        for (n, window) in [(200, 19), (200, 1), (200, 3), (57, 19), (10, 19), (1, 5), (300, 51), (30, 31), (31, 101)] {
            cases.append((series(n, tied: false, &rng), window))
            cases.append((series(n, tied: true, &rng), window))
        }
        let folder = Fixtures.scratch.appendingPathComponent("medfilt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (i, c) in cases.enumerated() {
            try c.x.withUnsafeBytes { Data($0) }.write(to: folder.appendingPathComponent("in\(i).f32"))
        }
        let windows = cases.map { String($0.window) }.joined(separator: ",")
        try Fixtures.python(["-c", """
            import warnings, numpy as np, scipy.signal
            warnings.simplefilter('ignore')
            folder = '\(folder.path)'
            for i, w in enumerate([\(windows)]):
                x = np.fromfile(f'{folder}/in{i}.f32', dtype='<f4')
                y = scipy.signal.medfilt(x, w)
                assert y.dtype == np.float32, y.dtype
                y.astype('<f4').tofile(f'{folder}/out{i}.f32')
            """])
        for (i, c) in cases.enumerated() {
            let data = try Data(contentsOf: folder.appendingPathComponent("out\(i).f32"))
            let want = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(medianFilter(c.x, window: c.window), want, "case \(i): n \(c.x.count) window \(c.window)")
        }
    }

    // MARK: settings

    func testSettingsValidation() {
        XCTAssertNil(FrameScoring().problem)
        XCTAssertEqual(FrameScoring(), FrameScoring(topK: 1, emptyFloor: 0, medianWindow: 19, causal: false))
        XCTAssertNil(FrameScoring(topK: 3, emptyFloor: -2, medianWindow: 1, causal: true).problem)
        for (settings, fragment) in [
            (FrameScoring(topK: 0), "top_k"),
            (FrameScoring(emptyFloor: .nan), "empty_floor"),
            (FrameScoring(emptyFloor: .infinity), "empty_floor"),
            (FrameScoring(medianWindow: 18), "median_window"),
            (FrameScoring(medianWindow: 0), "median_window"),
            (FrameScoring(medianWindow: -1), "median_window"),
            (FrameScoring(medianWindow: FrameScoring.maxMedianWindow + 2), "median_window"),
        ] {
            XCTAssertThrowsError(try settings.validate("stream")) { error in
                let e = error as? PkgnetError
                XCTAssertEqual(e?.status, .invalidArgument)
                XCTAssertTrue(e?.message.contains(fragment) == true && e?.message.hasPrefix("stream: ") == true, e?.message ?? "\(error)")
            }
        }
    }

    /// The model file with its metadata edited (nil removes "frame").
    private func model(frame: [String: Any]?) throws -> Model {
        var fixture = try SafeTensorsFixture(Fixtures.randomModel())
        var metadata = fixture.header["__metadata__"] as! [String: String]
        var config = try JSONSerialization.jsonObject(with: Data(metadata["pkgnet"]!.utf8)) as! [String: Any]
        config["frame"] = frame
        metadata["pkgnet"] = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
        fixture.header["__metadata__"] = metadata
        let bytes = try fixture.encoded()
        return try bytes.withUnsafeBytes { try Model(bytes: $0, source: "edited.safetensors") }
    }

    func testFrameMetadataDefaultsAndValues() throws {
        let plain = try model(frame: nil)
        XCTAssertEqual(plain.config.frame, FrameScoring(topK: 1, emptyFloor: 0, medianWindow: 19, causal: false))
        XCTAssertEqual(plain.config.scene, "ped2")
        let empty = try model(frame: [:])
        XCTAssertEqual(empty.config.frame, FrameScoring())
        XCTAssertEqual(empty.config.scene, "ped2")
        let set = try model(frame: ["top_k": 3, "empty_floor": -1.5, "median_window": 7, "causal": true, "scene": "avenue"])
        XCTAssertEqual(set.config.frame, FrameScoring(topK: 3, emptyFloor: -1.5, medianWindow: 7, causal: true))
        XCTAssertEqual(set.config.scene, "avenue")
        XCTAssertEqual(try model(frame: ["scene": "shanghaitech", "future_key": 1]).config.scene, "shanghaitech")
    }

    func testFrameMetadataProblems() throws {
        for (frame, status, fragment) in [
            (["top_k": 0], Status.format, "frame.top_k must be at least 1, not 0"),
            (["median_window": 20], .format, "frame.median_window"),
            (["median_window": -3], .format, "frame.median_window"),
            // Not representable as the field's type: the decoder refuses them
            // (its messages do not always name the key).
            (["empty_floor": 1e300], .format, "metadata"),
            (["top_k": 1.5], .format, "metadata"),
            (["causal": "yes"], .format, "causal"),
            (["scene": "mall"], .unsupported, "frame.scene must be one of ped2, avenue, shanghaitech, not 'mall'"),
        ] as [([String: Any], Status, String)] {
            XCTAssertThrowsError(try model(frame: frame), "\(frame)") { error in
                let e = error as? PkgnetError
                XCTAssertEqual(e?.status, status, "\(frame)")
                XCTAssertTrue(e?.message.contains(fragment) == true && e?.message.contains("edited.safetensors") == true,
                              "\(frame): \(e?.message ?? "\(error)")")
            }
        }
    }
}

/// The kernel tests' seeded generator, as a RandomNumberGenerator for shuffles and ranges.
typealias VideoRNG = KernelRNG
extension KernelRNG: RandomNumberGenerator {}
