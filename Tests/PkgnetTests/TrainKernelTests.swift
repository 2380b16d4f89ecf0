// Training kernels (pkk_train.h): every backward pass against central finite
// differences of a naive Double forward written here, losses against their
// formulas, Adam against a Double transcription of torch.optim.Adam, and the
// thread-count independence of the gradients.
//
// A backward pass is checked through the scalar J = <forward(inputs), R> with
// a random upstream gradient R: dJ/dinput is what the kernel computes from
// dy = R. Parameter gradients are pre-filled with random values (the kernels
// add to them) and input gradients either with NaN (overwrite) or random
// values (accumulate), so both contracts are checked too.
import XCTest
import PkgnetKernels

// MARK: - helpers

private func dotD(_ a: [Double], _ b: [Double]) -> Double {
    var s = 0.0
    for i in a.indices { s += a[i] * b[i] }
    return s
}

private func doubles(_ a: [Float]) -> [Double] { a.map { Double($0) } }

/// Central differences of f at v, one element at a time.
private func numericGradient(_ v: [Double], h: Double, _ f: ([Double]) -> Double) -> [Double] {
    var v = v
    var g = [Double](repeating: 0, count: v.count)
    for i in v.indices {
        let keep = v[i]
        v[i] = keep + h
        let up = f(v)
        v[i] = keep - h
        let down = f(v)
        v[i] = keep
        g[i] = (up - down) / (2 * h)
    }
    return g
}

/// Relative error against max(|expected|, 1% of the largest |expected|):
/// fp32 kernels against Double differences.
private func assertGradient(_ actual: [Float], _ expected: [Double], rel: Double = 1e-3, _ what: String,
                            file: StaticString = #filePath, line: UInt = #line) {
    let scale = expected.map { abs($0) }.max() ?? 0
    assertClose(actual, expected, rel: rel, floor: max(scale * 1e-2, 1e-12), what, file: file, line: line)
}

/// expected + the initial contents for accumulated outputs.
private func plus(_ expected: [Double], _ initial: [Float]?) -> [Double] {
    guard let initial else { return expected }
    return zip(expected, initial).map { $0 + Double($1) }
}

// MARK: - naive forwards

private struct ConvGeom: CustomStringConvertible {
    var cin: Int, cout: Int, batch: Int, h: Int, w: Int, kernel: Int, stride: Int, pad: Int
    var ho: Int { (h + 2 * pad - kernel) / stride + 1 }
    var wo: Int { (w + 2 * pad - kernel) / stride + 1 }
    var description: String { "cin \(cin) cout \(cout) b \(batch) \(h)x\(w) k\(kernel) s\(stride) p\(pad)" }
}

/// conv2d, groups 1, layouts of pkk_conv2d.
private func convForward(_ g: ConvGeom, _ x: [Double], _ wt: [Double], _ bias: [Double]) -> [Double] {
    let (ho, wo) = (g.ho, g.wo)
    var y = [Double](repeating: 0, count: g.cout * g.batch * ho * wo)
    for co in 0..<g.cout {
        for b in 0..<g.batch {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc = bias[co]
                    for ci in 0..<g.cin {
                        for ky in 0..<g.kernel {
                            let iy = oy * g.stride - g.pad + ky
                            if iy < 0 || iy >= g.h { continue }
                            for kx in 0..<g.kernel {
                                let ix = ox * g.stride - g.pad + kx
                                if ix < 0 || ix >= g.w { continue }
                                acc += wt[((co * g.cin + ci) * g.kernel + ky) * g.kernel + kx]
                                    * x[((ci * g.batch + b) * g.h + iy) * g.w + ix]
                            }
                        }
                    }
                    y[((co * g.batch + b) * ho + oy) * wo + ox] = acc
                }
            }
        }
    }
    return y
}

private struct DeconvGeom: CustomStringConvertible {
    var cin: Int, cout: Int, batch: Int, h: Int, w: Int, kernel: Int, stride: Int, pad: Int, outputPadding: Int
    var ho: Int { (h - 1) * stride - 2 * pad + kernel + outputPadding }
    var wo: Int { (w - 1) * stride - 2 * pad + kernel + outputPadding }
    var description: String {
        "cin \(cin) cout \(cout) b \(batch) \(h)x\(w) k\(kernel) s\(stride) p\(pad) op\(outputPadding)"
    }
}

/// PyTorch ConvTranspose2d as a scatter of every input element.
private func deconvForward(_ g: DeconvGeom, _ x: [Double], _ wt: [Double], _ bias: [Double]) -> [Double] {
    let (ho, wo) = (g.ho, g.wo)
    let plane = g.batch * ho * wo
    var y = [Double](repeating: 0, count: g.cout * plane)
    for co in 0..<g.cout { for i in 0..<plane { y[co * plane + i] = bias[co] } }
    for ci in 0..<g.cin {
        for b in 0..<g.batch {
            for iy in 0..<g.h {
                for ix in 0..<g.w {
                    let xv = x[((ci * g.batch + b) * g.h + iy) * g.w + ix]
                    for co in 0..<g.cout {
                        for ky in 0..<g.kernel {
                            let oy = iy * g.stride - g.pad + ky
                            if oy < 0 || oy >= ho { continue }
                            for kx in 0..<g.kernel {
                                let ox = ix * g.stride - g.pad + kx
                                if ox < 0 || ox >= wo { continue }
                                y[((co * g.batch + b) * ho + oy) * wo + ox] +=
                                    wt[((ci * g.cout + co) * g.kernel + ky) * g.kernel + kx] * xv
                            }
                        }
                    }
                }
            }
        }
    }
    return y
}

/// BatchNorm over [c][n]: with `stats` the given (mean, var), else the batch's.
private func batchNormForward(_ x: [Double], c: Int, n: Int, gamma: [Double], beta: [Double],
                              stats: (mean: [Double], variance: [Double])?, eps: Double) -> [Double] {
    var y = x
    for k in 0..<c {
        let row = x[(k * n)..<((k + 1) * n)]
        let mean: Double, variance: Double
        if let stats {
            (mean, variance) = (stats.mean[k], stats.variance[k])
        } else {
            mean = row.reduce(0, +) / Double(n)
            variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n)
        }
        for i in 0..<n { y[k * n + i] = gamma[k] * (x[k * n + i] - mean) / (variance + eps).squareRoot() + beta[k] }
    }
    return y
}

