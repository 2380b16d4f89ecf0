// `pkgnet train` (a student on normal footage against a frozen teacher, then
// calibration) and `pkgnet calibrate` (new score statistics for a model).
import ArgumentParser
import Glibc
import PkgnetCore

extension TrainingOptions.BatchNormMode: ExpressibleByArgument {}
extension TrainingOptions.GradientLossForm: ExpressibleByArgument {}

/// "a,b,c" as numbers, or a message naming the option.
func parseNumbers(_ text: String, option: String) throws -> [Float] {
    let parts = text.split(separator: ",").map { $0.trimmingWhitespace() }
    let values = parts.map { Float($0) }
    guard !parts.isEmpty, values.allSatisfy({ $0 != nil && $0!.isFinite }) else {
        throw ValidationError("\(option) takes comma-separated finite numbers, not '\(text)'")
    }
    return values.map { $0! }
}

/// "d8:layer3,d16:layer2" as pairs.
func parsePairs(_ text: String) throws -> [ModelConfig.Pair] {
    try text.split(separator: ",").map { item in
        let parts = item.split(separator: ":", omittingEmptySubsequences: false).map { String($0.trimmingWhitespace()) }
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("--pairs takes student:teacher items separated by commas (e.g. d8:layer3,d16:layer2), not '\(item)'")
        }
        return ModelConfig.Pair(student: parts[0], teacher: parts[1])
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on normal footage (frames + boxes), teacher frozen.",
        discussion: """
        DIR is laid out as DIR/training/frames/<video>/<frame>.jpg and DIR/training/boxes/<video>.csv \
        (as pkgnet eval's testing folder, without labels); DIR may also be the training folder itself. \
        Every box of every frame with 4 frames before it in its clip becomes a training cube.

        The teacher file comes from `python -m pkgnet.convert teacher` (docs/model-format.md). \
        Each epoch ends with a checkpoint (--checkpoint, default OUT.ckpt); --resume continues from it \
        with the same settings. The same seed and thread count give the same model. After the last \
        epoch the score statistics (mu, sigma of each component over the training cubes) are \
        computed and the model is written to OUT.
        """
    )

    @Option(help: ArgumentHelp("Training data folder (see below).", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("Teacher file (.safetensors from pkgnet.convert teacher).", valueName: "file"))
    var teacher: String

    @Option(help: ArgumentHelp("Write the trained model here.", valueName: "model.safetensors"))
    var out: String

    @Option(help: "Student downsampling: 2 = maxpool (two distilled pairs by default), 1 = strided conv.")
    var k: Int = 2

    @Option(help: "Student base width w (channels w, 2w, 4w, 8w).")
    var width: Int = 16

    @Option(help: ArgumentHelp("Distilled pairs student:teacher, comma-separated (student e32 e16 e8 bottleneck d8 d16 d32; teacher blocks as `pkgnet info` lists). Default: the published pairs of a torchvision ResNet teacher.", valueName: "list"))
    var pairs: String?

    @Option(help: "Epochs (the paper: 120 on a GPU).")
    var epochs: Int = 120

    @Option(help: "Cubes per Adam step.")
    var batchSize: Int = 128

    @Option(name: .customLong("lr"), help: "Adam learning rate.")
    var learningRate: Double = 1e-4

    @Option(help: "Epochs after which the learning rate is multiplied by --lr-decay (once).")
    var milestone: Int = 60

    @Option(help: "Learning-rate factor at the milestone.")
    var lrDecay: Double = 0.8

    @Option(help: ArgumentHelp("Loss weights lambda_e,lambda_g,lambda_c (prediction MSE, gradient loss, distillation).", valueName: "e,g,c"))
    var lossWeights: String = "0.8,0.1,0.2"

    @Option(help: "Exponent of the gradient loss.")
    var gradientPower: Double = 3

    @Option(help: "Gradient loss: published (|dx(t) - dx(p)|) or paper (||dx(t)| - |dx(p)||, eq. 2).")
    var gradientLoss: TrainingOptions.GradientLossForm = .published

    @Option(help: "BatchNorm: fixed (eval mode, as published) or batch (batch statistics, momentum 0.1).")
    var batchNorm: TrainingOptions.BatchNormMode = .fixed

    @Option(help: ArgumentHelp("Score weights w_e,w_c1,... written into the model (default: 0.01,0.65,0.35 with two pairs, else all 1).", valueName: "list"))
    var scoreWeights: String?

    @Option(name: .customLong("top-k"), help: "Objects averaged per frame score, written into the model.")
    var topK: Int = 3

    @Option(help: "Median filter window over frame scores, written into the model.")
    var medianWindow: Int = 19

    @Option(help: ArgumentHelp("Scene preset (box filter, motion proposals): ped2, avenue or shanghaitech.", valueName: "name"))
    var scene: String = "ped2"

    @Option(help: "Colour channels of the student: 3 (BGR) or 1 (grey).")
    var channels: Int = 3

    @Option(help: "Seed of the initial weights and the shuffles.")
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Threads; 0 = all CPUs.", valueName: "n"))
    var threads: Int = 0

    @Option(help: ArgumentHelp("Only these videos, comma-separated.", valueName: "list"))
    var videos: String?

    @Option(help: ArgumentHelp("Checkpoint file written after each epoch (default: OUT.ckpt).", valueName: "file"))
    var checkpoint: String?

    @Flag(help: "Continue from the checkpoint (with --epochs equal to its epochs: only calibrate and write the model).")
    var resume = false

    @Option(help: ArgumentHelp("Memory for the teacher features of all cubes, MiB (computed once; 0 = run the teacher at every step).", valueName: "MiB"))
    var teacherCache: Int = 2048

    @Flag(help: "Draw a progress bar on stderr even when it is not a terminal.")
    var progress = false

    @Flag(help: "No progress output at all.")
    var quiet = false

    func validate() throws {
        if progress && quiet { throw ValidationError("--progress and --quiet exclude each other") }
        guard channels == 1 || channels == 3 else { throw ValidationError("--channels must be 1 or 3, not \(channels)") }
        guard teacherCache >= 0 else { throw ValidationError("--teacher-cache must be >= 0") }
        if let problem = try options().problem { throw ValidationError(problem) }
    }

    func options() throws -> TrainingOptions {
        var o = TrainingOptions()
        o.k = k
        o.width = width
        o.pairs = try pairs.map(parsePairs) ?? []
        o.epochs = epochs
        o.batchSize = batchSize
        o.learningRate = learningRate
        o.milestoneEpoch = milestone
        o.learningRateDecay = lrDecay
        let lambdas = try parseNumbers(lossWeights, option: "--loss-weights")
        guard lambdas.count == 3 else { throw ValidationError("--loss-weights takes 3 numbers (e,g,c), not \(lambdas.count)") }
        (o.predictionLossWeight, o.gradientLossWeight, o.distillationLossWeight) = (lambdas[0], lambdas[1], lambdas[2])
        o.gradientLossPower = gradientPower
        o.gradientLossForm = gradientLoss
        o.batchNorm = batchNorm
        o.scoreWeights = try scoreWeights.map { try parseNumbers($0, option: "--score-weights") }
        o.frame = FrameScoring(topK: topK, emptyFloor: 0, medianWindow: medianWindow, causal: false)
        o.scene = scene
        o.seed = seed
        o.threads = threads
        o.teacherCacheBytes = teacherCache << 20
        return o
    }

    func run() throws {
        let options = try options()
        let style: ProgressReporter.Style = quiet ? .off : (progress || stderrIsTerminal ? .bar : .lines)
        let checkpointPath = checkpoint ?? out + ".ckpt"
        let teacherFile: TeacherFile
        do { teacherFile = try TeacherFile(path: teacher) } catch let error as PkgnetError { throw CLIError(error.message) }
        let start = monotonicSeconds()
        let cubes = try loadTrainingCubes(directory: data, videos: videos.map { $0.split(separator: ",").map(String.init) },
                                          channels: channels, order: options.inputChannelOrder,
                                          scene: SceneSettings.preset(named: scene) ?? .ped2, progress: style)
        print("data    \(data): \(cubes.videos) videos, \(cubes.frames) frames, \(cubes.count) training cubes (\(cubes.dropped) boxes filtered out) in \(formatFixed(monotonicSeconds() - start, 1)) s")
        let trainer: Trainer
        do {
            trainer = try Trainer(teacher: teacherFile, cubes: cubes.bytes, count: cubes.count, channels: channels, options: options)
            if resume { try trainer.resume(from: checkpointPath) }
        } catch let error as PkgnetError { throw CLIError(error.message) }
        print("student k=\(options.k), width \(options.width), \(trainer.parameterCount) parameters; teacher \(teacherFile.arch.rawValue); pairs \(trainer.pairs.map { "\($0.student):\($0.teacher)" }.joined(separator: ", "))")
        print("loss    \(options.predictionLossWeight) MSE + \(options.gradientLossWeight) gradient (\(options.gradientLossForm.rawValue), power \(formatFixed(options.gradientLossPower, 1))) + \(options.distillationLossWeight) distillation; BatchNorm \(options.batchNorm.rawValue); Adam lr \(options.learningRate), batch \(options.batchSize), seed \(options.seed)")
        if trainer.completedEpochs > 0 { print("resumed from \(checkpointPath) after epoch \(trainer.completedEpochs)") }
        fflush(nil)

        var bar = TrainingProgressLine(style: style)
        while trainer.completedEpochs < options.epochs {
            let report: EpochReport
            do {
                report = try trainer.runEpoch { bar.show($0) }
            } catch let error as PkgnetError {
                bar.finish()
                let kept = trainer.completedEpochs > 0 ? "; the checkpoint of epoch \(trainer.completedEpochs) is \(checkpointPath) (continue with --resume)" : ""
                throw CLIError("training stopped: \(error.message)\(kept)")
            }
            bar.finish()
            do { try trainer.saveCheckpoint(to: checkpointPath) } catch let error as PkgnetError { throw CLIError(error.message) }
            let rate = Double(trainer.cubeCount) / max(report.seconds, 1e-9)
            print("epoch \(padLeft(String(report.epoch), 3))/\(options.epochs)  loss \(formatFixed(report.loss, 5))  (MSE \(formatFixed(report.predictionLoss, 5)), gradient \(formatFixed(report.gradientLoss, 5)), distillation \(formatFixed(report.distillationLoss, 4)))  lr \(report.learningRate)  \(formatFixed(report.seconds, 1)) s  \(formatFixed(rate, 0)) cubes/s")
            fflush(nil)
        }
        let model: [UInt8]
        do {
            model = try trainer.calibratedModelFile { done, total in bar.show(done: done, total: total, what: "calibrating") }
            bar.finish()
            try writeModel(model, to: out)
        } catch let error as PkgnetError { throw CLIError(error.message) }
        print("model   \(out) (\(model.count) bytes) in \(formatDuration(monotonicSeconds() - start)) total")
    }
}

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute a model's score statistics (mu, sigma per component) on normal footage.",
        discussion: "DIR is laid out as for pkgnet train. Tensors are kept byte for byte; only the model's settings change."
    )

    @Option(help: ArgumentHelp("Model file (.safetensors).", valueName: "model"))
    var model: String

    @Option(help: ArgumentHelp("Normal footage (see pkgnet train).", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("Write the calibrated model here (default: replace the model file).", valueName: "file"))
    var out: String?

    @Option(help: ArgumentHelp("Threads; 0 = all CPUs.", valueName: "n"))
    var threads: Int = 0

    @Option(help: ArgumentHelp("Only these videos, comma-separated.", valueName: "list"))
    var videos: String?

    @Flag(help: "No progress output at all.")
    var quiet = false

    func run() throws {
        let loaded = try loadModel(model)
        let config = loaded.config
        let style: ProgressReporter.Style = quiet ? .off : (stderrIsTerminal ? .bar : .lines)
        let cubes = try loadTrainingCubes(directory: data, videos: videos.map { $0.split(separator: ",").map(String.init) },
                                          channels: config.student.channels, order: config.inputChannelOrder,
                                          scene: config.sceneSettings, progress: style)
        var bar = TrainingProgressLine(style: style)
        do {
            let statistics = try cubes.bytes.withUnsafeBufferPointer { bytes -> (mu: [Float], sigma: [Float]) in
                guard let base = bytes.baseAddress, cubes.count > 0 else {
                    throw PkgnetError(.invalidArgument, "no cubes in '\(data)': nothing to calibrate on")
                }
                return try scoreStatistics(model: loaded, cubes: base, count: cubes.count, threads: threads) { done, total in
                    bar.show(done: done, total: total, what: "calibrating")
                }
            }
            bar.finish()
            let file = try recalibratedModelFile(path: model, model: loaded, mu: statistics.mu, sigma: statistics.sigma)
            try writeModel(file, to: out ?? model)
            print("calibrated on \(cubes.count) cubes: mu \(statistics.mu), sigma \(statistics.sigma)")
            print("model \(out ?? model)")
        } catch let error as PkgnetError {
            throw CLIError(error.message)
        }
    }
}

