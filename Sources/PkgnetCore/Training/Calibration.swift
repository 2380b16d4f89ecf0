import FoundationEssentials

// Calibration (paper eq. 8): the mean and standard deviation of every score
// component over normal training cubes go into the model file, so that the
// components' weighted sum compares like with like.

extension Trainer {
    /// The score weights of the options, or the defaults for this many pairs.
    public var scoreWeights: [Float] {
        if let weights = options.scoreWeights { return weights }
        return pairs.count == 2 ? [0.01, 0.65, 0.35] : [Float](repeating: 1, count: 1 + pairs.count)
    }

    /// The model file with mu 0 and sigma 1 for every component.
    public func uncalibratedModelFile() throws -> [UInt8] {
        let components = 1 + pairs.count
        let weights = scoreWeights
        guard weights.count == components else {
            throw PkgnetError(.invalidArgument, "\(weights.count) score weights given; this model has \(components) score components (prediction error and \(pairs.count) pairs)")
        }
        return try modelFile(scoring: ModelConfig.Scoring(weights: weights, mu: [Float](repeating: 0, count: components),
                                                          sigma: [Float](repeating: 1, count: components)))
    }

    /// Calibrates mu and sigma of every score component over the training
    /// cubes (eq. 8) with the inference engine, and returns the model file.
    public func calibratedModelFile(progress: (Int, Int) -> Void = { _, _ in }) throws -> [UInt8] {
        let uncalibrated = try uncalibratedModelFile()
        let model = try uncalibrated.withUnsafeBytes { try Model(bytes: $0, source: "the trained model") }
        let statistics = try cubes.withUnsafeBufferPointer {
            try scoreStatistics(model: model, cubes: $0.baseAddress!, count: cubeCount, threads: options.threads, progress: progress)
        }
        return try modelFile(scoring: ModelConfig.Scoring(weights: scoreWeights, mu: statistics.mu, sigma: statistics.sigma))
    }
}

/// Mean and standard deviation over `count` cubes of each score component
/// [S_e, S_c^1, ...] of `model` (paper eq. 8's mu and sigma). A component that
/// is constant over the cubes gets sigma 1e-12 rather than 0, so that scores
/// stay finite.
public func scoreStatistics(model: Model, cubes: UnsafePointer<UInt8>, count: Int, threads: Int,
                            progress: (Int, Int) -> Void = { _, _ in }) throws -> (mu: [Float], sigma: [Float]) {
    guard count > 0 else { throw PkgnetError(.invalidArgument, "calibration needs at least one cube") }
    let session = try Session(model: model, threads: threads)
    let pairs = model.config.pairs.count
    let cubeBytes = 5 * 32 * 32 * model.config.student.channels
    // Component-major values of every cube: two passes (mean, then squared
    // deviations) avoid the cancellation of E[x^2] - E[x]^2 for tight spreads.
    var values = [[Float]](repeating: [Float](repeating: 0, count: count), count: 1 + pairs)
    let chunk = 1024
    var inconsistency = [Float](repeating: 0, count: chunk * pairs)
    var done = 0
    while done < count {
        let n = min(chunk, count - done)
        try values[0].withUnsafeMutableBufferPointer { e in
            try inconsistency.withUnsafeMutableBufferPointer { c in
                var outputs = ScoreOutputs()
                outputs.predictionError = e.baseAddress! + done
                outputs.inconsistency = c.baseAddress
                try session.score(.u8(cubes + done * cubeBytes), count: n, into: outputs)
            }
        }
        for i in 0..<n {
            for j in 0..<pairs { values[1 + j][done + i] = inconsistency[i * pairs + j] }
        }
        done += n
        progress(done, count)
    }
    var mu: [Float] = [], sigma: [Float] = []
    for component in values {
        let mean = component.reduce(0.0) { $0 + Double($1) } / Double(count)
        let variance = component.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(count)
        mu.append(Float(mean))
        sigma.append(Float(max(variance.squareRoot(), 1e-12)))
    }
    return (mu, sigma)
}

/// The model file at `path` with new score statistics: every tensor is kept
/// byte for byte (whatever its dtype), the 'pkgnet' settings are rewritten
/// with `mu` and `sigma`, other metadata entries are kept.
public func recalibratedModelFile(path: String, model: Model, mu: [Float], sigma: [Float]) throws -> [UInt8] {
    let bytes = try readWholeFile(path)
    return try bytes.withUnsafeBytes { raw in
        let file = try SafeTensors(bytes: raw, source: path)
        var scoring = model.config.scoring
        scoring.mu = mu
        scoring.sigma = sigma
        var metadata = file.metadata
        metadata["pkgnet"] = try ModelMetadata(config: model.config, scoring: scoring).json()
        let tensors = file.entries.values.sorted { $0.begin < $1.begin }.map { entry in
            SafeTensorsWriter.Tensor(name: entry.name, dtype: entry.dtype, shape: entry.shape,
                                     bytes: Array(UnsafeRawBufferPointer(rebasing: file.data[entry.begin..<entry.end])))
        }
        return SafeTensorsWriter.encode(tensors, metadata: metadata)
    }
}
