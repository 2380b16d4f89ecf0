// The trainer's student graph: every parameter's gradient from the backward
// pass against central finite differences of the whole network's forward
// pass (k = 1 and 2, both BatchNorm modes, with 1x1 projections), which
// checks the wiring the per-kernel tests cannot see: the op order, the
// concatenation offsets at a batch smaller than the allocation's, and the
// accumulation of gradients that reach a tensor along two paths.
import XCTest
@testable import PkgnetCore

final class TrainingGraphTests: XCTestCase {
    override func setUp() {
        XCTAssertNoThrow(try PkgnetRuntime.start())
    }

    /// J = <prediction, R0> + sum_j <pair output j, Rj>, in Double.
    private func objective(_ graph: StudentGraph, batch: Int, weights: [[Float]]) -> Double {
        graph.forward(batch: batch)
        var total = 0.0
        for (map, r) in zip([graph.prediction!] + graph.pairOutputs, weights) {
            let p = graph.pointer(map, batch: batch)
            for i in r.indices { total += Double(p[i]) * Double(r[i]) }
        }
        return total
    }

    /// Random cube frames in [0, 1) for the graph's input.
    private static func fillInput(_ graph: StudentGraph, batch: Int, _ random: inout SeededRandom) {
        let input = graph.pointer(graph.input, batch: batch)
        for i in 0..<(graph.inputChannels * batch * 1024) { input[i] = Float(random.uniform()) }
    }

    private func check(k: Int, batchStatistics: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        // Width 2 keeps the network small; batch 3 below a maxBatch of 4 moves
        // every concatenation half away from where a full batch puts it.
        let pairs: [(feature: String, teacherChannels: Int)] = k == 2
            ? [("bottleneck", 16), ("d8", 5), ("e16", 3)] : [("bottleneck", 7), ("d32", 2)]
        let graph = try StudentGraph(k: k, width: 2, channels: 1, inputFrames: 4, pairs: pairs, maxBatch: 4,
                                     batchStatistics: batchStatistics, threads: 2)
        graph.winogradForward = false  // Winograd's extra rounding swamps the batch-statistics differences
        graph.initialize(seed: 7)
        let batch = 3
        var random = SeededRandom(seed: 11)
        Self.fillInput(graph, batch: batch, &random)
        let outputs = [graph.prediction!] + graph.pairOutputs
        let weights = outputs.map { map in
            (0..<(map.channels * batch * map.size * map.size)).map { _ in Float(random.uniform(-1, 1)) }
        }

        // Analytic gradients. Batch statistics move the running statistics
        // at every forward; they do not enter the batch-mode output, so the
        // finite differences below are unaffected.
        _ = objective(graph, batch: batch, weights: weights)
        graph.beginBackward()
        for (map, r) in zip(outputs, weights) {
            let accumulate = graph.claimGradient(map, batch: batch)
            let g = graph.gradient(map, batch: batch)
            for i in r.indices { g[i] = (accumulate == 1 ? g[i] : 0) + r[i] }
        }
        let store = graph.store
        store.zeroGradients()
        graph.backward(batch: batch)

        // A few elements of every parameter tensor. ReLU and maxpool kinks
        // make a float32 central difference wrong now and then (a step moves
        // some pre-activation across 0), so single misses are tolerated: the
        // wiring errors this test is for (a missed gradient path, a wrong
        // offset) spoil most elements of a tensor, not one in twenty.
        // Batch statistics divide by per-channel spreads, which magnifies the
        // float32 rounding of J: its finite differences carry more noise.
        let noiseFloor = batchStatistics ? 0.5 : 0.05
        var errors: [(Double, String)] = []
        for tensor in store.parameters {
            for element in Set([0, tensor.count / 2, tensor.count - 1]) {
                let p = store.value(tensor) + element
                let saved = p.pointee
                let step = Float(1e-3) * max(abs(saved), 0.1)
                p.pointee = saved + step
                let plus = objective(graph, batch: batch, weights: weights)
                p.pointee = saved - step
                let minus = objective(graph, batch: batch, weights: weights)
                p.pointee = saved
                let numeric = (plus - minus) / (2 * Double(step))
                let analytic = Double(store.gradient(tensor)[element])
                let error = abs(analytic - numeric) / (max(abs(numeric), abs(analytic)) + noiseFloor)
                errors.append((error, "\(tensor.name)[\(element)]: backward \(analytic), finite difference \(numeric)"))
            }
        }
        let sorted = errors.sorted { $0.0 < $1.0 }
        let label = "k=\(k) batchStatistics=\(batchStatistics)"
        XCTAssertGreaterThan(errors.count, 60, file: file, line: line)
        XCTAssertLessThan(sorted[sorted.count / 2].0, batchStatistics ? 0.02 : 0.01, "\(label): median error; worst \(sorted.last!.1)", file: file, line: line)
        let misses = sorted.filter { $0.0 > 0.1 }
        XCTAssertLessThanOrEqual(misses.count, errors.count / 10, "\(label): \(misses.map(\.1))", file: file, line: line)
        // Parameters next to the outputs see no kink between them and J.
        for (error, text) in errors where text.hasPrefix("decoder.outconv") || text.hasPrefix("projection") {
            XCTAssertLessThan(error, 5e-3, "\(label): \(text)", file: file, line: line)
        }
    }

