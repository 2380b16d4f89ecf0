// The 3x3 stride-2 convolution from the input's phases (strided3x3.c), as
// pkk_conv2d runs it for packed weights on AVX-512, against the naive
// Double convolution of KernelConvTests.
import XCTest
import PkgnetKernels

final class KernelStrided3x3Tests: KernelTestCase {
    /// Both output widths (16: 32-wide inputs; 8: 16-wide ones), one block
    /// per image and several; output channels in whole blocks of 6 and with
    /// a last block of 1 or 4 rows; 40 input channels (a reduction of 360,
    /// three of the packing's chunks of 128); bias, residual, ReLU each on and off.
    private let cases: [ConvCase] = [
        ConvCase(cin: 16, cout: 32, batch: 3, h: 32, w: 32, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 32, cout: 64, batch: 2, h: 16, w: 16, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 5, cout: 7, batch: 1, h: 8, w: 32, kernel: 3, stride: 2, pad: 1, groups: 1, bias: false, residual: true, relu: false),
        ConvCase(cin: 3, cout: 12, batch: 2, h: 48, w: 16, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, residual: false, relu: false),
        ConvCase(cin: 40, cout: 6, batch: 1, h: 16, w: 32, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, residual: false, relu: true),
    ]

    /// pkk_conv2d on weights packed as models pack them, with `scratchFloats`
    /// of garbage-filled scratch, into NaN-filled y.
    private static func conv(_ c: ConvCase, x: [Float], weight: [Float], bias: [Float]?, residual: [Float]?,
                             scratchFloats: Int) -> [Float] {
        let cache = pkk_weight_cache_new()
        defer { pkk_weight_cache_free(cache) }
        XCTAssertNotNil(pkk_packed_weights(cache, weight, Int32(c.cout), Int32(c.cin * 9), c.cin * 9, 1))
        var y = [Float](repeating: .nan, count: c.cout * c.batch * c.ho * c.wo)
        var scratch = [Float](repeating: 1e30, count: scratchFloats)
        let done = withOptionalPointer(bias) { biasPtr in
            withOptionalPointer(residual) { residualPtr in
                pkk_conv2d(x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w), nil, cache, biasPtr, Int32(c.cout),
                           3, 2, 1, 1, residualPtr, c.relu ? 1 : 0, &y, &scratch, scratchFloats)
            }
        }
        XCTAssertEqual(done, 1, "\(c)")
        return y
    }

    func testMatchesNaiveConvolution() throws {
        guard pkk_allow_avx512(1) != 0 else { throw XCTSkip("the phase kernel needs AVX-512, which this CPU lacks") }
        for (i, c) in cases.enumerated() {
            let input = ConvInputs(c, seed: UInt64(950 + i)), expected = input.expected(c)
            let (x, weight, bias, residual) = (input.x, input.weight, input.bias, input.residual)
            var byThreads: [[Float]] = []
            for threads: Int32 in [1, 2] {
                pkk_set_threads(threads)
                let y = Self.conv(c, x: x, weight: weight, bias: bias, residual: residual, scratchFloats: 1 << 18)
                assertClose(y, expected, "phases \(c) threads \(threads)")
                byThreads.append(y)
            }
            XCTAssert(zip(byThreads[0], byThreads[1]).allSatisfy { $0.bitPattern == $1.bitPattern },
                      "\(c): 1 and 2 threads differ")
            // A scratch of 5 im2col columns holds less than one image's
            // phases: the GEMM path runs, to the same tolerance.
            let gemm = Self.conv(c, x: x, weight: weight, bias: bias, residual: residual, scratchFloats: 5 * c.cin * 9)
            assertClose(gemm, expected, "GEMM \(c)")
        }
        pkk_set_threads(0)
    }
}
