// pkk_gemm_packed against a plain Double GEMM.
import XCTest
import PkgnetKernels

final class KernelPackedGemmTests: KernelTestCase {
    private struct Case {
        let m, n, k: Int
        let bias, residual, relu: Bool
    }

    /// Rows that are not multiples of the 6-row block, columns around the
    /// 8/16/32 block sizes (32: the AVX-512 path's), k over one and several 256-long chunks, small and
    /// large A (50 row blocks: two L2 groups of the walk).
    private let cases: [Case] = [
        Case(m: 1, n: 1, k: 1, bias: true, residual: false, relu: false),
        Case(m: 5, n: 8, k: 3, bias: false, residual: true, relu: true),
        Case(m: 6, n: 9, k: 256, bias: true, residual: true, relu: false),
        Case(m: 7, n: 16, k: 257, bias: true, residual: false, relu: true),
        Case(m: 13, n: 17, k: 600, bias: false, residual: false, relu: false),
        Case(m: 64, n: 40, k: 64, bias: true, residual: true, relu: true),
        Case(m: 9, n: 48, k: 20, bias: true, residual: false, relu: true),
        Case(m: 12, n: 64, k: 40, bias: false, residual: true, relu: false),
        Case(m: 300, n: 33, k: 300, bias: true, residual: true, relu: true),  // two row-block groups, two k chunks
    ]

    /// C [m][n] inside rows ldc = n + 5 wide (the gaps must stay untouched);
    /// B inside rows ldb = n + 3 wide whose extra columns are NaN: they must
    /// not reach C.
    private func gemm(_ c: Case, a: [Float], b: [Float], bias: [Float]?, residual: [Float]?) -> (c: [Float], ldc: Int) {
        let ldb = c.n + 3
        var bPadded = [Float](repeating: .nan, count: c.k * ldb)
        for i in 0..<c.k { for j in 0..<c.n { bPadded[i * ldb + j] = b[i * c.n + j] } }
        var packed = [Float](repeating: .nan, count: pkk_packed_weight_floats(Int32(c.m), Int32(c.k)))
        pkk_pack_weights(a, Int32(c.m), Int32(c.k), c.k, 1, &packed)
        let ldc = c.n + 5
        var out = [Float](repeating: -7, count: c.m * ldc)
        var res: [Float]? = nil
        if let residual {
            var r = [Float](repeating: .nan, count: c.m * ldc)
            for i in 0..<c.m { for j in 0..<c.n { r[i * ldc + j] = residual[i * c.n + j] } }
            res = r
        }
        withOptionalPointer(bias) { biasPtr in
            withOptionalPointer(res) { resPtr in
                pkk_gemm_packed(packed, Int32(c.m), Int32(c.n), Int32(c.k), bPadded, ldb, &out, ldc, biasPtr, resPtr,
                                c.relu ? 1 : 0)
            }
        }
        return (out, ldc)
    }

    func testMatchesDoubleReference() {
        forEachKernelPath { path in
            for threads: Int32 in [1, 2] {
                pkk_set_threads(threads)
                for (index, c) in cases.enumerated() {
                    var rng = KernelRNG(seed: UInt64(1000 + index))
                    let a = rng.floats(c.m * c.k), b = rng.floats(c.k * c.n)
                    let bias = c.bias ? rng.floats(c.m) : nil
                    let residual = c.residual ? rng.floats(c.m * c.n) : nil
                    let (out, ldc) = gemm(c, a: a, b: b, bias: bias, residual: residual)
                    var expected = [Double](repeating: 0, count: c.m * c.n)
                    var actual = [Float](repeating: 0, count: c.m * c.n)
                    for i in 0..<c.m {
                        for j in 0..<c.n {
                            var sum = 0.0
                            for p in 0..<c.k { sum += Double(a[i * c.k + p]) * Double(b[p * c.n + j]) }
                            if let bias { sum += Double(bias[i]) }
                            if let residual { sum += Double(residual[i * c.n + j]) }
                            expected[i * c.n + j] = c.relu ? max(sum, 0) : sum
                            actual[i * c.n + j] = out[i * ldc + j]
                        }
                        for j in c.n..<ldc { XCTAssertEqual(out[i * ldc + j], -7, "\(c): wrote C[\(i)][\(j)] outside n") }
                    }
                    // Sums of k products of values in [-1, 1]: error relative to sqrt(k).
                    assertClose(actual, expected, rel: 1e-5, floor: Double(c.k).squareRoot(), "packed gemm \(c) threads \(threads) \(path)")
                }
            }
        }
        pkk_set_threads(0)
    }

    func testSameBitsOnOneAndTwoThreads() {
        let c = Case(m: 70, n: 200, k: 700, bias: true, residual: true, relu: false)
        var rng = KernelRNG(seed: 1100)
        let a = rng.floats(c.m * c.k), b = rng.floats(c.k * c.n), bias = rng.floats(c.m), residual = rng.floats(c.m * c.n)
        forEachKernelPath { path in
            var results: [[Float]] = []
            for threads: Int32 in [1, 2] {
                pkk_set_threads(threads)
                results.append(gemm(c, a: a, b: b, bias: bias, residual: residual).c)
            }
            pkk_set_threads(0)
            XCTAssertEqual(results[0], results[1], path)
        }
    }

    func testPackingWithStrides() {
        // A = W^T for W [k][m] (the transposed convolution's weights): row
        // stride 1, column stride m; rows past m are zero.
        let (m, k) = (8, 3)
        var rng = KernelRNG(seed: 1200)
        let w = rng.floats(k * m)
        var packed = [Float](repeating: .nan, count: pkk_packed_weight_floats(Int32(m), Int32(k)))
        XCTAssertEqual(packed.count, 12 * k)
        pkk_pack_weights(w, Int32(m), Int32(k), 1, m, &packed)
        for row in 0..<12 {
            for p in 0..<k {
                let expected: Float = row < m ? w[p * m + row] : 0
                XCTAssertEqual(packed[((row / 6) * k + p) * 6 + row % 6], expected, "A[\(row)][\(p)]")
            }
        }
    }
}
