// A loaded darknet network: its layers, folded weights and the plan that runs
// them, fixed at load time because the input size is (the [net] width and
// height). Immutable, so one network serves any number of Detectors.
//
// The plan is a list of kernel calls over tensors that live in a few reused
// buffers: a layer's output takes a buffer that no later layer still needs
// (dropout and single-input routes are views, not copies), and a shortcut
// right after a linear convolution is that convolution's residual input.

/// A tensor of the plan: `shape` at float `offset` of storage `storage`.
struct TensorRef {
    let storage: Int
    let offset: Int
    let shape: TensorShape
}

enum DarknetStep {
    /// y = conv(x) + bias (+ residual). Depthwise layers (pkk_depthwise_conv2d)
    /// apply their activation too; others (pkk_conv2d) fuse only relu.
    case convolution(layer: Int, x: TensorRef, y: TensorRef, residual: TensorRef?, depthwise: Bool)
    case activate(TensorRef, DarknetActivation)
    case maxpool(x: TensorRef, y: TensorRef, size: Int, stride: Int, pad: Int)
    case concat(inputs: [TensorRef], y: TensorRef)
    case add(TensorRef, TensorRef, y: TensorRef)
    case upsample(x: TensorRef, y: TensorRef, stride: Int)
    case yolo(head: Int, x: TensorRef)
}

public final class DarknetNetwork: Sendable {
    /// Largest .weights file read (the biggest YOLO models are ~250 MB).
    public static let maxWeightsBytes = 1 << 31

    /// File names as messages give them.
    public let cfgName: String
    public let weightsName: String
    /// The network input: 3 x [net] height x width.
    public let input: TensorShape
    public let heads: [YoloHead]
    /// Classes of the heads (they share one list).
    public var classes: Int { heads[0].classes }
    /// Layer sections of the cfg.
    public var layerCount: Int { layers.count }
    /// Floats read from the weights file (the model's parameter count).
    public let parameterCount: Int
    /// Each head's raw input shape, in cfg order.
    public let headShapes: [TensorShape]

    let layers: [DarknetLayer]
    let convolutions: [FoldedConvolution?]
    let steps: [DarknetStep]
    /// The input tensor (storage 0).
    let inputTensor: TensorRef
    /// storage -> buffer, and the floats each buffer needs.
    let storageBuffer: [Int]
    let bufferFloats: [Int]
    /// im2col scratch for the convolutions.
    let scratchFloats: Int
    /// Candidates all heads can produce together (one per cell and anchor).
    let candidateCapacity: Int

    /// Loads a cfg and its weights from files.
    public convenience init(cfgPath: String, weightsPath: String) throws {
        let cfg = try readWholeFile(cfgPath, what: "darknet cfg", limit: DarknetConfig.maxBytes)
        let weights = try readWholeFile(weightsPath, what: "darknet weights", limit: DarknetNetwork.maxWeightsBytes)
        try self.init(cfg: String(decoding: cfg, as: UTF8.self), cfgName: cfgPath, weights: weights, weightsName: weightsPath)
    }

    /// Builds a network from a cfg's text and a .weights file's bytes; the
    /// names only label messages.
    public init(cfg: String, cfgName: String, weights: [UInt8], weightsName: String) throws {
        let config = try DarknetConfig(text: cfg, file: cfgName)
        let (input, layers) = try darknetLayers(of: config)
        let (convolutions, floats) = try readDarknetWeights(weights, file: weightsName, layers: layers)
        self.cfgName = cfgName
        self.weightsName = weightsName
        self.input = input
        self.layers = layers
        self.convolutions = convolutions
        parameterCount = floats

        var heads: [YoloHead] = []
        var headShapes: [TensorShape] = []
        var candidates = 0
        var scratch = 1 << 18
        for layer in layers {
            switch layer.kind {
            case .yolo(let head):
                heads.append(head)
                headShapes.append(layer.output)
                candidates += head.anchorCount * layer.output.plane
            case .convolutional(let spec) where !(spec.size == 1 && spec.stride == 1 && spec.pad == 0) && !spec.isDepthwise:
                // im2col tiles of at least 512 columns of the largest reduction (see pkk_conv2d).
                scratch = max(scratch, 512 * (spec.inputs / spec.groups) * spec.size * spec.size)
            default:
                break
            }
        }
        self.heads = heads
        self.headShapes = headShapes
        candidateCapacity = candidates
        scratchFloats = scratch

        let plan = DarknetNetwork.plan(input: input, layers: layers)
        steps = plan.steps
        inputTensor = plan.input
        storageBuffer = plan.storageBuffer
        bufferFloats = plan.bufferFloats
    }

    /// Floats of working memory a Detector on this network allocates.
    public var workspaceFloats: Int { bufferFloats.reduce(0, +) + scratchFloats + 6 * candidateCapacity }

    // MARK: planning

    private struct Storage {
        let floats: Int
        let created: Int
        var lastRead: Int
    }

