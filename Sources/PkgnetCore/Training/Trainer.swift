import Glibc
import PkgnetKernels

/// Where training stands, for progress displays.
public struct TrainingProgress: Sendable {
    public enum Phase: String, Sendable { case teacherFeatures = "teacher features", training = "training" }
    public let phase: Phase
    /// 1-based epoch (0 while computing teacher features).
    public let epoch: Int
    public let epochs: Int
    /// Units done in this phase (steps, or cubes for teacher features) and their total.
    public let done: Int
    public let total: Int
    /// Mean loss of the epoch so far (NaN before the first step).
    public let loss: Double
    public let cubesPerSecond: Double
}

/// One finished epoch: the means over its steps of the total loss and of
/// each unweighted term.
public struct EpochReport: Sendable {
    public let epoch: Int
    public let loss: Double
    public let predictionLoss: Double
    public let gradientLoss: Double
    /// Mean over pairs of the mean 1 - cos.
    public let distillationLoss: Double
    public let learningRate: Double
    public let seconds: Double
}

/// Trains a student on object cubes of normal footage against a frozen
/// teacher (paper eqs. 1-5), then calibrates the score statistics (eq. 8).
///
/// One thread at a time: the trainer holds one set of activations.
public final class Trainer {
    public let options: TrainingOptions
    public let pairs: [ModelConfig.Pair]
    public let cubeCount: Int
    public let channels: Int
    public private(set) var completedEpochs = 0
    /// Adam steps taken so far.
    public private(set) var steps = 0

    let teacher: TeacherFile
    let graph: StudentGraph
    let cubes: [UInt8]
    private let cubeBytes: Int
    private let threads: Int
    private let teacherShapes: [(channels: Int, size: Int)]
    private let teacherSourceChannel: [Int32]
    private let workspace: Workspace
    /// Per pair, every cube's teacher feature, cube-major [n][c][s][s]; nil
    /// when they do not fit in options.teacherCacheBytes.
    private var teacherCache: [[Float]]? = nil
    private let wantsTeacherCache: Bool
    /// The loss of the first step, against which an exploding loss is judged.
    private(set) var firstLoss: Double? = nil
    /// Set when an epoch failed midway: the weights are then half-updated.
    private var failure: String? = nil
    private var staging: [UInt8]
    private var target: [Float]
    private var teacherInput: [Float]
    private var teacherBatch: [[Float]]

    /// A loss this many times the first step's is taken as divergence.
    static let explodingFactor = 1e4

    /// - Parameters:
    ///   - cubes: uint8 [count][5][32][32][channels] (HWC frames oldest first),
    ///     the training cubes, in `options.inputChannelOrder`.
    public init(teacher: TeacherFile, cubes: [UInt8], count: Int, channels: Int, options: TrainingOptions) throws {
        if let problem = options.problem { throw PkgnetError(.invalidArgument, "training options: \(problem)") }
        guard channels == 1 || channels == 3 else {
            throw PkgnetError(.invalidArgument, "training cubes must have 1 or 3 channels (got \(channels))")
        }
        guard count > 0 else {
            throw PkgnetError(.invalidArgument, "no training cubes: the data set gave no object with 4 frames before it")
        }
        cubeBytes = 5 * 32 * 32 * channels
        guard cubes.count == count * cubeBytes else {
            throw PkgnetError(.invalidArgument, "training cubes: \(cubes.count) bytes for \(count) cubes of \(cubeBytes) bytes")
        }
        self.options = options
        self.teacher = teacher
        self.cubes = cubes
        self.cubeCount = count
        self.channels = channels
        threads = options.threads == 0 ? Int(pkk_default_threads()) : options.threads

        let arch = teacher.arch
        let pairs = try Trainer.resolvePairs(options: options, arch: arch)
        self.pairs = pairs
        var teacherShapes: [(channels: Int, size: Int)] = []
        var graphPairs: [(feature: String, teacherChannels: Int)] = []
        for pair in pairs {
            guard let studentShape = ModelConfig.studentFeatureShape(name: pair.student, width: options.width, k: options.k) else {
                throw PkgnetError(.invalidArgument, "pair \(pair.student):\(pair.teacher): the student has no feature '\(pair.student)' (e32, e16, e8, bottleneck, d8, d16, d32)")
            }
            guard let teacherShape = arch.featureShape(block: pair.teacher) else {
                throw PkgnetError(.modelMismatch, "pair \(pair.student):\(pair.teacher): teacher \(arch.rawValue) has no block '\(pair.teacher)' (it has \(arch.blockNames.joined(separator: ", ")))")
            }
            guard studentShape.size == teacherShape.size else {
                throw PkgnetError(.modelMismatch, "pair \(pair.student):\(pair.teacher): student feature \(studentShape.channels)x\(studentShape.size)x\(studentShape.size) and teacher \(arch.rawValue) \(pair.teacher) \(teacherShape.channels)x\(teacherShape.size)x\(teacherShape.size) differ in size")
            }
            teacherShapes.append(teacherShape)
            graphPairs.append((pair.student, teacherShape.channels))
        }
        self.teacherShapes = teacherShapes
        graph = try StudentGraph(k: options.k, width: options.width, channels: channels,
                                 inputFrames: options.task == .pred ? 4 : 1, pairs: graphPairs,
                                 maxBatch: min(options.batchSize, count), batchStatistics: options.batchNorm == .batch,
                                 threads: threads)
        graph.initialize(seed: options.seed)
        workspace = try Workspace()

        let normalization = teacher.normalization
        if channels == 1 {
            teacherSourceChannel = [0, 0, 0]
        } else {
            teacherSourceChannel = normalization.channelOrder == options.inputChannelOrder ? [0, 1, 2] : [2, 1, 0]
        }
        let batch = graph.maxBatch
        staging = [UInt8](repeating: 0, count: batch * cubeBytes)
        target = [Float](repeating: 0, count: batch * channels * 1024)
        teacherInput = [Float](repeating: 0, count: batch * 3 * 1024)
        teacherBatch = teacherShapes.map { [Float](repeating: 0, count: batch * $0.channels * $0.size * $0.size) }
        if let weights = options.scoreWeights, weights.count != 1 + pairs.count {
            throw PkgnetError(.invalidArgument, "\(weights.count) score weights given; this model has \(1 + pairs.count) score components (prediction error and \(pairs.count) pair\(pairs.count == 1 ? "" : "s"))")
        }
        let cacheFloats = teacherShapes.reduce(0) { $0 + $1.channels * $1.size * $1.size } * count
        wantsTeacherCache = cacheFloats * 4 <= options.teacherCacheBytes
    }

