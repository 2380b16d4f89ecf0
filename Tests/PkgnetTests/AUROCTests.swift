import Foundation
import XCTest
@testable import PkgnetCore

/// areaUnderROC against counting every (positive, negative) pair, and
/// against sklearn.metrics.roc_auc_score.
final class AUROCTests: XCTestCase {
    /// P(positive > negative) + P(tie) / 2 over all pairs: O(P N), no ranks.
    private func pairCounting(_ scores: [Double], _ labels: [Bool]) -> Double {
        var wins = 0.0, pairs = 0.0
        for i in scores.indices where labels[i] {
            for j in scores.indices where !labels[j] {
                pairs += 1
                if scores[i] > scores[j] { wins += 1 } else if scores[i] == scores[j] { wins += 0.5 }
            }
        }
        return wins / pairs
    }

    private func randomCase<G: RandomNumberGenerator>(_ rng: inout G) -> ([Double], [Bool]) {
        let n = Int.random(in: 2...150, using: &rng)
        let levels = [2, 3, 5, 20, 1_000_000].randomElement(using: &rng)!
        let positiveRate = Double.random(in: 0.05...0.95, using: &rng)
        var labels = (0..<n).map { _ in Double.random(in: 0..<1, using: &rng) < positiveRate }
        labels[0] = true
        labels[1] = false
        // Positives a little higher on average so areas spread over (0, 1).
        let scores = labels.map { positive in
            Double(Int.random(in: 0..<levels, using: &rng) + (positive ? levels / 4 : 0)) * 0.25 - 3
        }
        return (scores, labels)
    }

    func testMatchesPairCountingWithManyTies() {
        var rng = VideoRNG(seed: 11)
        for _ in 0..<1500 {
            let (scores, labels) = randomCase(&rng)
            let got = areaUnderROC(scores: scores, labels: labels)
            XCTAssertNotNil(got)
            XCTAssertEqual(got ?? -1, pairCounting(scores, labels), accuracy: 1e-12, "scores \(scores) labels \(labels)")
        }
    }

    func testKnownValues() {
        XCTAssertEqual(areaUnderROC(scores: [0.1, 0.2, 0.8, 0.9], labels: [false, false, true, true]), 1)
        XCTAssertEqual(areaUnderROC(scores: [0.1, 0.2, 0.8, 0.9], labels: [true, true, false, false]), 0)
        XCTAssertEqual(areaUnderROC(scores: [5, 5, 5, 5, 5], labels: [true, false, true, false, false]), 0.5)
        // sklearn's docstring example: 0.75.
        XCTAssertEqual(areaUnderROC(scores: [0.1, 0.4, 0.35, 0.8], labels: [false, false, true, true]), 0.75)
        // One tie across the classes is worth half a pair: (3 + 0.5) / 4.
        XCTAssertEqual(areaUnderROC(scores: [1, 2, 2, 3], labels: [false, false, true, true]), 0.875)
    }

    func testUndefinedCasesAreNil() {
        XCTAssertNil(areaUnderROC(scores: [], labels: []))
        XCTAssertNil(areaUnderROC(scores: [1, 2, 3], labels: [true, true, true]))
        XCTAssertNil(areaUnderROC(scores: [1, 2, 3], labels: [false, false, false]))
        XCTAssertNil(areaUnderROC(scores: [1, 2], labels: [true, false, true]), "lengths differ")
        XCTAssertNil(areaUnderROC(scores: [1, .nan, 3], labels: [true, false, true]))
        XCTAssertNil(areaUnderROC(scores: [1, .infinity, 3], labels: [true, false, true]))
        XCTAssertNil(areaUnderROC(scores: [1, -.infinity, 3], labels: [true, false, true]))
    }

    /// sklearn.metrics.roc_auc_score on fixed random data with many ties.
    func testMatchesSklearn() throws {
        var rng = VideoRNG(seed: 12)
        var cases = (0..<40).map { _ in randomCase(&rng) }
        // A long one with a few levels: the real situation of frame scores.
        let labels = (0..<5000).map { i in (i / 300) % 3 == 0 }
        cases.append(((0..<5000).map { i in Double((i * 7919) % 13) + (labels[i] ? 2 : 0) }, labels))
        let folder = Fixtures.scratch.appendingPathComponent("auroc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (i, c) in cases.enumerated() {
            try c.0.withUnsafeBytes { Data($0) }.write(to: folder.appendingPathComponent("scores\(i).f64"))
            try Data(c.1.map { $0 ? 1 : 0 }).write(to: folder.appendingPathComponent("labels\(i).u8"))
        }
        try Fixtures.python(["-c", """
            import numpy as np
            from sklearn.metrics import roc_auc_score
            folder = '\(folder.path)'
            out = [roc_auc_score(np.fromfile(f'{folder}/labels{i}.u8', dtype=np.uint8),
                                 np.fromfile(f'{folder}/scores{i}.f64', dtype='<f8')) for i in range(\(cases.count))]
            np.array(out, dtype='<f8').tofile(f'{folder}/auc.f64')
            """])
        let data = try Data(contentsOf: folder.appendingPathComponent("auc.f64"))
        let want = data.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        XCTAssertEqual(want.count, cases.count)
        for (i, c) in cases.enumerated() where i < want.count {
            XCTAssertEqual(areaUnderROC(scores: c.0, labels: c.1) ?? -1, want[i], accuracy: 1e-12, "case \(i)")
        }
    }
}
