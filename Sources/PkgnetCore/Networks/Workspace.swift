import Glibc

/// The im2col / col2im scratch a convolution tiles its GEMMs through.
struct Scratch {
    let data: UnsafeMutablePointer<Float>
    let count: Int
}

/// Memory a session reuses from call to call: named activation buffers that
/// grow to the largest micro-batch seen, and one GEMM scratch. Reuse matters:
/// fresh allocations of tens of MB per call would page-fault on every call.
final class Workspace {
    /// Floats of im2col scratch (8 MiB): wide enough for GEMM tiles of a few
    /// hundred columns at the largest reduction (512 channels x 3 x 3), small
    /// enough to stay near the caches and within the memory budget.
    static let scratchFloats = 2 << 20
    /// Scratch for narrow models scored side by side (2 MiB): their largest
    /// Winograd chunk wants about 5 MiB, and cut in smaller chunks on one
    /// thread it costs nothing measurable, while each thread's workspace
    /// counts against the memory budget.
    static let narrowScratchFloats = 1 << 19

    private var buffers: [String: (data: UnsafeMutablePointer<Float>, count: Int)] = [:]
    let scratch: Scratch

    init(scratchFloats: Int = Workspace.scratchFloats) throws {
        scratch = Scratch(data: try Workspace.allocate(scratchFloats), count: scratchFloats)
    }

    deinit {
        free(scratch.data)
        for buffer in buffers.values { free(buffer.data) }
    }

    /// A [channels][batch][size][size] map under `name`, reusing its memory.
    func map(_ name: String, channels: Int, size: Int, batch: Int) throws -> FeatureMap {
        let count = channels * batch * size * size
        if let buffer = buffers[name], buffer.count >= count {
            return FeatureMap(data: buffer.data, channels: channels, size: size)
        }
        if let old = buffers.removeValue(forKey: name) { free(old.data) }
        let data = try Workspace.allocate(count)
        buffers[name] = (data, count)
        return FeatureMap(data: data, channels: channels, size: size)
    }

    private static func allocate(_ count: Int) throws -> UnsafeMutablePointer<Float> {
        var raw: UnsafeMutableRawPointer?
        // 64-byte alignment: one AVX-512 vector, one cache line.
        guard posix_memalign(&raw, 64, max(count, 1) * MemoryLayout<Float>.size) == 0, let raw else {
            throw PkgnetError(.outOfMemory, "could not allocate \(count * 4) bytes of working memory")
        }
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }
}
