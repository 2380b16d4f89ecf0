// Object cubes: crop bounds, the 32x32 resize against a plain Double
// bilinear reference, colour handling, box problems and argument checks.
import XCTest
import PkgnetCore

/// A packed test frame (optionally with padded rows) that hands out views.
final class TestFrame {
    let width: Int, height: Int, format: PixelFormat, stride: Int
    let storage: UnsafeMutableBufferPointer<UInt8>

    init(width: Int, height: Int, format: PixelFormat, padding: Int = 0, pixel: (Int, Int, Int) -> UInt8) {
        self.width = width
        self.height = height
        self.format = format
        stride = width * format.channels + padding
        storage = .allocate(capacity: stride * height)
        storage.initialize(repeating: 0xEE)  // padding bytes are never read
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<format.channels { storage[y * stride + x * format.channels + c] = pixel(x, y, c) }
            }
        }
    }

    deinit { storage.deallocate() }

    var view: FrameView {
        FrameView(data: UnsafePointer(storage.baseAddress!), width: width, height: height, stride: stride, format: format)
    }

    func at(_ x: Int, _ y: Int, _ c: Int) -> UInt8 { storage[y * stride + x * format.channels + c] }
}

/// OpenCV BGR2GRAY for 8 bits: 0.299 R + 0.587 G + 0.114 B in 14-bit fixed point, rounded.
func bgr2grey(_ b: UInt8, _ g: UInt8, _ r: UInt8) -> Int {
    let blue: Int = Int(b) * 1868
    let green: Int = Int(g) * 9617
    let red: Int = Int(r) * 4899
    return (blue + green + red + 8192) >> 14
}

final class VideoCubeTests: XCTestCase {
    /// Five frames of random content (seeded), so a mix-up of frames shows.
    private func randomFrames(width: Int, height: Int, format: PixelFormat, seed: UInt64, padding: Int = 0) -> [TestFrame] {
        var rng = KernelRNG(seed: seed)
        return (0..<5).map { _ in
            TestFrame(width: width, height: height, format: format, padding: padding) { _, _, _ in
                UInt8(truncatingIfNeeded: rng.next() >> 56)
            }
        }
    }

    private func cubes(_ frames: [TestFrame], _ boxes: [Box], channels: Int, order: ModelConfig.ChannelOrder = .bgr) throws -> ([UInt8], [BoxProblem]) {
        var out = [UInt8](repeating: 0xAB, count: boxes.count * 5 * 32 * 32 * channels)
        let problems = try out.withUnsafeMutableBufferPointer {
            try makeObjectCubes(frames: frames.map(\.view), boxes: boxes, channels: channels, order: order, into: $0.baseAddress!)
        }
        return (out, problems)
    }

    /// Textbook bilinear resize of a crop (rows ya..<yb, columns xa..<xb) to 32x32
    /// with OpenCV's coordinate mapping: src = (dst + 0.5) * n / 32 - 0.5, below 0
    /// taken as 0, beyond the last pixel clamped to it. Exact Double values.
    private func referenceResize(_ sample: (Int, Int) -> Double, xa: Int, ya: Int, xb: Int, yb: Int) -> [Double] {
        func axis(_ d: Int, _ n: Int) -> (Int, Int, Double) {
            var s = (Double(d) + 0.5) * Double(n) / 32 - 0.5
            if s < 0 { s = 0 }
            let i = min(Int(s.rounded(.down)), n - 1)
            let f = i >= n - 1 ? 0 : s - Double(i)
            return (i, min(i + 1, n - 1), f)
        }
        var out: [Double] = []
        for dy in 0..<32 {
            let (y0, y1, fy) = axis(dy, yb - ya)
            for dx in 0..<32 {
                let (x0, x1, fx) = axis(dx, xb - xa)
                let top = (1 - fx) * sample(xa + x0, ya + y0) + fx * sample(xa + x1, ya + y0)
                let bottom = (1 - fx) * sample(xa + x0, ya + y1) + fx * sample(xa + x1, ya + y1)
                out.append((1 - fy) * top + fy * bottom)
            }
        }
        return out
    }

