import FoundationEssentials
import Glibc
import PkgnetKernels

/// Element types a model file may store weights in. Computation is always fp32.
public enum TensorDType: String, Sendable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"

    var byteSize: Int { self == .f32 ? 4 : 2 }
}

/// One tensor's entry in a safetensors header, validated against the file.
struct TensorEntry {
    let name: String
    let dtype: TensorDType
    let shape: [Int]
    let count: Int
    /// Byte range inside the data section.
    let begin: Int
    let end: Int
}

/// A parsed safetensors image: header entries plus a view of the data section.
///
/// The view is only valid while the bytes it was parsed from are; `Model`
/// reads every tensor during loading (layers straight into the layout their
/// kernels read, see pkk_weight_source) and then drops it.
struct SafeTensors {
    let entries: [String: TensorEntry]
    /// Tensor names in header order.
    let names: [String]
    let metadata: [String: String]
    let data: UnsafeRawBufferPointer
    /// The bytes are a private read-only file mapping (MappedFile): a
    /// tensor's pages are dropped from memory once it is converted.
    let mapped: Bool

    /// Header JSON larger than this is refused before parsing: a real model's
    /// header is a few tens of kilobytes, and the limit keeps a corrupt length
    /// field from making us allocate gigabytes.
    static let maxHeaderBytes = 64 << 20

