// Shared helpers of the kernel tests: a seeded RNG, optional-pointer plumbing
// and tolerance checks against plain Double references.
import XCTest
import PkgnetKernels

/// SplitMix64: reproducible inputs without Foundation randomness.
struct KernelRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    mutating func float(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        let u = Float(next() >> 40) / Float(1 << 24)
        return lo + (hi - lo) * u
    }
    mutating func floats(_ n: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<n).map { _ in float(lo, hi) }
    }
    mutating func bytes(_ n: Int) -> [UInt8] {
        (0..<n).map { _ in UInt8(truncatingIfNeeded: next() >> 56) }
    }
}

/// Calls body with a pointer to the array's storage, or nil.
func withOptionalPointer<R>(_ array: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let array else { return body(nil) }
    return array.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// Asserts |actual - expected| <= rel * max(|expected|, floor) element-wise.
func assertClose(_ actual: [Float], _ expected: [Double], rel: Double = 1e-5, floor: Double = 1,
                 _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(what): count", file: file, line: line)
    var worst = 0.0
    var worstIndex = -1
    for i in 0..<min(actual.count, expected.count) {
        let a = Double(actual[i])
        let e = expected[i]
        let err = abs(a - e) / max(abs(e), floor)
        if !(err <= worst) { worst = err; worstIndex = i }  // NaN counts as worst
    }
    if worstIndex >= 0 {
        XCTAssert(worst <= rel,
                  "\(what): element \(worstIndex) is \(actual[worstIndex]), expected \(expected[worstIndex]) (relative error \(worst))",
                  file: file, line: line)
    }
}

/// Runs body once per instruction-set path of the kernels this CPU can take:
/// the AVX-512 one where the CPU has it, and always the AVX2 (or baseline)
/// one, so that one machine checks both. Restores the default.
func forEachKernelPath(_ body: (String) -> Void) {
    defer { _ = pkk_allow_avx512(1) }
    if pkk_allow_avx512(1) != 0 { body("AVX-512") }
    _ = pkk_allow_avx512(0)
    body("AVX2")
}

/// Base class: every kernel test starts with the runtime loaded.
class KernelTestCase: XCTestCase {
    override func setUp() {
        super.setUp()
        XCTAssertEqual(pkk_runtime_init(), 0, String(cString: pkk_last_error()))
        pkk_set_threads(0)
    }
}