/// Max pooling with -inf padding (PyTorch floor mode).
private func maxPoolForward(_ x: [Double], planes: Int, h: Int, w: Int, kernel: Int, stride: Int, pad: Int) -> [Double] {
    let ho = (h + 2 * pad - kernel) / stride + 1, wo = (w + 2 * pad - kernel) / stride + 1
    var y = [Double](repeating: 0, count: planes * ho * wo)
    for p in 0..<planes {
        for oy in 0..<ho {
            for ox in 0..<wo {
                var m = -Double.infinity
                for iy in max(oy * stride - pad, 0)..<min(oy * stride - pad + kernel, h) {
                    for ix in max(ox * stride - pad, 0)..<min(ox * stride - pad + kernel, w) {
                        m = max(m, x[(p * h + iy) * w + ix])
                    }
                }
                y[(p * ho + oy) * wo + ox] = m
            }
        }
    }
    return y
}

/// The gradient loss as written in pkk_train.h.
private func gradientLossReference(_ p: [Double], _ t: [Double], c: Int, batch: Int, h: Int, w: Int,
                                   power: Double, paper: Bool) -> Double {
    let plane = h * w, ch = batch * plane
    func diffs(_ x: [Double], _ b: Int, _ i: Int, _ j: Int) -> (Double, Double) {
        var dx = 0.0, dy = 0.0
        for k in 0..<c {
            let at = k * ch + b * plane + i * w + j
            dx += x[at] - (j > 0 ? x[at - 1] : 0)
            dy += x[at] - (i > 0 ? x[at - w] : 0)
        }
        return (dx, dy)
    }
    var total = 0.0
    for b in 0..<batch {
        for i in 0..<h {
            for j in 0..<w {
                let (pdx, pdy) = diffs(p, b, i, j)
                let (tdx, tdy) = diffs(t, b, i, j)
                let ex = paper ? abs(tdx) - abs(pdx) : tdx - pdx
                let ey = paper ? abs(tdy) - abs(pdy) : tdy - pdy
                total += pow(abs(ex), power) + pow(abs(ey), power)
            }
        }
    }
    return total / Double(batch * plane)
}

/// Mean over positions of 1 - cos with pkk_inconsistency's clamp.
private func cosineLossReference(_ s: [Double], _ t: [Double], c: Int, batch: Int, hw: Int) -> Double {
    let ch = batch * hw
    var total = 0.0
    for q in 0..<ch {
        var dot = 0.0, ss = 0.0, tt = 0.0
        for k in 0..<c {
            dot += s[k * ch + q] * t[k * ch + q]
            ss += s[k * ch + q] * s[k * ch + q]
            tt += t[k * ch + q] * t[k * ch + q]
        }
        total += 1 - dot / (max(ss.squareRoot(), 1e-8) * max(tt.squareRoot(), 1e-8))
    }
    return total / Double(ch)
}

// MARK: - tests

final class TrainKernelTests: KernelTestCase {
    func testConv2dBackward() {
        let cases: [(ConvGeom, scratchColumns: Int?, accumulate: Bool)] = [
            (ConvGeom(cin: 3, cout: 4, batch: 2, h: 5, w: 6, kernel: 3, stride: 1, pad: 1), nil, false),
            // tiles of 7 columns cross rows and images
            (ConvGeom(cin: 3, cout: 4, batch: 2, h: 5, w: 6, kernel: 3, stride: 1, pad: 1), 7, true),
            // the k=1 students' strided downsampling, odd sides
            (ConvGeom(cin: 2, cout: 5, batch: 2, h: 7, w: 5, kernel: 3, stride: 2, pad: 1), 5, false),
            (ConvGeom(cin: 2, cout: 3, batch: 3, h: 6, w: 4, kernel: 3, stride: 2, pad: 1), nil, true),
            // 1x1 outconv (no im2col), and a strided 1x1 (im2col path)
            (ConvGeom(cin: 4, cout: 3, batch: 2, h: 4, w: 3, kernel: 1, stride: 1, pad: 0), 0, false),
            (ConvGeom(cin: 4, cout: 3, batch: 2, h: 4, w: 3, kernel: 1, stride: 1, pad: 0), nil, true),
            (ConvGeom(cin: 3, cout: 2, batch: 2, h: 5, w: 5, kernel: 1, stride: 2, pad: 0), 3, false),
            // no padding, kernel 5 with wide padding
            (ConvGeom(cin: 2, cout: 3, batch: 2, h: 5, w: 6, kernel: 3, stride: 1, pad: 0), 4, false),
            (ConvGeom(cin: 2, cout: 2, batch: 1, h: 4, w: 3, kernel: 5, stride: 1, pad: 2), nil, true),
        ]
        for (n, (g, scratchColumns, accumulate)) in cases.enumerated() {
            var rng = KernelRNG(seed: 1000 + UInt64(n))
            let nx = g.cin * g.batch * g.h * g.w, nw = g.cout * g.cin * g.kernel * g.kernel
            let ny = g.cout * g.batch * g.ho * g.wo
            let x = rng.floats(nx), weight = rng.floats(nw), bias = rng.floats(g.cout), r = rng.floats(ny)
            let (xd, wd, bd, rd) = (doubles(x), doubles(weight), doubles(bias), doubles(r))
            let gx = numericGradient(xd, h: 1e-3) { dotD(convForward(g, $0, wd, bd), rd) }
            let gw = numericGradient(wd, h: 1e-3) { dotD(convForward(g, xd, $0, bd), rd) }
            let gb = numericGradient(bd, h: 1e-3) { dotD(convForward(g, xd, wd, $0), rd) }

            let dx0: [Float]? = accumulate ? rng.floats(nx) : nil
            var dx = dx0 ?? [Float](repeating: .nan, count: nx)
            let dw0 = rng.floats(nw), db0 = rng.floats(g.cout)
            var dw = dw0, db = db0
            // A given scratch size holds one image (plus some columns): the
            // kernel then works image by image, in several tiles.
            let columns = scratchColumns.map { g.ho * g.wo + $0 - 1 } ?? g.batch * g.ho * g.wo
            let scratchCount = pkk_conv2d_backward_scratch_floats(Int32(g.cin), Int32(g.kernel), Int32(columns))
            var scratch = [Float](repeating: 1e30, count: max(scratchCount, 1))
            let rc = pkk_conv2d_backward(x, Int32(g.cin), Int32(g.batch), Int32(g.h), Int32(g.w), weight,
                                         Int32(g.cout), Int32(g.kernel), Int32(g.stride), Int32(g.pad),
                                         r, &dx, accumulate ? 1 : 0, &dw, &db, &scratch, scratchCount)
            XCTAssertEqual(rc, 0, "\(g)")
            let what = "conv2d backward \(g) columns \(columns) accumulate \(accumulate)"
            assertGradient(dx, plus(gx, dx0), "\(what): dx")
            assertGradient(dw, plus(gw, dw0), "\(what): dweight")
            assertGradient(db, plus(gb, db0), "\(what): dbias")

            // Only the weight gradient: the same increment.
            var dwOnly = dw0
            _ = pkk_conv2d_backward(x, Int32(g.cin), Int32(g.batch), Int32(g.h), Int32(g.w), weight,
                                    Int32(g.cout), Int32(g.kernel), Int32(g.stride), Int32(g.pad),
                                    r, nil, 0, &dwOnly, nil, &scratch, scratchCount)
            XCTAssertEqual(dwOnly, dw, "\(what): dweight without dx")
        }
    }

