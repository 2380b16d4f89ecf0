// libFuzzer target for a stream's inputs: frame geometry (width, height,
// stride, format, changes mid-clip), pixels, detector boxes (NaN/Inf,
// inverted, zero-area, far outside the frame) and confidences, motion on or
// off, finish() at any point. The model is fixed (PKGNET_FUZZ_MODEL, a small
// valid file scripts/fuzz.sh makes): the loader has its own target.
//
// Contract: every call returns or throws PkgnetError; scores that come out are
// finite for finite pixels. Frame sides stay below 96 pixels so an iteration
// costs milliseconds, not seconds.
import Glibc
import PkgnetKernels

nonisolated(unsafe) private var model: Model?

@_cdecl("LLVMFuzzerInitialize")
public func streamFuzzInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32 {
    guard let path = getenv("PKGNET_FUZZ_MODEL") else { fatalError("set PKGNET_FUZZ_MODEL to a model file") }
    do { model = try Model(path: String(cString: path)) } catch { fatalError("cannot load the fuzz model: \(error)") }
    return 0
}

/// Reads the fuzz input as a little program; runs out into zeros.
private struct Reader {
    let bytes: UnsafeRawBufferPointer
    var at = 0
    var done: Bool { at >= bytes.count }
    mutating func u8() -> UInt8 { defer { at += 1 }; return at < bytes.count ? bytes[at] : 0 }
    mutating func u16() -> Int { Int(u8()) | Int(u8()) << 8 }
    mutating func float() -> Float {
        var bits: UInt32 = 0
        for i in 0..<4 { bits |= UInt32(u8()) << (8 * UInt32(i)) }
        return Float(bitPattern: bits)
    }
}

private func check(_ step: StreamStep) {
    for object in step.objects where object.box.isFinite {
        // Pixels are bytes (always finite), so scores must be too.
        if !object.combined.isFinite || !object.predictionError.isFinite {
            fatalError("non-finite score \(object.combined) for box \(object.box)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func streamFuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let model else { return 0 }
    var r = Reader(bytes: UnsafeRawBufferPointer(start: size > 0 ? data : nil, count: size))
    let flags = r.u8()
    let stream: Stream
    do {
        stream = try Stream(model: model, useMotion: flags & 1 != 0, threads: 1)
    } catch { fatalError("stream creation failed: \(error)") }
    var pixels = [UInt8](repeating: 0, count: 96 * 96 * 3 + 64)
    var frames = 0
    while !r.done && frames < 12 {
        let op = r.u8()
        if op & 7 == 7 {
            do { check(try stream.finish()) } catch let e as PkgnetError { _ = e } catch { fatalError("\(error)") }
            continue
        }
        // Geometry: small sides (0 allowed: must be refused), stride possibly
        // too short, formats 0...4 (0 and 4 are not formats).
        let width = Int(r.u8() % 96), height = Int(r.u8() % 96)
        let format = PixelFormat(rawValue: Int32(op >> 3) % 5) ?? .grey
        let stride = width * format.channels + Int(r.u8() % 8) - 2
        let span = height > 0 && stride > 0 ? (height - 1) * stride + width * format.channels : 0
        guard span <= pixels.count else { continue }
        let seed = r.u8()
        for i in 0..<span { pixels[i] = UInt8(truncatingIfNeeded: i &* Int(seed | 1) &+ frames) }
        var detections: [Detection]? = nil
        let boxes = Int(r.u8() % 6)
        if boxes > 0 {
            detections = (0..<(boxes - 1)).map { _ in
                Detection(box: Box(x1: r.float(), y1: r.float(), x2: r.float(), y2: r.float()), confidence: r.float())
            }
        }
        pixels.withUnsafeBufferPointer { buffer in
            let view = FrameView(data: buffer.baseAddress!, width: width, height: height, stride: stride, format: format)
            do {
                check(try stream.push(view, detections: detections))
            } catch let error as PkgnetError {
                if error.message.isEmpty { fatalError("empty message for \(error.status)") }
            } catch {
                fatalError("a non-PkgnetError escaped push: \(error)")
            }
        }
        frames += 1
    }
    do { check(try stream.finish()) } catch let e as PkgnetError { _ = e } catch { fatalError("\(error)") }
    return 0
}
