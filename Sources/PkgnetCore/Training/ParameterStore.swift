import Glibc

/// One named tensor of the student being trained: a range of floats in one of
/// the store's arenas, named as in the published code's state_dict.
struct ParameterTensor {
    let name: String
    let shape: [Int]
    let offset: Int
    var count: Int { shape.reduce(1, *) }
}

/// The student's tensors in two contiguous arenas: the trainable parameters
/// (one Adam call updates them all, and their gradients and Adam moments sit at
/// the same offsets in sibling arenas) and the BatchNorm running statistics,
/// which are state, not parameters.
final class ParameterStore {
    private(set) var parameters: [ParameterTensor] = []
    private(set) var statistics: [ParameterTensor] = []
    private(set) var parameterCount = 0
    private(set) var statisticCount = 0

    /// Arenas, allocated by `allocate()` once every tensor is declared.
    private(set) var values: UnsafeMutablePointer<Float>!
    private(set) var gradients: UnsafeMutablePointer<Float>!
    private(set) var adamFirst: UnsafeMutablePointer<Float>!
    private(set) var adamSecond: UnsafeMutablePointer<Float>!
    private(set) var statisticValues: UnsafeMutablePointer<Float>!

    deinit {
        for arena in [values, gradients, adamFirst, adamSecond, statisticValues] { free(arena) }
    }

    func declareParameter(_ name: String, shape: [Int]) -> ParameterTensor {
        precondition(values == nil, "declare every tensor before allocating")
        let tensor = ParameterTensor(name: name, shape: shape, offset: parameterCount)
        parameters.append(tensor)
        parameterCount += tensor.count
        return tensor
    }

    func declareStatistic(_ name: String, shape: [Int]) -> ParameterTensor {
        precondition(values == nil, "declare every tensor before allocating")
        let tensor = ParameterTensor(name: name, shape: shape, offset: statisticCount)
        statistics.append(tensor)
        statisticCount += tensor.count
        return tensor
    }

    /// Allocates the arenas, zeroed.
    func allocate() throws {
        func zeroed(_ count: Int) throws -> UnsafeMutablePointer<Float> {
            guard let raw = calloc(max(count, 1), MemoryLayout<Float>.size) else {
                throw PkgnetError(.outOfMemory, "could not allocate \(count * 4) bytes for the student's parameters")
            }
            return raw.bindMemory(to: Float.self, capacity: max(count, 1))
        }
        values = try zeroed(parameterCount)
        gradients = try zeroed(parameterCount)
        adamFirst = try zeroed(parameterCount)
        adamSecond = try zeroed(parameterCount)
        statisticValues = try zeroed(statisticCount)
    }

    func value(_ tensor: ParameterTensor) -> UnsafeMutablePointer<Float> { values + tensor.offset }
    func gradient(_ tensor: ParameterTensor) -> UnsafeMutablePointer<Float> { gradients + tensor.offset }
    func statistic(_ tensor: ParameterTensor) -> UnsafeMutablePointer<Float> { statisticValues + tensor.offset }

    func zeroGradients() { memset(gradients, 0, parameterCount * MemoryLayout<Float>.size) }

    /// Every tensor with its current values, parameters and statistics merged
    /// in declaration order (the state_dict order a model file lists).
    func namedTensors(prefix: String) -> [(name: String, shape: [Int], values: [Float])] {
        let all = parameters.map { ($0, values + $0.offset) } + statistics.map { ($0, statisticValues + $0.offset) }
        return all.map { tensor, base in
            (prefix + tensor.name, tensor.shape, Array(UnsafeBufferPointer(start: base, count: tensor.count)))
        }
    }
}
