/// The student features a distilled pair may name: the encoder outputs, the
/// bottleneck and the decoder outputs (docs/model-format.md).
enum StudentFeature: String, CaseIterable {
    case e32, e16, e8, bottleneck, d8, d16, d32

    func shape(width: Int) -> (channels: Int, size: Int) {
        switch self {
        case .e32, .d32: return (width, 32)
        case .e16, .d16: return (2 * width, 16)
        case .e8, .d8: return (4 * width, 8)
        case .bottleneck: return (8 * width, 4)
        }
    }
}

/// The student: a U-Net that predicts the newest 32x32 crop of a cube from
/// the past ones (task pred) or reconstructs it (task recon).
///
///     in_conv  32x32  w   e32  ─────────────────────────── skip32 ─┐
///     down1    16x16  2w  e16  ─────────────────── skip16 ─┐       │
///     down2     8x8   4w  e8   ── skip8 (k=1 only) ─┐      │       │
///     down3     4x4   8w  bottleneck                │      │       │
///     up1       8x8   4w  d8                    ◄───┘      │       │
///     up2      16x16  2w  d16                          ◄───┘       │
///     up3      32x32  w   d32                                  ◄───┘
///     outconv  32x32  C   the predicted frame
///
/// k=2 downsamples by maxpool, k=1 by a strided conv; each concatenation is
/// [skip, upsampled] along channels, built in place in one buffer. Each
/// distilled pair names one of the features (e32 ... d32); where its channels
/// differ from the teacher block's, a learned 1x1 projection maps them.
struct Student {
    struct Down {
        let stridedConv: Conv2D?  // k=1; nil means maxpool 2x2 (k=2)
        let block: DoubleConv
    }

    struct Up {
        let upsample: ConvTranspose2D
        let block: DoubleConv
        let hasSkip: Bool
    }

    /// A distilled pair's student side: the feature and, where its channels
    /// differ from the teacher block's, the projection onto them.
    struct PairFeature {
        let feature: StudentFeature
        let projection: Conv2D?
    }

    let k: Int
    let width: Int
    let channels: Int
    let inputChannels: Int
    let inConv: DoubleConv
    let downs: [Down]
    let ups: [Up]
    let outConv: Conv2D
    let pairs: [PairFeature]

    init(config: ModelConfig, weights: WeightReader) throws {
        let w = config.student.width
        k = config.student.k
        width = w
        channels = config.student.channels
        inputChannels = config.student.inputFrames * channels
        let fileWidth = try weights.dimension("encoder.in_conv.conv.conv.0.weight", axis: 0)
        guard fileWidth == w else {
            throw PkgnetError(.modelMismatch, "student width in the metadata is \(w) but encoder.in_conv has \(fileWidth) output channels")
        }
        inConv = try DoubleConv(weights, "encoder.in_conv.conv.conv", cin: inputChannels, cout: w)
        downs = try (1...3).map { n in
            let cin = w << (n - 1), cout = w << n
            let name = "encoder.down\(n).mpconv"
            if config.student.k == 1 {
                let strided = try weights.conv(name + ".0", cin: cin, cout: cout, kernel: 3, stride: 2, pad: 1)
                return Down(stridedConv: strided, block: try DoubleConv(weights, name + ".1.conv", cin: cout, cout: cout))
            }
            return Down(stridedConv: nil, block: try DoubleConv(weights, name + ".1.conv", cin: cin, cout: cout))
        }
        ups = try (1...3).map { n in
            let cin = w << (4 - n), cout = w << (3 - n)
            let name = "decoder.up\(n)"
            let upWeight = try weights.entry(name + ".up.weight", shape: [cin, cout, 3, 3])
            let upBias = try weights.tensor(name + ".up.bias", shape: [cout])
            let upsample = try weights.read(upWeight) { ConvTranspose2D(weight: &$0, bias: upBias, cin: cin, cout: cout) }
            let hasSkip = n > 1 || config.student.k == 1
            let block = try DoubleConv(weights, name + ".conv.conv", cin: hasSkip ? 2 * cout : cout, cout: cout)
            return Up(upsample: upsample, block: block, hasSkip: hasSkip)
        }
        outConv = try weights.conv("decoder.outconv.conv", cin: w, cout: channels, kernel: 1, stride: 1, pad: 0)
        pairs = try config.pairs.enumerated().map { j, pair in
            let arch = config.teacher.arch
            guard let feature = StudentFeature(rawValue: pair.student), let teacherShape = arch.featureShape(block: pair.teacher) else {
                throw PkgnetError(.unsupported, "pairs[\(j)] names '\(pair.student)' and '\(pair.teacher)': not a student feature and a \(arch.rawValue) block")
            }
            let studentShape = feature.shape(width: w)
            let name = "projection.\(j)"
            let what = "pairs[\(j)] (student \(pair.student) \(studentShape.channels)x\(studentShape.size)x\(studentShape.size), teacher \(arch.rawValue) \(pair.teacher) \(teacherShape.channels)x\(teacherShape.size)x\(teacherShape.size))"
            guard studentShape.channels != teacherShape.channels else {
                for tensor in [name + ".weight", name + ".bias"] where weights.contains(tensor) {
                    throw PkgnetError(.modelMismatch, "\(weights.source): unexpected tensor 'student.\(tensor)': \(what) has the same channels on both sides, so no projection")
                }
                return PairFeature(feature: feature, projection: nil)
            }
            for tensor in [name + ".weight", name + ".bias"] where !weights.contains(tensor) {
                throw PkgnetError(.modelMismatch, "\(weights.source): tensor 'student.\(tensor)' is missing: \(what) needs a 1x1 projection from \(studentShape.channels) to \(teacherShape.channels) channels")
            }
            let projection = try weights.conv(name, cin: studentShape.channels, cout: teacherShape.channels, kernel: 1, stride: 1, pad: 0)
            return PairFeature(feature: feature, projection: projection)
        }
    }

