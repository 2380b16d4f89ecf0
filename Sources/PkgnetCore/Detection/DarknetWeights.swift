// Darknet .weights files: a header (major, minor, revision as int32, then the
// images seen as uint64 from version 0.2 on, int32 before), then float32
// tensors layer by layer in cfg order, for each [convolutional]: biases
// (BatchNorm beta), with BatchNorm also gamma, running mean and variance,
// then the weights [filters][inputs/groups][size][size]. Nothing else is
// stored, so the file's size must be exactly what the cfg implies; a size
// that differs names the layer where file and cfg part ways.
import Glibc

/// A convolution's weights and bias with any BatchNorm folded in.
struct FoldedConvolution {
    let weight: [Float]
    let bias: [Float]
    /// The weights packed for the C GEMM (ungrouped convolutions).
    let packed = WeightCache()
}

/// OpenCV's darknet importer folds BatchNorm with this epsilon (darknet's
/// .000001f): scale = gamma / sqrt(variance + eps).
let darknetBatchNormEpsilon: Float = 1e-6

/// Bytes of the header: 12, then 8 or 4 for the count of images seen.
private func headerBytes(major: Int32, minor: Int32) -> Int {
    Int(major) * 10 + Int(minor) >= 2 && major < 1000 && minor < 1000 ? 20 : 16
}

/// Reads `path` whole, refusing files larger than `limit` bytes.
func readWholeFile(_ path: String, what: String, limit: Int) throws -> [UInt8] {
    guard let file = fopen(path, "rb") else {
        throw PkgnetError(.io, "cannot open \(what) '\(path)': \(String(cString: strerror(errno)))")
    }
    defer { fclose(file) }
    var info = stat()
    guard fstat(fileno(file), &info) == 0 else {
        throw PkgnetError(.io, "cannot stat \(what) '\(path)': \(String(cString: strerror(errno)))")
    }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
        throw PkgnetError(.io, "\(what) '\(path)' is not a regular file")
    }
    let size = Int(info.st_size)
    guard size <= limit else {
        throw PkgnetError(.format, "\(what) '\(path)' has \(size) bytes, more than the \(limit) accepted")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    let got = bytes.withUnsafeMutableBytes { size == 0 ? 0 : fread($0.baseAddress, 1, size, file) }
    guard got == size else {
        throw PkgnetError(.io, "cannot read \(what) '\(path)': got \(got) of \(size) bytes")
    }
    return bytes
}

/// The folded weights of every [convolutional] layer (nil for other layers),
/// read from the bytes of a .weights file named `file` in messages.
/// Throws `.format` for a bad header or non-finite values, `.unsupported`
/// for transposed files, `.modelMismatch` when the size does not fit the cfg.
func readDarknetWeights(_ bytes: [UInt8], file: String, layers: [DarknetLayer]) throws -> (convolutions: [FoldedConvolution?], floats: Int) {
    guard bytes.count >= 16 else {
        throw PkgnetError(.format, "\(file): \(bytes.count) bytes: too short for a darknet weights header (16 or 20 bytes)")
    }
    func int32(_ at: Int) -> Int32 {
        Int32(bitPattern: UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
    }
    let major = int32(0), minor = int32(4), revision = int32(8)
    guard major <= 1000 && minor <= 1000 else {
        throw PkgnetError(.unsupported, "\(file): version \(major).\(minor).\(revision) marks transposed weights, which pkgnet does not read")
    }
    guard major >= 0, minor >= 0 else {
        throw PkgnetError(.format, "\(file): version \(major).\(minor).\(revision) is not a darknet weights header")
    }
    let header = headerBytes(major: major, minor: minor)
    guard bytes.count >= header else {
        throw PkgnetError(.format, "\(file): \(bytes.count) bytes: too short for the \(header)-byte header of version \(major).\(minor)")
    }

    // Where each layer's floats start; the cfg fixes them all.
    var offsets: [Int] = []
    var total = 0
    for layer in layers {
        offsets.append(total)
        if case .convolutional(let spec) = layer.kind { total += spec.floatsInFile }
    }
    let expected = header + 4 * total
    guard bytes.count == expected else {
        if bytes.count > expected {
            throw PkgnetError(.modelMismatch, "\(file): \(bytes.count) bytes, but the cfg's layers need \(expected) (a \(header)-byte header and \(total) floats): \(bytes.count - expected) bytes are left over, so these weights belong to another cfg")
        }
        let available = (bytes.count - header) / 4
        // bytes.count < expected: some layer's floats run past the end.
        var short = 0, floats = 0
        for (index, layer) in layers.enumerated() {
            if case .convolutional(let spec) = layer.kind, offsets[index] + spec.floatsInFile > available {
                (short, floats) = (index, spec.floatsInFile)
                break
            }
        }
        let layer = layers[short]
        throw PkgnetError(.modelMismatch, "\(file): truncated or for another cfg: \(bytes.count) bytes, but \(layer.section.name) needs bytes \(header + 4 * offsets[short])..<\(header + 4 * (offsets[short] + floats)) (the cfg needs \(expected) in all)")
    }

    var convolutions: [FoldedConvolution?] = []
    try bytes.withUnsafeBytes { raw in
        let data = raw.baseAddress! + header
        for (index, layer) in layers.enumerated() {
            guard case .convolutional(let spec) = layer.kind else {
                convolutions.append(nil)
                continue
            }
            func tensor(_ start: Int, _ count: Int, _ what: String) throws -> [Float] {
                let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    memcpy(buffer.baseAddress!, data + 4 * (offsets[index] + start), 4 * count)
                    initialized = count
                }
                if let bad = values.firstIndex(where: { !$0.isFinite }) {
                    throw PkgnetError(.format, "\(file): \(layer.section.name): \(what) value \(bad) is \(values[bad])")
                }
                return values
            }
            let n = spec.filters
            let bias = try tensor(0, n, spec.batchNormalize ? "BatchNorm beta" : "bias")
            var weight = try tensor(spec.batchNormalize ? 4 * n : n, spec.weightCount, "weight")
            guard spec.batchNormalize else {
                convolutions.append(FoldedConvolution(weight: weight, bias: bias))
                continue
            }
            let gamma = try tensor(n, n, "BatchNorm gamma")
            let mean = try tensor(2 * n, n, "BatchNorm mean")
            let variance = try tensor(3 * n, n, "BatchNorm variance")
            if let bad = variance.firstIndex(where: { $0 < 0 }) {
                throw PkgnetError(.format, "\(file): \(layer.section.name): BatchNorm variance \(bad) is negative (\(variance[bad]))")
            }
            // In float, as OpenCV folds them.
            var folded = [Float](repeating: 0, count: n)
            let perFilter = spec.weightCount / n
            for f in 0..<n {
                let scale = gamma[f] / (variance[f] + darknetBatchNormEpsilon).squareRoot()
                guard scale.isFinite else {
                    throw PkgnetError(.format, "\(file): \(layer.section.name): BatchNorm of filter \(f) scales by \(scale) (gamma \(gamma[f]), variance \(variance[f]))")
                }
                folded[f] = bias[f] - mean[f] * scale
                for k in 0..<perFilter { weight[f * perFilter + k] *= scale }
            }
            convolutions.append(FoldedConvolution(weight: weight, bias: folded))
        }
    }
    return (convolutions, total)
}
