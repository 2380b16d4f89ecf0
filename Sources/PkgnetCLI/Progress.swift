// Progress of a long evaluation on stderr: a bar redrawn in place on a
// terminal (or with --progress), plain lines every few seconds otherwise, so
// logs of batch jobs stay readable and stdout stays clean for the results.

struct ProgressReporter {
    enum Style { case bar, lines, off }

    let style: Style
    let totalFrames: Int
    /// Prefix of the plain log lines: the command reporting.
    let label: String
    private let start: Double
    private var lastDraw = -1.0
    private var drawn = false
    /// Seconds between redraws: a bar may move often, log lines should not.
    private var interval: Double { style == .bar ? 0.2 : 10 }

    init(style: Style, totalFrames: Int, label: String = "pkgnet eval", start: Double = monotonicSeconds()) {
        self.style = style
        self.totalFrames = totalFrames
        self.label = label
        self.start = start
    }

    /// One status line: where we are, how fast, how long to go.
    static func describe(done: Int, total: Int, video: String, elapsed: Double, barWidth: Int?) -> String {
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        var parts: [String] = []
        if let barWidth, barWidth > 0 {
            let filled = total > 0 ? min(barWidth, done * barWidth / total) : 0
            parts.append("[" + String(repeating: "#", count: filled) + String(repeating: "-", count: barWidth - filled) + "]")
        }
        let percent = total > 0 ? 100 * done / total : 0
        parts.append("\(percent)% \(done)/\(total) frames")
        parts.append("video \(video)")
        parts.append("\(formatFixed(rate, 1)) frames/s")
        if rate > 0 && done < total {
            parts.append("ETA \(formatDuration(Double(total - done) / rate))")
        }
        return parts.joined(separator: "  ")
    }

    /// Called after each frame; draws when enough time has passed.
    mutating func update(done: Int, video: String, force: Bool = false) {
        guard style != .off else { return }
        let now = monotonicSeconds()
        guard force || now - lastDraw >= interval else { return }
        lastDraw = now
        switch style {
        case .bar:
            // \r + erase-line: redraw in place.
            printError("\r\u{1B}[K" + ProgressReporter.describe(done: done, total: totalFrames, video: video, elapsed: now - start, barWidth: 24))
            drawn = true
        case .lines:
            printError(label + ": " + ProgressReporter.describe(done: done, total: totalFrames, video: video, elapsed: now - start, barWidth: nil) + "\n")
        case .off:
            break
        }
    }

    /// Ends the bar's line, so that what follows starts on a fresh one.
    mutating func finish() {
        if style == .bar && drawn { printError("\n") }
        drawn = false
    }
}

/// "1:05" or "1:02:05".
func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0, seconds < 1e9 else { return "?" }
    let total = Int(seconds.rounded())
    let h = total / 3600, m = (total / 60) % 60, s = total % 60
    let ss = s < 10 ? "0\(s)" : "\(s)"
    if h > 0 { return "\(h):\(m < 10 ? "0\(m)" : "\(m)"):\(ss)" }
    return "\(m):\(ss)"
}
