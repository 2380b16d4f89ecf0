// Motion proposals and the detector filter: the bit-exact blur against a
// plain Double reference, the mask, external components (nested holes,
// diagonal connectivity), the proposal rules and the filter rules.
import XCTest
import PkgnetCore
import PkgnetKernels

// ---- independent references ----

/// BORDER_REFLECT_101 as a periodic sequence: ...2 1 | 0 1 2 ... n-1 | n-2 ...
/// with period 2(n-1) (n = 1: always 0).
private func mirror(_ p: Int, _ n: Int) -> Int {
    if n == 1 { return 0 }
    let period = 2 * (n - 1)
    let q = ((p % period) + period) % period
    return q < n ? q : period - q
}

/// OpenCV's sigma-0 kernels as fractions.
private func gaussianWeights(_ k: Int) -> [Double] {
    switch k {
    case 1: return [1]
    case 3: return [0.25, 0.5, 0.25]
    case 5: return [1, 4, 6, 4, 1].map { $0 / 16 }
    default: return [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]
    }
}

/// Direct 2D blur in Double (exact: all terms are dyadic), rounded half up.
private func referenceBlur(_ img: [UInt8], width: Int, height: Int, channels: Int, k: Int) -> [UInt8] {
    let w = gaussianWeights(k), r = k / 2
    var out = [UInt8](repeating: 0, count: img.count)
    for y in 0..<height {
        for x in 0..<width {
            for c in 0..<channels {
                var s = 0.0
                for i in 0..<k {
                    for j in 0..<k {
                        s += w[i] * w[j] * Double(img[(mirror(y + i - r, height) * width + mirror(x + j - r, width)) * channels + c])
                    }
                }
                out[(y * width + x) * channels + c] = UInt8((s + 0.5).rounded(.down))
            }
        }
    }
    return out
}

/// 8-connected foreground components by flood fill; external when the
/// component touches (4-adjacently) the background reachable from outside the
/// image through 4-connected background. Returns sorted [x, y, w, h].
private func referenceExternalRects(_ mask: [UInt8], width: Int, height: Int) -> [[Int]] {
    // Padded by one background pixel on every side.
    let pw = width + 2, ph = height + 2
    func fg(_ x: Int, _ y: Int) -> Bool { x >= 1 && y >= 1 && x <= width && y <= height && mask[(y - 1) * width + (x - 1)] != 0 }
    var outside = [Bool](repeating: false, count: pw * ph)
    var stack = [(0, 0)]
    outside[0] = true
    while let (x, y) = stack.popLast() {
        for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
            let nx = x + dx, ny = y + dy
            guard nx >= 0, ny >= 0, nx < pw, ny < ph, !fg(nx, ny), !outside[ny * pw + nx] else { continue }
            outside[ny * pw + nx] = true
            stack.append((nx, ny))
        }
    }
    var seen = [Bool](repeating: false, count: pw * ph)
    var rects: [[Int]] = []
    for y in 1...max(height, 1) where height > 0 {
        for x in 1...max(width, 1) where width > 0 && fg(x, y) && !seen[y * pw + x] {
            var minX = x, maxX = x, minY = y, maxY = y, external = false
            var todo = [(x, y)]
            seen[y * pw + x] = true
            while let (cx, cy) = todo.popLast() {
                minX = min(minX, cx); maxX = max(maxX, cx); minY = min(minY, cy); maxY = max(maxY, cy)
                for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] where outside[(cy + dy) * pw + cx + dx] { external = true }
                for dy in -1...1 {
                    for dx in -1...1 where fg(cx + dx, cy + dy) && !seen[(cy + dy) * pw + cx + dx] {
                        seen[(cy + dy) * pw + cx + dx] = true
                        todo.append((cx + dx, cy + dy))
                    }
                }
            }
            if external { rects.append([minX - 1, minY - 1, maxX - minX + 1, maxY - minY + 1]) }
        }
    }
    return rects.sorted { $0.lexicographicallyPrecedes($1) }
}

