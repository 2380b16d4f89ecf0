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

/// Weights packed once for the GEMM kernel, at load or on first use, and
/// shared by every session of the model (the C cache installs them
/// atomically, so concurrent first calls are safe).
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
    /// [cout][cin/groups][kernel][kernel] for grouped convolutions. The
    /// others keep one copy of their weights, in the order their kernels
    /// read: Winograd convolutions as pkk_winograd_arrange_weights arranges
    /// them (both of their paths read that), the rest only packed (`packed`,
    /// made at load; empty here unless memory for the packing was short).
    let weight: [Float]
    let bias: [Float]
    let cin: Int
    let cout: Int
    let kernel: Int
    let stride: Int
    /// Settable only by SameConv2D, on convolutions that are not Winograd ones.
    fileprivate(set) var pad: Int
    let groups: Int
    let relu: Bool
    /// Upper bound of the ReLU (6 for EfficientNet-Lite's ReLU6); nil: none.
    var cap: Float?
    /// Set for 3x3 stride-1 pad-1 ungrouped convolutions: they run as the
    /// 1-D Winograd kernel where it takes them (pkk_conv3x3_winograd_1d_takes),
    /// else as Winograd F(4x4, 3x3) where the batch has enough tiles and the
    /// input enough channels, else as a GEMM over the same arranged weights
    /// (pkk_conv3x3_packed).
    let winograd: Bool
    /// The weights packed for the C GEMM, for the other ungrouped
    /// convolutions (made at load), and for Winograd ones with 16 or 32 output
    /// channels, whose arrangement the GEMM cannot read (made on the first
    /// call that runs the GEMM: too few tiles or input channels for Winograd);
    /// and a Winograd one's transposed weights, for its GEMM on at most 16
    /// pixels (made on the first such call, for weights of at most 1 MiB).
    let packed: WeightCache?

    /// `weight`: [cout][cin/groups][kernel][kernel] as the model file holds
    /// it, read once into the layout the kernels read.
    init(weight: inout pkk_weight_source, bias: [Float], cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int,
         groups: Int, relu: Bool, cap: Float? = nil) {
        self.bias = bias
        self.cin = cin
        self.cout = cout
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.groups = groups
        self.relu = relu
        self.cap = cap
        winograd = kernel == 3 && stride == 1 && pad == 1 && groups == 1
        packed = groups == 1 ? WeightCache() : nil
        guard winograd else {
            let k = cin / groups * kernel * kernel
            let packedNow = packed.map { pkk_packed_weights_from($0.cache, &weight, Int32(cout), Int32(k), k, 1) != nil } ?? false
            self.weight = packedNow ? [] : readAll(&weight, rows: cout, rowLength: k)
            return
        }
        // One copy, in the order the Winograd kernel reads: the 3x3 weights are
        // most of a model, and a second arrangement would double them.
        self.weight = [Float](unsafeUninitializedCapacity: pkk_winograd_weight_floats(Int32(cin), Int32(cout))) { s, count in
            pkk_winograd_arrange_source(&weight, Int32(cin), Int32(cout), s.baseAddress)
            count = s.count
        }
    }

    /// Fewest input channels for the 2-D Winograd kernel: a shorter reduction
    /// leaves its transforms with nothing to amortise them. Measured on the
    /// w=16 student (narrowest convs 12 and 16 channels in): Winograd from 8
    /// channels up scores 1.6x as fast as from 1000 (direct only), 1.2x as
    /// from 17. (The 1-D kernel's transforms are cheap enough for any.)
    static let winogradMinChannels = 8

    func outputSize(_ size: Int) -> Int { (size + 2 * pad - kernel) / stride + 1 }

    /// y = act(conv(x) + bias [+ residual]); y must not alias x or residual.
    /// Throws only when the scratch is too small for every path open to the
    /// convolution (for a Winograd one, after packing failed for memory).
    func callAsFunction(_ x: FeatureMap, batch: Int, into y: FeatureMap, residual: FeatureMap? = nil,
                        scratch: Scratch) throws {
        assert(x.channels == cin && y.channels == cout && y.size == outputSize(x.size))
        let done = weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                guard winograd, let packed else {
                    return pkk_conv2d(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size),
                                      w.isEmpty ? nil : w.baseAddress, packed?.cache, b.baseAddress, Int32(cout),
                                      Int32(kernel), Int32(stride), Int32(pad), Int32(groups),
                                      residual?.data, relu ? 1 : 0, y.data, scratch.data, scratch.count) != 0
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
                if pkk_conv3x3_winograd_1d_takes(Int32(cin), Int32(cout), Int32(batch), Int32(x.size), Int32(x.size)) != 0,
                   pkk_conv3x3_winograd_1d(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size), w.baseAddress,
                                            b.baseAddress, Int32(cout), residual?.data, relu ? 1 : 0, y.data,
                                            scratch.data, scratch.count) != 0 {
                    return true
                }
                let tiles = batch * ((x.size + 3) / 4) * ((x.size + 3) / 4)
                let winogradFirst = tiles >= Int(pkk_winograd_min_tiles()) && cin >= Conv2D.winogradMinChannels
                return winogradFirst ? viaWinograd() || viaPacked() : viaPacked() || viaWinograd()
            }
        }
        guard done else {
            throw PkgnetError(.outOfMemory, "\(kernel)x\(kernel) convolution \(cin) -> \(cout) channels: \(scratch.count) floats of scratch are too few for it, or no memory was left to pack its weights")
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
        // Weights and packing stay shared. A Winograd convolution (3x3,
        // stride 1, pad 1) is "same" with its own padding of 1; the others run
        // any padding (as the packed GEMM or the BLAS).
        var conv = conv
        conv.pad = before == after ? before : 0
        assert(!conv.winograd || conv.pad == 1)
        self.conv = conv
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
    /// [cin][cout][3][3]; empty once packed (at load, unless memory was short).
    let weight: [Float]
    let bias: [Float]
    let cin: Int
    let cout: Int
    /// The weights packed for the C GEMM (W^T, [cout x 9][cin]).
    let packed = WeightCache()

    /// `weight`: [cin][cout][3][3] as the model file holds it (unscaled).
    init(weight: inout pkk_weight_source, bias: [Float], cin: Int, cout: Int) {
        self.bias = bias
        self.cin = cin
        self.cout = cout
        let rows = cout * 9
        let packedNow = packed.map { pkk_packed_weights_from($0.cache, &weight, Int32(rows), Int32(cin), 1, rows) != nil } ?? false
        self.weight = packedNow ? [] : readAll(&weight, rows: cin, rowLength: rows)
    }

    func callAsFunction(_ x: FeatureMap, batch: Int, into y: FeatureMap, scratch: Scratch) throws {
        assert(x.channels == cin && y.channels == cout && y.size == 2 * x.size)
        let done = weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                pkk_conv_transpose2d(x.data, Int32(cin), Int32(batch), Int32(x.size), Int32(x.size),
                                     w.isEmpty ? nil : w.baseAddress, packed?.cache, b.baseAddress, Int32(cout), 3, 2, 1, 1,
                                     y.data, scratch.data, scratch.count)
            }
        }
        guard done != 0 else {
            throw PkgnetError(.internal, "transposed convolution \(cin) -> \(cout) channels: neither weights nor their packing")
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

/// All of a weight source's rows as fp32, for layers that keep plain weights.
private func readAll(_ weight: inout pkk_weight_source, rows: Int, rowLength: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: rows * rowLength) { out, count in
        pkk_weight_source_read(&weight, rows, rowLength, out.baseAddress)
        count = rows * rowLength
    }
}

func maxPool(_ x: FeatureMap, batch: Int, kernel: Int, stride: Int, pad: Int, into y: FeatureMap) {
    pkk_maxpool2d(x.data, Int32(x.channels), Int32(batch), Int32(x.size), Int32(x.size),
                  Int32(kernel), Int32(stride), Int32(pad), y.data)
}
