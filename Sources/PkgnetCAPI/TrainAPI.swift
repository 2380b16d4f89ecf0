// The C API of include/pkgnet.h: training.
import PkgnetCore
import PkgnetKernels
import Synchronization

/// A pkgnet_trainer handle: the trainer and a guard that turns a second
/// concurrent call into PKGNET_ERR_BUSY instead of a data race.
final class TrainerHandle {
    let trainer: Trainer
    private let busy = Atomic<Bool>(false)
    /// The trainer's completed epochs, readable while another thread trains.
    let epochsDone = Atomic<Int>(0)

    init(_ trainer: Trainer) { self.trainer = trainer }

    func exclusive(_ function: String, _ body: (Trainer) throws -> Void) throws {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw PkgnetError(.busy, "\(function): the trainer is in use by another thread")
        }
        defer {
            epochsDone.store(trainer.completedEpochs, ordering: .relaxed)
            busy.store(false, ordering: .releasing)
        }
        try body(trainer)
    }
}

func trainerHandle(_ pointer: OpaquePointer?) -> TrainerHandle? {
    pointer.map { Unmanaged<TrainerHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

@_cdecl("pkgnet_train_options_init")
public func pkgnetTrainOptionsInit(_ options: UnsafeMutablePointer<pkgnet_train_options>?) {
    guard let options else { return }
    let d = TrainingOptions()
    var o = pkgnet_train_options()
    o.k = Int32(d.k)
    o.width = Int32(d.width)
    o.epochs = Int32(d.epochs)
    o.batch_size = Int32(d.batchSize)
    o.learning_rate = d.learningRate
    o.milestone_epoch = Int32(d.milestoneEpoch)
    o.learning_rate_decay = d.learningRateDecay
    o.loss_weights = (d.predictionLossWeight, d.gradientLossWeight, d.distillationLossWeight)
    o.gradient_power = d.gradientLossPower
    o.seed = d.seed
    o.top_k = Int32(d.frame.topK)
    o.median_window = Int32(d.frame.medianWindow)
    o.teacher_cache_bytes = d.teacherCacheBytes
    options.pointee = o
}

/// The Swift options of a C options struct, every field checked.
private func trainingOptions(_ c: pkgnet_train_options, _ function: String) throws -> TrainingOptions {
    var o = TrainingOptions()
    o.k = Int(c.k)
    o.width = Int(c.width)
    if let pairs = c.pairs {
        o.pairs = try String(cString: pairs).split(separator: ",").map { item in
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw PkgnetError(.invalidArgument, "\(function): pairs must be 'student:teacher' items separated by commas, not '\(item)'")
            }
            return ModelConfig.Pair(student: parts[0], teacher: parts[1])
        }
        guard !o.pairs.isEmpty else { throw PkgnetError(.invalidArgument, "\(function): pairs is empty (NULL means the defaults)") }
    }
    o.epochs = Int(c.epochs)
    o.batchSize = Int(c.batch_size)
    o.learningRate = c.learning_rate
    o.milestoneEpoch = Int(c.milestone_epoch)
    o.learningRateDecay = c.learning_rate_decay
    (o.predictionLossWeight, o.gradientLossWeight, o.distillationLossWeight) = c.loss_weights
    o.gradientLossPower = c.gradient_power
    guard c.gradient_loss_paper == 0 || c.gradient_loss_paper == 1, c.batch_statistics == 0 || c.batch_statistics == 1 else {
        throw PkgnetError(.invalidArgument, "\(function): gradient_loss_paper and batch_statistics must be 0 or 1")
    }
    o.gradientLossForm = c.gradient_loss_paper == 1 ? .paper : .published
    o.batchNorm = c.batch_statistics == 1 ? .batch : .fixed
    o.seed = c.seed
    o.threads = Int(c.threads)
    o.frame = FrameScoring(topK: Int(c.top_k), emptyFloor: 0, medianWindow: Int(c.median_window), causal: false)
    if let scene = c.scene { o.scene = String(cString: scene) }
    if let weights = c.score_weights {
        let n = try count(c.score_weight_count, "\(function): score_weight_count")
        guard (1...1 + Int(PKGNET_MAX_PAIRS)).contains(n) else {
            throw PkgnetError(.invalidArgument, "\(function): score_weight_count \(n) is out of range 1...\(1 + Int(PKGNET_MAX_PAIRS))")
        }
        o.scoreWeights = Array(UnsafeBufferPointer(start: weights, count: n))
    }
    guard c.input_channel_order == 0 || c.input_channel_order == 1 else {
        throw PkgnetError(.invalidArgument, "\(function): input_channel_order must be 0 (BGR) or 1 (RGB), not \(c.input_channel_order)")
    }
    o.inputChannelOrder = c.input_channel_order == 1 ? .rgb : .bgr
    o.teacherCacheBytes = Int(clamping: c.teacher_cache_bytes)
    if let problem = o.problem { throw PkgnetError(.invalidArgument, "\(function): \(problem)") }
    return o
}

@_cdecl("pkgnet_trainer_create")
public func pkgnetTrainerCreate(_ teacherPath: UnsafePointer<CChar>?, _ cubes: UnsafePointer<UInt8>?, _ n: Int,
                                _ channels: Int32, _ options: UnsafePointer<pkgnet_train_options>?,
                                _ trainer: UnsafeMutablePointer<OpaquePointer?>?) -> pkgnet_status {
    let function = "pkgnet_trainer_create"
    guard let trainer else { return fail(.invalidArgument, "\(function): trainer (the output pointer) is NULL") }
    trainer.pointee = nil
    return guarded {
        let path = try string(teacherPath, "\(function): teacher_path")
        let n = try count(n, "\(function): n")
        guard channels == 1 || channels == 3 else {
            throw PkgnetError(.invalidArgument, "\(function): channels must be 1 or 3, not \(channels)")
        }
        guard n > 0 else { throw PkgnetError(.invalidArgument, "\(function): n is 0: no training cubes") }
        guard let cubes else { throw PkgnetError(.invalidArgument, "\(function): cubes is NULL") }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: 5 * 32 * 32 * Int(channels))
        guard !overflow else { throw PkgnetError(.invalidArgument, "\(function): n = \(n) cubes overflow the address space") }
        var settings = pkgnet_train_options()
        pkgnetTrainOptionsInit(&settings)
        if let options { settings = options.pointee }
        let parsed = try trainingOptions(settings, function)
        let teacher = try TeacherFile(path: path)
        let created = try Trainer(teacher: teacher, cubes: Array(UnsafeBufferPointer(start: cubes, count: bytes)),
                                  count: n, channels: Int(channels), options: parsed)
        trainer.pointee = OpaquePointer(Unmanaged.passRetained(TrainerHandle(created)).toOpaque())
    }
}

