/// The published code's initial weights:
/// - conv weights (Conv2d, the 1x1 projections included): Kaiming-normal with
///   negative slope a = 0.1, fan_in mode: std = sqrt(2 / (1 + a^2)) / sqrt(fan_in);
/// - conv biases and transposed convs (weight and bias): PyTorch's defaults,
///   which come to uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) with PyTorch's fan_in
///   of the weight tensor (dimension 1 times the kernel area, which for a
///   ConvTranspose2d weight [in, out, k, k] is out * k * k);
/// - BatchNorm: weight ~ N(1, 0.02), bias 0 (running statistics 0 and 1).
/// Tensors are drawn in declaration order from one SeededRandom, so a seed
/// fixes the whole initial model.
extension StudentGraph {
    func initialize(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var fanIn: [String: Int] = [:]
        for tensor in store.parameters where tensor.name.hasSuffix(".weight") && tensor.shape.count == 4 {
            fanIn[String(tensor.name.dropLast(".weight".count))] = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
        }
        for tensor in store.parameters {
            let values = store.value(tensor)
            let module = String(tensor.name[..<tensor.name.lastIndex(of: ".")!])
            let isTransposed = module.hasSuffix(".up")
            if tensor.shape.count == 4 && !isTransposed {
                let std = (2.0 / (1 + 0.1 * 0.1)).squareRoot() / Double(fanIn[module]!).squareRoot()
                for i in 0..<tensor.count { values[i] = Float(std * random.normal()) }
            } else if let fan = fanIn[module] {
                // Conv biases, and transposed-conv weights and biases.
                let bound = 1 / Double(fan).squareRoot()
                for i in 0..<tensor.count { values[i] = Float(random.uniform(-bound, bound)) }
            } else if tensor.name.hasSuffix(".weight") {
                for i in 0..<tensor.count { values[i] = Float(1 + 0.02 * random.normal()) }  // BatchNorm gamma
            } else {
                for i in 0..<tensor.count { values[i] = 0 }  // BatchNorm beta
            }
        }
    }
}
