import PkgnetKernels

/// The CNNs a teacher may be, each run on the 32x32 target crop:
/// - torchvision's ImageNet ResNets, truncated after layer2: blocks "layer1"
///   (stem + maxpool + layer1, 8x8) and "layer2" (4x4);
/// - the CIFAR-10 ResNets resnet20 and resnet56: blocks "layer1" (16@32x32),
///   "layer2" (32@16x16), "layer3" (64@8x8);
/// - ImageNet EfficientNet-Lite0: blocks "blocks.0" ... "blocks.15", the
///   outputs of its 16 MBConv blocks (24@8x8 at blocks.2, 40@4x4 at blocks.4).
public enum TeacherArch: String, CaseIterable, Sendable {
    case resnet18, resnet34, resnet50
    case resnext50_32x4d
    case wide_resnet50_2
    case resnet20, resnet56
    case efficientnet_lite0

    enum Family { case torchvision, cifar, efficientNetLite }

    var family: Family {
        switch self {
        case .resnet18, .resnet34, .resnet50, .resnext50_32x4d, .wide_resnet50_2: return .torchvision
        case .resnet20, .resnet56: return .cifar
        case .efficientnet_lite0: return .efficientNetLite
        }
    }

    /// torchvision: blocks in layer1 and layer2.
    var torchvisionBlocks: (Int, Int) { self == .resnet18 ? (2, 2) : (3, 4) }

    var bottleneck: Bool { family == .torchvision && self != .resnet18 && self != .resnet34 }

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

    /// CIFAR ResNets: BasicBlocks per stage (6n + 2 layers).
    var cifarBlocks: Int { self == .resnet56 ? 9 : 3 }

    /// EfficientNet-Lite0's stages, the block strings of the package
    /// efficientnet-lite-pytorch ('r1_k3_s11_e1_i32_o16', ...); Lite0 scales
    /// neither width nor depth.
    static let liteStages: [(repeats: Int, kernel: Int, stride: Int, expand: Int, cin: Int, cout: Int)] = [
        (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
    ]

    /// Every block's name and output shape on a 32x32 input, shallow to deep.
    var blocks: [(name: String, channels: Int, size: Int)] {
        switch family {
        case .torchvision:
            return bottleneck ? [("layer1", 256, 8), ("layer2", 512, 4)] : [("layer1", 64, 8), ("layer2", 128, 4)]
        case .cifar:
            return [("layer1", 16, 32), ("layer2", 32, 16), ("layer3", 64, 8)]
        case .efficientNetLite:
            var out: [(name: String, channels: Int, size: Int)] = []
            var size = 16  // after the stride-2 stem
            for stage in Self.liteStages {
                for r in 0..<stage.repeats {
                    let stride = r == 0 ? stage.stride : 1
                    size = (size + stride - 1) / stride
                    out.append(("blocks.\(out.count)", stage.cout, size))
                }
            }
            return out
        }
    }

    /// The names a distilled pair may give as its teacher side, shallow to deep.
    public var blockNames: [String] { blocks.map(\.name) }

    /// Channels and side of a block's output for a 32x32 input; nil for a
    /// name this teacher does not have.
    public func featureShape(block: String) -> (channels: Int, size: Int)? {
        blocks.first { $0.name == block }.map { ($0.channels, $0.size) }
    }
}

/// A frozen teacher with BatchNorms folded into its convolutions: a chain of
/// units (stem convs, pooling, residual or MBConv blocks), some of whose
/// outputs are the named blocks of `TeacherArch`.
struct Teacher {
    /// A BasicBlock (two 3x3 convs) or torchvision Bottleneck (1x1, grouped
    /// 3x3 carrying the stride, 1x1); the last conv adds the shortcut before
    /// its ReLU.
    struct ResidualBlock {
        enum Shortcut {
            case identity
            /// torchvision: conv 1x1 (stride) + BatchNorm.
            case projection(Conv2D)
            /// CIFAR "option A": x[:, :, ::2, ::2] with padChannels zero
            /// channels on each side, no weights.
            case optionA(padChannels: Int)
        }

