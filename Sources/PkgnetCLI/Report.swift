// The --report page: one self-contained HTML file (inline SVG charts, PNG
// images as data URIs, no scripts, fonts or links), so it can be mailed or
// archived and still show everything.
//
// Everything here is a pure function of the data handed in: the evaluation
// collects, this renders. Tests render made-up data and check the markup.

/// One curve of a video's chart.
struct ChartSeries {
    let name: String
    /// CSS colour; opaque, so a screenshot shows exactly this colour.
    let colour: String
    let values: [Float]
}

/// What the report shows for one video.
struct VideoReport {
    let name: String
    let labels: [Bool]
    let series: [ChartSeries]
    let auroc: Double?
    let objects: Int
    let skippedBoxes: Int
}

/// One of the highest-scoring objects, with its images.
struct ObjectReport {
    let video: String
    let frame: Int
    let frameName: String
    let box: (x1: Float, y1: Float, x2: Float, y2: Float)
    let combined: Float
    let predictionError: Float
    let inconsistency: [Float]
    /// The true crop of frame t and the predicted one: side x side, `channels`
    /// (1 grey or 3 RGB) 8-bit, rows packed.
    let side: Int
    let channels: Int
    let target: [UInt8]
    let prediction: [UInt8]
    /// side x side squared errors, and per pair a size x size map.
    let errorMap: [Float]
    let inconsistencyMaps: [(size: Int, values: [Float])]
}

struct ReportContent {
    var title: String
    /// (label, value) lines under the title: model, data, settings.
    var facts: [(String, String)]
    var overallAUROC: Double?
    var videos: [VideoReport]
    var objects: [ObjectReport]
    /// Sentences under the charts: how to read them.
    var chartNote: String
    var objectNote: String
}

// MARK: - Chart colours (Fig. 3 of the paper: blue, orange, green; red intervals)

enum ReportColours {
    static let predictionError = "#1f77b4"
    static let inconsistency = ["#ff7f0e", "#9467bd", "#8c564b"]
    static let combined = "#2ca02c"
    /// Abnormal frames: an opaque light red behind the curves.
    static let abnormal = "#f6c4c0"
    static let grid = "#e3e3e3"
    static let axis = "#777777"
}

// MARK: - HTML

func htmlEscape(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for ch in text {
        switch ch {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(ch)
        }
    }
    return out
}

func formatAUROC(_ value: Double?) -> String {
    value.map { formatFixed($0, 4) } ?? "n/a"
}

/// A score for tables: 4 significant decimals without exponent surprises.
func formatScore(_ value: Float) -> String {
    let v = Double(value)
    guard v.isFinite else { return formatFixed(v, 0) }
    let magnitude = abs(v)
    if magnitude != 0 && (magnitude < 1e-3 || magnitude >= 1e6) { return String(value) }
    return formatFixed(v, magnitude >= 100 ? 1 : 4)
}

