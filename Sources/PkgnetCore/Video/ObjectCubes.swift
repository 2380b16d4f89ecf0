// Object cubes: one box cropped from 5 consecutive frames, each crop resized
// to 32x32 as the published pipeline does (numpy slice + cv2.resize). The
// pixel work is the C kernel pkk_make_cubes (crop.c); here boxes become
// integer crop bounds and the colour handling is chosen.
import PkgnetKernels

/// Why a box produced no cube.
public enum BoxProblem: Int32, Sendable {
    case none = 0
    /// A coordinate is NaN or infinite.
    case nonFinite = 1
    /// x2 < x1 or y2 < y1.
    case inverted = 2
    /// The crop is empty once clipped to the frame (zero width or height, or outside).
    case empty = 3
}

/// Side of the square crops, frames per cube (PKGNET_CROP_SIZE, PKGNET_CUBE_FRAMES).
private let cropSize = 32
private let cubeFrames = 5

/// Integer crop bounds of a box in a width x height frame: columns xa..<xb,
/// rows ya..<yb with xa = ceil(x1), xb = ceil(x2), ya = ceil(y1), yb = ceil(y2),
/// each clipped to [0, width] or [0, height]. This is the published
/// `frame[ceil(y1):ceil(y2), ceil(x1):ceil(x2)]` except that negative starts
/// clip to 0 (numpy would count them from the end).
public func cropBounds(of box: Box, width: Int, height: Int) -> (bounds: (xa: Int, ya: Int, xb: Int, yb: Int), problem: BoxProblem) {
    guard box.isFinite else { return ((0, 0, 0, 0), .nonFinite) }
    guard !box.isInverted else { return ((0, 0, 0, 0), .inverted) }
    // Clamp in floating point first: any finite Float converts safely once inside [0, limit].
    func bound(_ v: Float, _ limit: Int) -> Int {
        let c = Double(v).rounded(.up)
        return c <= 0 ? 0 : (c >= Double(limit) ? limit : Int(c))
    }
    let xa = bound(box.x1, width), xb = bound(box.x2, width)
    let ya = bound(box.y1, height), yb = bound(box.y2, height)
    guard xb > xa, yb > ya else { return ((xa, ya, xb, yb), .empty) }
    return ((xa, ya, xb, yb), .none)
}

/// Checks that frames are valid and share size and format; returns the common geometry.
func validateFrames(_ frames: [FrameView], count: Int, what: String) throws -> (width: Int, height: Int, format: PixelFormat) {
    guard frames.count == count else {
        throw PkgnetError(.invalidArgument, "\(what) needs \(count) frames, got \(frames.count)")
    }
    let first = frames[0]
    for (i, frame) in frames.enumerated() {
        try frame.validate("\(what) frame \(i)")
        guard frame.width == first.width, frame.height == first.height, frame.format == first.format else {
            throw PkgnetError(.invalidArgument, "\(what) frame \(i) is \(frame.width)x\(frame.height) \(frame.format.name), frame 0 is \(first.width)x\(first.height) \(first.format.name): all frames must match")
        }
    }
    return (first.width, first.height, first.format)
}

/// Crops every box from the 5 frames (oldest first, t-4..t, all the same size
/// and format) and resizes the crops to 32x32 with OpenCV's INTER_LINEAR
/// arithmetic, in the channel layout of a model with `channels` channels:
/// - grey frames feed a 3-channel model by replicating the channel;
/// - BGR/RGB frames are written in `order` (swapped when the frame's order differs);
/// - colour frames feed a 1-channel model as OpenCV's BGR2GRAY
///   ((299 R + 587 G + 114 B) / 1000 in 14-bit fixed point), converted before
///   the resize as cv2.cvtColor on the frame would be.
///
/// out: uint8 [boxes.count][5][32][32][channels]; a skipped box's slot is zero-filled.
/// Returns one BoxProblem per box. Throws `.invalidArgument` for frame problems
/// or a channel count other than 1 or 3.
public func makeObjectCubes(frames: [FrameView], boxes: [Box], channels: Int,
                            order: ModelConfig.ChannelOrder, into out: UnsafeMutablePointer<UInt8>) throws -> [BoxProblem] {
    guard channels == 1 || channels == 3 else {
        throw PkgnetError(.invalidArgument, "object cubes: channels must be 1 or 3 (got \(channels))")
    }
    let (width, height, format) = try validateFrames(frames, count: cubeFrames, what: "object cubes")
    let cubeBytes = cubeFrames * cropSize * cropSize * channels
    guard !boxes.count.multipliedReportingOverflow(by: cubeBytes).overflow else {
        throw PkgnetError(.invalidArgument, "object cubes: \(boxes.count) boxes overflow the output size")
    }
    if boxes.isEmpty { return [] }

    var problems = [BoxProblem](repeating: .none, count: boxes.count)
    var bounds = [Int32](repeating: 0, count: 4 * boxes.count)
    for (i, box) in boxes.enumerated() {
        let (b, problem) = cropBounds(of: box, width: width, height: height)
        problems[i] = problem
        if problem == .none {  // skipped boxes keep 0,0,0,0: the kernel zero-fills them
            bounds[4 * i] = Int32(b.xa)
            bounds[4 * i + 1] = Int32(b.ya)
            bounds[4 * i + 2] = Int32(b.xb)
            bounds[4 * i + 3] = Int32(b.yb)
        }
    }

    // Colour: out channel c reads source channel map[c], or grey conversion.
    var map: [Int32] = [0, 0, 0]
    var greyBlue: Int32 = -1
    switch (format, channels) {
    case (.grey, _):
        map = [0, 0, 0]
    case (.bgr, 1):
        greyBlue = 0
    case (.rgb, 1):
        greyBlue = 2
    default:
        let frameOrder: ModelConfig.ChannelOrder = format == .bgr ? .bgr : .rgb
        map = frameOrder == order ? [0, 1, 2] : [2, 1, 0]
    }

    let pointers: [UnsafePointer<UInt8>?] = frames.map { $0.data }
    let strides = frames.map { $0.stride }
    pointers.withUnsafeBufferPointer { framePointers in
        pkk_make_cubes(framePointers.baseAddress, strides, Int32(width), Int32(height), Int32(format.channels),
                       bounds, boxes.count, Int32(channels), map, greyBlue, out)
    }
    return problems
}
