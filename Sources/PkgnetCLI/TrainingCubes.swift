// The training cubes of a data set of normal footage: every given box of
// every frame that has 4 frames before it in its clip, cropped from frames
// t-4..t as the stream crops them (same box filter, same resize).
import PkgnetCore

struct TrainingCubes {
    /// uint8 [count][5][32][32][channels].
    var bytes: [UInt8] = []
    var count = 0
    var videos = 0
    var frames = 0
    /// Boxes left out: filtered by the scene's detector settings, or empty once clipped.
    var dropped = 0
}

/// Reads `directory` (DIR/training, or DIR itself when it holds frames/):
/// frames + boxes, no labels. Every clip needs at least 5 frames.
func loadTrainingCubes(directory: String, videos only: [String]?, channels: Int, order: ModelConfig.ChannelOrder,
                       scene: SceneSettings, progress: ProgressReporter.Style) throws -> TrainingCubes {
    let dataset = try Dataset(directory: directory, only: only, split: "training")
    for video in dataset.videos where video.frameCount < 5 {
        throw CLIError("video \(video.name) of '\(dataset.root)' has \(video.frameCount) frame\(video.frameCount == 1 ? "" : "s"); a training clip needs at least 5 (4 past frames and the one predicted)")
    }
    // All box files first: a broken one fails now, not after decoding frames.
    let boxes = try dataset.videos.map { try $0.readBoxes() }
    var result = TrainingCubes()
    var reporter = ProgressReporter(style: progress, totalFrames: dataset.totalFrames, label: "pkgnet train")
    let cubeBytes = 5 * 32 * 32 * channels
    for (video, detections) in zip(dataset.videos, boxes) {
        var recent: [DecodedImage] = []
        for t in 0..<video.frameCount {
            let image = try DecodedImage(path: video.framePaths[t], format: .bgr)
            if let first = recent.first, first.width != image.width || first.height != image.height {
                throw CLIError("\(video.framePaths[t]): frame \(t) of video \(video.name) is \(image.width)x\(image.height), the previous frame \(first.width)x\(first.height); frames of a video must all have one size")
            }
            recent.append(image)
            if recent.count > 5 { recent.removeFirst() }
            result.frames += 1
            reporter.update(done: result.frames, video: video.name)
            guard recent.count == 5 else { continue }
            let kept = filterDetections(detections[t], frameWidth: image.width, frameHeight: image.height, settings: scene)
            result.dropped += detections[t].count - kept.count
            guard !kept.isEmpty else { continue }
            let start = result.bytes.count
            result.bytes += [UInt8](repeating: 0, count: kept.count * cubeBytes)
            let problems = try withExtendedLifetime(recent) {
                try result.bytes.withUnsafeMutableBufferPointer { out in
                    try makeObjectCubes(frames: recent.map(\.view), boxes: kept, channels: channels, order: order,
                                        into: out.baseAddress! + start)
                }
            }
            // Boxes empty once clipped leave zero-filled slots: close the gaps.
            var slot = 0
            for (i, problem) in problems.enumerated() where problem == .none {
                if slot != i {
                    result.bytes.withUnsafeMutableBufferPointer { out in
                        let base = out.baseAddress! + start
                        (base + slot * cubeBytes).update(from: base + i * cubeBytes, count: cubeBytes)
                    }
                }
                slot += 1
            }
            result.dropped += kept.count - slot
            result.bytes.removeLast((kept.count - slot) * cubeBytes)
            result.count += slot
        }
        result.videos += 1
    }
    reporter.update(done: result.frames, video: dataset.videos.last?.name ?? "", force: progress == .bar)
    reporter.finish()
    return result
}
