// A video anomaly data set on disk, laid out like ../shared/data/ped2:
//
//   <root>/frames/<video>/<frame>.jpg|png|tif   frames in order
//   <root>/boxes/<video>.csv                    frame,x1,y1,x2,y2[,confidence]
//   <root>/labels/<video>.csv                   frame,anomalous
//
// where <root> is DIR/testing (or DIR itself when it holds frames/). Every
// text file is read and checked before any frame is scored, so a broken
// label or box file fails in a second, not after an hour of scoring; image
// problems can only show when a frame is decoded.
import PkgnetCore

/// One video: its frame files in order, and (when read) labels and boxes.
struct VideoEntry {
    let name: String
    /// Frame files in playback order; frame index = position (0-based).
    let framePaths: [String]
    let labelsPath: String
    let boxesPath: String

    var frameCount: Int { framePaths.count }

    /// "000.jpg", the name of frame `index` for messages.
    func frameName(_ index: Int) -> String {
        guard framePaths.indices.contains(index) else { return "#\(index)" }
        return baseName(framePaths[index])
    }
}

/// What a video needs besides its frames: ground truth and detector boxes.
struct VideoAnnotations {
    /// labels[t]: frame t is anomalous.
    let labels: [Bool]
    /// detections[t]: the boxes given for frame t (empty when none or not read).
    let detections: [[Detection]]
}

let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "tif", "tiff"]

func baseName(_ path: String) -> String {
    path.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? path
}

/// Name without its last extension, and the extension lower-cased.
func splitExtension(_ name: String) -> (stem: String, ext: String) {
    guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return (name, "") }
    return (String(name[..<dot]), String(name[name.index(after: dot)...]).lowercased())
}

/// Sorts names numerically when they all are numbers ("2" before "10"), by
/// bytes otherwise.
func sortedNaturally(_ names: [String]) -> [String] {
    let numbers = names.map { UInt64($0) }
    if !names.isEmpty, numbers.allSatisfy({ $0 != nil }) {
        return zip(names, numbers).sorted { ($0.1!, $0.0) < ($1.1!, $1.0) }.map(\.0)
    }
    return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
}

struct Dataset {
    /// The folder holding frames/, labels/ and boxes/.
    let root: String
    let videos: [VideoEntry]

    var totalFrames: Int { videos.reduce(0) { $0 + $1.frameCount } }

    /// Finds the videos under `directory` (DIR/<split>, or DIR itself), keeping
    /// only `only` (names as in frames/, "1" also matching "01") when given.
    init(directory: String, only: [String]?, split: String = "testing") throws {
        let candidates = [joinPath(directory, split), directory]
        guard fileKind(directory) == .directory else {
            throw CLIError(fileKind(directory) == .missing
                ? "data folder '\(directory)' does not exist"
                : "data folder '\(directory)' is not a folder")
        }
        guard let root = candidates.first(where: { fileKind(joinPath($0, "frames")) == .directory }) else {
            throw CLIError("no frames folder in '\(directory)': expected \(joinPath(directory, split + "/frames"))/<video>/<frame>.jpg (or \(joinPath(directory, "frames"))/<video>/)")
        }
        self.root = root
        let framesDir = joinPath(root, "frames")
        let names = try directoryEntries(framesDir).filter { !$0.hasPrefix(".") && fileKind(joinPath(framesDir, $0)) == .directory }
        guard !names.isEmpty else { throw CLIError("no video folders in '\(framesDir)'") }
        var selected = sortedNaturally(names)
        if let only {
            var picked: [String] = []
            for wanted in only {
                let match = selected.first { $0 == wanted }
                    ?? selected.first { name in UInt64(name).map { $0 == UInt64(wanted) } ?? false }
                guard let match else {
                    throw CLIError("video '\(wanted)' is not in '\(framesDir)' (videos: \(selected.joined(separator: ", ")))")
                }
                if !picked.contains(match) { picked.append(match) }
            }
            selected = picked
        }
        videos = try selected.map { name in
            VideoEntry(name: name,
                       framePaths: try Dataset.listFrames(joinPath(framesDir, name)),
                       labelsPath: joinPath(joinPath(root, "labels"), name + ".csv"),
                       boxesPath: joinPath(joinPath(root, "boxes"), name + ".csv"))
        }
    }