    /// 3x3 same convolutions with 8 or more output channels take dx through
    /// Winograd (a same conv of dy with the flipped kernel) when the scratch
    /// holds one Winograd chunk; with less, the im2col path runs. Both
    /// against finite differences, fresh and accumulating.
    func testConv2dBackwardWinogradInputGradient() {
        let g = ConvGeom(cin: 5, cout: 9, batch: 2, h: 7, w: 6, kernel: 3, stride: 1, pad: 1)
        var rng = KernelRNG(seed: 1100)
        let nx = g.cin * g.batch * g.h * g.w, nw = g.cout * g.cin * 9, ny = g.cout * g.batch * g.h * g.w
        let x = rng.floats(nx), weight = rng.floats(nw), bias = rng.floats(g.cout), r = rng.floats(ny)
        let (xd, wd, bd, rd) = (doubles(x), doubles(weight), doubles(bias), doubles(r))
        let gx = numericGradient(xd, h: 1e-3) { dotD(convForward(g, $0, wd, bd), rd) }
        let floats = 1 << 18
        // Winograd's scratch for one chunk of 16 tiles, of dy (cout channels) into cin: one float less declines.
        let winogradChunk = pkk_winograd_scratch_floats(Int32(g.cout), Int32(g.cin), Int32(g.batch), Int32(g.h),
                                                        Int32(g.w), 16)
        var scratch = [Float](repeating: 0, count: floats)
        var results: [[Float]] = []
        for (scratchFloats, accumulate) in [(floats, false), (floats, true), (winogradChunk - 1, false)] {
            let dx0: [Float]? = accumulate ? rng.floats(nx) : nil
            var dx = dx0 ?? [Float](repeating: .nan, count: nx)
            var dw = [Float](repeating: 0, count: nw), db = [Float](repeating: 0, count: g.cout)
            let rc = pkk_conv2d_backward(x, Int32(g.cin), Int32(g.batch), Int32(g.h), Int32(g.w), weight,
                                         Int32(g.cout), 3, 1, 1, r, &dx, accumulate ? 1 : 0, &dw, &db,
                                         &scratch, scratchFloats)
            XCTAssertEqual(rc, 0, String(cString: pkk_last_error()))
            assertGradient(dx, plus(gx, dx0), "conv2d backward dx, scratch \(scratchFloats) floats, accumulate \(accumulate)")
            if !accumulate { results.append(dx) }
        }
        XCTAssertTrue(results[0] != results[1], "a scratch of one Winograd chunk should take the Winograd path")
    }

    /// The weight gradient of 3x3 same convolutions through Winograd
    /// (pkk_conv3x3_winograd_dweight) against a naive Double sum of dy times
    /// the shifted inputs: sides that are no multiple of 4 (tiles cut by the
    /// edge), channel counts that leave partial register blocks, one chunk or
    /// several, both instruction-set paths. pkk_conv2d_backward takes that
    /// path for 8 or more input and output channels: the same bits.
    func testConv2dBackwardWinogradWeightGradient() {
        let cases = [ConvGeom(cin: 9, cout: 10, batch: 5, h: 7, w: 6, kernel: 3, stride: 1, pad: 1),
                     ConvGeom(cin: 16, cout: 13, batch: 2, h: 13, w: 11, kernel: 3, stride: 1, pad: 1),
                     ConvGeom(cin: 20, cout: 8, batch: 20, h: 4, w: 4, kernel: 3, stride: 1, pad: 1),
                     // tiles in image-interleaved order (with AVX-512)
                     ConvGeom(cin: 9, cout: 8, batch: 32, h: 8, w: 12, kernel: 3, stride: 1, pad: 1)]
        for (n, g) in cases.enumerated() {
            var rng = KernelRNG(seed: 1200 + UInt64(n))
            let plane = g.h * g.w, nw = g.cout * g.cin * 9
            let x = rng.floats(g.cin * g.batch * plane), weight = rng.floats(nw), dy = rng.floats(g.cout * g.batch * plane)
            var expected = [Double](repeating: 0, count: nw)
            for co in 0..<g.cout { for ci in 0..<g.cin { for ky in 0..<3 { for kx in 0..<3 {
                var s = 0.0
                for b in 0..<g.batch { for oy in 0..<g.h { for ox in 0..<g.w {
                    let iy = oy + ky - 1, ix = ox + kx - 1
                    guard iy >= 0, iy < g.h, ix >= 0, ix < g.w else { continue }
                    s += Double(dy[(co * g.batch + b) * plane + oy * g.w + ox]) * Double(x[(ci * g.batch + b) * plane + iy * g.w + ix])
                } } }
                expected[((co * g.cin + ci) * 3 + ky) * 3 + kx] = s
            } } } }
            let dw0 = rng.floats(nw)
            let scale = expected.map { abs($0) }.max() ?? 1
            let geometry = (Int32(g.cin), Int32(g.cout), Int32(g.batch), Int32(g.h), Int32(g.w))
            let whole = pkk_winograd_dweight_scratch_floats(geometry.0, geometry.1, geometry.2, geometry.3, geometry.4, 0)
            let chunk = pkk_winograd_dweight_scratch_floats(geometry.0, geometry.1, geometry.2, geometry.3, geometry.4, 16)
            XCTAssertLessThan(chunk, whole, "\(g): more than one chunk of 16 tiles")
            // chunks that start inside a position or a group of 16 images
            let chunk80 = pkk_winograd_dweight_scratch_floats(geometry.0, geometry.1, geometry.2, geometry.3, geometry.4, 80)
            forEachKernelPath { path in
                for floats in Set([whole, chunk, chunk80]) {
                    var dw = dw0
                    var scratch = [Float](repeating: .nan, count: floats)
                    XCTAssertEqual(pkk_conv3x3_winograd_dweight(x, geometry.0, geometry.2, geometry.3, geometry.4, dy,
                                                                geometry.1, &dw, &scratch, floats), 1)
                    assertClose(dw, plus(expected, dw0), rel: 1e-5, floor: scale, "Winograd dweight \(g), \(path), scratch \(floats) floats")
                }
                var scratch = [Float](repeating: .nan, count: chunk - 1)
                var dw = dw0
                XCTAssertEqual(pkk_conv3x3_winograd_dweight(x, geometry.0, geometry.2, geometry.3, geometry.4, dy,
                                                            geometry.1, &dw, &scratch, chunk - 1), 0, "\(g): declines")
                XCTAssertEqual(dw, dw0, "\(g): nothing written when declining")
            }
            guard g.cin >= 8 else { continue }
            var kernelOnly = dw0, backward = dw0
            var scratch = [Float](repeating: .nan, count: whole)
            _ = pkk_conv3x3_winograd_dweight(x, geometry.0, geometry.2, geometry.3, geometry.4, dy, geometry.1, &kernelOnly,
                                             &scratch, whole)
            let floats = max(whole, pkk_conv2d_backward_scratch_floats(geometry.0, 3, Int32(g.batch * plane)))
            scratch = [Float](repeating: .nan, count: floats)
            XCTAssertEqual(pkk_conv2d_backward(x, geometry.0, geometry.2, geometry.3, geometry.4, weight, geometry.1, 3, 1, 1,
                                               dy, nil, 0, &backward, nil, &scratch, floats), 0)
            XCTAssertEqual(backward, kernelOnly, "\(g): conv2d backward takes the Winograd weight gradient")
        }
    }

