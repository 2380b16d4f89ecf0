import Glibc
import Synchronization

/// One scored object of a stream.
public struct ObjectScore: Sendable {
    /// Index of the object's frame in the clip (0 = the clip's first frame).
    public var frame: Int
    public var box: Box
    public var predictionError: Float
    /// One value per distilled pair (model.config.pairCount).
    public var inconsistency: [Float]
    public var combined: Float

    public init(frame: Int, box: Box, predictionError: Float, inconsistency: [Float], combined: Float) {
        self.frame = frame
        self.box = box
        self.predictionError = predictionError
        self.inconsistency = inconsistency
        self.combined = combined
    }
}

/// What one push or finish produced.
public struct StreamStep: Sendable {
    /// The objects of `scoredFrame`, detector boxes first, then motion proposals.
    public var objects: [ObjectScore] = []
    /// Frames whose smoothed score became final, oldest first, each once.
    /// `raw` is the frame's top-k mean (or floor), `smoothed` the median
    /// filter's value for it.
    public var frameScores: [(frame: Int, raw: Float, smoothed: Float)] = []
    /// Boxes of `scoredFrame` that could not be cropped, with the reason.
    public var skipped: [(Box, BoxProblem)] = []
    /// The frame this step scored; nil when it scored none (with motion on,
    /// the first push of a clip: frame 0 waits for frame 1).
    public var scoredFrame: Int?

    public init() {}
}

/// The per-camera pipeline of docs/video-pipeline.md: frames (and detector
/// boxes) in, object scores and frame scores out.
///
/// One Stream per camera. Streams share one immutable Model; each holds its
/// own Session, so different streams can be pushed from different threads.
/// One stream is used by one thread at a time: a concurrent call fails with
/// `.busy` instead of racing.
///
/// A clip runs from the first push to finish(): frame indices count from 0,
/// the first frame stands in for the missing past frames (t-4 ... t-1 and,
/// for motion, t-1), and every frame must have the first frame's size and
/// format. finish() flushes the clip and resets the stream; the next push
/// starts a new clip (which may have another size).
///
/// Timing: without motion, push(t) scores frame t. With motion, frame t's
/// proposals need frame t+1, so push(t+1) scores frame t and finish() scores
/// the last frame (using it as its own t+1). Frame scores become final
/// medianWindow/2 frames after the frame is scored (at once when causal).
///
/// Memory is bounded whatever the clip's length: the last 5 frames (6 with
/// motion), the median window, and scratch for at most `cubeChunk` cubes.
///
/// Errors: a push or finish that throws leaves the stream as it was before
/// the call (the frame is not counted), so the caller may skip the frame or
/// retry.
public final class Stream: @unchecked Sendable {
    public let model: Model
    public let scene: SceneSettings
    public let scoring: FrameScoring
    public let useMotion: Bool
    private let session: Session
    private let busy = Atomic<Bool>(false)
    /// Runs on every pushed frame when set (setDetector).
    private var detector: (Detector, DetectorOptions)?

    /// Cubes built and scored per round: bounds scratch memory (about 15 KB a
    /// colour cube) however many boxes a frame has.
    public static let cubeChunk = 4 * Session.microBatch

    /// Frames the ring holds: t-4..t for the cubes, plus t+1 with motion.
    public var ringSlots: Int { useMotion ? 6 : 5 }

    // The clip.
    private struct Geometry: Equatable {
        var width: Int
        var height: Int
        var format: PixelFormat
        var frameBytes: Int { width * height * format.channels }
        var description: String { "\(width)x\(height) \(format.name)" }
    }
    private var geometry: Geometry?
    /// Frames pushed in this clip.
    public private(set) var framesPushed = 0
    /// Filtered detector boxes of the last pushed frame, kept for its scoring
    /// when motion delays it.
    private var pendingBoxes: [Box] = []
    private var median: StreamingMedian
    /// Raw scores of the frames whose smoothed value is not final yet, by frame % count.
    private var rawScores: [Float]

    // Memory kept across clips.
    private var ring: UnsafeMutablePointer<UInt8>?
    /// Bytes of the frame ring: ringSlots packed frames of the clip's size.
    public private(set) var ringBytes = 0
    private var cubes: [UInt8] = []
    private var predictionError: [Float] = []
    private var inconsistency: [Float] = []
    private var combined: [Float] = []

    /// - threads: the session's thread count (0 = default).
    public init(model: Model, scene: SceneSettings, scoring: FrameScoring, useMotion: Bool, threads: Int) throws {
        try scoring.validate("stream settings")
        try scene.validate()
        self.model = model
        self.scene = scene
        self.scoring = scoring
        self.useMotion = useMotion
        session = try Session(model: model, threads: threads)
        median = StreamingMedian(window: scoring.medianWindow, causal: scoring.causal)
        rawScores = [Float](repeating: 0, count: median.delay + 1)
    }

