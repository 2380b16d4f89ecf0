import Foundation
import PkgnetImageIO
import XCTest

@testable import PkgnetCLI

/// The HTML report generator: pure functions of made-up data.
final class ReportTests: XCTestCase {
    func testEscapingAndNumbers() {
        XCTAssertEqual(htmlEscape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;")
        XCTAssertEqual(formatFixed(0.91234, 4), "0.9123")
        XCTAssertEqual(formatFixed(0.91235, 4), "0.9124")   // 0.91235 is just above in binary
        XCTAssertEqual(formatFixed(1, 4), "1.0000")
        XCTAssertEqual(formatFixed(0.00004, 4), "0.0000")
        XCTAssertEqual(formatFixed(-0.00004, 4), "0.0000")   // no "-0.0000"
        XCTAssertEqual(formatFixed(-2.5, 1), "-2.5")
        XCTAssertEqual(formatFixed(12.345, 0), "12")
        XCTAssertEqual(formatFixed(.nan, 4), "nan")
        XCTAssertEqual(formatFixed(.infinity, 4), "inf")
        XCTAssertEqual(formatFixed(1e30, 2), "1e+30")
        XCTAssertEqual(formatAUROC(nil), "n/a")
        XCTAssertEqual(formatAUROC(0.5), "0.5000")
        XCTAssertEqual(formatDuration(65), "1:05")
        XCTAssertEqual(formatDuration(3725), "1:02:05")
        XCTAssertEqual(formatDuration(.nan), "?")
    }

    func testNormalisationAndIntervals() {
        let n = normaliseForDisplay([2, 4, 3, .nan, 6])
        XCTAssertEqual(n.count, 5)
        XCTAssertEqual(n[0], 0)
        XCTAssertEqual(n[1], 0.5)
        XCTAssertNil(n[3])
        XCTAssertEqual(n[4], 1)
        XCTAssertEqual(normaliseForDisplay([3, 3, 3]), [0, 0, 0])
        XCTAssertEqual(normaliseForDisplay([]), [])

        XCTAssertEqual(abnormalIntervals([false, true, true, false, true]), [1..<3, 4..<5])
        XCTAssertEqual(abnormalIntervals([true, true]), [0..<2])
        XCTAssertEqual(abnormalIntervals([false]), [])

        XCTAssertEqual(tickFrames(count: 180), [0, 20, 40, 60, 80, 100, 120, 140, 160])
        XCTAssertEqual(tickFrames(count: 5), [0, 1, 2, 3, 4])
        XCTAssertEqual(tickFrames(count: 1), [0])
        XCTAssertLessThanOrEqual(tickFrames(count: 123_457).count, 11)
    }

    private func sampleVideo(frames: Int = 60) -> VideoReport {
        let labels = (0..<frames).map { (20..<35).contains($0) || $0 >= 50 }
        let wave = (0..<frames).map { Float(sin(Double($0) / 5)) }
        return VideoReport(
            name: "01<x>", labels: labels,
            series: [
                ChartSeries(name: "prediction error", colour: ReportColours.predictionError, values: wave),
                ChartSeries(name: "feature inconsistency 1", colour: ReportColours.inconsistency[0], values: wave.map { $0 * 2 }),
                ChartSeries(name: "combined score", colour: ReportColours.combined, values: wave.map { $0 + 1 }),
            ],
            auroc: 0.75, objects: 300, skippedBoxes: 2)
    }

    func testChartSVG() throws {
        let svg = chartSVG(sampleVideo())
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertTrue(svg.hasSuffix("</svg>"))
        // One polyline per series with a point per frame, each in its colour.
        let polylines = svg.components(separatedBy: "<polyline").dropFirst()
        XCTAssertEqual(polylines.count, 3)
        // The combined score is drawn first (under the criteria), wider.
        XCTAssertTrue(polylines.first!.contains("stroke-width=\"3\""))
        for (line, colour) in zip(polylines, [ReportColours.combined, ReportColours.predictionError, ReportColours.inconsistency[0]]) {
            XCTAssertTrue(line.contains("stroke=\"\(colour)\""))
            let points = line.components(separatedBy: "points=\"")[1].components(separatedBy: "\"")[0]
            XCTAssertEqual(points.split(separator: " ").count, 60)
            // Normalised: y spans the whole plot (top 10 ... bottom 210).
            let ys = points.split(separator: " ").map { Double($0.split(separator: ",")[1])! }
            XCTAssertEqual(ys.min()!, 10, accuracy: 0.06)
            XCTAssertEqual(ys.max()!, 210, accuracy: 0.06)
        }
        // Two abnormal runs, shaded over exactly their frames.
        let rects = svg.components(separatedBy: "<rect class=\"abnormal\"").dropFirst()
        XCTAssertEqual(rects.count, 2)
        let plotW = 1040.0 - 44 - 12
        let x0 = Double(rects.first!.components(separatedBy: "x=\"")[1].components(separatedBy: "\"")[0])!
        let w0 = Double(rects.first!.components(separatedBy: "width=\"")[1].components(separatedBy: "\"")[0])!
        XCTAssertEqual(x0, 44 + plotW * 20 / 60, accuracy: 0.06)
        XCTAssertEqual(w0, plotW * 15 / 60, accuracy: 0.1)
        XCTAssertTrue(svg.contains("fill=\"\(ReportColours.abnormal)\""))
        XCTAssertTrue(svg.contains("normalised to [0, 1]"))
        XCTAssertTrue(svg.contains("01&lt;x&gt;"))
        XCTAssertFalse(svg.contains("01<x>"))
    }

    func testChartWithGapsAndNoFrames() {
        var video = sampleVideo(frames: 6)
        video = VideoReport(name: "g", labels: video.labels,
                            series: [ChartSeries(name: "s", colour: "#000000", values: [1, 2, .nan, .nan, 3, 4])],
                            auroc: nil, objects: 0, skippedBoxes: 0)
        let svg = chartSVG(video)
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 2)
        let empty = VideoReport(name: "e", labels: [], series: [], auroc: nil, objects: 0, skippedBoxes: 0)
        XCTAssertTrue(chartSVG(empty).hasSuffix("</svg>"))
    }