    func testConv2dBackwardRejectsTooSmallScratch() {
        let x = [Float](repeating: 1, count: 2 * 16), weight = [Float](repeating: 1, count: 3 * 2 * 9)
        let dy = [Float](repeating: 1, count: 3 * 16)
        var dx = [Float](repeating: 0, count: 2 * 16), dw = [Float](repeating: 0, count: 3 * 2 * 9)
        var db = [Float](repeating: 0, count: 3)
        var scratch = [Float](repeating: 0, count: 17)  // one image needs 2 x 9 x 16
        let rc = pkk_conv2d_backward(x, 2, 1, 4, 4, weight, 3, 3, 1, 1, dy, &dx, 0, &dw, &db, &scratch, 17)
        XCTAssertEqual(rc, -1)
        XCTAssertTrue(String(cString: pkk_last_error()).contains("scratch"))
        XCTAssertEqual(db, [0, 0, 0], "nothing is written on failure")
    }

    func testConvTranspose2dBackward() {
        let cases: [(DeconvGeom, scratchColumns: Int?, accumulate: Bool)] = [
            // the students' upsampling: k3 s2 p1 output_padding 1
            (DeconvGeom(cin: 4, cout: 3, batch: 2, h: 3, w: 4, kernel: 3, stride: 2, pad: 1, outputPadding: 1), nil, false),
            (DeconvGeom(cin: 4, cout: 3, batch: 2, h: 3, w: 4, kernel: 3, stride: 2, pad: 1, outputPadding: 1), 5, true),
            (DeconvGeom(cin: 3, cout: 2, batch: 2, h: 4, w: 3, kernel: 3, stride: 2, pad: 1, outputPadding: 0), 7, false),
            (DeconvGeom(cin: 2, cout: 3, batch: 1, h: 3, w: 3, kernel: 2, stride: 2, pad: 0, outputPadding: 0), nil, true),
            (DeconvGeom(cin: 3, cout: 2, batch: 2, h: 4, w: 5, kernel: 3, stride: 1, pad: 1, outputPadding: 0), 6, false),
            (DeconvGeom(cin: 2, cout: 2, batch: 2, h: 3, w: 2, kernel: 4, stride: 3, pad: 1, outputPadding: 2), nil, false),
        ]
        for (n, (g, scratchColumns, accumulate)) in cases.enumerated() {
            var rng = KernelRNG(seed: 2000 + UInt64(n))
            let nx = g.cin * g.batch * g.h * g.w, nw = g.cin * g.cout * g.kernel * g.kernel
            let ny = g.cout * g.batch * g.ho * g.wo
            let x = rng.floats(nx), weight = rng.floats(nw), bias = rng.floats(g.cout), r = rng.floats(ny)
            let (xd, wd, bd, rd) = (doubles(x), doubles(weight), doubles(bias), doubles(r))
            let gx = numericGradient(xd, h: 1e-3) { dotD(deconvForward(g, $0, wd, bd), rd) }
            let gw = numericGradient(wd, h: 1e-3) { dotD(deconvForward(g, xd, $0, bd), rd) }
            let gb = numericGradient(bd, h: 1e-3) { dotD(deconvForward(g, xd, wd, $0), rd) }

            let dx0: [Float]? = accumulate ? rng.floats(nx) : nil
            var dx = dx0 ?? [Float](repeating: .nan, count: nx)
            let dw0 = rng.floats(nw), db0 = rng.floats(g.cout)
            var dw = dw0, db = db0
            let columns = scratchColumns.map { g.h * g.w + $0 - 1 } ?? g.batch * g.h * g.w
            let scratchCount = pkk_conv_transpose2d_backward_scratch_floats(Int32(g.cout), Int32(g.kernel), Int32(columns))
            var scratch = [Float](repeating: 1e30, count: max(scratchCount, 1))
            let rc = pkk_conv_transpose2d_backward(x, Int32(g.cin), Int32(g.batch), Int32(g.h), Int32(g.w), weight,
                                                   Int32(g.cout), Int32(g.kernel), Int32(g.stride), Int32(g.pad),
                                                   Int32(g.outputPadding), r, &dx, accumulate ? 1 : 0,
                                                   &dw, &db, &scratch, scratchCount)
            XCTAssertEqual(rc, 0, "\(g)")
            let what = "conv_transpose2d backward \(g) columns \(columns) accumulate \(accumulate)"
            assertGradient(dx, plus(gx, dx0), "\(what): dx")
            assertGradient(dw, plus(gw, dw0), "\(what): dweight")
            assertGradient(db, plus(gb, db0), "\(what): dbias")
        }
    }

