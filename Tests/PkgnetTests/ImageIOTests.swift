import Foundation
import PkgnetImageIO
import XCTest

/// PkgnetImageIO against independent decoders (Python's PIL on the Ped2
/// JPEGs), round trips through its own PNG encoder, a TIFF written byte by
/// byte here, and broken files of every kind.
final class ImageIOTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = Fixtures.scratch.appendingPathComponent("imageio-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    struct Decoded {
        var pixels: [UInt8]
        var width: Int
        var height: Int
        var channels: Int
    }

    struct Failure: Error {
        var status: pkio_status
        var message: String
    }

    private func read(_ path: String, channels: Int32) -> Result<Decoded, Failure> {
        var image = pkio_image()
        var message = [CChar](repeating: 0, count: 512)
        let status = pkio_read(path, channels, &image, &message, message.count)
        defer { pkio_image_free(&image) }
        let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard status == PKIO_OK, let base = image.pixels else { return .failure(Failure(status: status, message: text)) }
        var pixels: [UInt8] = []
        let row = Int(image.width) * Int(image.channels)
        for y in 0..<Int(image.height) {
            pixels += UnsafeBufferPointer(start: base + y * image.stride, count: row)
        }
        return .success(Decoded(pixels: pixels, width: Int(image.width), height: Int(image.height), channels: Int(image.channels)))
    }

    private func decode(_ path: String, channels: Int32, file: StaticString = #filePath, line: UInt = #line) throws -> Decoded {
        switch read(path, channels: channels) {
        case .success(let image): return image
        case .failure(let failure):
            XCTFail("\(path): status \(failure.status.rawValue): \(failure.message)", file: file, line: line)
            throw failure
        }
    }

    private func expectFailure(_ path: String, _ status: pkio_status, containing words: [String],
                               file: StaticString = #filePath, line: UInt = #line) {
        switch read(path, channels: 3) {
        case .success: XCTFail("\(path) decoded, expected status \(status.rawValue)", file: file, line: line)
        case .failure(let failure):
            XCTAssertEqual(failure.status, status, failure.message, file: file, line: line)
            XCTAssertTrue(failure.message.contains(path), "message does not name the file: \(failure.message)", file: file, line: line)
            for word in words {
                XCTAssertTrue(failure.message.lowercased().contains(word.lowercased()), "'\(word)' not in: \(failure.message)", file: file, line: line)
            }
        }
    }

    private func encodePNG(_ pixels: [UInt8], width: Int, height: Int, channels: Int) throws -> Data {
        var png: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 512)
        let status = pkio_encode_png(pixels, Int32(width), Int32(height), Int32(channels), width * channels, &png, &size, &message, message.count)
        XCTAssertEqual(status, PKIO_OK)
        guard let png else { throw XCTSkip("encode failed") }
        defer { pkio_free(png) }
        return Data(bytes: png, count: size)
    }

    private func ped2Frame(_ video: String = "01", _ frame: String = "000") throws -> URL {
        let url = Fixtures.shared.appendingPathComponent("data/ped2/testing/frames/\(video)/\(frame).jpg")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("shared data not found: \(url.path) (expected the 'shared' folder beside the repository)")
        }
        return url
    }

    // MARK: - JPEG against PIL

    func testPed2JPEGMatchesPIL() throws {
        for (video, frame) in [("01", "000"), ("05", "077"), ("11", "179")] {
            let jpeg = try ped2Frame(video, frame)
            let raw = dir.appendingPathComponent("pil-\(video)-\(frame).rgb")
            try Fixtures.python(["-c", """
                import sys
                try:
                    from PIL import Image
                except ImportError:
                    sys.exit("PIL is not installed (pip install pillow)")
                im = Image.open('\(jpeg.path)').convert('RGB')
                open('\(raw.path)', 'wb').write(bytes([im.size[0] >> 8, im.size[0] & 255, im.size[1] >> 8, im.size[1] & 255]) + im.tobytes())
                """])
            let reference = try Data(contentsOf: raw)
            let width = Int(reference[0]) << 8 | Int(reference[1]), height = Int(reference[2]) << 8 | Int(reference[3])
            let rgb = [UInt8](reference.dropFirst(4))
            let ours = try decode(jpeg.path, channels: 3)
            XCTAssertEqual(ours.width, width)
            XCTAssertEqual(ours.height, height)
            XCTAssertEqual(ours.width, 360)
            XCTAssertEqual(ours.height, 240)
            XCTAssertEqual(ours.pixels.count, rgb.count)
            // Ours is BGR, PIL's RGB. Same libjpeg algorithm (islow DCT, fancy
            // upsampling): equal up to a level where SIMD paths round differently.
            var maxDiff = 0, total = 0
            for p in 0..<(width * height) {
                for c in 0..<3 {
                    let d = abs(Int(ours.pixels[3 * p + c]) - Int(rgb[3 * p + 2 - c]))
                    maxDiff = max(maxDiff, d)
                    total += d
                }
            }
            XCTAssertLessThanOrEqual(maxDiff, 2, "\(jpeg.path)")
            XCTAssertLessThan(Double(total) / Double(rgb.count), 0.05, "\(jpeg.path)")

            // Grey: the codec's luma; the content is grey, so it equals each channel within a level or two.
            let grey = try decode(jpeg.path, channels: 1)
            XCTAssertEqual(grey.pixels.count, width * height)
            var greyMax = 0
            for p in 0..<(width * height) { greyMax = max(greyMax, abs(Int(grey.pixels[p]) - Int(ours.pixels[3 * p + 1]))) }
            XCTAssertLessThanOrEqual(greyMax, 3)
        }
    }

    func testDetectsByContentNotName() throws {
        let jpeg = try ped2Frame()
        let renamed = dir.appendingPathComponent("frame.png")
        try FileManager.default.copyItem(at: jpeg, to: renamed)
        let a = try decode(jpeg.path, channels: 3), b = try decode(renamed.path, channels: 3)
        XCTAssertEqual(a.pixels, b.pixels)
        let head: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        XCTAssertEqual(pkio_detect(head, 8), PKIO_KIND_PNG)
        XCTAssertEqual(pkio_detect([0xFF, 0xD8, 0xFF, 0xE0], 4), PKIO_KIND_JPEG)
        XCTAssertEqual(pkio_detect(Array("II*\0".utf8), 4), PKIO_KIND_TIFF)
        XCTAssertEqual(pkio_detect(Array("MM\0*".utf8), 4), PKIO_KIND_TIFF)
        XCTAssertEqual(pkio_detect(Array("GIF89a".utf8), 6), PKIO_KIND_UNKNOWN)
        XCTAssertEqual(pkio_detect(nil, 0), PKIO_KIND_UNKNOWN)
    }

    // MARK: - PNG

    func testPNGRoundTrip() throws {
        var rng = SystemRandomNumberGenerator()
        let (w, h) = (37, 23)   // odd sizes: no row padding assumptions
        let rgb = (0..<(w * h * 3)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let grey = (0..<(w * h)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let rgba = (0..<(w * h * 4)).map { _ in UInt8.random(in: 0...255, using: &rng) }

        let rgbPath = dir.appendingPathComponent("rgb.png").path
        try encodePNG(rgb, width: w, height: h, channels: 3).write(to: URL(fileURLWithPath: rgbPath))
        let bgr = try decode(rgbPath, channels: 3)
        XCTAssertEqual(bgr.width, w)
        XCTAssertEqual(bgr.height, h)
        for p in 0..<(w * h) {
            XCTAssertEqual([bgr.pixels[3 * p], bgr.pixels[3 * p + 1], bgr.pixels[3 * p + 2]],
                           [rgb[3 * p + 2], rgb[3 * p + 1], rgb[3 * p]])
        }
        // Colour -> grey: OpenCV's BGR2GRAY fixed point.
        let asGrey = try decode(rgbPath, channels: 1)
        for p in 0..<(w * h) {
            let expected = (Int(rgb[3 * p]) * 4899 + Int(rgb[3 * p + 1]) * 9617 + Int(rgb[3 * p + 2]) * 1868 + 8192) >> 14
            XCTAssertEqual(Int(asGrey.pixels[p]), expected)
        }

        let greyPath = dir.appendingPathComponent("grey.png").path
        try encodePNG(grey, width: w, height: h, channels: 1).write(to: URL(fileURLWithPath: greyPath))
        XCTAssertEqual(try decode(greyPath, channels: 1).pixels, grey)
        XCTAssertEqual(try decode(greyPath, channels: 3).pixels, grey.flatMap { [$0, $0, $0] })

        // Alpha is dropped, not composited (as cv2.imread does).
        let rgbaPath = dir.appendingPathComponent("rgba.png").path
        try encodePNG(rgba, width: w, height: h, channels: 4).write(to: URL(fileURLWithPath: rgbaPath))
        let noAlpha = try decode(rgbaPath, channels: 3)
        for p in 0..<(w * h) {
            XCTAssertEqual([noAlpha.pixels[3 * p], noAlpha.pixels[3 * p + 1], noAlpha.pixels[3 * p + 2]],
                           [rgba[4 * p + 2], rgba[4 * p + 1], rgba[4 * p]])
        }

        // Written straight to a file as well.
        let direct = dir.appendingPathComponent("direct.png").path
        var message = [CChar](repeating: 0, count: 256)
        XCTAssertEqual(pkio_write_png(direct, grey, Int32(w), Int32(h), 1, w, &message, message.count), PKIO_OK)
        XCTAssertEqual(try decode(direct, channels: 1).pixels, grey)
        XCTAssertEqual(pkio_write_png(dir.appendingPathComponent("no/such/dir.png").path, grey, Int32(w), Int32(h), 1, w, &message, message.count), PKIO_IO)
    }

    func testPNGEncodeRejectsBadArguments() {
        var png: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 256)
        let pixels = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(pkio_encode_png(pixels, 2, 2, 2, 4, &png, &size, &message, message.count), PKIO_INVALID_ARGUMENT)
        XCTAssertEqual(pkio_encode_png(pixels, 0, 2, 1, 2, &png, &size, &message, message.count), PKIO_INVALID_ARGUMENT)
        XCTAssertEqual(pkio_encode_png(pixels, 4, 2, 3, 4, &png, &size, &message, message.count), PKIO_INVALID_ARGUMENT) // stride too small
        XCTAssertEqual(pkio_encode_png(nil, 2, 2, 1, 2, &png, &size, &message, message.count), PKIO_INVALID_ARGUMENT)
        XCTAssertNil(png)
    }

    // MARK: - TIFF

    /// A baseline uncompressed TIFF: one strip, 8-bit samples, RGB or grey.
    private func tiff(width: Int, height: Int, channels: Int, pixels: [UInt8], bigEndian: Bool = false) -> Data {
        var out = [UInt8]()
        func u16(_ v: Int) { out += bigEndian ? [UInt8(v >> 8 & 255), UInt8(v & 255)] : [UInt8(v & 255), UInt8(v >> 8 & 255)] }
        func u32(_ v: Int) { out += bigEndian ? [24, 16, 8, 0].map { UInt8(v >> $0 & 255) } : [0, 8, 16, 24].map { UInt8(v >> $0 & 255) } }
        out += bigEndian ? Array("MM".utf8) : Array("II".utf8)
        u16(42)
        let tagCount = channels == 3 ? 9 : 8
        let ifdOffset = 8
        let ifdSize = 2 + tagCount * 12 + 4
        let bitsOffset = ifdOffset + ifdSize          // 3 shorts for RGB BitsPerSample
        let dataOffset = bitsOffset + (channels == 3 ? 6 : 0)
        u32(ifdOffset)
        u16(tagCount)
        func tag(_ id: Int, _ type: Int, _ count: Int, _ value: Int) {
            u16(id); u16(type); u32(count)
            if type == 3 && count == 1 { u16(value); u16(0) } else { u32(value) }
        }
        tag(256, 4, 1, width)                                   // ImageWidth
        tag(257, 4, 1, height)                                  // ImageLength
        if channels == 3 { tag(258, 3, 3, bitsOffset) } else { tag(258, 3, 1, 8) }  // BitsPerSample
        tag(259, 3, 1, 1)                                       // no compression
        tag(262, 3, 1, channels == 3 ? 2 : 1)                   // RGB / BlackIsZero
        tag(273, 4, 1, dataOffset)                              // StripOffsets
        if channels == 3 { tag(277, 3, 1, 3) }                  // SamplesPerPixel
        tag(278, 4, 1, height)                                  // RowsPerStrip
        tag(279, 4, 1, pixels.count)                            // StripByteCounts
        u32(0)
        if channels == 3 { u16(8); u16(8); u16(8) }
        out += pixels
        return Data(out)
    }

    func testTIFFRGBAndGrey() throws {
        var rng = SystemRandomNumberGenerator()
        let (w, h) = (19, 11)
        let rgb = (0..<(w * h * 3)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for bigEndian in [false, true] {
            let path = dir.appendingPathComponent("rgb-\(bigEndian).tif").path
            try tiff(width: w, height: h, channels: 3, pixels: rgb, bigEndian: bigEndian).write(to: URL(fileURLWithPath: path))
            let bgr = try decode(path, channels: 3)
            XCTAssertEqual(bgr.width, w)
            XCTAssertEqual(bgr.height, h)
            for p in 0..<(w * h) {
                XCTAssertEqual([bgr.pixels[3 * p], bgr.pixels[3 * p + 1], bgr.pixels[3 * p + 2]],
                               [rgb[3 * p + 2], rgb[3 * p + 1], rgb[3 * p]])
            }
        }
        let grey = (0..<(w * h)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let path = dir.appendingPathComponent("grey.tiff").path
        try tiff(width: w, height: h, channels: 1, pixels: grey).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try decode(path, channels: 1).pixels, grey)
        XCTAssertEqual(try decode(path, channels: 3).pixels, grey.flatMap { [$0, $0, $0] })

        // Strip data cut short: an error, not a half-black frame.
        let full = tiff(width: w, height: h, channels: 3, pixels: rgb)
        let cut = dir.appendingPathComponent("cut.tif").path
        try full.prefix(full.count - rgb.count / 2).write(to: URL(fileURLWithPath: cut))
        expectFailure(cut, PKIO_FORMAT, containing: ["TIFF"])
    }

    // MARK: - broken files

    func testBrokenFiles() throws {
        let missing = dir.appendingPathComponent("missing.jpg").path
        expectFailure(missing, PKIO_IO, containing: ["cannot open", "no such file"])
        expectFailure(dir.path, PKIO_IO, containing: ["not a regular file"])

        let empty = dir.appendingPathComponent("empty.jpg")
        try Data().write(to: empty)
        expectFailure(empty.path, PKIO_FORMAT, containing: ["empty"])

        let text = dir.appendingPathComponent("text.jpg")
        try Data("frame,x1,y1,x2,y2\n".utf8).write(to: text)
        expectFailure(text.path, PKIO_FORMAT, containing: ["not a JPEG, PNG or TIFF"])

        let jpeg = try Data(contentsOf: try ped2Frame())
        let truncated = dir.appendingPathComponent("truncated.jpg")
        try jpeg.prefix(jpeg.count / 2).write(to: truncated)
        expectFailure(truncated.path, PKIO_FORMAT, containing: ["JPEG"])

        let headerOnly = dir.appendingPathComponent("header.jpg")
        try jpeg.prefix(40).write(to: headerOnly)
        expectFailure(headerOnly.path, PKIO_FORMAT, containing: ["JPEG"])

        // Scrambled entropy-coded data past the headers.
        var scrambled = [UInt8](jpeg)
        for i in stride(from: scrambled.count / 2, to: scrambled.count - 2, by: 7) { scrambled[i] = 0xFF }
        let corrupt = dir.appendingPathComponent("corrupt.jpg")
        try Data(scrambled).write(to: corrupt)
        expectFailure(corrupt.path, PKIO_FORMAT, containing: ["JPEG"])

        let png = try encodePNG([UInt8](repeating: 7, count: 64 * 64 * 3), width: 64, height: 64, channels: 3)
        let cutPNG = dir.appendingPathComponent("cut.png")
        try png.prefix(png.count - 20).write(to: cutPNG)
        expectFailure(cutPNG.path, PKIO_FORMAT, containing: ["PNG"])

        var badCRC = [UInt8](png)
        badCRC[40] ^= 0x55   // inside IDAT
        let crcPath = dir.appendingPathComponent("crc.png")
        try Data(badCRC).write(to: crcPath)
        expectFailure(crcPath.path, PKIO_FORMAT, containing: ["PNG"])

        var image = pkio_image()
        var message = [CChar](repeating: 0, count: 256)
        XCTAssertEqual(pkio_read(try ped2Frame().path, 2, &image, &message, message.count), PKIO_INVALID_ARGUMENT)
        XCTAssertNil(image.pixels)
        XCTAssertEqual(pkio_read(nil, 3, &image, &message, message.count), PKIO_INVALID_ARGUMENT)
        // A message buffer too small is cut, never overrun.
        var tiny = [CChar](repeating: 0x7F, count: 8)
        XCTAssertEqual(pkio_read(missing, 3, &image, &tiny, 4), PKIO_IO)
        XCTAssertEqual(tiny[3], 0)
        XCTAssertEqual(tiny[4], 0x7F)
    }

    func testVersionsNameTheLibraries() {
        let text = String(cString: pkio_versions())
        XCTAssertTrue(text.contains("libjpeg"), text)
        XCTAssertTrue(text.contains("libpng 1."), text)
        XCTAssertTrue(text.contains("libtiff 4."), text)
    }
}
