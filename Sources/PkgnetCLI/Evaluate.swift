// `pkgnet eval`: runs a data set's videos through a Stream, frame by frame as
// a camera would deliver them, and measures frame-level AUROC.
import Glibc
import PkgnetCore

/// Where the boxes scored in each frame come from.
enum BoxSource: String, CaseIterable {
    /// The data set's boxes/<video>.csv (detector output), through the scene's filter.
    case given
    /// Motion proposals only (frame differencing); no box files needed.
    case motion
    /// Both: given boxes plus motion proposals outside them.
    case givenAndMotion = "given+motion"
    /// The built-in detector's boxes (--detector-cfg, --detector-weights).
    case detector
    /// The built-in detector's boxes plus motion proposals outside them.
    case detectorAndMotion = "detector+motion"

    var usesGivenBoxes: Bool { self == .given || self == .givenAndMotion }
    var usesMotion: Bool { self == .motion || self == .givenAndMotion || self == .detectorAndMotion }
    var usesDetector: Bool { self == .detector || self == .detectorAndMotion }
}

struct EvalSettings {
    var modelPath: String
    var dataPath: String
    var videos: [String]?
    var boxes: BoxSource
    var sceneName: String
    var scene: SceneSettings
    /// Always centred (causal false): offline evaluation sees the whole video.
    var scoring: FrameScoring
    var threads: Int
    var scoresPath: String?
    var reportPath: String?
    var reportObjects: Int
    var progress: ProgressReporter.Style
    /// The network each video's stream runs, and what it keeps (box sources
    /// detector and detector+motion).
    var detector: (network: DarknetNetwork, options: DetectorOptions)? = nil
}

/// Everything measured on one video.
struct VideoResult {
    let name: String
    let labels: [Bool]
    /// Stream's raw frame score (top-k mean of object combined scores, or the floor).
    let raw: [Float]
    /// medianFilter(raw): the frame score evaluated.
    let smoothed: [Float]
    /// The stream's own smoothed values, kept so tests can check they agree
    /// with the offline filter (they must; not re-checked at run time).
    let streamSmoothed: [Float]
    /// Per criterion alone: the frame's top-k mean of that criterion's object
    /// values (0 without objects). [0] prediction error, [1...] pairs.
    let components: [[Float]]
    let objects: Int
    let skipped: [BoxProblem: Int]
    var auroc: Double? {
        areaUnderROC(scores: smoothed.map(Double.init), labels: labels)
    }
}

/// An object kept for the report: its scores and the cube it was scored on.
struct KeptObject {
    let video: String
    let frameName: String
    let score: ObjectScore
    let cube: [UInt8]
}

/// The `capacity` highest-scoring objects seen so far. Capacity is small
/// (a report shows a handful), so a linear scan beats a heap's bookkeeping.
struct TopObjects {
    let capacity: Int
    private(set) var items: [KeptObject] = []

    init(capacity: Int) { self.capacity = max(0, capacity) }

    /// Whether an object with this score would be kept (before building its cube).
    func wouldKeep(_ score: Float) -> Bool {
        guard capacity > 0, score.isFinite else { return false }
        return items.count < capacity || score > (items.map(\.score.combined).min() ?? -.infinity)
    }

    mutating func insert(_ object: KeptObject) {
        guard wouldKeep(object.score.combined) else { return }
        if items.count >= capacity, let low = items.indices.min(by: { items[$0].score.combined < items[$1].score.combined }) {
            items.remove(at: low)
        }
        items.append(object)
    }

    /// Highest first.
    var sorted: [KeptObject] { items.sorted { $0.score.combined > $1.score.combined } }
}

/// The per-frame CSV: header at once, then each video's rows when the video
/// is done, flushed, so the file always holds whole videos.
struct ScoreCSV {
    let file: OutputFile
    let pairs: Int

    init(path: String, pairs: Int) throws {
        file = try OutputFile(path: path)
        self.pairs = pairs
        try file.write(ScoreCSV.header(pairs: pairs) + "\n")
    }

    static func header(pairs: Int) -> String {
        (["video", "frame", "label", "prediction_error"] + (1...max(pairs, 1)).map { "inconsistency_\($0)" }
            + ["combined_raw", "score"]).joined(separator: ",")
    }

    /// RFC 4180 quoting for names that need it (folders may hold commas).
    static func field(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingAll("\"", with: "\"\"") + "\""
    }

    static func rows(_ result: VideoResult) -> String {
        var text = ""
        let name = field(result.name)
        for t in result.labels.indices {
            var fields = [name, String(t), result.labels[t] ? "1" : "0"]
            for component in result.components { fields.append(String(component[t])) }
            fields.append(String(result.raw[t]))
            fields.append(String(result.smoothed[t]))
            text += fields.joined(separator: ",") + "\n"
        }
        return text
    }

    func append(_ result: VideoResult) throws { try file.write(ScoreCSV.rows(result)) }
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for ch in self { if ch == target { out += replacement } else { out.append(ch) } }
        return out
    }
}

final class Evaluator {
    let model: Model
    let settings: EvalSettings
    private var progress: ProgressReporter
    private var framesDone = 0
    private(set) var top: TopObjects
    private let start: Double

    init(model: Model, settings: EvalSettings, totalFrames: Int) {
        self.model = model
        self.settings = settings
        start = monotonicSeconds()
        progress = ProgressReporter(style: settings.progress, totalFrames: totalFrames, start: start)
        top = TopObjects(capacity: settings.reportPath == nil ? 0 : settings.reportObjects)
    }

