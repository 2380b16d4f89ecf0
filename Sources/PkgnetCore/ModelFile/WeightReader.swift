import PkgnetKernels

/// Hands a network builder the tensors of one prefix ("student." or
/// "teacher."), checking each shape and remembering which were taken so that
/// tensors nobody asked for can be reported.
final class WeightReader {
    private let file: SafeTensors
    private let prefix: String
    let source: String
    private var taken: Set<String> = []

    init(file: SafeTensors, prefix: String, source: String) {
        self.file = file
        self.prefix = prefix
        self.source = source
    }

    /// A small tensor (bias, BatchNorm statistics) as fp32.
    func tensor(_ name: String, shape: [Int]) throws -> [Float] {
        try read(try entry(name, shape: shape)) { source in
            let count = shape.reduce(1, *)
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                pkk_weight_source_read(&source, 1, count, out.baseAddress)
                initialized = count
            }
        }
    }

    /// The tensor's entry, checked against the shape the layer expects.
    func entry(_ name: String, shape: [Int]) throws -> TensorEntry {
        let key = prefix + name
        guard let entry = file.entries[key] else {
            throw PkgnetError(.modelMismatch, "\(source): tensor '\(key)' of shape \(shape) is missing")
        }
        guard entry.shape == shape else {
            throw PkgnetError(.modelMismatch, "\(source): tensor '\(key)' has shape \(entry.shape), expected \(shape)")
        }
        taken.insert(key)
        return entry
    }

    /// Lends `body` the tensor still in the file (row r scaled by rowScale[r]
    /// if given), for a layer to convert and arrange its weights in one pass:
    /// the file is the only other copy. Throws if a stored value is NaN or
    /// infinite; either way the tensor's file pages are dropped afterwards.
    func read<Layer>(_ entry: TensorEntry, rowScale: [Double]? = nil,
                     _ body: (inout pkk_weight_source) throws -> Layer) throws -> Layer {
        defer { file.release(entry) }
        var tensor = file.source(entry)
        let layer = try withUnsafeOptionalBuffer(rowScale) { scale in
            tensor.row_scale = scale
            return try body(&tensor)
        }
        guard tensor.nonfinite == 0 else {
            let values = file.floats(entry)
            let bad = values.withUnsafeBufferPointer { pkk_first_nonfinite($0.baseAddress, $0.count) }
            throw PkgnetError(.format, "\(source): tensor '\(entry.name)' has a non-finite value (\(values[bad])) at element \(bad)")
        }
        return layer
    }

    /// Whether the file holds the tensor (under this prefix), for optional layers.
    func contains(_ name: String) -> Bool { file.entries[prefix + name] != nil }

    /// Dimension `axis` of a tensor, for layers whose size the file decides.
    func dimension(_ name: String, axis: Int) throws -> Int {
        let key = prefix + name
        guard let entry = file.entries[key], axis < entry.shape.count else {
            throw PkgnetError(.modelMismatch, "\(source): tensor '\(key)' is missing or has fewer than \(axis + 1) dimensions")
        }
        return entry.shape[axis]
    }

    /// Tensors under this prefix that no layer took. BatchNorm's
    /// num_batches_tracked is a training counter and is allowed.
    func untaken() -> [String] {
        file.entries.keys
            .filter { $0.hasPrefix(prefix) && !taken.contains($0) && !$0.hasSuffix(".num_batches_tracked") }
            .sorted()
    }

    /// A convolution followed by BatchNorm, folded into one convolution:
    /// y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta
    ///   = conv'(x) + b' with w' = w * s, b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps).
    /// Folding in Double keeps the folded weights within an ulp of exact.
    /// `eps`: PyTorch's default 1e-5; EfficientNet's TensorFlow-born BatchNorms use 1e-3.
    func convBatchNorm(conv: String, bn: String, cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int,
                       groups: Int = 1, eps: Double = 1e-5, convBias: Bool, relu: Bool) throws -> Conv2D {
        let weight = try entry(conv + ".weight", shape: [cout, cin / groups, kernel, kernel])
        let bias = convBias ? try tensor(conv + ".bias", shape: [cout]) : [Float](repeating: 0, count: cout)
        let gamma = try tensor(bn + ".weight", shape: [cout])
        let beta = try tensor(bn + ".bias", shape: [cout])
        let mean = try tensor(bn + ".running_mean", shape: [cout])
        let variance = try tensor(bn + ".running_var", shape: [cout])
        var scale = [Double](repeating: 0, count: cout)
        var folded = [Float](repeating: 0, count: cout)
        for o in 0..<cout {
            guard variance[o] >= 0 else {
                throw PkgnetError(.modelMismatch, "\(source): '\(prefix)\(bn).running_var' has a negative value \(variance[o]) at channel \(o)")
            }
            scale[o] = Double(gamma[o]) / (Double(variance[o]) + eps).squareRoot()
            folded[o] = Float((Double(bias[o]) - Double(mean[o])) * scale[o] + Double(beta[o]))
        }
        // The weights are scaled as they are read (pkk_weight_source), in Double
        // like the bias: the folded weights stay within an ulp of exact.
        return try read(weight, rowScale: scale) {
            Conv2D(weight: &$0, bias: folded, cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad,
                   groups: groups, relu: relu)
        }
    }

    /// A plain convolution with bias (no BatchNorm, no activation).
    func conv(_ name: String, cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int) throws -> Conv2D {
        let weight = try entry(name + ".weight", shape: [cout, cin, kernel, kernel])
        let bias = try tensor(name + ".bias", shape: [cout])
        return try read(weight) {
            Conv2D(weight: &$0, bias: bias, cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad, groups: 1, relu: false)
        }
    }
}

/// `body` with a pointer to the array's elements, or nil for no array.
private func withUnsafeOptionalBuffer<Result>(_ values: [Double]?, _ body: (UnsafePointer<Double>?) throws -> Result) rethrows -> Result {
    guard let values else { return try body(nil) }
    return try values.withUnsafeBufferPointer { try body($0.baseAddress) }
}