func renderReport(_ content: ReportContent) throws -> String {
    var html = """
    <!DOCTYPE html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>\(htmlEscape(content.title))</title>
    <style>
    body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; max-width: 1120px; }
    h1 { font-size: 22px; margin: 0 0 8px 0; }
    h2 { font-size: 18px; margin: 28px 0 8px 0; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
    h3 { font-size: 15px; margin: 18px 0 4px 0; }
    table { border-collapse: collapse; font-size: 13px; }
    td, th { padding: 3px 10px; text-align: left; vertical-align: middle; }
    table.grid td, table.grid th { border: 1px solid #ddd; }
    td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
    .auroc { font-size: 20px; font-weight: bold; margin: 12px 0; }
    .note { font-size: 12px; color: #555; margin: 4px 0 10px 0; max-width: 1000px; }
    img.px { image-rendering: pixelated; display: block; }
    figure { margin: 0; }
    figcaption { font-size: 11px; color: #555; }
    </style>
    </head>
    <body>
    <h1>\(htmlEscape(content.title))</h1>
    <table>

    """
    for (label, value) in content.facts {
        html += "<tr><th>\(htmlEscape(label))</th><td>\(htmlEscape(value))</td></tr>\n"
    }
    html += "</table>\n"
    html += "<p class=\"auroc\">Frame-level AUROC (all videos): \(formatAUROC(content.overallAUROC))</p>\n"

    html += "<table class=\"grid\" id=\"videos\"><tr><th>video</th><th class=\"num\">frames</th><th class=\"num\">anomalous</th><th class=\"num\">objects</th><th class=\"num\">skipped boxes</th><th class=\"num\">AUROC</th></tr>\n"
    for video in content.videos {
        let anomalous = video.labels.reduce(0) { $0 + ($1 ? 1 : 0) }
        html += "<tr><td><a href=\"#video-\(htmlEscape(video.name))\">\(htmlEscape(video.name))</a></td><td class=\"num\">\(video.labels.count)</td><td class=\"num\">\(anomalous)</td><td class=\"num\">\(video.objects)</td><td class=\"num\">\(video.skippedBoxes)</td><td class=\"num\">\(formatAUROC(video.auroc))</td></tr>\n"
    }
    html += "</table>\n"

    html += "<h2>Scores over frames</h2>\n<p class=\"note\">\(htmlEscape(content.chartNote))</p>\n"
    for video in content.videos {
        html += "<h3 id=\"video-\(htmlEscape(video.name))\">Video \(htmlEscape(video.name)) &mdash; AUROC \(formatAUROC(video.auroc))</h3>\n"
        html += chartSVG(video) + "\n"
    }

    if !content.objects.isEmpty {
        html += "<h2>Highest-scoring objects</h2>\n<p class=\"note\">\(htmlEscape(content.objectNote))</p>\n"
        html += try objectTable(content.objects)
    }
    html += "</body>\n</html>\n"
    return html
}

// MARK: - SVG chart

/// Min-max scaling to [0, 1] for display; a flat or empty series sits at 0.
/// Non-finite values become nil (gaps in the curve).
func normaliseForDisplay(_ values: [Float]) -> [Double?] {
    let finite = values.filter(\.isFinite)
    guard let low = finite.min(), let high = finite.max() else { return values.map { _ in nil } }
    let span = Double(high) - Double(low)
    return values.map { v in
        guard v.isFinite else { return nil }
        return span > 0 ? (Double(v) - Double(low)) / span : 0
    }
}

/// Runs of consecutive anomalous frames, as half-open frame ranges.
func abnormalIntervals(_ labels: [Bool]) -> [Range<Int>] {
    var runs: [Range<Int>] = []
    var start: Int?
    for (i, label) in labels.enumerated() {
        if label, start == nil { start = i }
        if !label, let s = start { runs.append(s..<i); start = nil }
    }
    if let s = start { runs.append(s..<labels.count) }
    return runs
}

/// Frame numbers for axis ticks: a 1-2-5 step giving at most ~10 ticks.
func tickFrames(count: Int) -> [Int] {
    guard count > 1 else { return [0] }
    var step = 1
    var magnitude = 1
    outer: while true {
        for factor in [1, 2, 5] {
            step = factor * magnitude
            if (count - 1) / step <= 10 { break outer }
        }
        magnitude *= 10
    }
    return Array(stride(from: 0, to: count, by: step))
}

private func coordinate(_ v: Double) -> String { formatFixed(v, 1) }

