import FoundationEssentials
import PkgnetKernels

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

    /// A distilled pair: a student feature (StudentFeature's names: e32,
    /// e16, e8, bottleneck, d8, d16, d32) and a teacher block
    /// (TeacherArch.blockNames) of the same side.
    public struct Pair: Sendable, Equatable {
        public var student: String
        public var teacher: String

        public init(student: String, teacher: String) {
            self.student = student
            self.teacher = teacher
        }
    }

    /// Weights and training statistics of the score components, in the order
    /// [prediction error, pair 1, ..., pair K].
    public struct Scoring: Sendable {
        public var weights: [Float]
        public var mu: [Float]
        public var sigma: [Float]
    }

    public static let formatVersion = 1
    /// Most distilled pairs a model may have: the C API's fixed-size arrays
    /// (PKGNET_MAX_PAIRS) hold that many.
    public static let maxPairs = Int(PKGNET_MAX_PAIRS)
    /// Scenes whose frame-level settings (SceneSettings) pkgnet knows.
    public static let scenes = ["ped2", "avenue", "shanghaitech"]

    public var student: Student
    public var teacher: Teacher
    /// The distilled pairs, in the order of the inconsistency scores.
    public var pairs: [Pair]
    public var inputChannelOrder: ChannelOrder
    public var scoring: Scoring
    /// Frame-level scoring (metadata "frame"; defaults when absent).
    public var frame: FrameScoring
    /// The scene the model was trained on, one of `scenes`: picks the
    /// detector and motion-proposal settings (metadata "frame.scene", default ped2).
    public var scene: String
    /// The preset of `scene` (validated at load, so the fallback is never taken).
    public var sceneSettings: SceneSettings { SceneSettings.preset(named: scene) ?? .ped2 }

    public var pairCount: Int { pairs.count }

    /// Channels and side of a student feature (see Pair) for a student of
    /// base width `width`; nil for an unknown name. Both k have the same.
    public static func studentFeatureShape(name: String, width: Int, k: Int) -> (channels: Int, size: Int)? {
        StudentFeature(rawValue: name)?.shape(width: width)
    }

    /// The pairs of a model file without "pairs", as the published code
    /// distils a torchvision teacher: bottleneck with layer2 and, for k=2,
    /// the 8x8 decoder feature with layer1.
    static func defaultPairs(k: Int) -> [Pair] {
        let first = Pair(student: "bottleneck", teacher: "layer2")
        return k == 2 ? [first, Pair(student: "d8", teacher: "layer1")] : [first]
    }

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
        student = Student(k: raw.student.k, width: raw.student.width, task: task, channels: raw.student.channels)
        teacher = try Self.teacher(arch: raw.teacher.arch, channelOrder: raw.teacher.channel_order ?? "bgr",
                                   mean: raw.teacher.mean ?? [0, 0, 0], std: raw.teacher.std ?? [1, 1, 1], key: "teacher.",
                                   bad: bad, unsupported: unsupported)
        inputChannelOrder = try Self.channelOrder(raw.input?.channel_order ?? "bgr", key: "input.channel_order", unsupported: unsupported)
        pairs = try Self.pairs(raw.pairs, student: student, arch: teacher.arch, source: source, bad: bad, unsupported: unsupported)

        let components = 1 + pairs.count
        let weights = raw.scoring?.weights ?? [Float](repeating: 1, count: components)
        let mu = raw.scoring?.mu ?? [Float](repeating: 0, count: components)
        let sigma = raw.scoring?.sigma ?? [Float](repeating: 1, count: components)
        for (key, values) in [("weights", weights), ("mu", mu), ("sigma", sigma)] {
            guard values.count == components else {
                let names = ["e"] + (1...pairs.count).map { "c\($0)" }
                throw bad("scoring.\(key) holds \(values.count) numbers; a model with \(pairs.count) distilled pair\(pairs.count == 1 ? "" : "s") has \(components) score components [\(names.joined(separator: ", "))]")
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

    /// A teacher's settings, checked; `key` prefixes the names in messages
    /// ("teacher." in a model file, nothing in a teacher file).
    static func teacher(arch archName: String, channelOrder order: String, mean: [Float], std: [Float], key: String,
                        bad: (String) -> PkgnetError, unsupported: (String) -> PkgnetError) throws -> Teacher {
        guard let arch = TeacherArch(rawValue: archName) else {
            throw unsupported("\(key)arch '\(archName)' is not one of \(TeacherArch.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard mean.count == 3, std.count == 3, mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw bad("\(key)mean and \(key)std must hold 3 finite numbers each, std positive (got \(mean), \(std))")
        }
        return Teacher(arch: arch, channelOrder: try channelOrder(order, key: key + "channel_order", unsupported: unsupported),
                       mean: mean, std: std)
    }

    static func channelOrder(_ text: String, key: String, unsupported: (String) -> PkgnetError) throws -> ChannelOrder {
        guard let value = ChannelOrder(rawValue: text) else { throw unsupported("\(key) must be 'bgr' or 'rgb', not '\(text)'") }
        return value
    }

    /// The metadata's pairs, or the published code's for a torchvision
    /// teacher, each checked: known names, one side on both ends.
    private static func pairs(_ raw: [RawConfig.Pair]?, student: Student, arch: TeacherArch, source: String,
                              bad: (String) -> PkgnetError, unsupported: (String) -> PkgnetError) throws -> [Pair] {
        guard let raw else {
            guard arch.family == .torchvision else {
                throw bad("teacher.arch '\(arch.rawValue)' has no default pairs: 'pairs' must name them, e.g. [{\"student\": \"d8\", \"teacher\": \"\(arch.blockNames.last!)\"}]")
            }
            return defaultPairs(k: student.k)
        }
        guard (1...maxPairs).contains(raw.count) else {
            throw bad("pairs holds \(raw.count) pairs; a model has 1 to \(maxPairs)")
        }
        return try raw.enumerated().map { j, pair in
            guard let studentShape = studentFeatureShape(name: pair.student, width: student.width, k: student.k) else {
                throw unsupported("pairs[\(j)].student '\(pair.student)' is not one of \(StudentFeature.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let teacherShape = arch.featureShape(block: pair.teacher) else {
                throw unsupported("pairs[\(j)].teacher '\(pair.teacher)' is not a block of \(arch.rawValue) (\(arch.blockNames.joined(separator: ", ")))")
            }
            guard studentShape.size == teacherShape.size else {
                throw PkgnetError(.modelMismatch, "\(source): 'pkgnet' metadata: pairs[\(j)] compares student feature '\(pair.student)' (\(studentShape.size)x\(studentShape.size)) with teacher \(arch.rawValue) block '\(pair.teacher)' (\(teacherShape.size)x\(teacherShape.size)); a pair needs maps of one size")
            }
            return Pair(student: pair.student, teacher: pair.teacher)
        }
    }
}

/// The JSON as written; optional fields take the published code's defaults.
private struct RawConfig: Decodable {
    struct Student: Decodable { let k: Int; let width: Int; let task: String; let channels: Int }
    struct Teacher: Decodable { let arch: String; let channel_order: String?; let mean: [Float]?; let std: [Float]? }
    struct Pair: Decodable { let student: String; let teacher: String }
    struct Input: Decodable { let channel_order: String? }
    struct Scoring: Decodable { let weights: [Float]?; let mu: [Float]?; let sigma: [Float]? }
    struct Frame: Decodable { let top_k: Int?; let empty_floor: Float?; let median_window: Int?; let causal: Bool?; let scene: String? }
    let format_version: Int
    let student: Student
    let teacher: Teacher
    let pairs: [Pair]?
    let input: Input?
    let scoring: Scoring?
    let frame: Frame?
}
