import Glibc
import PkgnetKernels
import Synchronization

/// Object cubes as callers hold them (see include/pkgnet.h).
public enum CubeInput {
    /// uint8 [n][5][32][32][C], HWC frames oldest to newest; scaled by 1/255.
    case u8(UnsafePointer<UInt8>)
    /// float [n][5C][32][32] in [0,1], frames stacked frame-major on channels.
    case f32(UnsafePointer<Float>)
}

/// Where a scoring call writes; nil entries are not computed or not copied.
/// Every array is cube-major ([n][...]) and must hold n cubes.
public struct ScoreOutputs {
    public var predictionError: UnsafeMutablePointer<Float>?
    public var inconsistency: UnsafeMutablePointer<Float>?      // [n][K]
    public var combined: UnsafeMutablePointer<Float>?
    public var prediction: UnsafeMutablePointer<Float>?         // [n][C][32][32]
    public var errorMap: UnsafeMutablePointer<Float>?           // [n][32][32]
    public var inconsistencyMaps: [UnsafeMutablePointer<Float>?] = []  // pair j: [n][s][s]
    /// The distilled features themselves, pair j: [n][c][s][s] with c the
    /// teacher block's channels (the student side after any projection);
    /// for tests and inspection, not part of the C API.
    public var studentFeatures: [UnsafeMutablePointer<Float>?] = []
    public var teacherFeatures: [UnsafeMutablePointer<Float>?] = []

    public init() {}
}

/// Scratch memory and a thread count for scoring with one model. One thread
/// at a time: a concurrent second call fails with `.busy` instead of racing.
public final class Session: @unchecked Sendable {
    /// Cubes per network pass. Activations take about 2 MB per cube at w=64,
    /// so 16 keeps a session's memory near 40 MB whatever n is, while 16x4x4
    /// bottleneck maps already make GEMMs 256 columns wide.
    public static let microBatch = 16
    /// Largest pass: the last 16 + r cubes of a call go in one pass up to
    /// 20 (see passSizes).
    public static let maxPass = microBatch + microBatch / 4
    public static let maxThreads = 1024

    /// Fewest cubes per thread for scoring micro-batches side by side, one
    /// thread each, instead of one micro-batch at a time on all threads.
    static let minCubesPerWorker = 4
    /// Largest network (multiply-adds per cube) scored side by side: whole
    /// micro-batches, one per thread, or, for calls with too few cubes to
    /// share out, the student on one thread beside the teacher on another
    /// (about equal work in the edge models). Narrow models' layers are too
    /// small to share between threads (w=16: 2 threads about as fast as 1 on
    /// one micro-batch); side by side scores them 10-25% faster at batch 128
    /// on 2 threads. Wide ones lose 5%: each thread then streams all the
    /// weights on its own.
    static let maxSideBySideMultiplyAdds = 200_000_000

    public let model: Model
    public private(set) var threads: Int
    /// One per thread that has scored micro-batches side by side; the first
    /// serves every call.
    private var workspaces: [Workspace]
    private let sideBySide: Bool
    private let busy = Atomic<Bool>(false)

    public init(model: Model, threads: Int) throws {
        self.model = model
        self.threads = try Session.resolve(threads: threads)
        sideBySide = model.multiplyAddsPerCube <= Session.maxSideBySideMultiplyAdds
        workspaces = [try Workspace(scratchFloats: sideBySide ? Workspace.narrowScratchFloats : Workspace.scratchFloats)]
    }

    public func setThreads(_ threads: Int) throws {
        try exclusive { self.threads = try Session.resolve(threads: threads) }
    }

    private static func resolve(threads: Int) throws -> Int {
        guard (0...maxThreads).contains(threads) else {
            throw PkgnetError(.invalidArgument, "thread count \(threads) is out of range 0...\(maxThreads) (0 = default)")
        }
        return threads == 0 ? Int(pkk_default_threads()) : threads
    }

