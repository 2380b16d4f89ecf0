// Objects of a frame: the detector's boxes after the published filter, plus
// motion proposals for moving things the detector missed. Pixel work is in
// the C kernels of motion.c; here are the box rules.
import Glibc
import PkgnetKernels

/// Area with the published +1 convention: (x2 - x1 + 1) * (y2 - y1 + 1).
private func inclusiveArea(_ b: Box) -> Double {
    (Double(b.x2) - Double(b.x1) + 1) * (Double(b.y2) - Double(b.y1) + 1)
}

/// The detector boxes worth cropping, as the published pipeline selects them:
/// 1. drop boxes with a non-finite coordinate, x2 < x1 or y2 < y1, or a
///    confidence below `settings.detectorConfidence` (NaN confidence too);
/// 2. drop boxes with (w+1)(h+1) < `settings.minDetectorArea`, w = x2-x1, h = y2-y1;
/// 3. overlap rule: going through the remaining boxes from the smallest area
///    (w+1)(h+1) up (ties: input order first), drop a box when its
///    intersection with ANY box after it in that order, kept or dropped,
///    covers more than `settings.coverThreshold` of its own area. This is the
///    published rule (each box is compared with all larger candidates, the
///    decisions do not feed back). The intersection uses the same +1
///    convention: max(0, min(x2) - max(x1) + 1) * max(0, min(y2) - max(y1) + 1);
/// 4. drop boxes whose crop would be empty in a frameWidth x frameHeight frame
///    (they would only be skipped as `.empty`); done after the overlap rule so
///    that it cannot change which boxes the rule keeps.
/// Returns the kept boxes in input order. Arithmetic in Double.
public func filterDetections(_ detections: [Detection], frameWidth: Int, frameHeight: Int, settings: SceneSettings) -> [Box] {
    var candidates: [(index: Int, box: Box, area: Double)] = []
    for (i, d) in detections.enumerated() {
        let b = d.box
        guard b.isFinite, !b.isInverted, d.confidence >= settings.detectorConfidence else { continue }
        let area = inclusiveArea(b)
        guard area >= Double(settings.minDetectorArea) else { continue }
        candidates.append((i, b, area))
    }
    // Stable ascending order by area: sort by (area, input index).
    candidates.sort { $0.area != $1.area ? $0.area < $1.area : $0.index < $1.index }

    let cover = Double(settings.coverThreshold)
    var kept: [(index: Int, box: Box)] = []
    for p in candidates.indices {
        let a = candidates[p].box
        var covered = false
        for q in (p + 1)..<candidates.count {
            let b = candidates[q].box
            let iw = max(0, min(Double(a.x2), Double(b.x2)) - max(Double(a.x1), Double(b.x1)) + 1)
            let ih = max(0, min(Double(a.y2), Double(b.y2)) - max(Double(a.y1), Double(b.y1)) + 1)
            if iw * ih / candidates[p].area > cover {
                covered = true
                break
            }
        }
        if !covered { kept.append((candidates[p].index, a)) }
    }
    kept.sort { $0.index < $1.index }
    return kept.compactMap { item in
        guard frameWidth > 0, frameHeight > 0 else { return nil }
        return cropBounds(of: item.box, width: frameWidth, height: frameHeight).problem == .none ? item.box : nil
    }
}

