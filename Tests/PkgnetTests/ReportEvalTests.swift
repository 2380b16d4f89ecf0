import Foundation
import PkgnetCore
import XCTest

@testable import PkgnetCLI

/// The pieces of `pkgnet eval` below the command line: data set reading and
/// validation, the per-frame CSV, the top-object store, and the evaluation
/// loop on a small synthetic data set (PNG frames written here).
final class ReportEvalTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = Fixtures.scratch.appendingPathComponent("eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func write(_ text: String, _ path: String) throws {
        let url = dir.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    /// A video whose frames show a bright square moving right over a
    /// textured background; boxes around the square and one static box.
    private func makeVideo(_ name: String, frames: Int, width: Int = 64, height: Int = 48,
                           anomalous: Range<Int> = 0..<0, root: String = "testing") throws {
        let folder = dir.appendingPathComponent("\(root)/frames/\(name)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var boxes = "frame,x1,y1,x2,y2\r\n"
        var labels = "frame,anomalous\r\n"
        for t in 0..<frames {
            var rgb = [UInt8](repeating: 0, count: width * height * 3)
            for y in 0..<height {
                for x in 0..<width {
                    let i = (y * width + x) * 3
                    rgb[i] = UInt8((x * 4 + y) % 200)
                    rgb[i + 1] = UInt8((y * 5) % 200)
                    rgb[i + 2] = UInt8((x + y * 3 + t) % 200)
                }
            }
            let sx = 4 + 2 * t % (width - 16)
            for y in 10..<22 { for x in sx..<(sx + 10) { rgb[(y * width + x) * 3 + 1] = 250 } }
            try writePNG(path: folder.appendingPathComponent(String(format: "%03d.png", t)).path,
                         pixels: rgb, width: width, height: height, channels: 3)
            boxes += "\(t),\(Float(sx) - 1.5),8.25,\(Float(sx) + 11.5),23.75\r\n"
            boxes += "\(t),30,20,50,45\r\n"
            labels += "\(t),\(anomalous.contains(t) ? 1 : 0)\r\n"
        }
        try write(boxes, "\(root)/boxes/\(name).csv")
        try write(labels, "\(root)/labels/\(name).csv")
    }

    private func settings(boxes: BoxSource, topK: Int = 2, window: Int = 7, reportObjects: Int = 0) -> EvalSettings {
        EvalSettings(modelPath: "m", dataPath: dir.path, videos: nil, boxes: boxes, sceneName: "ped2",
                     scene: .ped2, scoring: FrameScoring(topK: topK, emptyFloor: -1, medianWindow: window, causal: false),
                     threads: 1, scoresPath: nil, reportPath: reportObjects > 0 ? "r.html" : nil,
                     reportObjects: reportObjects, progress: .off)
    }

    // MARK: - the evaluation loop

    func testStreamSmoothingAgreesWithOfflineMedianFilter() throws {
        try makeVideo("01", frames: 23, anomalous: 8..<15)
        let model = try Model(path: try Fixtures.randomModel().path)
        let dataset = try Dataset(directory: dir.path, only: nil)
        XCTAssertEqual(dataset.videos.map(\.name), ["01"])
        for source in BoxSource.allCases {
            for window in [1, 7, 31] {   // 31 > frames: the zero padding reaches every output
                let video = dataset.videos[0]
                let notes = try video.readAnnotations(boxes: source.usesGivenBoxes)
                let evaluator = Evaluator(model: model, settings: settings(boxes: source, window: window), totalFrames: 23)
                let result = try evaluator.evaluate(video, notes)
                XCTAssertEqual(result.raw.count, 23)
                XCTAssertEqual(result.smoothed, medianFilter(result.raw, window: window))
                // The stream's own centred filter gives the same values, bit for bit.
                XCTAssertEqual(result.streamSmoothed.map(\.bitPattern), result.smoothed.map(\.bitPattern), "\(source) window \(window)")
                XCTAssertEqual(result.components.count, 1 + model.config.pairCount)
                XCTAssertTrue(result.components.allSatisfy { $0.count == 23 })
                if source == .given {
                    XCTAssertEqual(result.objects, 46)   // both boxes in every frame
                }
                XCTAssertEqual(evaluator.framesScored, 23)
            }
        }
    }

    func testComponentsAreEachCriterionsTopKMean() throws {
        try makeVideo("01", frames: 9, anomalous: 3..<6)
        let model = try Model(path: try Fixtures.randomModel().path)
        let video = try Dataset(directory: dir.path, only: nil).videos[0]
        let notes = try video.readAnnotations(boxes: true)
        // Object scores straight from a stream, to rebuild the columns.
        let stream = try Stream(model: model, scene: .ped2, scoring: FrameScoring(topK: 2, emptyFloor: -1, medianWindow: 1),
                                useMotion: false, threads: 1)
        var objects: [[ObjectScore]] = Array(repeating: [], count: 9)
        for t in 0..<9 {
            let image = try DecodedImage(path: video.framePaths[t], format: .bgr)
            let step = try image.withView { try stream.push($0, detections: notes.detections[t]) }
            for o in step.objects { objects[o.frame].append(o) }
        }
        let result = try Evaluator(model: model, settings: settings(boxes: .given, topK: 2, window: 1), totalFrames: 9).evaluate(video, notes)
        for t in 0..<9 {
            XCTAssertEqual(result.components[0][t], frameScore(objectScores: objects[t].map(\.predictionError), topK: 2, emptyFloor: 0))
            XCTAssertEqual(result.components[1][t], frameScore(objectScores: objects[t].map { $0.inconsistency[0] }, topK: 2, emptyFloor: 0))
            XCTAssertEqual(result.raw[t], frameScore(objectScores: objects[t].map(\.combined), topK: 2, emptyFloor: -1))
        }
        XCTAssertEqual(result.smoothed, result.raw)   // window 1

        let rows = ScoreCSV.rows(result).split(separator: "\n")
        XCTAssertEqual(rows.count, 9)
        XCTAssertEqual(ScoreCSV.header(pairs: 2), "video,frame,label,prediction_error,inconsistency_1,inconsistency_2,combined_raw,score")
        let fields = rows[4].split(separator: ",").map(String.init)
        XCTAssertEqual(fields.count, 8)
        XCTAssertEqual(fields[0], "01")
        XCTAssertEqual(fields[1], "4")
        XCTAssertEqual(fields[2], "1")
        XCTAssertEqual(Float(fields[6]), result.raw[4])
        XCTAssertEqual(Float(fields[7]), result.smoothed[4])
    }

    /// The report's cubes are rebuilt from kept frames; scored again they
    /// give the stream's scores, so the images show what was scored.
    func testKeptCubesRescoreToTheStreamsScores() throws {
        try makeVideo("07", frames: 12, anomalous: 4..<8)
        let model = try Model(path: try Fixtures.randomModel().path)
        let video = try Dataset(directory: dir.path, only: nil).videos[0]
        for source in [BoxSource.given, .givenAndMotion] {
            let evaluator = Evaluator(model: model, settings: settings(boxes: source, reportObjects: 5), totalFrames: 12)
            let result = try evaluator.evaluate(video, try video.readAnnotations(boxes: true))
            let kept = evaluator.top.sorted
            XCTAssertEqual(kept.count, 5)
            XCTAssertEqual(kept.map(\.score.combined), kept.map(\.score.combined).sorted(by: >))
            XCTAssertGreaterThanOrEqual(kept.last!.score.combined, result.raw.max()! - 1e9)   // sanity
            let session = try Session(model: model, threads: 1)
            let cubes = kept.flatMap(\.cube)
            var combined = [Float](repeating: 0, count: kept.count)
            try cubes.withUnsafeBufferPointer { input in
                try combined.withUnsafeMutableBufferPointer { out in
                    var outputs = ScoreOutputs()
                    outputs.combined = out.baseAddress
                    try session.score(.u8(input.baseAddress!), count: kept.count, into: outputs)
                }
            }
            for (object, value) in zip(kept, combined) {
                XCTAssertEqual(value, object.score.combined, accuracy: 1e-4 * max(1, abs(value)), "\(source) frame \(object.score.frame)")
            }
            let reports = try objectReports(kept, model: model, threads: 1)
            XCTAssertEqual(reports.count, 5)
            XCTAssertEqual(reports[0].target.count, 32 * 32 * 3)
            XCTAssertEqual(reports[0].inconsistencyMaps.map(\.size), model.pairSizes)
            XCTAssertTrue(reports[0].errorMap.allSatisfy { $0.isFinite && $0 >= 0 })
            // True crop = frame t of the cube, as RGB.
            let cube = kept[0].cube
            let t0 = 4 * 32 * 32 * 3
            XCTAssertEqual(Array(reports[0].target[0..<3]), [cube[t0 + 2], cube[t0 + 1], cube[t0]])
        }
    }

    func testTopObjectsKeepsTheHighest() {
        var top = TopObjects(capacity: 3)
        for (i, value) in [Float(1), 5, .nan, 3, 9, 2, 7, -.infinity].enumerated() {
            let score = ObjectScore(frame: i, box: Box(x1: 0, y1: 0, x2: 1, y2: 1), predictionError: 0, inconsistency: [], combined: value)
            top.insert(KeptObject(video: "v", frameName: "\(i)", score: score, cube: []))
        }
        XCTAssertEqual(top.sorted.map(\.score.combined), [9, 7, 5])
        XCTAssertFalse(top.wouldKeep(4))
        XCTAssertTrue(top.wouldKeep(6))
        XCTAssertFalse(TopObjects(capacity: 0).wouldKeep(100))
    }

    // MARK: - data set validation

    private func expectError(_ words: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("no error; expected one mentioning \(words)", file: file, line: line)
        } catch let error as CLIError {
            for word in words {
                XCTAssertTrue(error.message.contains(word), "'\(word)' not in: \(error.message)", file: file, line: line)
            }
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
    }

    func testDatasetLayout() throws {
        try makeVideo("2", frames: 3)
        try makeVideo("10", frames: 3)
        try makeVideo("01", frames: 3)
        // Numeric names sort as numbers; DIR and DIR/testing both work.
        XCTAssertEqual(try Dataset(directory: dir.path, only: nil).videos.map(\.name), ["01", "2", "10"])
        XCTAssertEqual(try Dataset(directory: dir.appendingPathComponent("testing").path, only: nil).videos.map(\.name), ["01", "2", "10"])
        XCTAssertEqual(try Dataset(directory: dir.path, only: ["10", "1"]).videos.map(\.name), ["10", "01"])
        let video = try Dataset(directory: dir.path, only: ["01"]).videos[0]
        XCTAssertEqual(video.framePaths.map { baseName($0) }, ["000.png", "001.png", "002.png"])
        let notes = try video.readAnnotations(boxes: true)
        XCTAssertEqual(notes.labels, [false, false, false])
        XCTAssertEqual(notes.detections.map(\.count), [2, 2, 2])
        XCTAssertEqual(notes.detections[0][1], Detection(box: Box(x1: 30, y1: 20, x2: 50, y2: 45), confidence: 1))

        expectError(["video '7' is not in", "01, 2, 10"]) { _ = try Dataset(directory: dir.path, only: ["7"]) }
        expectError(["does not exist"]) { _ = try Dataset(directory: dir.appendingPathComponent("nope").path, only: nil) }
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        expectError(["no frames folder", empty.path]) { _ = try Dataset(directory: empty.path, only: nil) }
    }

    func testFrameListProblems() throws {
        try makeVideo("01", frames: 5)
        let folder = dir.appendingPathComponent("testing/frames/01")
        try FileManager.default.removeItem(at: folder.appendingPathComponent("002.png"))
        expectError(["frame missing", "001.png is followed by 003.png"]) { _ = try Dataset(directory: dir.path, only: nil) }
        try FileManager.default.copyItem(at: folder.appendingPathComponent("001.png"), to: folder.appendingPathComponent("001.jpg"))
        expectError(["two files for frame", "001"]) { _ = try Dataset(directory: dir.path, only: nil) }
        let other = dir.appendingPathComponent("testing/frames/02")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: other.appendingPathComponent("notes.txt"))
        expectError(["no frames (.jpg", "02"]) { _ = try Dataset(directory: dir.path, only: ["02"]) }
    }

    func testLabelAndBoxFileProblems() throws {
        try makeVideo("01", frames: 4)
        let video = try Dataset(directory: dir.path, only: nil).videos[0]
        let labels = "testing/labels/01.csv", boxes = "testing/boxes/01.csv"

        try write("frame,anomalous\n0,0\n1,1\n2,0\n", labels)
        expectError([labels, "3 label rows", "4 frames"]) { _ = try video.readAnnotations(boxes: false) }
        try write("frame,anomalous\n0,0\n1,1\n2,0\n2,1\n", labels)
        expectError([labels, "line 5", "labelled twice"]) { _ = try video.readAnnotations(boxes: false) }
        try write("frame,anomalous\n0,0\n1,yes\n2,0\n3,1\n", labels)
        expectError([labels, "line 3", "0 or 1"]) { _ = try video.readAnnotations(boxes: false) }
        try write("frame,anomalous\n0,0\n1,1\n2,0\n4,1\n", labels)
        expectError([labels, "line 5", "names frame 4", "4 frames"]) { _ = try video.readAnnotations(boxes: false) }
        // Header-less, blank lines and spaces are fine.
        try write("0, 0\n\n1 ,1\n2,0\n3,1\n\n", labels)
        XCTAssertEqual(try video.readAnnotations(boxes: false).labels, [false, true, false, true])

        try write("frame,x1,y1,x2,y2\n0,1,2,3,4\n9,1,2,3,4\n", boxes)
        expectError([boxes, "line 3", "names frame 9", "video 01 has 4 frames"]) { _ = try video.readAnnotations(boxes: true) }
        try write("frame,x1,y1,x2,y2\n0,1,2,3\n", boxes)
        expectError([boxes, "line 2", "'y2'"]) { _ = try video.readAnnotations(boxes: true) }
        try write("frame,x1,y1,x2,y2\n0,1,abc,3,4\n", boxes)
        expectError([boxes, "line 2", "y1 'abc'"]) { _ = try video.readAnnotations(boxes: true) }
        try write("frame,x1,y1,x2,y2\n-1,1,2,3,4\n", boxes)
        expectError([boxes, "line 2", "non-negative"]) { _ = try video.readAnnotations(boxes: true) }
        try write("frame,x1,y1,x2,y2\n0,1,2,nan,4\n", boxes)
        expectError([boxes, "not a finite number"]) { _ = try video.readAnnotations(boxes: true) }
        try write("frame,x,y\n0,1,2\n", boxes)
        expectError([boxes, "no 'x1' column"]) { _ = try video.readAnnotations(boxes: true) }
        // A confidence column is read when the header names it.
        try write("frame,x1,y1,x2,y2,confidence\n1,1,2,3,4,0.25\n", boxes)
        XCTAssertEqual(try video.readAnnotations(boxes: true).detections[1], [Detection(box: Box(x1: 1, y1: 2, x2: 3, y2: 4), confidence: 0.25)])
        try write("frame,x1,y1,x2,y2,confidence\n1,1,2,3,4,1.5\n", boxes)
        expectError([boxes, "outside [0, 1]"]) { _ = try video.readAnnotations(boxes: true) }
        // Missing box files matter only when given boxes are used.
        try FileManager.default.removeItem(at: dir.appendingPathComponent(boxes))
        expectError(["boxes of video 01 not found", "--boxes motion"]) { _ = try video.readAnnotations(boxes: true) }
        XCTAssertEqual(try video.readAnnotations(boxes: false).detections.map(\.count), [0, 0, 0, 0])
        try FileManager.default.removeItem(at: dir.appendingPathComponent(labels))
        expectError(["labels of video 01 not found"]) { _ = try video.readAnnotations(boxes: false) }
        try write("\u{FF}\u{FE}", labels)
        try Data([0xFF, 0xFE, 0x00]).write(to: dir.appendingPathComponent(labels))
        expectError(["not a UTF-8 text file"]) { _ = try video.readAnnotations(boxes: false) }
    }

    func testFrameSizeChangeAndBadImage() throws {
        try makeVideo("01", frames: 6)
        let folder = dir.appendingPathComponent("testing/frames/01")
        try writePNG(path: folder.appendingPathComponent("003.png").path, pixels: [UInt8](repeating: 9, count: 32 * 48 * 3),
                     width: 32, height: 48, channels: 3)
        let model = try Model(path: try Fixtures.randomModel().path)
        let video = try Dataset(directory: dir.path, only: nil).videos[0]
        let notes = try video.readAnnotations(boxes: true)
        expectError(["003.png", "frame 3 of video 01 is 32x48", "000.png) is 64x48"]) {
            _ = try Evaluator(model: model, settings: settings(boxes: .given), totalFrames: 6).evaluate(video, notes)
        }
        try Data("not an image".utf8).write(to: folder.appendingPathComponent("003.png"))
        expectError(["003.png", "not a JPEG, PNG or TIFF"]) {
            _ = try Evaluator(model: model, settings: settings(boxes: .given), totalFrames: 6).evaluate(video, notes)
        }
    }

    func testProgressLineAndCSVQuoting() {
        let line = ProgressReporter.describe(done: 50, total: 200, video: "03", elapsed: 10, barWidth: 10)
        XCTAssertEqual(line, "[##--------]  25% 50/200 frames  video 03  5.0 frames/s  ETA 0:30")
        XCTAssertTrue(ProgressReporter.describe(done: 0, total: 0, video: "x", elapsed: 0, barWidth: nil).contains("0/0 frames"))
        XCTAssertEqual(ScoreCSV.field("01"), "01")
        XCTAssertEqual(ScoreCSV.field("a,b"), "\"a,b\"")
        XCTAssertEqual(ScoreCSV.field("say \"x\""), "\"say \"\"x\"\"\"")
    }
}
