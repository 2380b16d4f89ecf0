// The `pkgnet` command line: `eval` (frame-level AUROC of a model on a data
// set, with CSV and HTML outputs) and `info` (a model file's settings).
import ArgumentParser
import Glibc
import PkgnetCore
import PkgnetKernels

@main
struct PkgnetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pkgnet",
        abstract: "PKG-Net video anomaly detection: score videos, inspect models.",
        version: "pkgnet \(PKGNET_VERSION_STRING)",
        subcommands: [Eval.self, Train.self, Calibrate.self, Info.self, Synth.self, Detect.self, Bench.self]
    )
}

/// Loads a model file, turning the engine's error into the CLI's.
func loadModel(_ path: String) throws -> Model {
    do {
        return try Model(path: path)
    } catch let error as PkgnetError {
        throw CLIError(error.message)
    }
}

extension BoxSource: ExpressibleByArgument {}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a data set's videos and print frame-level AUROC.",
        discussion: """
        DIR is laid out as DIR/testing/frames/<video>/<frame>.jpg (also .png, .tif), \
        DIR/testing/boxes/<video>.csv (frame,x1,y1,x2,y2 rows, 0-based frame index) and \
        DIR/testing/labels/<video>.csv (frame,anomalous rows, one per frame); DIR may also \
        be the testing folder itself. Frames are pushed in order through a stream, as a \
        camera would deliver them.

        --scores writes one row per frame: video,frame,label,prediction_error,\
        inconsistency_1[,inconsistency_2],combined_raw,score. prediction_error and \
        inconsistency_j are the frame scores each criterion gives alone (mean of the \
        frame's top-k object values, 0 without objects), combined_raw the frame's raw \
        score (top-k mean of the objects' combined scores), score the median-filtered \
        score that AUROC is computed on. Rows are written video by video.

        The last line of standard output is `AUROC <value>`: the AUROC of all videos' \
        smoothed frame scores against their labels, concatenated ("micro" AUROC); \
        `AUROC nan` when the labels hold one class only.
        """
    )

    @Option(help: ArgumentHelp("Model file (.safetensors).", valueName: "model"))
    var model: String

    @Option(help: ArgumentHelp("Data set folder (see below).", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("Write a self-contained HTML report here.", valueName: "file.html"))
    var report: String?

    @Option(help: ArgumentHelp("Write per-frame scores here (CSV).", valueName: "file.csv"))
    var scores: String?

    @Option(help: ArgumentHelp("Boxes to score: the data set's (given), motion proposals (motion), both (given+motion), the built-in detector's (detector, see --detector-cfg) or those plus motion proposals (detector+motion).", valueName: "source"))
    var boxes: BoxSource = .given

    @OptionGroup var detector: DetectorArguments

    @Option(help: ArgumentHelp("Scene preset for box filtering and motion proposals: ped2, avenue or shanghaitech (default: the model's).", valueName: "name"))
    var scene: String?

    @Option(name: .customLong("top-k"), help: ArgumentHelp("Objects averaged per frame score (default: the model's).", valueName: "k"))
    var topK: Int?

    @Option(help: ArgumentHelp("Median filter window over a video's frame scores, odd; 1 = none (default: the model's).", valueName: "w"))
    var medianWindow: Int?

    @Option(help: ArgumentHelp("Threads for scoring; 0 = all CPUs.", valueName: "n"))
    var threads: Int = 0

    @Option(help: ArgumentHelp("Only these videos, comma-separated (e.g. 01,03).", valueName: "list"))
    var videos: String?

    @Option(help: ArgumentHelp("Objects shown with their images in the report.", valueName: "n"))
    var reportObjects: Int = 8

    @Flag(help: "Draw a progress bar on stderr even when it is not a terminal.")
    var progress = false

    @Flag(help: "No progress output at all.")
    var quiet = false

    func validate() throws {
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1, not \(topK)") }
        if let medianWindow, medianWindow < 1 || medianWindow % 2 == 0 || medianWindow > FrameScoring.maxMedianWindow {
            throw ValidationError("--median-window must be odd, in 1...\(FrameScoring.maxMedianWindow) (1 = no smoothing), not \(medianWindow)")
        }
        guard (0...Session.maxThreads).contains(threads) else {
            throw ValidationError("--threads must be in 0...\(Session.maxThreads) (0 = all CPUs), not \(threads)")
        }
        guard (0...64).contains(reportObjects) else {
            throw ValidationError("--report-objects must be in 0...64, not \(reportObjects)")
        }
        if let scene, SceneSettings.preset(named: scene) == nil {
            throw ValidationError("--scene must be one of \(SceneSettings.presetNames.joined(separator: ", ")), not '\(scene)'")
        }
        if let videos, parsedVideos(videos).isEmpty {
            throw ValidationError("--videos names no video: '\(videos)'")
        }
        if progress && quiet { throw ValidationError("--progress and --quiet exclude each other") }
        if boxes.usesDetector && detector.cfg == nil {
            throw ValidationError("--boxes \(boxes.rawValue) needs --detector-cfg and --detector-weights")
        }
        if !boxes.usesDetector && detector.given {
            throw ValidationError("the --detector-* options need --boxes detector or detector+motion")
        }
    }

    private func parsedVideos(_ text: String) -> [String] {
        text.split(separator: ",").map { String($0.trimmingWhitespace()) }.filter { !$0.isEmpty }
    }

    func run() throws {
        // Inputs first (cheap checks), then the model, then outputs: nothing
        // is created before we know the run can start.
        let dataset = try Dataset(directory: data, only: videos.map(parsedVideos))
        let annotations = try dataset.videos.map { try $0.readAnnotations(boxes: boxes.usesGivenBoxes) }
        let loaded = try loadModel(model)
        let config = loaded.config

        let sceneName = scene.map { $0.lowercased() } ?? config.scene
        var scoring = config.frame
        scoring.causal = false
        if let topK { scoring.topK = topK }
        if let medianWindow { scoring.medianWindow = medianWindow }
        let style: ProgressReporter.Style = quiet ? .off : (progress || stderrIsTerminal ? .bar : .lines)
        var settings = EvalSettings(
            modelPath: model, dataPath: data, videos: videos.map(parsedVideos), boxes: boxes,
            sceneName: sceneName, scene: SceneSettings.preset(named: sceneName) ?? config.sceneSettings,
            scoring: scoring, threads: threads, scoresPath: scores, reportPath: report,
            reportObjects: reportObjects, progress: style)
        var detectorLine: String?
        if boxes.usesDetector {
            // One threshold for the detector and the scene's filter of its boxes.
            let (network, options, names) = try detector.load(threads: threads, defaultThreshold: settings.scene.detectorConfidence)
            settings.scene.detectorConfidence = options.confidence
            settings.detector = (network, options)
            let classes = options.classes.map { $0.map { names?[$0] ?? String($0) }.joined(separator: ",") } ?? "all classes"
            detectorLine = "detector \(network.cfgName): \(network.input.width)x\(network.input.height), \(classes), confidence > \(options.confidence), NMS \(options.nmsThreshold)"
        }

        let csv = try scores.map { try ScoreCSV(path: $0, pairs: config.pairCount) }
        let reportFile = try report.map { try OutputFile(path: $0) }

        print("model  \(model): k=\(config.student.k), width \(config.student.width), teacher \(config.teacher.arch.rawValue), \(config.student.channels) channel\(config.student.channels == 1 ? "" : "s")")
        print("data   \(dataset.root): \(dataset.videos.count) video\(dataset.videos.count == 1 ? "" : "s"), \(dataset.totalFrames) frames")
        print("scene \(sceneName), boxes \(boxes.rawValue), top-k \(scoring.topK), median window \(scoring.medianWindow)")
        if let detectorLine { print(detectorLine) }
        print("")
        print(padRight("video", 8) + padLeft("frames", 8) + padLeft("anomalous", 11) + padLeft("objects", 9) + padLeft("AUROC", 9))
        fflush(nil)

        let evaluator = Evaluator(model: loaded, settings: settings, totalFrames: dataset.totalFrames)
        var results: [VideoResult] = []
        do {
            for (video, notes) in zip(dataset.videos, annotations) {
                let result = try evaluator.evaluate(video, notes)
                try csv?.append(result)
                results.append(result)
                evaluator.clearProgressLine()
                let anomalous = result.labels.reduce(0) { $0 + ($1 ? 1 : 0) }
                print(padRight(result.name, 8) + padLeft(String(result.labels.count), 8) + padLeft(String(anomalous), 11)
                      + padLeft(String(result.objects), 9) + padLeft(formatAUROC(result.auroc), 9))
                fflush(nil)
                if !result.skipped.isEmpty {
                    let parts = result.skipped.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \(describe($0.key))" }
                    printError("pkgnet eval: video \(result.name): boxes not scored: \(parts.joined(separator: ", "))\n")
                }
            }
        } catch {
            evaluator.finishProgress()
            if let csv {
                printError("pkgnet eval: \(csv.file.path) holds the \(results.count) video\(results.count == 1 ? "" : "s") finished before the error\n")
            }
            throw error
        }
        evaluator.finishProgress()
        try csv?.file.close()

        let labels = results.flatMap(\.labels)
        let overall = areaUnderROC(scores: results.flatMap(\.smoothed).map(Double.init), labels: labels)
        var criteria: [(String, Double?)] = []
        let componentCount = results.first?.components.count ?? 0
        for i in 0..<componentCount {
            let values = results.flatMap { medianFilter($0.components[i], window: scoring.medianWindow) }
            criteria.append((i == 0 ? "prediction error" : "inconsistency \(i)",
                             areaUnderROC(scores: values.map(Double.init), labels: labels)))
        }
        let rate = evaluator.elapsed > 0 ? Double(evaluator.framesScored) / evaluator.elapsed : 0

        if let reportFile {
            let content = try buildReport(results: results, model: loaded, settings: settings, dataset: dataset,
                                          overall: overall, criteria: criteria, rate: rate, top: evaluator.top.sorted)
            try reportFile.write(try renderReport(content))
            try reportFile.close()
            print("report \(reportFile.path)")
        }
        if let scores { print("scores \(scores)") }
        print("criteria alone (smoothed): " + criteria.map { "\($0.0) \(formatAUROC($0.1))" }.joined(separator: ", "))
        print("\(evaluator.framesScored) frames in \(formatFixed(evaluator.elapsed, 1)) s: \(formatFixed(rate, 1)) frames/s")
        if overall == nil {
            printError("pkgnet eval: AUROC is undefined: the labels of the videos evaluated are all \(labels.first == true ? "anomalous" : "normal")\n")
        }
        print("AUROC \(overall.map { formatFixed($0, 4) } ?? "nan")")
    }

    private func describe(_ problem: BoxProblem) -> String {
        switch problem {
        case .none: return "fine"
        case .nonFinite: return "non-finite"
        case .inverted: return "inverted (x2 < x1 or y2 < y1)"
        case .empty: return "empty inside the frame"
        }
    }

    private func buildReport(results: [VideoResult], model: Model, settings: EvalSettings, dataset: Dataset,
                             overall: Double?, criteria: [(String, Double?)], rate: Double, top: [KeptObject]) throws -> ReportContent {
        let config = model.config
        let window = settings.scoring.medianWindow
        let videos = results.map { result in
            VideoReport(name: result.name, labels: result.labels,
                        series: chartSeries(result, model: config, window: window),
                        auroc: result.auroc, objects: result.objects,
                        skippedBoxes: result.skipped.values.reduce(0, +))
        }
        let objects = try objectReports(top, model: model, threads: settings.threads)
        return ReportContent(
            title: "pkgnet eval: \(baseName(settings.modelPath)) on \(baseName(settings.dataPath))",
            facts: [
                ("model", "\(settings.modelPath) (k=\(config.student.k), width \(config.student.width), task \(config.student.task.rawValue), teacher \(config.teacher.arch.rawValue), \(config.student.channels) channels)"),
                ("data", "\(dataset.root): \(results.count) videos, \(results.reduce(0) { $0 + $1.labels.count }) frames"),
                ("settings", "scene \(settings.sceneName), boxes \(settings.boxes.rawValue), top-k \(settings.scoring.topK), empty-frame floor \(formatScore(settings.scoring.emptyFloor)), median window \(window)"),
                ("criteria alone", criteria.map { "\($0.0) \(formatAUROC($0.1))" }.joined(separator: ", ")),
                ("speed", "\(formatFixed(rate, 1)) frames/s"),
                ("pkgnet", PKGNET_VERSION_STRING),
            ],
            overallAUROC: overall,
            videos: videos,
            objects: objects,
            chartNote: "Each criterion's frame score (top-\(settings.scoring.topK) mean over the frame's objects) and the combined score, all median-filtered with window \(window), each min-max normalised to [0, 1] per video for display; the CSV holds the values. Shaded: frames labelled anomalous.",
            objectNote: "The \(objects.count) highest combined scores over all videos. Images are 32x32 crops enlarged 4x (maps 4x4 and 8x8 enlarged 32x and 16x) with nearest neighbour; the true crop is frame t of the object's cube, the prediction is the student's output from frames t-4..t-1. Map colours: viridis from the smallest (dark) to the largest (bright) value shown in the column.")
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model file's settings.")

    @Option(help: ArgumentHelp("Model file (.safetensors).", valueName: "model"))
    var model: String

    func run() throws {
        let loaded = try loadModel(model)
        let c = loaded.config
        func list(_ values: [Float]) -> String { "[" + values.map { String($0) }.joined(separator: ", ") + "]" }
        var lines: [(String, String)] = [
            ("model", model),
            ("format", "pkgnet model format \(ModelConfig.formatVersion)"),
            ("student", "k=\(c.student.k), width \(c.student.width), task \(c.student.task.rawValue), \(c.student.channels) channel\(c.student.channels == 1 ? "" : "s"), input \(c.inputChannelOrder.rawValue)"),
            ("teacher", "\(c.teacher.arch.rawValue) (blocks \(c.teacher.arch.blockNames.joined(separator: ", "))), trained on \(c.teacher.channelOrder.rawValue), mean \(list(c.teacher.mean)), std \(list(c.teacher.std))"),
        ]
        for (j, (pair, size)) in zip(c.pairs, loaded.pairSizes).enumerated() {
            lines.append(("pair \(j + 1)", "student \(pair.student) vs teacher \(pair.teacher), \(size)x\(size)"))
        }
        lines += [
            ("scoring", "weights \(list(c.scoring.weights)), mu \(list(c.scoring.mu)), sigma \(list(c.scoring.sigma)) over [e\((1...c.pairCount).map { ", c\($0)" }.joined())]"),
            ("frames", "top-k \(c.frame.topK), empty floor \(c.frame.emptyFloor), median window \(c.frame.medianWindow)\(c.frame.causal ? " (causal)" : " (centred)")"),
            ("scene", c.scene),
            ("pkgnet", PKGNET_VERSION_STRING),
            ("images", imageLibraryVersions),
        ]
        for (key, value) in lines { print(padRight(key, 9) + value) }
    }
}