/// One progress line on stderr for training: epoch, steps, loss, speed.
struct TrainingProgressLine {
    let style: ProgressReporter.Style
    private var lastDraw = -1.0
    private var drawn = false

    init(style: ProgressReporter.Style) { self.style = style }

    mutating func show(_ p: TrainingProgress) {
        let what = p.phase == .training ? "epoch \(p.epoch)/\(p.epochs)" : "teacher features"
        var extra = "\(formatFixed(p.cubesPerSecond, 0)) cubes/s"
        if p.loss.isFinite { extra = "loss \(formatFixed(p.loss, 5))  " + extra }
        draw(done: p.done, total: p.total, text: "\(what)  \(extra)", force: p.done == p.total)
    }

    mutating func show(done: Int, total: Int, what: String) {
        draw(done: done, total: total, text: what, force: done == total)
    }

    private mutating func draw(done: Int, total: Int, text: String, force: Bool) {
        guard style != .off else { return }
        let now = monotonicSeconds()
        guard force || now - lastDraw >= (style == .bar ? 0.2 : 10) else { return }
        lastDraw = now
        let percent = total > 0 ? 100 * done / total : 0
        if style == .bar {
            let filled = total > 0 ? min(24, done * 24 / total) : 0
            printError("\r\u{1B}[K[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 24 - filled) + "] \(percent)% \(done)/\(total)  \(text)")
            drawn = true
        } else {
            printError("pkgnet train: \(percent)% \(done)/\(total)  \(text)\n")
        }
    }

    mutating func finish() {
        if style == .bar && drawn { printError("\n") }
        drawn = false
    }
}

/// Writes a model file atomically, with the CLI's error.
func writeModel(_ bytes: [UInt8], to path: String) throws {
    do { try writeFileAtomically(bytes, to: path) } catch let error as PkgnetError { throw CLIError(error.message) }
}
