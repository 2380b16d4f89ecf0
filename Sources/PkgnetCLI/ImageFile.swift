// Swift side of PkgnetImageIO: decoded frames as owned objects that hand out
// FrameViews, and PNG encoding for the report.
import PkgnetCore
import PkgnetImageIO

/// Room for the C decoders' messages (a path plus a sentence).
private let messageCapacity = 1024

private func messageText(_ buffer: [CChar]) -> String {
    let end = buffer.firstIndex(of: 0) ?? buffer.count
    return String(decoding: buffer[0..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A frame decoded from an image file; owns its pixels (freed with the object).
final class DecodedImage {
    private var image: pkio_image
    private let pixels: UnsafeMutablePointer<UInt8>
    let path: String
    let format: PixelFormat

    var width: Int { Int(image.width) }
    var height: Int { Int(image.height) }

    /// Reads `path` as grey (`.grey`) or BGR (`.bgr`) 8-bit pixels, whatever the
    /// file stores. Errors name the file and say what is wrong with it.
    init(path: String, format: PixelFormat) throws {
        let channels: Int32
        switch format {
        case .grey: channels = 1
        case .bgr: channels = 3
        case .rgb: throw CLIError("\(path): frames are decoded to grey or BGR, not RGB")
        }
        var decoded = pkio_image()
        var message = [CChar](repeating: 0, count: messageCapacity)
        let status = pkio_read(path, channels, &decoded, &message, message.count)
        guard status == PKIO_OK, let pixels = decoded.pixels else {
            pkio_image_free(&decoded)
            let text = messageText(message)
            throw CLIError(text.isEmpty ? "\(path): cannot decode image" : text)
        }
        self.image = decoded
        self.pixels = pixels
        self.path = path
        self.format = format
    }

    deinit { pkio_image_free(&image) }

    /// The pixels as a FrameView; valid while this object lives (callers
    /// keep it alive with withExtendedLifetime or a stored reference).
    var view: FrameView {
        FrameView(data: UnsafePointer(pixels), width: width, height: height, stride: Int(image.stride), format: format)
    }

    /// The pixels as a FrameView, valid inside `body` only (the object must outlive it).
    func withView<R>(_ body: (FrameView) throws -> R) rethrows -> R {
        return try body(FrameView(data: UnsafePointer(pixels), width: width, height: height,
                                  stride: Int(image.stride), format: format))
    }
}

/// Encodes 8-bit pixels (1 = grey, 3 = RGB, 4 = RGBA, rows packed) as PNG bytes.
func encodePNG(pixels: [UInt8], width: Int, height: Int, channels: Int) throws -> [UInt8] {
    guard width > 0, height > 0, (1...4).contains(channels),
          pixels.count == width * height * channels,
          width <= Int(PKIO_MAX_SIDE), height <= Int(PKIO_MAX_SIDE) else {
        throw CLIError("cannot encode a \(width)x\(height)x\(channels) PNG from \(pixels.count) bytes")
    }
    var message = [CChar](repeating: 0, count: messageCapacity)
    var png: UnsafeMutablePointer<UInt8>?
    var size = 0
    let status = pixels.withUnsafeBufferPointer { buffer in
        pkio_encode_png(buffer.baseAddress, Int32(width), Int32(height), Int32(channels),
                        width * channels, &png, &size, &message, message.count)
    }
    guard status == PKIO_OK, let png else { throw CLIError(messageText(message)) }
    defer { pkio_free(png) }
    return Array(UnsafeBufferPointer(start: png, count: size))
}

/// Writes a PNG file (tests and debugging; the report embeds its images).
func writePNG(path: String, pixels: [UInt8], width: Int, height: Int, channels: Int) throws {
    guard pixels.count == width * height * channels else {
        throw CLIError("\(path): \(pixels.count) bytes do not make a \(width)x\(height)x\(channels) image")
    }
    var message = [CChar](repeating: 0, count: messageCapacity)
    let status = pixels.withUnsafeBufferPointer { buffer in
        pkio_write_png(path, buffer.baseAddress, Int32(width), Int32(height), Int32(channels),
                       width * channels, &message, message.count)
    }
    guard status == PKIO_OK else { throw CLIError(messageText(message)) }
}

/// The codec libraries in use, for --version.
var imageLibraryVersions: String { String(cString: pkio_versions()) }
