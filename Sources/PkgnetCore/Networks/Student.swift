/// The student: a U-Net that predicts the newest 32x32 crop of a cube from
/// the past ones (task pred) or reconstructs it (task recon).
///
///     in_conv  32x32  w      ─────────────────────────── skip32 ─┐
///     down1    16x16  2w     ─────────────────── skip16 ─┐       │
///     down2     8x8   4w     ── skip8 (k=1 only) ─┐      │       │
///     down3     4x4   8w  bottleneck (pair 1)     │      │       │
///     up1       8x8   4w  d8 (pair 2 when k=2) ◄──┘      │       │
///     up2      16x16  2w                          ◄──────┘       │
///     up3      32x32  w                                  ◄───────┘
///     outconv  32x32  C   the predicted frame
///
/// k=2 downsamples by maxpool, k=1 by a strided conv; each concatenation is
/// [skip, upsampled] along channels, built in place in one buffer.
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

    let k: Int
    let width: Int
    let channels: Int
    let inputChannels: Int
    let inConv: DoubleConv
    let downs: [Down]
    let ups: [Up]
    let outConv: Conv2D

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
            let upWeight = try weights.tensor(name + ".up.weight", shape: [cin, cout, 3, 3])
            let upBias = try weights.tensor(name + ".up.bias", shape: [cout])
            let hasSkip = n > 1 || config.student.k == 1
            let block = try DoubleConv(weights, name + ".conv.conv", cin: hasSkip ? 2 * cout : cout, cout: cout)
            return Up(upsample: ConvTranspose2D(weight: upWeight, bias: upBias, cin: cin, cout: cout), block: block, hasSkip: hasSkip)
        }
        outConv = try weights.conv("decoder.outconv.conv", cin: w, cout: channels, kernel: 1, stride: 1, pad: 0)
    }

    /// Channels and side of the distilled features, pair 1 first.
    var featureShapes: [(channels: Int, size: Int)] {
        k == 2 ? [(8 * width, 4), (4 * width, 8)] : [(8 * width, 4)]
    }

    /// Runs the network on `input` [inputChannels][batch][32][32]; returns the
    /// prediction [C][batch][32][32] and the distilled features, pair 1 first.
    func callAsFunction(_ input: FeatureMap, batch: Int, workspace ws: Workspace) throws
        -> (prediction: FeatureMap, features: [FeatureMap])
    {
        let scratch = ws.scratch
        // Encoder. Each skip lives in the first half of the concatenation
        // buffer its decoder stage reads, so no copy is needed.
        var skips: [FeatureMap] = []
        var x = input
        for level in 0...3 {
            let size = 32 >> level, cout = width << level
            let skipped = level < 2 || (level == 2 && k == 1)
            let output = skipped
                ? try ws.map("cat\(size)", channels: 2 * cout, size: size, batch: batch).slice(from: 0, count: cout, batch: batch)
                : try ws.map("enc\(size)", channels: cout, size: size, batch: batch)
            let temp = try ws.map("temp\(size)", channels: cout, size: size, batch: batch)
            if level == 0 {
                inConv(x, batch: batch, temp: temp, into: output, scratch: scratch)
            } else {
                let down = downs[level - 1]
                let reduced = try ws.map("down\(size)", channels: cout, size: size, batch: batch)
                if let strided = down.stridedConv {
                    strided(x, batch: batch, into: reduced, scratch: scratch)
                    down.block(reduced, batch: batch, temp: temp, into: output, scratch: scratch)
                } else {
                    let pooled = FeatureMap(data: reduced.data, channels: x.channels, size: size)
                    maxPool(x, batch: batch, kernel: 2, stride: 2, pad: 0, into: pooled)
                    down.block(pooled, batch: batch, temp: temp, into: output, scratch: scratch)
                }
            }
            if skipped { skips.append(output) }
            x = output
        }
        let bottleneck = x

        // Decoder.
        var d8: FeatureMap? = nil
        for (n, up) in ups.enumerated() {
            let size = 8 << n, cout = up.upsample.cout
            let upsampled: FeatureMap
            let blockInput: FeatureMap
            if up.hasSkip {
                let cat = try ws.map("cat\(size)", channels: 2 * cout, size: size, batch: batch)
                upsampled = cat.slice(from: cout, count: cout, batch: batch)
                blockInput = cat
            } else {
                upsampled = try ws.map("up\(size)", channels: cout, size: size, batch: batch)
                blockInput = upsampled
            }
            up.upsample(x, batch: batch, into: upsampled, scratch: scratch)
            let temp = try ws.map("temp\(size)", channels: cout, size: size, batch: batch)
            let output = try ws.map("dec\(size)", channels: cout, size: size, batch: batch)
            up.block(blockInput, batch: batch, temp: temp, into: output, scratch: scratch)
            if n == 0 { d8 = output }
            x = output
        }
        let prediction = try ws.map("prediction", channels: channels, size: 32, batch: batch)
        outConv(x, batch: batch, into: prediction, scratch: scratch)
        return (prediction, k == 2 ? [bottleneck, d8!] : [bottleneck])
    }
}
