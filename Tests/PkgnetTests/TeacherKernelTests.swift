// pkk_pad2d, pkk_clamp and pkk_option_a_shortcut (pkk_teacher.h) against
// plain loops.
import XCTest
import PkgnetKernels

final class TeacherKernelTests: KernelTestCase {
    func testPad2D() {
        // (c, batch, h, w, top, bottom, left, right); the large case is
        // big enough to run on OpenMP threads.
        let cases = [(2, 3, 5, 4, 0, 1, 0, 1), (1, 2, 4, 4, 1, 2, 1, 2), (3, 1, 3, 6, 2, 0, 0, 3),
                     (2, 2, 4, 4, 0, 0, 0, 0), (96, 16, 16, 16, 0, 1, 0, 1)]
        var rng = KernelRNG(seed: 21)
        for (c, batch, h, w, top, bottom, left, right) in cases {
            let x = rng.floats(c * batch * h * w)
            let ho = h + top + bottom, wo = w + left + right
            var y = [Float](repeating: .nan, count: c * batch * ho * wo)
            pkk_pad2d(x, Int32(c), Int32(batch), Int32(h), Int32(w), Int32(top), Int32(bottom), Int32(left), Int32(right), &y)
            var expected = [Float](repeating: 0, count: y.count)
            for p in 0..<(c * batch) {
                for i in 0..<h {
                    for j in 0..<w { expected[(p * ho + top + i) * wo + left + j] = x[(p * h + i) * w + j] }
                }
            }
            XCTAssertEqual(y, expected, "pad c\(c) b\(batch) \(h)x\(w) t\(top) b\(bottom) l\(left) r\(right)")
        }
    }

    func testClamp() {
        var rng = KernelRNG(seed: 22)
        for n in [0, 1, 7, 100_000] {
            let x = rng.floats(n, -10, 10)
            var y = x
            pkk_clamp(&y, n, 0, 6)
            XCTAssertEqual(y, x.map { min(max($0, 0), 6) }, "relu6 of \(n)")
            var z = x
            pkk_clamp(&z, n, -.infinity, 1.5)
            XCTAssertEqual(z, x.map { min($0, 1.5) }, "upper bound only, \(n)")
        }
        var special: [Float] = [.nan, .infinity, -.infinity, -0.0, 6, 6.5]
        pkk_clamp(&special, special.count, 0, 6)
        XCTAssertTrue(special[0].isNaN)
        XCTAssertEqual(Array(special[1...]), [6, 0, 0, 6, 6])
    }

    func testOptionAShortcut() {
        // (cin, batch, h, w, padChannels): the CIFAR ResNets' 16 -> 32 at
        // 32x32 and 32 -> 64 at 16x16, and odd sides.
        let cases = [(16, 4, 32, 32, 8), (32, 3, 16, 16, 16), (3, 2, 5, 7, 1), (2, 1, 4, 4, 0)]
        var rng = KernelRNG(seed: 23)
        for (cin, batch, h, w, pad) in cases {
            let x = rng.floats(cin * batch * h * w)
            let cout = cin + 2 * pad, ho = (h + 1) / 2, wo = (w + 1) / 2
            var y = [Float](repeating: .nan, count: cout * batch * ho * wo)
            pkk_option_a_shortcut(x, Int32(cin), Int32(batch), Int32(h), Int32(w), Int32(pad), &y)
            var expected = [Float](repeating: 0, count: y.count)
            for c in 0..<cin {
                for b in 0..<batch {
                    for i in 0..<ho {
                        for j in 0..<wo {
                            expected[(((pad + c) * batch + b) * ho + i) * wo + j] = x[((c * batch + b) * h + 2 * i) * w + 2 * j]
                        }
                    }
                }
            }
            XCTAssertEqual(y, expected, "option A cin\(cin) b\(batch) \(h)x\(w) pad\(pad)")
        }
    }
}