        let convs: [Conv2D]
        let shortcut: Shortcut
    }

    /// EfficientNet's inverted bottleneck without squeeze-excitation: expand
    /// 1x1 + BN + ReLU6 (absent for expand ratio 1), depthwise kxk + BN +
    /// ReLU6 with TensorFlow "same" padding, project 1x1 + BN, plus the input
    /// when the shape is unchanged.
    struct MBConvBlock {
        let expand: Conv2D?
        let depthwise: SameConv2D
        let project: Conv2D
        let skip: Bool
    }

    enum Unit {
        case conv(Conv2D)
        case sameConv(SameConv2D)
        case maxPool(kernel: Int, stride: Int, pad: Int)
        case residual(ResidualBlock)
        case mbConv(MBConvBlock)
    }

    let arch: TeacherArch
    let units: [Unit]
    /// Block name -> index of the unit whose output it is.
    let blockEnds: [String: Int]

    /// Builds the whole network of `arch` from its tensors (torchvision
    /// names for the ResNets, efficientnet-lite-pytorch names for Lite0).
    init(arch: TeacherArch, weights: WeightReader) throws {
        self.arch = arch
        var units: [Unit] = []
        var ends: [String: Int] = [:]
        switch arch.family {
        case .torchvision:
            units.append(.conv(try weights.convBatchNorm(conv: "conv1", bn: "bn1", cin: 3, cout: 64, kernel: 7, stride: 2,
                                                         pad: 3, convBias: false, relu: true)))
            units.append(.maxPool(kernel: 3, stride: 2, pad: 1))
            var inplanes = 64
            for (index, (planes, count)) in [(64, arch.torchvisionBlocks.0), (128, arch.torchvisionBlocks.1)].enumerated() {
                for b in 0..<count {
                    let stride = b == 0 && index > 0 ? 2 : 1
                    let block = try Self.torchvisionBlock(arch, weights, name: "layer\(index + 1).\(b)", inplanes: inplanes,
                                                          planes: planes, stride: stride)
                    units.append(.residual(block))
                    inplanes = block.convs.last!.cout
                }
                ends["layer\(index + 1)"] = units.count - 1
            }
        case .cifar:
            units.append(.conv(try weights.convBatchNorm(conv: "conv1", bn: "bn1", cin: 3, cout: 16, kernel: 3, stride: 1,
                                                         pad: 1, convBias: false, relu: true)))
            var inplanes = 16
            for (index, planes) in [16, 32, 64].enumerated() {
                for b in 0..<arch.cifarBlocks {
                    let name = "layer\(index + 1).\(b)"
                    let stride = b == 0 && index > 0 ? 2 : 1
                    func convBN(_ n: Int, cin: Int, stride: Int) throws -> Conv2D {
                        try weights.convBatchNorm(conv: "\(name).conv\(n)", bn: "\(name).bn\(n)", cin: cin, cout: planes,
                                                  kernel: 3, stride: stride, pad: 1, convBias: false, relu: true)
                    }
                    let convs = [try convBN(1, cin: inplanes, stride: stride), try convBN(2, cin: planes, stride: 1)]
                    // Option A pads planes/4 channels on each side: 16 -> 32 -> 64.
                    let shortcut: ResidualBlock.Shortcut = stride != 1 || inplanes != planes
                        ? .optionA(padChannels: planes / 4) : .identity
                    units.append(.residual(ResidualBlock(convs: convs, shortcut: shortcut)))
                    inplanes = planes
                }
                ends["layer\(index + 1)"] = units.count - 1
            }
        case .efficientNetLite:
            // TensorFlow-converted BatchNorms: eps 1e-3.
            let eps = 1e-3
            var stem = try weights.convBatchNorm(conv: "_conv_stem", bn: "_bn0", cin: 3, cout: 32, kernel: 3, stride: 2,
                                                 pad: 0, eps: eps, convBias: false, relu: true)
            stem.cap = 6
            units.append(.sameConv(SameConv2D(stem, inputSize: 32)))
            var size = 16
            var index = 0
            for stage in TeacherArch.liteStages {
                for r in 0..<stage.repeats {
                    let name = "_blocks.\(index)"
                    let cin = r == 0 ? stage.cin : stage.cout
                    let stride = r == 0 ? stage.stride : 1
                    let inner = cin * stage.expand
                    var expand: Conv2D? = nil
                    if stage.expand != 1 {
                        expand = try weights.convBatchNorm(conv: name + "._expand_conv", bn: name + "._bn0", cin: cin, cout: inner,
                                                           kernel: 1, stride: 1, pad: 0, eps: eps, convBias: false, relu: true)
                        expand!.cap = 6
                    }
                    var depthwise = try weights.convBatchNorm(conv: name + "._depthwise_conv", bn: name + "._bn1", cin: inner,
                                                              cout: inner, kernel: stage.kernel, stride: stride, pad: 0,
                                                              groups: inner, eps: eps, convBias: false, relu: true)
                    depthwise.cap = 6
                    let project = try weights.convBatchNorm(conv: name + "._project_conv", bn: name + "._bn2", cin: inner,
                                                            cout: stage.cout, kernel: 1, stride: 1, pad: 0, eps: eps,
                                                            convBias: false, relu: false)
                    units.append(.mbConv(MBConvBlock(expand: expand, depthwise: SameConv2D(depthwise, inputSize: size),
                                                     project: project, skip: stride == 1 && cin == stage.cout)))
                    size = (size + stride - 1) / stride
                    ends["blocks.\(index)"] = units.count - 1
                    index += 1
                }
            }
        }
        self.units = units
        blockEnds = ends
    }