    /// The affine BatchNorm, alone and with the ReLU after it (whose mask
    /// the backward applies in the same pass), against finite differences.
    func testBatchNormAffine() {
        let (c, n) = (3, 2 * 3 * 4 + 5)  // rows of 29: a partial block of 16
        let eps: Float = 1e-5
        for (accumulate, relu) in [(false, false), (true, false), (false, true), (true, true)] {
            var rng = KernelRNG(seed: (accumulate ? 3001 : 3000) + (relu ? 10 : 0))
            let x = rng.floats(c * n, -2, 2), r = rng.floats(c * n)
            let gamma = rng.floats(c, 0.5, 1.5), beta = rng.floats(c)
            let mean = rng.floats(c, -0.5, 0.5), variance = rng.floats(c, 0.2, 2)
            let stats = (doubles(mean), doubles(variance))
            let (xd, gd, bd, rd) = (doubles(x), doubles(gamma), doubles(beta), doubles(r))
            let e = Double(eps)
            func f(_ x: [Double], _ g: [Double], _ b: [Double]) -> Double {
                let y = batchNormForward(x, c: c, n: n, gamma: g, beta: b, stats: stats, eps: e)
                return dotD(relu ? y.map { max($0, 0) } : y, rd)
            }

            var y = [Float](repeating: .nan, count: c * n)
            pkk_batchnorm_affine_forward(x, Int32(c), n, gamma, beta, mean, variance, eps, relu ? 1 : 0, &y)
            let expectedY = batchNormForward(xd, c: c, n: n, gamma: gd, beta: bd, stats: stats, eps: e)
            assertClose(y, relu ? expectedY.map { max($0, 0) } : expectedY, rel: 1e-5,
                        "affine BatchNorm\(relu ? " + ReLU" : "") forward")

            let dx0: [Float]? = accumulate ? rng.floats(c * n) : nil
            var dx = dx0 ?? [Float](repeating: .nan, count: c * n)
            let dg0 = rng.floats(c), db0 = rng.floats(c)
            var dg = dg0, db = db0
            withOptionalPointer(relu ? y : nil) { yp in
                pkk_batchnorm_affine_backward(x, yp, r, Int32(c), n, gamma, mean, variance, eps, &dx, accumulate ? 1 : 0,
                                              &dg, &db)
            }
            let what = "affine BatchNorm\(relu ? " + ReLU" : ""), accumulate \(accumulate)"
            assertGradient(dx, plus(numericGradient(xd, h: 1e-4) { f($0, gd, bd) }, dx0), "\(what): dx")
            assertGradient(dg, plus(numericGradient(gd, h: 1e-4) { f(xd, $0, bd) }, dg0), "\(what): dgamma")
            assertGradient(db, plus(numericGradient(bd, h: 1e-4) { f(xd, gd, $0) }, db0), "\(what): dbeta")
        }

        // Running statistics (0, 1), the published training: y = gamma x / sqrt(1 + eps) + beta.
        let x: [Float] = [1, -2, 3, 0.5], gamma: [Float] = [2], beta: [Float] = [0.25]
        var y = [Float](repeating: 0, count: 4)
        pkk_batchnorm_affine_forward(x, 1, 4, gamma, beta, nil, nil, eps, 0, &y)
        assertClose(y, x.map { 2 * Double($0) / (1 + Double(eps)).squareRoot() + 0.25 }, rel: 1e-6, "affine BatchNorm with (0, 1)")
    }

    func testBatchNormBatchStatistics() {
        let (c, n) = (3, 2 * 3 * 4)
        let eps: Float = 1e-5, momentum: Float = 0.1
        for accumulate in [false, true] {
            var rng = KernelRNG(seed: accumulate ? 4001 : 4000)
            let x = rng.floats(c * n, -2, 3), r = rng.floats(c * n)
            let gamma = rng.floats(c, 0.5, 1.5), beta = rng.floats(c)
            let (xd, gd, bd, rd) = (doubles(x), doubles(gamma), doubles(beta), doubles(r))
            let e = Double(eps)
            func f(_ x: [Double], _ g: [Double], _ b: [Double]) -> Double {
                dotD(batchNormForward(x, c: c, n: n, gamma: g, beta: b, stats: nil, eps: e), rd)
            }

            let rm0 = rng.floats(c), rv0 = rng.floats(c, 0.5, 1.5)
            var runningMean = rm0, runningVar = rv0
            var saveMean = [Float](repeating: .nan, count: c), saveInvstd = [Float](repeating: .nan, count: c)
            var y = [Float](repeating: .nan, count: c * n)
            pkk_batchnorm_batch_forward(x, Int32(c), n, gamma, beta, eps, momentum, &runningMean, &runningVar,
                                        &saveMean, &saveInvstd, &y)
            assertClose(y, batchNormForward(xd, c: c, n: n, gamma: gd, beta: bd, stats: nil, eps: e),
                        rel: 1e-5, "batch BatchNorm forward")
            var expectedMean = [Double](), expectedVar = [Double](), expectedInvstd = [Double]()
            for k in 0..<c {
                let row = xd[(k * n)..<((k + 1) * n)]
                let mean = row.reduce(0, +) / Double(n)
                let sq = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
                expectedMean.append(0.9 * Double(rm0[k]) + 0.1 * mean)
                expectedVar.append(0.9 * Double(rv0[k]) + 0.1 * sq / Double(n - 1))  // unbiased
                expectedInvstd.append(1 / (sq / Double(n) + e).squareRoot())        // biased
            }
            assertClose(runningMean, expectedMean, rel: 1e-6, "running mean")
            assertClose(runningVar, expectedVar, rel: 1e-6, "running variance")
            assertClose(saveInvstd, expectedInvstd, rel: 1e-6, "saved 1/std")

            let dx0: [Float]? = accumulate ? rng.floats(c * n) : nil
            var dx = dx0 ?? [Float](repeating: .nan, count: c * n)
            let dg0 = rng.floats(c), db0 = rng.floats(c)
            var dg = dg0, db = db0
            pkk_batchnorm_batch_backward(x, r, Int32(c), n, gamma, saveMean, saveInvstd, &dx, accumulate ? 1 : 0, &dg, &db)
            assertGradient(dx, plus(numericGradient(xd, h: 1e-5) { f($0, gd, bd) }, dx0), "batch BatchNorm dx")
            assertGradient(dg, plus(numericGradient(gd, h: 1e-5) { f(xd, $0, bd) }, dg0), "batch BatchNorm dgamma")
            assertGradient(db, plus(numericGradient(bd, h: 1e-5) { f(xd, gd, $0) }, db0), "batch BatchNorm dbeta")
        }

        // In place: y aliases x.
        var rng = KernelRNG(seed: 4100)
        let x = rng.floats(2 * 10), gamma: [Float] = [1.5, 0.5], beta: [Float] = [0, 1]
        var expected = [Float](repeating: 0, count: 20), inPlace = x
        var m = [Float](repeating: 0, count: 2), s = [Float](repeating: 0, count: 2)
        pkk_batchnorm_batch_forward(x, 2, 10, gamma, beta, 1e-5, 0.1, nil, nil, &m, &s, &expected)
        inPlace.withUnsafeMutableBufferPointer { p in
            pkk_batchnorm_batch_forward(p.baseAddress, 2, 10, gamma, beta, 1e-5, 0.1, nil, nil, nil, nil, p.baseAddress)
        }
        XCTAssertEqual(inPlace, expected, "in-place batch BatchNorm")
    }