    /// The image files of one video folder, in frame order. Numbered frames
    /// (000.jpg, 001.jpg, ...) must be consecutive: a missing file would
    /// shift every later frame against its label and boxes.
    static func listFrames(_ folder: String) throws -> [String] {
        let files = try directoryEntries(folder).filter { name in
            !name.hasPrefix(".") && imageExtensions.contains(splitExtension(name).ext)
        }
        guard !files.isEmpty else {
            throw CLIError("no frames (.jpg, .jpeg, .png, .tif, .tiff) in '\(folder)'")
        }
        let stems = files.map { splitExtension($0).stem }
        var seen: [String: String] = [:]
        for (stem, file) in zip(stems, files) {
            if let other = seen[stem] {
                throw CLIError("'\(folder)' has two files for frame '\(stem)': \(other) and \(file)")
            }
            seen[stem] = file
        }
        let numbers = stems.map { UInt64($0) }
        if numbers.allSatisfy({ $0 != nil }) {
            let ordered = zip(files, numbers.map { $0! }).sorted { $0.1 < $1.1 }
            for (previous, next) in zip(ordered, ordered.dropFirst()) where next.1 != previous.1 + 1 {
                if next.1 == previous.1 {
                    throw CLIError("'\(folder)' has two files for frame \(next.1): \(previous.0) and \(next.0)")
                }
                throw CLIError("frame missing in '\(folder)': \(previous.0) is followed by \(next.0)")
            }
            return ordered.map { joinPath(folder, $0.0) }
        }
        return sortedNaturally(files).map { joinPath(folder, $0) }
    }
}

// MARK: - CSV

/// One parsed CSV line: its 1-based line number and its fields, trimmed.
struct CSVRow {
    let line: Int
    let fields: [String]
}

/// A small CSV reader for numeric tables: comma-separated, no quoting,
/// blank lines skipped, CRLF accepted. A first row whose first field is not
/// a number is the header.
struct CSVTable {
    let path: String
    let header: [String]?
    let rows: [CSVRow]

    init(path: String) throws {
        guard fileKind(path) != .directory else { throw CLIError("'\(path)' is a folder, not a CSV file") }
        try self.init(path: path, bytes: try readFileBytes(path))
    }

    init(path: String, bytes: [UInt8]) throws {
        self.path = path
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw CLIError("\(path): not a UTF-8 text file")
        }
        var header: [String]?
        var rows: [CSVRow] = []
        var lineNumber = 0
        // Split on the byte: as Characters, "\r\n" is one grapheme that a
        // split on "\n" would not see.
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Substring(String(decoding: rawLine, as: UTF8.self)).trimmingWhitespace()
            if line.isEmpty { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { String($0.trimmingWhitespace()) }
            if header == nil && rows.isEmpty && Double(fields[0]) == nil {
                header = fields.map { $0.lowercased() }
                continue
            }
            rows.append(CSVRow(line: lineNumber, fields: fields))
        }
        self.header = header
        self.rows = rows
    }

    /// Column positions for `names` (header names, case-insensitive), falling
    /// back to `defaults` when the file has no header. Optional columns
    /// (`optional`) may be absent: -1.
    func columns(_ names: [String], optional: [String] = []) throws -> [String: Int] {
        var result: [String: Int] = [:]
        if let header {
            for name in names {
                guard let index = header.firstIndex(of: name) else {
                    throw CLIError("\(path): header '\(String(header.joined(separator: ",").prefix(80)))' has no '\(name)' column (expected \((names + optional).joined(separator: ",")))")
                }
                result[name] = index
            }
            for name in optional { result[name] = header.firstIndex(of: name) ?? -1 }
        } else {
            for (i, name) in (names + optional).enumerated() { result[name] = i }
        }
        return result
    }

    func fail(_ row: CSVRow, _ what: String) -> CLIError {
        CLIError("\(path) line \(row.line): \(what)")
    }

    func field(_ row: CSVRow, _ column: Int, _ name: String) throws -> String {
        guard column >= 0, column < row.fields.count else {
            throw fail(row, "expected a '\(name)' value in column \(column + 1), found \(row.fields.count) field\(row.fields.count == 1 ? "" : "s")")
        }
        return row.fields[column]
    }

    /// A frame index: a non-negative integer below `count`.
    func frameIndex(_ row: CSVRow, _ column: Int, count: Int, video: VideoEntry) throws -> Int {
        let text = try field(row, column, "frame")
        guard let value = Int(text), value >= 0 else {
            throw fail(row, "frame '\(text)' is not a non-negative integer")
        }
        guard value < count else {
            throw fail(row, "names frame \(value), but video \(video.name) has \(count) frames (0...\(count - 1): \(video.frameName(0))...\(video.frameName(count - 1)))")
        }
        return value
    }

    func number(_ row: CSVRow, _ column: Int, _ name: String) throws -> Float {
        let text = try field(row, column, name)
        guard let value = Float(text), value.isFinite else {
            throw fail(row, "\(name) '\(text)' is not a finite number")
        }
        return value
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return s
    }
}