private func kernelExternalRects(_ mask: [UInt8], width: Int, height: Int) -> [[Int]] {
    var rects: UnsafeMutablePointer<Int32>?
    var count = 0
    XCTAssertEqual(pkk_external_components(mask, Int32(width), Int32(height), &rects, &count), 0)
    defer { free(rects) }
    return (0..<count).map { k in (0..<4).map { Int(rects![4 * k + $0]) } }
}

private func mask(_ rows: [String]) -> (mask: [UInt8], width: Int, height: Int) {
    (rows.flatMap { $0.map { $0 == "#" ? UInt8(1) : 0 } }, rows[0].count, rows.count)
}

final class VideoMotionTests: XCTestCase {
    // ---- blur ----

    func testBlurIsBitExact() {
        var rng = KernelRNG(seed: 77)
        let shapes = [(1, 1), (2, 1), (1, 5), (2, 3), (3, 2), (4, 4), (5, 7), (13, 9), (64, 37), (200, 150)]
        for (width, height) in shapes {
            for channels in [1, 3] {
                for k in [1, 3, 5, 7] {
                    let pad = 5
                    let stride = width * channels + pad
                    var img = [UInt8](repeating: 0, count: width * height * channels)
                    // Mix noise with flat areas and extremes, so rounding ties occur.
                    for i in img.indices { img[i] = i % 7 == 0 ? 255 : (i % 11 == 0 ? 0 : UInt8(truncatingIfNeeded: rng.next() >> 56)) }
                    var strided = [UInt8](repeating: 0x5A, count: stride * height)
                    for y in 0..<height {
                        for x in 0..<(width * channels) { strided[y * stride + x] = img[y * width * channels + x] }
                    }
                    var out = [UInt8](repeating: 0, count: stride * height)
                    XCTAssertEqual(pkk_gaussian_blur_u8(strided, stride, Int32(width), Int32(height), Int32(channels), Int32(k), &out, stride), 0)
                    let expected = referenceBlur(img, width: width, height: height, channels: channels, k: k)
                    var got: [UInt8] = []
                    for y in 0..<height { got += out[(y * stride)..<(y * stride + width * channels)] }
                    XCTAssertEqual(got, expected, "blur \(width)x\(height)x\(channels) k=\(k)")
                }
            }
        }
    }

    func testBlurRejectsUnsupportedKernel() {
        var out = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(pkk_gaussian_blur_u8([UInt8](repeating: 1, count: 16), 4, 4, 4, 1, 9, &out, 4), -1)
        XCTAssertTrue(String(cString: pkk_last_error()).contains("9"))
    }

    func testMotionMaskAgainstReference() {
        var rng = KernelRNG(seed: 5)
        for (width, height, channels, k, threshold) in [(37, 23, 1, 3, 18), (64, 48, 3, 5, 15), (9, 4, 3, 7, 30), (120, 90, 1, 5, 18)] {
            // Smooth-ish random frames: noise on a gradient, so differences straddle the threshold.
            let frames = (0..<3).map { _ in
                (0..<(width * height * channels)).map { i in UInt8(truncatingIfNeeded: (i / channels) % width * 2 + Int(rng.next() >> 58)) }
            }
            let rects: [Int32] = [2, 1, 5, 3, Int32(width - 3), 0, Int32(width - 1), Int32(height - 1), 4, 4, 3, 3]  // last one empty
            var got = [UInt8](repeating: 9, count: width * height)
            let plane = width * height * channels
            let status = frames.flatMap { $0 }.withUnsafeBufferPointer { all -> Int32 in
                let pointers: [UnsafePointer<UInt8>?] = (0..<3).map { all.baseAddress! + $0 * plane }
                return pkk_motion_mask(pointers, [width * channels, width * channels, width * channels], Int32(width), Int32(height),
                                       Int32(channels), Int32(k), Int32(threshold), rects, 3, &got)
            }
            XCTAssertEqual(status, 0)
            let blurred = frames.map { referenceBlur($0, width: width, height: height, channels: channels, k: k) }
            var expected = [UInt8](repeating: 0, count: width * height)
            for p in 0..<(width * height) {
                for c in 0..<channels {
                    let i = p * channels + c
                    let d = abs(Int(blurred[0][i]) - Int(blurred[1][i])) + abs(Int(blurred[1][i]) - Int(blurred[2][i]))
                    if d > threshold { expected[p] = 1 }
                }
            }
            for r in stride(from: 0, to: rects.count, by: 4) where rects[r] <= rects[r + 2] && rects[r + 1] <= rects[r + 3] {
                for y in Int(rects[r + 1])...Int(rects[r + 3]) {
                    for x in Int(rects[r])...Int(rects[r + 2]) { expected[y * width + x] = 0 }
                }
            }
            XCTAssertEqual(got, expected, "mask \(width)x\(height)x\(channels) k=\(k)")
        }
    }

