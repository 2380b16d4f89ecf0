import FoundationEssentials
import Glibc

/// What a checkpoint records besides the tensors, to resume exactly and to
/// refuse resuming a different run.
private struct CheckpointInfo: Codable, Equatable {
    var format_version = 1
    var completed_epochs: Int
    var steps: Int
    var first_loss: Double?
    /// The settings and data a resumed run must share.
    var run: [String: String]
}

extension Trainer {
    /// Everything that decides the next epochs' arithmetic, as text.
    private var runSettings: [String: String] {
        let o = options
        return [
            "k": "\(o.k)", "width": "\(o.width)", "task": o.task.rawValue, "channels": "\(channels)",
            "pairs": pairs.map { "\($0.student):\($0.teacher)" }.joined(separator: ","),
            "teacher": teacher.arch.rawValue,
            "batch_norm": o.batchNorm.rawValue, "batch_size": "\(o.batchSize)", "seed": "\(o.seed)",
            "loss_weights": "\(o.predictionLossWeight),\(o.gradientLossWeight),\(o.distillationLossWeight)",
            "gradient_loss": "\(o.gradientLossForm.rawValue) power \(o.gradientLossPower)",
            "learning_rate": "\(o.learningRate) x\(o.learningRateDecay) after \(o.milestoneEpoch)",
            "adam": "\(o.adamBeta1),\(o.adamBeta2),\(o.adamEpsilon)",
            "input_channel_order": o.inputChannelOrder.rawValue,
            "cubes": "\(cubeCount) cubes, fingerprint \(cubeFingerprint)",
        ]
    }
}

extension Trainer {
    private var checkpointInfo: CheckpointInfo {
        CheckpointInfo(completed_epochs: completedEpochs, steps: steps, first_loss: firstLoss, run: runSettings)
    }

    /// Writes the student, the Adam moments and the position in the run
    /// (atomically: the previous checkpoint stays until the new one is whole).
    public func saveCheckpoint(to path: String) throws {
        let store = graph.store
        var tensors = store.namedTensors(prefix: "student.").map {
            SafeTensorsWriter.Tensor(name: $0.name, shape: $0.shape, floats: $0.values)
        }
        for (name, arena) in [("adam.m.", store.adamFirst!), ("adam.v.", store.adamSecond!)] {
            for tensor in store.parameters {
                tensors.append(SafeTensorsWriter.Tensor(name: name + tensor.name, shape: tensor.shape,
                                                        floats: Array(UnsafeBufferPointer(start: arena + tensor.offset, count: tensor.count))))
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let info = String(decoding: try encoder.encode(checkpointInfo), as: UTF8.self)
        try writeFileAtomically(SafeTensorsWriter.encode(tensors, metadata: ["pkgnet_checkpoint": info]), to: path)
    }

    /// Restores a checkpoint written by a run with the same settings and data.
    public func resume(from path: String) throws {
        let bytes = try readWholeFile(path)
        try bytes.withUnsafeBytes { raw in
            let file = try SafeTensors(bytes: raw, source: path)
            guard let text = file.metadata["pkgnet_checkpoint"] else {
                throw PkgnetError(.format, "\(path) is not a pkgnet training checkpoint (no 'pkgnet_checkpoint' metadata)")
            }
            let saved: CheckpointInfo
            do {
                saved = try JSONDecoder().decode(CheckpointInfo.self, from: Data(text.utf8))
            } catch {
                throw PkgnetError(.format, "\(path): checkpoint metadata is not valid: \(SafeTensors.describe(error))")
            }
            let mine = runSettings
            let differing = Set(mine.keys).union(saved.run.keys).sorted().filter { mine[$0] != saved.run[$0] }
            guard differing.isEmpty else {
                let details = differing.map { "\($0) \(saved.run[$0] ?? "absent") there, \(mine[$0] ?? "absent") here" }
                throw PkgnetError(.invalidArgument, "\(path) was written by a different run: \(details.joined(separator: "; "))")
            }
            // Equal is fine: the run then goes straight to calibration (a run
            // that died there loses nothing).
            guard saved.completed_epochs <= options.epochs else {
                throw PkgnetError(.invalidArgument, "\(path) has completed \(saved.completed_epochs) epochs, more than the \(options.epochs) asked for")
            }
            let store = graph.store
            func restore(_ name: String, _ tensor: ParameterTensor, into destination: UnsafeMutablePointer<Float>) throws {
                guard let entry = file.entries[name], entry.shape == tensor.shape else {
                    throw PkgnetError(.format, "\(path): tensor '\(name)' is missing or has another shape than \(tensor.shape)")
                }
                let values = file.floats(entry)
                values.withUnsafeBufferPointer { _ = memcpy(destination, $0.baseAddress!, tensor.count * 4) }
            }
            for tensor in store.parameters {
                try restore("student." + tensor.name, tensor, into: store.value(tensor))
                try restore("adam.m." + tensor.name, tensor, into: store.adamFirst + tensor.offset)
                try restore("adam.v." + tensor.name, tensor, into: store.adamSecond + tensor.offset)
            }
            for tensor in store.statistics {
                try restore("student." + tensor.name, tensor, into: store.statistic(tensor))
            }
            restorePosition(completedEpochs: saved.completed_epochs, steps: saved.steps, firstLoss: saved.first_loss)
        }
    }

    /// The model file of the student as it stands, with the teacher's tensors
    /// copied unchanged and the given score statistics.
    public func modelFile(scoring: ModelConfig.Scoring) throws -> [UInt8] {
        let normalization = teacher.normalization
        let metadata = ModelMetadata(
            student: ModelConfig.Student(k: options.k, width: options.width, task: options.task, channels: channels),
            teacher: normalization, inputChannelOrder: options.inputChannelOrder, pairs: pairs,
            scoring: scoring, frame: options.frame, scene: options.scene)
        let tensors = graph.store.namedTensors(prefix: "student.").map {
            SafeTensorsWriter.Tensor(name: $0.name, shape: $0.shape, floats: $0.values)
        } + teacher.tensors.map { SafeTensorsWriter.Tensor(name: $0.name, shape: $0.shape, floats: $0.values) }
        return SafeTensorsWriter.encode(tensors, metadata: ["pkgnet": try metadata.json()])
    }
}

/// A whole file's bytes.
func readWholeFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw PkgnetError(.io, "cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
        throw PkgnetError(.io, "'\(path)' is not a regular file")
    }
    var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw PkgnetError(.io, "cannot read '\(path)': \(n < 0 ? String(cString: strerror(errno)) : "file shrank while reading")") }
        done += n
    }
    return bytes
}
