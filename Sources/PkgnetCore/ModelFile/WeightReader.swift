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

    func tensor(_ name: String, shape: [Int]) throws -> [Float] {
        let key = prefix + name
        guard let entry = file.entries[key] else {
            throw PkgnetError(.modelMismatch, "\(source): tensor '\(key)' of shape \(shape) is missing")
        }
        guard entry.shape == shape else {
            throw PkgnetError(.modelMismatch, "\(source): tensor '\(key)' has shape \(entry.shape), expected \(shape)")
        }
        taken.insert(key)
        let values = file.floats(entry)
        let bad = values.withUnsafeBufferPointer { pkk_first_nonfinite($0.baseAddress, $0.count) }
        guard bad < 0 else {
            throw PkgnetError(.format, "\(source): tensor '\(key)' has a non-finite value (\(values[bad])) at element \(bad)")
        }
        return values
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
        var weight = try tensor(conv + ".weight", shape: [cout, cin / groups, kernel, kernel])
        let bias = convBias ? try tensor(conv + ".bias", shape: [cout]) : [Float](repeating: 0, count: cout)
        let gamma = try tensor(bn + ".weight", shape: [cout])
        let beta = try tensor(bn + ".bias", shape: [cout])
        let mean = try tensor(bn + ".running_mean", shape: [cout])
        let variance = try tensor(bn + ".running_var", shape: [cout])
        var folded = [Float](repeating: 0, count: cout)
        let perChannel = weight.count / max(cout, 1)
        try weight.withUnsafeMutableBufferPointer { w in  // one tight loop per channel: most of a model's weights pass here
            for o in 0..<cout {
                guard variance[o] >= 0 else {
                    throw PkgnetError(.modelMismatch, "\(source): '\(prefix)\(bn).running_var' has a negative value \(variance[o]) at channel \(o)")
                }
                let scale = Double(gamma[o]) / (Double(variance[o]) + eps).squareRoot()
                let row = UnsafeMutableBufferPointer(rebasing: w[(o * perChannel)..<((o + 1) * perChannel)])
                for i in row.indices { row[i] = Float(Double(row[i]) * scale) }
                folded[o] = Float((Double(bias[o]) - Double(mean[o])) * scale + Double(beta[o]))
            }
        }
        return Conv2D(weight: weight, bias: folded, cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad, groups: groups, relu: relu)
    }

    /// A plain convolution with bias (no BatchNorm, no activation).
    func conv(_ name: String, cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int) throws -> Conv2D {
        let weight = try tensor(name + ".weight", shape: [cout, cin, kernel, kernel])
        let bias = try tensor(name + ".bias", shape: [cout])
        return Conv2D(weight: weight, bias: bias, cin: cin, cout: cout, kernel: kernel, stride: stride, pad: pad, groups: 1, relu: false)
    }
}