    func testGradientsK2FixedBatchNorm() throws { try check(k: 2, batchStatistics: false) }
    func testGradientsK1FixedBatchNorm() throws { try check(k: 1, batchStatistics: false) }
    func testGradientsK2BatchStatistics() throws { try check(k: 2, batchStatistics: true) }
    func testGradientsK1BatchStatistics() throws { try check(k: 1, batchStatistics: true) }

    /// The Winograd forward against the direct one, on a graph wide enough
    /// (w=8: 8 to 64 channels) that every 3x3 same convolution past the
    /// first takes it.
    func testWinogradForwardMatchesDirect() throws {
        for k in [1, 2] {
            let graph = try StudentGraph(k: k, width: 8, channels: 3, inputFrames: 4, pairs: [("d8", 32)], maxBatch: 2,
                                         batchStatistics: false, threads: 2)
            graph.initialize(seed: 3)
            let batch = 2
            var random = SeededRandom(seed: 5)
            Self.fillInput(graph, batch: batch, &random)
            let outputs = [graph.prediction!] + graph.pairOutputs
            func run(_ winograd: Bool) -> [[Float]] {
                graph.winogradForward = winograd
                graph.forward(batch: batch)
                return outputs.map { map in
                    let p = graph.pointer(map, batch: batch)
                    return Array(UnsafeBufferPointer(start: p, count: map.channels * batch * map.size * map.size))
                }
            }
            let direct = run(false), winograd = run(true)
            for (d, w) in zip(direct, winograd) {
                XCTAssertNotEqual(d, w, "k=\(k): the Winograd path did not run")
                let scale = d.map { abs(Double($0)) }.max()!
                let worst = zip(d, w).map { abs(Double($0) - Double($1)) }.max()!
                XCTAssertLessThan(worst, 1e-5 * scale, "k=\(k): Winograd forward differs by \(worst) (scale \(scale))")
            }
        }
    }

    /// The published initialisation's statistics, per tensor kind.
    func testInitialisationFollowsThePublishedRecipe() throws {
        let graph = try StudentGraph(k: 2, width: 32, channels: 3, inputFrames: 4, pairs: [("d8", 64)], maxBatch: 1,
                                     batchStatistics: false, threads: 1)
        graph.initialize(seed: 1)
        let store = graph.store
        func values(_ name: String) -> [Double] {
            let t = store.parameters.first { $0.name == name }!
            return (0..<t.count).map { Double(store.value(t)[$0]) }
        }
        func meanStd(_ v: [Double]) -> (Double, Double) {
            let m = v.reduce(0, +) / Double(v.count)
            return (m, (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)).squareRoot())
        }
        // Kaiming normal, a = 0.1, fan_in = 64 * 9 for the 64->64 conv of down1... (width 32: 64 in, 64 out).
        let conv = meanStd(values("encoder.down1.mpconv.1.conv.3.weight"))
        let expected = (2.0 / 1.01).squareRoot() / (64.0 * 9).squareRoot()
        XCTAssertEqual(conv.0, 0, accuracy: 0.05 * expected)
        XCTAssertEqual(conv.1, expected, accuracy: 0.03 * expected)
        // Conv bias: uniform(+-1/sqrt(fan_in)) has std bound/sqrt(3).
        let bias = values("encoder.in_conv.conv.conv.0.bias")
        let bound = 1 / (12.0 * 9).squareRoot()
        XCTAssertTrue(bias.allSatisfy { abs($0) <= bound })
        // Transposed conv weight [256, 128, 3, 3]: PyTorch's fan_in is 128 * 9.
        let up = values("decoder.up1.up.weight")
        let upBound = 1 / (128.0 * 9).squareRoot()
        XCTAssertTrue(up.allSatisfy { abs($0) <= upBound })
        XCTAssertEqual(meanStd(up).1, upBound / 3.0.squareRoot(), accuracy: 0.03 * upBound)
        // BatchNorm: N(1, 0.02) and 0.
        let gamma = meanStd(values("decoder.up1.conv.conv.1.weight"))
        XCTAssertEqual(gamma.0, 1, accuracy: 0.01)
        XCTAssertTrue(values("decoder.up1.conv.conv.1.bias").allSatisfy { $0 == 0 })
        // The projection 64 <- 128 channels is a conv: Kaiming normal.
        XCTAssertEqual(meanStd(values("projection.0.weight")).1, (2.0 / 1.01).squareRoot() / 128.0.squareRoot(), accuracy: 0.1 * 0.125)
    }
}
