// conv2d and conv_transpose2d against naive Double references.
import XCTest
import PkgnetKernels

struct ConvCase: CustomStringConvertible, Sendable {
    var cin: Int, cout: Int, batch: Int, h: Int, w: Int
    var kernel: Int, stride: Int, pad: Int, groups: Int
    var bias: Bool, residual: Bool, relu: Bool
    var ho: Int { (h + 2 * pad - kernel) / stride + 1 }
    var wo: Int { (w + 2 * pad - kernel) / stride + 1 }
    var description: String {
        "cin \(cin) cout \(cout) b \(batch) \(h)x\(w) k\(kernel) s\(stride) p\(pad) g\(groups) bias \(bias) res \(residual) relu \(relu)"
    }
}

/// A 3x3 convolution's weights [cout][cin][3][3] arranged as the Winograd,
/// packed and 1-D Winograd kernels read them (pkk_winograd_arrange_weights).
func winogradArranged(_ c: ConvCase, _ weight: [Float]) -> [Float] {
    var s = [Float](repeating: .nan, count: pkk_winograd_weight_floats(Int32(c.cin), Int32(c.cout)))
    pkk_winograd_arrange_weights(weight, Int32(c.cin), Int32(c.cout), &s)
    return s
}

/// A convolution case's random inputs, drawn in a fixed order from one seed:
/// x, the weights scaled by 1/sqrt(fan-in), and bias and residual where the
/// case has them.
struct ConvInputs: Sendable {
    let x: [Float], weight: [Float], bias: [Float]?, residual: [Float]?

    init(x: [Float], weight: [Float], bias: [Float]?, residual: [Float]?) {
        (self.x, self.weight, self.bias, self.residual) = (x, weight, bias, residual)
    }

    init(_ c: ConvCase, seed: UInt64) {
        var rng = KernelRNG(seed: seed)
        let kdim = c.cin / c.groups * c.kernel * c.kernel
        x = rng.floats(c.cin * c.batch * c.h * c.w)
        let scale = Float(1 / Double(kdim).squareRoot())
        weight = rng.floats(c.cout * kdim).map { $0 * scale }
        bias = c.bias ? rng.floats(c.cout) : nil
        residual = c.residual ? rng.floats(c.cout * c.batch * c.ho * c.wo) : nil
    }

    /// The naive Double convolution of these inputs.
    func expected(_ c: ConvCase) -> [Double] { referenceConv2d(c, x: x, weight: weight, bias: bias, residual: residual) }
}

func referenceConv2d(_ c: ConvCase, x: [Float], weight: [Float], bias: [Float]?,
                             residual: [Float]?) -> [Double] {
    let (ho, wo) = (c.ho, c.wo)
    let cinG = c.cin / c.groups, coutG = c.cout / c.groups
    var y = [Double](repeating: 0, count: c.cout * c.batch * ho * wo)
    for co in 0..<c.cout {
        let g = co / coutG
        for b in 0..<c.batch {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc = bias.map { Double($0[co]) } ?? 0
                    for cig in 0..<cinG {
                        let ci = g * cinG + cig
                        for ky in 0..<c.kernel {
                            let iy = oy * c.stride - c.pad + ky
                            if iy < 0 || iy >= c.h { continue }
                            for kx in 0..<c.kernel {
                                let ix = ox * c.stride - c.pad + kx
                                if ix < 0 || ix >= c.w { continue }
                                let wv = weight[((co * cinG + cig) * c.kernel + ky) * c.kernel + kx]
                                let xv = x[((ci * c.batch + b) * c.h + iy) * c.w + ix]
                                acc += Double(wv) * Double(xv)
                            }
                        }
                    }
                    let at = ((co * c.batch + b) * ho + oy) * wo + ox
                    if let residual { acc += Double(residual[at]) }
                    if c.relu { acc = max(acc, 0) }
                    y[at] = acc
                }
            }
        }
    }
    return y
}

private struct DeconvCase: CustomStringConvertible {
    var cin: Int, cout: Int, batch: Int, h: Int, w: Int
    var kernel: Int, stride: Int, pad: Int, outputPadding: Int, bias: Bool
    var ho: Int { (h - 1) * stride - 2 * pad + kernel + outputPadding }
    var wo: Int { (w - 1) * stride - 2 * pad + kernel + outputPadding }
    var description: String {
        "cin \(cin) cout \(cout) b \(batch) \(h)x\(w) k\(kernel) s\(stride) p\(pad) op\(outputPadding) bias \(bias)"
    }
}

