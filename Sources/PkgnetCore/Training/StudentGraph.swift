import Glibc
import PkgnetKernels

/// The student U-Net as the trainer runs it: unfused layers (conv, BatchNorm +
/// ReLU, maxpool, transposed conv) over activations that are all kept for the
/// backward pass, with the same topology and tensor names as `Student`.
///
/// Layout as in the inference kernels: every activation is channel-major
/// [channels][batch][size][size]. A U-Net concatenation is one allocation whose
/// two channel ranges are written by two layers, and since gradients live at
/// the same offsets in a sibling arena, the concatenation's backward is free.
final class StudentGraph {
    /// Channels [channelStart, channelStart + channels) of an allocation.
    struct Activation {
        let allocation: Int
        let channelStart: Int
        let channels: Int
        let size: Int
    }

    struct Conv {
        let weight: ParameterTensor
        let bias: ParameterTensor
        let cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int
    }

    struct BatchNorm {
        let gamma: ParameterTensor
        let beta: ParameterTensor
        let runningMean: ParameterTensor
        let runningVariance: ParameterTensor
        /// Offset of this layer's saved batch mean and 1/std in `savedStatistics`.
        let savedOffset: Int
        let channels: Int
    }

    struct ConvTranspose {
        let weight: ParameterTensor
        let bias: ParameterTensor
        let cin: Int, cout: Int
    }

    enum Op {
        case conv(Conv, input: Activation, output: Activation)
        /// BatchNorm then ReLU (every BatchNorm of the students is followed by one).
        case batchNormReLU(BatchNorm, input: Activation, output: Activation)
        case maxPool(input: Activation, output: Activation)
        case convTranspose(ConvTranspose, input: Activation, output: Activation)
    }

    static let batchNormEpsilon: Float = 1e-5
    static let batchNormMomentum: Float = 0.1
    /// The least im2col scratch, 16 MiB: big enough for tiles of several
    /// small images.
    static let minimumScratchFloats = 4 << 20

    let k: Int
    let width: Int
    let channels: Int
    let inputChannels: Int
    let maxBatch: Int
    let batchStatistics: Bool
    /// 3x3 same convolutions forward through Winograd F(4x4, 3x3) (the
    /// backward stays direct). Off: im2col + GEMM, a few ulps closer to the
    /// exact convolution, which float32 finite differences need.
    var winogradForward = true
    let store = ParameterStore()
    private(set) var ops: [Op] = []
    /// (channels, size) of each allocation, and its offset in the arenas for maxBatch cubes.
    private var allocations: [(channels: Int, size: Int)] = []
    private var allocationOffsets: [Int] = []
    private var savedStatisticsCount = 0

    let input: Activation
    private(set) var prediction: Activation!
    /// The feature maps pairs may distill, by name (see ModelConfig.studentFeatureShape).
    private(set) var features: [String: Activation] = [:]
    /// Per distilled pair: what is compared with the teacher (the feature, or
    /// its 1x1 projection when the channel counts differ).
    private(set) var pairOutputs: [Activation] = []

    private var activations: UnsafeMutablePointer<Float>!
    private var activationGradients: UnsafeMutablePointer<Float>!
    private var savedStatistics: UnsafeMutablePointer<Float>!
    /// im2col scratch: the backward kernels give each thread a slice holding
    /// at least one image's im2col, so it grows with the thread count. Fixed
    /// per graph, because the kernels' tiling (and rounding) follows it.
    private(set) var scratchFloats = 0
    private(set) var scratch: UnsafeMutablePointer<Float>!
    /// Whether an allocation's gradient has been written in the current backward pass.
    private var gradientWritten: [Bool] = []

