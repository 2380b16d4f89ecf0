// A YOLO detector on pkgnet's own kernels: frames in, objects out. The
// network (weights and plan) is immutable and shared; a Detector adds the
// working memory of one forward pass, so it serves one thread at a time.
import Glibc
import PkgnetKernels
import Synchronization

/// What a detection keeps.
public struct DetectorOptions: Equatable, Sendable {
    /// Objects whose confidence (objectness x class probability) exceeds this are kept.
    public var confidence: Float
    /// A box is dropped when its IoU with a more confident box of its class
    /// exceeds this; 1 turns suppression off.
    public var nmsThreshold: Float
    /// Class indices that may be reported (nil: all). Each cell and anchor
    /// reports its most confident class among these.
    public var classes: [Int]?
    /// Threads of the forward pass, 0 = default (the CPUs available).
    public var threads: Int

    public init(confidence: Float = 0.25, nmsThreshold: Float = 0.45, classes: [Int]? = nil, threads: Int = 0) {
        self.confidence = confidence
        self.nmsThreshold = nmsThreshold
        self.classes = classes
        self.threads = threads
    }

    /// Throws `.invalidArgument` naming the first bad field for a model of `classCount` classes.
    public func validate(classCount: Int) throws {
        func bad(_ text: String) -> PkgnetError { PkgnetError(.invalidArgument, "detector options: \(text)") }
        guard confidence.isFinite, (0...1).contains(confidence) else { throw bad("confidence must be in [0, 1], not \(confidence)") }
        guard nmsThreshold.isFinite, (0...1).contains(nmsThreshold) else {
            throw bad("the NMS threshold must be in [0, 1] (1 = no suppression), not \(nmsThreshold)")
        }
        if let classes {
            guard !classes.isEmpty else { throw bad("the class list is empty (leave it out to keep every class)") }
            if let wrong = classes.first(where: { !(0..<classCount).contains($0) }) {
                throw bad("class \(wrong) is not among the model's \(classCount) classes (0...\(classCount - 1))")
            }
        }
        guard (0...Session.maxThreads).contains(threads) else {
            throw bad("threads must be in 0...\(Session.maxThreads) (0 = default), not \(threads)")
        }
    }
}

public final class Detector: @unchecked Sendable {
    public let network: DarknetNetwork
    private let buffers: [UnsafeMutablePointer<Float>]
    private let scratch: UnsafeMutablePointer<Float>
    private let candidates: UnsafeMutablePointer<Float>
    private let busy = Atomic<Bool>(false)

    /// A detector with its own working memory (Network.workspaceFloats floats).
    public init(network: DarknetNetwork) throws {
        try PkgnetRuntime.start()
        self.network = network
        var allocated: [UnsafeMutablePointer<Float>] = []
        do {
            for floats in network.bufferFloats { allocated.append(try Detector.allocate(floats)) }
            allocated.append(try Detector.allocate(network.scratchFloats))
            allocated.append(try Detector.allocate(6 * network.candidateCapacity))
        } catch {
            for pointer in allocated { free(pointer) }
            throw error
        }
        candidates = allocated.removeLast()
        scratch = allocated.removeLast()
        buffers = allocated
    }

    public convenience init(cfgPath: String, weightsPath: String) throws {
        try self.init(network: try DarknetNetwork(cfgPath: cfgPath, weightsPath: weightsPath))
    }

    deinit {
        for pointer in buffers { free(pointer) }
        free(scratch)
        free(candidates)
    }

