import Glibc

/// SplitMix64 (Steele, Lea and Flood, OOPSLA 2014), the random numbers of
/// the trainer and of the synthetic scene: a seed gives the same initial
/// weights, shuffles and scenes on every machine and build (Swift's
/// SystemRandomNumberGenerator is not seedable, and its algorithm may change).
public struct SeededRandom {
    // Inlinable: the synthetic scene draws per-pixel noise across modules.
    @usableFromInline var state: UInt64

    @inlinable public init(seed: UInt64) { state = seed }

    @inlinable public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in [low, high).
    mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * uniform() }

    /// Standard normal by Box-Muller (one value per call: simplicity over speed,
    /// initialisation draws are a negligible cost).
    mutating func normal() -> Double {
        let u1 = 1 - uniform()  // (0, 1]: the logarithm stays finite
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Uniform in 0..<n without modulo bias (Lemire's method would do too; the
    /// rejection loop runs about once).
    mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        let bound = UInt64(n)
        let limit = UInt64.max - UInt64.max % bound
        while true {
            let x = next()
            if x < limit { return Int(x % bound) }
        }
    }

    /// A permutation of 0..<n (Fisher-Yates).
    mutating func permutation(_ n: Int) -> [Int] {
        var order = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, below(i + 1)) }
        }
        return order
    }
}
