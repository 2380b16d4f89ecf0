// `pkgnet synth`: writes the synthetic scene (SyntheticScene.swift) as a
// data set `pkgnet eval` reads: PNG frames, box CSVs and, for the test
// part, frame labels.
import ArgumentParser
import Glibc

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a synthetic surveillance data set: walkers for training, anomalies for testing.",
        discussion: """
        Writes DIR/training/frames/NN/NNN.png and DIR/training/boxes/NN.csv (normal \
        activity only), DIR/testing/frames/NN/NNN.png, DIR/testing/boxes/NN.csv and \
        DIR/testing/labels/NN.csv. Frames are 240x160, grey in 3 identical channels. \
        Boxes (frame,x1,y1,x2,y2) are the objects' exact extents clipped to the frame; \
        a test frame is labelled 1 when an anomalous object (cyclist, cart, runner, \
        jumper, erratic walker) is visible in it. One seed gives the same pixels, \
        boxes and labels on every machine. See docs/synthetic-scene.md.
        """
    )

    @Option(help: ArgumentHelp("Output folder; must be empty or new unless --force.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Seed of everything generated.", valueName: "n"))
    var seed: UInt64 = SyntheticSceneConfig.defaultSeed

    @Option(name: .customLong("train-clips"), help: ArgumentHelp("Training clips.", valueName: "n"))
    var trainClips = SyntheticSceneConfig().trainClips

    @Option(name: .customLong("test-clips"), help: ArgumentHelp("Test clips.", valueName: "n"))
    var testClips = SyntheticSceneConfig().testClips

    @Option(help: ArgumentHelp("Frames per clip.", valueName: "n"))
    var frames = SyntheticSceneConfig().frames

    @Flag(help: "Write into a non-empty DIR, replacing its training/ and testing/ folders.")
    var force = false

    @Flag(help: "Draw a progress bar on stderr even when it is not a terminal.")
    var progress = false

    @Flag(help: "No progress output at all.")
    var quiet = false

    static let clipLimit = 999
    static let frameLimits = 30...100_000

    func validate() throws {
        guard (1...Synth.clipLimit).contains(trainClips) else {
            throw ValidationError("--train-clips must be in 1...\(Synth.clipLimit), not \(trainClips)")
        }
        guard (1...Synth.clipLimit).contains(testClips) else {
            throw ValidationError("--test-clips must be in 1...\(Synth.clipLimit), not \(testClips)")
        }
        guard Synth.frameLimits.contains(frames) else {
            throw ValidationError("--frames must be in \(Synth.frameLimits.lowerBound)...\(Synth.frameLimits.upperBound) (anomalous episodes last 20-70 frames), not \(frames)")
        }
        if progress && quiet { throw ValidationError("--progress and --quiet exclude each other") }
    }

    func run() throws {
        let config = SyntheticSceneConfig(seed: seed, trainClips: trainClips, testClips: testClips, frames: frames)
        let style: ProgressReporter.Style = quiet ? .off : (progress || stderrIsTerminal ? .bar : .lines)
        let summary = try writeSyntheticDataSet(SyntheticScene(config: config), to: out, force: force, progress: style)
        print("synth  \(out): seed \(seed), \(SceneGeometry.width)x\(SceneGeometry.height) frames")
        print(padRight("part", 10) + padLeft("clips", 6) + padLeft("frames", 8) + padLeft("boxes", 8)
              + padLeft("objects/frame", 16) + padLeft("anomalous", 11) + "  episodes")
        for part in summary.parts {
            let perFrame = "\(part.fewestObjects)-\(part.mostObjects), mean \(formatFixed(Double(part.boxes) / Double(max(part.frames, 1)), 1))"
            let episodes = Anomaly.allCases.compactMap { kind in part.episodes[kind].map { "\($0) \(kind.rawValue)" } }
            print(padRight(part.part.rawValue, 10) + padLeft(String(part.clips), 6) + padLeft(String(part.frames), 8)
                  + padLeft(String(part.boxes), 8) + padLeft(perFrame, 16)
                  + padLeft("\(part.anomalousFrames) (\(formatFixed(100 * Double(part.anomalousFrames) / Double(max(part.frames, 1)), 0))%)", 11)
                  + "  " + (episodes.isEmpty ? "none" : episodes.joined(separator: ", ")))
        }
        print("\(summary.parts.reduce(0) { $0 + $1.frames }) frames in \(formatFixed(summary.seconds, 1)) s")
    }
}

/// What was written for one part.
struct SynthPartSummary {
    let part: ScenePart
    var clips = 0
    var frames = 0
    var boxes = 0
    var fewestObjects = Int.max
    var mostObjects = 0
    var anomalousFrames = 0
    var episodes: [Anomaly: Int] = [:]
}

struct SynthSummary {
    var parts: [SynthPartSummary]
    var seconds: Double
}

/// "01", "007": at least `digits` digits, so names sort as numbers do.
func zeroPadded(_ value: Int, _ digits: Int) -> String {
    let text = String(value)
    return text.count >= digits ? text : String(repeating: "0", count: digits - text.count) + text
}

