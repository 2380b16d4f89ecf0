import Glibc

/// Writes safetensors files (the format SafeTensors reads; docs/model-format.md).
enum SafeTensorsWriter {
    struct Tensor {
        let name: String
        let dtype: TensorDType
        let shape: [Int]
        /// Little-endian element bytes, count = product(shape) * dtype size.
        let bytes: [UInt8]

        init(name: String, shape: [Int], floats: [Float]) {
            self.name = name
            self.dtype = .f32
            self.shape = shape
            self.bytes = floats.withUnsafeBytes { Array($0) }
        }

        init(name: String, dtype: TensorDType, shape: [Int], bytes: [UInt8]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }
    }

    /// The file image: header length, JSON header (padded with spaces to a
    /// multiple of 8 bytes so the tensor data is aligned), data.
    static func encode(_ tensors: [Tensor], metadata: [String: String]) -> [UInt8] {
        var header = "{\"__metadata__\":{"
        header += metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",")
        header += "}"
        var offset = 0
        for tensor in tensors {
            let end = offset + tensor.bytes.count
            header += ",\(jsonString(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var file: [UInt8] = []
        file.reserveCapacity(8 + headerBytes.count + offset)
        var length = UInt64(headerBytes.count)
        for _ in 0..<8 {
            file.append(UInt8(length & 0xFF))
            length >>= 8
        }
        file += headerBytes
        for tensor in tensors { file += tensor.bytes }
        return file
    }

    /// A JSON string literal.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed, then renamed over `path`, so a crash or a full disk never leaves
/// a half-written model or checkpoint where the last good one was.
public func writeFileAtomically(_ bytes: [UInt8], to path: String) throws {
    let temporary = "\(path).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
        throw PkgnetError(.io, "cannot create '\(temporary)': \(String(cString: strerror(errno)))")
    }
    var written = 0
    let failure: String? = bytes.withUnsafeBytes { buffer in
        while written < buffer.count {
            let n = write(fd, buffer.baseAddress! + written, buffer.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                return String(cString: strerror(errno))
            }
            written += n
        }
        return fsync(fd) == 0 ? nil : String(cString: strerror(errno))
    }
    close(fd)
    if let failure {
        unlink(temporary)
        throw PkgnetError(.io, "cannot write '\(path)': \(failure)")
    }
    guard rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw PkgnetError(.io, "cannot move '\(temporary)' to '\(path)': \(reason)")
    }
}
