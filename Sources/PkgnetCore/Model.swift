import Glibc
import PkgnetKernels

/// A loaded PKG-Net model: student, teacher and scoring settings. Immutable
/// after loading, so any number of sessions on any threads may share it.
public final class Model: @unchecked Sendable {
    public let config: ModelConfig
    let student: Student
    let teacher: Teacher
    /// Teacher input channel i comes from target-frame channel sourceChannel[i]:
    /// a swap when the teacher's channel order differs from the cubes', the
    /// grey channel three times for a grey model.
    let teacherSourceChannel: [Int32]

    /// Side of each distilled pair's feature map, pair 1 first.
    public var pairSizes: [Int] { student.featureShapes.map(\.size) }

    /// Loads a model file. The file is memory-mapped only while loading:
    /// every tensor is converted to fp32 (and BatchNorm folded) on the way in.
    public convenience init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PkgnetError(.io, "cannot open model file '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw PkgnetError(.io, "cannot stat model file '\(path)': \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw PkgnetError(.io, "model file '\(path)' is not a regular file")
        }
        let size = Int(info.st_size)
        guard size > 0 else { throw PkgnetError(.format, "model file '\(path)' is empty") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw PkgnetError(.io, "cannot map model file '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { munmap(mapped, size) }
        try self.init(bytes: UnsafeRawBufferPointer(start: mapped, count: size), source: path)
    }

    /// Loads a model from a safetensors image in memory; `source` names it in messages.
    public init(bytes: UnsafeRawBufferPointer, source: String = "model in memory") throws {
        try PkgnetRuntime.start()
        let file = try SafeTensors(bytes: bytes, source: source)
        config = try ModelConfig(metadata: file.metadata, source: source)
        let studentWeights = WeightReader(file: file, prefix: "student.", source: source)
        let teacherWeights = WeightReader(file: file, prefix: "teacher.", source: source)
        student = try Student(config: config, weights: studentWeights)
        teacher = try Teacher(arch: config.teacher.arch, weights: teacherWeights)

        let extra = studentWeights.untaken() + teacherWeights.untaken()
            + file.entries.keys.filter { !$0.hasPrefix("student.") && !$0.hasPrefix("teacher.") }.sorted()
        guard extra.isEmpty else {
            throw PkgnetError(.modelMismatch, "\(source): unexpected tensors \(extra.prefix(5).joined(separator: ", "))\(extra.count > 5 ? " and \(extra.count - 5) more" : "") for a k=\(config.student.k) student with a \(config.teacher.arch.rawValue) teacher")
        }
        let teacherChannels = config.teacher.arch.featureChannels
        for (j, (shape, teacherC)) in zip(student.featureShapes, [teacherChannels.block2, teacherChannels.block1]).enumerated() {
            guard shape.channels == teacherC else {
                let block = j == 0 ? "block2 (layer2)" : "block1 (stem + layer1)"
                throw PkgnetError(.modelMismatch, "\(source): distilled pair \(j + 1) does not match: student feature \(shape.channels)x\(shape.size)x\(shape.size), teacher \(config.teacher.arch.rawValue) \(block) \(teacherC)x\(shape.size)x\(shape.size)")
            }
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