    /// Slot (box, frame) of the output, one channel, as 32*32 values.
    private func plane(_ out: [UInt8], box: Int, frame: Int, channel: Int, channels: Int) -> [UInt8] {
        let base = (box * 5 + frame) * 32 * 32 * channels
        return (0..<(32 * 32)).map { out[base + $0 * channels + channel] }
    }

    func testResizeAgainstBilinearReference() throws {
        // Crop sizes from 1 to well above 32 in both directions, odd offsets.
        let frames = randomFrames(width: 150, height: 110, format: .grey, seed: 11)
        let sizes = [(1, 1), (1, 17), (3, 2), (7, 31), (32, 32), (33, 31), (17, 45), (64, 64), (100, 90), (149, 3), (45, 109)]
        let boxes = sizes.enumerated().map { i, s in
            Box(x1: Float(i % 3) + 0.25, y1: Float(i % 2), x2: Float(i % 3) + 0.25 + Float(s.0), y2: Float(i % 2 + s.1))
        }
        let (out, problems) = try cubes(frames, boxes, channels: 1)
        XCTAssertEqual(problems, [BoxProblem](repeating: .none, count: boxes.count))
        var total = 0, rounded = 0
        for (b, box) in boxes.enumerated() {
            let xa = Int(box.x1.rounded(.up)), ya = Int(box.y1.rounded(.up))
            let xb = Int(box.x2.rounded(.up)), yb = Int(box.y2.rounded(.up))
            for f in 0..<5 {
                let expected = referenceResize({ Double(frames[f].at($0, $1, 0)) }, xa: xa, ya: ya, xb: xb, yb: yb)
                let got = plane(out, box: b, frame: f, channel: 0, channels: 1)
                for (g, e) in zip(got, expected) {
                    // OpenCV's fixed point stays within 1 of the exact value (strictly).
                    XCTAssertLessThan(abs(Double(g) - e), 1, "box \(b) \(sizes[b]) frame \(f)")
                    if Double(g) == (e + 0.5).rounded(.down) { rounded += 1 }
                    total += 1
                }
            }
        }
        // Most values are the exact value rounded; OpenCV's fixed point (two
        // truncating 16-bit products in the vertical pass) moves ~9% of them,
        // those near .5, one level down.
        XCTAssertGreaterThan(Double(rounded) / Double(total), 0.85)
    }

    func testExactSizesCopyAndAverage() throws {
        let frame = randomFrames(width: 100, height: 80, format: .grey, seed: 3)
        // ceil(10.2) = 11 .. ceil(42.1) = 43: 32 columns; rows 5 ..< 37. A copy.
        // ceil(20) = 20 .. 84: 64 columns; rows 8 ..< 72: 2x2 means rounded half up.
        let boxes = [Box(x1: 10.2, y1: 5, x2: 42.1, y2: 37), Box(x1: 20, y1: 8, x2: 84, y2: 72)]
        let (out, _) = try cubes(frame, boxes, channels: 1)
        for f in 0..<5 {
            let copy = plane(out, box: 0, frame: f, channel: 0, channels: 1)
            XCTAssertEqual(copy, (0..<1024).map { frame[f].at(11 + $0 % 32, 5 + $0 / 32, 0) }, "frame \(f)")
            let mean = plane(out, box: 1, frame: f, channel: 0, channels: 1)
            let expected = (0..<1024).map { i -> UInt8 in
                let x = 20 + 2 * (i % 32), y = 8 + 2 * (i / 32)
                let top: Int = Int(frame[f].at(x, y, 0)) + Int(frame[f].at(x + 1, y, 0))
                let bottom: Int = Int(frame[f].at(x, y + 1, 0)) + Int(frame[f].at(x + 1, y + 1, 0))
                return UInt8((top + bottom + 2) / 4)
            }
            XCTAssertEqual(mean, expected, "frame \(f)")
        }
    }