    func testMotionSumDoesNotWrap() throws {
        // 0 -> 130 -> 0: the differences sum to 260, which a uint8 sum wraps to 4
        // (below the threshold); the wide sum keeps it foreground.
        let width = 30, height = 30
        let a = TestFrame(width: width, height: height, format: .grey) { _, _, _ in 0 }
        let b = TestFrame(width: width, height: height, format: .grey) { x, y, _ in (5..<25).contains(x) && (5..<25).contains(y) ? 130 : 0 }
        var s = SceneSettings.ped2
        s.blurKernel = 1
        let boxes = try motionProposals(previous: a.view, current: b.view, next: a.view, detectorBoxes: [], settings: s)
        XCTAssertEqual(boxes, [Box(x1: 3, y1: 3, x2: 27, y2: 27)])
    }

    // ---- components ----

    func testNestedHoles() {
        let m = mask([
            "..........#....",
            ".#########.....",
            ".#.......#.....",
            ".#.#####.#..##.",
            ".#.#...#.#..##.",
            ".#.#.#.#.#.....",
            ".#.#...#.#.....",
            ".#.#####.#....#",
            ".#.......#...#.",
            ".#########...#.",
            "...............",
        ])
        // The outer ring (x 1..9, y 1..9) hides the inner ring and its dot;
        // the pixel at (10, 0) touches the ring diagonally: same component.
        let expected = [[1, 0, 10, 10], [12, 3, 2, 2], [13, 7, 2, 3]]
        XCTAssertEqual(kernelExternalRects(m.mask, width: m.width, height: m.height).sorted { $0.lexicographicallyPrecedes($1) }, expected)
        XCTAssertEqual(referenceExternalRects(m.mask, width: m.width, height: m.height), expected)
    }

    func testDiagonallyClosedRingHidesItsInside() {
        // A diamond |dx| + |dy| = 3 around (4, 4) closes only through diagonal
        // steps: foreground is 8-connected, background 4-connected, so its
        // inside is a hole and the dot at the centre is not external.
        var m = [UInt8](repeating: 0, count: 81)
        for y in 0..<9 { for x in 0..<9 where abs(x - 4) + abs(y - 4) == 3 { m[y * 9 + x] = 1 } }
        m[4 * 9 + 4] = 1
        XCTAssertEqual(kernelExternalRects(m, width: 9, height: 9), [[1, 1, 7, 7]])
        // Open the top: the inside joins the outside and the dot is proposed.
        m[1 * 9 + 4] = 0
        XCTAssertEqual(kernelExternalRects(m, width: 9, height: 9), [[1, 2, 7, 6], [4, 4, 1, 1]])
    }

    func testEdgesAndRasterOrder() {
        let m = mask([
            "##...#",
            "#.....",
            "......",
            "...###",
            "#..#.#",
            "#..###",
        ])
        // Order: by each component's first pixel in raster order.
        XCTAssertEqual(kernelExternalRects(m.mask, width: 6, height: 6), [[0, 0, 2, 2], [5, 0, 1, 1], [3, 3, 3, 3], [0, 4, 1, 2]])
        XCTAssertEqual(kernelExternalRects([UInt8](repeating: 1, count: 12), width: 4, height: 3), [[0, 0, 4, 3]])
        XCTAssertEqual(kernelExternalRects([UInt8](repeating: 0, count: 12), width: 4, height: 3), [])
        XCTAssertEqual(kernelExternalRects([1], width: 1, height: 1), [[0, 0, 1, 1]])
    }