extension VideoEntry {
    /// Reads and checks labels (one 0/1 per frame, each frame once) and,
    /// when `boxes` is set, the box file (readBoxes).
    func readAnnotations(boxes: Bool) throws -> VideoAnnotations {
        let n = frameCount
        switch fileKind(labelsPath) {
        case .file: break
        case .missing: throw CLIError("labels of video \(name) not found: \(labelsPath) (one 'frame,anomalous' row per frame)")
        default: throw CLIError("labels of video \(name): '\(labelsPath)' is not a file")
        }
        let labelTable = try CSVTable(path: labelsPath)
        let labelColumns = try labelTable.columns(["frame", "anomalous"])
        guard labelTable.rows.count == n else {
            throw CLIError("\(labelsPath): \(labelTable.rows.count) label rows, but video \(name) has \(n) frames (\(frameName(0))...\(frameName(n - 1)))")
        }
        var labels = [Bool?](repeating: nil, count: n)
        for row in labelTable.rows {
            let frame = try labelTable.frameIndex(row, labelColumns["frame"] ?? 0, count: n, video: self)
            let text = try labelTable.field(row, labelColumns["anomalous"] ?? 1, "anomalous")
            guard text == "0" || text == "1" else {
                throw labelTable.fail(row, "anomalous must be 0 or 1, not '\(text)'")
            }
            guard labels[frame] == nil else { throw labelTable.fail(row, "frame \(frame) is labelled twice") }
            labels[frame] = text == "1"
        }
        // n rows, each frame at most once: every frame has exactly one label.
        let checkedLabels = labels.map { $0 ?? false }

        return VideoAnnotations(labels: checkedLabels, detections: boxes ? try readBoxes() : [[Detection]](repeating: [], count: n))
    }

    /// Reads and checks the box file: any number of rows per frame, frame
    /// indices inside the video, finite coordinates, optional confidence in
    /// [0, 1] (default 1). detections[t] are frame t's boxes.
    func readBoxes() throws -> [[Detection]] {
        let n = frameCount
        var detections = [[Detection]](repeating: [], count: n)
        switch fileKind(boxesPath) {
        case .file: break
        case .missing: throw CLIError("boxes of video \(name) not found: \(boxesPath) ('frame,x1,y1,x2,y2' rows; use --boxes motion to score without given boxes)")
        default: throw CLIError("boxes of video \(name): '\(boxesPath)' is not a file")
        }
        let table = try CSVTable(path: boxesPath)
        let c = try table.columns(["frame", "x1", "y1", "x2", "y2"], optional: ["confidence"])
        for row in table.rows {
            let frame = try table.frameIndex(row, c["frame"] ?? 0, count: n, video: self)
            let box = Box(x1: try table.number(row, c["x1"] ?? 1, "x1"), y1: try table.number(row, c["y1"] ?? 2, "y1"),
                          x2: try table.number(row, c["x2"] ?? 3, "x2"), y2: try table.number(row, c["y2"] ?? 4, "y2"))
            var confidence: Float = 1
            if let column = c["confidence"], column >= 0, column < row.fields.count {
                confidence = try table.number(row, column, "confidence")
                guard (0...1).contains(confidence) else {
                    throw table.fail(row, "confidence \(confidence) is outside [0, 1]")
                }
            }
            detections[frame].append(Detection(box: box, confidence: confidence))
        }
        return detections
    }
}