@_cdecl("pkgnet_trainer_free")
public func pkgnetTrainerFree(_ trainer: OpaquePointer?) {
    guard let trainer else { return }
    Unmanaged<TrainerHandle>.fromOpaque(UnsafeRawPointer(trainer)).release()
}

@_cdecl("pkgnet_trainer_run_epoch")
public func pkgnetTrainerRunEpoch(_ trainer: OpaquePointer?, _ progress: pkgnet_train_progress?, _ user: UnsafeMutableRawPointer?,
                                  _ report: UnsafeMutablePointer<pkgnet_epoch_report>?) -> pkgnet_status {
    let function = "pkgnet_trainer_run_epoch"
    guard let handle = trainerHandle(trainer) else { return fail(.invalidArgument, "\(function): trainer is NULL") }
    return guarded {
        try handle.exclusive(function) { trainer in
            guard trainer.completedEpochs < trainer.options.epochs else {
                throw PkgnetError(.invalidArgument, "\(function): all \(trainer.options.epochs) epochs are done")
            }
            let result = try trainer.runEpoch { p in
                progress?(user, Int32(p.epoch), Int32(p.done), Int32(p.total), p.loss)
            }
            if let report {
                var r = pkgnet_epoch_report()
                r.epoch = Int32(result.epoch)
                r.loss = result.loss
                r.prediction_loss = result.predictionLoss
                r.gradient_loss = result.gradientLoss
                r.distillation_loss = result.distillationLoss
                r.learning_rate = result.learningRate
                r.seconds = result.seconds
                report.pointee = r
            }
        }
    }
}

@_cdecl("pkgnet_trainer_epochs_done")
public func pkgnetTrainerEpochsDone(_ trainer: OpaquePointer?) -> Int32 {
    guard let handle = trainerHandle(trainer) else { return -1 }
    return Int32(handle.epochsDone.load(ordering: .relaxed))
}

@_cdecl("pkgnet_trainer_save_checkpoint")
public func pkgnetTrainerSaveCheckpoint(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> pkgnet_status {
    let function = "pkgnet_trainer_save_checkpoint"
    guard let handle = trainerHandle(trainer) else { return fail(.invalidArgument, "\(function): trainer is NULL") }
    return guarded {
        let path = try string(path, "\(function): path")
        try handle.exclusive(function) { try $0.saveCheckpoint(to: path) }
    }
}

@_cdecl("pkgnet_trainer_resume")
public func pkgnetTrainerResume(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> pkgnet_status {
    let function = "pkgnet_trainer_resume"
    guard let handle = trainerHandle(trainer) else { return fail(.invalidArgument, "\(function): trainer is NULL") }
    return guarded {
        let path = try string(path, "\(function): path")
        try handle.exclusive(function) { try $0.resume(from: path) }
    }
}

@_cdecl("pkgnet_trainer_write_model")
public func pkgnetTrainerWriteModel(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ calibrate: Int32) -> pkgnet_status {
    let function = "pkgnet_trainer_write_model"
    guard let handle = trainerHandle(trainer) else { return fail(.invalidArgument, "\(function): trainer is NULL") }
    return guarded {
        let path = try string(path, "\(function): path")
        try handle.exclusive(function) { trainer in
            let bytes = calibrate != 0 ? try trainer.calibratedModelFile() : try trainer.uncalibratedModelFile()
            try writeFileAtomically(bytes, to: path)
        }
    }
}
