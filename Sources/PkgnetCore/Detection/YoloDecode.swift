// From the raw outputs of [yolo] heads to objects in frame pixels: the
// decoding kernel (pkk_yolo_decode, OpenCV's Region-layer arithmetic), boxes
// scaled to the frame without letterbox, per-class NMS, clipping.
import PkgnetKernels

/// One object a detector found.
public struct DetectedObject: Equatable, Sendable {
    /// In pixels of the frame, clipped to it (x2/y2 are exclusive ends).
    public var box: Box
    /// Objectness times the class probability, as OpenCV's importer reports it.
    public var confidence: Float
    /// Index into the model's class list (coco.names order for COCO models).
    public var classID: Int

    public init(box: Box, confidence: Float, classID: Int) {
        self.box = box
        self.confidence = confidence
        self.classID = classID
    }
}

/// Decodes one head's raw output `x` [anchors*(5+classes)][h][w] into
/// candidates (6 floats each, see pkk_yolo_decode) at `out`; returns how many.
func decodeYoloHead(_ x: UnsafePointer<Float>, head: YoloHead, shape: TensorShape, input: TensorShape,
                    threshold: Float, keep: [UInt8], into out: UnsafeMutablePointer<Float>) -> Int {
    head.anchors.withUnsafeBufferPointer { anchors in
        keep.withUnsafeBufferPointer { keep in
            pkk_yolo_decode(x, Int32(head.anchorCount), Int32(head.classes), Int32(shape.height), Int32(shape.width),
                            anchors.baseAddress, Int32(input.width), Int32(input.height), head.scaleXY,
                            threshold, keep.baseAddress, out)
        }
    }
}

/// Candidates (centre, size relative to the network input) as objects of a
/// width x height frame: the network input is the whole frame stretched, so
/// x scales by width and y by height. After NMS (on the unclipped boxes, as
/// OpenCV's sample does) boxes are clipped to the frame. Highest confidence first.
func objects(fromCandidates candidates: UnsafePointer<Float>, count: Int, frameWidth: Int, frameHeight: Int,
             nmsThreshold: Float) -> [DetectedObject] {
    let fw = Float(frameWidth), fh = Float(frameHeight)
    var found: [DetectedObject] = []
    found.reserveCapacity(count)
    for i in 0..<count {
        let c = candidates + 6 * i
        let cx = c[0] * fw, cy = c[1] * fh, w = c[2] * fw, h = c[3] * fh
        found.append(DetectedObject(box: Box(x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2),
                                    confidence: c[4], classID: Int(c[5])))
    }
    return nonMaxSuppression(found, threshold: nmsThreshold).map { i in
        var object = found[i]
        object.box = Box(x1: min(max(object.box.x1, 0), fw), y1: min(max(object.box.y1, 0), fh),
                         x2: min(max(object.box.x2, 0), fw), y2: min(max(object.box.y2, 0), fh))
        return object
    }
}