    /// - Parameter pairs: per distilled pair, the student feature's name and the
    ///   teacher feature's channel count (a projection is added when they differ).
    init(k: Int, width: Int, channels: Int, inputFrames: Int, pairs: [(feature: String, teacherChannels: Int)],
         maxBatch: Int, batchStatistics: Bool, threads: Int) throws {
        self.k = k
        self.width = width
        self.channels = channels
        self.inputChannels = inputFrames * channels
        self.maxBatch = maxBatch
        self.batchStatistics = batchStatistics
        allocations.append((inputChannels, 32))
        input = Activation(allocation: 0, channelStart: 0, channels: inputChannels, size: 32)
        buildNetwork()
        for (j, pair) in pairs.enumerated() {
            let feature = features[pair.feature]!
            if feature.channels == pair.teacherChannels {
                pairOutputs.append(feature)
            } else {
                let projected = newActivation(pair.teacherChannels, feature.size)
                ops.append(.conv(declareConv("projection.\(j)", cin: feature.channels, cout: pair.teacherChannels,
                                             kernel: 1, stride: 1, pad: 0), input: feature, output: projected))
                pairOutputs.append(projected)
            }
        }
        try store.allocate()
        try allocateArenas()
        scratchFloats = max(Self.minimumScratchFloats, max(threads, 1) * largestImageIm2col)
        // 64-byte aligned: one cache line, one AVX-512 vector.
        var scratch: UnsafeMutableRawPointer?
        guard posix_memalign(&scratch, 64, scratchFloats * MemoryLayout<Float>.size) == 0, let scratch else {
            throw PkgnetError(.outOfMemory, "could not allocate the trainer's convolution scratch (\(scratchFloats * 4) bytes)")
        }
        self.scratch = scratch.bindMemory(to: Float.self, capacity: scratchFloats)
    }

    /// Floats of the largest one-image im2col a backward kernel builds.
    private var largestImageIm2col: Int {
        ops.map { op -> Int in
            switch op {
            case let .conv(c, _, y):
                return c.kernel == 1 && c.stride == 1 ? 0 : c.cin * c.kernel * c.kernel * y.size * y.size
            case let .convTranspose(c, x, _):
                return c.cout * 9 * x.size * x.size
            default:
                return 0
            }
        }.max() ?? 0
    }

    deinit {
        free(scratch)
        free(activations)
        free(activationGradients)
        free(savedStatistics)
    }

    // MARK: Building

    private func newActivation(_ channels: Int, _ size: Int) -> Activation {
        allocations.append((channels, size))
        return Activation(allocation: allocations.count - 1, channelStart: 0, channels: channels, size: size)
    }

    private func slice(_ a: Activation, from: Int, count: Int) -> Activation {
        Activation(allocation: a.allocation, channelStart: a.channelStart + from, channels: count, size: a.size)
    }

    private func declareConv(_ name: String, cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int) -> Conv {
        Conv(weight: store.declareParameter(name + ".weight", shape: [cout, cin, kernel, kernel]),
             bias: store.declareParameter(name + ".bias", shape: [cout]),
             cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad)
    }

    /// conv3x3 + BatchNorm + ReLU, twice (PyTorch Sequential indices 0, 1, 3, 4).
    private func doubleConv(_ name: String, _ x: Activation, cout: Int, into output: Activation) {
        let z1 = newActivation(cout, x.size), a1 = newActivation(cout, x.size), z2 = newActivation(cout, x.size)
        ops.append(.conv(declareConv(name + ".0", cin: x.channels, cout: cout, kernel: 3, stride: 1, pad: 1), input: x, output: z1))
        ops.append(.batchNormReLU(declareBatchNorm(name + ".1", cout), input: z1, output: a1))
        ops.append(.conv(declareConv(name + ".3", cin: cout, cout: cout, kernel: 3, stride: 1, pad: 1), input: a1, output: z2))
        ops.append(.batchNormReLU(declareBatchNorm(name + ".4", cout), input: z2, output: output))
    }

    private func declareBatchNorm(_ name: String, _ channels: Int) -> BatchNorm {
        let layer = BatchNorm(gamma: store.declareParameter(name + ".weight", shape: [channels]),
                              beta: store.declareParameter(name + ".bias", shape: [channels]),
                              runningMean: store.declareStatistic(name + ".running_mean", shape: [channels]),
                              runningVariance: store.declareStatistic(name + ".running_var", shape: [channels]),
                              savedOffset: savedStatisticsCount, channels: channels)
        savedStatisticsCount += 2 * channels
        return layer
    }

