import FoundationEssentials

/// The settings a model file carries in its `pkgnet` metadata entry
/// (docs/model-format.md), validated.
public struct ModelConfig: Sendable {
    public enum Task: String, Sendable { case pred, recon }
    public enum ChannelOrder: String, Sendable { case bgr, rgb }

    public struct Student: Sendable {
        public var k: Int
        public var width: Int
        public var task: Task
        public var channels: Int
        /// Frames stacked on the student's input channels.
        public var inputFrames: Int { task == .pred ? 4 : 1 }
    }

    public struct Teacher: Sendable {
        public var arch: TeacherArch
        public var channelOrder: ChannelOrder
        public var mean: [Float]
        public var std: [Float]
    }

    /// Weights and training statistics of the score components, in the order
    /// [prediction error, pair 1, ..., pair K].
    public struct Scoring: Sendable {
        public var weights: [Float]
        public var mu: [Float]
        public var sigma: [Float]
    }

    public static let formatVersion = 1
    /// Scenes whose frame-level settings (SceneSettings) pkgnet knows.
    public static let scenes = ["ped2", "avenue", "shanghaitech"]

    public var student: Student
    public var teacher: Teacher
    public var inputChannelOrder: ChannelOrder
    public var scoring: Scoring
    /// Frame-level scoring (metadata "frame"; defaults when absent).
    public var frame: FrameScoring
    /// The scene the model was trained on, one of `scenes`: picks the
    /// detector and motion-proposal settings (metadata "frame.scene", default ped2).
    public var scene: String
    /// The preset of `scene` (validated at load, so the fallback is never taken).
    public var sceneSettings: SceneSettings { SceneSettings.preset(named: scene) ?? .ped2 }

    /// Distilled pairs: the k=2 student pairs its bottleneck and its 8x8
    /// decoder feature, the k=1 student only its bottleneck.
    public var pairCount: Int { student.k == 2 ? 2 : 1 }

    init(metadata: [String: String], source: String) throws {
        guard let text = metadata["pkgnet"] else {
            throw PkgnetError(.format, "\(source): no 'pkgnet' entry in the safetensors metadata; is this a pkgnet model file? (convert checkpoints with python -m pkgnet.convert)")
        }
        let raw: RawConfig
        do {
            raw = try JSONDecoder().decode(RawConfig.self, from: Data(text.utf8))
        } catch {
            throw PkgnetError(.format, "\(source): 'pkgnet' metadata is not valid: \(SafeTensors.describe(error))")
        }
        // As in the header: a key given twice is ambiguous, not last-wins.
        let duplicate = Array(text.utf8).withUnsafeBytes { JSONKeys.firstDuplicate(in: $0) }
        if let duplicate {
            throw PkgnetError(.format, "\(source): 'pkgnet' metadata: duplicate key '\(duplicate.key)'\(duplicate.within.map { " in '\($0)'" } ?? "")")
        }
        func bad(_ what: String) -> PkgnetError { PkgnetError(.format, "\(source): 'pkgnet' metadata: \(what)") }
        func unsupported(_ what: String) -> PkgnetError { PkgnetError(.unsupported, "\(source): 'pkgnet' metadata: \(what)") }

        guard raw.format_version == Self.formatVersion else {
            throw unsupported("format_version \(raw.format_version) is not supported (this pkgnet reads version \(Self.formatVersion))")
        }
        guard raw.student.k == 1 || raw.student.k == 2 else { throw unsupported("student.k must be 1 or 2, not \(raw.student.k)") }
        guard (1...4096).contains(raw.student.width) else { throw bad("student.width \(raw.student.width) is out of range 1...4096") }
        guard let task = Task(rawValue: raw.student.task) else { throw unsupported("student.task must be 'pred' or 'recon', not '\(raw.student.task)'") }
        guard raw.student.channels == 1 || raw.student.channels == 3 else {
            throw unsupported("student.channels must be 1 or 3, not \(raw.student.channels)")
        }
        guard let arch = TeacherArch(rawValue: raw.teacher.arch) else {
            throw unsupported("teacher.arch '\(raw.teacher.arch)' is not one of \(TeacherArch.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        func order(_ text: String?, _ key: String) throws -> ChannelOrder {
            guard let text else { return .bgr }
            guard let value = ChannelOrder(rawValue: text) else { throw unsupported("\(key) must be 'bgr' or 'rgb', not '\(text)'") }
            return value
        }
        let mean = raw.teacher.mean ?? [0, 0, 0]
        let std = raw.teacher.std ?? [1, 1, 1]
        guard mean.count == 3, std.count == 3, mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw bad("teacher.mean and teacher.std must hold 3 finite numbers each, std positive (got \(mean), \(std))")
        }
        student = Student(k: raw.student.k, width: raw.student.width, task: task, channels: raw.student.channels)
        teacher = Teacher(arch: arch, channelOrder: try order(raw.teacher.channel_order, "teacher.channel_order"), mean: mean, std: std)
        inputChannelOrder = try order(raw.input?.channel_order, "input.channel_order")

        let components = 1 + (raw.student.k == 2 ? 2 : 1)
        let weights = raw.scoring?.weights ?? [Float](repeating: 1, count: components)
        let mu = raw.scoring?.mu ?? [Float](repeating: 0, count: components)
        let sigma = raw.scoring?.sigma ?? [Float](repeating: 1, count: components)
        for (key, values) in [("weights", weights), ("mu", mu), ("sigma", sigma)] {
            guard values.count == components else {
                throw bad("scoring.\(key) holds \(values.count) numbers; a k=\(raw.student.k) model has \(components) score components [e, c1\(components == 3 ? ", c2" : "")]")
            }
            guard values.allSatisfy(\.isFinite) else { throw bad("scoring.\(key) has a non-finite value: \(values)") }
        }
        guard sigma.allSatisfy({ $0 > 0 }) else { throw bad("scoring.sigma must be positive: \(sigma)") }
        scoring = Scoring(weights: weights, mu: mu, sigma: sigma)

        let rawFrame = raw.frame
        frame = FrameScoring(topK: rawFrame?.top_k ?? 1, emptyFloor: rawFrame?.empty_floor ?? 0,
                             medianWindow: rawFrame?.median_window ?? 19, causal: rawFrame?.causal ?? false)
        if let problem = frame.problem { throw bad("frame.\(problem)") }
        scene = rawFrame?.scene ?? "ped2"
        guard Self.scenes.contains(scene) else {
            throw unsupported("frame.scene must be one of \(Self.scenes.joined(separator: ", ")), not '\(scene)'")
        }
    }
}

/// The JSON as written; optional fields take the published code's defaults.
private struct RawConfig: Decodable {
    struct Student: Decodable { let k: Int; let width: Int; let task: String; let channels: Int }
    struct Teacher: Decodable { let arch: String; let channel_order: String?; let mean: [Float]?; let std: [Float]? }
    struct Input: Decodable { let channel_order: String? }
    struct Scoring: Decodable { let weights: [Float]?; let mu: [Float]?; let sigma: [Float]? }
    struct Frame: Decodable { let top_k: Int?; let empty_floor: Float?; let median_window: Int?; let causal: Bool?; let scene: String? }
    let format_version: Int
    let student: Student
    let teacher: Teacher
    let input: Input?
    let scoring: Scoring?
    let frame: Frame?
}