/// PyTorch ConvTranspose2d as a scatter of every input element.
private func referenceConvTranspose2d(_ c: DeconvCase, x: [Float], weight: [Float], bias: [Float]?) -> [Double] {
    let (ho, wo) = (c.ho, c.wo)
    var y = [Double](repeating: 0, count: c.cout * c.batch * ho * wo)
    for co in 0..<c.cout {
        for i in 0..<(c.batch * ho * wo) { y[co * c.batch * ho * wo + i] = bias.map { Double($0[co]) } ?? 0 }
    }
    for ci in 0..<c.cin {
        for b in 0..<c.batch {
            for iy in 0..<c.h {
                for ix in 0..<c.w {
                    let xv = Double(x[((ci * c.batch + b) * c.h + iy) * c.w + ix])
                    for co in 0..<c.cout {
                        for ky in 0..<c.kernel {
                            let oy = iy * c.stride - c.pad + ky
                            if oy < 0 || oy >= ho { continue }
                            for kx in 0..<c.kernel {
                                let ox = ix * c.stride - c.pad + kx
                                if ox < 0 || ox >= wo { continue }
                                let wv = Double(weight[((ci * c.cout + co) * c.kernel + ky) * c.kernel + kx])
                                y[((co * c.batch + b) * ho + oy) * wo + ox] += wv * xv
                            }
                        }
                    }
                }
            }
        }
    }
    return y
}