    /// The topology of `Student` (see its diagram), op by op.
    private func buildNetwork() {
        let w = width
        var concatenations: [Int: Activation] = [:]  // size -> the whole [skip, upsampled] allocation
        var x = input
        for level in 0...3 {
            let size = 32 >> level, cout = w << level
            let skipped = level < 2 || (level == 2 && k == 1)
            let output: Activation
            if skipped {
                let cat = newActivation(2 * cout, size)
                concatenations[size] = cat
                output = slice(cat, from: 0, count: cout)
            } else {
                output = newActivation(cout, size)
            }
            if level == 0 {
                doubleConv("encoder.in_conv.conv.conv", x, cout: cout, into: output)
            } else {
                let name = "encoder.down\(level).mpconv"
                let reduced = newActivation(k == 1 ? cout : x.channels, size)
                if k == 1 {
                    ops.append(.conv(declareConv(name + ".0", cin: x.channels, cout: cout, kernel: 3, stride: 2, pad: 1),
                                     input: x, output: reduced))
                } else {
                    ops.append(.maxPool(input: x, output: reduced))
                }
                doubleConv(name + ".1.conv", reduced, cout: cout, into: output)
            }
            features[["e32", "e16", "e8", "bottleneck"][level]] = output
            x = output
        }
        for n in 1...3 {
            let size = 4 << n, cin = w << (4 - n), cout = w << (3 - n)
            let hasSkip = n > 1 || k == 1
            let upsampled: Activation, blockInput: Activation
            if hasSkip {
                blockInput = concatenations[size]!
                upsampled = slice(blockInput, from: cout, count: cout)
            } else {
                upsampled = newActivation(cout, size)
                blockInput = upsampled
            }
            let name = "decoder.up\(n)"
            let up = ConvTranspose(weight: store.declareParameter(name + ".up.weight", shape: [cin, cout, 3, 3]),
                                   bias: store.declareParameter(name + ".up.bias", shape: [cout]), cin: cin, cout: cout)
            ops.append(.convTranspose(up, input: x, output: upsampled))
            let output = newActivation(cout, size)
            doubleConv(name + ".conv.conv", blockInput, cout: cout, into: output)
            features["d\(size)"] = output
            x = output
        }
        prediction = newActivation(channels, 32)
        ops.append(.conv(declareConv("decoder.outconv.conv", cin: w, cout: channels, kernel: 1, stride: 1, pad: 0),
                         input: x, output: prediction))
    }

