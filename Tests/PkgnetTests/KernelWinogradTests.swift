// Winograd F(4x4, 3x3), and the packed GEMM on the same arranged weights, against
// the naive Double convolution of KernelConvTests.
import Dispatch
import XCTest
import PkgnetKernels

final class KernelWinogradTests: KernelTestCase {
    /// Shapes that cover whole and cut tiles (sides not divisible by 4), one
    /// tile per image (4x4: a lane group spans images), one-pixel images,
    /// channel counts that are not multiples of the 6-row register block,
    /// batches of a multiple of 16 with sides of a multiple of 4 (tiles in
    /// image-interleaved order with AVX-512).
    private let cases: [ConvCase] = [
        ConvCase(cin: 8, cout: 7, batch: 3, h: 8, w: 8, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 12, cout: 13, batch: 2, h: 7, w: 5, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 16, cout: 32, batch: 21, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1, bias: false, residual: true, relu: false),
        ConvCase(cin: 5, cout: 6, batch: 1, h: 33, w: 17, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: false),
        ConvCase(cin: 9, cout: 3, batch: 4, h: 1, w: 1, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 24, cout: 20, batch: 2, h: 32, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: true),
        ConvCase(cin: 10, cout: 7, batch: 32, h: 8, w: 12, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 6, cout: 8, batch: 16, h: 32, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: false, residual: false, relu: true),
        ConvCase(cin: 16, cout: 13, batch: 16, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: false),
        // 80 tiles in 6-row blocks: a 4-block step of the AVX-512 products, then a lone block
        ConvCase(cin: 16, cout: 12, batch: 5, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
    ]

    /// Runs Winograd (or, with `packed`, the packed GEMM) on the arranged
    /// weights with `scratchFloats` of garbage-filled scratch that starts
    /// `offset` floats past a 64-byte boundary; nil when it declined (y must
    /// then be untouched).
    private static func conv(_ c: ConvCase, _ input: ConvInputs, scratchFloats: Int, offset: Int = 0,
                             packed: OpaquePointer? = nil) -> [Float]? {
        var y = [Float](repeating: .nan, count: c.cout * c.batch * c.h * c.w)
        let allocated = UnsafeMutableRawPointer.allocate(byteCount: (max(scratchFloats, 1) + offset) * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: max(scratchFloats, 1) + offset)
        defer { allocated.deallocate() }
        let scratch = allocated + offset
        scratch.initialize(repeating: 1e30, count: max(scratchFloats, 1))
        let s = winogradArranged(c, input.weight)
        let done = withOptionalPointer(input.bias) { biasPtr in
            withOptionalPointer(input.residual) { residualPtr in
                if let packed {
                    return pkk_conv3x3_packed(input.x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w), s, packed,
                                              biasPtr, Int32(c.cout), residualPtr, c.relu ? 1 : 0, &y, scratch, scratchFloats)
                }
                return pkk_conv3x3_winograd(input.x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w), s, biasPtr,
                                            Int32(c.cout), residualPtr, c.relu ? 1 : 0, &y, scratch, scratchFloats)
            }
        }
        if done == 0 {
            XCTAssert(y.allSatisfy { $0.isNaN }, "\(c): a declined call wrote y")
            return nil
        }
        return y
    }

    /// Scratch for chunks of `tiles` tiles on the current thread count.
    private static func scratchFloats(_ c: ConvCase, tiles: Int) -> Int {
        pkk_winograd_scratch_floats(Int32(c.cin), Int32(c.cout), Int32(c.batch), Int32(c.h), Int32(c.w), Int32(tiles))
    }

    /// body(case, its inputs, the reference output, where) for each case, on
    /// both kernel paths and on 1 and 2 threads.
    private static func forEachCase(_ cases: [ConvCase], _ body: (ConvCase, ConvInputs, [Double], String) -> Void) {
        forEachKernelPath { path in
            for threads: Int32 in [1, 2] {
                pkk_set_threads(threads)
                for (i, c) in cases.enumerated() {
                    let input = ConvInputs(c, seed: UInt64(500 + i))
                    let expected = input.expected(c)
                    body(c, input, expected, "threads \(threads) \(path)")
                }
            }
        }
        pkk_set_threads(0)
    }

    func testMatchesDirectConvolution() {
        Self.forEachCase(cases) { c, input, expected, place in
            let tiles = c.batch * ((c.h + 3) / 4) * ((c.w + 3) / 4)
            // Whole batch in one chunk, chunks of one register block (16 tiles),
            // and of 80 tiles (chunks that start inside a position or a group).
            for chunk in Set([tiles, 16, min(tiles, 80)]) {
                guard let y = Self.conv(c, input, scratchFloats: Self.scratchFloats(c, tiles: chunk)) else {
                    XCTFail("\(c): declined with scratch for \(chunk) tiles")
                    continue
                }
                assertClose(y, expected, rel: 1e-5, "winograd \(c) chunk \(chunk) \(place)")
            }
        }
    }

    func testOutputChannelsInChunksOfRows() {
        // The transformed weights (36 x 102 rows x 96 floats) exceed a thread's
        // buffer (128 Ki floats): each thread makes and multiplies them a chunk
        // of output channels at a time, 3 chunks on 1 thread, 2 on 2.
        let c = ConvCase(cin: 96, cout: 100, batch: 2, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true)
        Self.forEachCase([c]) { c, input, expected, place in
            guard let y = Self.conv(c, input, scratchFloats: Self.scratchFloats(c, tiles: 0)) else {
                XCTFail("\(c): declined")
                return
            }
            assertClose(y, expected, rel: 1e-5, "winograd \(c) \(place)")
        }
    }

    func testFewBlocksOfTilesWithManyChannels() {
        // At most 32 tiles (4x4 maps of 16, 9 and 17 images: one block of
        // tiles, or two with one tile in the second): with AVX-512 the
        // products run turned around, the threads splitting 25 register
        // blocks of output channels into groups of up to 8 (a last one of 1
        // to 5), the 160 input channels in pieces (59 per piece for 36 points
        // in a 128 Ki-float buffer, 43 with two blocks), the sums kept
        // between pieces. Errors relative to the output's largest value:
        // Winograd's rounding scales with the layer's magnitude, not with
        // each output's.
        let cases = [16, 9, 17].map {
            ConvCase(cin: 160, cout: 150, batch: $0, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true)
        }
        Self.forEachCase(cases) { c, input, expected, place in
            guard let y = Self.conv(c, input, scratchFloats: Self.scratchFloats(c, tiles: 0)) else {
                XCTFail("\(c): declined")
                return
            }
            let largest = expected.map(abs).max() ?? 1
            assertClose(y, expected, rel: 1e-5, floor: largest, "winograd \(c) \(place)")
        }
    }

    func testSameBitsOnOneAndTwoThreads() {
        let c = cases[5]
        let input = ConvInputs(c, seed: 600)
        forEachKernelPath { path in
            var results: [[Float]] = []
            for threads: Int32 in [1, 2] {
                pkk_set_threads(threads)
                results.append(Self.conv(c, input, scratchFloats: Self.scratchFloats(c, tiles: 48)) ?? [])
            }
            pkk_set_threads(0)
            XCTAssertEqual(results[0], results[1], path)
        }
    }

    /// The tile order changes which lane computes a tile, not its sums: 32
    /// images (image-interleaved order with AVX-512) give the same bits as
    /// the same 32 among 33 (image order), in chunks that start inside a
    /// position.
    func testImageInterleavedOrderGivesTheSameBits() {
        let c = cases[6], plane = c.h * c.w
        var c33 = c
        c33.batch = 33
        let input = ConvInputs(c, seed: 620), extra = ConvInputs(c33, seed: 621)
        /// Per channel, the 32 images of `a`, then the first image of `b`.
        func withImage33(_ a: [Float], _ b: [Float], channels: Int) -> [Float] {
            var out: [Float] = []
            for ch in 0..<channels {
                out += a[(ch * 32 * plane)..<((ch + 1) * 32 * plane)]
                out += b[(ch * 33 * plane)..<(ch * 33 * plane + plane)]
            }
            return out
        }
        let input33 = ConvInputs(x: withImage33(input.x, extra.x, channels: c.cin), weight: input.weight, bias: input.bias,
                             residual: withImage33(input.residual!, extra.residual!, channels: c.cout))
        forEachKernelPath { path in
            guard let y = Self.conv(c, input, scratchFloats: Self.scratchFloats(c, tiles: 80)),
                  let y33 = Self.conv(c33, input33, scratchFloats: Self.scratchFloats(c33, tiles: 80)) else {
                XCTFail("\(c): declined")
                return
            }
            var first32: [Float] = []
            for ch in 0..<c.cout { first32 += y33[(ch * 33 * plane)..<(ch * 33 * plane + 32 * plane)] }
            XCTAssertEqual(y, first32, path)
        }
    }

    /// With AVX-512, 32-wide maps of a height divisible by 8 and 16-wide ones
    /// of a height divisible by 16 run whole chunks per thread when the
    /// scratch holds them: a single image split over two threads (chunks of
    /// 16 or 32 tiles), chunks of two 8-row images and a last one of 16 tiles
    /// (5 images), chunks that cross images (40 rows), 17 16x16 images (9
    /// chunks of 32, the last of 16), 70 output channels (a last register
    /// block 2 rows past cout), weights whose transform is not a whole
    /// number of 64-byte lines, and the residual as y itself; also from
    /// scratch off a 64-byte line.
    func testSixteenAndThirtyTwoWideMapsInChunksPerThread() {
        let wide = [
            ConvCase(cin: 24, cout: 70, batch: 17, h: 16, w: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
            ConvCase(cin: 3, cout: 70, batch: 5, h: 8, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
            ConvCase(cin: 16, cout: 64, batch: 1, h: 32, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: true),
            ConvCase(cin: 20, cout: 16, batch: 3, h: 40, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: false, residual: true, relu: false),
            // U of 36 x 6 x 3 floats, not a multiple of 16: V after it must still be 64-byte aligned
            ConvCase(cin: 3, cout: 6, batch: 2, h: 8, w: 32, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: true),
        ]
        Self.forEachCase(wide) { c, input, expected, place in
            for offset in [0, 3] {
                guard let y = Self.conv(c, input, scratchFloats: 1 << 21, offset: offset) else {
                    XCTFail("\(c): declined")
                    continue
                }
                assertClose(y, expected, rel: 1e-5, "winograd \(c) offset \(offset) \(place)")
            }
            guard var y = input.residual else { return }
            let s = winogradArranged(c, input.weight)
            var scratch = [Float](repeating: 1e30, count: 1 << 21)
            let done = withOptionalPointer(input.bias) { biasPtr in
                y.withUnsafeMutableBufferPointer { out in
                    pkk_conv3x3_winograd(input.x, Int32(c.cin), Int32(c.batch), Int32(c.h), Int32(c.w), s, biasPtr,
                                         Int32(c.cout), UnsafePointer(out.baseAddress), c.relu ? 1 : 0, out.baseAddress,
                                         &scratch, scratch.count)
                }
            }
            XCTAssertEqual(done, 1, "\(c) in place")
            assertClose(y, expected, rel: 1e-5, "winograd \(c) in place \(place)")
        }
    }

    /// Where the scratch holds chunks per thread for 1 thread but not for 64
    /// (a 32-wide map), the 64 run the chunked passes: the same bits, so a
    /// cube's scores do not depend on which of the two ran.
    func testChunksPerThreadAndChunkedPassesGiveTheSameBits() {
        let c = cases[5]
        let input = ConvInputs(c, seed: 640)
        forEachKernelPath { path in
            pkk_set_threads(64)
            let scratch = Self.scratchFloats(c, tiles: 16)
            let chunked = Self.conv(c, input, scratchFloats: scratch)
            pkk_set_threads(1)
            let perThread = Self.conv(c, input, scratchFloats: scratch)
            pkk_set_threads(0)
            guard let chunked, let perThread else { return XCTFail("\(c): declined \(path)") }
            XCTAssertTrue(chunked == perThread,
                          "\(path): \(zip(chunked, perThread).filter { $0.bitPattern != $1.bitPattern }.count) values differ")
        }
    }

    func testScratchOfAnyAlignment() {
        // Float-aligned scratch 4, 16 and 32 bytes past a 64-byte boundary
        // (Swift arrays are 16-byte aligned): the kernel aligns V and M itself.
        let c = cases[2]
        let input = ConvInputs(c, seed: 650)
        let expected = input.expected(c)
        forEachKernelPath { path in
            for offset in [1, 4, 8] {
                guard let y = Self.conv(c, input, scratchFloats: Self.scratchFloats(c, tiles: 16), offset: offset) else {
                    XCTFail("\(c): declined scratch \(offset) floats past 64 bytes")
                    continue
                }
                assertClose(y, expected, rel: 1e-5, "winograd \(c) scratch offset \(offset) \(path)")
            }
        }
    }

    func testDeclinesWhenScratchHoldsLessThanOneBlock() {
        let c = cases[0]
        XCTAssertNil(Self.conv(c, ConvInputs(c, seed: 700), scratchFloats: Self.scratchFloats(c, tiles: 16) - 1))
    }

    /// Calls of at most 16 pixels in all, whose packed path (with AVX-512 and
    /// room in the scratch) is the product with the roles swapped, against W^T
    /// kept in the cache: output channels past a 64-column panel (100, 70) and
    /// in blocks of 4 (32, 3), input channels over more than one GEMM chunk
    /// (130 x 9 = 1170 > 256), and a pixel count that is not a multiple of the
    /// 6-row register block (15).
    private let fewPixelCases: [ConvCase] = [
        ConvCase(cin: 40, cout: 100, batch: 1, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
        ConvCase(cin: 130, cout: 70, batch: 1, h: 3, w: 5, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: false, relu: false),
        ConvCase(cin: 8, cout: 32, batch: 4, h: 2, w: 2, kernel: 3, stride: 1, pad: 1, groups: 1, bias: false, residual: true, relu: true),
    ]

    func testPackedPathMatchesDirectConvolution() {
        // The same arranged weights as a GEMM: the path for few tiles. Blocks of
        // 6 rows are read as they are (cout 6, and 64 = 10 x 6 + 4 with more input
        // channels than one GEMM chunk of 128), blocks of 4 packed again. With
        // one column of scratch the few-pixel cases take the direct GEMM too;
        // with 1 << 16 floats, the swapped product. 16 pixels with weights too
        // large to transpose (9 x 200 x 150 floats): with 1 << 16 floats, one
        // tile of 16 columns, whose im2col the AVX-512 product turned around
        // (pkk_conv3x3_sixteen_pixels) reads in place: 15 pieces of 128 sums,
        // 25 blocks of 6 output channels in groups of 8 and a last of 1 to 5.
        let sixteenColumns = ConvCase(cin: 200, cout: 150, batch: 1, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1,
                                      bias: true, residual: true, relu: true)
        let cases = self.cases + fewPixelCases + [
            ConvCase(cin: 300, cout: 64, batch: 2, h: 4, w: 4, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, residual: true, relu: true),
            sixteenColumns,
        ]
        Self.forEachCase(cases) { c, input, expected, place in
            let cache = pkk_weight_cache_new()!
            defer { pkk_weight_cache_free(cache) }
            // Scratch of one im2col column (9 cin floats), and of many.
            for scratch in [9 * c.cin, 1 << 16] {
                guard let y = Self.conv(c, input, scratchFloats: scratch, packed: cache) else {
                    XCTFail("\(c): packed path declined \(scratch) floats of scratch")
                    continue
                }
                assertClose(y, expected, rel: 1e-5, "packed \(c) scratch \(scratch) \(place)")
            }
            XCTAssertNil(Self.conv(c, input, scratchFloats: 9 * c.cin - 1, packed: cache), "\(c)")
        }
        // Scratch off a 64-byte line: the 16-column tile is copied, not read in place.
        let c = sixteenColumns
        let input = ConvInputs(c, seed: 700)
        let cache = pkk_weight_cache_new()!
        defer { pkk_weight_cache_free(cache) }
        for offset in [1, 4, 8] {
            let y = Self.conv(c, input, scratchFloats: 1 << 16, offset: offset, packed: cache)
            XCTAssertNotNil(y, "\(c): declined scratch \(offset) floats past 64 bytes")
            if let y { assertClose(y, input.expected(c), rel: 1e-5, "packed \(c) scratch offset \(offset)") }
        }
    }

    func testSharedPackingFromConcurrentFirstCalls() {
        // Eight threads race to pack the arranged weights (and, for a few
        // pixels, to transpose them); all must see one array.
        for c in [cases[1], fewPixelCases[0]] { Self.raceFirstCalls(c) }
    }

    private static func raceFirstCalls(_ c: ConvCase) {
        let input = ConvInputs(c, seed: 800)
        let expected = input.expected(c)
        final class Shared: @unchecked Sendable {  // each thread writes its own slot
            let cache = pkk_weight_cache_new()!
            let outputs = UnsafeMutableBufferPointer<[Float]>.allocate(capacity: 8)
            init() { outputs.initialize(repeating: []) }
            deinit {
                pkk_weight_cache_free(cache)
                outputs.deallocate()
            }
        }
        let shared = Shared()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            pkk_set_threads(1)
            shared.outputs[i] = Self.conv(c, input, scratchFloats: 1 << 14, packed: shared.cache) ?? []
        }
        for y in shared.outputs { assertClose(y, expected, rel: 1e-5, "concurrent packing \(c)") }
    }

    func testTransformedWeightsAreGgGt() {
        // U[p][cb][ci][r] = (G g G^T)[p] with G of F(4x4, 3x3) for output channel cb * block + r
        // (through the arrangement S that models keep):
        // blocks of 6 rows (7 and 12 output channels) and of 4 (16, where 6 would pad to 18).
        XCTAssertEqual([7, 12, 16, 32, 64].map { Int(pkk_winograd_block_rows(Int32($0))) }, [4, 6, 4, 4, 6])
        let g: [[Double]] = [[0.25, 0, 0], [-1 / 6.0, -1 / 6.0, -1 / 6.0], [-1 / 6.0, 1 / 6.0, -1 / 6.0],
                             [1 / 24.0, 1 / 12.0, 1 / 6.0], [1 / 24.0, -1 / 12.0, 1 / 6.0], [0, 0, 1]]
        forEachKernelPath { path in
            for (cin, cout) in [(2, 7), (3, 12), (2, 16), (40, 30)] {
                var rng = KernelRNG(seed: 900)
                let weight = rng.floats(cout * cin * 9)
                let block = Int(pkk_winograd_block_rows(Int32(cout)))
                let rows = (cout + block - 1) / block * block
                var s = [Float](repeating: .nan, count: pkk_winograd_weight_floats(Int32(cin), Int32(cout)))
                XCTAssertEqual(s.count, 9 * rows * cin)
                pkk_winograd_arrange_weights(weight, Int32(cin), Int32(cout), &s)
                // All rows at once, and a chunk of the rows after the first block.
                var u = [Float](repeating: .nan, count: 36 * rows * cin)
                pkk_winograd_transform_weights(s, Int32(cin), Int32(cout), 0, Int32(rows), &u)
                var tail = [Float](repeating: .nan, count: 36 * (rows - block) * cin)
                pkk_winograd_transform_weights(s, Int32(cin), Int32(cout), Int32(block), Int32(rows), &tail)
                XCTAssertEqual(u.count, 36 * rows * cin)
                for co in 0..<rows {
                    for ci in 0..<cin {
                        for i in 0..<6 {
                            for j in 0..<6 {
                                var expected = 0.0
                                if co < cout {
                                    for a in 0..<3 {
                                        for b in 0..<3 {
                                            expected += g[i][a] * Double(weight[(co * cin + ci) * 9 + a * 3 + b]) * g[j][b]
                                        }
                                    }
                                }
                                let actual = u[(i * 6 + j) * rows * cin + (co / block) * cin * block + ci * block + co % block]
                                XCTAssertEqual(Double(actual), expected, accuracy: 1e-6, "\(cout): U[\(i * 6 + j)][\(co)][\(ci)] \(path)")
                                if co >= block {
                                    let chunked = tail[(i * 6 + j) * (rows - block) * cin + (co / block - 1) * cin * block + ci * block + co % block]
                                    XCTAssertEqual(chunked, actual, "\(cout): rows from \(block): U[\(i * 6 + j)][\(co)][\(ci)]")
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
