// Weights read in place from a model file's bytes (pkk_weight_source):
// conversion and row scaling against Swift's own conversions in Double, and
// the arrangements made from a source against their index formulas.
import XCTest
import PkgnetKernels

final class KernelWeightSourceTests: KernelTestCase {
    /// A tensor stored as a file would: `values` encoded as `dtype`, one byte
    /// past an aligned address (a file's data has no alignment guarantee), and
    /// the fp32 value each element must read as before scaling.
    private struct Stored {
        let bytes: [UInt8]
        let dtype: Int32
        let expected: [Float]

        init(_ values: [Float], dtype: Int32) {
            self.dtype = dtype
            var bytes: [UInt8] = [0xAB]
            var expected: [Float] = []
            for v in values {
                switch dtype {
                case Int32(PKK_DTYPE_F16):
                    let h = Float16(v)
                    withUnsafeBytes(of: h.bitPattern.littleEndian) { bytes += $0 }
                    expected.append(Float(h))
                case Int32(PKK_DTYPE_BF16):
                    let top = UInt16(truncatingIfNeeded: v.bitPattern >> 16)
                    withUnsafeBytes(of: top.littleEndian) { bytes += $0 }
                    expected.append(Float(bitPattern: UInt32(top) << 16))
                default:
                    withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
                    expected.append(v)
                }
            }
            self.bytes = bytes
            self.expected = expected
        }

        /// body gets the source over these bytes, rows scaled by `scale`; returns its nonfinite flag too.
        func withSource<R>(scale: [Double]?, _ body: (inout pkk_weight_source) -> R) -> (R, nonfinite: Bool) {
            bytes.withUnsafeBytes { raw in
                withOptionalDoubles(scale) { scalePointer in
                    var source = pkk_weight_source(data: raw.baseAddress! + 1, dtype: dtype, row_scale: scalePointer, nonfinite: 0)
                    let result = body(&source)
                    return (result, source.nonfinite != 0)
                }
            }
        }
    }

    private static let dtypes: [(Int32, String)] = [
        (Int32(PKK_DTYPE_F32), "F32"), (Int32(PKK_DTYPE_F16), "F16"), (Int32(PKK_DTYPE_BF16), "BF16"),
    ]

    /// Row r's element scaled as BatchNorm folding does: in Double, rounded once.
    private static func scaled(_ v: Float, _ scale: [Double]?, row: Int) -> Float {
        scale.map { Float(Double(v) * $0[row]) } ?? v
    }

    func testReadConvertsAndScalesEachStoredType() {
        let (rows, rowLength) = (5, 37)
        var rng = KernelRNG(seed: 3100)
        let values = rng.floats(rows * rowLength, -3, 3)
        let scale = (0..<rows).map { _ in Double(rng.float(0.1, 4)) / 3 }
        for (dtype, name) in Self.dtypes {
            let stored = Stored(values, dtype: dtype)
            for rowScale in [nil, scale] {
                let (out, nonfinite) = stored.withSource(scale: rowScale) { source in
                    var out = [Float](repeating: .nan, count: rows * rowLength)
                    pkk_weight_source_read(&source, rows, rowLength, &out)
                    return out
                }
                let expected = stored.expected.enumerated().map { Self.scaled($1, rowScale, row: $0 / rowLength) }
                XCTAssertEqual(out, expected, "\(name), scaled \(rowScale != nil)")
                XCTAssertFalse(nonfinite, name)
            }
        }
    }

    func testStoredNaNOrInfinityIsFlagged() {
        for (dtype, name) in Self.dtypes {
            for bad in [Float.nan, .infinity, -.infinity] {
                var values = [Float](repeating: 0.5, count: 40)
                values[33] = bad
                let (_, nonfinite) = Stored(values, dtype: dtype).withSource(scale: nil) { source in
                    var out = [Float](repeating: 0, count: 40)
                    pkk_weight_source_read(&source, 1, 40, &out)
                }
                XCTAssertTrue(nonfinite, "\(name) \(bad)")
            }
        }
    }