    /// Channels and side of what each pair compares with the teacher (after
    /// any projection), pair 1 first.
    var featureShapes: [(channels: Int, size: Int)] {
        pairs.map { pair in
            let shape = pair.feature.shape(width: width)
            return (pair.projection?.cout ?? shape.channels, shape.size)
        }
    }

    /// Runs the network on `input` [inputChannels][batch][32][32]; returns the
    /// prediction [C][batch][32][32] and the distilled features (projected
    /// where a pair has a projection), pair 1 first. All stay valid until the
    /// next call on `workspace`: no buffer that holds a feature is written
    /// after it.
    func callAsFunction(_ input: FeatureMap, batch: Int, workspace ws: Workspace) throws
        -> (prediction: FeatureMap, features: [FeatureMap])
    {
        let scratch = ws.scratch
        var transients = Transients(workspace: ws, batch: batch)
        let paired = Set(pairs.map(\.feature))
        /// A block's output: its own buffer if a pair reads it at the end.
        func output(_ feature: StudentFeature, channels: Int, size: Int) throws -> FeatureMap {
            paired.contains(feature) ? try ws.map(feature.rawValue, channels: channels, size: size, batch: batch)
                : try transients.next(channels: channels, size: size)
        }
        // Encoder. Each skip lives in the first half of the concatenation
        // buffer its decoder stage reads, so no copy is needed.
        var features: [StudentFeature: FeatureMap] = [:]
        var x = input
        for level in 0...3 {
            let size = 32 >> level, cout = width << level
            let feature = [StudentFeature.e32, .e16, .e8, .bottleneck][level]
            let skipped = level < 2 || (level == 2 && k == 1)
            if level == 0 {
                let temp = try transients.next(channels: cout, size: size)
                let output = try ws.map("cat\(size)", channels: 2 * cout, size: size, batch: batch).slice(from: 0, count: cout, batch: batch)
                try inConv(x, batch: batch, temp: temp, into: output, scratch: scratch)
                x = output
            } else {
                let down = downs[level - 1]
                let reduced: FeatureMap
                if let strided = down.stridedConv {
                    reduced = try transients.next(channels: cout, size: size)
                    try strided(x, batch: batch, into: reduced, scratch: scratch)
                } else {
                    reduced = try transients.next(channels: x.channels, size: size)
                    maxPool(x, batch: batch, kernel: 2, stride: 2, pad: 0, into: reduced)
                }
                let temp = try transients.next(channels: cout, size: size)
                let output = skipped
                    ? try ws.map("cat\(size)", channels: 2 * cout, size: size, batch: batch).slice(from: 0, count: cout, batch: batch)
                    : try output(feature, channels: cout, size: size)
                try down.block(reduced, batch: batch, temp: temp, into: output, scratch: scratch)
                x = output
            }
            features[feature] = x
        }

        // Decoder. A skip's concatenation buffer gets only its second half
        // written here, so the encoder features in the first halves survive.
        for (n, up) in ups.enumerated() {
            let size = 8 << n, cout = up.upsample.cout
            let feature = [StudentFeature.d8, .d16, .d32][n]
            let upsampled: FeatureMap
            let blockInput: FeatureMap
            if up.hasSkip {
                let cat = try ws.map("cat\(size)", channels: 2 * cout, size: size, batch: batch)
                upsampled = cat.slice(from: cout, count: cout, batch: batch)
                blockInput = cat
            } else {
                upsampled = try transients.next(channels: cout, size: size)
                blockInput = upsampled
            }
            try up.upsample(x, batch: batch, into: upsampled, scratch: scratch)
            let temp = try transients.next(channels: cout, size: size)
            let output = try output(feature, channels: cout, size: size)
            try up.block(blockInput, batch: batch, temp: temp, into: output, scratch: scratch)
            features[feature] = output
            x = output
        }
        let prediction = try ws.map("prediction", channels: channels, size: 32, batch: batch)
        try outConv(x, batch: batch, into: prediction, scratch: scratch)
        let distilled = try pairs.enumerated().map { j, pair in
            let feature = features[pair.feature]!
            guard let projection = pair.projection else { return feature }
            let projected = try ws.map("projection\(j)", channels: projection.cout, size: feature.size, batch: batch)
            try projection(feature, batch: batch, into: projected, scratch: scratch)
            return projected
        }
        return (prediction, distilled)
    }
}

/// Maps that only the next layer reads (a block's pooled input, its middle
/// map, an output no pair keeps) take turns in two buffers: whenever one is
/// written, the other holds the map being read. The network's activations
/// then take the room of two such maps instead of one each (w=64: 36% less).
private struct Transients {
    let workspace: Workspace
    let batch: Int
    private var turn = 0

    init(workspace: Workspace, batch: Int) {
        self.workspace = workspace
        self.batch = batch
    }

    mutating func next(channels: Int, size: Int) throws -> FeatureMap {
        defer { turn ^= 1 }
        return try workspace.map("transient\(turn)", channels: channels, size: size, batch: batch)
    }
}
