/// Everything that decides what `Trainer` computes. The defaults are the
/// published code's (issue 4 and the paper, section 4.1) unless noted.
public struct TrainingOptions: Sendable {
    public enum BatchNormMode: String, Sendable, CaseIterable {
        /// The published training: the student stays in eval mode, so each
        /// BatchNorm is a learned per-channel affine over fixed (0, 1) statistics.
        case fixed
        /// PyTorch train mode: batch statistics, running statistics with momentum 0.1.
        case batch
    }

    public enum GradientLossForm: String, Sendable, CaseIterable {
        /// |dx(t) - dx(p)|^power, as the published code computes it.
        case published
        /// | |dx(t)| - |dx(p)| |^power, the paper's eq. 2.
        case paper
    }

    public var k = 2
    public var width = 16
    public var task: ModelConfig.Task = .pred
    /// Distilled pairs; empty means the published pairs for k with a
    /// torchvision ResNet teacher (bottleneck-layer2, d8-layer1).
    public var pairs: [ModelConfig.Pair] = []

    /// Loss weights (lambda_e, lambda_g, lambda_c): (0.8, 0.1, 0.2) as the
    /// published configs (the paper's text says 0.7 for lambda_e).
    public var predictionLossWeight: Float = 0.8
    public var gradientLossWeight: Float = 0.1
    public var distillationLossWeight: Float = 0.2
    public var gradientLossPower: Double = 3
    public var gradientLossForm: GradientLossForm = .published
    public var batchNorm: BatchNormMode = .fixed

    public var learningRate: Double = 1e-4
    /// The learning rate is multiplied by `learningRateDecay` once, after this
    /// many epochs (PyTorch's MultiStepLR with one milestone): 60 as published.
    public var milestoneEpoch = 60
    public var learningRateDecay: Double = 0.8
    public var adamBeta1: Double = 0.9
    public var adamBeta2: Double = 0.999
    public var adamEpsilon: Double = 1e-7

    public var batchSize = 128
    /// 120 epochs for Ped2 in the paper; on a CPU far fewer do (see the README).
    public var epochs = 120
    public var seed: UInt64 = 0
    /// 0 = the default thread count.
    public var threads = 0

    /// Score weights [w_e, w_c^1, ...]; nil = the paper's Ped2 weights
    /// (0.01, 0.65, 0.35) for two pairs, equal weights otherwise.
    public var scoreWeights: [Float]? = nil
    /// Frame-level settings written into the model (top-k, median window, scene).
    public var frame = FrameScoring(topK: 3, emptyFloor: 0, medianWindow: 19, causal: false)
    public var scene = "ped2"
    /// Channel order of the cubes (and so of the model's input).
    public var inputChannelOrder: ModelConfig.ChannelOrder = .bgr

    /// The teacher's features of every training cube are computed once and
    /// kept when they fit in this many bytes (the teacher is frozen and the
    /// cubes do not change); otherwise the teacher runs at every step.
    public var teacherCacheBytes = 2 << 30

    public init() {}

    /// Checks the values a user can set; returns the first problem.
    public var problem: String? {
        if k != 1 && k != 2 { return "k must be 1 or 2 (got \(k))" }
        if !(1...1024).contains(width) { return "width must be in 1...1024 (got \(width))" }
        for (name, value) in [("prediction", predictionLossWeight), ("gradient", gradientLossWeight), ("distillation", distillationLossWeight)] {
            if !(value.isFinite && value >= 0) { return "the \(name) loss weight must be finite and >= 0 (got \(value))" }
        }
        if predictionLossWeight + gradientLossWeight + distillationLossWeight == 0 { return "all loss weights are 0: nothing to train" }
        if !(gradientLossPower.isFinite && gradientLossPower >= 1) { return "the gradient loss power must be >= 1 (got \(gradientLossPower))" }
        if !(learningRate.isFinite && learningRate > 0) { return "the learning rate must be positive (got \(learningRate))" }
        if !(learningRateDecay.isFinite && learningRateDecay > 0) { return "the learning-rate decay must be positive (got \(learningRateDecay))" }
        if milestoneEpoch < 1 { return "the milestone epoch must be >= 1 (got \(milestoneEpoch))" }
        if !(0..<1).contains(adamBeta1) || !(0..<1).contains(adamBeta2) { return "Adam betas must be in [0, 1) (got \(adamBeta1), \(adamBeta2))" }
        if !(adamEpsilon.isFinite && adamEpsilon > 0) { return "Adam epsilon must be positive (got \(adamEpsilon))" }
        if !(1...65536).contains(batchSize) { return "the batch size must be in 1...65536 (got \(batchSize))" }
        if batchNorm == .batch && batchSize < 2 { return "batch statistics need a batch size of at least 2" }
        if !(1...100_000).contains(epochs) { return "epochs must be in 1...100000 (got \(epochs))" }
        if !(0...Session.maxThreads).contains(threads) { return "threads must be in 0...\(Session.maxThreads) (got \(threads))" }
        if let weights = scoreWeights, !weights.allSatisfy(\.isFinite) { return "score weights must be finite (got \(weights))" }
        if let problem = frame.problem { return "frame.\(problem)" }
        if !ModelConfig.scenes.contains(scene) { return "scene must be one of \(ModelConfig.scenes.joined(separator: ", ")) (got '\(scene)')" }
        if teacherCacheBytes < 0 { return "the teacher cache size must be >= 0" }
        return nil
    }

    /// The learning rate during (1-based) `epoch`.
    func learningRate(epoch: Int) -> Double {
        epoch > milestoneEpoch ? learningRate * learningRateDecay : learningRate
    }
}