    /// S[k][cb][ci][r] = weight[cb * rows + r][ci][k] (0 past cout), for runs
    /// of input channels that end mid-run (70) and both block heights (6 rows
    /// for 13 outputs, 4 for 16), on 1 and 2 threads.
    func testWinogradArrangementFromSource() {
        for (cin, cout) in [(70, 13), (5, 16), (130, 7)] {
            var rng = KernelRNG(seed: UInt64(3200 + cin))
            let values = rng.floats(cout * cin * 9)
            let scale = (0..<cout).map { _ in Double(rng.float(0.1, 4)) / 3 }
            let mr = Int(pkk_winograd_block_rows(Int32(cout)))
            let floats = pkk_winograd_weight_floats(Int32(cin), Int32(cout))
            let rows = floats / (9 * cin)
            for (dtype, name) in Self.dtypes {
                let stored = Stored(values, dtype: dtype)
                for threads: Int32 in [1, 2] {
                    pkk_set_threads(threads)
                    let (s, _) = stored.withSource(scale: scale) { source in
                        var s = [Float](repeating: .nan, count: floats)
                        pkk_winograd_arrange_source(&source, Int32(cin), Int32(cout), &s)
                        return s
                    }
                    var expected = [Float](repeating: 0, count: floats)
                    for k in 0..<9 {
                        for cb in 0..<(rows / mr) {
                            for ci in 0..<cin {
                                for r in 0..<mr where cb * mr + r < cout {
                                    let co = cb * mr + r
                                    expected[k * rows * cin + (cb * cin + ci) * mr + r] =
                                        Self.scaled(stored.expected[(co * cin + ci) * 9 + k], scale, row: co)
                                }
                            }
                        }
                    }
                    XCTAssertEqual(s, expected, "\(name) cin \(cin) cout \(cout) threads \(threads)")
                }
            }
        }
        pkk_set_threads(0)
    }

    /// The GEMM's packing, A[row][i] at [chunk of 128][row block][i][6], from
    /// rows stored contiguously (scaled: a convolution with BatchNorm), from
    /// columns (W^T of a transposed convolution, unscaled and scaled), and
    /// with neither stride 1.
    func testPackingFromSource() {
        let (m, k) = (13, 300)
        var rng = KernelRNG(seed: 3300)
        let values = rng.floats(m * k * 2)
        let scale = (0..<m).map { _ in Double(rng.float(0.1, 4)) / 3 }
        let layouts: [(rowStride: Int, colStride: Int, scale: [Double]?, what: String)] = [
            (k, 1, scale, "rows, scaled"), (1, m, nil, "columns"), (1, m, scale, "columns, scaled"),
            (2 * k, 2, nil, "strided"),
        ]
        let rows = (m + 5) / 6 * 6
        for (dtype, name) in Self.dtypes {
            let stored = Stored(values, dtype: dtype)
            for layout in layouts {
                let cache = pkk_weight_cache_new()!
                defer { pkk_weight_cache_free(cache) }
                let (packed, _) = stored.withSource(scale: layout.scale) { source -> [Float] in
                    guard let a = pkk_packed_weights_from(cache, &source, Int32(m), Int32(k), layout.rowStride, layout.colStride) else {
                        return []
                    }
                    return Array(UnsafeBufferPointer(start: a, count: pkk_packed_weight_floats(Int32(m), Int32(k))))
                }
                var expected = [Float](repeating: 0, count: rows * k)
                for k0 in stride(from: 0, to: k, by: 128) {
                    let kc = min(128, k - k0)
                    for row in 0..<m {
                        for i in 0..<kc {
                            let e = row * layout.rowStride + (k0 + i) * layout.colStride
                            expected[k0 * rows + ((row / 6) * kc + i) * 6 + row % 6] =
                                Self.scaled(stored.expected[e], layout.scale, row: row)
                        }
                    }
                }
                XCTAssertEqual(packed, expected, "\(name), \(layout.what)")
            }
        }
    }
}

private func withOptionalDoubles<R>(_ array: [Double]?, _ body: (UnsafePointer<Double>?) -> R) -> R {
    guard let array else { return body(nil) }
    return array.withUnsafeBufferPointer { body($0.baseAddress) }
}