    func testCropBoundsCeilAndClip() {
        func bounds(_ b: Box) -> [Int] {
            let r = cropBounds(of: b, width: 50, height: 40)
            return [r.bounds.xa, r.bounds.ya, r.bounds.xb, r.bounds.yb, Int(r.problem.rawValue)]
        }
        XCTAssertEqual(bounds(Box(x1: 1.5, y1: 2.0, x2: 10.0, y2: 10.01)), [2, 2, 10, 11, 0])
        XCTAssertEqual(bounds(Box(x1: -5.5, y1: -0.5, x2: 60, y2: 45)), [0, 0, 50, 40, 0])
        XCTAssertEqual(bounds(Box(x1: -1e30, y1: 0, x2: 1e30, y2: 1)), [0, 0, 50, 1, 0])
        XCTAssertEqual(bounds(Box(x1: 0.5, y1: 0.5, x2: 1.0, y2: 1.0))[4], Int(BoxProblem.empty.rawValue))  // ceil: 1..<1
        XCTAssertEqual(bounds(Box(x1: 50, y1: 0, x2: 60, y2: 10))[4], Int(BoxProblem.empty.rawValue))    // right of the frame
        XCTAssertEqual(bounds(Box(x1: -9, y1: -9, x2: -0.5, y2: 10))[4], Int(BoxProblem.empty.rawValue)) // ceil(-0.5) = 0
        XCTAssertEqual(bounds(Box(x1: 3, y1: 3, x2: 2, y2: 9))[4], Int(BoxProblem.inverted.rawValue))
        XCTAssertEqual(bounds(Box(x1: 3, y1: 9, x2: 5, y2: 8.5))[4], Int(BoxProblem.inverted.rawValue))
        XCTAssertEqual(bounds(Box(x1: .nan, y1: 0, x2: 5, y2: 5))[4], Int(BoxProblem.nonFinite.rawValue))
        XCTAssertEqual(bounds(Box(x1: 0, y1: 0, x2: .infinity, y2: 5))[4], Int(BoxProblem.nonFinite.rawValue))
    }

    func testClippedBoxAndOnePixelCrop() throws {
        let frames = randomFrames(width: 40, height: 30, format: .grey, seed: 5)
        let boxes = [Box(x1: -5.5, y1: -3, x2: 20, y2: 30.5), Box(x1: 7.5, y1: 3.5, x2: 8.5, y2: 4.5)]
        let (out, problems) = try cubes(frames, boxes, channels: 1)
        XCTAssertEqual(problems, [.none, .none])
        for f in 0..<5 {
            let expected = referenceResize({ Double(frames[f].at($0, $1, 0)) }, xa: 0, ya: 0, xb: 20, yb: 30)
            for (g, e) in zip(plane(out, box: 0, frame: f, channel: 0, channels: 1), expected) {
                XCTAssertLessThan(abs(Double(g) - e), 1)
            }
            // 1x1 crop at (8, 4): a constant plane.
            XCTAssertEqual(plane(out, box: 1, frame: f, channel: 0, channels: 1), [UInt8](repeating: frames[f].at(8, 4, 0), count: 1024))
        }
    }

    func testBoxProblemsAreZeroFilledAndReported() throws {
        let frames = randomFrames(width: 64, height: 48, format: .bgr, seed: 9)
        let boxes = [Box(x1: .nan, y1: 0, x2: 10, y2: 10), Box(x1: 20, y1: 5, x2: 10, y2: 30),
                     Box(x1: 4, y1: 4, x2: 36, y2: 36), Box(x1: 100, y1: 0, x2: 120, y2: 20),
                     Box(x1: 0, y1: 0, x2: 10, y2: .infinity), Box(x1: 5, y1: 5, x2: 5, y2: 9)]
        let (out, problems) = try cubes(frames, boxes, channels: 3)
        XCTAssertEqual(problems, [.nonFinite, .inverted, .none, .empty, .nonFinite, .empty])
        let slot = 5 * 32 * 32 * 3
        for (i, p) in problems.enumerated() where p != .none {
            XCTAssertEqual(Array(out[(i * slot)..<((i + 1) * slot)]), [UInt8](repeating: 0, count: slot), "box \(i)")
        }
        // The valid box is a 32x32 copy, BGR kept.
        for f in 0..<5 {
            for c in 0..<3 {
                XCTAssertEqual(plane(out, box: 2, frame: f, channel: c, channels: 3), (0..<1024).map { frames[f].at(4 + $0 % 32, 4 + $0 / 32, c) })
            }
        }
    }

