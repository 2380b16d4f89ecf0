import PkgnetKernels

/// A feature map of a micro-batch in the kernels' channel-major layout
/// [channels][batch][size][size], as a pointer into workspace memory.
struct FeatureMap {
    let data: UnsafeMutablePointer<Float>
    let channels: Int
    let size: Int

    /// Channels [from, from + count) of this map: a concatenation's halves.
    func slice(from: Int, count: Int, batch: Int) -> FeatureMap {
        FeatureMap(data: data + from * batch * size * size, channels: count, size: size)
    }
}

/// Weights rearranged once for a kernel (a Winograd transform, a GEMM
/// packing), made on first use and shared by every session of the model (the
/// C cache installs them atomically, so concurrent first calls are safe).
final class WeightCache: @unchecked Sendable {
    let cache: OpaquePointer

    init?() {
        guard let cache = pkk_weight_cache_new() else { return nil }
        self.cache = cache
    }

    deinit { pkk_weight_cache_free(cache) }
}

/// A convolution with any BatchNorm folded in and an optional fused ReLU.
struct Conv2D {
    /// [cout][cin/groups][kernel][kernel], except for Winograd convolutions,
    /// whose weights are kept only as pkk_winograd_arrange_weights arranges
    /// them: both of their paths read that arrangement.
    let weight: [Float]
    let bias: [Float]
    let cin: Int
    let cout: Int
    let kernel: Int
    let stride: Int
    let pad: Int
    let groups: Int
    let relu: Bool
    /// Upper bound of the ReLU (6 for EfficientNet-Lite's ReLU6); nil: none.
    var cap: Float?
    /// Set for 3x3 stride-1 pad-1 ungrouped convolutions, which run as
    /// Winograd F(4x4, 3x3) where the batch has enough tiles, else as a GEMM
    /// against the packing of the same arranged weights.
    let winograd: Bool
    /// The weights packed for the C GEMM, for every ungrouped call that does
    /// not go through Winograd.
    let packed: WeightCache?

    init(weight: [Float], bias: [Float], cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int, groups: Int,
         relu: Bool, cap: Float? = nil) {
        self.bias = bias
        self.cin = cin
        self.cout = cout
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.groups = groups
        self.relu = relu
        self.cap = cap
        winograd = kernel == 3 && stride == 1 && pad == 1 && groups == 1 && cin >= Conv2D.winogradMinChannels
        packed = groups == 1 ? WeightCache() : nil
        guard winograd else {
            self.weight = weight
            return
        }
        // One copy, in the order the Winograd kernel reads: the 3x3 weights are
        // most of a model, and a second arrangement would double them.
        self.weight = [Float](unsafeUninitializedCapacity: pkk_winograd_weight_floats(Int32(cin), Int32(cout))) { s, count in
            pkk_winograd_arrange_weights(weight, Int32(cin), Int32(cout), s.baseAddress)
            count = s.count
        }
    }

    /// Fewest input channels for Winograd: a shorter reduction leaves the
    /// transforms with nothing to amortise them. Measured on the w=16 student
    /// (narrowest convs 12 and 16 channels in): Winograd from 8 channels up
    /// scores 1.6x as fast as from 1000 (direct only), 1.2x as from 17.
    static let winogradMinChannels = 8

    func outputSize(_ size: Int) -> Int { (size + 2 * pad - kernel) / stride + 1 }

    /// y = act(conv(x) + bias [+ residual]); y must not alias x or residual.
    /// Throws only when a Winograd convolution can take neither path: no
    /// memory to pack its weights and a scratch below one Winograd chunk.
    func callAsFunction(_ x: FeatureMap, batch: Int, into y: FeatureMap, residual: FeatureMap? = nil,
                        scratch: Scratch) throws {
        assert(x.channels == cin && y.channels == cout && y.size == outputSize(x.size))
        let done = weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                guard winograd, let packed else {
                    pkk_conv2d(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size),
                               w.baseAddress, packed?.cache, b.baseAddress, Int32(cout),
                               Int32(kernel), Int32(stride), Int32(pad), Int32(groups),
                               residual?.data, relu ? 1 : 0, y.data, scratch.data, scratch.count)
                    return true
                }
                let viaWinograd = {
                    pkk_conv3x3_winograd(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size), w.baseAddress,
                                         b.baseAddress, Int32(cout), residual?.data, relu ? 1 : 0, y.data,
                                         scratch.data, scratch.count) != 0
                }
                let viaPacked = {
                    pkk_conv3x3_packed(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size), w.baseAddress,
                                       packed.cache, b.baseAddress, Int32(cout), residual?.data, relu ? 1 : 0, y.data,
                                       scratch.data, scratch.count) != 0
                }
                let tiles = batch * ((x.size + 3) / 4) * ((x.size + 3) / 4)
                return tiles >= Int(pkk_winograd_min_tiles()) ? viaWinograd() || viaPacked() : viaPacked() || viaWinograd()
            }
        }
        guard done else {
            throw PkgnetError(.outOfMemory, "3x3 convolution \(cin) -> \(cout) channels: no memory to pack its weights, and \(scratch.count) floats of scratch are below one Winograd chunk")
        }
        if let cap {
            pkk_clamp(y.data, cout * batch * y.size * y.size, relu ? 0 : -.infinity, cap)
        }
    }
}