    private func allocateArenas() throws {
        var total = 0
        for allocation in allocations {
            allocationOffsets.append(total)
            // Round up to 16 floats so that every allocation starts on a cache line.
            total += (allocation.channels * maxBatch * allocation.size * allocation.size + 15) & ~15
        }
        func zeroed(_ count: Int, _ what: String) throws -> UnsafeMutablePointer<Float> {
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, 64, max(count, 1) * 4) == 0, let raw else {
                throw PkgnetError(.outOfMemory, "could not allocate \(count * 4) bytes for the trainer's \(what) (batch \(maxBatch))")
            }
            memset(raw, 0, max(count, 1) * 4)
            return raw.bindMemory(to: Float.self, capacity: max(count, 1))
        }
        activations = try zeroed(total, "activations")
        activationGradients = try zeroed(total, "gradients")
        savedStatistics = try zeroed(savedStatisticsCount, "BatchNorm statistics")
        gradientWritten = [Bool](repeating: false, count: allocations.count)
        // Fixed (eval-mode) BatchNorm starts from PyTorch's running statistics (0, 1).
        for tensor in store.statistics where tensor.name.hasSuffix(".running_var") {
            let values = store.statistic(tensor)
            for i in 0..<tensor.count { values[i] = 1 }
        }
    }

    /// Floats of activation memory (the gradients take as much again).
    var activationFloats: Int { allocations.reduce(0) { $0 + $1.channels * $1.size * $1.size } * maxBatch }

    // MARK: Running

    /// Where an activation of a batch of `batch` cubes starts: an allocation
    /// holds [channels][batch][size][size] for the current batch, so its channel
    /// ranges move with the batch size.
    func pointer(_ a: Activation, batch: Int) -> UnsafeMutablePointer<Float> {
        activations + allocationOffsets[a.allocation] + a.channelStart * batch * a.size * a.size
    }

    func gradient(_ a: Activation, batch: Int) -> UnsafeMutablePointer<Float> {
        activationGradients + allocationOffsets[a.allocation] + a.channelStart * batch * a.size * a.size
    }

    /// Runs the network on the input already placed at `pointer(input, ...)`.
    /// Batch statistics mode also moves the running statistics.
    func forward(batch: Int) {
        let p = store
        for op in ops {
            switch op {
            case let .conv(c, x, y):
                // The 3x3 same convolutions through Winograd, as scoring runs
                // them: the weights change every step, so they are arranged
                // for it per call (a copy; their transform is per call anyway).
                if winogradForward && c.kernel == 3 && c.stride == 1 && c.pad == 1 && c.cin >= Conv2D.winogradMinChannels {
                    let arranged = [Float](unsafeUninitializedCapacity: pkk_winograd_weight_floats(Int32(c.cin), Int32(c.cout))) { s, count in
                        pkk_winograd_arrange_weights(p.value(c.weight), Int32(c.cin), Int32(c.cout), s.baseAddress)
                        count = s.count
                    }
                    let done = arranged.withUnsafeBufferPointer { s in
                        pkk_conv3x3_winograd(pointer(x, batch: batch), Int32(c.cin), Int32(batch), Int32(x.size), Int32(x.size),
                                             s.baseAddress, p.value(c.bias), Int32(c.cout), nil, 0,
                                             pointer(y, batch: batch), scratch, scratchFloats)
                    }
                    if done != 0 { continue }
                }
                pkk_conv2d(pointer(x, batch: batch), Int32(c.cin), Int32(batch), Int32(x.size), Int32(x.size),
                           p.value(c.weight), nil, p.value(c.bias), Int32(c.cout), Int32(c.kernel), Int32(c.stride), Int32(c.pad), 1,
                           nil, 0, pointer(y, batch: batch), scratch, scratchFloats)
            case let .batchNormReLU(bn, x, y):
                let n = batch * x.size * x.size
                let out = pointer(y, batch: batch)
                if batchStatistics {
                    pkk_batchnorm_batch_forward(pointer(x, batch: batch), Int32(bn.channels), n, p.value(bn.gamma), p.value(bn.beta),
                                                Self.batchNormEpsilon, Self.batchNormMomentum,
                                                p.statistic(bn.runningMean), p.statistic(bn.runningVariance),
                                                savedStatistics + bn.savedOffset, savedStatistics + bn.savedOffset + bn.channels, out)
                    pkk_relu_forward(out, bn.channels * n, out)
                } else {
                    pkk_batchnorm_affine_forward(pointer(x, batch: batch), Int32(bn.channels), n, p.value(bn.gamma), p.value(bn.beta),
                                                 p.statistic(bn.runningMean), p.statistic(bn.runningVariance),
                                                 Self.batchNormEpsilon, 1, out)
                }
            case let .maxPool(x, y):
                pkk_maxpool2d(pointer(x, batch: batch), Int32(x.channels), Int32(batch), Int32(x.size), Int32(x.size),
                              2, 2, 0, pointer(y, batch: batch))
            case let .convTranspose(c, x, y):
                pkk_conv_transpose2d(pointer(x, batch: batch), Int32(c.cin), Int32(batch), Int32(x.size), Int32(x.size),
                                     p.value(c.weight), nil, p.value(c.bias), Int32(c.cout), 3, 2, 1, 1,
                                     pointer(y, batch: batch), scratch, scratchFloats)
            }
        }
    }

    /// Starts a backward pass: no activation gradient is written yet.
    func beginBackward() {
        for i in gradientWritten.indices { gradientWritten[i] = false }
    }

    /// The `accumulate` flag for writing the gradient of `a`: overwrite when it
    /// is the first write and covers the whole allocation; otherwise zero the
    /// allocation first (once) and add.
    func claimGradient(_ a: Activation, batch: Int) -> Int32 {
        if gradientWritten[a.allocation] { return 1 }
        gradientWritten[a.allocation] = true
        let whole = allocations[a.allocation]
        if a.channelStart == 0 && a.channels == whole.channels { return 0 }
        let whole0 = Activation(allocation: a.allocation, channelStart: 0, channels: whole.channels, size: whole.size)
        memset(gradient(whole0, batch: batch), 0, whole.channels * batch * whole.size * whole.size * 4)
        return 1
    }

    /// Back-propagates the gradients seeded (through claimGradient) into the
    /// prediction's and the pair outputs' gradients; parameter gradients add
    /// into the store's gradient arena (zero it before the first micro-batch).
    func backward(batch: Int) {
        let p = store
        for op in ops.reversed() {
            switch op {
            case let .conv(c, x, y):
                let dy = seededGradient(y, batch: batch)
                let dx: UnsafeMutablePointer<Float>?
                let accumulate: Int32
                if x.allocation == input.allocation {
                    (dx, accumulate) = (nil, 0)  // the cube frames need no gradient
                } else {
                    accumulate = claimGradient(x, batch: batch)
                    dx = gradient(x, batch: batch)
                }
                pkk_conv2d_backward(pointer(x, batch: batch), Int32(c.cin), Int32(batch), Int32(x.size), Int32(x.size),
                                    p.value(c.weight), Int32(c.cout), Int32(c.kernel), Int32(c.stride), Int32(c.pad),
                                    dy, dx, accumulate, p.gradient(c.weight), p.gradient(c.bias), scratch, scratchFloats)
            case let .batchNormReLU(bn, x, y):
                let n = batch * x.size * x.size
                let dy = seededGradient(y, batch: batch)
                if batchStatistics {
                    // In place: this output's gradient has no other reader left.
                    pkk_relu_backward(pointer(y, batch: batch), dy, bn.channels * n, dy, 0)
                }
                let accumulate = claimGradient(x, batch: batch)
                if batchStatistics {
                    pkk_batchnorm_batch_backward(pointer(x, batch: batch), dy, Int32(bn.channels), n, p.value(bn.gamma),
                                                 savedStatistics + bn.savedOffset, savedStatistics + bn.savedOffset + bn.channels,
                                                 gradient(x, batch: batch), accumulate, p.gradient(bn.gamma), p.gradient(bn.beta))
                } else {
                    // The ReLU's mask in the same pass.
                    pkk_batchnorm_affine_backward(pointer(x, batch: batch), pointer(y, batch: batch), dy,
                                                  Int32(bn.channels), n, p.value(bn.gamma),
                                                  p.statistic(bn.runningMean), p.statistic(bn.runningVariance),
                                                  Self.batchNormEpsilon, gradient(x, batch: batch), accumulate,
                                                  p.gradient(bn.gamma), p.gradient(bn.beta))
                }
            case let .maxPool(x, y):
                let dy = seededGradient(y, batch: batch)
                let accumulate = claimGradient(x, batch: batch)
                pkk_maxpool2d_backward(pointer(x, batch: batch), Int32(x.channels), Int32(batch), Int32(x.size), Int32(x.size),
                                       2, 2, 0, dy, gradient(x, batch: batch), accumulate)
            case let .convTranspose(c, x, y):
                let dy = seededGradient(y, batch: batch)
                let accumulate = claimGradient(x, batch: batch)
                pkk_conv_transpose2d_backward(pointer(x, batch: batch), Int32(c.cin), Int32(batch), Int32(x.size), Int32(x.size),
                                              p.value(c.weight), Int32(c.cout), 3, 2, 1, 1, dy, gradient(x, batch: batch),
                                              accumulate, p.gradient(c.weight), p.gradient(c.bias), scratch, scratchFloats)
            }
        }
    }

    /// The gradient of an op's output; zeros when nothing wrote it (an output
    /// no loss depends on).
    private func seededGradient(_ a: Activation, batch: Int) -> UnsafeMutablePointer<Float> {
        if !gradientWritten[a.allocation] {
            _ = claimGradient(a, batch: batch)
            if a.channelStart == 0 && a.channels == allocations[a.allocation].channels {
                memset(gradient(a, batch: batch), 0, a.channels * batch * a.size * a.size * 4)
            }
        }
        return gradient(a, batch: batch)
    }
}
