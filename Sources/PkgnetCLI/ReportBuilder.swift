// From evaluation results to the report's content: the charts' series and
// the top objects' images. The stream gives scores only, so the top objects'
// cubes (kept while streaming) are scored again here with a Session that
// returns the predicted crop and the maps as well.
import PkgnetCore

/// Curves of one video for its chart: each criterion and the combined score,
/// all median-filtered with the evaluation's window (the combined curve is
/// exactly the evaluated frame score).
func chartSeries(_ result: VideoResult, model: ModelConfig, window: Int) -> [ChartSeries] {
    var series = [ChartSeries(name: "prediction error", colour: ReportColours.predictionError,
                              values: medianFilter(result.components[0], window: window))]
    let blocks = ["bottleneck 4x4 vs teacher block2", "decoder 8x8 vs teacher block1"]
    for j in 0..<(result.components.count - 1) {
        let what = j < blocks.count ? " (\(blocks[j]))" : ""
        series.append(ChartSeries(name: "feature inconsistency \(j + 1)\(what)",
                                  colour: ReportColours.inconsistency[j % ReportColours.inconsistency.count],
                                  values: medianFilter(result.components[1 + j], window: window)))
    }
    series.append(ChartSeries(name: "combined score (evaluated)", colour: ReportColours.combined, values: result.smoothed))
    return series
}

/// Scores the kept cubes again for their images. Colour channels come back
/// in the model's input order; the report shows RGB.
func objectReports(_ kept: [KeptObject], model: Model, threads: Int) throws -> [ObjectReport] {
    guard !kept.isEmpty else { return [] }
    let config = model.config
    let c = config.student.channels
    let n = kept.count
    let plane = 32 * 32
    let cubeBytes = 5 * plane * c
    var cubes = [UInt8](repeating: 0, count: n * cubeBytes)
    for (i, object) in kept.enumerated() where object.cube.count == cubeBytes {
        cubes.replaceSubrange(i * cubeBytes..<(i + 1) * cubeBytes, with: object.cube)
    }
    let sizes = model.pairSizes
    var prediction = [Float](repeating: 0, count: n * c * plane)
    var errorMaps = [Float](repeating: 0, count: n * plane)
    // One buffer per pair, owned here: the session writes all of them in one call.
    let maps = sizes.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: n * $0 * $0) }
    defer { maps.forEach { $0.deallocate() } }
    maps.forEach { $0.initialize(repeating: 0) }

    let session: Session
    do {
        session = try Session(model: model, threads: threads)
    } catch let error as PkgnetError {
        throw CLIError("report: cannot score the top objects: \(error.message)")
    }
    do {
        try cubes.withUnsafeBufferPointer { input in
            try prediction.withUnsafeMutableBufferPointer { p in
                try errorMaps.withUnsafeMutableBufferPointer { e in
                    var outputs = ScoreOutputs()
                    outputs.prediction = p.baseAddress
                    outputs.errorMap = e.baseAddress
                    outputs.inconsistencyMaps = maps.map { $0.baseAddress }
                    try session.score(.u8(input.baseAddress!), count: n, into: outputs)
                }
            }
        }
    } catch let error as PkgnetError {
        throw CLIError("report: cannot score the top objects: \(error.message)")
    }

    // Channel i of the RGB image comes from cube channel rgbSource[i].
    let rgbSource = c == 1 ? [0] : (config.inputChannelOrder == .bgr ? [2, 1, 0] : [0, 1, 2])
    return kept.enumerated().map { i, object in
        var target = [UInt8](repeating: 0, count: plane * c)
        var predicted = [UInt8](repeating: 0, count: plane * c)
        let frameT = i * cubeBytes + 4 * plane * c   // cube [5][32][32][C]: frame t last
        for pixel in 0..<plane {
            for (k, source) in rgbSource.enumerated() {
                target[pixel * c + k] = cubes[frameT + pixel * c + source]
                let value = prediction[(i * c + source) * plane + pixel]   // [n][C][32][32]
                let scaled = value.isFinite ? min(max(value * 255, 0), 255).rounded() : 0
                predicted[pixel * c + k] = UInt8(scaled)
            }
        }
        let score = object.score
        return ObjectReport(
            video: object.video, frame: score.frame, frameName: object.frameName,
            box: (score.box.x1, score.box.y1, score.box.x2, score.box.y2),
            combined: score.combined, predictionError: score.predictionError, inconsistency: score.inconsistency,
            side: 32, channels: c, target: target, prediction: predicted,
            errorMap: Array(errorMaps[(i * plane)..<((i + 1) * plane)]),
            inconsistencyMaps: sizes.enumerated().map { j, s in
                (size: s, values: Array(maps[j][(i * s * s)..<((i + 1) * s * s)]))
            })
    }
}
