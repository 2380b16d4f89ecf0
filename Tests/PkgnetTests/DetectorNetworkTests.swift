// The darknet network end to end against the plain Double reference of
// DetectorTestSupport, and the decoding, NMS and stream hook around it.
import Foundation
import XCTest
@testable import PkgnetCore

final class DetectorNetworkTests: XCTestCase {
    private func frame(_ width: Int, _ height: Int, seed: UInt64) -> [UInt8] {
        var rng = KernelRNG(seed: seed)
        return rng.bytes(width * height * 3)
    }

    private func withView<R>(_ pixels: [UInt8], _ width: Int, _ height: Int, format: PixelFormat = .bgr,
                             _ body: (FrameView) throws -> R) rethrows -> R {
        try pixels.withUnsafeBufferPointer {
            try body(FrameView(data: $0.baseAddress!, width: width, height: height, stride: width * format.channels, format: format))
        }
    }

    func testEveryLayerKindMatchesReference() throws {
        let net = everyLayerNetwork
        let pixels = frame(net.width, net.height, seed: 11)
        let (weights, heads) = net.weightsAndHeads(seed: 3, frame: pixels)
        let network = try DarknetNetwork(cfg: net.cfg, cfgName: "every.cfg", weights: weights, weightsName: "every.weights")
        XCTAssertEqual(network.heads.count, 2)
        XCTAssertEqual(network.headShapes, [TensorShape(channels: 21, height: 6, width: 8), TensorShape(channels: 21, height: 7, width: 9)])
        XCTAssertEqual(network.parameterCount, (weights.count - 20) / 4)

        // The plan uses both shortcut forms and reuses buffers.
        var residuals = 0, adds = 0, storages = Set<Int>()
        for step in network.steps {
            switch step {
            case .convolution(_, let x, let y, let residual, _):
                residuals += residual == nil ? 0 : 1
                storages.formUnion([x.storage, y.storage])
            case .add: adds += 1
            default: break
            }
        }
        XCTAssertEqual(residuals, 1, "the shortcut after the linear convolution runs as its residual")
        XCTAssertEqual(adds, 1, "the shortcut after the leaky convolution is a separate sum")
        XCTAssertLessThan(network.bufferFloats.count, storages.count, "buffers are shared between layers")

        let detector = try Detector(network: network)
        for threads in [1, 2] {
            for (index, head) in heads.enumerated() {
                let raw = try withView(pixels, net.width, net.height) { try detector.rawOutput($0, head: index, threads: threads) }
                assertClose(raw, head.v, rel: 1e-4, floor: 1, "head \(index), \(threads) threads")
            }
        }
    }

    /// Every candidate (threshold 0, no NMS) in frame pixels is the head's
    /// decoding scaled to the frame, then clipped; a frame of another size
    /// and a grey frame (read as its BGR conversion) go through the same resize.
    func testDetectDecodesEveryCandidate() throws {
        let network = try everyLayerNetwork.network()
        let detector = try Detector(network: network)
        let (w, h) = (45, 20)
        let grey = frame(w, h, seed: 12).prefix(w * h).map { $0 }
        let bgr = grey.flatMap { [$0, $0, $0] }
        let options = DetectorOptions(confidence: 0, nmsThreshold: 1)
        let fromGrey = try withView(grey, w, h, format: .grey) { try detector.detect($0, options: options) }
        let fromBGR = try withView(bgr, w, h) { try detector.detect($0, options: options) }
        XCTAssertEqual(fromGrey, fromBGR)

        var want: [DetectedObject] = []
        for (index, head) in network.heads.enumerated() {
            let shape = network.headShapes[index]
            let raw = try withView(bgr, w, h) { try detector.rawOutput($0, head: index) }
            for gy in 0..<shape.height {
                for gx in 0..<shape.width {
                    for a in 0..<head.anchorCount {
                        func t(_ k: Int) -> Double { Double(raw[((a * (5 + head.classes) + k) * shape.height + gy) * shape.width + gx]) }
                        func sigmoid(_ v: Double) -> Double { 1 / (1 + exp(-v)) }
                        let scores = (0..<head.classes).map { sigmoid(t(4)) * sigmoid(t(5 + $0)) }
                        let best = scores.indices.max { scores[$0] < scores[$1] }!
                        let cx = (Double(gx) + (sigmoid(t(0)) - 0.5) * Double(head.scaleXY) + 0.5) / Double(shape.width) * Double(w)
                        let cy = (Double(gy) + (sigmoid(t(1)) - 0.5) * Double(head.scaleXY) + 0.5) / Double(shape.height) * Double(h)
                        let bw = exp(t(2)) * Double(head.anchors[2 * a]) / 32 * Double(w)
                        let bh = exp(t(3)) * Double(head.anchors[2 * a + 1]) / 24 * Double(h)
                        func clip(_ v: Double, _ limit: Int) -> Float { Float(min(max(v, 0), Double(limit))) }
                        want.append(DetectedObject(box: Box(x1: clip(cx - bw / 2, w), y1: clip(cy - bh / 2, h),
                                                            x2: clip(cx + bw / 2, w), y2: clip(cy + bh / 2, h)),
                                                   confidence: Float(scores[best]), classID: best))
                    }
                }
            }
        }
        XCTAssertEqual(fromBGR.count, want.count)
        want.sort { $0.confidence > $1.confidence }
        for (got, expected) in zip(fromBGR, want) {
            XCTAssertEqual(got.classID, expected.classID)
            XCTAssertEqual(got.confidence, expected.confidence, accuracy: 1e-5)
            for (a, b) in [(got.box.x1, expected.box.x1), (got.box.y1, expected.box.y1), (got.box.x2, expected.box.x2), (got.box.y2, expected.box.y2)] {
                XCTAssertEqual(a, b, accuracy: 1e-3)
            }
        }
        XCTAssertEqual(fromBGR.map(\.confidence), fromBGR.map(\.confidence).sorted(by: >), "highest confidence first")

        // The class filter reports the best kept class.
        let only = try withView(bgr, w, h) { try detector.detect($0, options: DetectorOptions(confidence: 0, nmsThreshold: 1, classes: [1])) }
        XCTAssertEqual(only.count, want.count)
        XCTAssertTrue(only.allSatisfy { $0.classID == 1 })
    }

