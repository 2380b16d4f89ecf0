import Foundation
import XCTest
@testable import PkgnetCore

/// Stream against the pipeline assembled by hand from its stages: every
/// frame kept in full, boxes from filterDetections + motionProposals, cubes
/// from makeObjectCubes on frames max(t-4, 0)...t, scores from a separate
/// Session, frame scores from frameScore and medianFilter over the whole clip.
final class StreamTests: XCTestCase {
    private static let width = 72, height = 48

    /// A clip: a textured background that flickers a little every frame (so
    /// a wrong ring slot changes the scores), a bright square that moves
    /// (motion proposals) except for a pause, and a darker square that drifts.
    private func clip(_ n: Int, width: Int = StreamTests.width, height: Int = StreamTests.height,
                      format: PixelFormat = .bgr, seed: UInt64 = 7) -> [[UInt8]] {
        var rng = VideoRNG(seed: seed)
        let c = format.channels
        let background = (0..<(width * height * c)).map { _ in UInt8.random(in: 40...120, using: &rng) }
        return (0..<n).map { t in
            var frame = background.map { $0 &+ UInt8.random(in: 0...4, using: &rng) }
            let moving = t >= 20 && t < 27 ? 20 : t  // paused for a while: no motion there
            let sx = width / 3 + (3 * moving) % (width - width / 3 - 12), sy = 2 + (moving / 2) % (height - 16)
            for y in sy..<(sy + 12) { for x in sx..<(sx + 12) { for ch in 0..<c { frame[(y * width + x) * c + ch] = 250 } } }
            let dx = (t / 3) % 10
            for y in (height - 16)..<(height - 6) { for x in (2 + dx)..<(14 + dx) { for ch in 0..<c { frame[(y * width + x) * c + ch] = 10 } } }
            return frame
        }
    }

    /// Per frame: a box the ped2 filter keeps, one too unsure and one too
    /// small (both dropped); some frames have no detector output at all.
    private static func detections(_ t: Int) -> [Detection]? {
        if t % 7 == 3 { return nil }
        if t % 7 == 5 { return [] }
        let dx = Float((t / 3) % 10)
        // The dark square of a 72x48 clip, rows 32..<42.
        return [Detection(box: Box(x1: 1 + dx, y1: 30.5, x2: 15 + dx, y2: 43), confidence: 0.9),
                Detection(box: Box(x1: 40, y1: 5, x2: 60, y2: 30), confidence: 0.3),
                Detection(box: Box(x1: 50, y1: 30, x2: 53, y2: 33), confidence: 0.95)]
    }

    private struct Reference {
        var objects: [[ObjectScore]]   // per frame
        var raw: [Float]
    }

