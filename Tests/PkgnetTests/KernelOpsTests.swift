// maxpool, cube unpacking, teacher input, non-finite detection.
import XCTest
import PkgnetKernels

final class KernelOpsTests: KernelTestCase {
    private func referenceMaxPool(_ x: [Float], c: Int, batch: Int, h: Int, w: Int,
                                  kernel: Int, stride: Int, pad: Int) -> [Double] {
        let ho = (h + 2 * pad - kernel) / stride + 1, wo = (w + 2 * pad - kernel) / stride + 1
        var y = [Double]()
        for p in 0..<(c * batch) {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var m = -Double.infinity
                    for ky in 0..<kernel {
                        for kx in 0..<kernel {
                            let iy = oy * stride - pad + ky, ix = ox * stride - pad + kx
                            if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                m = max(m, Double(x[(p * h + iy) * w + ix]))
                            }
                        }
                    }
                    y.append(m)
                }
            }
        }
        return y
    }

    func testMaxPool() {
        // (c, batch, h, w, kernel, stride, pad)
        let cases = [(3, 2, 8, 6, 2, 2, 0), (2, 3, 7, 9, 2, 2, 0), (3, 2, 9, 8, 3, 2, 1),
                     (2, 1, 16, 16, 3, 2, 1), (1, 3, 5, 5, 3, 2, 1), (16, 4, 32, 32, 2, 2, 0),
                     (16, 4, 32, 32, 3, 2, 1)]
        var rng = KernelRNG(seed: 7)
        for (c, batch, h, w, k, s, p) in cases {
            let x = rng.floats(c * batch * h * w, -5, 5)
            let ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1
            var y = [Float](repeating: .nan, count: c * batch * ho * wo)
            pkk_maxpool2d(x, Int32(c), Int32(batch), Int32(h), Int32(w), Int32(k), Int32(s), Int32(p), &y)
            let expected = referenceMaxPool(x, c: c, batch: batch, h: h, w: w, kernel: k, stride: s, pad: p)
            // max is exact: no tolerance
            XCTAssertEqual(y.map(Double.init), expected, "maxpool c\(c) b\(batch) \(h)x\(w) k\(k) s\(s) p\(p)")
        }
    }

    func testMaxPoolNegativeInputsIgnorePadding() {
        // All inputs negative: padding must act as -inf, not 0.
        let x = [Float](repeating: -3, count: 2 * 5 * 5)
        var y = [Float](repeating: 0, count: 2 * 3 * 3)
        pkk_maxpool2d(x, 2, 1, 5, 5, 3, 2, 1, &y)
        XCTAssertEqual(y, [Float](repeating: -3, count: 18))
    }

    func testMaxPoolPropagatesNaN() {
        var x = [Float](repeating: 1, count: 4 * 4)
        x[5] = .nan  // (1, 1): window (0, 0) of the 2x2 pool
        var y = [Float](repeating: 0, count: 4)
        pkk_maxpool2d(x, 1, 1, 4, 4, 2, 2, 0, &y)
        XCTAssertTrue(y[0].isNaN)
        XCTAssertEqual(Array(y[1...]), [1, 1, 1])
    }

    func testUnpackU8() {
        var rng = KernelRNG(seed: 11)
        for channels in [3, 1] {
            let n = 3
            let cubes = rng.bytes(n * 5 * 32 * 32 * channels)
            for (first, frames) in [(0, 4), (4, 1), (0, 5), (1, 3)] {
                var dst = [Float](repeating: .nan, count: frames * channels * n * 1024)
                pkk_unpack_u8_cubes(cubes, Int32(n), Int32(channels), Int32(first), Int32(frames), &dst)
                var expected = [Float](repeating: 0, count: dst.count)
                for f in 0..<frames {
                    for c in 0..<channels {
                        for i in 0..<n {
                            for p in 0..<1024 {
                                let v = cubes[((i * 5 + first + f) * 1024 + p) * channels + c]
                                expected[((f * channels + c) * n + i) * 1024 + p] = Float(v) / 255
                            }
                        }
                    }
                }
                // Same IEEE division on both sides: exact.
                XCTAssertEqual(dst, expected, "unpack u8 channels \(channels) first \(first) frames \(frames)")
            }
        }
        // spot check of the scaling itself
        var dst = [Float](repeating: 0, count: 1024)
        var cube = [UInt8](repeating: 0, count: 5 * 1024)
        cube[4 * 1024 + 10] = 255
        cube[4 * 1024 + 11] = 51
        pkk_unpack_u8_cubes(cube, 1, 1, 4, 1, &dst)
        XCTAssertEqual(dst[10], 1)
        XCTAssertEqual(dst[11], 0.2, accuracy: 1e-7)
        XCTAssertEqual(dst[12], 0)
    }

    func testUnpackF32() {
        var rng = KernelRNG(seed: 12)
        for channels in [3, 1] {
            let n = 3
            let cubes = rng.floats(n * 5 * channels * 1024, 0, 1)
            for (first, frames) in [(0, 4), (4, 1), (2, 3)] {
                var dst = [Float](repeating: .nan, count: frames * channels * n * 1024)
                pkk_unpack_f32_cubes(cubes, Int32(n), Int32(channels), Int32(first), Int32(frames), &dst)
                var expected = [Float](repeating: 0, count: dst.count)
                for f in 0..<frames {
                    for c in 0..<channels {
                        for i in 0..<n {
                            for p in 0..<1024 {
                                expected[((f * channels + c) * n + i) * 1024 + p] =
                                    cubes[((i * 5 + first + f) * channels + c) * 1024 + p]
                            }
                        }
                    }
                }
                XCTAssertEqual(dst, expected, "unpack f32 channels \(channels) first \(first) frames \(frames)")
            }
        }
    }

    func testTeacherInput() {
        var rng = KernelRNG(seed: 13)
        let plane = 2 * 1024 + 0
        let src = rng.floats(5 * plane, 0, 1)
        let mean: [Float] = [0.485, 0.456, 0.406]
        let std: [Float] = [0.229, 0.224, 0.225]
        // colour with a channel swap (bgr -> rgb), and grey replicated to 3 channels
        for sources: [Int32] in [[2, 1, 0], [4, 4, 4], [0, 1, 2]] {
            var dst = [Float](repeating: .nan, count: 3 * plane)
            pkk_teacher_input(src, plane, sources, mean, std, &dst)
            var expected = [Double]()
            for i in 0..<3 {
                for p in 0..<plane {
                    expected.append((Double(src[Int(sources[i]) * plane + p]) - Double(mean[i])) / Double(std[i]))
                }
            }
            assertClose(dst, expected, rel: 1e-6, "teacher input \(sources)")
        }
    }

    func testFirstNonfinite() {
        var x = [Float](repeating: 0.5, count: 10_000)
        XCTAssertEqual(pkk_first_nonfinite(x, x.count), -1)
        XCTAssertEqual(pkk_first_nonfinite(x, 0), -1)
        x[7_000] = .infinity
        XCTAssertEqual(pkk_first_nonfinite(x, x.count), 7_000)
        x[256] = .nan  // first element of the second block
        XCTAssertEqual(pkk_first_nonfinite(x, x.count), 256)
        XCTAssertEqual(pkk_first_nonfinite(x, 256), -1)  // n limits the scan
        x[3] = -.infinity
        XCTAssertEqual(pkk_first_nonfinite(x, x.count), 3)
        var tail = [Float](repeating: -1e38, count: 7)
        tail[6] = Float(bitPattern: 0x7FC0_0001)  // a NaN with payload, in a short tail
        XCTAssertEqual(pkk_first_nonfinite(tail, tail.count), 6)
        XCTAssertEqual(pkk_first_nonfinite([.greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                                            .leastNonzeroMagnitude], 3), -1)
    }
}
