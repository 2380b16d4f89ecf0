import PkgnetKernels

/// The process-wide numeric runtime (BLAS, OpenMP) the kernels need.
public enum PkgnetRuntime {
    /// Loads the BLAS on first use; later calls return at once.
    public static func start() throws {
        guard pkk_runtime_init() == 0 else {
            throw PkgnetError(.backend, String(cString: pkk_last_error()))
        }
    }

    /// Which kernels run: CPU features, BLAS and core type, OpenMP, threads.
    public static var systemInfo: String { String(cString: pkk_system_info()) }
}
