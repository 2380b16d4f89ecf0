/// The torchvision ResNets a teacher may be, truncated after layer2.
public enum TeacherArch: String, CaseIterable, Sendable {
    case resnet18, resnet34, resnet50
    case resnext50_32x4d
    case wide_resnet50_2

    /// Blocks in layer1 and layer2.
    var blocks: (Int, Int) {
        switch self {
        case .resnet18: return (2, 2)
        default: return (3, 4)
        }
    }

    var bottleneck: Bool { self != .resnet18 && self != .resnet34 }

    /// Grouped-conv settings of torchvision's Bottleneck: inner width =
    /// planes * widthPerGroup / 64 * groups.
    var groups: Int { self == .resnext50_32x4d ? 32 : 1 }
    var widthPerGroup: Int {
        switch self {
        case .resnext50_32x4d: return 4
        case .wide_resnet50_2: return 128
        default: return 64
        }
    }

    /// Output channels of block1 (stem + layer1, 8x8) and block2 (layer2, 4x4).
    public var featureChannels: (block1: Int, block2: Int) { bottleneck ? (256, 512) : (64, 128) }
}

/// The frozen teacher: block1 = conv1 + bn1 + ReLU + maxpool + layer1 (8x8 on
/// a 32x32 input), block2 = layer2 (4x4). BatchNorms are folded into convs.
struct Teacher {
    /// A torchvision BasicBlock (two 3x3 convs) or Bottleneck (1x1, grouped
    /// 3x3 carrying the stride, 1x1); the last conv adds the shortcut before
    /// its ReLU.
    struct Block {
        let convs: [Conv2D]
        let downsample: Conv2D?
    }

    let arch: TeacherArch
    let stem: Conv2D
    let layers: [[Block]]

    init(arch: TeacherArch, weights: WeightReader) throws {
        self.arch = arch
        stem = try weights.convBatchNorm(conv: "conv1", bn: "bn1", cin: 3, cout: 64, kernel: 7, stride: 2, pad: 3,
                                         convBias: false, relu: true)
        var inplanes = 64
        var layers: [[Block]] = []
        for (index, (planes, count)) in [(64, arch.blocks.0), (128, arch.blocks.1)].enumerated() {
            let layerStride = index == 0 ? 1 : 2
            var blocks: [Block] = []
            for b in 0..<count {
                let name = "layer\(index + 1).\(b)"
                let stride = b == 0 ? layerStride : 1
                let outplanes = arch.bottleneck ? planes * 4 : planes
                var convs: [Conv2D] = []
                func convBN(_ n: Int, cin: Int, cout: Int, kernel: Int, stride: Int, groups: Int = 1) throws -> Conv2D {
                    try weights.convBatchNorm(conv: "\(name).conv\(n)", bn: "\(name).bn\(n)", cin: cin, cout: cout,
                                              kernel: kernel, stride: stride, pad: kernel / 2, groups: groups,
                                              convBias: false, relu: true)
                }
                if arch.bottleneck {
                    let inner = planes * arch.widthPerGroup / 64 * arch.groups
                    convs.append(try convBN(1, cin: inplanes, cout: inner, kernel: 1, stride: 1))
                    convs.append(try convBN(2, cin: inner, cout: inner, kernel: 3, stride: stride, groups: arch.groups))
                    convs.append(try convBN(3, cin: inner, cout: outplanes, kernel: 1, stride: 1))
                } else {
                    convs.append(try convBN(1, cin: inplanes, cout: planes, kernel: 3, stride: stride))
                    convs.append(try convBN(2, cin: planes, cout: planes, kernel: 3, stride: 1))
                }
                var downsample: Conv2D? = nil
                if stride != 1 || inplanes != outplanes {
                    downsample = try weights.convBatchNorm(conv: "\(name).downsample.0", bn: "\(name).downsample.1",
                                                           cin: inplanes, cout: outplanes, kernel: 1, stride: stride,
                                                           pad: 0, convBias: false, relu: false)
                }
                blocks.append(Block(convs: convs, downsample: downsample))
                inplanes = outplanes
            }
            layers.append(blocks)
        }
        self.layers = layers
    }

    /// Runs the teacher on `input` [3][batch][32][32]; returns block2 then
    /// block1, the order of the distilled pairs.
    func callAsFunction(_ input: FeatureMap, batch: Int, workspace ws: Workspace) throws -> [FeatureMap] {
        let scratch = ws.scratch
        let stemOut = try ws.map("t.stem", channels: 64, size: 16, batch: batch)
        stem(input, batch: batch, into: stemOut, scratch: scratch)
        var x = try ws.map("t.pool", channels: 64, size: 8, batch: batch)
        maxPool(stemOut, batch: batch, kernel: 3, stride: 2, pad: 1, into: x)
        var outputs: [FeatureMap] = []
        for (index, layer) in layers.enumerated() {
            for (b, block) in layer.enumerated() {
                // Block outputs alternate between two buffers per layer; the
                // last block of a layer writes the layer's own output buffer,
                // which stays valid for the scores.
                let last = b == layer.count - 1
                let name = last ? "t.layer\(index + 1)" : "t.block\(b % 2)"
                x = try run(block, x, batch: batch, into: name, workspace: ws)
            }
            outputs.append(x)
        }
        return [outputs[1], outputs[0]]
    }

    private func run(_ block: Block, _ x: FeatureMap, batch: Int, into name: String, workspace ws: Workspace) throws -> FeatureMap {
        let scratch = ws.scratch
        var h = x
        for (i, conv) in block.convs.dropLast().enumerated() {
            let out = try ws.map("t.inner\(i)", channels: conv.cout, size: conv.outputSize(h.size), batch: batch)
            conv(h, batch: batch, into: out, scratch: scratch)
            h = out
        }
        var shortcut = x
        if let downsample = block.downsample {
            shortcut = try ws.map("t.shortcut", channels: downsample.cout, size: downsample.outputSize(x.size), batch: batch)
            downsample(x, batch: batch, into: shortcut, scratch: scratch)
        }
        let last = block.convs.last!
        let out = try ws.map(name, channels: last.cout, size: last.outputSize(h.size), batch: batch)
        last(h, batch: batch, into: out, residual: shortcut, scratch: scratch)
        return out
    }
}