/// Writes the whole data set under `out`; CSVs of a clip after its frames,
/// so an interrupted run leaves no clip that looks complete but is not.
func writeSyntheticDataSet(_ scene: SyntheticScene, to out: String, force: Bool,
                           progress style: ProgressReporter.Style) throws -> SynthSummary {
    try prepareOutputFolder(out, force: force)
    let config = scene.config
    let start = monotonicSeconds()
    let total = (config.trainClips + config.testClips) * config.frames
    // The shared reporter's plain lines say "pkgnet eval"; lines are drawn here.
    var bar = ProgressReporter(style: style == .bar ? .bar : .off, totalFrames: total, start: start)
    var lastLine = start
    var done = 0
    let frameDigits = max(3, String(config.frames - 1).count)
    var parts: [SynthPartSummary] = []

    for part in ScenePart.allCases {
        var summary = SynthPartSummary(part: part)
        let root = joinPath(out, part.rawValue)
        for c in 0..<config.clips(part) {
            let name = zeroPadded(c + 1, 2)
            let clip = scene.clip(part, c)
            let folder = joinPath(joinPath(root, "frames"), name)
            try makeFolders(folder)
            var boxes = "frame,x1,y1,x2,y2\n"
            var labels = "frame,anomalous\n"
            for frame in clip.frames {
                let png = scene.render(frame, of: clip).withUnsafeBufferPointer {
                    portablePNG(rgb: $0, width: SceneGeometry.width, height: SceneGeometry.height)
                }
                try writeBytes(png, to: joinPath(folder, zeroPadded(frame.index, frameDigits) + ".png"))
                for object in frame.objects {
                    let b = object.box
                    boxes += "\(frame.index),\(formatFixed(b.x1, 3)),\(formatFixed(b.y1, 3)),\(formatFixed(b.x2, 3)),\(formatFixed(b.y2, 3))\n"
                }
                labels += "\(frame.index),\(frame.anomalous ? 1 : 0)\n"
                summary.boxes += frame.objects.count
                summary.fewestObjects = min(summary.fewestObjects, frame.objects.count)
                summary.mostObjects = max(summary.mostObjects, frame.objects.count)
                if frame.anomalous { summary.anomalousFrames += 1 }
                done += 1
                bar.update(done: done, video: "\(part.rawValue)/\(name)")
                let now = monotonicSeconds()
                if style == .lines && now - lastLine >= 10 {
                    lastLine = now
                    printError("pkgnet synth: " + ProgressReporter.describe(done: done, total: total, video: "\(part.rawValue)/\(name)", elapsed: now - start, barWidth: nil) + "\n")
                }
            }
            try writeText(boxes, folder: joinPath(root, "boxes"), name: name + ".csv")
            if part == .testing { try writeText(labels, folder: joinPath(root, "labels"), name: name + ".csv") }
            summary.clips += 1
            summary.frames += clip.frames.count
            for kind in clip.episodes { summary.episodes[kind, default: 0] += 1 }
        }
        parts.append(summary)
    }
    bar.update(done: done, video: "done", force: true)
    bar.finish()
    return SynthSummary(parts: parts, seconds: monotonicSeconds() - start)
}

/// Creates `out` if needed; refuses a non-empty one unless `force`, which
/// removes its training/ and testing/ folders (stale clips or frames of an
/// earlier, larger run would otherwise join the new data set).
private func prepareOutputFolder(_ out: String, force: Bool) throws {
    switch fileKind(out) {
    case .missing:
        try makeFolders(out)
    case .directory:
        let entries = try directoryEntries(out)
        guard !entries.isEmpty else { return }
        guard force else {
            throw CLIError("'\(out)' is not empty (\(entries.count) entr\(entries.count == 1 ? "y" : "ies")): choose a new or empty folder, or pass --force to replace its training/ and testing/ folders")
        }
        for part in ScenePart.allCases { try removeTree(joinPath(out, part.rawValue)) }
    default:
        throw CLIError("'\(out)' exists and is not a folder")
    }
}

/// mkdir -p.
private func makeFolders(_ path: String) throws {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
        prefix = joinPath(prefix, String(component))
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
            throw CLIError("cannot create folder '\(prefix)': \(errnoText(errno))")
        }
    }
    guard fileKind(path) == .directory else { throw CLIError("cannot create folder '\(path)': a file of that name exists") }
}

/// rm -r, not following symbolic links; nothing to do when `path` is missing.
private func removeTree(_ path: String) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT == S_IFDIR {
        for entry in try directoryEntries(path) { try removeTree(joinPath(path, entry)) }
        guard rmdir(path) == 0 else { throw CLIError("cannot remove folder '\(path)': \(errnoText(errno))") }
    } else {
        guard unlink(path) == 0 else { throw CLIError("cannot remove '\(path)': \(errnoText(errno))") }
    }
}

private func writeBytes(_ bytes: [UInt8], to path: String) throws {
    guard let file = fopen(path, "wb") else { throw CLIError("cannot create '\(path)': \(errnoText(errno))") }
    let written = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, file) }
    let failed = written != bytes.count || ferror(file) != 0
    guard fclose(file) == 0, !failed else { throw CLIError("cannot write '\(path)': \(errnoText(errno))") }
}

private func writeText(_ text: String, folder: String, name: String) throws {
    try makeFolders(folder)
    let file = try OutputFile(path: joinPath(folder, name))
    try file.write(text)
    try file.close()
}