/// A convolution with TensorFlow "same" padding for a given input side:
/// the output side is ceil(side / stride) and the padding that takes is
/// split with the odd row below and right. Unequal sides go through a
/// zero-padded copy of the input; equal ones stay the convolution's own.
struct SameConv2D {
    let conv: Conv2D
    let before: Int
    let after: Int

    /// `conv`'s padding is replaced by the one `inputSize` calls for.
    init(_ conv: Conv2D, inputSize: Int) {
        let outputSize = (inputSize + conv.stride - 1) / conv.stride
        let total = max((outputSize - 1) * conv.stride + conv.kernel - inputSize, 0)
        before = total / 2
        after = total - before
        let pad = before == after ? before : 0
        // A Winograd convolution (3x3, stride 1, pad 1) keeps its padding of
        // 1 on either side, and with it its arranged weights.
        self.conv = pad == conv.pad ? conv
            : Conv2D(weight: conv.weight, bias: conv.bias, cin: conv.cin, cout: conv.cout, kernel: conv.kernel,
                     stride: conv.stride, pad: pad, groups: conv.groups, relu: conv.relu, cap: conv.cap)
    }

    var cout: Int { conv.cout }

    func outputSize(_ size: Int) -> Int { (size + before + after - conv.kernel) / conv.stride + 1 }

    /// `padded` names the workspace buffer of the padded copy.
    func callAsFunction(_ x: FeatureMap, batch: Int, into y: FeatureMap, padded: String, workspace ws: Workspace) throws {
        guard before != after else {
            try conv(x, batch: batch, into: y, scratch: ws.scratch)
            return
        }
        let copy = try ws.map(padded, channels: x.channels, size: x.size + before + after, batch: batch)
        pkk_pad2d(x.data, Int32(x.channels), Int32(batch), Int32(x.size), Int32(x.size),
                  Int32(before), Int32(after), Int32(before), Int32(after), copy.data)
        try conv(copy, batch: batch, into: y, scratch: ws.scratch)
    }
}

/// PyTorch's ConvTranspose2d(kernel 3, stride 2, padding 1, output_padding 1):
/// doubles the map's side, as the students' decoders use it.
struct ConvTranspose2D {
    let weight: [Float]
    let bias: [Float]
    let cin: Int
    let cout: Int
    /// The weights packed for the C GEMM.
    let packed = WeightCache()

    func callAsFunction(_ x: FeatureMap, batch: Int, into y: FeatureMap, scratch: Scratch) {
        assert(x.channels == cin && y.channels == cout && y.size == 2 * x.size)
        weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                pkk_conv_transpose2d(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size),
                                     w.baseAddress, packed?.cache, b.baseAddress, Int32(cout), 3, 2, 1, 1,
                                     y.data, scratch.data, scratch.count)
            }
        }
    }
}

/// (conv3x3 + BatchNorm + ReLU) twice: the U-Net's building block.
struct DoubleConv {
    let first: Conv2D
    let second: Conv2D

    init(_ weights: WeightReader, _ name: String, cin: Int, cout: Int) throws {
        first = try weights.convBatchNorm(conv: name + ".0", bn: name + ".1", cin: cin, cout: cout,
                                          kernel: 3, stride: 1, pad: 1, convBias: true, relu: true)
        second = try weights.convBatchNorm(conv: name + ".3", bn: name + ".4", cin: cout, cout: cout,
                                           kernel: 3, stride: 1, pad: 1, convBias: true, relu: true)
    }

    func callAsFunction(_ x: FeatureMap, batch: Int, temp: FeatureMap, into y: FeatureMap, scratch: Scratch) throws {
        try first(x, batch: batch, into: temp, scratch: scratch)
        try second(temp, batch: batch, into: y, scratch: scratch)
    }
}

func maxPool(_ x: FeatureMap, batch: Int, kernel: Int, stride: Int, pad: Int, into y: FeatureMap) {
    pkk_maxpool2d(x.data, Int32(x.channels), Int32(batch), Int32(x.size), Int32(x.size),
                  Int32(kernel), Int32(stride), Int32(pad), y.data)
}
