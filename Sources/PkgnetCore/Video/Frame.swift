// Frames and boxes as the video stages take them. Image decoding stays out of
// the core: callers hand over raw 8-bit interleaved pixels.

/// Pixel layout of a frame: 8 bits per channel, channels interleaved.
public enum PixelFormat: Int32, Sendable, CaseIterable {
    case grey = 1, bgr = 2, rgb = 3

    public var channels: Int { self == .grey ? 1 : 3 }

    public var name: String {
        switch self {
        case .grey: return "grey"
        case .bgr: return "bgr"
        case .rgb: return "rgb"
        }
    }
}

/// A borrowed frame: rows of `stride` bytes, `width * channels` of them used.
/// The caller keeps the memory alive and unchanged while pkgnet reads it.
public struct FrameView: @unchecked Sendable {
    public var data: UnsafePointer<UInt8>
    public var width: Int
    public var height: Int
    public var stride: Int
    public var format: PixelFormat

    public init(data: UnsafePointer<UInt8>, width: Int, height: Int, stride: Int, format: PixelFormat) {
        self.data = data
        self.width = width
        self.height = height
        self.stride = stride
        self.format = format
    }

    /// Bytes a row's pixels take (`width * channels`), nil on overflow.
    public var rowBytes: Int? {
        let (bytes, overflow) = width.multipliedReportingOverflow(by: format.channels)
        return overflow ? nil : bytes
    }

    /// Bytes from the first pixel to one past the last: (height-1)*stride + rowBytes, nil on overflow.
    public var byteSpan: Int? {
        guard height > 0, let row = rowBytes else { return nil }
        let (rows, o1) = (height - 1).multipliedReportingOverflow(by: stride)
        let (span, o2) = rows.addingReportingOverflow(row)
        return o1 || o2 ? nil : span
    }

    /// Checks the geometry: positive size, stride covering a row, sizes that
    /// fit in memory arithmetic. Kernels index with 32-bit ints per dimension,
    /// so width and height are bounded by Int32 as well.
    public func validate(_ name: String = "frame") throws {
        guard width > 0, height > 0 else {
            throw PkgnetError(.invalidArgument, "\(name): width and height must be positive (got \(width)x\(height))")
        }
        guard width <= Int(Int32.max) / 4, height <= Int(Int32.max) / 4 else {
            throw PkgnetError(.invalidArgument, "\(name): \(width)x\(height) is too large (each side at most \(Int(Int32.max) / 4))")
        }
        guard let row = rowBytes else {
            throw PkgnetError(.invalidArgument, "\(name): width \(width) x \(format.channels) channels overflows")
        }
        guard stride >= row else {
            throw PkgnetError(.invalidArgument, "\(name): stride \(stride) is smaller than a row of \(width) \(format.name) pixels (\(row) bytes)")
        }
        // Both the strided span and the packed copy (row * height) must be representable.
        guard byteSpan != nil, !row.multipliedReportingOverflow(by: height).overflow else {
            throw PkgnetError(.invalidArgument, "\(name): \(height) rows of stride \(stride) overflow the address space")
        }
    }
}

/// A frame copied into pkgnet's memory (ring buffers keep these); rows are packed
/// (stride = width * channels).
public struct Frame: Sendable {
    public private(set) var pixels: [UInt8]
    public let width: Int
    public let height: Int
    public let format: PixelFormat

    /// Copies a view after validating it (throws `.invalidArgument` for a bad geometry).
    public init(copying view: FrameView) throws {
        try view.validate()
        let row = view.width * view.format.channels
        width = view.width
        height = view.height
        format = view.format
        pixels = [UInt8](unsafeUninitializedCapacity: row * view.height) { buffer, count in
            let base = buffer.baseAddress!
            if view.stride == row {
                base.update(from: view.data, count: row * view.height)
            } else {
                for y in 0..<view.height {
                    (base + y * row).update(from: view.data + y * view.stride, count: row)
                }
            }
            count = row * view.height
        }
    }

    /// Runs body with a view of this frame's pixels (valid only inside body).
    public func withView<R>(_ body: (FrameView) throws -> R) rethrows -> R {
        try pixels.withUnsafeBufferPointer { buffer in
            try body(FrameView(data: buffer.baseAddress!, width: width, height: height,
                               stride: width * format.channels, format: format))
        }
    }
}

/// An axis-aligned box in pixels of its frame. The crop it selects is
/// rows ceil(y1)..<ceil(y2), columns ceil(x1)..<ceil(x2) (x2/y2 exclusive, as
/// the published numpy slice).
public struct Box: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var x1: Float
    public var y1: Float
    public var x2: Float
    public var y2: Float

    public init(x1: Float, y1: Float, x2: Float, y2: Float) {
        self.x1 = x1
        self.y1 = y1
        self.x2 = x2
        self.y2 = y2
    }

    public var isFinite: Bool { x1.isFinite && y1.isFinite && x2.isFinite && y2.isFinite }
    public var isInverted: Bool { x2 < x1 || y2 < y1 }

    public var description: String { "(\(x1), \(y1), \(x2), \(y2))" }
}

/// A detector's box with its confidence in [0, 1].
public struct Detection: Equatable, Sendable {
    public var box: Box
    public var confidence: Float

    public init(box: Box, confidence: Float) {
        self.box = box
        self.confidence = confidence
    }
}
