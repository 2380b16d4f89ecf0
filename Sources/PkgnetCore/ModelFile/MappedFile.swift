import Glibc

/// A whole file mapped read-only. Model and teacher files are converted to
/// fp32 arrays while loading, so a mapping lives only as long as a loader;
/// `kind` ("model file", "teacher file") names the file in messages.
final class MappedFile {
    let bytes: UnsafeRawBufferPointer

    init(_ path: String, kind: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PkgnetError(.io, "cannot open \(kind) '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw PkgnetError(.io, "cannot stat \(kind) '\(path)': \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw PkgnetError(.io, "\(kind) '\(path)' is not a regular file")
        }
        let size = Int(info.st_size)
        guard size > 0 else { throw PkgnetError(.format, "\(kind) '\(path)' is empty") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw PkgnetError(.io, "cannot map \(kind) '\(path)': \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: mapped, count: size)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count) }
}