    /// The pipeline by hand over a whole clip.
    private func reference(model: Model, frames: [[UInt8]], width: Int = StreamTests.width, height: Int = StreamTests.height,
                           format: PixelFormat = .bgr, detections: (Int) -> [Detection]?, useMotion: Bool,
                           scene: SceneSettings, scoring: FrameScoring) throws -> Reference {
        let session = try Session(model: model, threads: 1)
        let c = model.config.student.channels, pairs = model.config.pairCount
        let cubeBytes = 5 * 32 * 32 * c
        var result = Reference(objects: [], raw: [])
        let stride = width * format.channels
        let all = frames.flatMap { $0 }
        try all.withUnsafeBufferPointer { pixels in
            func view(_ i: Int) -> FrameView {
                FrameView(data: pixels.baseAddress! + i * stride * height, width: width, height: height, stride: stride, format: format)
            }
            for t in frames.indices {
                let detectorBoxes = filterDetections(detections(t) ?? [], frameWidth: width, frameHeight: height, settings: scene)
                var boxes = detectorBoxes
                if useMotion {
                    boxes += try motionProposals(previous: view(max(t - 1, 0)), current: view(t), next: view(min(t + 1, frames.count - 1)),
                                                 detectorBoxes: detectorBoxes, settings: scene)
                }
                var cubes = [UInt8](repeating: 0, count: max(boxes.count, 1) * cubeBytes)
                let problems = try makeObjectCubes(frames: (t - 4...t).map { view(max($0, 0)) }, boxes: boxes, channels: c,
                                                   order: model.config.inputChannelOrder, into: &cubes)
                XCTAssertEqual(problems, [BoxProblem](repeating: .none, count: boxes.count), "frame \(t): test boxes should all crop")
                let n = boxes.count
                let e = OutputBuffer(n), s = OutputBuffer(n), k = OutputBuffer(n * pairs)
                var outputs = ScoreOutputs()
                outputs.predictionError = e.pointer
                outputs.combined = s.pointer
                outputs.inconsistency = k.pointer
                if n > 0 { try cubes.withUnsafeBufferPointer { try session.score(.u8($0.baseAddress!), count: n, into: outputs) } }
                let objects = (0..<n).map { i in
                    ObjectScore(frame: t, box: boxes[i], predictionError: e.values[i],
                                inconsistency: Array(k.values[(i * pairs)..<((i + 1) * pairs)]), combined: s.values[i])
                }
                result.objects.append(objects)
                result.raw.append(frameScore(objectScores: objects.map(\.combined), topK: scoring.topK, emptyFloor: scoring.emptyFloor))
            }
        }
        return result
    }

    /// Pushes a clip through a stream; returns every step (the last is finish()'s).
    private static func run(_ stream: PkgnetCore.Stream, frames: [[UInt8]], width: Int = StreamTests.width, height: Int = StreamTests.height,
                     format: PixelFormat = .bgr, detections: (Int) -> [Detection]?) throws -> [StreamStep] {
        var steps: [StreamStep] = []
        for (t, frame) in frames.enumerated() {
            try frame.withUnsafeBufferPointer { p in
                let view = FrameView(data: p.baseAddress!, width: width, height: height, stride: width * format.channels, format: format)
                steps.append(try stream.push(view, detections: detections(t)))
            }
        }
        steps.append(try stream.finish())
        return steps
    }

