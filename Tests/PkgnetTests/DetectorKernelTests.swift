// The detector's C kernels (detect.c) against plain loops.
import XCTest
import PkgnetKernels

final class DetectorKernelTests: KernelTestCase {
    // MARK: network input

    /// OpenCV's INTER_LINEAR weights along one axis, written out per output index.
    private func axis(_ n: Int, _ d: Int, clamp: Bool) -> [(i0: Int, i1: Int, w0: Int, w1: Int)] {
        (0..<d).map { k in
            var f = Float((Double(k) + 0.5) * (1.0 / (Double(d) / Double(n))) - 0.5)
            var s = Int(f.rounded(.down))
            f -= Float(s)
            if clamp && s < 0 { s = 0; f = 0 }
            if clamp && s >= n - 1 { s = n - 1; f = 0 }
            return (min(max(s, 0), n - 1), min(max(s + 1, 0), n - 1),
                    Int(((1 - f) * 2048).rounded(.toNearestOrEven)), Int((f * 2048).rounded(.toNearestOrEven)))
        }
    }

    /// The network input pixel by pixel: resize as cv2.resize, then RGB planes / 255.
    private func naiveInput(_ src: [UInt8], width: Int, height: Int, channels: Int, stride: Int, map: [Int],
                            dw: Int, dh: Int) -> [Float] {
        let xs = axis(width, dw, clamp: true), ys = axis(height, dh, clamp: false)
        var out = [Float](repeating: 0, count: 3 * dw * dh)
        for y in 0..<dh {
            for x in 0..<dw {
                for c in 0..<3 {
                    func pixel(_ row: Int, _ col: Int) -> Int { Int(src[row * stride + col * channels + map[c]]) }
                    let h0 = pixel(ys[y].i0, xs[x].i0) * xs[x].w0 + pixel(ys[y].i0, xs[x].i1) * xs[x].w1
                    let h1 = pixel(ys[y].i1, xs[x].i0) * xs[x].w0 + pixel(ys[y].i1, xs[x].i1) * xs[x].w1
                    let v = (((h0 >> 4) * ys[y].w0) >> 16) + (((h1 >> 4) * ys[y].w1) >> 16)
                    out[c * dw * dh + y * dw + x] = Float(min(max((v + 2) >> 2, 0), 255)) * Float(1.0 / 255.0)
                }
            }
        }
        return out
    }

    private func input(_ src: [UInt8], width: Int, height: Int, channels: Int, stride: Int, map: [Int32],
                       dw: Int, dh: Int) -> [Float] {
        var out = [Float](repeating: -1, count: 3 * dw * dh)
        XCTAssertEqual(pkk_detector_input(src, stride, Int32(width), Int32(height), Int32(channels), map,
                                          Int32(dw), Int32(dh), &out), 0)
        return out
    }

    func testInputMatchesNaiveResize() {
        var rng = KernelRNG(seed: 1)
        // Down, up, mixed, odd sizes, padded rows, grey and both colour orders.
        let cases: [(w: Int, h: Int, c: Int, pad: Int, map: [Int32], dw: Int, dh: Int)] = [
            (360, 240, 3, 0, [2, 1, 0], 320, 320), (97, 55, 3, 5, [0, 1, 2], 37, 91),
            (33, 20, 1, 3, [0, 0, 0], 64, 48), (1, 1, 3, 0, [2, 1, 0], 8, 8), (50, 40, 3, 1, [2, 1, 0], 1, 3),
        ]
        for t in cases {
            let stride = t.w * t.c + t.pad
            let src = rng.bytes(stride * t.h)
            let got = input(src, width: t.w, height: t.h, channels: t.c, stride: stride, map: t.map, dw: t.dw, dh: t.dh)
            let want = naiveInput(src, width: t.w, height: t.h, channels: t.c, stride: stride, map: t.map.map(Int.init),
                                  dw: t.dw, dh: t.dh)
            XCTAssertEqual(got, want, "\(t.w)x\(t.h)x\(t.c) -> \(t.dw)x\(t.dh)")
        }
    }

