// Runtime: BLAS loading, system info, threads, GEMM entry point, error slot.
import Foundation
import XCTest
import PkgnetKernels

final class KernelRuntimeTests: KernelTestCase {
    func testSystemInfo() {
        let info = String(cString: pkk_system_info())
        XCTAssertTrue(info.hasPrefix("cpu:"), info)
        XCTAssertTrue(info.contains("blas: OpenBLAS"), info)
        XCTAssertTrue(info.contains("openmp: LLVM libomp"), info)
        XCTAssertTrue(info.contains("default threads: \(pkk_default_threads())"), info)
        if info.contains("(chosen from cpuid)") {
            // we set OPENBLAS_CORETYPE for the dlopen only: the environment is restored
            XCTAssertNil(getenv("OPENBLAS_CORETYPE"), info)
            // and it took effect: not the SSE3 kernels OpenBLAS falls back to
            XCTAssertFalse(info.contains("core Prescott"), info)
        }
        XCTAssertEqual(pkk_runtime_init(), 0)  // idempotent
    }

    func testDefaultThreads() {
        XCTAssertGreaterThanOrEqual(pkk_default_threads(), 1)
    }

    func testSgemmTransposes() {
        var rng = KernelRNG(seed: 31)
        let (m, n, k) = (13, 17, 11)
        let pad = 3
        for transA in [0, 1] as [Int32] {
            for transB in [0, 1] as [Int32] {
                // op(A) is m x k: stored k x m when transposed; leading dimensions padded
                let lda = (transA == 0 ? k : m) + pad
                let ldb = (transB == 0 ? n : k) + pad
                let ldc = n + pad
                let a = rng.floats((transA == 0 ? m : k) * lda)
                let b = rng.floats((transB == 0 ? k : n) * ldb)
                var c = rng.floats(m * ldc)
                let (alpha, beta): (Float, Float) = (0.75, -0.5)
                var expected = c.map(Double.init)
                for i in 0..<m {
                    for j in 0..<n {
                        var s = 0.0
                        for p in 0..<k {
                            let av = transA == 0 ? a[i * lda + p] : a[p * lda + i]
                            let bv = transB == 0 ? b[p * ldb + j] : b[j * ldb + p]
                            s += Double(av) * Double(bv)
                        }
                        expected[i * ldc + j] = Double(alpha) * s + Double(beta) * Double(c[i * ldc + j])
                    }
                }
                pkk_sgemm(transA, transB, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
                          b, Int32(ldb), beta, &c, Int32(ldc))
                assertClose(c, expected, "sgemm transA \(transA) transB \(transB)")
            }
        }
    }

    func testErrorSlot() {
        pkk_set_error("first failure")
        XCTAssertEqual(String(cString: pkk_last_error()), "first failure")
        let long = String(repeating: "é", count: 2000)  // 4000 bytes of 2-byte sequences
        pkk_set_error(long)
        let stored = String(cString: pkk_last_error())
        XCTAssertLessThan(stored.utf8.count, 1024)
        XCTAssertGreaterThan(stored.utf8.count, 1000)
        XCTAssertTrue(stored.allSatisfy { $0 == "é" }, "truncated on a character boundary")
        // thread-local: another thread has its own slot
        let box = SeenBox()
        let thread = Thread {
            box.before = String(cString: pkk_last_error())
            pkk_set_error("other thread")
            box.after = String(cString: pkk_last_error())
            box.done.signal()
        }
        thread.start()
        box.done.wait()
        XCTAssertEqual(box.before, "")
        XCTAssertEqual(box.after, "other thread")
        XCTAssertEqual(String(cString: pkk_last_error()).utf8.count, stored.utf8.count)
        pkk_set_error(nil)
        XCTAssertEqual(String(cString: pkk_last_error()), "")
    }

    /// Tasks are handed to whichever worker is free: each index must run
    /// exactly once, on a worker below the count asked for, whatever the
    /// counts (none, fewer tasks than workers, more).
    func testParallelTasksRunEachIndexOnce() {
        for workers: Int32 in [1, 2, 3] {
            for n in [0, 1, 2, 5, 17] {
                // Two counters per task, [runs, worker]: raw memory, which
                // the workers write at different indices without Swift's
                // exclusivity checks on a shared array.
                let slots = UnsafeMutablePointer<Int32>.allocate(capacity: 2 * max(n, 1))
                defer { slots.deallocate() }
                for i in 0..<n { slots[2 * i] = 0; slots[2 * i + 1] = -1 }
                pkk_parallel_tasks(n, workers, { i, worker, context in
                    let slots = context!.assumingMemoryBound(to: Int32.self)
                    slots[2 * Int(i)] += 1
                    slots[2 * Int(i) + 1] = worker
                }, slots)
                let runs = (0..<n).map { slots[2 * $0] }, used = (0..<n).map { slots[2 * $0 + 1] }
                XCTAssertEqual(runs, [Int32](repeating: 1, count: n), "\(n) tasks on \(workers) workers")
                XCTAssertTrue(used.allSatisfy { $0 >= 0 && $0 < workers }, "\(n) tasks on \(workers) workers: \(used)")
            }
        }
    }
}

private final class SeenBox: @unchecked Sendable {
    var before = "unset", after = "unset"
    let done = DispatchSemaphore(value: 0)
}
