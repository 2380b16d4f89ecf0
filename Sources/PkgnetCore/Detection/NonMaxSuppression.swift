// Greedy non-maximum suppression, per class, as cv2.dnn.NMSBoxes does it in
// OpenCV's object detection sample (which calls it once per class).

/// Intersection over union of two boxes (x2/y2 exclusive: area = w * h), in
/// Double like OpenCV's jaccardDistance on Rect2d; two boxes of zero total
/// area count as identical (IoU 1).
public func intersectionOverUnion(_ a: Box, _ b: Box) -> Double {
    let areaA = max(0, Double(a.x2) - Double(a.x1)) * max(0, Double(a.y2) - Double(a.y1))
    let areaB = max(0, Double(b.x2) - Double(b.x1)) * max(0, Double(b.y2) - Double(b.y1))
    guard areaA + areaB > Double(Float.ulpOfOne) else { return 1 }
    let w = min(Double(a.x2), Double(b.x2)) - max(Double(a.x1), Double(b.x1))
    let h = min(Double(a.y2), Double(b.y2)) - max(Double(a.y1), Double(b.y1))
    let intersection = w > 0 && h > 0 ? w * h : 0
    return intersection / (areaA + areaB - intersection)
}

/// Which objects survive NMS, as indices into `objects`, highest confidence
/// first (ties: lower index first). Within each class, going from the
/// highest confidence down (a stable order), an object is kept unless its IoU
/// with an object of its class kept before it exceeds `threshold`; objects
/// of different classes never suppress each other. threshold >= 1 keeps all.
public func nonMaxSuppression(_ objects: [DetectedObject], threshold: Float) -> [Int] {
    let order = objects.indices.sorted {
        objects[$0].confidence != objects[$1].confidence ? objects[$0].confidence > objects[$1].confidence : $0 < $1
    }
    var keptByClass: [Int: [Int]] = [:]
    var kept: [Int] = []
    let limit = Double(threshold)
    for i in order {
        let cls = objects[i].classID
        let others = keptByClass[cls, default: []]
        guard !others.contains(where: { intersectionOverUnion(objects[$0].box, objects[i].box) > limit }) else { continue }
        keptByClass[cls, default: []].append(i)
        kept.append(i)
    }
    return kept
}