/// Boxes around motion that the detector boxes do not cover, from frames t-1, t, t+1:
/// 1. blur each frame with cv2.GaussianBlur((k, k), sigma 0), k = settings.blurKernel
///    (bit-exact, see motion.c);
/// 2. per channel, d = |b(t-1) - b(t)| + |b(t) - b(t+1)| in a wide integer (the
///    published code adds the uint8 differences and so wraps above 255; pkgnet
///    does not wrap);
/// 3. a pixel is foreground when d > settings.motionThreshold in any channel
///    (cv2.threshold THRESH_BINARY, then BGR2GRAY of the 0/255 mask is nonzero
///    iff some channel is);
/// 4. each detector box clears the mask over the integer pixel bounds
///    columns trunc(x1) - m ... trunc(x2) + m, rows trunc(y1) - m ... trunc(y2) + m,
///    both ends inclusive, clipped to the frame (m = settings.margin; trunc
///    rounds toward zero like the published `astype(np.int32)`); boxes with a
///    non-finite coordinate or x2 < x1 or y2 < y1 clear nothing;
/// 5. bounding rectangles (x, y, w, h; w = xmax - xmin + 1) of the external
///    8-connected foreground components (cv2.findContours RETR_EXTERNAL +
///    cv2.boundingRect: components inside a hole of another component are not
///    proposed; outside the frame is background);
/// 6. kept when (w+1)(h+1) > settings.minProposalArea, w/h < maxAspect and h/w < maxAspect;
/// 7. returned as Box(x1: x - m, y1: y - m, x2: x + w + m, y2: y + h + m), each
///    clipped to [0, width] / [0, height]: x2/y2 are exclusive ends (x + w is
///    one past the last column) grown by m, so the crop of the returned box
///    holds the component with m pixels of context where the frame allows.
/// Boxes are ordered by the components' first pixel in raster order (OpenCV's
/// contour order differs; compare as sets).
/// Throws `.invalidArgument` for frames of different size or format or invalid
/// settings, `.outOfMemory` if scratch memory cannot be had.
public func motionProposals(previous: FrameView, current: FrameView, next: FrameView,
                            detectorBoxes: [Box], settings: SceneSettings) throws -> [Box] {
    try settings.validate()
    let (width, height, format) = try validateFrames([previous, current, next], count: 3, what: "motion proposals")
    let m = settings.margin

    // Step 4's rectangles, inclusive, clipped; empty ones are dropped here.
    var rects: [Int32] = []
    rects.reserveCapacity(4 * detectorBoxes.count)
    func truncated(_ v: Float) -> Int {
        // Clamp before converting: any finite Float, however large, stays convertible.
        Int(max(min(Double(v), 1e12), -1e12).rounded(.towardZero))
    }
    for box in detectorBoxes where box.isFinite && !box.isInverted {
        let x0 = max(0, truncated(box.x1) - m), x1 = min(width - 1, truncated(box.x2) + m)
        let y0 = max(0, truncated(box.y1) - m), y1 = min(height - 1, truncated(box.y2) + m)
        guard x0 <= x1, y0 <= y1 else { continue }
        rects += [Int32(x0), Int32(y0), Int32(x1), Int32(y1)]
    }

    var mask = [UInt8](repeating: 0, count: width * height)
    let pointers: [UnsafePointer<UInt8>?] = [previous.data, current.data, next.data]
    let strides = [previous.stride, current.stride, next.stride]
    let status = pointers.withUnsafeBufferPointer { framePointers in
        pkk_motion_mask(framePointers.baseAddress, strides, Int32(width), Int32(height), Int32(format.channels),
                        Int32(settings.blurKernel), Int32(settings.motionThreshold), rects, rects.count / 4, &mask)
    }
    guard status == 0 else { throw PkgnetError(.outOfMemory, "motion proposals: " + String(cString: pkk_last_error())) }

    var found: UnsafeMutablePointer<Int32>?
    var count = 0
    guard pkk_external_components(mask, Int32(width), Int32(height), &found, &count) == 0 else {
        throw PkgnetError(.outOfMemory, "motion proposals: " + String(cString: pkk_last_error()))
    }
    defer { free(found) }
    guard let found, count > 0 else { return [] }

    var proposals: [Box] = []
    let maxAspect = Double(settings.maxAspect)
    for k in 0..<count {
        let x = Int(found[4 * k]), y = Int(found[4 * k + 1])
        let w = Int(found[4 * k + 2]), h = Int(found[4 * k + 3])
        guard (w + 1) * (h + 1) > settings.minProposalArea,
              Double(w) / Double(h) < maxAspect, Double(h) / Double(w) < maxAspect else { continue }
        proposals.append(Box(x1: Float(max(0, x - m)), y1: Float(max(0, y - m)),
                             x2: Float(min(x + w + m, width)), y2: Float(min(y + h + m, height))))
    }
    return proposals
}