    private func exclusive<T>(_ body: () throws -> T) throws -> T {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw PkgnetError(.busy, "the session is in use by another thread; create one session per thread")
        }
        defer { busy.store(false, ordering: .releasing) }
        return try body()
    }

    /// Floats (f32 input) or bytes (u8 input) that n cubes of this model take.
    public func inputElements(cubes n: Int) -> Int? {
        let (count, overflow) = n.multipliedReportingOverflow(by: 5 * 32 * 32 * model.config.student.channels)
        return overflow ? nil : count
    }

    /// Scores n cubes micro-batch by micro-batch. On an error, the outputs
    /// of the micro-batches that finished are written (all before the failing
    /// one, and on several threads possibly some after it).
    public func score(_ input: CubeInput, count n: Int, into outputs: ScoreOutputs) throws {
        try exclusive {
            pkk_set_threads(Int32(threads))
            // Side by side when every thread gets a few cubes: each thread
            // runs whole micro-batches alone, so no layer waits for the other
            // threads, which costs the narrow models most of a second core.
            let workers = sideBySide ? min(threads, n / Session.minCubesPerWorker) : 1
            let sizes = Session.passSizes(n, sideBySide: sideBySide)
            var starts: [Int] = []
            var start = 0
            for size in sizes {
                starts.append(start)
                start += size
            }
            if workers <= 1 {
                // Too few cubes to share out: a narrow model's student and
                // teacher, about equal work, then run side by side instead.
                let networksSideBySide = sideBySide && threads >= 2
                if networksSideBySide { try addWorkspaces(2) }
                for pass in starts.indices {
                    try scoreMicroBatch(input, start: starts[pass], batch: sizes[pass], outputs: outputs, workspace: workspaces[0],
                                        teacherWorkspace: networksSideBySide ? workspaces[1] : nil)
                }
                return
            }
            try addWorkspaces(workers)
            try scoreSideBySide(input, starts: starts, sizes: sizes, workers: workers, outputs: outputs)
        }
    }

    /// Cubes per pass for a call of n, the same on any thread count (a
    /// cube's scores depend in the last bits on its pass's size, which picks
    /// the small maps' kernels): micro-batches of 16, whose Winograd tiles go
    /// in image-interleaved order (passes of 11-15 scored the edge models
    /// 6-10% slower), with the last 16 + r cubes in one pass up to 20 (a
    /// frame's 17 objects: w=64 scored 17 and 20 cubes 1.05x and 1.12x as
    /// fast as in two passes of 9 + 8 and 10 + 10, for about 5 MiB more at
    /// peak), else in two near-equal passes rather than 16 and a lone few
    /// whose GEMMs are too narrow to use the cores. Models scored side by
    /// side plan each half of the call so (the passes then go to whichever
    /// thread is free).
    static func passSizes(_ n: Int, sideBySide: Bool) -> [Int] {
        if sideBySide && n >= 2 * minCubesPerWorker {
            return passSizes((n + 1) / 2, sideBySide: false) + passSizes(n / 2, sideBySide: false)
        }
        let m = microBatch
        if n <= 0 { return [] }
        if n <= m { return [n] }
        if n % m == 0 { return Array(repeating: m, count: n / m) }
        let full = n / m - 1, rest = n - full * m
        if rest <= maxPass { return Array(repeating: m, count: full) + [rest] }
        return Array(repeating: m, count: full) + [(rest + 1) / 2, rest / 2]
    }

    private func addWorkspaces(_ count: Int) throws {
        while workspaces.count < count { workspaces.append(try Workspace(scratchFloats: Workspace.narrowScratchFloats)) }
    }

    /// What the threads of a side-by-side call share: each pass is a task
    /// that the next free thread takes, and its error slot is written by the
    /// one thread that runs it.
    private final class SideBySide {
        let session: Session
        let input: CubeInput
        let outputs: ScoreOutputs
        let starts: [Int], sizes: [Int]
        let errors: UnsafeMutableBufferPointer<Error?>

        init(session: Session, input: CubeInput, outputs: ScoreOutputs, starts: [Int], sizes: [Int]) {
            self.session = session
            self.input = input
            self.outputs = outputs
            self.starts = starts
            self.sizes = sizes
            errors = .allocate(capacity: starts.count)
            errors.initialize(repeating: nil)
        }

        deinit {
            errors.deinitialize()
            errors.deallocate()
        }
    }

    private func scoreSideBySide(_ input: CubeInput, starts: [Int], sizes: [Int], workers: Int, outputs: ScoreOutputs) throws {
        let shared = SideBySide(session: self, input: input, outputs: outputs, starts: starts, sizes: sizes)
        let context = Unmanaged.passUnretained(shared).toOpaque()
        withExtendedLifetime(shared) {
            pkk_parallel_tasks(starts.count, Int32(workers), { pass, worker, context in
                let shared = Unmanaged<SideBySide>.fromOpaque(context!).takeUnretainedValue()
                let session = shared.session
                let p = Int(pass)
                do {
                    try session.scoreMicroBatch(shared.input, start: shared.starts[p], batch: shared.sizes[p],
                                                outputs: shared.outputs, workspace: session.workspaces[Int(worker)])
                } catch {
                    shared.errors[p] = error
                }
            }, context)
        }
        if let error = shared.errors.lazy.compactMap({ $0 }).first { throw error }
    }

    /// With a `teacherWorkspace`, the teacher runs there on a second
    /// thread while the student runs on this one (one thread each).
    private func scoreMicroBatch(_ input: CubeInput, start: Int, batch: Int, outputs: ScoreOutputs,
                                 workspace ws: Workspace, teacherWorkspace: Workspace? = nil) throws {
        let config = model.config
        let c = config.student.channels
        let plane = 32 * 32
        let cubeElements = 5 * c * plane

        // Inputs in the kernels' layout: the student's frames and the target frame.
        let target = try ws.map("target", channels: c, size: 32, batch: batch)
        let studentInput = config.student.task == .pred
            ? try ws.map("input", channels: 4 * c, size: 32, batch: batch) : target
        switch input {
        case .u8(let cubes):
            let first = cubes + start * cubeElements
            if config.student.task == .pred { pkk_unpack_u8_cubes(first, Int32(batch), Int32(c), 0, 4, studentInput.data) }
            pkk_unpack_u8_cubes(first, Int32(batch), Int32(c), 4, 1, target.data)
        case .f32(let cubes):
            let first = cubes + start * cubeElements
            let bad = pkk_first_nonfinite(first, batch * cubeElements)
            guard bad < 0 else {
                let index = bad / cubeElements
                throw PkgnetError(.invalidArgument, "cube \(start + index) has a non-finite value (\(first[bad])) at element \(bad % cubeElements)")
            }
            if config.student.task == .pred { pkk_unpack_f32_cubes(first, Int32(batch), Int32(c), 0, 4, studentInput.data) }
            pkk_unpack_f32_cubes(first, Int32(batch), Int32(c), 4, 1, target.data)
        }

        let teacherInput = try ws.map("t.input", channels: 3, size: 32, batch: batch)
        model.teacherSourceChannel.withUnsafeBufferPointer { source in
            config.teacher.mean.withUnsafeBufferPointer { mean in
                config.teacher.std.withUnsafeBufferPointer { std in
                    pkk_teacher_input(target.data, batch * plane, source.baseAddress, mean.baseAddress, std.baseAddress, teacherInput.data)
                }
            }
        }
        let (prediction, studentFeatures, teacherFeatures) = try NetworksSideBySide.run(
            model: model, studentInput: studentInput, teacherInput: teacherInput, batch: batch,
            workspace: ws, teacherWorkspace: teacherWorkspace)

        // Scores: S_e, then S_c^j per pair, each per cube.
        let pairs = studentFeatures.count
        let components = try ws.map("scores", channels: 1 + pairs, size: 1, batch: batch)
        pkk_prediction_error(prediction.data, target.data, Int32(c), Int32(batch), Int32(plane),
                             components.data, outputs.errorMap.map { $0 + start * plane })
        for j in 0..<pairs {
            let s = studentFeatures[j], t = teacherFeatures[j]
            let area = s.size * s.size
            let map = j < outputs.inconsistencyMaps.count ? outputs.inconsistencyMaps[j].map { $0 + start * area } : nil
            pkk_inconsistency(s.data, t.data, Int32(s.channels), Int32(batch), Int32(area),
                              components.data + (1 + j) * batch, map)
        }

        let scoring = config.scoring
        for b in 0..<batch {
            let cube = start + b
            outputs.predictionError?[cube] = components.data[b]
            var combined = 0.0
            for i in 0...pairs {
                let value = components.data[i * batch + b]
                if i > 0 { outputs.inconsistency?[cube * pairs + i - 1] = value }
                combined += Double(scoring.weights[i]) * (Double(value) - Double(scoring.mu[i])) / Double(scoring.sigma[i])
            }
            outputs.combined?[cube] = Float(combined)
        }
        if let destination = outputs.prediction {
            copyToCubeMajor(prediction, batch: batch, into: destination + start * c * plane)
        }
        for j in 0..<pairs {
            if j < outputs.studentFeatures.count, let destination = outputs.studentFeatures[j] {
                let s = studentFeatures[j]
                copyToCubeMajor(s, batch: batch, into: destination + start * s.channels * s.size * s.size)
            }
            if j < outputs.teacherFeatures.count, let destination = outputs.teacherFeatures[j] {
                let t = teacherFeatures[j]
                copyToCubeMajor(t, batch: batch, into: destination + start * t.channels * t.size * t.size)
            }
        }
    }

    /// [channels][batch][area] -> [batch][channels][area], one row per copy.
    private func copyToCubeMajor(_ map: FeatureMap, batch: Int, into destination: UnsafeMutablePointer<Float>) {
        let area = map.size * map.size
        for ch in 0..<map.channels {
            for b in 0..<batch {
                memcpy(destination + (b * map.channels + ch) * area, map.data + (ch * batch + b) * area, area * 4)
            }
        }
    }
}