    func testComponentsAgainstFloodFillReference() {
        var rng = KernelRNG(seed: 123)
        for (width, height, density) in [(20, 15, 0.3), (50, 40, 0.45), (64, 64, 0.55), (31, 77, 0.6), (100, 3, 0.5), (80, 60, 0.05), (40, 50, 0.9), (1, 30, 0.5), (30, 1, 0.5)] {
            for _ in 0..<4 {
                let m = (0..<(width * height)).map { _ in Double(rng.next() >> 11) / Double(1 << 53) < density ? UInt8(1) : 0 }
                XCTAssertEqual(kernelExternalRects(m, width: width, height: height).sorted { $0.lexicographicallyPrecedes($1) },
                               referenceExternalRects(m, width: width, height: height), "\(width)x\(height) density \(density)")
            }
        }
    }

    // ---- proposals ----

    private func scene(k: Int = 1, area: Int = 100) -> SceneSettings {
        var s = SceneSettings.ped2
        s.blurKernel = k
        s.minProposalArea = area
        return s
    }

    /// prev/next empty, current holds the given rectangles (x, y, w, h) of value v.
    private func frames(width: Int = 120, height: Int = 80, format: PixelFormat = .grey, channel: Int = 0,
                        _ rects: [(Int, Int, Int, Int)], value: UInt8 = 100) -> (TestFrame, TestFrame) {
        let empty = TestFrame(width: width, height: height, format: format) { _, _, _ in 0 }
        let current = TestFrame(width: width, height: height, format: format) { x, y, c in
            guard c == channel else { return 0 }
            return rects.contains { x >= $0.0 && x < $0.0 + $0.2 && y >= $0.1 && y < $0.1 + $0.3 } ? value : 0
        }
        return (empty, current)
    }

    func testProposalGeometryAndRules() throws {
        // A 20x10 block at (30, 40): rect w = 20, h = 10, (21)(11) = 231 > 100.
        // A 5x5 block: (6)(6) = 36, too small. A 60x3 line: 60/3 = 20, too elongated.
        // A block at the corner: clipped growth.
        let (empty, current) = frames([(30, 40, 20, 10), (5, 5, 5, 5), (10, 70, 60, 3), (110, 0, 10, 12)])
        let boxes = try motionProposals(previous: empty.view, current: current.view, next: empty.view, detectorBoxes: [], settings: scene())
        XCTAssertEqual(boxes, [Box(x1: 108, y1: 0, x2: 120, y2: 14), Box(x1: 28, y1: 38, x2: 52, y2: 52)])
        // Blur spreads the block by one pixel per side (3x3): w 22, h 12.
        let blurred = try motionProposals(previous: empty.view, current: current.view, next: empty.view, detectorBoxes: [], settings: scene(k: 3))
        XCTAssertTrue(blurred.contains(Box(x1: 27, y1: 37, x2: 53, y2: 53)), "\(blurred)")
    }

    func testDetectorBoxesClearTheMask() throws {
        let (empty, current) = frames([(30, 40, 20, 10)])
        func run(_ det: [Box], area: Int = 100) throws -> [Box] {
            try motionProposals(previous: empty.view, current: current.view, next: empty.view, detectorBoxes: det, settings: scene(area: area))
        }
        XCTAssertEqual(try run([Box(x1: 32, y1: 42, x2: 47, y2: 47)]), [])  // grown by 2: covers 30...49 x 40...49
        // trunc(35.9) - 2 = 33: columns 33... cleared, 30...32 remain: w 3, h 10.
        XCTAssertEqual(try run([Box(x1: 35.9, y1: 0, x2: 100, y2: 79)]), [])
        XCTAssertEqual(try run([Box(x1: 35.9, y1: 0, x2: 100, y2: 79)], area: 10), [Box(x1: 28, y1: 38, x2: 35, y2: 52)])
        // trunc(27.99) + 2 = 29: columns ...29 cleared, the block (30...49) survives whole.
        XCTAssertEqual(try run([Box(x1: 0, y1: 0, x2: 27.99, y2: 79)]), [Box(x1: 28, y1: 38, x2: 52, y2: 52)])
        // 28 + 2 = 30, an inclusive end: column 30 is cleared, the rect starts at 31.
        XCTAssertEqual(try run([Box(x1: 0, y1: 0, x2: 28, y2: 79)]), [Box(x1: 29, y1: 38, x2: 52, y2: 52)])
        // Invalid detector boxes clear nothing.
        XCTAssertEqual(try run([Box(x1: .nan, y1: 0, x2: 100, y2: 79), Box(x1: 100, y1: 0, x2: 0, y2: 79)]),
                       [Box(x1: 28, y1: 38, x2: 52, y2: 52)])
    }

