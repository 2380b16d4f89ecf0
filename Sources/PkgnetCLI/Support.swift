// Small pieces every command uses: the CLI's error type, number formatting
// without Foundation's String(format:), and file-system helpers over Glibc
// (plain, predictable calls, and no Foundation in a statically linked tool).
import Glibc

/// A failure to report to the user: one sentence naming the file (and frame
/// or line) at fault. ArgumentParser prints it and exits with status 1.
struct CLIError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// `x` with exactly `digits` decimals, rounded half away from zero:
/// formatFixed(0.91234, 4) == "0.9123". NaN and infinities are spelled out.
func formatFixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return x.isNaN ? "nan" : (x > 0 ? "inf" : "-inf") }
    let places = max(0, min(digits, 15))
    var scale = 1.0
    for _ in 0..<places { scale *= 10 }
    let scaled = (abs(x) * scale).rounded(.toNearestOrAwayFromZero)
    // Beyond 2^63 the integer conversion would trap: such values need no decimals anyway.
    guard scaled < 9.0e18 else { return String(x) }
    let units = UInt64(scaled)
    let whole = units / UInt64(scale)
    var text = String(whole)
    if places > 0 {
        var fraction = String(units % UInt64(scale))
        while fraction.count < places { fraction = "0" + fraction }
        text += "." + fraction
    }
    return (x < 0 && units != 0 ? "-" : "") + text
}

/// `text` right-aligned in `width` columns.
func padLeft(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

/// `text` left-aligned in `width` columns.
func padRight(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// The C library's description of an errno value.
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// Seconds on a monotonic clock, for rates and progress.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}

enum FileKind { case missing, file, directory, other }

func fileKind(_ path: String) -> FileKind {
    var info = stat()
    guard stat(path, &info) == 0 else { return .missing }
    switch info.st_mode & S_IFMT {
    case S_IFREG: return .file
    case S_IFDIR: return .directory
    default: return .other
    }
}

/// `a/b` without doubling the separator.
func joinPath(_ a: String, _ b: String) -> String {
    if a.isEmpty { return b }
    return a.hasSuffix("/") ? a + b : a + "/" + b
}

/// The names in a directory (no "." and ".."), unsorted.
func directoryEntries(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else {
        throw CLIError("cannot list folder '\(path)': \(errnoText(errno))")
    }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[0..<end], as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// A whole (small) text file as bytes: CSVs of boxes and labels.
func readFileBytes(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "rb") else {
        throw CLIError("cannot open '\(path)': \(errnoText(errno))")
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let got = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if got > 0 { bytes.append(contentsOf: chunk[0..<got]) }
        if got < chunk.count {
            if ferror(file) != 0 { throw CLIError("cannot read '\(path)': \(errnoText(errno))") }
            break
        }
    }
    return bytes
}

/// An output file written in pieces. Each `write` goes straight to the
/// kernel (fflush), so whatever was written before a later failure is in the
/// file and complete.
final class OutputFile {
    let path: String
    private var file: UnsafeMutablePointer<FILE>?

    init(path: String) throws {
        self.path = path
        guard let file = fopen(path, "w") else {
            throw CLIError("cannot create '\(path)': \(errnoText(errno))")
        }
        self.file = file
    }

    func write(_ text: String) throws {
        guard let file else { throw CLIError("'\(path)' is already closed") }
        var text = text
        let ok = text.withUTF8 { bytes in
            bytes.isEmpty || fwrite(bytes.baseAddress, 1, bytes.count, file) == bytes.count
        }
        guard ok, fflush(file) == 0 else { throw CLIError("cannot write '\(path)': \(errnoText(errno))") }
    }

    func close() throws {
        guard let file else { return }
        self.file = nil
        guard fclose(file) == 0 else { throw CLIError("cannot write '\(path)': \(errnoText(errno))") }
    }

    deinit { if let file { fclose(file) } }
}

/// Writes to stderr at once, unbuffered (progress lines, warnings), through
/// the descriptor: no shared C `FILE` state for Swift 6 to object to.
func printError(_ text: String) {
    var line = text
    line.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let done = Glibc.write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
            if done > 0 {
                offset += done
            } else if done < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }
}

/// Whether stderr is a terminal (progress bar) or a file/pipe (plain lines).
var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }
