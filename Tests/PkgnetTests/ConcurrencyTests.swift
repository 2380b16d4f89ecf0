import Foundation
import XCTest
@testable import PkgnetCore

/// One Model shared by sessions and streams on many threads: every thread's
/// scores must be bitwise those of a single-threaded run, and scores must not
/// depend on the session's OpenMP thread count or on the run. Under TSan the
/// C kernels must stay uninstrumented (their target_clones resolvers run
/// before TSan is initialised), and libomp's fork/join is invisible to it, so
/// it reports the handover of data into and out of every parallel region:
///   swift build --build-tests --sanitize=thread -Xcc -fno-sanitize=thread --scratch-path .build-tsan
///   .build-tsan/debug/pkgnetPackageTests.xctest PkgnetTests.ConcurrencyTests
final class ConcurrencyTests: XCTestCase {
    /// 20 cubes: a full micro-batch and a partial one.
    private static let cubeCount = Session.microBatch + 4

    private func cubes(channels: Int, seed: UInt64 = 11) -> [UInt8] {
        var rng = VideoRNG(seed: seed)
        return (0..<(Self.cubeCount * 5 * 32 * 32 * channels)).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// Every score of n cubes, as bit patterns (NaN-safe and exact).
    private static func score(_ session: Session, _ cubes: [UInt8], count: Int = cubeCount) throws -> [UInt32] {
        let n = count, pairs = session.model.config.pairCount
        let e = OutputBuffer(n), k = OutputBuffer(n * pairs), s = OutputBuffer(n), p = OutputBuffer(n * session.model.config.student.channels * 32 * 32)
        var outputs = ScoreOutputs()
        outputs.predictionError = e.pointer
        outputs.inconsistency = k.pointer
        outputs.combined = s.pointer
        outputs.prediction = p.pointer
        try cubes.withUnsafeBufferPointer { try session.score(.u8($0.baseAddress!), count: n, into: outputs) }
        return (e.values + k.values + s.values + p.values).map(\.bitPattern)
    }

    /// Runs body(i) for i in 0..<count on `count` threads started together.
    private func onThreads<T>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) -> [Result<T, Error>] {
        let lock = NSLock()
        nonisolated(unsafe) var results = [Result<T, Error>?](repeating: nil, count: count)
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            let thread = Thread {
                start.wait()
                let result = Result { try body(i) }
                lock.lock(); results[i] = result; lock.unlock()
                group.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        for _ in 0..<count { start.signal() }
        group.wait()
        return results.map { $0! }
    }

    func testEightSessionsOnOneModelMatchSingleThreaded() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let input = cubes(channels: 3)
        let reference = try ConcurrencyTests.score(Session(model: model, threads: 1), input)
        XCTAssertFalse(reference.contains { Float(bitPattern: $0).isNaN }, "reference has unwritten outputs")
        // Each thread its own session; two OpenMP threads each, so the
        // kernels' parallel regions also run concurrently.
        let results = onThreads(8) { _ in try ConcurrencyTests.score(Session(model: model, threads: 2), input) }
        for (i, result) in results.enumerated() {
            let scores = try result.get()
            XCTAssertEqual(scores, reference, "thread \(i): scores differ from the single-threaded run in \(zip(scores, reference).filter { $0 != $1 }.count) values")
        }
        // Small batches (a stream's frame has a few objects) take other GEMM shapes.
        for n in [1, 3] {
            let small = try ConcurrencyTests.score(Session(model: model, threads: 1), input, count: n)
            let results = onThreads(8) { i in try ConcurrencyTests.score(Session(model: model, threads: 1 + i % 2), input, count: n) }
            for (i, result) in results.enumerated() {
                XCTAssertEqual(try result.get(), small, "\(n) cubes, thread \(i) (\(1 + i % 2) OpenMP threads) differs")
            }
        }
    }