    init(bytes: UnsafeRawBufferPointer, source: String, mapped: Bool = false) throws {
        self.mapped = mapped
        guard bytes.count >= 8 else {
            throw PkgnetError(.format, "\(source): \(bytes.count) bytes is too short for a safetensors file (needs an 8-byte header length)")
        }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw PkgnetError(.format, "\(source): header length \(headerLength) runs past the end of the file (\(bytes.count) bytes)")
        }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw PkgnetError(.format, "\(source): header length \(headerLength) exceeds the \(Self.maxHeaderBytes)-byte limit")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(headerLength))])
        data = UnsafeRawBufferPointer(rebasing: bytes[(8 + Int(headerLength))...])

        let header: RawHeader
        do {
            header = try JSONDecoder().decode(RawHeader.self, from: Data(headerBytes))
        } catch let error as PkgnetError {
            throw PkgnetError(error.status, "\(source): \(error.message)")
        } catch {
            throw PkgnetError(.format, "\(source): header is not valid safetensors JSON (\(Self.describe(error)))")
        }
        // JSONDecoder keeps one of two equal keys; which one is unspecified.
        if let duplicate = JSONKeys.firstDuplicate(in: headerBytes) {
            if let within = duplicate.within {
                throw PkgnetError(.format, "\(source): duplicate key '\(duplicate.key)' in the header entry '\(within)'")
            }
            let what = duplicate.key == "__metadata__" ? "key" : "tensor"
            throw PkgnetError(.format, "\(source): duplicate \(what) '\(duplicate.key)': the header names it twice")
        }
        metadata = header.metadata
        names = JSONKeys.topLevelKeys(in: headerBytes).filter { $0 != "__metadata__" }
        var entries: [String: TensorEntry] = [:]
        for raw in header.tensors {
            let entry = try Self.validate(raw, dataSize: data.count, source: source)
            entries[entry.name] = entry
        }
        try Self.checkNoOverlap(Array(entries.values), source: source)
        self.entries = entries
    }

    /// The tensor read in place, for a layer to convert and arrange in one
    /// pass (`release` it afterwards).
    func source(_ entry: TensorEntry) -> pkk_weight_source {
        let dtype: Int32 = switch entry.dtype {
        case .f32: Int32(PKK_DTYPE_F32)
        case .f16: Int32(PKK_DTYPE_F16)
        case .bf16: Int32(PKK_DTYPE_BF16)
        }
        return pkk_weight_source(data: data.baseAddress.map { $0 + entry.begin }, dtype: dtype, row_scale: nil, nonfinite: 0)
    }

    /// Done with the tensor: a file mapping's pages of it are dropped.
    func release(_ entry: TensorEntry) {
        if mapped { Self.dropPages(UnsafeRawBufferPointer(rebasing: data[entry.begin..<entry.end])) }
    }

    /// The tensor's values as fp32, converted from its stored type.
    func floats(_ entry: TensorEntry) -> [Float] {
        var tensor = source(entry)
        let values = [Float](unsafeUninitializedCapacity: entry.count) { out, initialized in
            pkk_weight_source_read(&tensor, 1, entry.count, out.baseAddress)
            initialized = entry.count
        }
        release(entry)
        return values
    }

    /// Gives the whole pages inside `range` of a file mapping back to the
    /// kernel (they are read again from the file if touched): the mapping
    /// stays valid, and the converted copy is all that remains resident.
    private static func dropPages(_ range: UnsafeRawBufferPointer) {
        guard let base = range.baseAddress else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: base) + page - 1) / page * page
        let end = (Int(bitPattern: base) + range.count) / page * page
        guard end > start, let pages = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(pages, end - start, MADV_DONTNEED)
    }

    private static func validate(_ raw: RawTensor, dataSize: Int, source: String) throws -> TensorEntry {
        let name = raw.name
        guard let dtype = TensorDType(rawValue: raw.dtype) else {
            throw PkgnetError(.unsupported, "\(source): tensor '\(name)' has dtype \(raw.dtype); pkgnet reads F32, F16 and BF16")
        }
        var count = 1
        for d in raw.shape {
            guard d >= 0 else {
                throw PkgnetError(.format, "\(source): tensor '\(name)' has a negative dimension in shape \(raw.shape)")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else {
                throw PkgnetError(.format, "\(source): tensor '\(name)' shape \(raw.shape) overflows")
            }
            count = product
        }
        guard raw.offsets.count == 2 else {
            throw PkgnetError(.format, "\(source): tensor '\(name)' data_offsets must hold 2 numbers, not \(raw.offsets.count)")
        }
        let begin = raw.offsets[0], end = raw.offsets[1]
        guard begin >= 0, begin <= end, end <= dataSize else {
            throw PkgnetError(.format, "\(source): tensor '\(name)' data_offsets [\(begin), \(end)] fall outside the \(dataSize)-byte data section")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, bytes == end - begin else {
            throw PkgnetError(.format, "\(source): tensor '\(name)' holds \(end - begin) bytes but shape \(raw.shape) of \(raw.dtype) needs \(overflow ? "more than Int.max" : String(bytes))")
        }
        return TensorEntry(name: name, dtype: dtype, shape: raw.shape, count: count, begin: begin, end: end)
    }

    private static func checkNoOverlap(_ entries: [TensorEntry], source: String) throws {
        let sorted = entries.filter { $0.end > $0.begin }.sorted { $0.begin < $1.begin }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.begin < a.end {
            throw PkgnetError(.format, "\(source): tensors '\(a.name)' and '\(b.name)' overlap in the data section")
        }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context): return context.debugDescription
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "\(path): \(context.debugDescription)"
        case DecodingError.keyNotFound(let key, let context):
            let path = (context.codingPath + [key]).map(\.stringValue).joined(separator: ".")
            return "missing key \(path)"
        default: return "\(error)"
        }
    }
}

/// The header as JSON gives it: "__metadata__" plus one object per tensor.
private struct RawHeader: Decodable {
    var metadata: [String: String] = [:]
    var tensors: [RawTensor] = []

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys {
            if key.stringValue == "__metadata__" {
                metadata = try container.decode([String: String].self, forKey: key)
            } else {
                let fields = try container.decode(RawTensorFields.self, forKey: key)
                tensors.append(RawTensor(name: key.stringValue, dtype: fields.dtype, shape: fields.shape, offsets: fields.data_offsets))
            }
        }
    }
}

private struct RawTensorFields: Decodable {
    let dtype: String
    let shape: [Int]
    let data_offsets: [Int]
}

private struct RawTensor {
    let name: String
    let dtype: String
    let shape: [Int]
    let offsets: [Int]
}

struct AnyKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