    /// The pairs to distill: the options', or the published ones for a
    /// torchvision ResNet teacher.
    static func resolvePairs(options: TrainingOptions, arch: TeacherArch) throws -> [ModelConfig.Pair] {
        if !options.pairs.isEmpty {
            guard options.pairs.count <= ModelConfig.maxPairs else {
                throw PkgnetError(.invalidArgument, "\(options.pairs.count) pairs given; a model has at most \(ModelConfig.maxPairs)")
            }
            return options.pairs
        }
        let published = ModelConfig.defaultPairs(k: options.k)
        guard published.allSatisfy({ arch.featureShape(block: $0.teacher) != nil }), arch.featureShape(block: "layer1")?.size == 8 else {
            throw PkgnetError(.invalidArgument, "teacher \(arch.rawValue) has no published pairing: give the pairs (student feature:teacher block), e.g. d8:\(arch.blockNames.last ?? "block")")
        }
        return published
    }

    /// A 64-bit FNV-1a hash of the cube bytes, read as 8-byte words: a
    /// checkpoint remembers it so that a resume on other data is refused.
    private(set) lazy var cubeFingerprint: String = {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        cubes.withUnsafeBytes { raw in
            let words = raw.count / 8
            for i in 0..<words {
                hash = (hash ^ raw.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)) &* 0x100_0000_01B3
            }
            for i in (words * 8)..<raw.count { hash = (hash ^ UInt64(raw[i])) &* 0x100_0000_01B3 }
        }
        return String(hash, radix: 16)
    }()

    /// Continues a run from a checkpoint's position (TrainerFiles.swift).
    func restorePosition(completedEpochs: Int, steps: Int, firstLoss: Double?) {
        self.completedEpochs = completedEpochs
        self.steps = steps
        self.firstLoss = firstLoss
    }

    /// Trainable parameters of the student (projections included).
    public var parameterCount: Int { graph.store.parameterCount }

    // MARK: Epochs

    /// Runs one epoch: a seeded shuffle, then one Adam step per batch.
    /// Throws (leaving the trainer unusable) when the loss turns NaN or
    /// explodes; checkpoints written before stay valid.
    public func runEpoch(progress: (TrainingProgress) -> Void = { _ in }) throws -> EpochReport {
        if let failure {
            throw PkgnetError(.invalidArgument, "the trainer stopped after an error and cannot continue (\(failure)); resume a new trainer from the last checkpoint")
        }
        do {
            return try runEpochChecked(progress: progress)
        } catch let error as PkgnetError {
            failure = error.message
            throw error
        }
    }

    private func runEpochChecked(progress: (TrainingProgress) -> Void) throws -> EpochReport {
        pkk_set_threads(Int32(threads))
        if wantsTeacherCache && teacherCache == nil { try fillTeacherCache(progress: progress) }
        let epoch = completedEpochs + 1
        let learningRate = options.learningRate(epoch: epoch)
        // Seeded per epoch, so a resumed run shuffles as an uninterrupted one.
        var random = SeededRandom(seed: options.seed ^ (UInt64(epoch) &* 0xD1B5_4A32_D192_ED03))
        let order = random.permutation(cubeCount)
        let batchSize = graph.maxBatch
        let stepCount = (cubeCount + batchSize - 1) / batchSize
        var sums = (total: 0.0, prediction: 0.0, gradient: 0.0, distillation: 0.0)
        let start = monotonicSeconds()
        for s in 0..<stepCount {
            let indices = Array(order[(s * batchSize)..<min(cubeCount, (s + 1) * batchSize)])
            let losses = try trainStep(indices, learningRate: learningRate, epoch: epoch)
            sums.total += losses.total
            sums.prediction += losses.prediction
            sums.gradient += losses.gradient
            sums.distillation += losses.distillation
            let elapsed = monotonicSeconds() - start
            progress(TrainingProgress(phase: .training, epoch: epoch, epochs: options.epochs, done: s + 1, total: stepCount,
                                      loss: sums.total / Double(s + 1),
                                      cubesPerSecond: Double(min(cubeCount, (s + 1) * batchSize)) / max(elapsed, 1e-9)))
        }
        let bad = pkk_first_nonfinite(graph.store.values, graph.store.parameterCount)
        guard bad < 0 else {
            throw PkgnetError(.internal, "epoch \(epoch): a student parameter became non-finite; the last checkpoint is kept")
        }
        completedEpochs = epoch
        let n = Double(stepCount)
        return EpochReport(epoch: epoch, loss: sums.total / n, predictionLoss: sums.prediction / n,
                           gradientLoss: sums.gradient / n, distillationLoss: sums.distillation / n,
                           learningRate: learningRate, seconds: monotonicSeconds() - start)
    }

    private func trainStep(_ indices: [Int], learningRate: Double, epoch: Int) throws
        -> (total: Double, prediction: Double, gradient: Double, distillation: Double)
    {
        let b = indices.count
        let c = channels
        let plane = 32 * 32
        try placeBatchInputs(indices)
        graph.forward(batch: b)

        graph.beginBackward()
        let prediction = graph.pointer(graph.prediction, batch: b)
        let predictionGradient = graph.gradient(graph.prediction, batch: b)
        let first = graph.claimGradient(graph.prediction, batch: b)
        let (mse, gradientLoss): (Double, Double) = target.withUnsafeBufferPointer { t in
            let mse = pkk_mse_loss(prediction, t.baseAddress, c * b * plane, options.predictionLossWeight, predictionGradient, first)
            let gradientLoss = pkk_gradient_loss(prediction, t.baseAddress, Int32(c), Int32(b), 32, 32, options.gradientLossPower,
                                                 options.gradientLossForm == .paper ? 1 : 0,
                                                 options.gradientLossWeight, predictionGradient, 1)
            return (mse, gradientLoss)
        }
        var distillation = 0.0
        let pairWeight = options.distillationLossWeight / Float(pairs.count)
        for (j, output) in graph.pairOutputs.enumerated() {
            let accumulate = graph.claimGradient(output, batch: b)
            let area = output.size * output.size
            distillation += teacherBatch[j].withUnsafeBufferPointer { t in
                pkk_cosine_loss(graph.pointer(output, batch: b), t.baseAddress, Int32(output.channels), Int32(b), Int32(area),
                                pairWeight, graph.gradient(output, batch: b), accumulate)
            }
        }
        distillation /= Double(pairs.count)
        let total = Double(options.predictionLossWeight) * mse + Double(options.gradientLossWeight) * gradientLoss
            + Double(options.distillationLossWeight) * distillation
        guard total.isFinite else {
            throw PkgnetError(.internal, "epoch \(epoch), step \(steps + 1): the loss is \(total) (prediction \(mse), gradient \(gradientLoss), distillation \(distillation)); lower the learning rate; the last checkpoint is kept")
        }
        if let firstLoss, total > Trainer.explodingFactor * firstLoss {
            throw PkgnetError(.internal, "epoch \(epoch), step \(steps + 1): the loss exploded to \(total) from \(firstLoss) at the first step; lower the learning rate; the last checkpoint is kept")
        }
        if firstLoss == nil { firstLoss = total }

        graph.store.zeroGradients()
        graph.backward(batch: b)
        steps += 1
        let store = graph.store
        pkk_adam_step(store.values, store.gradients, store.adamFirst, store.adamSecond, store.parameterCount,
                      steps, learningRate, options.adamBeta1, options.adamBeta2, options.adamEpsilon)
        return (total, mse, gradientLoss, distillation)
    }

    /// Places a batch's inputs: the student's frames in the graph's input, the
    /// target frame in `target`, and each pair's teacher feature in teacherBatch.
    private func placeBatchInputs(_ indices: [Int]) throws {
        let b = indices.count
        let c = Int32(channels)
        cubes.withUnsafeBufferPointer { all in
            staging.withUnsafeMutableBufferPointer { stage in
                for (i, index) in indices.enumerated() {
                    memcpy(stage.baseAddress! + i * cubeBytes, all.baseAddress! + index * cubeBytes, cubeBytes)
                }
            }
        }
        let input = graph.pointer(graph.input, batch: b)
        staging.withUnsafeBufferPointer { stage in
            target.withUnsafeMutableBufferPointer { t in
                pkk_unpack_u8_cubes(stage.baseAddress, Int32(b), c, 4, 1, t.baseAddress)
                if options.task == .pred {
                    pkk_unpack_u8_cubes(stage.baseAddress, Int32(b), c, 0, 4, input)
                } else {
                    memcpy(input, t.baseAddress!, b * channels * 1024 * 4)
                }
            }
        }
        if let cache = teacherCache {
            for j in 0..<pairs.count {
                let area = teacherShapes[j].size * teacherShapes[j].size
                let tc = teacherShapes[j].channels
                cache[j].withUnsafeBufferPointer { source in
                    teacherBatch[j].withUnsafeMutableBufferPointer { destination in
                        for ch in 0..<tc {
                            for (i, index) in indices.enumerated() {
                                memcpy(destination.baseAddress! + (ch * b + i) * area,
                                       source.baseAddress! + (index * tc + ch) * area, area * 4)
                            }
                        }
                    }
                }
            }
        } else {
            let features = try runTeacher(batch: b)
            for j in 0..<pairs.count {
                teacherBatch[j].withUnsafeMutableBufferPointer {
                    _ = memcpy($0.baseAddress!, features[j].data, features[j].channels * b * features[j].size * features[j].size * 4)
                }
            }
        }
    }

    /// Runs the teacher on the target frames in `target` (batch b).
    private func runTeacher(batch b: Int) throws -> [FeatureMap] {
        let normalization = teacher.normalization
        let input = try workspace.map("t.trainer.input", channels: 3, size: 32, batch: b)
        target.withUnsafeBufferPointer { t in
            teacherSourceChannel.withUnsafeBufferPointer { source in
                normalization.mean.withUnsafeBufferPointer { mean in
                    normalization.std.withUnsafeBufferPointer { std in
                        pkk_teacher_input(t.baseAddress, b * 1024, source.baseAddress, mean.baseAddress, std.baseAddress, input.data)
                    }
                }
            }
        }
        return try teacher.network(input, batch: b, blocks: pairs.map(\.teacher), workspace: workspace)
    }

    /// Computes every cube's teacher features once.
    private func fillTeacherCache(progress: (TrainingProgress) -> Void) throws {
        var cache = teacherShapes.map { [Float](repeating: 0, count: cubeCount * $0.channels * $0.size * $0.size) }
        let chunk = graph.maxBatch
        let start = monotonicSeconds()
        var done = 0
        while done < cubeCount {
            let b = min(chunk, cubeCount - done)
            cubes.withUnsafeBufferPointer { all in
                target.withUnsafeMutableBufferPointer { t in
                    pkk_unpack_u8_cubes(all.baseAddress! + done * cubeBytes, Int32(b), Int32(channels), 4, 1, t.baseAddress)
                }
            }
            let features = try runTeacher(batch: b)
            for j in 0..<pairs.count {
                let map = features[j], area = map.size * map.size
                cache[j].withUnsafeMutableBufferPointer { destination in
                    for ch in 0..<map.channels {
                        for i in 0..<b {
                            memcpy(destination.baseAddress! + ((done + i) * map.channels + ch) * area,
                                   map.data + (ch * b + i) * area, area * 4)
                        }
                    }
                }
            }
            done += b
            progress(TrainingProgress(phase: .teacherFeatures, epoch: 0, epochs: options.epochs, done: done, total: cubeCount,
                                      loss: .nan, cubesPerSecond: Double(done) / max(monotonicSeconds() - start, 1e-9)))
        }
        teacherCache = cache
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}