    func testThreadCountAndRepeatedRunsGiveIdenticalScores() throws {
        for (k, channels) in [(2, 3), (1, 1)] {
            let model = try Model(path: Fixtures.randomModel(k: k, channels: channels).path)
            let input = cubes(channels: channels, seed: UInt64(k))
            let session = try Session(model: model, threads: 1)
            let one = try ConcurrencyTests.score(session, input)
            XCTAssertEqual(try ConcurrencyTests.score(session, input), one, "k=\(k): a second run on the same session differs")
            try session.setThreads(2)
            XCTAssertEqual(try ConcurrencyTests.score(session, input), one, "k=\(k): 2 threads differ from 1")
            XCTAssertEqual(try ConcurrencyTests.score(Session(model: model, threads: 2), input), one, "k=\(k): a fresh 2-thread session differs")
            for n in [1, 3] {
                let small = try ConcurrencyTests.score(Session(model: model, threads: 1), input, count: n)
                XCTAssertEqual(try ConcurrencyTests.score(Session(model: model, threads: 2), input, count: n), small, "k=\(k), \(n) cubes: 2 threads differ from 1")
            }
        }
    }

    /// Narrow models score micro-batches side by side, each pass on the next
    /// free thread: 40 cubes run as 2 x (10 + 10) on 2 threads and one after
    /// another on one. A cube's scores must not depend on the thread count.
    func testSideBySideMicroBatchesMatchOneThread() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        XCTAssertLessThanOrEqual(model.multiplyAddsPerCube, Session.maxSideBySideMultiplyAdds, "the fixture should be narrow")
        let n = 40
        let input = cubes(channels: 3, seed: 21) + cubes(channels: 3, seed: 22)
        let one = try ConcurrencyTests.score(Session(model: model, threads: 1), input, count: n)
        let two = try ConcurrencyTests.score(Session(model: model, threads: 2), input, count: n)
        XCTAssertTrue(two == one, "2 threads differ from 1 in \(zip(two, one).filter { $0 != $1 }.count) values")
    }

    /// The pass plan: micro-batches of 16 where whole ones fit, the last 16 +
    /// r cubes in one pass up to 20, else in two near-equal passes, narrow
    /// models' calls in two halves (from 8 cubes), and nothing that depends
    /// on the thread count.
    func testPassPlan() {
        let expected: [(n: Int, sideBySide: Bool, sizes: [Int])] = [
            (0, false, []), (1, false, [1]), (16, false, [16]), (17, false, [17]), (20, false, [20]),
            (21, false, [11, 10]), (40, false, [16, 12, 12]), (100, false, [16, 16, 16, 16, 16, 20]),
            (102, false, [16, 16, 16, 16, 16, 11, 11]), (128, false, Array(repeating: 16, count: 8)),
            (7, true, [7]), (8, true, [4, 4]), (17, true, [9, 8]), (68, true, [16, 18, 16, 18]),
            (76, true, [16, 11, 11, 16, 11, 11]), (128, true, Array(repeating: 16, count: 8)),
        ]
        for (n, sideBySide, sizes) in expected {
            XCTAssertEqual(Session.passSizes(n, sideBySide: sideBySide), sizes, "\(n) cubes, side by side \(sideBySide)")
        }
        for n in 0...300 {
            for sideBySide in [false, true] {
                let sizes = Session.passSizes(n, sideBySide: sideBySide)
                XCTAssertEqual(sizes.reduce(0, +), n, "\(n) cubes: the passes must cover the call")
                XCTAssertTrue(sizes.allSatisfy { (1...Session.maxPass).contains($0) }, "\(n) cubes: \(sizes)")
            }
        }
    }

    /// An error in one side-by-side micro-batch: the call fails naming the
    /// cube, and the micro-batches the other thread finished keep their scores.
    func testSideBySideErrorKeepsFinishedMicroBatches() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let n = 44, elements = 5 * 3 * 32 * 32
        var input = [Float](repeating: 0.5, count: n * elements)
        input[40 * elements + 100] = .nan
        let scores = OutputBuffer(n)
        var outputs = ScoreOutputs()
        outputs.predictionError = scores.pointer
        let session = try Session(model: model, threads: 2)
        XCTAssertThrowsError(try input.withUnsafeBufferPointer { try session.score(.f32($0.baseAddress!), count: n, into: outputs) }) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .invalidArgument)
            XCTAssertTrue("\(error)".contains("cube 40"), "\(error)")
        }
        // 4 micro-batches of 11: thread 0 runs 0-10 and 11-21, thread 1 22-32 and (failing) 33-43.
        XCTAssertTrue(scores.values[0..<33].allSatisfy { $0.isFinite }, "finished micro-batches lost their scores")
    }

    /// A small clip with a moving square and detector boxes, and everything a
    /// stream reports for it, flattened to bit patterns.
    private static func runClip(_ stream: PkgnetCore.Stream, frames: Int = 9, width: Int = 64, height: Int = 48) throws -> [UInt32] {
        var rng = VideoRNG(seed: 5)
        let background = (0..<(width * height * 3)).map { _ in UInt8.random(in: 30...120, using: &rng) }
        var out: [UInt32] = []
        func record(_ step: StreamStep) {
            for o in step.objects {
                out += [UInt32(o.frame), o.box.x1.bitPattern, o.box.y1.bitPattern, o.box.x2.bitPattern, o.box.y2.bitPattern, o.predictionError.bitPattern, o.combined.bitPattern]
                out += o.inconsistency.map(\.bitPattern)
            }
            for f in step.frameScores { out += [UInt32(f.frame), f.raw.bitPattern, f.smoothed.bitPattern] }
        }
        for t in 0..<frames {
            var frame = background
            for y in 10..<22 { for x in (4 + 3 * t)..<(16 + 3 * t) { for ch in 0..<3 { frame[(y * width + x) * 3 + ch] = 250 } } }
            let detections = [Detection(box: Box(x1: 30, y1: 20, x2: 50, y2: 44), confidence: 0.9)]
            try frame.withUnsafeBufferPointer { pixels in
                let view = FrameView(data: pixels.baseAddress!, width: width, height: height, stride: width * 3, format: .bgr)
                record(try stream.push(view, detections: detections))
            }
        }
        record(try stream.finish())
        return out
    }

    func testEightStreamsOnEightThreadsMatchSequential() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let sequential = try ConcurrencyTests.runClip(PkgnetCore.Stream(model: model, useMotion: true, threads: 1))
        XCTAssertGreaterThan(sequential.count, 9 * 3, "the clip should produce object and frame scores")
        XCTAssertEqual(try ConcurrencyTests.runClip(PkgnetCore.Stream(model: model, useMotion: true, threads: 1)), sequential, "run to run")
        let results = onThreads(8) { i in try ConcurrencyTests.runClip(PkgnetCore.Stream(model: model, useMotion: true, threads: 1 + i % 2)) }
        for (i, result) in results.enumerated() {
            XCTAssertEqual(try result.get(), sequential, "stream on thread \(i) differs from the sequential run")
        }
    }

    /// A session used from two threads at once refuses the second call (busy)
    /// instead of racing; whichever call runs still gives the reference scores.
    func testSharedSessionIsBusyNotRacy() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let input = cubes(channels: 3)
        let session = try Session(model: model, threads: 1)
        let reference = try ConcurrencyTests.score(session, input)
        let results = onThreads(4) { _ in try ConcurrencyTests.score(session, input) }
        for result in results {
            switch result {
            case .success(let scores): XCTAssertEqual(scores, reference)
            case .failure(let error): XCTAssertEqual((error as? PkgnetError)?.status, .busy, "\(error)")
            }
        }
    }

    /// A stream pushed from several threads at once refuses the overlapping
    /// pushes (busy) instead of racing; each push that ran counts exactly once.
    func testSharedStreamIsBusyNotRacy() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let stream = try PkgnetCore.Stream(model: model, useMotion: false, threads: 1)
        let width = 64, height = 48
        let pixels = [UInt8](repeating: 90, count: width * height * 3)
        let detection = Detection(box: Box(x1: 4, y1: 4, x2: 40, y2: 40), confidence: 0.9)
        let results = onThreads(4) { _ in
            try pixels.withUnsafeBufferPointer { buffer in
                let frame = FrameView(data: buffer.baseAddress!, width: width, height: height, stride: width * 3, format: .bgr)
                return try (0..<5).map { _ -> Bool in
                    do {
                        _ = try stream.push(frame, detections: [detection])
                        return true
                    } catch let error as PkgnetError where error.status == .busy {
                        return false
                    }
                }
            }
        }
        let pushed = try results.reduce(0) { total, result in total + (try result.get().filter { $0 }.count) }
        XCTAssertGreaterThan(pushed, 0)
        XCTAssertEqual(stream.framesPushed, pushed, "every successful push counts once, no other")
    }
}