    func testReLU() {
        var rng = KernelRNG(seed: 5000)
        // keep away from the kink so that differences do not straddle it
        let x = rng.floats(300).map { $0 >= 0 ? $0 + 0.05 : $0 - 0.05 }
        let r = rng.floats(300)
        var y = [Float](repeating: .nan, count: 300)
        pkk_relu_forward(x, 300, &y)
        XCTAssertEqual(y, x.map { max($0, 0) })
        let expected = numericGradient(doubles(x), h: 1e-3) { dotD($0.map { max($0, 0) }, doubles(r)) }
        var dx = [Float](repeating: .nan, count: 300)
        pkk_relu_backward(y, r, 300, &dx, 0)
        assertGradient(dx, expected, "ReLU dx")
        let dx0 = rng.floats(300)
        var acc = dx0
        pkk_relu_backward(y, r, 300, &acc, 1)
        assertGradient(acc, plus(expected, dx0), "ReLU dx accumulated")
        var sum = dx0
        pkk_add_inplace(&sum, r, 300)
        XCTAssertEqual(sum, zip(dx0, r).map { $0 + $1 })
    }

    func testMaxPoolBackward() {
        let cases: [(c: Int, batch: Int, h: Int, w: Int, kernel: Int, stride: Int, pad: Int, accumulate: Bool)] = [
            (2, 2, 6, 7, 2, 2, 0, false),  // the students' pooling, odd width (floor mode)
            (2, 2, 4, 4, 2, 2, 0, true),   // even planes: windows tile them (the 2x2 path)
            (3, 2, 6, 8, 2, 2, 0, false),
            (1, 2, 7, 6, 3, 2, 1, false),  // overlapping windows with padding
        ]
        for (n, k) in cases.enumerated() {
            var rng = KernelRNG(seed: 6000 + UInt64(n))
            let planes = k.c * k.batch
            let ho = (k.h + 2 * k.pad - k.kernel) / k.stride + 1, wo = (k.w + 2 * k.pad - k.kernel) / k.stride + 1
            let x = rng.floats(planes * k.h * k.w), r = rng.floats(planes * ho * wo)
            let expected = numericGradient(doubles(x), h: 1e-7) {
                dotD(maxPoolForward($0, planes: planes, h: k.h, w: k.w, kernel: k.kernel, stride: k.stride, pad: k.pad), doubles(r))
            }
            let dx0: [Float]? = k.accumulate ? rng.floats(x.count) : nil
            var dx = dx0 ?? [Float](repeating: .nan, count: x.count)
            pkk_maxpool2d_backward(x, Int32(k.c), Int32(k.batch), Int32(k.h), Int32(k.w), Int32(k.kernel),
                                   Int32(k.stride), Int32(k.pad), r, &dx, k.accumulate ? 1 : 0)
            assertGradient(dx, plus(expected, dx0), "maxpool backward case \(n)")
        }
    }

    /// PyTorch's tie rule: the first maximum in row-major window order; a NaN
    /// takes the window; all -inf picks the first element.
    func testMaxPoolBackwardTies() {
        let inf = Float.infinity
        // one 2x8 plane = four 2x2 windows, laid out row by row
        let x: [Float] = [1, 1, 0, 2, 0, 0, -inf, -inf,
                          1, 0, 2, 0, 3, 3, -inf, -inf]
        let dy: [Float] = [10, 20, 30, 40]
        var dx = [Float](repeating: .nan, count: 16)
        pkk_maxpool2d_backward(x, 1, 1, 2, 8, 2, 2, 0, dy, &dx, 0)
        XCTAssertEqual(dx, [10, 0, 0, 20, 0, 0, 40, 0,
                            0, 0, 0, 0, 30, 0, 0, 0])
        let withNaN: [Float] = [1, .nan, 5, 0]
        var dxNaN = [Float](repeating: 0, count: 4)
        pkk_maxpool2d_backward(withNaN, 1, 1, 2, 2, 2, 2, 0, [7], &dxNaN, 0)
        XCTAssertEqual(dxNaN, [0, 7, 0, 0])
        pkk_maxpool2d_backward([Float.nan, 1, .nan, 0], 1, 1, 2, 2, 2, 2, 0, [7], &dxNaN, 0)
        XCTAssertEqual(dxNaN, [0, 0, 7, 0], "of two NaNs, the scan keeps the last")
    }