final class KernelConvTests: KernelTestCase {
    /// `packed`: through pkk_gemm_packed instead of the BLAS.
    private func run(_ c: ConvCase, scratchColumns: Int?, seed: UInt64, packed: Bool = false,
                     file: StaticString = #filePath, line: UInt = #line) {
        let input = ConvInputs(c, seed: seed)
        let (x, weight, bias, residual) = (input.x, input.weight, input.bias, input.residual)
        let kdim = c.cin / c.groups * c.kernel * c.kernel
        let ncols = c.batch * c.ho * c.wo
        let expected = input.expected(c)

        let columns = scratchColumns ?? ncols
        let scratchCount = pkk_conv2d_scratch_floats(Int32(c.cin), Int32(c.groups), Int32(c.kernel), Int32(columns))
        XCTAssertEqual(scratchCount, kdim * columns, file: file, line: line)
        let cache = packed ? pkk_weight_cache_new() : nil
        defer { pkk_weight_cache_free(cache) }
        // Packed as models do at load, then without the plain weights (ungrouped convolutions).
        let packedOnly = packed && c.groups == 1
        if packedOnly { XCTAssertNotNil(pkk_packed_weights(cache, weight, Int32(c.cout), Int32(kdim), kdim, 1), file: file, line: line) }
        // Garbage in the output and scratch: the kernel must overwrite, not accumulate.
        var y = [Float](repeating: .nan, count: c.cout * ncols)
        var scratch = [Float](repeating: 1e30, count: max(scratchCount, 1))
        let done = withOptionalPointer(packedOnly ? nil : weight) { weightPtr in
            withOptionalPointer(bias) { biasPtr in
                withOptionalPointer(residual) { residualPtr in
                    pkk_conv2d(x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w),
                               weightPtr, cache, biasPtr, Int32(c.cout),
                               Int32(c.kernel), Int32(c.stride), Int32(c.pad), Int32(c.groups),
                               residualPtr, c.relu ? 1 : 0,
                               &y, &scratch, scratchCount)
                }
            }
        }
        XCTAssertEqual(done, 1, file: file, line: line)
        assertClose(y, expected, "conv2d \(c) scratch columns \(columns) packed \(packed)", file: file, line: line)
    }

    private let cases: [ConvCase] = [
        // 1x1 stride 1 pad 0: no im2col, grouped and not
        ConvCase(cin: 5, cout: 7, batch: 3, h: 5, w: 6, kernel: 1, stride: 1, pad: 0, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 6, cout: 4, batch: 1, h: 3, w: 7, kernel: 1, stride: 1, pad: 0, groups: 2, bias: false, residual: true, relu: false),
        // 1x1 stride 2 (downsample shortcut)
        ConvCase(cin: 6, cout: 9, batch: 3, h: 7, w: 5, kernel: 1, stride: 2, pad: 0, groups: 1, bias: true, residual: false, relu: false),
        // 3x3 stride 1 and 2, pad 1
        ConvCase(cin: 4, cout: 5, batch: 1, h: 7, w: 5, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 3, cout: 6, batch: 3, h: 9, w: 7, kernel: 3, stride: 2, pad: 1, groups: 1, bias: false, residual: false, relu: true),
        ConvCase(cin: 3, cout: 4, batch: 3, h: 6, w: 8, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, residual: true, relu: false),
        ConvCase(cin: 2, cout: 3, batch: 3, h: 5, w: 6, kernel: 3, stride: 1, pad: 0, groups: 1, bias: false, residual: false, relu: false),
        // other stride-1 "same" convolutions, one with a kernel wider than the image
        ConvCase(cin: 3, cout: 4, batch: 3, h: 6, w: 5, kernel: 5, stride: 1, pad: 2, groups: 1, bias: true, residual: true, relu: false),
        ConvCase(cin: 2, cout: 3, batch: 3, h: 3, w: 2, kernel: 7, stride: 1, pad: 3, groups: 1, bias: false, residual: false, relu: true),
        // output planes over 1024 positions (the segment-wise im2col)
        ConvCase(cin: 2, cout: 3, batch: 2, h: 36, w: 34, kernel: 3, stride: 1, pad: 0, groups: 1, bias: true, residual: false, relu: false),
        ConvCase(cin: 2, cout: 2, batch: 1, h: 66, w: 67, kernel: 3, stride: 2, pad: 1, groups: 1, bias: false, residual: true, relu: true),
        // grouped 3x3
        ConvCase(cin: 8, cout: 12, batch: 3, h: 5, w: 7, kernel: 3, stride: 1, pad: 1, groups: 4, bias: true, residual: true, relu: true),
        ConvCase(cin: 6, cout: 4, batch: 1, h: 7, w: 7, kernel: 3, stride: 2, pad: 1, groups: 2, bias: false, residual: false, relu: true),
        ConvCase(cin: 8, cout: 8, batch: 3, h: 2, w: 2, kernel: 3, stride: 1, pad: 1, groups: 4, bias: true, residual: false, relu: true),
        ConvCase(cin: 4, cout: 8, batch: 3, h: 5, w: 3, kernel: 1, stride: 2, pad: 0, groups: 2, bias: true, residual: false, relu: false),
        ConvCase(cin: 4, cout: 70, batch: 2, h: 4, w: 5, kernel: 3, stride: 1, pad: 1, groups: 2, bias: true, residual: true, relu: true),
        ConvCase(cin: 4, cout: 70, batch: 2, h: 4, w: 5, kernel: 1, stride: 1, pad: 0, groups: 2, bias: true, residual: false, relu: false),
        // 7x7 stride 2 pad 3 (teacher stem)
        ConvCase(cin: 3, cout: 8, batch: 3, h: 13, w: 11, kernel: 7, stride: 2, pad: 3, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 3, cout: 5, batch: 1, h: 4, w: 5, kernel: 7, stride: 2, pad: 3, groups: 1, bias: false, residual: false, relu: false),
    ]

    func testConv2dWholeScratch() {
        for (i, c) in cases.enumerated() { run(c, scratchColumns: nil, seed: UInt64(100 + i)) }
    }

    func testConv2dTiledScratch() {
        // Scratch too small for one GEMM: tiles of 1, 5 and 13 columns, across rows and cubes.
        // With 1 and 2 threads: grouped convolutions split the scratch per thread.
        for threads: Int32 in [1, 2] {
            pkk_set_threads(threads)
            for (i, c) in cases.enumerated() {
                for columns in [1, 5, 13] { run(c, scratchColumns: columns, seed: UInt64(200 + i)) }
            }
        }
        pkk_set_threads(0)
    }

    func testConv2dPackedWeights() {
        // Whole batch, and tiles of 5, 16 and 48 columns (tails of the 6 x 16
        // and 6 x 32 blocks in both directions), on 1 and 2 threads.
        // On both kernel paths (the AVX-512 one's blocks are 32 columns wide).
        forEachKernelPath { _ in
            for threads: Int32 in [1, 2] {
                pkk_set_threads(threads)
                for (i, c) in cases.enumerated() {
                    for columns in [nil, 5, 16, 48] as [Int?] { run(c, scratchColumns: columns, seed: UInt64(250 + i), packed: true) }
                }
            }
        }
        pkk_set_threads(0)
        let wide = ConvCase(cin: 64, cout: 70, batch: 2, h: 8, w: 8, kernel: 3, stride: 1, pad: 1, groups: 1,
                            bias: true, residual: true, relu: true)  // k = 576: three k chunks
        run(wide, scratchColumns: nil, seed: 260, packed: true)
        run(wide, scratchColumns: 32, seed: 261, packed: true)
    }

    func testWithoutWeightsOrTheirPackingNothingIsWritten() {
        // Plain weights dropped (NULL): with nothing packed yet, or a scratch
        // below one im2col column, the kernels decline and leave y alone.
        let c = ConvCase(cin: 4, cout: 5, batch: 1, h: 7, w: 5, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, residual: false, relu: true)
        let kdim = c.cin * 9
        let x = [Float](repeating: 1, count: c.cin * c.h * c.w), weight = [Float](repeating: 0.5, count: c.cout * kdim)
        var y = [Float](repeating: .nan, count: c.cout * c.ho * c.wo), scratch = [Float](repeating: 0, count: kdim)
        let cache = pkk_weight_cache_new()!
        defer { pkk_weight_cache_free(cache) }
        func conv(scratchFloats: Int) -> Int32 {
            pkk_conv2d(x, Int32(c.cin), 1, Int32(c.h), Int32(c.w), nil, cache, nil, Int32(c.cout), 3, 2, 1, 1, nil, 1,
                       &y, &scratch, scratchFloats)
        }
        XCTAssertEqual(conv(scratchFloats: kdim), 0)
        XCTAssertNotNil(pkk_packed_weights(cache, weight, Int32(c.cout), Int32(kdim), kdim, 1))
        XCTAssertEqual(conv(scratchFloats: kdim - 1), 0)
        XCTAssertTrue(y.allSatisfy { $0.isNaN })
        XCTAssertEqual(conv(scratchFloats: kdim), 1)
        XCTAssertEqual(y, [Float](repeating: 0.5 * 4 * 4, count: y.count).enumerated().map { i, _ in
            // all-ones input: each output sums the taps inside the image, 0.5 per tap and channel
            let oy = (i % (c.ho * c.wo)) / c.wo, ox = i % c.wo
            let rows = (-1...1).filter { (0..<c.h).contains(2 * oy + $0) }.count
            let cols = (-1...1).filter { (0..<c.w).contains(2 * ox + $0) }.count
            return Float(rows * cols * c.cin) * 0.5
        })
        let d = DeconvCase(cin: 3, cout: 2, batch: 1, h: 2, w: 2, kernel: 3, stride: 2, pad: 1, outputPadding: 1, bias: true)
        var yd = [Float](repeating: .nan, count: d.cout * d.ho * d.wo), scratchD = [Float](repeating: 0, count: 1 << 10)
        let empty = pkk_weight_cache_new()!
        defer { pkk_weight_cache_free(empty) }
        XCTAssertEqual(pkk_conv_transpose2d(x, Int32(d.cin), 1, 2, 2, nil, empty, nil, Int32(d.cout), 3, 2, 1, 1, &yd, &scratchD, 1 << 10), 0)
        XCTAssertTrue(yd.allSatisfy { $0.isNaN })
    }

    func testConv2dLargeParallel() {
        // Big enough that im2col and the epilogue open OpenMP regions.
        let c = ConvCase(cin: 16, cout: 8, batch: 4, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1,
                         bias: true, residual: true, relu: true)
        run(c, scratchColumns: nil, seed: 300)
        run(c, scratchColumns: 700, seed: 301)
        let g = ConvCase(cin: 64, cout: 64, batch: 4, h: 8, w: 8, kernel: 3, stride: 1, pad: 1, groups: 32,
                         bias: true, residual: false, relu: true)
        run(g, scratchColumns: nil, seed: 302)
    }

    private func run(_ c: DeconvCase, scratchColumns: Int?, seed: UInt64, packed: Bool = false,
                     file: StaticString = #filePath, line: UInt = #line) {
        var rng = KernelRNG(seed: seed)
        let x = rng.floats(c.cin * c.batch * c.h * c.w)
        let weight = rng.floats(c.cin * c.cout * c.kernel * c.kernel).map { $0 / Float(c.cin) }
        let bias = c.bias ? rng.floats(c.cout) : nil
        let expected = referenceConvTranspose2d(c, x: x, weight: weight, bias: bias)
        let columns = scratchColumns ?? c.batch * c.h * c.w
        let scratchCount = pkk_conv_transpose2d_scratch_floats(Int32(c.cout), Int32(c.kernel), Int32(columns))
        XCTAssertEqual(scratchCount, c.cout * c.kernel * c.kernel * columns, file: file, line: line)
        let cache = packed ? pkk_weight_cache_new() : nil
        defer { pkk_weight_cache_free(cache) }
        // Packed as models do at load (W^T), then without the plain weights.
        let rows = c.cout * c.kernel * c.kernel
        if packed { XCTAssertNotNil(pkk_packed_weights(cache, weight, Int32(rows), Int32(c.cin), 1, rows), file: file, line: line) }
        var y = [Float](repeating: .nan, count: c.cout * c.batch * c.ho * c.wo)
        var scratch = [Float](repeating: 1e30, count: scratchCount)
        let done = withOptionalPointer(packed ? nil : weight) { weightPtr in
            withOptionalPointer(bias) { biasPtr in
                pkk_conv_transpose2d(x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w),
                                     weightPtr, cache, biasPtr, Int32(c.cout),
                                     Int32(c.kernel), Int32(c.stride), Int32(c.pad), Int32(c.outputPadding),
                                     &y, &scratch, scratchCount)
            }
        }
        XCTAssertEqual(done, 1, file: file, line: line)
        assertClose(y, expected, "conv_transpose2d \(c) scratch columns \(columns) packed \(packed)", file: file, line: line)
    }

    func testConvTranspose2d() {
        let cases = [
            // the students' upsampling: HxW -> 2Hx2W
            DeconvCase(cin: 6, cout: 5, batch: 3, h: 5, w: 3, kernel: 3, stride: 2, pad: 1, outputPadding: 1, bias: true),
            DeconvCase(cin: 4, cout: 3, batch: 1, h: 4, w: 4, kernel: 3, stride: 2, pad: 1, outputPadding: 1, bias: false),
            DeconvCase(cin: 5, cout: 4, batch: 3, h: 3, w: 4, kernel: 3, stride: 2, pad: 1, outputPadding: 0, bias: true),
            DeconvCase(cin: 3, cout: 2, batch: 2, h: 1, w: 1, kernel: 3, stride: 2, pad: 1, outputPadding: 1, bias: true),
            // other configurations
            DeconvCase(cin: 3, cout: 4, batch: 3, h: 3, w: 5, kernel: 4, stride: 2, pad: 1, outputPadding: 0, bias: true),
            DeconvCase(cin: 5, cout: 2, batch: 2, h: 5, w: 4, kernel: 3, stride: 1, pad: 1, outputPadding: 0, bias: true),
            DeconvCase(cin: 2, cout: 3, batch: 3, h: 3, w: 2, kernel: 2, stride: 3, pad: 0, outputPadding: 2, bias: false),
        ]
        for (i, c) in cases.enumerated() {
            XCTAssertTrue(c.ho > 0 && c.wo > 0)
            // whole batch, tiles cutting images, one image (+3 spare columns), two images
            let image = c.h * c.w
            for columns in [nil, 1, 4, 7, image + 3, 2 * image] as [Int?] {
                run(c, scratchColumns: columns, seed: UInt64(400 + i))
                run(c, scratchColumns: columns, seed: UInt64(400 + i), packed: true)
            }
        }
        XCTAssertEqual(cases[0].ho, 10)
        XCTAssertEqual(cases[0].wo, 6)
    }

    func testConvTranspose2dLargeParallel() {
        let c = DeconvCase(cin: 32, cout: 16, batch: 4, h: 8, w: 8, kernel: 3, stride: 2, pad: 1, outputPadding: 1, bias: true)
        run(c, scratchColumns: nil, seed: 500)
        run(c, scratchColumns: 50, seed: 501)
        run(c, scratchColumns: nil, seed: 502, packed: true)
        run(c, scratchColumns: 50, seed: 503, packed: true)
    }
}
