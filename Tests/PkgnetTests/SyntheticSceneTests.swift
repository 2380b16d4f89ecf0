import Foundation
import Glibc
import PkgnetCore
import XCTest

@testable import PkgnetCLI

/// `pkgnet synth`: the synthetic scene is deterministic, written in the
/// layout `pkgnet eval` reads, with exact boxes and labels, and its
/// anomalies really move or look unlike the walkers of the training part.
final class SyntheticSceneTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = Fixtures.scratch.appendingPathComponent("synth-\(UUID().uuidString)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private let small = SyntheticSceneConfig(seed: 7, trainClips: 1, testClips: 2, frames: 30)

    @discardableResult
    private func write(_ config: SyntheticSceneConfig, to folder: URL, force: Bool = false) throws -> SynthSummary {
        try writeSyntheticDataSet(SyntheticScene(config: config), to: folder.path, force: force, progress: .off)
    }

    /// Every file under `folder`, by relative path.
    private func files(_ folder: URL) throws -> [String: Data] {
        var result: [String: Data] = [:]
        let base = folder.standardizedFileURL.path
        let walker = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in walker where (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true {
            result[String(url.standardizedFileURL.path.dropFirst(base.count + 1))] = try Data(contentsOf: url)
        }
        return result
    }

    private func fnv1a(_ bytes: [UInt8], _ hash: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
        bytes.reduce(hash) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }
    }

    // MARK: - determinism

    func testSplitMix64AndSineMatchTheirDefinitions() {
        // The first outputs of SplitMix64 from seed 0 (the reference implementation's).
        var random = SceneRandom(seed: 0)
        XCTAssertEqual(random.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(random.next(), 0x6E78_9E6A_A1B9_65F4)
        for i in -400...400 {
            let x = Double(i) * 0.0731
            XCTAssertEqual(portableSine(x), sin(x), accuracy: 1e-7, "x = \(x)")
        }
    }

    func testSameSeedGivesSameBytesAndAnotherSeedDifferentOnes() throws {
        let a = dir.appendingPathComponent("a"), b = dir.appendingPathComponent("b"), c = dir.appendingPathComponent("c")
        let tiny = SyntheticSceneConfig(seed: 7, trainClips: 1, testClips: 1, frames: 30)
        try write(tiny, to: a)
        try write(tiny, to: b)
        var other = tiny
        other.seed = 8
        try write(other, to: c)
        let first = try files(a), second = try files(b), third = try files(c)
        XCTAssertEqual(first.count, 2 * 30 + 1 + 1 + 1)
        XCTAssertEqual(first, second)
        XCTAssertEqual(Set(first.keys), Set(third.keys))
        for name in ["training/frames/01/000.png", "testing/frames/01/029.png", "training/boxes/01.csv", "testing/boxes/01.csv"] {
            XCTAssertNotNil(first[name], name)
            XCTAssertNotEqual(first[name], third[name], name)
        }
    }

    /// Pins the output of the default seed: pixels, boxes and labels must
    /// not change between machines or C libraries. (An intended change of
    /// the generator updates these constants.)
    func testDefaultSeedOutputIsPinned() {
        let scene = SyntheticScene(config: SyntheticSceneConfig())
        let clip = scene.clip(.testing, 0)
        var hash = fnv1a(scene.render(clip.frames[0], of: clip))
        hash = fnv1a(scene.render(clip.frames[40], of: clip), hash)
        for frame in clip.frames {
            for object in frame.objects {
                let b = object.box
                hash = fnv1a(Array("\(frame.index),\(formatFixed(b.x1, 3)),\(formatFixed(b.y1, 3)),\(formatFixed(b.x2, 3)),\(formatFixed(b.y2, 3)),\(frame.anomalous)".utf8), hash)
            }
        }
        XCTAssertEqual(hash, 0x3602_4539_ECCB_AD21, "hash \(String(hash, radix: 16))")
    }

    // MARK: - layout

    func testLayoutIsReadByTheDatasetLoaderWithExactPixels() throws {
        let summary = try write(small, to: dir)
        let scene = SyntheticScene(config: small)
        let width = Float(SceneGeometry.width), height = Float(SceneGeometry.height)

        let testing = try Dataset(directory: dir.path, only: nil)
        XCTAssertEqual(testing.root, dir.appendingPathComponent("testing").path)
        XCTAssertEqual(testing.videos.map(\.name), ["01", "02"])
        let training = try Dataset(directory: dir.appendingPathComponent("training").path, only: nil)
        XCTAssertEqual(training.videos.map(\.name), ["01"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("training/labels").path))

        for (part, dataset) in [(ScenePart.training, training), (.testing, testing)] {
            for (c, video) in dataset.videos.enumerated() {
                XCTAssertEqual(video.frameCount, 30)
                XCTAssertEqual(baseName(video.framePaths[7]), "007.png")
                let clip = scene.clip(part, c)
                let boxes: [[Detection]]
                if part == .testing {
                    let notes = try video.readAnnotations(boxes: true)
                    XCTAssertEqual(notes.labels, clip.frames.map(\.anomalous))
                    boxes = notes.detections
                } else {
                    boxes = try readBoxes(video.boxesPath, frames: 30)
                }
                for (t, frameBoxes) in boxes.enumerated() {
                    XCTAssertFalse(frameBoxes.isEmpty, "\(part) \(video.name) frame \(t) has no box")
                    XCTAssertEqual(frameBoxes.count, clip.frames[t].objects.count)
                    for d in frameBoxes {
                        let b = d.box
                        XCTAssertTrue(b.x1 >= 0 && b.y1 >= 0 && b.x2 <= width && b.y2 <= height, "\(b) outside the frame")
                        XCTAssertTrue(b.x2 - b.x1 >= 0.999 && b.y2 - b.y1 >= 0.999, "\(b) is not visible")
                    }
                }
                // What libpng decodes is what the scene rendered, grey in 3 channels.
                for t in [0, 17, 29] {
                    let image = try DecodedImage(path: video.framePaths[t], format: .bgr)
                    XCTAssertEqual(image.width, SceneGeometry.width)
                    XCTAssertEqual(image.height, SceneGeometry.height)
                    let decoded = image.withView { view in
                        (0..<view.height).flatMap { y in (0..<view.width * 3).map { view.data[y * view.stride + $0] } }
                    }
                    XCTAssertEqual(decoded, scene.render(clip.frames[t], of: clip))
                }
            }
        }
        XCTAssertEqual(summary.parts.map(\.frames), [30, 60])
        XCTAssertEqual(summary.parts[0].boxes, try readBoxes(training.videos[0].boxesPath, frames: 30).joined().count)
    }

    private func readBoxes(_ path: String, frames: Int) throws -> [[Detection]] {
        let table = try CSVTable(path: path)
        XCTAssertEqual(table.header, ["frame", "x1", "y1", "x2", "y2"])
        var boxes = [[Detection]](repeating: [], count: frames)
        for row in table.rows {
            let v = row.fields.map { Float($0)! }
            boxes[Int(v[0])].append(Detection(box: Box(x1: v[1], y1: v[2], x2: v[3], y2: v[4]), confidence: 1))
        }
        return boxes
    }

    func testPortablePNGDecodesToItsPixels() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var random = SceneRandom(seed: 3)
        let noise = (0..<(37 * 11)).flatMap { _ -> [UInt8] in [UInt8(random.below(256)), UInt8(random.below(256)), UInt8(random.below(256))] }
        // One grey level: a single byte value and the end-of-block symbol.
        let flat = [UInt8](repeating: 90, count: 5 * 4 * 3)
        for (pixels, width, height) in [(noise, 37, 11), (flat, 5, 4)] {
            let path = dir.appendingPathComponent("\(width).png").path
            try Data(pixels.withUnsafeBufferPointer { portablePNG(rgb: $0, width: width, height: height) }).write(to: URL(fileURLWithPath: path))
            let image = try DecodedImage(path: path, format: .bgr)
            let decoded = image.withView { view in
                (0..<view.height).flatMap { y in (0..<view.width).flatMap { x in (0..<3).map { view.data[y * view.stride + x * 3 + 2 - $0] } } }
            }
            XCTAssertEqual(decoded, pixels)
        }
    }

    func testRefusesANonEmptyFolderUnlessForced() throws {
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("testing/frames/99"), withIntermediateDirectories: true)
        try Data([1]).write(to: dir.appendingPathComponent("testing/frames/99/000.png"))
        try Data([2]).write(to: dir.appendingPathComponent("notes.txt"))
        XCTAssertThrowsError(try write(small, to: dir)) { error in
            XCTAssertTrue("\(error)".contains("--force"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("training").path))
        try write(small, to: dir, force: true)
        // The stale clip is gone; what is not ours stays.
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("testing/frames/99").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("notes.txt").path))
        XCTAssertEqual(try Dataset(directory: dir.path, only: nil).videos.map(\.name), ["01", "02"])

        let file = dir.appendingPathComponent("notes.txt").path
        XCTAssertThrowsError(try write(small, to: URL(fileURLWithPath: file), force: true)) { error in
            XCTAssertTrue("\(error)".contains("not a folder"), "\(error)")
        }
    }

    // MARK: - scene content

    /// Objects of a part, frame by frame: (frame, object) for every clip.
    private func objects(_ scene: SyntheticScene, _ part: ScenePart) -> [[SceneFrame]] {
        (0..<scene.config.clips(part)).map { scene.clip(part, $0).frames }
    }

    func testBoxesAreTheObjectsExactExtents() {
        let scene = SyntheticScene(config: small)
        let clip = scene.clip(.testing, 0)
        let width = SceneGeometry.width
        var tight = 0
        for t in stride(from: 0, to: 30, by: 3) {
            let frame = clip.frames[t]
            let empty = scene.render(SceneFrame(index: t, objects: []), of: clip)
            for object in frame.objects {
                let alone = scene.render(SceneFrame(index: t, objects: [object]), of: clip)
                var changed: (x1: Int, y1: Int, x2: Int, y2: Int) = (Int.max, Int.max, Int.min, Int.min)
                for k in stride(from: 0, to: alone.count, by: 3) where alone[k] != empty[k] {
                    let x = (k / 3) % width, y = (k / 3) / width
                    changed = (min(changed.x1, x), min(changed.y1, y), max(changed.x2, x + 1), max(changed.y2, y + 1))
                }
                let b = object.box
                XCTAssertLessThan(changed.x1, changed.x2, "object \(object.id) at frame \(t) draws nothing")
                // Drawn inside the box (anti-aliasing may touch the pixel beyond) and,
                // unless the frame cuts it, filling it.
                XCTAssertTrue(Double(changed.x1) >= b.x1 - 1 && Double(changed.x2) <= b.x2 + 1
                              && Double(changed.y1) >= b.y1 - 1 && Double(changed.y2) <= b.y2 + 1,
                              "object \(object.id) at frame \(t) drawn at \(changed), box \(b)")
                guard object.box == object.extent else { continue }
                XCTAssertTrue(Double(changed.x1) <= b.x1 + 1.5 && Double(changed.x2) >= b.x2 - 1.5
                              && Double(changed.y1) <= b.y1 + 1.5 && Double(changed.y2) >= b.y2 - 1.5,
                              "object \(object.id) at frame \(t) drawn at \(changed), box \(b) is not tight")
                tight += 1
            }
        }
        XCTAssertGreaterThan(tight, 20)
    }

    func testLabelsAreExactlyTheFramesShowingAnAnomalousObject() {
        let scene = SyntheticScene(config: SyntheticSceneConfig())
        var anomalous = 0, total = 0
        for c in 0..<scene.config.testClips {
            let clip = scene.clip(.testing, c)
            for frame in clip.frames where frame.index % 3 == 0 {
                let shown = frame.objects.filter { $0.anomaly != nil }
                XCTAssertEqual(frame.anomalous, !shown.isEmpty)
                // The anomalous objects are in view: removing them changes pixels inside their boxes.
                guard !shown.isEmpty else { continue }
                let normalOnly = SceneFrame(index: frame.index, objects: frame.objects.filter { $0.anomaly == nil })
                let with = scene.render(frame, of: clip), without = scene.render(normalOnly, of: clip)
                var differing = 0
                for k in stride(from: 0, to: with.count, by: 3) where with[k] != without[k] { differing += 1 }
                XCTAssertGreaterThan(differing, 0, "clip \(c) frame \(frame.index): the anomalous object is invisible")
            }
            for frame in clip.frames {
                total += 1
                if frame.anomalous { anomalous += 1 }
                XCTAssertEqual(frame.anomalous, frame.objects.contains { $0.anomaly != nil && $0.box.width >= 1 && $0.box.height >= 1 })
            }
            // Episodes are runs of labelled frames long enough to survive a median filter of 19.
            var run = 0
            for frame in clip.frames + [SceneFrame(index: -1, objects: [])] {
                if frame.anomalous { run += 1 } else {
                    XCTAssertTrue(run == 0 || run >= 10 || frame.index == -1, "clip \(c): an anomalous run of \(run) frames before frame \(frame.index)")
                    run = 0
                }
            }
        }
        let fraction = Double(anomalous) / Double(total)
        XCTAssertTrue(fraction > 0.25 && fraction < 0.55, "anomalous fraction \(fraction)")
    }

    func testTrainingHasNoAnomaliesAndEveryFrameHasObjects() {
        let scene = SyntheticScene(config: SyntheticSceneConfig())
        for part in ScenePart.allCases {
            for (c, frames) in objects(scene, part).enumerated() {
                for frame in frames {
                    XCTAssertTrue((1...8).contains(frame.objects.count), "\(part) clip \(c) frame \(frame.index): \(frame.objects.count) objects")
                    if part == .training {
                        XCTAssertFalse(frame.objects.contains { $0.anomaly != nil }, "training clip \(c) frame \(frame.index)")
                    }
                }
            }
        }
        XCTAssertEqual((0..<scene.config.trainClips).flatMap { scene.clip(.training, $0).episodes }, [])
    }

    func testAnomaliesMoveFasterOrLookDifferent() {
        // Enough test clips for every kind to show several times.
        let scene = SyntheticScene(config: SyntheticSceneConfig(seed: 11, trainClips: 3, testClips: 12, frames: 120))
        var speeds: [Anomaly?: [Double]] = [:]
        var aspects: [Anomaly?: [Double]] = [:]
        for part in ScenePart.allCases {
            for frames in objects(scene, part) {
                for (previous, frame) in zip(frames, frames.dropFirst()) {
                    for object in frame.objects {
                        aspects[object.anomaly, default: []].append(object.extent.width / object.extent.height)
                        // Speed of the unclipped extent's centre, undoing the perspective.
                        guard let before = previous.objects.first(where: { $0.id == object.id && $0.anomaly == object.anomaly }) else { continue }
                        let dx = object.extent.centreX - before.extent.centreX, dy = object.extent.centreY - before.extent.centreY
                        speeds[object.anomaly, default: []].append((dx * dx + dy * dy).squareRoot() / object.scale)
                    }
                }
            }
        }
        func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(max(values.count, 1)) }
        let normal = mean(speeds[nil] ?? [])
        XCTAssertGreaterThan(normal, 0.5)
        for kind in Anomaly.allCases {
            let values = speeds[kind] ?? []
            XCTAssertGreaterThan(values.count, 40, "\(kind) hardly shows")
            XCTAssertGreaterThan(mean(values), 2 * normal, "\(kind): mean speed \(mean(values)) vs walkers' \(normal)")
        }
        // Cyclists and carts are wider than any walker ever is.
        let widestWalker = aspects[nil]!.max()!
        for kind in [Anomaly.cyclist, .cart] {
            XCTAssertGreaterThan(aspects[kind]!.min()!, widestWalker, "\(kind)")
        }
    }
}