    private static func torchvisionBlock(_ arch: TeacherArch, _ weights: WeightReader, name: String, inplanes: Int,
                                         planes: Int, stride: Int) throws -> ResidualBlock {
        func convBN(_ n: Int, cin: Int, cout: Int, kernel: Int, stride: Int, groups: Int = 1) throws -> Conv2D {
            try weights.convBatchNorm(conv: "\(name).conv\(n)", bn: "\(name).bn\(n)", cin: cin, cout: cout,
                                      kernel: kernel, stride: stride, pad: kernel / 2, groups: groups,
                                      convBias: false, relu: true)
        }
        let outplanes = arch.bottleneck ? planes * 4 : planes
        var convs: [Conv2D] = []
        if arch.bottleneck {
            let inner = planes * arch.widthPerGroup / 64 * arch.groups
            convs.append(try convBN(1, cin: inplanes, cout: inner, kernel: 1, stride: 1))
            convs.append(try convBN(2, cin: inner, cout: inner, kernel: 3, stride: stride, groups: arch.groups))
            convs.append(try convBN(3, cin: inner, cout: outplanes, kernel: 1, stride: 1))
        } else {
            convs.append(try convBN(1, cin: inplanes, cout: planes, kernel: 3, stride: stride))
            convs.append(try convBN(2, cin: planes, cout: planes, kernel: 3, stride: 1))
        }
        var shortcut = ResidualBlock.Shortcut.identity
        if stride != 1 || inplanes != outplanes {
            shortcut = .projection(try weights.convBatchNorm(conv: "\(name).downsample.0", bn: "\(name).downsample.1",
                                                             cin: inplanes, cout: outplanes, kernel: 1, stride: stride,
                                                             pad: 0, convBias: false, relu: false))
        }
        return ResidualBlock(convs: convs, shortcut: shortcut)
    }