    /// A stream with the model's own frame settings (metadata "frame":
    /// scoring and scene preset).
    public convenience init(model: Model, useMotion: Bool, threads: Int) throws {
        try self.init(model: model, scene: model.config.sceneSettings, scoring: model.config.frame,
                      useMotion: useMotion, threads: threads)
    }

    deinit { ring?.deallocate() }

    /// Bytes this stream holds besides the model and the session's scratch:
    /// the frame ring and the cube and score scratch. Constant once a clip
    /// has seen its busiest frame; for tests and monitoring.
    public var retainedBytes: Int {
        ringBytes + cubes.capacity + 4 * (predictionError.capacity + inconsistency.capacity + combined.capacity + rawScores.capacity)
    }

    private func exclusive<T>(_ body: () throws -> T) throws -> T {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw PkgnetError(.busy, "the stream is in use by another thread; push each stream from one thread at a time")
        }
        defer { busy.store(false, ordering: .releasing) }
        return try body()
    }

    /// Pushes the clip's next frame with the detector's boxes for it (nil or
    /// empty: no detections), joined by those of the stream's own detector
    /// when it has one (setDetector); the boxes go through filterDetections.
    /// The frame is copied, so its memory may be reused after the call.
    public func push(_ frame: FrameView, detections: [Detection]?) throws -> StreamStep {
        try exclusive {
            let t = framesPushed
            try frame.validate("frame \(t)")
            let incoming = Geometry(width: frame.width, height: frame.height, format: frame.format)
            if let geometry, geometry != incoming {
                throw PkgnetError(.invalidArgument, "frame \(t) is \(incoming.description) but this clip's frames are \(geometry.description): frame size and format must not change within a clip (finish() ends a clip)")
            }
            // Nothing below changes the clip until the commit at the end, so
            // an error leaves the stream as it was. Overwriting ring slot
            // t % ringSlots is safe even then: it held frame t - ringSlots,
            // which no later step needs.
            try reserveRing(for: incoming)
            copy(frame, into: slot(t, incoming), geometry: incoming)

            var all = detections ?? []
            if let (detector, options) = detector {
                all += try detector.detect(frame, options: options).map { Detection(box: $0.box, confidence: $0.confidence) }
            }
            let boxes = filterDetections(all, frameWidth: frame.width, frameHeight: frame.height, settings: scene)
            var step = StreamStep()
            if !useMotion {
                step = try score(frame: t, detectorBoxes: boxes, next: t, geometry: incoming)
            } else if t > 0 {
                step = try score(frame: t - 1, detectorBoxes: pendingBoxes, next: t, geometry: incoming)
            }
            geometry = incoming
            pendingBoxes = boxes
            framesPushed = t + 1
            return step
        }
    }

    /// Ends the clip: scores the last frame when motion delayed it, and
    /// returns the frame scores still pending (the median's zero-padded
    /// tail). The stream is then ready for a new clip.
    public func finish() throws -> StreamStep {
        try exclusive {
            var step = StreamStep()
            if let geometry, useMotion, framesPushed > 0 {
                let last = framesPushed - 1
                step = try score(frame: last, detectorBoxes: pendingBoxes, next: last, geometry: geometry)
            }
            let tail = median.finish()
            let first = framesPushed - tail.count
            for (i, smoothed) in tail.enumerated() {
                step.frameScores.append((first + i, rawScores[(first + i) % rawScores.count], smoothed))
            }
            startClip()
            return step
        }
    }

    /// Runs `detector` on every frame pushed from now on: its objects join
    /// the push's detections, ahead of the scene's filter (nil: the caller's
    /// detections only). The stream calls it from its pushes, so no other
    /// thread may use this Detector (give each stream its own; they can share
    /// one DarknetNetwork).
    public func setDetector(_ detector: Detector?, options: DetectorOptions = DetectorOptions()) throws {
        if let detector { try options.validate(classCount: detector.network.classes) }
        try exclusive { self.detector = detector.map { ($0, options) } }
    }

    /// Drops the current clip without scoring what is pending.
    public func reset() throws {
        try exclusive {
            _ = median.finish()
            startClip()
        }
    }

    private func startClip() {
        geometry = nil
        framesPushed = 0
        pendingBoxes = []
    }

    // MARK: the ring

    private func reserveRing(for geometry: Geometry) throws {
        let (bytes, overflow) = geometry.frameBytes.multipliedReportingOverflow(by: ringSlots)
        guard !overflow else {
            throw PkgnetError(.invalidArgument, "frame \(framesPushed): \(ringSlots) frames of \(geometry.description) overflow the address space")
        }
        guard bytes != ringBytes || ring == nil else { return }
        // Only a new clip changes the size (geometry is fixed within one).
        ring?.deallocate()
        ring = nil
        ringBytes = 0
        guard let memory = malloc(bytes) else {
            throw PkgnetError(.outOfMemory, "cannot allocate \(bytes) bytes for the last \(ringSlots) frames of \(geometry.description)")
        }
        ring = memory.bindMemory(to: UInt8.self, capacity: bytes)
        ringBytes = bytes
    }

    /// Frame i's slot; i < 0 (before the clip) is the first frame.
    private func slot(_ i: Int, _ geometry: Geometry) -> UnsafeMutablePointer<UInt8> {
        ring! + (max(i, 0) % ringSlots) * geometry.frameBytes
    }

    private func view(_ i: Int, _ geometry: Geometry) -> FrameView {
        FrameView(data: slot(i, geometry), width: geometry.width, height: geometry.height,
                  stride: geometry.width * geometry.format.channels, format: geometry.format)
    }

    /// Packs the view's rows into the slot: one memcpy per row (or one in all).
    private func copy(_ frame: FrameView, into destination: UnsafeMutablePointer<UInt8>, geometry: Geometry) {
        let row = geometry.width * geometry.format.channels
        if frame.stride == row {
            memcpy(destination, frame.data, row * geometry.height)
        } else {
            for y in 0..<geometry.height {
                memcpy(destination + y * row, frame.data + y * frame.stride, row)
            }
        }
    }

    // MARK: scoring

    /// Scores frame t (its frames t-4..t are in the ring; `next` is t+1 or,
    /// at the end of a clip, t itself). Changes only scratch until its last
    /// lines, which cannot throw.
    private func score(frame t: Int, detectorBoxes: [Box], next: Int, geometry: Geometry) throws -> StreamStep {
        var boxes = detectorBoxes
        if useMotion {
            boxes += try motionProposals(previous: view(t - 1, geometry), current: view(t, geometry), next: view(next, geometry),
                                         detectorBoxes: detectorBoxes, settings: scene)
        }
        let frames = (t - 4...t).map { view($0, geometry) }
        let config = model.config
        let channels = config.student.channels
        let pairs = config.pairCount
        let cubeBytes = 5 * 32 * 32 * channels

        var step = StreamStep()
        step.scoredFrame = t
        var kept: [Box] = []
        kept.reserveCapacity(boxes.count)
        if predictionError.count < boxes.count {
            predictionError = [Float](repeating: 0, count: boxes.count)
            inconsistency = [Float](repeating: 0, count: boxes.count * pairs)
            combined = [Float](repeating: 0, count: boxes.count)
        }
        let chunkCubes = min(boxes.count, Stream.cubeChunk)
        if cubes.count < chunkCubes * cubeBytes { cubes = [UInt8](repeating: 0, count: chunkCubes * cubeBytes) }

        var start = 0
        while start < boxes.count {
            let chunk = Array(boxes[start..<min(start + Stream.cubeChunk, boxes.count)])
            try cubes.withUnsafeMutableBufferPointer { cubeBuffer in
                let base = cubeBuffer.baseAddress!
                let problems = try makeObjectCubes(frames: frames, boxes: chunk, channels: channels,
                                                   order: config.inputChannelOrder, into: base)
                // Skipped boxes leave zero-filled slots: close the gaps so
                // only real cubes are scored.
                let firstOfChunk = kept.count
                for (i, problem) in problems.enumerated() {
                    if problem == .none {
                        let slot = kept.count - firstOfChunk
                        if slot != i { memmove(base + slot * cubeBytes, base + i * cubeBytes, cubeBytes) }
                        kept.append(chunk[i])
                    } else {
                        step.skipped.append((chunk[i], problem))
                    }
                }
                let n = kept.count - firstOfChunk
                guard n > 0 else { return }
                try predictionError.withUnsafeMutableBufferPointer { e in
                    try inconsistency.withUnsafeMutableBufferPointer { c in
                        try combined.withUnsafeMutableBufferPointer { s in
                            var outputs = ScoreOutputs()
                            outputs.predictionError = e.baseAddress! + firstOfChunk
                            outputs.inconsistency = c.baseAddress! + firstOfChunk * pairs
                            outputs.combined = s.baseAddress! + firstOfChunk
                            try session.score(.u8(UnsafePointer(base)), count: n, into: outputs)
                        }
                    }
                }
            }
            start += chunk.count
        }

        step.objects = kept.indices.map { i in
            ObjectScore(frame: t, box: kept[i], predictionError: predictionError[i],
                        inconsistency: Array(inconsistency[(i * pairs)..<((i + 1) * pairs)]), combined: combined[i])
        }
        let raw = frameScore(objectScores: Array(combined[0..<kept.count]), topK: scoring.topK, emptyFloor: scoring.emptyFloor)

        // Commit: from here nothing throws.
        rawScores[t % rawScores.count] = raw
        if let smoothed = median.push(raw) {
            let final = t - median.delay
            step.frameScores.append((final, rawScores[final % rawScores.count], smoothed))
        }
        return step
    }
}
