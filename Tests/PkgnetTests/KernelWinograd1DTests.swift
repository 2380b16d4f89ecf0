// The 1-D Winograd 3x3 convolution of narrow layers (winograd_1d.c) against
// the naive Double convolution of KernelConvTests.
import XCTest
import PkgnetKernels

final class KernelWinograd1DTests: KernelTestCase {
    /// Output channels 16 and 32 (the edge widths), 13 (a last block of 4
    /// with 3 rows past cout), 4 and 1, and in blocks of 6: 60 and 22 (a
    /// last block with 2 rows past cout); one input channel and many; both
    /// group shapes (2 tiles of 32-wide rows, 4 of 16-wide ones); images of
    /// one group and tall ones; a single 16x16 image (one group, so the
    /// threads share its output channels), also with more than 64 output
    /// channels (taken for a single image); batches of 1 to 3.
    private let cases: [ConvCase] = [
        ConvCase(cin: 16, cout: 16, batch: 3, h: 32, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 32, cout: 32, batch: 1, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 1, cout: 13, batch: 1, h: 8, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: false, residual: true, relu: false),
        ConvCase(cin: 64, cout: 4, batch: 2, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: false),
        ConvCase(cin: 5, cout: 1, batch: 1, h: 48, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 12, cout: 16, batch: 2, h: 8, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 24, cout: 60, batch: 1, h: 8, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 7, cout: 22, batch: 2, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: false, residual: false, relu: true),
        ConvCase(cin: 9, cout: 100, batch: 1, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
    ]

    /// The convolution with `scratchFloats` of garbage-filled scratch
    /// `offset` floats past a 64-byte boundary, into y (NaN-filled, or the
    /// residual itself when `inPlace`); nil when it declined, y then untouched.
    private static func conv(_ c: ConvCase, x: [Float], weight: [Float], bias: [Float]?, residual: [Float]?,
                             scratchFloats: Int, offset: Int = 0, inPlace: Bool = false) -> [Float]? {
        let s = winogradArranged(c, weight)
        let start = inPlace ? residual! : [Float](repeating: .nan, count: c.cout * c.batch * c.h * c.w)
        var y = start
        let allocated = UnsafeMutablePointer<Float>.allocate(capacity: scratchFloats + offset + 16)
        defer { allocated.deallocate() }
        let scratch = allocated + offset
        scratch.initialize(repeating: 1e30, count: scratchFloats)
        let done = withOptionalPointer(bias) { biasPtr in
            y.withUnsafeMutableBufferPointer { out in
                withOptionalPointer(inPlace ? nil : residual) { residualPtr in
                    pkk_conv3x3_winograd_1d(x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w), s, biasPtr,
                                            Int32(c.cout), inPlace ? UnsafePointer(out.baseAddress) : residualPtr,
                                            c.relu ? 1 : 0, out.baseAddress, scratch, scratchFloats)
                }
            }
        }
        if done == 0 {
            XCTAssert(zip(y, start).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(c): a declined call wrote y")
            return nil
        }
        return y
    }

    func testMatchesNaiveConvolution() throws {
        guard pkk_allow_avx512(1) != 0 else { throw XCTSkip("the 1-D Winograd kernel needs AVX-512, which this CPU lacks") }
        for threads: Int32 in [1, 2] {
            pkk_set_threads(threads)
            for (i, c) in cases.enumerated() {
                XCTAssertEqual(pkk_conv3x3_winograd_1d_takes(Int32(c.cin), Int32(c.cout), Int32(c.batch), Int32(c.h), Int32(c.w)), 1, "\(c)")
                let input = ConvInputs(c, seed: UInt64(900 + i)), expected = input.expected(c)
                let (x, weight, bias, residual) = (input.x, input.weight, input.bias, input.residual)
                let oneThread = Int(pkk_conv3x3_winograd_1d_scratch_floats(Int32(c.cin), Int32(c.cout), Int32(c.h), Int32(c.w), 1))
                let perThread = Int(pkk_conv3x3_winograd_1d_scratch_floats(Int32(c.cin), Int32(c.cout), Int32(c.h), Int32(c.w), 2))
                // A buffer per thread, and one buffer that the threads'
                // shares of the work run through in turn, from scratch that
                // starts off a 64-byte line.
                for (scratch, offset) in [(perThread, 0), (oneThread, 3)] {
                    let y = Self.conv(c, x: x, weight: weight, bias: bias, residual: residual, scratchFloats: scratch, offset: offset)
                    XCTAssertNotNil(y, "\(c): declined with \(scratch) floats of scratch")
                    if let y { assertClose(y, expected, rel: 1e-5, "winograd 1-D \(c) scratch \(scratch) threads \(threads)") }
                }
                if c.residual {
                    let y = Self.conv(c, x: x, weight: weight, bias: bias, residual: residual, scratchFloats: perThread, inPlace: true)
                    if let y { assertClose(y, expected, rel: 1e-5, "winograd 1-D \(c) in place threads \(threads)") }
                }
                XCTAssertNil(Self.conv(c, x: x, weight: weight, bias: bias, residual: residual, scratchFloats: oneThread - 1),
                             "\(c): ran with less scratch than one thread needs")
            }
        }
        pkk_set_threads(0)
    }

    func testDeclinesShapesItDoesNotTake() {
        // Widths other than 16 and 32, heights that leave a part group,
        // more than 64 output channels on 16-wide maps of more than one image,
        // 64 or more on 32-wide maps, 16 images or more (the 2-D kernel's
        // chunks per thread).
        for (cin, cout, batch, h, w) in [(16, 16, 1, 8, 8), (16, 16, 1, 32, 20), (16, 16, 1, 32, 48), (16, 16, 1, 8, 64), (16, 16, 1, 1, 16),
                                         (16, 16, 1, 8, 16), (16, 16, 1, 4, 32), (16, 16, 1, 12, 32), (64, 128, 2, 16, 16),
                                         (32, 66, 2, 16, 16), (24, 64, 1, 8, 32), (16, 16, 16, 32, 32),
                                         (16, 32, 16, 16, 16)] {
            XCTAssertEqual(pkk_conv3x3_winograd_1d_takes(Int32(cin), Int32(cout), Int32(batch), Int32(h), Int32(w)), 0,
                           "\(cin)->\(cout) \(batch)x\(h)x\(w)")
        }
        forEachKernelPath { path in
            let takes = pkk_conv3x3_winograd_1d_takes(16, 16, 1, 32, 32) != 0
            XCTAssertEqual(takes, path == "AVX-512", "\(path): the 1-D Winograd kernel runs with AVX-512 only")
        }
    }
}