    private static func allocate(_ count: Int) throws -> UnsafeMutablePointer<Float> {
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, max(count, 1) * MemoryLayout<Float>.size) == 0, let raw else {
            throw PkgnetError(.outOfMemory, "cannot allocate \(count * 4) bytes of detector working memory")
        }
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    private func exclusive<T>(_ body: () throws -> T) throws -> T {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw PkgnetError(.busy, "the detector is in use by another thread; use one detector per thread")
        }
        defer { busy.store(false, ordering: .releasing) }
        return try body()
    }

    /// The objects in a frame (any size; BGR, RGB or grey, which is read as
    /// its BGR conversion), highest confidence first.
    public func detect(_ frame: FrameView, options: DetectorOptions = DetectorOptions()) throws -> [DetectedObject] {
        try options.validate(classCount: network.classes)
        var keep = [UInt8](repeating: options.classes == nil ? 1 : 0, count: network.classes)
        for c in options.classes ?? [] { keep[c] = 1 }
        return try exclusive {
            var count = 0
            try forward(frame, threads: options.threads) { head, x, shape in
                count += decodeYoloHead(x, head: network.heads[head], shape: shape, input: network.input,
                                        threshold: options.confidence, keep: keep, into: candidates + 6 * count)
            }
            return objects(fromCandidates: candidates, count: count, frameWidth: frame.width, frameHeight: frame.height,
                           nmsThreshold: options.nmsThreshold)
        }
    }

    /// The raw output of head `head` (the input of the cfg's head-th [yolo]
    /// layer, before any logistic) for a frame: [channels][height][width] of
    /// network.headShapes[head]. For checking a model against another runtime.
    public func rawOutput(_ frame: FrameView, head: Int, threads: Int = 0) throws -> [Float] {
        guard network.heads.indices.contains(head) else {
            throw PkgnetError(.invalidArgument, "head \(head) does not exist: the network has \(network.heads.count) [yolo] heads")
        }
        try DetectorOptions(threads: threads).validate(classCount: network.classes)
        return try exclusive {
            var values: [Float] = []
            try forward(frame, threads: threads) { index, x, shape in
                if index == head { values = Array(UnsafeBufferPointer(start: x, count: shape.count)) }
            }
            return values
        }
    }

    private func pointer(_ t: TensorRef) -> UnsafeMutablePointer<Float> {
        buffers[network.storageBuffer[t.storage]] + t.offset
    }

    /// Runs the network on a frame, calling `head` with each [yolo] head's
    /// raw input while it is valid (buffers are reused after it).
    private func forward(_ frame: FrameView, threads: Int,
                         head: (Int, UnsafePointer<Float>, TensorShape) throws -> Void) throws {
        try frame.validate("detector frame")
        pkk_set_threads(Int32(threads == 0 ? Int(pkk_default_threads()) : threads))
        let input = network.inputTensor
        let map: [Int32] = frame.format == .bgr ? [2, 1, 0] : (frame.format == .rgb ? [0, 1, 2] : [0, 0, 0])
        guard pkk_detector_input(frame.data, frame.stride, Int32(frame.width), Int32(frame.height),
                                 Int32(frame.format.channels), map, Int32(input.shape.width), Int32(input.shape.height),
                                 pointer(input)) == 0 else {
            throw PkgnetError(.outOfMemory, "detector: " + String(cString: pkk_last_error()))
        }
        for step in network.steps {
            switch step {
            case .convolution(let layer, let x, let y, let residual, let depthwise):
                guard case .convolutional(let spec) = network.layers[layer].kind, let weights = network.convolutions[layer] else {
                    throw PkgnetError(.internal, "detector plan: layer \(layer) is not a loaded convolution")
                }
                weights.weight.withUnsafeBufferPointer { w in
                    weights.bias.withUnsafeBufferPointer { b in
                        if depthwise {
                            pkk_depthwise_conv2d(pointer(x), Int32(x.shape.channels), Int32(x.shape.height), Int32(x.shape.width),
                                                 w.baseAddress, b.baseAddress, Int32(spec.size), Int32(spec.stride),
                                                 Int32(spec.pad), spec.activation.kernelKind, pointer(y))
                            return
                        }
                        pkk_conv2d(pointer(x), Int32(x.shape.channels), 1, Int32(x.shape.height), Int32(x.shape.width),
                                   w.baseAddress, weights.packed?.cache, b.baseAddress, Int32(spec.filters),
                                   Int32(spec.size), Int32(spec.stride), Int32(spec.pad), Int32(spec.groups),
                                   residual.map { pointer($0) }, spec.activation == .relu ? 1 : 0,
                                   pointer(y), scratch, network.scratchFloats)
                    }
                }
            case .activate(let t, let activation):
                pkk_activate(pointer(t), t.shape.count, activation.kernelKind)
            case .maxpool(let x, let y, let size, let stride, let pad):
                pkk_maxpool2d(pointer(x), Int32(x.shape.channels), 1, Int32(x.shape.height), Int32(x.shape.width),
                              Int32(size), Int32(stride), Int32(pad), pointer(y))
            case .concat(let inputs, let y):
                var offset = 0
                for x in inputs {
                    memcpy(pointer(y) + offset, pointer(x), 4 * x.shape.count)
                    offset += x.shape.count
                }
            case .add(let a, let b, let y):
                pkk_add(pointer(a), pointer(b), y.shape.count, pointer(y))
            case .upsample(let x, let y, let stride):
                pkk_upsample_nearest(pointer(x), x.shape.channels, Int32(x.shape.height), Int32(x.shape.width),
                                     Int32(stride), pointer(y))
            case .yolo(let index, let x):
                try head(index, pointer(x), x.shape)
            }
        }
    }
}