    func testMSELoss() {
        var rng = KernelRNG(seed: 7000)
        let n = 20_000  // more than one chunk
        let p = rng.floats(n), t = rng.floats(n)
        let expected = zip(p, t).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) } / Double(n)
        var grad = [Float](repeating: .nan, count: n)
        let loss = pkk_mse_loss(p, t, n, 0.8, &grad, 0)
        XCTAssertEqual(loss, expected, accuracy: 1e-12 * max(expected, 1))
        // d/dp of 0.8 * mean (p - t)^2, checked by differences on a few elements
        let td = doubles(t)
        var pd = doubles(p)
        for i in [0, 1, 8191, 8192, n - 1] {
            let keep = pd[i], h = 1e-4
            func f() -> Double { 0.8 * zip(pd, td).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(n) }
            pd[i] = keep + h; let up = f()
            pd[i] = keep - h; let down = f()
            pd[i] = keep
            XCTAssertEqual(Double(grad[i]), (up - down) / (2 * h), accuracy: 1e-3 * abs((up - down) / (2 * h)) + 1e-12)
        }
        var acc = [Float](repeating: 1, count: n)
        _ = pkk_mse_loss(p, t, n, 0.8, &acc, 1)
        for i in [0, 9000, n - 1] { XCTAssertEqual(acc[i], 1 + grad[i], accuracy: 1e-6) }
    }

    func testGradientLoss() {
        let cases: [(c: Int, batch: Int, h: Int, w: Int, power: Double, paper: Bool)] = [
            (3, 2, 4, 5, 3, false),  // the published loss on colour frames
            (1, 2, 5, 4, 3, false),  // grayscale
            (3, 2, 4, 5, 3, true),   // the paper's form
            (2, 1, 3, 4, 2, true),
            (3, 2, 3, 3, 1, false),
        ]
        for (n, k) in cases.enumerated() {
            var rng = KernelRNG(seed: 8000 + UInt64(n))
            let count = k.c * k.batch * k.h * k.w
            let p = rng.floats(count, 0, 1), t = rng.floats(count, 0, 1)
            let (pd, td) = (doubles(p), doubles(t))
            let weight: Float = 0.1
            let expectedLoss = gradientLossReference(pd, td, c: k.c, batch: k.batch, h: k.h, w: k.w, power: k.power, paper: k.paper)
            let expectedGrad = numericGradient(pd, h: 1e-6) {
                Double(weight) * gradientLossReference($0, td, c: k.c, batch: k.batch, h: k.h, w: k.w, power: k.power, paper: k.paper)
            }
            let accumulate = n % 2 == 1
            let grad0: [Float]? = accumulate ? rng.floats(count) : nil
            var grad = grad0 ?? [Float](repeating: .nan, count: count)
            let loss = pkk_gradient_loss(p, t, Int32(k.c), Int32(k.batch), Int32(k.h), Int32(k.w), k.power,
                                         k.paper ? 1 : 0, weight, &grad, accumulate ? 1 : 0)
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-12 * max(expectedLoss, 1), "gradient loss case \(n)")
            assertGradient(grad, plus(expectedGrad, grad0), "gradient loss case \(n) gradient")
        }
        // The two forms differ: abs before subtracting ignores sign flips.
        let p: [Float] = [0, 1, 0, 0], t: [Float] = [1, 0, 0, 0]  // one 2x2 image
        let published = pkk_gradient_loss(p, t, 1, 1, 2, 2, 3, 0, 1, nil, 0)
        let paper = pkk_gradient_loss(p, t, 1, 1, 2, 2, 3, 1, 1, nil, 0)
        XCTAssertEqual(published, gradientLossReference(doubles(p), doubles(t), c: 1, batch: 1, h: 2, w: 2, power: 3, paper: false))
        XCTAssertEqual(paper, gradientLossReference(doubles(p), doubles(t), c: 1, batch: 1, h: 2, w: 2, power: 3, paper: true))
        XCTAssertNotEqual(published, paper)
    }

    func testCosineLoss() {
        let (c, batch, hw) = (5, 2, 6)
        var rng = KernelRNG(seed: 9000)
        let s = rng.floats(c * batch * hw), t = rng.floats(c * batch * hw)
        let (sd, td) = (doubles(s), doubles(t))
        let weight: Float = 0.1
        let expectedLoss = cosineLossReference(sd, td, c: c, batch: batch, hw: hw)
        let expectedGrad = numericGradient(sd, h: 1e-6) { Double(weight) * cosineLossReference($0, td, c: c, batch: batch, hw: hw) }
        for accumulate in [false, true] {
            let grad0: [Float]? = accumulate ? rng.floats(s.count) : nil
            var grad = grad0 ?? [Float](repeating: .nan, count: s.count)
            let loss = pkk_cosine_loss(s, t, Int32(c), Int32(batch), Int32(hw), weight, &grad, accumulate ? 1 : 0)
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-12)
            assertGradient(grad, plus(expectedGrad, grad0), "cosine loss gradient accumulate \(accumulate)")
        }
        // Same value as the scoring kernel's per-cube inconsistency, averaged.
        var scores = [Float](repeating: 0, count: batch)
        pkk_inconsistency(s, t, Int32(c), Int32(batch), Int32(hw), &scores, nil)
        XCTAssertEqual(pkk_cosine_loss(s, t, Int32(c), Int32(batch), Int32(hw), 1, nil, 0),
                       scores.map { Double($0) }.reduce(0, +) / Double(batch), accuracy: 1e-6)
        // A zero student vector: the clamp makes the cosine 0, the loss 1.
        let zero = [Float](repeating: 0, count: 3)
        XCTAssertEqual(pkk_cosine_loss(zero, [1, 2, 3], 3, 1, 1, 1, nil, 0), 1)
    }

    func testAdamMatchesReference() {
        let n = 64, steps = 5
        let (lr, beta1, beta2, eps) = (1e-3, 0.9, 0.999, 1e-7)
        var rng = KernelRNG(seed: 10_000)
        let p0 = rng.floats(n)
        var p = p0, m = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
        var rp = doubles(p0), rm = [Double](repeating: 0, count: n), rv = [Double](repeating: 0, count: n)
        for step in 1...steps {
            // some gradients near eps, where eps outside the square root matters
            let grad = (0..<n).map { i -> Float in i % 8 == 0 ? rng.float() * 1e-7 : rng.float() }
            pkk_adam_step(&p, grad, &m, &v, n, step, lr, beta1, beta2, eps)
            let bc1 = 1 - pow(beta1, Double(step)), bc2 = 1 - pow(beta2, Double(step))
            for i in 0..<n {
                let g = Double(grad[i])
                rm[i] = beta1 * rm[i] + (1 - beta1) * g
                rv[i] = beta2 * rv[i] + (1 - beta2) * g * g
                rp[i] -= lr / bc1 * rm[i] / ((rv[i]).squareRoot() / bc2.squareRoot() + eps)
            }
            // m cancels (gradients of both signs): compare against the gradients' scale
            assertClose(m, rm, rel: 1e-5, floor: 1e-3, "Adam m after step \(step)")
            assertClose(v, rv, rel: 1e-5, floor: 1e-15, "Adam v after step \(step)")
            // the change of the parameters, where an error would be visible
            let delta = zip(p, p0).map { $0 - $1 }
            let expectedDelta = zip(rp, p0).map { $0 - Double($1) }
            assertClose(delta, expectedDelta, rel: 1e-3, floor: 1e-4, "Adam parameter change after step \(step)")
        }
    }

    /// The same gradients, bit for bit, from two runs with 2 threads, on
    /// problems big enough for the kernels to fork; and with 1 thread the same
    /// up to float rounding (the convolutions' weight gradients are summed per
    /// thread).
    func testGradientsRepeatableForAThreadCount() {
        var rng = KernelRNG(seed: 11_000)
        let (cin, cout, batch, side) = (16, 16, 8, 32)
        let plane = batch * side * side
        let x = rng.floats(cin * plane), weight = rng.floats(cout * cin * 9).map { $0 * 0.1 }
        let dy = rng.floats(cout * plane)
        let up = rng.floats(cin * batch * 16 * 16), upWeight = rng.floats(cin * cout * 9).map { $0 * 0.1 }
        let gamma = rng.floats(cout, 0.5, 1.5), beta = rng.floats(cout)
        let target = rng.floats(3 * plane), teacher = rng.floats(cout * plane)

        func run() -> (gradients: [[Float]], losses: [Double]) {
            let columns = 2 * 1024  // one 32x32 image per thread and tile
            let count = pkk_conv2d_backward_scratch_floats(Int32(cin), 3, Int32(columns))
            var scratch = [Float](repeating: 0, count: count)
            var dx = [Float](repeating: 0, count: cin * plane), dw = [Float](repeating: 0, count: cout * cin * 9)
            var db = [Float](repeating: 0, count: cout)
            _ = pkk_conv2d_backward(x, Int32(cin), Int32(batch), Int32(side), Int32(side), weight, Int32(cout), 3, 1, 1,
                                    dy, &dx, 0, &dw, &db, &scratch, count)
            var sdx = [Float](repeating: 0, count: cin * plane), sdw = [Float](repeating: 0, count: cout * cin * 9)
            _ = pkk_conv2d_backward(x, Int32(cin), Int32(batch), Int32(side), Int32(side), weight, Int32(cout), 3, 2, 1,
                                    Array(dy.prefix(cout * batch * 16 * 16)), &sdx, 0, &sdw, nil, &scratch, count)
            let tcount = pkk_conv_transpose2d_backward_scratch_floats(Int32(cout), 3, 2 * 256)
            var tscratch = [Float](repeating: 0, count: tcount)
            var udx = [Float](repeating: 0, count: up.count), udw = [Float](repeating: 0, count: upWeight.count)
            var udb = [Float](repeating: 0, count: cout)
            _ = pkk_conv_transpose2d_backward(up, Int32(cin), Int32(batch), 16, 16, upWeight, Int32(cout), 3, 2, 1, 1,
                                              dy, &udx, 0, &udw, &udb, &tscratch, tcount)
            var y = [Float](repeating: 0, count: cout * plane)
            var rmean = [Float](repeating: 0, count: cout), rvar = [Float](repeating: 1, count: cout)
            var smean = [Float](repeating: 0, count: cout), sinv = [Float](repeating: 0, count: cout)
            pkk_batchnorm_batch_forward(x, Int32(cout), plane, gamma, beta, 1e-5, 0.1, &rmean, &rvar, &smean, &sinv, &y)
            var bdx = [Float](repeating: 0, count: cout * plane)
            var dg = [Float](repeating: 0, count: cout), dbeta = [Float](repeating: 0, count: cout)
            pkk_batchnorm_batch_backward(x, dy, Int32(cout), plane, gamma, smean, sinv, &bdx, 0, &dg, &dbeta)
            var pdx = [Float](repeating: 0, count: cin * plane)
            pkk_maxpool2d_backward(x, Int32(cin), Int32(batch), Int32(side), Int32(side), 2, 2, 0,
                                   Array(dy.prefix(cin * plane / 4)), &pdx, 0)
            let pred = Array(x.prefix(3 * plane))
            var gm = [Float](repeating: 0, count: 3 * plane), gg = gm
            var gc = [Float](repeating: 0, count: cout * plane)
            let lm = pkk_mse_loss(pred, target, 3 * plane, 0.8, &gm, 0)
            let lg = pkk_gradient_loss(pred, target, 3, Int32(batch), Int32(side), Int32(side), 3, 0, 0.1, &gg, 0)
            let lc = pkk_cosine_loss(y, teacher, Int32(cout), Int32(batch), Int32(side * side), 0.2, &gc, 0)
            return ([dx, dw, db, sdx, sdw, udx, udw, udb, y, rmean, rvar, bdx, dg, dbeta, pdx, gm, gg, gc],
                    [lm, lg, lc])
        }
        pkk_set_threads(1)
        let one = run()
        pkk_set_threads(2)
        let two = run()
        let again = run()
        pkk_set_threads(0)
        for (i, (a, b)) in zip(two.gradients, again.gradients).enumerated() {
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "output \(i) differs between two runs with 2 threads")
        }
        XCTAssertEqual(two.losses.map(\.bitPattern), again.losses.map(\.bitPattern), "losses differ between two runs")
        for (i, (a, b)) in zip(one.gradients, two.gradients).enumerated() {
            XCTAssertLessThan(maxScaledDifference(a, b), 1e-5, "output \(i): 1 and 2 threads differ beyond rounding")
        }
    }
}