    /// Runs the teacher on `input` [3][batch][32][32] up to the deepest of
    /// `blocks` and returns their outputs in that order. Every buffer it uses
    /// is named "t.*"; the outputs stay valid until the next call on `workspace`.
    func callAsFunction(_ input: FeatureMap, batch: Int, blocks: [String], workspace ws: Workspace) throws -> [FeatureMap] {
        let ends = try blocks.map { name in
            guard let end = blockEnds[name] else {
                throw PkgnetError(.invalidArgument, "teacher \(arch.rawValue) has no block '\(name)' (it has \(arch.blockNames.joined(separator: ", ")))")
            }
            return end
        }
        guard let deepest = ends.max() else { return [] }
        var outputs: [Int: FeatureMap] = [:]
        var x = input
        for i in 0...deepest {
            // Requested outputs get a buffer of their own; the rest alternate
            // between two, never the one holding the unit's input.
            let requested = ends.contains(i)
            x = try run(units[i], x, batch: batch, into: requested ? "t.out\(i)" : "t.x\(i % 2)", workspace: ws)
            if requested { outputs[i] = x }
        }
        return ends.map { outputs[$0]! }
    }

    private func run(_ unit: Unit, _ x: FeatureMap, batch: Int, into name: String, workspace ws: Workspace) throws -> FeatureMap {
        let scratch = ws.scratch
        switch unit {
        case .conv(let conv):
            let out = try ws.map(name, channels: conv.cout, size: conv.outputSize(x.size), batch: batch)
            try conv(x, batch: batch, into: out, scratch: scratch)
            return out
        case .sameConv(let conv):
            let out = try ws.map(name, channels: conv.cout, size: conv.outputSize(x.size), batch: batch)
            try conv(x, batch: batch, into: out, padded: "t.padded", workspace: ws)
            return out
        case .maxPool(let kernel, let stride, let pad):
            let out = try ws.map(name, channels: x.channels, size: (x.size + 2 * pad - kernel) / stride + 1, batch: batch)
            maxPool(x, batch: batch, kernel: kernel, stride: stride, pad: pad, into: out)
            return out
        case .residual(let block):
            var h = x
            for (i, conv) in block.convs.dropLast().enumerated() {
                let out = try ws.map("t.inner\(i)", channels: conv.cout, size: conv.outputSize(h.size), batch: batch)
                try conv(h, batch: batch, into: out, scratch: scratch)
                h = out
            }
            var shortcut = x
            switch block.shortcut {
            case .identity: break
            case .projection(let downsample):
                shortcut = try ws.map("t.shortcut", channels: downsample.cout, size: downsample.outputSize(x.size), batch: batch)
                try downsample(x, batch: batch, into: shortcut, scratch: scratch)
            case .optionA(let pad):
                shortcut = try ws.map("t.shortcut", channels: x.channels + 2 * pad, size: (x.size + 1) / 2, batch: batch)
                pkk_option_a_shortcut(x.data, Int32(x.channels), Int32(batch), Int32(x.size), Int32(x.size), Int32(pad),
                                      shortcut.data)
            }
            let last = block.convs.last!
            let out = try ws.map(name, channels: last.cout, size: last.outputSize(h.size), batch: batch)
            try last(h, batch: batch, into: out, residual: shortcut, scratch: scratch)
            return out
        case .mbConv(let block):
            var h = x
            if let expand = block.expand {
                let expanded = try ws.map("t.inner0", channels: expand.cout, size: x.size, batch: batch)
                try expand(x, batch: batch, into: expanded, scratch: scratch)
                h = expanded
            }
            let depthwise = try ws.map("t.inner1", channels: block.depthwise.cout, size: block.depthwise.outputSize(h.size), batch: batch)
            try block.depthwise(h, batch: batch, into: depthwise, padded: "t.padded", workspace: ws)
            let out = try ws.map(name, channels: block.project.cout, size: depthwise.size, batch: batch)
            try block.project(depthwise, batch: batch, into: out, residual: block.skip ? x : nil, scratch: scratch)
            return out
        }
    }
}
