// The layers of a darknet cfg that pkgnet runs, with their output shapes,
// checked section by section: values in range, indices that point backwards,
// shapes that fit. Darknet's own defaults apply where darknet and OpenCV's
// importer agree; where they disagree the option is required.
import PkgnetKernels

/// Activation functions pkgnet runs.
public enum DarknetActivation: String, Sendable, CaseIterable {
    case linear, relu, leaky, relu6, logistic

    /// The PKK_ACT_* kind of pkk_activate (0 for linear: nothing to do).
    var kernelKind: Int32 {
        switch self {
        case .linear: return 0
        case .relu: return Int32(PKK_ACT_RELU)
        case .leaky: return Int32(PKK_ACT_LEAKY)
        case .relu6: return Int32(PKK_ACT_RELU6)
        case .logistic: return Int32(PKK_ACT_LOGISTIC)
        }
    }
}

/// channels x height x width of one frame's activation.
public struct TensorShape: Equatable, Sendable, CustomStringConvertible {
    public var channels: Int
    public var height: Int
    public var width: Int

    public var count: Int { channels * height * width }
    public var plane: Int { height * width }
    public var description: String { "\(channels)x\(height)x\(width)" }
}

struct ConvolutionSpec {
    let inputs: Int
    let filters: Int
    let size: Int
    let stride: Int
    let pad: Int
    let groups: Int
    let batchNormalize: Bool
    let activation: DarknetActivation

    var weightCount: Int { filters * (inputs / groups) * size * size }
    /// One filter per input channel: a depthwise convolution.
    var isDepthwise: Bool { groups == inputs && filters == inputs }
    /// Floats the .weights file holds for this layer: biases (BatchNorm: beta),
    /// then with BatchNorm gamma, mean, variance, then the weights.
    var floatsInFile: Int { filters * (batchNormalize ? 4 : 1) + weightCount }
}

/// A [yolo] head: what its input channels mean and how boxes are decoded.
public struct YoloHead: Sendable {
    public let classes: Int
    /// The masked anchors, (width, height) pairs in network-input pixels.
    public let anchors: [Float]
    public let scaleXY: Float

    public var anchorCount: Int { anchors.count / 2 }
}

enum DarknetLayerKind {
    case convolutional(ConvolutionSpec)
    /// Symmetric padding `pad` on every side (darknet's `padding` / 2).
    case maxpool(size: Int, stride: Int, pad: Int)
    case route(inputs: [Int], groups: Int, groupID: Int)
    case shortcut(from: Int, activation: DarknetActivation)
    case upsample(stride: Int)
    case dropout
    case yolo(YoloHead)
}

struct DarknetLayer {
    let section: DarknetSection
    let kind: DarknetLayerKind
    let output: TensorShape
}

/// Largest side of the network input, and of any activation.
private let maxSide = 1 << 14
/// Largest activation (floats) of one layer: 4 GiB.
private let maxActivation = 1 << 30

/// The [net] input and the layers of a cfg, shapes computed and checked.
func darknetLayers(of config: DarknetConfig) throws -> (input: TensorShape, layers: [DarknetLayer]) {
    let net = config.net
    let width = try net.int("width", nil, in: 1...4096)
    let height = try net.int("height", nil, in: 1...4096)
    let channels = try net.int("channels", 3, in: 1...4096)
    guard channels == 3 else {
        throw net.error(.unsupported, "pkgnet runs colour networks (channels=3) only", key: "channels")
    }
    let input = TensorShape(channels: 3, height: height, width: width)
    var layers: [DarknetLayer] = []
    var classes: Int?
    for section in config.layers {
        let previous = layers.last?.output ?? input
        let (kind, output) = try parseLayer(section, previous: previous, layers: layers)
        guard output.height <= maxSide, output.width <= maxSide, output.count <= maxActivation else {
            throw section.error(.unsupported, "its output \(output) is too large (at most \(maxSide) per side and \(maxActivation) values)")
        }
        if case .yolo(let head) = kind {
            if let classes, classes != head.classes {
                throw section.error(.format, "has \(head.classes) classes but an earlier [yolo] has \(classes): the heads of a network share one class list", key: "classes")
            }
            classes = head.classes
        }
        layers.append(DarknetLayer(section: section, kind: kind, output: output))
    }
    guard classes != nil else {
        throw PkgnetError(.format, "\(config.file): no [yolo] layer: not a YOLO detector")
    }
    return (input, layers)
}

private func parseLayer(_ s: DarknetSection, previous: TensorShape,
                        layers: [DarknetLayer]) throws -> (DarknetLayerKind, TensorShape) {
    switch s.type {
    case "convolutional", "conv":
        return try convolutional(s, previous)
    case "maxpool", "max":
        return try maxpool(s, previous)
    case "route":
        return try route(s, layers)
    case "shortcut":
        let from = try source(s, "from", try s.int("from", nil, in: -maxLayerIndex...maxLayerIndex), layers)
        guard layers[from].output == previous else {
            throw s.error(.unsupported, "adds layer \(from)'s \(layers[from].output) output to the previous layer's \(previous): pkgnet adds equal shapes only", key: "from")
        }
        try s.requireDefault("alpha", 1, "scaling the sum")
        try s.requireDefault("beta", 1, "scaling the sum")
        if s.has("weights_type") && s.string("weights_type", "none") != "none" {
            throw s.error(.unsupported, "weighted shortcuts are not supported", key: "weights_type")
        }
        return (.shortcut(from: from, activation: try activation(s, fallback: "linear")), previous)
    case "upsample":
        let stride = try s.int("stride", 2, in: -64...64)
        guard stride >= 1 else {
            throw s.error(.unsupported, "a stride below 1 (downsampling) is not supported", key: "stride")
        }
        try s.requireDefault("scale", 1, "scaling the output")
        return (.upsample(stride: stride), TensorShape(channels: previous.channels, height: previous.height * stride,
                                                       width: previous.width * stride))
    case "dropout":
        // Inference passes the input through (darknet and OpenCV alike).
        try s.requireDefault("dropblock", 0, "DropBlock")
        return (.dropout, previous)
    case "yolo":
        return try yolo(s, previous)
    default:
        throw s.error(.unsupported, "pkgnet runs [convolutional], [maxpool], [route], [shortcut], [upsample], [dropout] and [yolo] layers, not [\(s.type)]")
    }
}

private let maxLayerIndex = DarknetConfig.maxLayers

private func activation(_ s: DarknetSection, fallback: String?) throws -> DarknetActivation {
    guard s.has("activation") || fallback != nil else {
        throw s.error(.format, "activation= is missing (darknet would take logistic, OpenCV linear: the cfg must say which)")
    }
    let name = s.string("activation", fallback ?? "")
    guard let value = DarknetActivation(rawValue: name) else {
        throw s.error(.unsupported, "pkgnet runs the activations \(DarknetActivation.allCases.map(\.rawValue).joined(separator: ", "))", key: "activation")
    }
    return value
}

/// A layer reference of `key` (relative when negative) as an absolute index
/// of an earlier layer whose output can be read.
private func source(_ s: DarknetSection, _ key: String, _ value: Int, _ layers: [DarknetLayer]) throws -> Int {
    let index = value < 0 ? s.index + value : value
    guard index >= 0, index < s.index else {
        throw s.error(.format, value < 0
            ? "\(value) points to layer \(index), before the first layer"
            : "layer \(value) is not before this one (layer \(s.index)): a layer reads earlier layers only", key: key)
    }
    if case .yolo = layers[index].kind {
        throw s.error(.unsupported, "layer \(index) is a [yolo] head, whose output pkgnet does not pass on", key: key)
    }
    return index
}

private func convolutional(_ s: DarknetSection, _ x: TensorShape) throws -> (DarknetLayerKind, TensorShape) {
    let filters = try s.int("filters", nil, in: 1...(1 << 16))
    let size = try s.int("size", nil, in: 1...63)
    let stride = try s.int("stride", 1, in: 1...64)
    for key in ["stride_x", "stride_y"] where s.has(key) {
        guard try s.int(key, stride, in: 1...64) == stride else {
            throw s.error(.unsupported, "different horizontal and vertical strides are not supported", key: key)
        }
    }
    var pad = try s.int("padding", 0, in: 0...63)
    if try s.int("pad", 0, in: 0...1) == 1 { pad = size / 2 }
    let groups = try s.int("groups", 1, in: 1...(1 << 16))
    guard x.channels % groups == 0, filters % groups == 0 else {
        throw s.error(.format, "\(x.channels) input channels and \(filters) filters must both be multiples of groups", key: "groups")
    }
    let batchNormalize = try s.int("batch_normalize", 0, in: 0...1) == 1
    try s.requireDefault("dilation", 1, "dilated convolution")
    try s.requireDefault("antialiasing", 0, "antialiasing")
    try s.requireDefault("flipped", 0, "flipped (transposed) weights")
    try s.requireDefault("binary", 0, "binary weights")
    try s.requireDefault("xnor", 0, "XNOR convolution")
    try s.requireDefault("deform", 0, "deformable convolution")
    try s.requireDefault("coordconv", 0, "CoordConv")
    if s.has("share_index") {
        throw s.error(.unsupported, "sharing another layer's weights is not supported", key: "share_index")
    }
    let spec = ConvolutionSpec(inputs: x.channels, filters: filters, size: size, stride: stride, pad: pad, groups: groups,
                               batchNormalize: batchNormalize, activation: try activation(s, fallback: nil))
    let h = (x.height + 2 * pad - size) / stride + 1
    let w = (x.width + 2 * pad - size) / stride + 1
    guard x.height + 2 * pad >= size, x.width + 2 * pad >= size else {
        throw s.error(.format, "a \(size)x\(size) kernel with padding \(pad) does not fit its \(x) input")
    }
    return (.convolutional(spec), TensorShape(channels: filters, height: h, width: w))
}

