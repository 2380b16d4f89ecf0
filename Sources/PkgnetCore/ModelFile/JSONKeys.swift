/// Duplicate object keys in JSON text.
///
/// JSON leaves duplicate keys undefined and JSONDecoder silently keeps one of
/// them, so a safetensors header naming a tensor twice (or a tensor entry
/// with two "data_offsets") would load whichever copy the decoder happened to
/// keep. Files are refused instead. This scan runs after JSONDecoder accepted
/// the text, so it may assume well-formed JSON; it still never indexes out of
/// bounds on any input.
enum JSONKeys {
    /// The first key that occurs twice in one object, with the top-level key
    /// enclosing it (nil when the duplicate is itself top-level).
    static func firstDuplicate(in text: UnsafeRawBufferPointer) -> (key: String, within: String?)? {
        scan(text).duplicate
    }

    /// The top-level object's keys in the order written (a safetensors
    /// header's tensors in file order; JSONDecoder does not keep it).
    static func topLevelKeys(in text: UnsafeRawBufferPointer) -> [String] {
        scan(text).topLevel
    }

    private static func scan(_ text: UnsafeRawBufferPointer) -> (duplicate: (key: String, within: String?)?, topLevel: [String]) {
        // One frame per open object or array: objects remember their keys.
        var frames: [(keys: Set<String>?, expectKey: Bool)] = []
        var topLevelKey: String?
        var topLevel: [String] = []
        var duplicate: (key: String, within: String?)?
        var i = 0
        let n = text.count
        while i < n {
            let c = text[i]
            switch c {
            case UInt8(ascii: "{"): frames.append((keys: [], expectKey: true))
            case UInt8(ascii: "["): frames.append((keys: nil, expectKey: false))
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if !frames.isEmpty { frames.removeLast() }
            case UInt8(ascii: ","): if !frames.isEmpty, frames[frames.count - 1].keys != nil { frames[frames.count - 1].expectKey = true }
            case UInt8(ascii: "\""):
                // A string: up to the next quote not escaped by a backslash.
                var j = i + 1
                var escaped = false
                while j < n, text[j] != UInt8(ascii: "\"") {
                    if text[j] == UInt8(ascii: "\\") { escaped = true; j += 2 } else { j += 1 }
                }
                let end = min(j, n)
                if let top = frames.indices.last, frames[top].keys != nil, frames[top].expectKey {
                    let raw = UnsafeRawBufferPointer(rebasing: text[(i + 1)..<max(i + 1, end)])
                    let key = escaped ? unescape(raw) : String(decoding: raw, as: UTF8.self)
                    frames[top].expectKey = false
                    if frames.count == 1 {
                        topLevelKey = key
                        topLevel.append(key)
                    }
                    if frames[top].keys!.insert(key).inserted == false, duplicate == nil {
                        duplicate = (key, frames.count == 1 ? nil : topLevelKey)
                    }
                }
                i = end
            default: break
            }
            i += 1
        }
        return (duplicate, topLevel)
    }

    /// A JSON string body with its escapes resolved; "a" and "\u0061" are the
    /// same key. Malformed escapes (which JSONDecoder has already refused)
    /// are kept as written.
    static func unescape(_ raw: UnsafeRawBufferPointer) -> String {
        var scalars = String.UnicodeScalarView()
        var bytes: [UInt8] = []
        func flush() {
            scalars.append(contentsOf: String(decoding: bytes, as: UTF8.self).unicodeScalars)
            bytes.removeAll(keepingCapacity: true)
        }
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= raw.count else { return nil }
            var value: UInt32 = 0
            for k in at..<(at + 4) {
                let h = raw[k]
                let digit: UInt8
                switch h {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = h - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = h - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = h - UInt8(ascii: "A") + 10
                default: return nil
                }
                value = value << 4 | UInt32(digit)
            }
            return value
        }
        var i = 0
        while i < raw.count {
            let c = raw[i]
            guard c == UInt8(ascii: "\\"), i + 1 < raw.count else { bytes.append(c); i += 1; continue }
            let e = raw[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): bytes.append(8)
            case UInt8(ascii: "f"): bytes.append(12)
            case UInt8(ascii: "n"): bytes.append(10)
            case UInt8(ascii: "r"): bytes.append(13)
            case UInt8(ascii: "t"): bytes.append(9)
            case UInt8(ascii: "u"):
                guard var code = hex4(i) else { bytes.append(contentsOf: [UInt8(ascii: "\\"), e]); continue }
                i += 4
                // A high surrogate followed by \uDC00-\uDFFF is one scalar.
                if (0xD800..<0xDC00).contains(code), i + 6 <= raw.count, raw[i] == UInt8(ascii: "\\"),
                   raw[i + 1] == UInt8(ascii: "u"), let low = hex4(i + 2), (0xDC00..<0xE000).contains(low) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
                }
                flush()
                scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
            default: bytes.append(e)  // \" \\ \/
            }
        }
        flush()
        return String(scalars)
    }
}