    /// Facts of cv2.resize that hold whatever the fixed point: the same size
    /// copies, an exact halving averages 2x2 blocks rounding half up.
    func testInputSameSizeAndHalving() {
        var rng = KernelRNG(seed: 2)
        let src = rng.bytes(16 * 12 * 3)
        let same = input(src, width: 16, height: 12, channels: 3, stride: 48, map: [2, 1, 0], dw: 16, dh: 12)
        let half = input(src, width: 16, height: 12, channels: 3, stride: 48, map: [2, 1, 0], dw: 8, dh: 6)
        for c in 0..<3 {
            for y in 0..<12 {
                for x in 0..<16 {
                    XCTAssertEqual(same[c * 192 + y * 16 + x], Float(src[y * 48 + x * 3 + 2 - c]) * Float(1.0 / 255.0))
                }
            }
            for y in 0..<6 {
                for x in 0..<8 {
                    func p(_ dy: Int, _ dx: Int) -> Int { Int(src[(2 * y + dy) * 48 + (2 * x + dx) * 3 + 2 - c]) }
                    let mean = (p(0, 0) + p(0, 1) + p(1, 0) + p(1, 1) + 2) >> 2
                    XCTAssertEqual(half[c * 48 + y * 8 + x], Float(mean) * Float(1.0 / 255.0), "plane \(c) (\(x), \(y))")
                }
            }
        }
    }

    // MARK: element-wise kernels

    func testActivations() {
        var rng = KernelRNG(seed: 3)
        let x = rng.floats(100_003, -10, 10) + [0, -0.0, 6, 7, -1e-30]
        let kinds: [(Int32, (Float) -> Double)] = [
            (Int32(PKK_ACT_RELU), { Double(max($0, 0)) }),
            (Int32(PKK_ACT_LEAKY), { $0 > 0 ? Double($0) : 0.1 * Double($0) }),
            (Int32(PKK_ACT_RELU6), { Double(min(max($0, 0), 6)) }),
            (Int32(PKK_ACT_LOGISTIC), { 1 / (1 + exp(-Double($0))) }),
            (0, { Double($0) }),
        ]
        for (kind, f) in kinds {
            var y = x
            pkk_activate(&y, y.count, kind)
            assertClose(y, x.map(f), rel: 1e-6, floor: 1e-6, "activation \(kind)")
        }
    }

    func testAddAndUpsample() {
        var rng = KernelRNG(seed: 4)
        let a = rng.floats(70_001), b = rng.floats(70_001)
        var y = [Float](repeating: 0, count: a.count)
        pkk_add(a, b, a.count, &y)
        XCTAssertEqual(y, zip(a, b).map { $0 + $1 })

        for (planes, h, w, s) in [(3, 5, 7, 2), (64, 10, 10, 2), (2, 3, 4, 3), (1, 1, 1, 1)] {
            let x = rng.floats(planes * h * w)
            var up = [Float](repeating: .nan, count: planes * h * s * w * s)
            pkk_upsample_nearest(x, planes, Int32(h), Int32(w), Int32(s), &up)
            var want: [Float] = []
            for p in 0..<planes {
                for i in 0..<(h * s) {
                    for j in 0..<(w * s) { want.append(x[p * h * w + (i / s) * w + j / s]) }
                }
            }
            XCTAssertEqual(up, want, "\(planes)x\(h)x\(w) by \(s)")
        }
    }

    // MARK: depthwise convolution