    func testColourMotionInOneChannel() throws {
        for format in [PixelFormat.bgr, .rgb] {
            for channel in 0..<3 {
                let (empty, current) = frames(format: format, channel: channel, [(30, 40, 20, 10)])
                let boxes = try motionProposals(previous: empty.view, current: current.view, next: empty.view, detectorBoxes: [], settings: scene())
                XCTAssertEqual(boxes, [Box(x1: 28, y1: 38, x2: 52, y2: 52)], "\(format) channel \(channel)")
            }
        }
        // Below the threshold: 2 * 9 = 18 is not > 18.
        let (empty, faint) = frames([(30, 40, 20, 10)], value: 9)
        XCTAssertEqual(try motionProposals(previous: empty.view, current: faint.view, next: empty.view, detectorBoxes: [], settings: scene()), [])
        let (_, justAbove) = frames([(30, 40, 20, 10)], value: 10)
        XCTAssertEqual(try motionProposals(previous: empty.view, current: justAbove.view, next: empty.view, detectorBoxes: [], settings: scene()).count, 1)
    }

    func testProposalArgumentChecks() {
        let a = TestFrame(width: 20, height: 20, format: .grey) { _, _, _ in 0 }
        let b = TestFrame(width: 20, height: 21, format: .grey) { _, _, _ in 0 }
        let c = TestFrame(width: 20, height: 20, format: .bgr) { _, _, _ in 0 }
        XCTAssertThrowsError(try motionProposals(previous: a.view, current: b.view, next: a.view, detectorBoxes: [], settings: .ped2))
        XCTAssertThrowsError(try motionProposals(previous: a.view, current: a.view, next: c.view, detectorBoxes: [], settings: .ped2))
        var s = SceneSettings.ped2
        s.blurKernel = 4
        XCTAssertThrowsError(try motionProposals(previous: a.view, current: a.view, next: a.view, detectorBoxes: [], settings: s)) {
            XCTAssertEqual(($0 as? PkgnetError)?.status, .invalidArgument)
        }
        var narrow = a.view
        narrow.stride = 3
        XCTAssertThrowsError(try motionProposals(previous: a.view, current: narrow, next: a.view, detectorBoxes: [], settings: .ped2))
    }

    func testPresets() throws {
        XCTAssertEqual(SceneSettings.ped2.blurKernel, 3)
        XCTAssertEqual(SceneSettings.avenue.blurKernel, 5)
        XCTAssertEqual(SceneSettings.shanghaitech.motionThreshold, 15)
        XCTAssertEqual(SceneSettings.avenue.detectorConfidence, 0.25)
        XCTAssertEqual(SceneSettings.shanghaitech.minDetectorArea, 64)
        XCTAssertEqual(SceneSettings.shanghaitech.coverThreshold, 0.65)
        XCTAssertEqual(SceneSettings.ped2.minProposalArea, 100)
        XCTAssertEqual(SceneSettings.avenue.minProposalArea, 1600)
        for name in SceneSettings.presetNames { try XCTUnwrap(SceneSettings.preset(named: name)).validate() }
        XCTAssertNil(SceneSettings.preset(named: "nope"))
    }

    // ---- detector filter ----

