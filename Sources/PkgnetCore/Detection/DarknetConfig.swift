// A darknet .cfg file as sections of options, with the typed, range-checked
// reads the network builder uses. Users hand pkgnet arbitrary files: every
// problem becomes an error naming the file, the line and the layer.

/// One `[section]` of a cfg: its type, where it starts, and its options.
public struct DarknetSection: Sendable {
    /// The name between the brackets, e.g. "convolutional".
    public let type: String
    /// 1-based line of the `[type]` header.
    public let line: Int
    /// Position among the layers (0 = the first section after [net]); -1 for [net].
    public let index: Int
    /// key -> (value, 1-based line), whitespace removed as darknet does.
    public private(set) var options: [String: (value: String, line: Int)] = [:]

    /// Where errors point: "file:line: [type] layer N".
    let file: String

    init(type: String, line: Int, index: Int, file: String) {
        self.type = type
        self.line = line
        self.index = index
        self.file = file
    }

    /// "layer 12 [convolutional] (yolo.cfg:140)": how messages name this section.
    public var name: String {
        index < 0 ? "[\(type)] (\(file):\(line))" : "layer \(index) [\(type)] (\(file):\(line))"
    }

    /// An error about this section, or about one of its options when `key` is given.
    func error(_ status: Status, _ text: String, key: String? = nil) -> PkgnetError {
        if let key, let option = options[key] {
            let place = index < 0 ? "[\(type)]" : "layer \(index) [\(type)]"
            return PkgnetError(status, "\(file):\(option.line): \(place): \(key)=\(shown(option.value)): \(text)")
        }
        return PkgnetError(status, "\(file):\(line): \(index < 0 ? "[\(type)]" : "layer \(index) [\(type)]"): \(text)")
    }

    mutating func set(_ key: String, _ value: String, line: Int) throws {
        if let earlier = options[key] {
            throw PkgnetError(.format, "\(file):\(line): \(key) is given twice in \(index < 0 ? "[\(type)]" : "layer \(index) [\(type)]") (first on line \(earlier.line)); darknet and OpenCV disagree on which one counts")
        }
        options[key] = (value, line)
    }

    public func has(_ key: String) -> Bool { options[key] != nil }

    /// An integer option in `range`, or `fallback` when absent (nil fallback: required).
    public func int(_ key: String, _ fallback: Int?, in range: ClosedRange<Int>) throws -> Int {
        guard let option = options[key] else {
            guard let fallback else { throw error(.format, "\(key)= is missing (an integer in \(range.lowerBound)...\(range.upperBound))") }
            return fallback
        }
        guard let value = Int(option.value) else {
            throw error(.format, "not an integer", key: key)
        }
        guard range.contains(value) else {
            throw error(.format, "must be in \(range.lowerBound)...\(range.upperBound)", key: key)
        }
        return value
    }

    /// A finite number option in `range`, or `fallback` when absent.
    public func float(_ key: String, _ fallback: Float, in range: ClosedRange<Float>) throws -> Float {
        guard let option = options[key] else { return fallback }
        guard let value = parseNumber(option.value) else { throw error(.format, "not a number", key: key) }
        guard range.contains(value) else {
            throw error(.format, "must be in \(range.lowerBound)...\(range.upperBound)", key: key)
        }
        return value
    }

    /// A comma-separated list of integers, nil when absent.
    public func ints(_ key: String) throws -> [Int]? {
        guard let option = options[key] else { return nil }
        return try option.value.split(separator: ",", omittingEmptySubsequences: false).map { item in
            guard let value = Int(item) else { throw error(.format, "'\(item)' is not an integer", key: key) }
            return value
        }
    }

    /// A comma-separated list of finite numbers, nil when absent.
    public func floats(_ key: String) throws -> [Float]? {
        guard let option = options[key] else { return nil }
        return try option.value.split(separator: ",", omittingEmptySubsequences: false).map { item in
            guard let value = parseNumber(String(item)) else { throw error(.format, "'\(item)' is not a number", key: key) }
            return value
        }
    }

    public func string(_ key: String, _ fallback: String) -> String { options[key]?.value ?? fallback }