    private static func plan(input: TensorShape, layers: [DarknetLayer])
        -> (steps: [DarknetStep], input: TensorRef, storageBuffer: [Int], bufferFloats: [Int]) {
        let fused = fusedShortcuts(layers)
        var storages: [Storage] = []
        func create(_ shape: TensorShape, at layer: Int) -> TensorRef {
            storages.append(Storage(floats: shape.count, created: layer, lastRead: layer))
            return TensorRef(storage: storages.count - 1, offset: 0, shape: shape)
        }
        func read(_ t: TensorRef, at layer: Int) {
            storages[t.storage].lastRead = max(storages[t.storage].lastRead, layer)
        }

        let inputTensor = create(input, at: -1)
        var outputs: [TensorRef] = []
        var steps: [DarknetStep] = []
        var headIndex = 0
        for (i, layer) in layers.enumerated() {
            let previous = i == 0 ? inputTensor : outputs[i - 1]
            switch layer.kind {
            case .convolutional(let spec):
                read(previous, at: i)
                var residual: TensorRef?
                if let from = fused[i] {
                    residual = outputs[from]
                    read(outputs[from], at: i)
                }
                let y = create(layer.output, at: i)
                let depthwise = spec.isDepthwise && residual == nil
                steps.append(.convolution(layer: i, x: previous, y: y, residual: residual, depthwise: depthwise))
                if !depthwise && spec.activation != .linear && spec.activation != .relu { steps.append(.activate(y, spec.activation)) }
                outputs.append(y)
            case .maxpool(let size, let stride, let pad):
                read(previous, at: i)
                let y = create(layer.output, at: i)
                steps.append(.maxpool(x: previous, y: y, size: size, stride: stride, pad: pad))
                outputs.append(y)
            case .route(let inputs, let groups, let groupID):
                // Channel-major tensors make a channel range a contiguous slice.
                let slices = inputs.map { index -> TensorRef in
                    let t = outputs[index]
                    let part = t.shape.channels / groups
                    return TensorRef(storage: t.storage, offset: t.offset + groupID * part * t.shape.plane,
                                     shape: TensorShape(channels: part, height: t.shape.height, width: t.shape.width))
                }
                if slices.count == 1 {
                    outputs.append(slices[0])
                } else {
                    for slice in slices { read(slice, at: i) }
                    let y = create(layer.output, at: i)
                    steps.append(.concat(inputs: slices, y: y))
                    outputs.append(y)
                }
            case .shortcut(let from, let activation):
                if fused[i - 1 - dropoutsBefore(i, layers)] == from {
                    outputs.append(previous)  // the convolution already added it
                } else {
                    read(previous, at: i)
                    read(outputs[from], at: i)
                    let y = create(layer.output, at: i)
                    steps.append(.add(previous, outputs[from], y: y))
                    outputs.append(y)
                }
                if activation != .linear { steps.append(.activate(outputs[i], activation)) }
            case .upsample(let stride):
                read(previous, at: i)
                let y = create(layer.output, at: i)
                steps.append(.upsample(x: previous, y: y, stride: stride))
                outputs.append(y)
            case .dropout:
                outputs.append(previous)
            case .yolo:
                read(previous, at: i)
                steps.append(.yolo(head: headIndex, x: previous))
                headIndex += 1
                outputs.append(previous)
            }
        }

        // Buffers: a storage takes a free buffer (best fit, else the largest,
        // grown) once every storage in it has been read for the last time.
        var storageBuffer = [Int](repeating: -1, count: storages.count)
        var bufferFloats: [Int] = []
        var busyUntil: [Int] = []  // buffer -> last layer reading its current storage
        for (s, storage) in storages.enumerated() {
            let free = bufferFloats.indices.filter { busyUntil[$0] < storage.created }
            let fitting = free.filter { bufferFloats[$0] >= storage.floats }
            let chosen = fitting.min { bufferFloats[$0] < bufferFloats[$1] } ?? free.max { bufferFloats[$0] < bufferFloats[$1] }
            if let chosen {
                bufferFloats[chosen] = max(bufferFloats[chosen], storage.floats)
                busyUntil[chosen] = storage.lastRead
                storageBuffer[s] = chosen
            } else {
                bufferFloats.append(storage.floats)
                busyUntil.append(storage.lastRead)
                storageBuffer[s] = bufferFloats.count - 1
            }
        }
        return (steps, inputTensor, storageBuffer, bufferFloats)
    }

    /// Number of [dropout] layers directly before layer i.
    private static func dropoutsBefore(_ i: Int, _ layers: [DarknetLayer]) -> Int {
        var n = 0
        while i - 1 - n >= 0, case .dropout = layers[i - 1 - n].kind { n += 1 }
        return n
    }

    /// conv layer -> the layer whose output a later shortcut adds to it, for
    /// shortcuts that can run as the convolution's residual: the shortcut
    /// reads a linear convolution (through dropouts only) that nothing else
    /// reads, and adds a tensor computed before it.
    private static func fusedShortcuts(_ layers: [DarknetLayer]) -> [Int: Int] {
        var readers = [Int](repeating: 0, count: layers.count)
        for (i, layer) in layers.enumerated() {
            switch layer.kind {
            case .route(let inputs, _, _): for j in inputs { readers[j] += 1 }
            case .shortcut(let from, _):
                if i > 0 { readers[i - 1] += 1 }
                readers[from] += 1
            default: if i > 0 { readers[i - 1] += 1 }
            }
        }
        var fused: [Int: Int] = [:]
        for (i, layer) in layers.enumerated() {
            guard case .shortcut(let from, _) = layer.kind else { continue }
            let conv = i - 1 - dropoutsBefore(i, layers)
            guard conv >= 0, from < conv, case .convolutional(let spec) = layers[conv].kind, spec.activation == .linear,
                  (conv..<i).allSatisfy({ readers[$0] == 1 }) else { continue }
            fused[conv] = from
        }
        return fused
    }
}