    private func assertSameObjects(_ got: [ObjectScore], _ want: [ObjectScore], _ what: String,
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.map(\.box), want.map(\.box), "\(what): boxes", file: file, line: line)
        XCTAssertEqual(got.map(\.frame), want.map(\.frame), "\(what): frame indices", file: file, line: line)
        guard got.count == want.count else { return }
        XCTAssertLessThan(maxRelativeDifference(got.map(\.combined), want.map(\.combined)), 1e-5, "\(what): combined", file: file, line: line)
        XCTAssertLessThan(maxRelativeDifference(got.map(\.predictionError), want.map(\.predictionError)), 1e-5, "\(what): prediction error", file: file, line: line)
        XCTAssertLessThan(maxRelativeDifference(got.flatMap(\.inconsistency), want.flatMap(\.inconsistency)), 1e-5, "\(what): inconsistency", file: file, line: line)
    }

    /// The whole contract on one clip: objects, which step reports them,
    /// raw and smoothed frame scores and when they become final.
    private func checkClip(useMotion: Bool, scoring: FrameScoring, frames n: Int = 40) throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let frames = clip(n)
        let scene = SceneSettings.ped2
        let want = try reference(model: model, frames: frames, detections: Self.detections, useMotion: useMotion, scene: scene, scoring: scoring)
        if n >= 30 {  // what the test is meant to cover happens in longer clips
            if useMotion {
                XCTAssertGreaterThan(want.objects.filter { $0.count > 1 }.count, 10, "the clip should make motion proposals")
            }
            XCTAssertTrue(want.objects.contains { $0.isEmpty }, "the clip should have frames without objects (floor)")
        }

        let stream = try PkgnetCore.Stream(model: model, scene: scene, scoring: scoring, useMotion: useMotion, threads: 2)
        let steps = try Self.run(stream, frames: frames, detections: Self.detections)
        XCTAssertEqual(steps.count, n + 1)

        let lag = useMotion ? 1 : 0
        let delay = scoring.causal ? 0 : scoring.medianWindow / 2
        for (s, step) in steps.enumerated() {
            // Push s scores frame s - lag; finish scores the last frame if motion held it back.
            let scored = s < n ? s - lag : (useMotion ? n - 1 : -1)
            if scored >= 0 {
                XCTAssertEqual(step.scoredFrame, scored, "step \(s)")
                assertSameObjects(step.objects, want.objects[scored], "step \(s), frame \(scored)")
            } else {
                XCTAssertNil(step.scoredFrame, "step \(s)")
                XCTAssertTrue(step.objects.isEmpty, "step \(s)")
            }
            XCTAssertTrue(step.skipped.isEmpty)
            // Frame f becomes final delay frames after it is scored, or at finish.
            let expectedFrames = s < n ? [s - lag - delay].filter { $0 >= 0 } : Array(max(0, n - lag - delay)..<n)
            XCTAssertEqual(step.frameScores.map(\.frame), expectedFrames, "step \(s): frames made final")
        }

        let reported = steps.flatMap(\.frameScores)
        XCTAssertEqual(reported.map(\.frame), Array(0..<n))
        guard reported.count == n else { return }
        XCTAssertLessThan(maxRelativeDifference(reported.map(\.raw), want.raw), 1e-5, "raw frame scores")
        let smoothed: [Float]
        if scoring.causal {
            let window = scoring.medianWindow
            let padded = [Float](repeating: 0, count: window - 1) + reported.map(\.raw)
            smoothed = (0..<n).map { padded[$0..<($0 + window)].sorted()[window / 2] }
        } else {
            smoothed = medianFilter(reported.map(\.raw), window: scoring.medianWindow)
        }
        XCTAssertEqual(reported.map(\.smoothed), smoothed, "smoothed = the median filter of the raw scores")
        XCTAssertLessThan(maxRelativeDifference(reported.map(\.smoothed), scoring.causal ? smoothed : medianFilter(want.raw, window: scoring.medianWindow)), 1e-5)
    }

    func testDetectionsOnlyMatchesTheStagesByHand() throws {
        try checkClip(useMotion: false, scoring: FrameScoring(topK: 1, emptyFloor: -2.5, medianWindow: 9))
    }

    func testWithMotionMatchesTheStagesByHand() throws {
        try checkClip(useMotion: true, scoring: FrameScoring(topK: 2, emptyFloor: -2.5, medianWindow: 19))
    }

    func testCausalAndUnsmoothed() throws {
        try checkClip(useMotion: true, scoring: FrameScoring(topK: 1, emptyFloor: 1, medianWindow: 7, causal: true), frames: 30)
        try checkClip(useMotion: false, scoring: FrameScoring(topK: 3, emptyFloor: 0, medianWindow: 1), frames: 12)
    }

    func testClipShorterThanTheWindow() throws {
        try checkClip(useMotion: true, scoring: FrameScoring(medianWindow: 19), frames: 4)
        try checkClip(useMotion: false, scoring: FrameScoring(medianWindow: 19), frames: 1)
    }

    /// Frame 0's cube is frame 0 five times; zeros instead would score differently.
    func testFirstFrameStandsInForThePast() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let frame = clip(1)[0]
        let box = Box(x1: 20, y1: 4, x2: 60, y2: 44)
        let stream = try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(medianWindow: 1), useMotion: false, threads: 1)
        let step = try frame.withUnsafeBufferPointer { p in
            try stream.push(FrameView(data: p.baseAddress!, width: StreamTests.width, height: StreamTests.height, stride: StreamTests.width * 3, format: .bgr),
                            detections: [Detection(box: box, confidence: 1)])
        }
        XCTAssertEqual(step.objects.map(\.box), [box])

        let session = try Session(model: model, threads: 1)
        func combined(pastIsBlack: Bool) throws -> Float {
            let black = [UInt8](repeating: 0, count: frame.count)
            let all = (pastIsBlack ? Array(repeating: black, count: 4) : Array(repeating: frame, count: 4)).flatMap { $0 } + frame
            var cube = [UInt8](repeating: 0, count: 5 * 32 * 32 * 3)
            try all.withUnsafeBufferPointer { p in
                let views = (0..<5).map { FrameView(data: p.baseAddress! + $0 * frame.count, width: StreamTests.width, height: StreamTests.height, stride: StreamTests.width * 3, format: .bgr) }
                _ = try makeObjectCubes(frames: views, boxes: [box], channels: 3, order: .bgr, into: &cube)
            }
            let out = OutputBuffer(1)
            var outputs = ScoreOutputs()
            outputs.combined = out.pointer
            try cube.withUnsafeBufferPointer { try session.score(.u8($0.baseAddress!), count: 1, into: outputs) }
            return out.values[0]
        }
        let repeated = try combined(pastIsBlack: false), black = try combined(pastIsBlack: true)
        XCTAssertNotEqual(repeated, black, "the check could not tell the two apart")
        XCTAssertEqual(step.objects.first?.combined ?? .nan, repeated, accuracy: 1e-5 * max(1, abs(repeated)))
        XCTAssertEqual(step.frameScores.map(\.frame), [0])
    }

    func testFrameSizeOrFormatChangeIsRefused() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let stream = try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(medianWindow: 3), useMotion: true, threads: 1)
        let frames = clip(3)
        func push(_ pixels: [UInt8], _ width: Int, _ height: Int, _ format: PixelFormat, stride: Int? = nil) throws -> StreamStep {
            try pixels.withUnsafeBufferPointer { p in
                try stream.push(FrameView(data: p.baseAddress!, width: width, height: height, stride: stride ?? width * format.channels, format: format), detections: nil)
            }
        }
        _ = try push(frames[0], 72, 48, .bgr)
        XCTAssertThrowsError(try push(frames[1], 48, 72, .bgr)) { error in
            let e = error as? PkgnetError
            XCTAssertEqual(e?.status, .invalidArgument)
            let message = e?.message ?? "\(error)"
            XCTAssertTrue(message.contains("frame 1") && message.contains("48x72 bgr") && message.contains("72x48 bgr"), message)
        }
        XCTAssertThrowsError(try push(frames[1], 72, 48, .rgb)) { error in
            let message = (error as? PkgnetError)?.message ?? "\(error)"
            XCTAssertTrue(message.contains("frame 1") && message.contains("72x48 rgb") && message.contains("72x48 bgr"), message)
        }
        XCTAssertThrowsError(try push(frames[1], 72, 48, .bgr, stride: 100)) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .invalidArgument)
            XCTAssertTrue((error as? PkgnetError)?.message.contains("frame 1") == true, "\(error)")
        }
        // The refused frames did not count: the next good frame is frame 1.
        XCTAssertEqual(stream.framesPushed, 1)
        XCTAssertEqual(try push(frames[1], 72, 48, .bgr).scoredFrame, 0)
        XCTAssertEqual(try push(frames[2], 72, 48, .bgr).scoredFrame, 1)
        // finish() ends the clip: another size is fine afterwards and counts from 0.
        XCTAssertEqual(try stream.finish().frameScores.map(\.frame), [1, 2])
        let small = [UInt8](repeating: 9, count: 40 * 30)
        XCTAssertNil(try push(small, 40, 30, .grey).scoredFrame)
        XCTAssertEqual(try push(small, 40, 30, .grey).scoredFrame, 0)
        XCTAssertEqual(stream.ringBytes, 6 * 40 * 30)
    }

    func testSettingsAreValidated() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        XCTAssertThrowsError(try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(medianWindow: 4), useMotion: false, threads: 1)) { error in
            XCTAssertEqual((error as? PkgnetError)?.status, .invalidArgument)
            XCTAssertTrue((error as? PkgnetError)?.message.contains("median_window") == true, "\(error)")
        }
        XCTAssertThrowsError(try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(topK: 0), useMotion: false, threads: 1))
        var scene = SceneSettings.ped2
        scene.blurKernel = 4
        XCTAssertThrowsError(try PkgnetCore.Stream(model: model, scene: scene, scoring: FrameScoring(), useMotion: true, threads: 1)) { error in
            XCTAssertTrue((error as? PkgnetError)?.message.contains("blurKernel") == true, "\(error)")
        }
        XCTAssertThrowsError(try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(), useMotion: true, threads: -1))
        // The model's own settings: the random model has no "frame" entry, so the defaults.
        let defaults = try PkgnetCore.Stream(model: model, useMotion: true, threads: 1)
        XCTAssertEqual(defaults.scoring, FrameScoring())
        XCTAssertEqual(defaults.scene, .ped2)
    }

    /// 500 frames: the ring and the scratch stop growing after the first frames.
    func testMemoryIsBounded() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let (width, height) = (40, 32)
        let frames = clip(16, width: width, height: height, seed: 9)
        let stream = try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(medianWindow: 19), useMotion: true, threads: 2)
        let fixed = [Detection(box: Box(x1: 2, y1: 2, x2: 20, y2: 20), confidence: 0.9)]
        var sizes: [Int] = []
        var finalFrames = 0
        for t in 0..<500 {
            try frames[t % frames.count].withUnsafeBufferPointer { p in
                let step = try stream.push(FrameView(data: p.baseAddress!, width: width, height: height, stride: width * 3, format: .bgr), detections: fixed)
                finalFrames += step.frameScores.count
            }
            sizes.append(stream.retainedBytes)
        }
        XCTAssertEqual(stream.ringBytes, 6 * width * height * 3, "six frames: t-4 ... t+1")
        XCTAssertEqual(Set(sizes[20...]).count, 1, "retained bytes changed after frame 20: \(Set(sizes[20...]).sorted())")
        XCTAssertLessThan(sizes.last!, 6 * width * height * 3 + 2 * PkgnetCore.Stream.cubeChunk * 5 * 32 * 32 * 3)
        XCTAssertEqual(finalFrames, 500 - 1 - 9)
        XCTAssertEqual(try stream.finish().frameScores.count, 10)
    }

    /// Two streams on two threads at once give what each gives alone.
    func testStreamsOnSeveralThreads() throws {
        let model = try Model(path: Fixtures.randomModel().path)
        let clips = [clip(14, seed: 21), clip(14, seed: 22)]
        let runAlone: @Sendable (Int) throws -> [StreamStep] = { i in
            let stream = try PkgnetCore.Stream(model: model, scene: .ped2, scoring: FrameScoring(medianWindow: 5), useMotion: true, threads: 1)
            return try StreamTests.run(stream, frames: clips[i], detections: StreamTests.detections)
        }
        let alone = try (0..<2).map(runAlone)
        let together = Results()
        DispatchQueue.concurrentPerform(iterations: 2) { i in together.set(i, Result { try runAlone(i) }) }
        for i in 0..<2 {
            let steps = try together.get(i).get()
            XCTAssertEqual(steps.count, alone[i].count)
            for (a, b) in zip(steps, alone[i]) {
                assertSameObjects(a.objects, b.objects, "clip \(i)")
                XCTAssertEqual(a.frameScores.map(\.frame), b.frameScores.map(\.frame))
                XCTAssertEqual(a.frameScores.map(\.smoothed), b.frameScores.map(\.smoothed))
            }
        }
    }
}

/// Results of concurrent runs, behind a lock.
private final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int: Result<[StreamStep], Error>] = [:]
    func set(_ i: Int, _ value: Result<[StreamStep], Error>) { lock.lock(); values[i] = value; lock.unlock() }
    func get(_ i: Int) -> Result<[StreamStep], Error> {
        lock.lock()
        defer { lock.unlock() }
        return values[i] ?? .failure(PkgnetError(.internal, "run \(i) did not finish"))
    }
}