    /// Refuses an option that changes inference in a way pkgnet does not
    /// implement, unless it holds the value that means "off".
    public func requireDefault(_ key: String, _ off: Float, _ why: String) throws {
        guard let option = options[key] else { return }
        guard let value = parseNumber(option.value), value == off else {
            throw error(.unsupported, "\(why) is not supported (only \(key)=\(off.plainText))", key: key)
        }
    }
}

/// A line as messages show it: printable ASCII, at most 60 characters (a
/// binary file given as a cfg must not flood the terminal).
private func shown(_ line: String) -> String {
    var text = ""
    for scalar in line.unicodeScalars.prefix(60) {
        text += scalar.isASCII && scalar.value >= 32 && scalar.value < 127 ? String(scalar) : "?"
    }
    return line.unicodeScalars.count > 60 ? text + "..." : text
}

/// Finite numbers as darknet writes them: "0.1", ".15", "1e-3", "-2".
private func parseNumber(_ text: String) -> Float? {
    guard let value = Float(text), value.isFinite else { return nil }
    return value
}

private extension Float {
    /// 1 for 1.0, 0.5 for 0.5: numbers in messages as a person writes them.
    var plainText: String {
        self == rounded() && abs(self) < 1e9 ? String(Int(self)) : String(self)
    }
}

/// A parsed .cfg: the [net] section and the layer sections in order.
public struct DarknetConfig: Sendable {
    /// Largest cfg accepted (real ones are a few tens of KB).
    public static let maxBytes = 4 << 20
    /// Most layer sections accepted.
    public static let maxLayers = 4096

    /// The file name used in messages.
    public let file: String
    public let net: DarknetSection
    public let layers: [DarknetSection]

    /// Parses cfg text with darknet's rules: all whitespace of a line is
    /// removed; empty lines and lines starting with '#' or ';' are comments;
    /// `[type]` starts a section; every other line is key=value. The first
    /// section must be [net] (or [network]). Throws `.format` naming the line.
    public init(text: String, file: String) throws {
        self.file = file
        var net: DarknetSection?
        var layers: [DarknetSection] = []
        var current: DarknetSection?

        func close() {
            guard let section = current else { return }
            if section.index < 0 { net = section } else { layers.append(section) }
            current = nil
        }

        var lineNumber = 0
        // "\r\n" is one Character in Swift: split on both ends of line.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let line = String(String.UnicodeScalarView(rawLine.unicodeScalars.filter { !$0.properties.isWhitespace }))
            guard let first = line.first, first != "#", first != ";" else { continue }
            if first == "[" {
                guard line.last == "]", line.count > 2 else {
                    throw PkgnetError(.format, "\(file):\(lineNumber): '\(shown(line))' is not a section header like [convolutional]")
                }
                let type = String(line.dropFirst().dropLast()).lowercased()
                close()
                if net == nil && layers.isEmpty {
                    guard type == "net" || type == "network" else {
                        throw PkgnetError(.format, "\(file):\(lineNumber): the first section must be [net], not [\(type)]")
                    }
                    current = DarknetSection(type: type, line: lineNumber, index: -1, file: file)
                } else {
                    guard type != "net" && type != "network" else {
                        throw PkgnetError(.format, "\(file):\(lineNumber): a second [\(type)] section")
                    }
                    guard layers.count < DarknetConfig.maxLayers else {
                        throw PkgnetError(.format, "\(file):\(lineNumber): more than \(DarknetConfig.maxLayers) layers")
                    }
                    current = DarknetSection(type: type, line: lineNumber, index: layers.count, file: file)
                }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw PkgnetError(.format, "\(file):\(lineNumber): '\(shown(line))' is neither a [section] nor key=value")
            }
            let key = String(line[..<equals]).lowercased()
            let value = String(line[line.index(after: equals)...])
            guard !key.isEmpty, !value.isEmpty else {
                throw PkgnetError(.format, "\(file):\(lineNumber): '\(shown(line))' has an empty \(key.isEmpty ? "key" : "value")")
            }
            guard current != nil else {
                throw PkgnetError(.format, "\(file):\(lineNumber): '\(shown(line))' comes before the first section ([net])")
            }
            try current!.set(key, value, line: lineNumber)
        }
        close()
        guard let net else { throw PkgnetError(.format, "\(file): no [net] section: not a darknet cfg") }
        guard !layers.isEmpty else { throw PkgnetError(.format, "\(file): [net] is followed by no layer") }
        self.net = net
        self.layers = layers
    }
}