    func testColourHandling() throws {
        // 32x32 crops are copies, so colour rules can be checked exactly.
        let box = [Box(x1: 3, y1: 2, x2: 35, y2: 34)]
        func pixel(_ f: TestFrame, _ i: Int, _ c: Int) -> UInt8 { f.at(3 + i % 32, 2 + i / 32, c) }
        func grey(_ b: UInt8, _ g: UInt8, _ r: UInt8) -> UInt8 { UInt8(bgr2grey(b, g, r)) }
        let bgr = randomFrames(width: 40, height: 40, format: .bgr, seed: 21)
        let rgb = randomFrames(width: 40, height: 40, format: .rgb, seed: 21)  // same bytes, other meaning
        let gray = randomFrames(width: 40, height: 40, format: .grey, seed: 22)

        let (same, _) = try cubes(bgr, box, channels: 3, order: .bgr)
        let (swapped, _) = try cubes(bgr, box, channels: 3, order: .rgb)
        let (rgbToRgb, _) = try cubes(rgb, box, channels: 3, order: .rgb)
        let (rgbToBgr, _) = try cubes(rgb, box, channels: 3, order: .bgr)
        let (replicated, _) = try cubes(gray, box, channels: 3)
        let (greyOne, _) = try cubes(gray, box, channels: 1)
        let (bgrGrey, _) = try cubes(bgr, box, channels: 1)
        let (rgbGrey, _) = try cubes(rgb, box, channels: 1)
        for f in 0..<5 {
            for c in 0..<3 {
                let direct = (0..<1024).map { pixel(bgr[f], $0, c) }
                let reversed = (0..<1024).map { pixel(bgr[f], $0, 2 - c) }
                XCTAssertEqual(plane(same, box: 0, frame: f, channel: c, channels: 3), direct)
                XCTAssertEqual(plane(swapped, box: 0, frame: f, channel: c, channels: 3), reversed)
                XCTAssertEqual(plane(rgbToRgb, box: 0, frame: f, channel: c, channels: 3), direct)
                XCTAssertEqual(plane(rgbToBgr, box: 0, frame: f, channel: c, channels: 3), reversed)
                XCTAssertEqual(plane(replicated, box: 0, frame: f, channel: c, channels: 3), (0..<1024).map { pixel(gray[f], $0, 0) })
            }
            XCTAssertEqual(plane(greyOne, box: 0, frame: f, channel: 0, channels: 1), (0..<1024).map { pixel(gray[f], $0, 0) })
            // BGR bytes b,g,r; the same bytes as RGB mean r,g,b.
            XCTAssertEqual(plane(bgrGrey, box: 0, frame: f, channel: 0, channels: 1),
                           (0..<1024).map { grey(pixel(bgr[f], $0, 0), pixel(bgr[f], $0, 1), pixel(bgr[f], $0, 2)) })
            XCTAssertEqual(plane(rgbGrey, box: 0, frame: f, channel: 0, channels: 1),
                           (0..<1024).map { grey(pixel(rgb[f], $0, 2), pixel(rgb[f], $0, 1), pixel(rgb[f], $0, 0)) })
        }
    }

    func testGreyConversionBeforeResize() throws {
        // Colour to a 1-channel model converts each source pixel first (as cvtColor on
        // the frame), then resizes: compare with the reference resize of the grey image.
        let frames = randomFrames(width: 50, height: 50, format: .bgr, seed: 31)
        let box = [Box(x1: 1, y1: 2, x2: 22, y2: 47)]
        let (out, _) = try cubes(frames, box, channels: 1)
        for f in 0..<5 {
            let grey: (Int, Int) -> Double = { x, y in
                Double(bgr2grey(frames[f].at(x, y, 0), frames[f].at(x, y, 1), frames[f].at(x, y, 2)))
            }
            let expected = referenceResize(grey, xa: 1, ya: 2, xb: 22, yb: 47)
            for (g, e) in zip(plane(out, box: 0, frame: f, channel: 0, channels: 1), expected) {
                XCTAssertLessThan(abs(Double(g) - e), 1)
            }
        }
    }