/// The student and the teacher of one micro-batch: without a teacher
/// workspace one after the other, each on the calling thread's whole team;
/// with one, side by side on two threads, one each (the kernels' sums do not
/// depend on the thread count, so both give the same bits).
private final class NetworksSideBySide {
    let model: Model
    let studentInput: FeatureMap, teacherInput: FeatureMap
    let batch: Int
    let workspace: Workspace, teacherWorkspace: Workspace
    var student: Result<(FeatureMap, [FeatureMap]), Error>?
    var teacher: Result<[FeatureMap], Error>?

    private init(model: Model, studentInput: FeatureMap, teacherInput: FeatureMap, batch: Int,
                 workspace: Workspace, teacherWorkspace: Workspace) {
        self.model = model
        self.studentInput = studentInput
        self.teacherInput = teacherInput
        self.batch = batch
        self.workspace = workspace
        self.teacherWorkspace = teacherWorkspace
    }

    static func run(model: Model, studentInput: FeatureMap, teacherInput: FeatureMap, batch: Int,
                    workspace: Workspace, teacherWorkspace: Workspace?) throws
        -> (prediction: FeatureMap, studentFeatures: [FeatureMap], teacherFeatures: [FeatureMap]) {
        let shared = NetworksSideBySide(model: model, studentInput: studentInput, teacherInput: teacherInput,
                                        batch: batch, workspace: workspace, teacherWorkspace: teacherWorkspace ?? workspace)
        // One worker: both tasks in order on the calling thread, whose
        // thread count the kernels keep.
        withExtendedLifetime(shared) {
            pkk_parallel_tasks(2, teacherWorkspace == nil ? 1 : 2, { task, _, context in
                let shared = Unmanaged<NetworksSideBySide>.fromOpaque(context!).takeUnretainedValue()
                let model = shared.model
                if task == 0 {
                    shared.student = Result { try model.student(shared.studentInput, batch: shared.batch, workspace: shared.workspace) }
                } else {
                    shared.teacher = Result {
                        try model.teacher(shared.teacherInput, batch: shared.batch, blocks: model.teacherBlocks,
                                          workspace: shared.teacherWorkspace)
                    }
                }
            }, Unmanaged.passUnretained(shared).toOpaque())
        }
        guard let student = shared.student, let teacher = shared.teacher else {
            throw PkgnetError(.internal, "a network of the scoring pass did not run")
        }
        let (prediction, studentFeatures) = try student.get()
        return (prediction, studentFeatures, try teacher.get())
    }
}
