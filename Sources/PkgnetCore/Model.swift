import PkgnetKernels

/// A loaded PKG-Net model: student, teacher and scoring settings. Immutable
/// after loading, so any number of sessions on any threads may share it.
public final class Model: @unchecked Sendable {
    public let config: ModelConfig
    let student: Student
    let teacher: Teacher
    /// The teacher block of each distilled pair, pair 1 first.
    let teacherBlocks: [String]
    /// Teacher input channel i comes from target-frame channel sourceChannel[i]:
    /// a swap when the teacher's channel order differs from the cubes', the
    /// grey channel three times for a grey model.
    let teacherSourceChannel: [Int32]

    /// Side of each distilled pair's feature map, pair 1 first.
    public var pairSizes: [Int] { student.featureShapes.map(\.size) }

    /// Loads a model file. The file is memory-mapped only while loading:
    /// each tensor is read once, converted to fp32, BatchNorm folded and
    /// arranged for its kernel in the same pass, and its pages are dropped
    /// once read, so that loading never holds the file and the converted
    /// weights in memory together.
    public convenience init(path: String) throws {
        let file = try MappedFile(path, kind: "model file")
        try self.init(bytes: file.bytes, source: path, mapped: true)
        withExtendedLifetime(file) {}
    }

    /// Loads a model from a safetensors image in memory; `source` names it in messages.
    public convenience init(bytes: UnsafeRawBufferPointer, source: String = "model in memory") throws {
        try self.init(bytes: bytes, source: source, mapped: false)
    }

    /// mapped: `bytes` is a private read-only file mapping, whose pages may be dropped.
    init(bytes: UnsafeRawBufferPointer, source: String, mapped: Bool) throws {
        try PkgnetRuntime.start()
        let file = try SafeTensors(bytes: bytes, source: source, mapped: mapped)
        config = try ModelConfig(metadata: file.metadata, source: source)
        let studentWeights = WeightReader(file: file, prefix: "student.", source: source)
        let teacherWeights = WeightReader(file: file, prefix: "teacher.", source: source)
        student = try Student(config: config, weights: studentWeights)
        teacher = try Teacher(arch: config.teacher.arch, weights: teacherWeights)
        teacherBlocks = config.pairs.map(\.teacher)

        let extra = studentWeights.untaken() + teacherWeights.untaken()
            + file.names.filter { !$0.hasPrefix("student.") && !$0.hasPrefix("teacher.") }.sorted()
        guard extra.isEmpty else {
            throw PkgnetError(.modelMismatch, "\(source): unexpected tensors \(extra.prefix(5).joined(separator: ", "))\(extra.count > 5 ? " and \(extra.count - 5) more" : "") for a k=\(config.student.k) student with \(config.pairCount) distilled pair\(config.pairCount == 1 ? "" : "s") and a \(config.teacher.arch.rawValue) teacher")
        }
        if config.student.channels == 1 {
            teacherSourceChannel = [0, 0, 0]
        } else if config.teacher.channelOrder == config.inputChannelOrder {
            teacherSourceChannel = [0, 1, 2]
        } else {
            teacherSourceChannel = [2, 1, 0]
        }
    }
}