    private func det(_ x1: Float, _ y1: Float, _ x2: Float, _ y2: Float, _ conf: Float = 0.9) -> Detection {
        Detection(box: Box(x1: x1, y1: y1, x2: x2, y2: y2), confidence: conf)
    }

    private func filter(_ d: [Detection], _ s: SceneSettings = .ped2, width: Int = 1000, height: Int = 1000) -> [Box] {
        filterDetections(d, frameWidth: width, frameHeight: height, settings: s)
    }

    func testFilterConfidenceAndArea() {
        let ds = [det(0, 0, 20, 20, 0.49), det(100, 0, 120, 20, 0.5), det(200, 0, 220, 20, .nan),
                  det(300, 0, 309, 309),          // (10)(310): kept
                  det(400, 0, 409, 409 - 300),    // (10)(110) = 1100 kept
                  det(500, 0, 509, 509 - 500),    // (10)(10) = 100: kept (>=)
                  det(600, 0, 608.9, 9),          // (9.9)(10) = 99: dropped
                  det(700, 0, .infinity, 9), det(800, 10, 790, 30)]
        XCTAssertEqual(filter(ds), [ds[1].box, ds[3].box, ds[4].box, ds[5].box])
        // Avenue: confidence 0.25 and area 1600.
        let avenue = [det(0, 0, 39, 39, 0.25), det(100, 0, 138.9, 39, 0.9), det(200, 0, 260, 60, 0.24)]
        XCTAssertEqual(filter(avenue, .avenue), [avenue[0].box])
        // ShanghaiTech: area 64 ((8)(8)).
        XCTAssertEqual(filter([det(0, 0, 7, 7), det(10, 0, 16.9, 7)], .shanghaitech), [Box(x1: 0, y1: 0, x2: 7, y2: 7)])
    }

    func testFilterOverlapRule() {
        // A inside B: A dropped, B kept. Input order is kept for the result.
        let a = det(10, 10, 20, 20), b = det(0, 0, 40, 40), far = det(200, 200, 230, 230)
        XCTAssertEqual(filter([b, a, far]), [b.box, far.box])
        // Coverage just below 0.6 keeps both: A = 11x11 = 121, overlap 8 columns x 9 rows = 72 (0.595).
        let partial = [det(0, 0, 10, 10), det(3, 2, 40, 40)]
        XCTAssertEqual(filter(partial), partial.map(\.box))
        // ... and 8 x 11 = 88 of 121 (0.73) drops A.
        let more = [det(0, 0, 10, 10), det(3, 0, 40, 40)]
        XCTAssertEqual(filter(more), [more[1].box])
        // Chain: A covered only by B, B covered by C. B is dropped, and A is
        // still dropped because it is compared with every larger candidate,
        // kept or not (the published rule).
        let A = det(0, 0, 10, 10), B = det(0, 0, 20, 20), C = det(3, 3, 40, 40)
        XCTAssertEqual(filter([A, B, C]), [C.box])
        // Without B, A survives (C covers only 64/121 of it).
        XCTAssertEqual(filter([A, C]), [A.box, C.box])
        // Equal areas: the earlier input counts as the smaller one.
        let twin1 = det(0, 0, 20, 20), twin2 = det(1, 1, 21, 21)
        XCTAssertEqual(filter([twin1, twin2]), [twin2.box])
        XCTAssertEqual(filter([twin2, twin1]), [twin1.box])
        // ShanghaiTech's 0.65: 0.63 survives there, not with Ped2's 0.6.
        let sh = [det(0, 0, 9, 9), det(0, 0, 30, 5.3)]  // A = 100, overlap 10 x 6.3 = 63
        XCTAssertEqual(filter(sh, .shanghaitech), sh.map(\.box))
        XCTAssertEqual(filter(sh), [sh[1].box])
    }

    func testFilterDropsBoxesOutsideTheFrame() {
        let inside = det(10, 10, 30, 30), outside = det(500, 10, 530, 30), edge = det(-20, -20, 0.5, 5)
        XCTAssertEqual(filter([inside, outside, edge], width: 100, height: 100), [inside.box, edge.box])
        XCTAssertEqual(filter([inside], width: 0, height: 100), [])
    }
}