    func testNonMaxSuppression() {
        func object(_ x1: Float, _ y1: Float, _ x2: Float, _ y2: Float, _ confidence: Float, _ cls: Int) -> DetectedObject {
            DetectedObject(box: Box(x1: x1, y1: y1, x2: x2, y2: y2), confidence: confidence, classID: cls)
        }
        XCTAssertEqual(intersectionOverUnion(Box(x1: 0, y1: 0, x2: 10, y2: 10), Box(x1: 5, y1: 0, x2: 15, y2: 10)), 50.0 / 150.0, accuracy: 1e-12)
        XCTAssertEqual(intersectionOverUnion(Box(x1: 0, y1: 0, x2: 1, y2: 1), Box(x1: 2, y1: 2, x2: 3, y2: 3)), 0)
        let objects = [
            object(0, 0, 10, 10, 0.6, 0),   // 0: suppressed by 1 (IoU 0.81 > 0.5)
            object(0, 0, 10, 9, 0.9, 0),    // 1: kept
            object(0, 0, 10, 10, 0.7, 1),   // 2: other class: kept
            object(5, 0, 15, 10, 0.8, 0),   // 3: IoU with 1 is 45/145 < 0.5: kept
            object(0, 0, 10, 10, 0.5, 1),   // 4: suppressed by 2
            object(20, 20, 30, 30, 0.9, 0), // 5: ties with 1, later index: after it
        ]
        XCTAssertEqual(nonMaxSuppression(objects, threshold: 0.5), [1, 5, 3, 2])
        XCTAssertEqual(nonMaxSuppression(objects, threshold: 1), [1, 5, 3, 2, 0, 4])
        // At exactly the threshold a box survives (suppression needs IoU > threshold).
        XCTAssertEqual(nonMaxSuppression([object(0, 0, 10, 10, 0.9, 0), object(5, 0, 15, 10, 0.8, 0)], threshold: Float(1.0 / 3.0)).count, 2)
    }

    func testOptionsValidation() throws {
        let network = try everyLayerNetwork.network()
        let detector = try Detector(network: network)
        let pixels = frame(8, 8, seed: 1)
        for (options, text) in [
            (DetectorOptions(confidence: 1.5), "confidence"), (DetectorOptions(confidence: .nan), "confidence"),
            (DetectorOptions(nmsThreshold: -0.1), "NMS"), (DetectorOptions(classes: []), "empty"),
            (DetectorOptions(classes: [0, 2]), "class 2"), (DetectorOptions(threads: -1), "threads"),
        ] {
            XCTAssertThrowsError(try withView(pixels, 8, 8) { try detector.detect($0, options: options) }) { error in
                XCTAssertEqual((error as? PkgnetError)?.status, .invalidArgument)
                XCTAssertTrue("\(error)".contains(text), "\(error)")
            }
        }
        XCTAssertThrowsError(try withView(pixels, 8, 8) { try detector.rawOutput($0, head: 2) }) { error in
            XCTAssertTrue("\(error)".contains("2 [yolo] heads"), "\(error)")
        }
    }

    /// A stream with a detector scores exactly what it scores when given
    /// the detector's objects as detections.
    func testStreamWithDetector() throws {
        let model = try Model(path: try Fixtures.randomModel().path)
        let network = try everyLayerNetwork.network(seed: 21)
        let options = DetectorOptions(confidence: 0.05, nmsThreshold: 0.3)
        let scene = SceneSettings(blurKernel: 3, motionThreshold: 18, minProposalArea: 10, detectorConfidence: 0.05,
                                  minDetectorArea: 4, coverThreshold: 0.9)
        let scoring = FrameScoring(topK: 2, medianWindow: 3)
        let withDetector = try PkgnetCore.Stream(model: model, scene: scene, scoring: scoring, useMotion: true, threads: 1)
        try withDetector.setDetector(try Detector(network: network), options: options)
        let given = try PkgnetCore.Stream(model: model, scene: scene, scoring: scoring, useMotion: true, threads: 1)
        let separate = try Detector(network: network)
        var objects = 0
        for t in 0..<6 {
            let pixels = frame(48, 40, seed: 100 + UInt64(t))
            let (a, b) = try withView(pixels, 48, 40) { view in
                let found = try separate.detect(view, options: options).map { Detection(box: $0.box, confidence: $0.confidence) }
                return (try withDetector.push(view, detections: nil), try given.push(view, detections: found))
            }
            XCTAssertEqual(a.objects.map(\.box), b.objects.map(\.box), "frame \(t)")
            XCTAssertEqual(a.objects.map(\.combined), b.objects.map(\.combined), "frame \(t)")
            objects += a.objects.count
        }
        XCTAssertGreaterThan(objects, 0, "the random detector found nothing to compare")
        // Without its detector the stream takes the caller's boxes only.
        try withDetector.setDetector(nil)
        let pixels = frame(48, 40, seed: 200)
        let (a, b) = try withView(pixels, 48, 40) {
            (try withDetector.push($0, detections: nil), try given.push($0, detections: nil))
        }
        XCTAssertEqual(a.objects.map(\.box), b.objects.map(\.box))
        XCTAssertThrowsError(try withDetector.setDetector(try Detector(network: network), options: DetectorOptions(classes: [5])))
    }
}