private func maxpool(_ s: DarknetSection, _ x: TensorShape) throws -> (DarknetLayerKind, TensorShape) {
    let stride = try s.int("stride", 1, in: 1...64)
    for key in ["stride_x", "stride_y"] where s.has(key) {
        guard try s.int(key, stride, in: 1...64) == stride else {
            throw s.error(.unsupported, "different horizontal and vertical strides are not supported", key: key)
        }
    }
    let size = try s.int("size", stride, in: 1...63)
    let padding = try s.int("padding", size - 1, in: 0...126)
    // Darknet pads padding/2 before and the rest after; an odd padding pads
    // unevenly, which the shared pooling kernel does not do.
    guard padding % 2 == 0 else {
        throw s.error(.unsupported, "an odd padding (uneven borders) is not supported", key: s.has("padding") ? "padding" : "size")
    }
    guard padding / 2 < size else {
        throw s.error(.format, "padding \(padding) leaves windows without any input pixel (at most \(2 * size - 2) for size \(size))",
                      key: s.has("padding") ? "padding" : "size")
    }
    try s.requireDefault("maxpool_depth", 0, "pooling across channels")
    try s.requireDefault("antialiasing", 0, "antialiasing")
    guard x.height + padding >= size, x.width + padding >= size else {
        throw s.error(.format, "a \(size)x\(size) window does not fit its \(x) input")
    }
    let h = (x.height + padding - size) / stride + 1
    let w = (x.width + padding - size) / stride + 1
    return (.maxpool(size: size, stride: stride, pad: padding / 2), TensorShape(channels: x.channels, height: h, width: w))
}

private func route(_ s: DarknetSection, _ layers: [DarknetLayer]) throws -> (DarknetLayerKind, TensorShape) {
    guard let values = try s.ints("layers"), !values.isEmpty else {
        throw s.error(.format, "layers= is missing")
    }
    let inputs = try values.map { try source(s, "layers", $0, layers) }
    let groups = try s.int("groups", 1, in: 1...(1 << 16))
    let groupID = try s.int("group_id", 0, in: 0...(1 << 16))
    guard groupID < groups else {
        throw s.error(.format, "must be below groups (\(groups))", key: "group_id")
    }
    let first = layers[inputs[0]].output
    var channels = 0
    for index in inputs {
        let shape = layers[index].output
        guard shape.height == first.height, shape.width == first.width else {
            throw s.error(.format, "joins layer \(inputs[0]) (\(first)) and layer \(index) (\(shape)): their sizes differ", key: "layers")
        }
        guard shape.channels % groups == 0 else {
            throw s.error(.format, "layer \(index)'s \(shape.channels) channels do not split into \(groups) groups", key: "groups")
        }
        channels += shape.channels / groups
    }
    return (.route(inputs: inputs, groups: groups, groupID: groupID),
            TensorShape(channels: channels, height: first.height, width: first.width))
}

private func yolo(_ s: DarknetSection, _ x: TensorShape) throws -> (DarknetLayerKind, TensorShape) {
    let classes = try s.int("classes", nil, in: 1...100_000)
    guard let anchors = try s.floats("anchors"), !anchors.isEmpty else {
        throw s.error(.format, "anchors= is missing")
    }
    guard anchors.count % 2 == 0, anchors.allSatisfy({ $0 > 0 }) else {
        throw s.error(.format, "anchors are positive width,height pairs (got \(anchors.count) values)", key: "anchors")
    }
    let count = anchors.count / 2
    if s.has("num") {
        guard try s.int("num", count, in: 1...100_000) == count else {
            throw s.error(.format, "does not match the \(count) anchor pairs", key: "num")
        }
    }
    let mask = try s.ints("mask") ?? Array(0..<count)
    guard !mask.isEmpty, mask.allSatisfy({ (0..<count).contains($0) }) else {
        throw s.error(.format, "mask entries must be anchor indices in 0...\(count - 1)", key: "mask")
    }
    let scaleXY = try s.float("scale_x_y", 1, in: 0.001...100)
    try s.requireDefault("new_coords", 0, "the scaled-YOLOv4 box coordinates (new_coords)")
    let expected = mask.count * (classes + 5)
    guard x.channels == expected else {
        throw s.error(.format, "takes \(x.channels) channels, but \(mask.count) anchors x (5 + \(classes) classes) need \(expected): the previous layer's filters do not match")
    }
    let used = mask.flatMap { [anchors[2 * $0], anchors[2 * $0 + 1]] }
    return (.yolo(YoloHead(classes: classes, anchors: used, scaleXY: scaleXY)), x)
}