    func testStrideAndManyBoxesMatchSingleCalls() throws {
        let packed = randomFrames(width: 90, height: 70, format: .bgr, seed: 41)
        let padded = randomFrames(width: 90, height: 70, format: .bgr, seed: 41, padding: 13)
        var rng = KernelRNG(seed: 42)
        let boxes = (0..<60).map { _ -> Box in
            let x = rng.float(-10, 85), y = rng.float(-10, 65)
            return Box(x1: x, y1: y, x2: x + rng.float(0.5, 40), y2: y + rng.float(0.5, 40))
        }
        let (all, problems) = try cubes(packed, boxes, channels: 3, order: .rgb)
        let (allPadded, problemsPadded) = try cubes(padded, boxes, channels: 3, order: .rgb)
        XCTAssertEqual(all, allPadded)
        XCTAssertEqual(problems, problemsPadded)
        let slot = 5 * 32 * 32 * 3
        for (i, box) in boxes.enumerated() {
            let (one, p) = try cubes(packed, [box], channels: 3, order: .rgb)
            XCTAssertEqual(p, [problems[i]])
            XCTAssertEqual(one, Array(all[(i * slot)..<((i + 1) * slot)]), "box \(i)")
        }
    }

    func testInvalidArguments() throws {
        let frames = randomFrames(width: 20, height: 20, format: .grey, seed: 1)
        let other = TestFrame(width: 21, height: 20, format: .grey) { _, _, _ in 0 }
        let colour = TestFrame(width: 20, height: 20, format: .bgr) { _, _, _ in 0 }
        var out = [UInt8](repeating: 0, count: 5 * 32 * 32 * 3)
        let box = [Box(x1: 0, y1: 0, x2: 10, y2: 10)]
        func attempt(_ views: [FrameView], channels: Int = 1) -> PkgnetError? {
            do {
                _ = try out.withUnsafeMutableBufferPointer {
                    try makeObjectCubes(frames: views, boxes: box, channels: channels, order: .bgr, into: $0.baseAddress!)
                }
                return nil
            } catch let e as PkgnetError { return e } catch { return nil }
        }
        let views = frames.map(\.view)
        XCTAssertEqual(attempt(Array(views.prefix(4)))?.status, .invalidArgument)
        XCTAssertEqual(attempt(Array(views.prefix(4)) + [other.view])?.status, .invalidArgument)
        XCTAssertEqual(attempt(Array(views.prefix(4)) + [colour.view])?.status, .invalidArgument)
        XCTAssertEqual(attempt(views, channels: 2)?.status, .invalidArgument)
        var narrow = views
        narrow[2].stride = 19
        let e = attempt(narrow)
        XCTAssertEqual(e?.status, .invalidArgument)
        XCTAssertTrue(e?.message.contains("stride") ?? false, e?.message ?? "")
        var empty = views
        empty[0].width = 0
        XCTAssertEqual(attempt(empty)?.status, .invalidArgument)
        var huge = views
        huge[1].height = Int.max / 2
        XCTAssertEqual(attempt(huge)?.status, .invalidArgument)
        // No boxes: nothing to do, frames still checked.
        XCTAssertEqual(try makeObjectCubes(frames: views, boxes: [], channels: 1, order: .bgr, into: &out), [])
    }

    func testFrameCopyAndValidation() throws {
        let padded = TestFrame(width: 7, height: 5, format: .rgb, padding: 3) { x, y, c in UInt8(x * 30 + y * 7 + c) }
        let frame = try Frame(copying: padded.view)
        XCTAssertEqual(frame.pixels.count, 7 * 5 * 3)
        XCTAssertEqual(frame.pixels[(4 * 7 + 6) * 3 + 2], padded.at(6, 4, 2))
        frame.withView { v in
            XCTAssertEqual(v.stride, 21)
            XCTAssertEqual(v.data[(2 * 7 + 3) * 3 + 1], padded.at(3, 2, 1))
        }
        var bad = padded.view
        bad.stride = 20
        XCTAssertThrowsError(try Frame(copying: bad)) { XCTAssertEqual(($0 as? PkgnetError)?.status, .invalidArgument) }
        bad = padded.view
        bad.height = -1
        XCTAssertThrowsError(try bad.validate())
        bad = padded.view
        bad.width = Int.max / 2
        XCTAssertThrowsError(try bad.validate())
    }
}
