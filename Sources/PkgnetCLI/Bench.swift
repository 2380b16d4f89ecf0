// `pkgnet bench`: the engine's own speed figures on any model file (the
// side-by-side comparison with ONNX Runtime is benchmarks/peer.py).
import ArgumentParser
import Glibc
import PkgnetCore

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time scoring on a model file: cubes/s, GFLOP/s, frame latency, load time, peak memory.",
        discussion: """
        Scores random uint8 cubes (seeded, the same every run) in batches of each --batches \
        size on each --threads count, round after round until --seconds have passed per \
        thread count (at least 3 rounds), and prints medians. GFLOP/s counts the direct \
        convolutions' multiply-adds of student and teacher (2 FLOPs each), whichever \
        algorithm runs them. Frame latency: one call with 17 cubes, a typical UCSD Ped2 \
        frame's objects. Run on an otherwise idle machine.
        """
    )

    @Option(help: ArgumentHelp("Model file (.safetensors).", valueName: "model"))
    var model: String

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Thread counts (0 = the default).", valueName: "n"))
    var threads: [Int] = [0]

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Cubes per call.", valueName: "n"))
    var batches: [Int] = [1, 16, 128]

    @Option(help: ArgumentHelp("Timing per thread count.", valueName: "seconds"))
    var seconds: Double = 10

    static let frameCubes = 17

    func validate() throws {
        guard !threads.isEmpty, threads.allSatisfy({ (0...Session.maxThreads).contains($0) }) else {
            throw ValidationError("--threads takes counts in 0...\(Session.maxThreads)")
        }
        guard !batches.isEmpty, batches.allSatisfy({ (1...4096).contains($0) }) else {
            throw ValidationError("--batches takes sizes in 1...4096")
        }
        guard seconds.isFinite, seconds >= 0 else { throw ValidationError("--seconds must be >= 0") }
    }

    func run() throws {
        print(PkgnetRuntime.systemInfo)
        let loadStart = monotonicSeconds()
        let loaded = try loadModel(model)
        let loadSeconds = monotonicSeconds() - loadStart
        let gflop = Double(loaded.multiplyAddsPerCube) * 2e-9
        print("model \(model): load \(formatFixed(loadSeconds * 1000, 1)) ms, \(formatFixed(gflop, 3)) GFLOP per cube")

        let sizes = Set(batches + [Bench.frameCubes])
        var random = SeededRandom(seed: 1)
        let elements = 5 * 32 * 32 * loaded.config.student.channels
        let cubes = (0..<(sizes.max()! * elements)).map { _ in UInt8(truncatingIfNeeded: random.next() >> 56) }
        var combined = [Float](repeating: 0, count: sizes.max()!)

        for threadCount in threads {
            let session = try Session(model: loaded, threads: threadCount)
            func score(_ n: Int) throws -> Double {
                let start = monotonicSeconds()
                try cubes.withUnsafeBufferPointer { input in
                    try combined.withUnsafeMutableBufferPointer { output in
                        var outputs = ScoreOutputs()
                        outputs.combined = output.baseAddress
                        try session.score(.u8(input.baseAddress!), count: n, into: outputs)
                    }
                }
                return monotonicSeconds() - start
            }
            for n in sizes.sorted() { _ = try score(n) }  // warm-up: workspaces, Winograd weights
            var times: [Int: [Double]] = [:]
            let start = monotonicSeconds()
            while monotonicSeconds() - start < seconds || (times.values.map(\.count).min() ?? 0) < 3 {
                for n in sizes.sorted() { times[n, default: []].append(try score(n)) }
            }
            let label = "threads \(session.threads)"
            for n in batches {
                let rate = Double(n) / median(times[n]!)
                print("\(label)  batch \(padLeft(String(n), 4))  \(padLeft(formatFixed(rate, 1), 8)) cubes/s  \(padLeft(formatFixed(rate * gflop, 1), 6)) GFLOP/s  (\(times[n]!.count) runs)")
            }
            print("\(label)  frame latency (\(Bench.frameCubes) cubes)  \(formatFixed(median(times[Bench.frameCubes]!) * 1000, 2)) ms")
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        print("peak resident memory \(formatFixed(Double(usage.ru_maxrss) / 1024, 1)) MiB")
    }

    private func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}
