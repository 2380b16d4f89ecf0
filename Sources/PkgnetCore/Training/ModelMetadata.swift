import FoundationEssentials

/// The `pkgnet` metadata entry of a model file (docs/model-format.md), as
/// the trainer and `pkgnet calibrate` write it.
struct ModelMetadata: Encodable {
    struct Student: Encodable { let k: Int; let width: Int; let task: String; let channels: Int }
    struct Teacher: Encodable { let arch: String; let channel_order: String; let mean: [Float]; let std: [Float] }
    struct Input: Encodable { let channel_order: String }
    struct Scoring: Encodable { let weights: [Float]; let mu: [Float]; let sigma: [Float] }
    struct Frame: Encodable { let top_k: Int; let empty_floor: Float; let median_window: Int; let causal: Bool; let scene: String }
    struct Pair: Encodable { let student: String; let teacher: String }

    let format_version = ModelConfig.formatVersion
    let student: Student
    let teacher: Teacher
    let input: Input
    let pairs: [Pair]
    let scoring: Scoring
    let frame: Frame

    init(student: ModelConfig.Student, teacher: ModelConfig.Teacher, inputChannelOrder: ModelConfig.ChannelOrder,
         pairs: [ModelConfig.Pair], scoring: ModelConfig.Scoring, frame: FrameScoring, scene: String) {
        self.student = Student(k: student.k, width: student.width, task: student.task.rawValue, channels: student.channels)
        self.teacher = Teacher(arch: teacher.arch.rawValue, channel_order: teacher.channelOrder.rawValue,
                               mean: teacher.mean, std: teacher.std)
        input = Input(channel_order: inputChannelOrder.rawValue)
        self.pairs = pairs.map { Pair(student: $0.student, teacher: $0.teacher) }
        self.scoring = Scoring(weights: scoring.weights, mu: scoring.mu, sigma: scoring.sigma)
        self.frame = Frame(top_k: frame.topK, empty_floor: frame.emptyFloor, median_window: frame.medianWindow,
                           causal: frame.causal, scene: scene)
    }

    /// A loaded model's settings with other scoring statistics.
    init(config: ModelConfig, scoring: ModelConfig.Scoring) {
        self.init(student: config.student, teacher: config.teacher, inputChannelOrder: config.inputChannelOrder,
                  pairs: config.pairs, scoring: scoring, frame: config.frame, scene: config.scene)
    }

    /// The JSON text. Fails only for a non-finite number, which JSON cannot hold.
    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            return String(decoding: try encoder.encode(self), as: UTF8.self)
        } catch {
            throw PkgnetError(.invalidArgument, "model settings cannot be written as JSON (a non-finite number?): \(scoring)")
        }
    }
}