/// A video's chart: each series normalised to [0, 1], anomalous frames
/// shaded, frame numbers on the x axis, a legend underneath.
func chartSVG(_ video: VideoReport, width: Int = 1040, plotHeight: Int = 200) -> String {
    let left = 44.0, right = 12.0, top = 10.0
    let plotW = Double(width) - left - right
    let plotH = Double(plotHeight)
    let legendRows = (video.series.count + 2 + 1) / 2
    let height = Int(top + plotH + 28 + Double(legendRows) * 18 + 6)
    let n = max(video.labels.count, video.series.map(\.values.count).max() ?? 0)
    // Frame i is the column [i, i+1) of n: intervals shade whole frames.
    func x(_ position: Double) -> Double { left + plotW * position / Double(max(n, 1)) }
    func y(_ value: Double) -> Double { top + plotH * (1 - value) }

    var svg = "<svg class=\"chart\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" role=\"img\" aria-label=\"scores of video \(htmlEscape(video.name))\">\n"
    svg += "<rect x=\"0\" y=\"0\" width=\"\(width)\" height=\"\(height)\" fill=\"#ffffff\"/>\n"
    for run in abnormalIntervals(video.labels) {
        let x0 = x(Double(run.lowerBound)), x1 = x(Double(run.upperBound))
        svg += "<rect class=\"abnormal\" x=\"\(coordinate(x0))\" y=\"\(coordinate(top))\" width=\"\(coordinate(x1 - x0))\" height=\"\(coordinate(plotH))\" fill=\"\(ReportColours.abnormal)\"/>\n"
    }
    for step in 0...4 {
        let value = Double(step) / 4
        svg += "<line x1=\"\(coordinate(left))\" y1=\"\(coordinate(y(value)))\" x2=\"\(coordinate(left + plotW))\" y2=\"\(coordinate(y(value)))\" stroke=\"\(ReportColours.grid)\" stroke-width=\"1\"/>\n"
        if step % 2 == 0 {
            svg += "<text x=\"\(coordinate(left - 6))\" y=\"\(coordinate(y(value) + 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">\(formatFixed(value, 1))</text>\n"
        }
    }
    for frame in tickFrames(count: n) {
        let tx = x(Double(frame) + 0.5)
        svg += "<line x1=\"\(coordinate(tx))\" y1=\"\(coordinate(top + plotH))\" x2=\"\(coordinate(tx))\" y2=\"\(coordinate(top + plotH + 4))\" stroke=\"\(ReportColours.axis)\"/>\n"
        svg += "<text x=\"\(coordinate(tx))\" y=\"\(coordinate(top + plotH + 16))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">\(frame)</text>\n"
    }
    // The combined score first and wider, so the criteria drawn over it stay
    // visible where the curves coincide (the combined one is often close to
    // its dominant criterion once both are normalised).
    let drawOrder = video.series.enumerated().sorted { ($0.offset == video.series.count - 1 ? 0 : 1, $0.offset) < ($1.offset == video.series.count - 1 ? 0 : 1, $1.offset) }.map(\.element)
    for (index, series) in drawOrder.enumerated() {
        let strokeWidth = index == 0 && video.series.count > 1 ? "3" : "1.6"
        // Gaps (non-finite values) split the curve into several polylines.
        var runs: [[String]] = [[]]
        for (i, value) in normaliseForDisplay(series.values).enumerated() {
            if let value {
                runs[runs.count - 1].append("\(coordinate(x(Double(i) + 0.5))),\(coordinate(y(value)))")
            } else if !(runs.last?.isEmpty ?? true) {
                runs.append([])
            }
        }
        for points in runs where !points.isEmpty {
            svg += "<polyline class=\"series\" data-name=\"\(htmlEscape(series.name))\" fill=\"none\" stroke=\"\(series.colour)\" stroke-width=\"\(strokeWidth)\" stroke-linejoin=\"round\" points=\"\(points.joined(separator: " "))\"/>\n"
        }
    }
    svg += "<rect x=\"\(coordinate(left))\" y=\"\(coordinate(top))\" width=\"\(coordinate(plotW))\" height=\"\(coordinate(plotH))\" fill=\"none\" stroke=\"\(ReportColours.axis)\"/>\n"
    svg += "<text x=\"\(coordinate(left + plotW))\" y=\"\(coordinate(top + plotH + 16))\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">frame</text>\n"

    // Legend: two entries per row, short swatches so the curves dominate
    // the chart's colours.
    var entries: [(String, String, Bool)] = video.series.map { ($0.name, $0.colour, false) }
    entries.append(("abnormal frames (ground truth)", ReportColours.abnormal, true))
    entries.append(("each curve min-max normalised to [0, 1] per video for display", "", false))
    for (i, entry) in entries.enumerated() {
        let ex = left + Double(i % 2) * (plotW / 2)
        let ey = top + plotH + 34 + Double(i / 2) * 18
        if entry.2 {
            svg += "<rect x=\"\(coordinate(ex))\" y=\"\(coordinate(ey - 9))\" width=\"16\" height=\"10\" fill=\"\(entry.1)\"/>\n"
        } else if !entry.1.isEmpty {
            svg += "<line x1=\"\(coordinate(ex))\" y1=\"\(coordinate(ey - 4))\" x2=\"\(coordinate(ex + 16))\" y2=\"\(coordinate(ey - 4))\" stroke=\"\(entry.1)\" stroke-width=\"2\"/>\n"
        }
        let tx = entry.1.isEmpty ? ex : ex + 22
        svg += "<text x=\"\(coordinate(tx))\" y=\"\(coordinate(ey))\" font-size=\"12\" fill=\"#222\">\(htmlEscape(entry.0))</text>\n"
    }
    svg += "</svg>"
    return svg
}