    func testViridisAndUpscale() {
        XCTAssertTrue(viridis(0) == (68, 1, 84))
        XCTAssertTrue(viridis(1) == (253, 231, 37))
        XCTAssertTrue(viridis(-5) == viridis(0))
        XCTAssertTrue(viridis(7) == viridis(1))
        XCTAssertTrue(viridis(.nan) == viridis(0))
        XCTAssertTrue(viridis(0.5) == (38, 130, 142))
        // Brighter with the value: the green channel rises monotonically.
        var last = -1
        for i in 0...100 {
            let g = Int(viridis(Double(i) / 100).1)
            XCTAssertGreaterThanOrEqual(g, last)
            last = g
        }
        let mapped = colourMapped([0, 2, 4], high: 4)
        XCTAssertEqual(Array(mapped[0..<3]), [68, 1, 84])
        XCTAssertEqual(Array(mapped[6..<9]), [253, 231, 37])
        XCTAssertEqual(colourMapped([1], high: 0), [68, 1, 84])
        XCTAssertEqual(colourMapped([5, 6, 7], low: 5, high: 7), [68, 1, 84, 38, 130, 142, 253, 231, 37])

        let big = upscaleNearest([1, 2, 3, 4], width: 2, height: 2, channels: 1, factor: 2)
        XCTAssertEqual(big, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        XCTAssertEqual(upscaleNearest([9, 8, 7], width: 1, height: 1, channels: 3, factor: 3), [UInt8](repeating: 0, count: 27).enumerated().map { [9, 8, 7][$0.offset % 3] })
    }

    func testBase64MatchesFoundation() {
        var rng = SystemRandomNumberGenerator()
        for count in 0..<40 {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            XCTAssertEqual(base64Encode(bytes), Data(bytes).base64EncodedString())
        }
    }

    /// The PNG behind a data URI decodes back to the enlarged pixels.
    private func decodeDataURI(_ tag: String) throws -> (pixels: [UInt8], width: Int, height: Int) {
        let encoded = tag.components(separatedBy: "data:image/png;base64,")[1].components(separatedBy: "\"")[0]
        let data = try XCTUnwrap(Data(base64Encoded: encoded))
        let url = Fixtures.scratch.appendingPathComponent("uri-\(UUID().uuidString).png")
        try data.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        var image = pkio_image()
        var message = [CChar](repeating: 0, count: 256)
        XCTAssertEqual(pkio_read(url.path, 3, &image, &message, message.count), PKIO_OK)
        defer { pkio_image_free(&image) }
        let base = try XCTUnwrap(image.pixels)
        var bgr: [UInt8] = []
        for y in 0..<Int(image.height) { bgr += UnsafeBufferPointer(start: base + y * image.stride, count: Int(image.width) * 3) }
        // BGR -> RGB
        var rgb = bgr
        for p in 0..<(bgr.count / 3) { rgb[3 * p] = bgr[3 * p + 2]; rgb[3 * p + 2] = bgr[3 * p] }
        return (rgb, Int(image.width), Int(image.height))
    }

    func testImageTagsAreNearestNeighbourPNGs() throws {
        let map: [Float] = (0..<16).map(Float.init)
        let tag = try imageTag(colourMapped(map, high: 15), side: 4, channels: 3, alt: "map \"4x4\"")
        XCTAssertTrue(tag.contains("width=\"128\" height=\"128\""))
        XCTAssertTrue(tag.contains("alt=\"map &quot;4x4&quot;\""))
        let (pixels, w, h) = try decodeDataURI(tag)
        XCTAssertEqual(w, 128)
        XCTAssertEqual(h, 128)
        // Every 32x32 block is one map cell's colour.
        for cell in 0..<16 {
            let (r, g, b) = viridis(Double(cell) / 15)
            for (dy, dx) in [(0, 0), (31, 31), (5, 17)] {
                let y = (cell / 4) * 32 + dy, x = (cell % 4) * 32 + dx
                XCTAssertEqual(Array(pixels[(y * 128 + x) * 3..<(y * 128 + x) * 3 + 3]), [r, g, b])
            }
        }
        let crop = (0..<(32 * 32)).map { UInt8($0 % 251) }
        let grey = try imageTag(crop, side: 32, channels: 1, alt: "crop")
        let (greyPixels, gw, _) = try decodeDataURI(grey)
        XCTAssertEqual(gw, 128)
        XCTAssertEqual(greyPixels[(5 * 128 + 9) * 3], crop[1 * 32 + 2])
    }

    private func sampleObject(_ i: Int, pairs: Int = 2) -> ObjectReport {
        ObjectReport(video: "03", frame: 40 + i, frameName: "\(40 + i).jpg", box: (1, 2, 30.5, 60),
                     combined: Float(10 - i), predictionError: 0.01, inconsistency: Array(repeating: 0.2, count: pairs),
                     side: 32, channels: 3, target: [UInt8](repeating: 100, count: 32 * 32 * 3),
                     prediction: [UInt8](repeating: 50, count: 32 * 32 * 3),
                     errorMap: (0..<(32 * 32)).map { Float($0) },
                     inconsistencyMaps: [(4, (0..<16).map { Float($0) }), (8, (0..<64).map { Float($0) })].prefix(pairs).map { $0 })
    }

    func testReportIsSelfContained() throws {
        let content = ReportContent(
            title: "pkgnet eval: <model>", facts: [("model", "/tmp/m & n.safetensors")],
            overallAUROC: 0.8765, videos: [sampleVideo(), sampleVideo(frames: 10)],
            objects: [sampleObject(0), sampleObject(1)], chartNote: "note", objectNote: "objects")
        let html = try renderReport(content)
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertTrue(html.contains("</html>"))
        XCTAssertTrue(html.contains("Frame-level AUROC (all videos): 0.8765"))
        XCTAssertTrue(html.contains("pkgnet eval: &lt;model&gt;"))
        XCTAssertTrue(html.contains("/tmp/m &amp; n.safetensors"))
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"chart\"").count - 1, 2)
        XCTAssertEqual(html.components(separatedBy: "<tr class=\"object\">").count - 1, 2)
        // 5 images per object: true, predicted, error map, two inconsistency maps.
        XCTAssertEqual(html.components(separatedBy: "<img ").count - 1, 10)
        XCTAssertTrue(html.contains("inconsistency 2 (8x8)"))
        // Nothing is fetched: every src/href is inline or a fragment, no scripts.
        for attribute in ["src=\"", "href=\""] {
            for value in html.components(separatedBy: attribute).dropFirst() {
                XCTAssertTrue(value.hasPrefix("data:") || value.hasPrefix("#"), String(value.prefix(40)))
            }
        }
        XCTAssertFalse(html.contains("http:"))
        XCTAssertFalse(html.contains("https:"))
        XCTAssertFalse(html.contains("<script"))
        XCTAssertFalse(html.contains("@import"))
        for value in html.components(separatedBy: "url(").dropFirst() { XCTAssertTrue(value.hasPrefix("#")) }
    }

    func testReportWithoutObjectsOrAUROC() throws {
        let content = ReportContent(title: "t", facts: [], overallAUROC: nil, videos: [sampleVideo()], objects: [],
                                    chartNote: "", objectNote: "")
        let html = try renderReport(content)
        XCTAssertTrue(html.contains("Frame-level AUROC (all videos): n/a"))
        XCTAssertFalse(html.contains("Highest-scoring objects"))
        // k=1 models: one inconsistency map column.
        let one = try objectTable([sampleObject(0, pairs: 1)])
        XCTAssertEqual(one.components(separatedBy: "<img ").count - 1, 4)
        XCTAssertFalse(one.contains("inconsistency 2"))
    }
}