    var elapsed: Double { monotonicSeconds() - start }
    var framesScored: Int { framesDone }

    /// Clears the progress bar so a stdout line does not land inside it.
    func clearProgressLine() {
        if settings.progress == .bar { printError("\r\u{1B}[K") }
    }

    func finishProgress() { progress.finish() }

    /// Scores one video, frame by frame, through a fresh stream.
    func evaluate(_ video: VideoEntry, _ annotations: VideoAnnotations) throws -> VideoResult {
        let n = video.frameCount
        let pairs = model.config.pairCount
        let stream: Stream
        do {
            stream = try Stream(model: model, scene: settings.scene, scoring: settings.scoring,
                                useMotion: settings.boxes.usesMotion, threads: settings.threads)
            if settings.boxes.usesDetector, let detector = settings.detector {
                try stream.setDetector(try Detector(network: detector.network), options: detector.options)
            }
        } catch let error as PkgnetError {
            throw CLIError("cannot start scoring: \(error.message)")
        }

        var raw = [Float?](repeating: nil, count: n)
        var streamSmoothed = [Float](repeating: .nan, count: n)
        var objectsByFrame = [[ObjectScore]](repeating: [], count: n)
        var skipped: [BoxProblem: Int] = [:]
        var objectCount = 0
        // The last few decoded frames: the report rebuilds the cubes of its
        // top objects from them (scores arrive at most one frame late).
        var recent: [Int: DecodedImage] = [:]
        var firstSize: (width: Int, height: Int)?

        func collect(_ step: StreamStep) throws {
            for (frame, rawScore, smoothed) in step.frameScores where raw.indices.contains(frame) {
                raw[frame] = rawScore
                streamSmoothed[frame] = smoothed
            }
            for (_, problem) in step.skipped { skipped[problem, default: 0] += 1 }
            for object in step.objects where objectsByFrame.indices.contains(object.frame) {
                objectsByFrame[object.frame].append(object)
                objectCount += 1
                if top.wouldKeep(object.combined), let cube = try cube(of: object, recent: recent) {
                    top.insert(KeptObject(video: video.name, frameName: video.frameName(object.frame), score: object, cube: cube))
                }
            }
        }

        for t in 0..<n {
            let path = video.framePaths[t]
            let image = try DecodedImage(path: path, format: .bgr)
            if let size = firstSize {
                guard image.width == size.width, image.height == size.height else {
                    throw CLIError("\(path): frame \(t) of video \(video.name) is \(image.width)x\(image.height), but the video's first frame (\(video.frameName(0))) is \(size.width)x\(size.height); frames of a video must all have one size")
                }
            } else {
                firstSize = (image.width, image.height)
            }
            recent[t] = image
            recent[t - 6] = nil
            let detections: [Detection]? = settings.boxes.usesGivenBoxes ? annotations.detections[t] : nil
            do {
                let step = try image.withView { try stream.push($0, detections: detections) }
                try collect(step)
            } catch let error as PkgnetError {
                throw CLIError("\(path): video \(video.name), frame \(t): \(error.message)")
            }
            framesDone += 1
            progress.update(done: framesDone, video: video.name)
        }
        do {
            try collect(try stream.finish())
        } catch let error as PkgnetError {
            throw CLIError("video \(video.name), last frame: \(error.message)")
        }
        progress.update(done: framesDone, video: video.name, force: settings.progress == .bar)

        var rawScores: [Float] = []
        rawScores.reserveCapacity(n)
        for t in 0..<n {
            guard let value = raw[t] else {
                throw CLIError("internal error: the stream gave no score for frame \(t) of video \(video.name)")
            }
            rawScores.append(value)
        }
        // Each criterion's own frame score, for the CSV columns and the chart.
        var components = [[Float]](repeating: [Float](repeating: 0, count: n), count: 1 + pairs)
        for t in 0..<n {
            let objects = objectsByFrame[t]
            components[0][t] = frameScore(objectScores: objects.map(\.predictionError), topK: settings.scoring.topK, emptyFloor: 0)
            for j in 0..<pairs {
                components[1 + j][t] = frameScore(objectScores: objects.map { j < $0.inconsistency.count ? $0.inconsistency[j] : 0 },
                                                  topK: settings.scoring.topK, emptyFloor: 0)
            }
        }
        return VideoResult(name: video.name, labels: annotations.labels, raw: rawScores,
                           smoothed: medianFilter(rawScores, window: settings.scoring.medianWindow),
                           streamSmoothed: streamSmoothed,
                           components: components, objects: objectCount, skipped: skipped)
    }

    /// The cube an object was scored on, rebuilt from the kept frames
    /// (frames before the clip's start repeat its first frame, as in Stream).
    private func cube(of object: ObjectScore, recent: [Int: DecodedImage]) throws -> [UInt8]? {
        let images = (object.frame - 4...object.frame).map { recent[max($0, 0)] }
        let frames = images.compactMap { $0 }
        guard frames.count == 5 else { return nil }
        let channels = model.config.student.channels
        var cube = [UInt8](repeating: 0, count: 5 * 32 * 32 * channels)
        let problems = try withExtendedLifetime(frames) {
            try cube.withUnsafeMutableBufferPointer { out in
                try makeObjectCubes(frames: frames.map(\.view), boxes: [object.box], channels: channels,
                                    order: model.config.inputChannelOrder, into: out.baseAddress!)
            }
        }
        return problems.first == BoxProblem.none ? cube : nil
    }
}