// MARK: - Images

/// matplotlib's viridis at t = 0, 1/8, ..., 1; linear in between is within a
/// couple of levels of the full table, and dark-to-bright like Fig. 4.
let viridisAnchors: [(UInt8, UInt8, UInt8)] = [
    (68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (110, 206, 88), (253, 231, 37),
]

func viridis(_ t: Double) -> (UInt8, UInt8, UInt8) {
    let clamped = t.isNaN ? 0 : min(max(t, 0), 1)
    let position = clamped * Double(viridisAnchors.count - 1)
    let i = min(Int(position), viridisAnchors.count - 2)
    let f = position - Double(i)
    let a = viridisAnchors[i], b = viridisAnchors[i + 1]
    func mix(_ p: UInt8, _ q: UInt8) -> UInt8 { UInt8((Double(p) + (Double(q) - Double(p)) * f).rounded()) }
    return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A map as RGB pixels through viridis: `low` (and below) dark, `high` (and
/// above) bright; a flat range maps everything to the dark end.
func colourMapped(_ values: [Float], low: Float = 0, high: Float) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * 3)
    let span = Double(high) - Double(low)
    for v in values {
        let t = span > 0 && span.isFinite ? (Double(v) - Double(low)) / span : 0
        let (r, g, b) = viridis(t)
        out += [r, g, b]
    }
    return out
}

/// Nearest-neighbour enlargement by an integer factor (each pixel becomes a
/// factor x factor block), so small maps stay crisp in any viewer.
func upscaleNearest(_ pixels: [UInt8], width: Int, height: Int, channels: Int, factor: Int) -> [UInt8] {
    guard factor > 1, width > 0, height > 0, channels > 0, pixels.count == width * height * channels else { return pixels }
    let outWidth = width * factor
    var out = [UInt8](repeating: 0, count: outWidth * height * factor * channels)
    for y in 0..<(height * factor) {
        let sy = y / factor
        for x in 0..<outWidth {
            let s = (sy * width + x / factor) * channels
            let d = (y * outWidth + x) * channels
            for c in 0..<channels { out[d + c] = pixels[s + c] }
        }
    }
    return out
}

private let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

func base64Encode(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var i = 0
    while i + 2 < bytes.count {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
        out += [base64Alphabet[Int(n >> 18)], base64Alphabet[Int(n >> 12 & 63)],
                base64Alphabet[Int(n >> 6 & 63)], base64Alphabet[Int(n & 63)]]
        i += 3
    }
    let rest = bytes.count - i
    if rest == 1 {
        let n = UInt32(bytes[i]) << 16
        out += [base64Alphabet[Int(n >> 18)], base64Alphabet[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
    } else if rest == 2 {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
        out += [base64Alphabet[Int(n >> 18)], base64Alphabet[Int(n >> 12 & 63)], base64Alphabet[Int(n >> 6 & 63)], UInt8(ascii: "=")]
    }
    return String(decoding: out, as: UTF8.self)
}

/// Displayed side of every image in the object table.
let reportImageSide = 128

/// An <img> of the pixels, enlarged to `reportImageSide` with nearest neighbour.
func imageTag(_ pixels: [UInt8], side: Int, channels: Int, alt: String) throws -> String {
    let factor = max(1, reportImageSide / max(side, 1))
    let big = upscaleNearest(pixels, width: side, height: side, channels: channels, factor: factor)
    let png = try encodePNG(pixels: big, width: side * factor, height: side * factor, channels: channels)
    return "<img class=\"px\" width=\"\(side * factor)\" height=\"\(side * factor)\" alt=\"\(htmlEscape(alt))\" src=\"data:image/png;base64,\(base64Encode(png))\">"
}

/// A horizontal viridis bar from `low` to `high`, the key of a map column.
func colourKey(low: Float, high: Float, id: String) -> String {
    var stops = ""
    for (i, c) in viridisAnchors.enumerated() {
        let offset = formatFixed(Double(i) / Double(viridisAnchors.count - 1) * 100, 1)
        stops += "<stop offset=\"\(offset)%\" stop-color=\"rgb(\(c.0),\(c.1),\(c.2))\"/>"
    }
    return "<svg width=\"128\" height=\"22\" viewBox=\"0 0 128 22\"><defs><linearGradient id=\"\(id)\">\(stops)</linearGradient></defs><rect x=\"0\" y=\"0\" width=\"128\" height=\"8\" fill=\"url(#\(id))\"/><text x=\"0\" y=\"20\" font-size=\"10\" fill=\"#444\">\(formatScore(low))</text><text x=\"128\" y=\"20\" font-size=\"10\" text-anchor=\"end\" fill=\"#444\">\(formatScore(high))</text></svg>"
}

/// The object table: a row per object, its scores and images. Every map
/// column shares one colour range (the smallest to the largest value shown
/// in it), so brighter means larger across rows too.
func objectTable(_ objects: [ObjectReport]) throws -> String {
    let pairs = objects.map(\.inconsistencyMaps.count).max() ?? 0
    func range(_ values: [Float]) -> (low: Float, high: Float) {
        let finite = values.filter(\.isFinite)
        return (finite.min() ?? 0, finite.max() ?? 0)
    }
    let errorRange = range(objects.flatMap(\.errorMap))
    var pairRanges: [(low: Float, high: Float)] = []
    for j in 0..<pairs {
        pairRanges.append(range(objects.flatMap { j < $0.inconsistencyMaps.count ? $0.inconsistencyMaps[j].values : [] }))
    }
    var html = "<table class=\"grid\" id=\"objects\">\n<tr><th>#</th><th>object</th><th>frame t (true)</th><th>predicted</th><th>prediction error map<br>\(colourKey(low: errorRange.low, high: errorRange.high, id: "key-error"))</th>"
    for j in 0..<pairs {
        let size = objects.first { j < $0.inconsistencyMaps.count }?.inconsistencyMaps[j].size ?? 0
        html += "<th>inconsistency \(j + 1) (\(size)x\(size))<br>\(colourKey(low: pairRanges[j].low, high: pairRanges[j].high, id: "key-pair\(j + 1)"))</th>"
    }
    html += "</tr>\n"
    for (rank, object) in objects.enumerated() {
        let box = object.box
        var text = "video \(htmlEscape(object.video)), frame \(object.frame) (\(htmlEscape(object.frameName)))<br>"
        text += "box \(formatFixed(Double(box.x1), 1)), \(formatFixed(Double(box.y1), 1)), \(formatFixed(Double(box.x2), 1)), \(formatFixed(Double(box.y2), 1))<br>"
        text += "combined <b>\(formatScore(object.combined))</b><br>prediction error \(formatScore(object.predictionError))"
        for (j, value) in object.inconsistency.enumerated() { text += "<br>inconsistency \(j + 1) \(formatScore(value))" }
        html += "<tr class=\"object\"><td class=\"num\">\(rank + 1)</td><td>\(text)</td>"
        let label = "video \(object.video) frame \(object.frame)"
        html += "<td>" + (try imageTag(object.target, side: object.side, channels: object.channels, alt: "true crop, \(label)")) + "</td>"
        html += "<td>" + (try imageTag(object.prediction, side: object.side, channels: object.channels, alt: "predicted crop, \(label)")) + "</td>"
        html += "<td>" + (try imageTag(colourMapped(object.errorMap, low: errorRange.low, high: errorRange.high), side: object.side, channels: 3, alt: "prediction error map, \(label)")) + "</td>"
        for j in 0..<pairs {
            if j < object.inconsistencyMaps.count {
                let map = object.inconsistencyMaps[j]
                html += "<td>" + (try imageTag(colourMapped(map.values, low: pairRanges[j].low, high: pairRanges[j].high), side: map.size, channels: 3, alt: "inconsistency map \(j + 1), \(label)")) + "</td>"
            } else {
                html += "<td></td>"
            }
        }
        html += "</tr>\n"
    }
    html += "</table>\n"
    return html
}