    func testDepthwiseMatchesNaive() {
        var rng = KernelRNG(seed: 5)
        // Rows wider and narrower than a register block, strides 1-3, padding 0-2.
        let cases: [(c: Int, h: Int, w: Int, k: Int, s: Int, p: Int, act: Int32)] = [
            (8, 40, 41, 3, 1, 1, Int32(PKK_ACT_LEAKY)), (5, 33, 37, 3, 2, 1, 0), (96, 10, 10, 5, 1, 1, Int32(PKK_ACT_LEAKY)),
            (3, 9, 50, 5, 1, 2, Int32(PKK_ACT_RELU6)), (4, 7, 7, 3, 3, 0, Int32(PKK_ACT_RELU)), (2, 2, 3, 5, 1, 2, 0),
            (6, 20, 17, 1, 1, 0, Int32(PKK_ACT_LOGISTIC)),
        ]
        for t in cases {
            let x = rng.floats(t.c * t.h * t.w), weight = rng.floats(t.c * t.k * t.k), bias = rng.floats(t.c)
            let ho = (t.h + 2 * t.p - t.k) / t.s + 1, wo = (t.w + 2 * t.p - t.k) / t.s + 1
            var y = [Float](repeating: .nan, count: t.c * ho * wo)
            pkk_depthwise_conv2d(x, Int32(t.c), Int32(t.h), Int32(t.w), weight, bias, Int32(t.k), Int32(t.s), Int32(t.p), t.act, &y)
            var want: [Double] = []
            for c in 0..<t.c {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        var v = Double(bias[c])
                        for ky in 0..<t.k {
                            for kx in 0..<t.k {
                                let iy = oy * t.s - t.p + ky, ix = ox * t.s - t.p + kx
                                guard iy >= 0, iy < t.h, ix >= 0, ix < t.w else { continue }
                                v += Double(weight[(c * t.k + ky) * t.k + kx]) * Double(x[(c * t.h + iy) * t.w + ix])
                            }
                        }
                        switch t.act {
                        case Int32(PKK_ACT_LEAKY): v = v > 0 ? v : 0.1 * v
                        case Int32(PKK_ACT_RELU): v = max(v, 0)
                        case Int32(PKK_ACT_RELU6): v = min(max(v, 0), 6)
                        case Int32(PKK_ACT_LOGISTIC): v = 1 / (1 + exp(-v))
                        default: break
                        }
                        want.append(v)
                    }
                }
            }
            assertClose(y, want, rel: 1e-5, "depthwise \(t)")
        }
    }

    // MARK: yolo decoding

    func testYoloDecodeMatchesNaive() {
        var rng = KernelRNG(seed: 6)
        let anchors = 3, classes = 7, h = 4, w = 5, cell = 5 + classes
        let x = rng.floats(anchors * cell * h * w, -4, 4)
        let anchorWH: [Float] = [10, 14, 23, 27, 37, 58]
        let keep: [UInt8] = [1, 0, 1, 1, 0, 1, 1]
        for (threshold, scaleXY) in [(Float(0.2), Float(1)), (0, 1.05), (0.9, 2)] {
            var out = [Float](repeating: .nan, count: 6 * anchors * h * w)
            let n = pkk_yolo_decode(x, Int32(anchors), Int32(classes), Int32(h), Int32(w), anchorWH, 320, 256,
                                    scaleXY, threshold, keep, &out)
            func sigmoid(_ v: Float) -> Double { 1 / (1 + exp(-Double(v))) }
            var want: [Double] = []
            for gy in 0..<h {
                for gx in 0..<w {
                    for a in 0..<anchors {
                        func t(_ k: Int) -> Float { x[((a * cell + k) * h + gy) * w + gx] }
                        let objectness = sigmoid(t(4))
                        var best = -1
                        var bestConfidence = 0.0
                        for c in 0..<classes where keep[c] != 0 {
                            let confidence = objectness * sigmoid(t(5 + c))
                            if best < 0 || confidence > bestConfidence { (best, bestConfidence) = (c, confidence) }
                        }
                        guard bestConfidence > Double(threshold) else { continue }
                        want += [(Double(gx) + (sigmoid(t(0)) - 0.5) * Double(scaleXY) + 0.5) / Double(w),
                                 (Double(gy) + (sigmoid(t(1)) - 0.5) * Double(scaleXY) + 0.5) / Double(h),
                                 exp(Double(t(2))) * Double(anchorWH[2 * a]) / 320,
                                 exp(Double(t(3))) * Double(anchorWH[2 * a + 1]) / 256,
                                 bestConfidence, Double(best)]
                    }
                }
            }
            XCTAssertEqual(n * 6, want.count, "candidates at threshold \(threshold)")
            assertClose(Array(out.prefix(Int(n) * 6)), want, rel: 1e-5, floor: 1e-3, "decode at threshold \(threshold)")
        }
    }
}
