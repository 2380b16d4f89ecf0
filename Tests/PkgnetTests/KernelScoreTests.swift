// prediction error and inconsistency against Double references, and their
// independence of the thread count.
import XCTest
import PkgnetKernels

private func referencePredictionError(_ pred: [Float], _ target: [Float], c: Int, batch: Int, hw: Int)
    -> (error: [Double], map: [Double]) {
    var error = [Double](repeating: 0, count: batch)
    var map = [Double](repeating: 0, count: batch * hw)
    for b in 0..<batch {
        for p in 0..<hw {
            var s = 0.0
            for k in 0..<c {
                let i = (k * batch + b) * hw + p
                let d = Double(pred[i]) - Double(target[i])
                s += d * d
            }
            map[b * hw + p] = s / Double(c)
            error[b] += s
        }
        error[b] /= Double(c * hw)
    }
    return (error, map)
}

private func referenceInconsistency(_ s: [Float], _ t: [Float], c: Int, batch: Int, hw: Int)
    -> (score: [Double], map: [Double]) {
    var score = [Double](repeating: 0, count: batch)
    var map = [Double](repeating: 0, count: batch * hw)
    for b in 0..<batch {
        for p in 0..<hw {
            var dot = 0.0, ss = 0.0, tt = 0.0
            for k in 0..<c {
                let i = (k * batch + b) * hw + p
                dot += Double(s[i]) * Double(t[i])
                ss += Double(s[i]) * Double(s[i])
                tt += Double(t[i]) * Double(t[i])
            }
            let cos = dot / (max(ss.squareRoot(), 1e-8) * max(tt.squareRoot(), 1e-8))
            map[b * hw + p] = 1 - cos
            score[b] += 1 - cos
        }
        score[b] /= Double(hw)
    }
    return (score, map)
}

final class KernelScoreTests: KernelTestCase {
    func testPredictionError() {
        var rng = KernelRNG(seed: 21)
        for (c, batch, hw) in [(3, 4, 1024), (1, 3, 1024), (5, 1, 7)] {
            let pred = rng.floats(c * batch * hw, 0, 1)
            var target = rng.floats(c * batch * hw, 0, 1)
            // cube 0 predicted perfectly: exactly zero
            for k in 0..<c { for p in 0..<hw { target[(k * batch) * hw + p] = pred[(k * batch) * hw + p] } }
            let ref = referencePredictionError(pred, target, c: c, batch: batch, hw: hw)
            var error = [Float](repeating: .nan, count: batch)
            var map = [Float](repeating: .nan, count: batch * hw)
            pkk_prediction_error(pred, target, Int32(c), Int32(batch), Int32(hw), &error, &map)
            assertClose(error, ref.error, rel: 1e-6, floor: 1e-30, "prediction error c\(c) b\(batch)")
            assertClose(map, ref.map, rel: 1e-6, floor: 1e-30, "error map c\(c) b\(batch)")
            XCTAssertEqual(error[0], 0)
            var error2 = [Float](repeating: .nan, count: batch)
            pkk_prediction_error(pred, target, Int32(c), Int32(batch), Int32(hw), &error2, nil)
            XCTAssertEqual(error2, error, "without a map")
        }
    }

    func testInconsistency() {
        var rng = KernelRNG(seed: 22)
        for (c, batch, hw) in [(37, 3, 16), (64, 2, 64), (5, 1, 1)] {
            var s = rng.floats(c * batch * hw)
            var t = rng.floats(c * batch * hw)
            if batch >= 2 && hw >= 8 {
                // zero student vector at (cube 1, position 5): eps clamp, cos = 0
                for k in 0..<c { s[(k * batch + 1) * hw + 5] = 0 }
                // both zero at (cube 0, position 2)
                for k in 0..<c { s[(k * batch) * hw + 2] = 0; t[(k * batch) * hw + 2] = 0 }
                // identical vectors at (cube 0, position 3): cos = 1
                for k in 0..<c { t[(k * batch) * hw + 3] = s[(k * batch) * hw + 3] }
                // a student vector parallel to the teacher's but with norm far below
                // 1e-8 at (cube 1, position 6): the clamp makes cos = |s| / 1e-8, not 1
                for k in 0..<c { s[(k * batch + 1) * hw + 6] = t[(k * batch + 1) * hw + 6] * 1e-12 }
            }
            let ref = referenceInconsistency(s, t, c: c, batch: batch, hw: hw)
            var score = [Float](repeating: .nan, count: batch)
            var map = [Float](repeating: .nan, count: batch * hw)
            pkk_inconsistency(s, t, Int32(c), Int32(batch), Int32(hw), &score, &map)
            assertClose(score, ref.score, rel: 1e-6, "inconsistency c\(c) b\(batch) hw\(hw)")
            assertClose(map, ref.map, rel: 1e-6, "inconsistency map c\(c) b\(batch) hw\(hw)")
            if batch >= 2 && hw >= 8 {
                XCTAssertEqual(map[hw + 5], 1, "zero vector: eps clamp gives cos 0")
                XCTAssertEqual(map[2], 1, "both zero")
                XCTAssertEqual(map[3], 0, accuracy: 1e-6, "identical vectors")
                XCTAssertGreaterThan(map[hw + 6], 0.9, "tiny vector: the eps clamp dominates")
            }
            var score2 = [Float](repeating: .nan, count: batch)
            pkk_inconsistency(s, t, Int32(c), Int32(batch), Int32(hw), &score2, nil)
            XCTAssertEqual(score2, score, "without a map")
        }
    }

    func testScoresDoNotDependOnThreadCount() {
        // Large enough for the parallel paths (and for a thread-count-dependent
        // reduction to show up in the last bits).
        var rng = KernelRNG(seed: 23)
        let (c, batch, hw) = (3, 17, 1024)
        let pred = rng.floats(c * batch * hw, 0, 1)
        let target = rng.floats(c * batch * hw, 0, 1)
        let (fc, fb, fhw) = (256, 9, 64)
        let s = rng.floats(fc * fb * fhw)
        let t = rng.floats(fc * fb * fhw)

        func scores(threads: Int32) -> [UInt32] {
            pkk_set_threads(threads)
            var error = [Float](repeating: 0, count: batch)
            var emap = [Float](repeating: 0, count: batch * hw)
            var score = [Float](repeating: 0, count: fb)
            var imap = [Float](repeating: 0, count: fb * fhw)
            pkk_prediction_error(pred, target, Int32(c), Int32(batch), Int32(hw), &error, &emap)
            pkk_inconsistency(s, t, Int32(fc), Int32(fb), Int32(fhw), &score, &imap)
            return (error + emap + score + imap).map(\.bitPattern)
        }
        let one = scores(threads: 1)
        let two = scores(threads: 2)
        let four = scores(threads: 4)
        pkk_set_threads(0)
        XCTAssertEqual(one, two, "1 vs 2 threads")
        XCTAssertEqual(one, four, "1 vs 4 threads")
        // and the values are right, not merely equal
        let ref = referencePredictionError(pred, target, c: c, batch: batch, hw: hw)
        assertClose(Array(one[0..<batch]).map(Float.init(bitPattern:)), ref.error, rel: 1e-6, "error")
        let iref = referenceInconsistency(s, t, c: fc, batch: fb, hw: fhw)
        let base = batch + batch * hw
        assertClose(Array(one[base..<(base + fb)]).map(Float.init(bitPattern:)), iref.score, rel: 1e-6, "score")
    }
}
