// swift-tools-version:6.0
// pkgnet: PKG-Net video anomaly scoring, shipped as libpkgnet.so (C ABI).
//
// Pipeline by target:
//   PkgnetKernels (C, OpenMP + BLAS)  numeric kernels, BLAS loader, error slot
//   PkgnetCore    (Swift)             model file -> networks -> scores
//   PkgnetCAPI    (Swift, @_cdecl)    the C API of include/pkgnet.h
//   PkgnetImageIO (C)                 JPEG/PNG/TIFF files <-> 8-bit pixels, for the CLI only
//   PkgnetCLI     (Swift)             the `pkgnet` command (eval, info)
import PackageDescription

let cFlags: [CSetting] = [
    .unsafeFlags(["-O3", "-fopenmp", "-march=x86-64-v2", "-fno-math-errno",
                  "-I/usr/lib/llvm-14/lib/clang/14.0.6/include"]),
]

let package = Package(
    name: "pkgnet",
    products: [
        .library(name: "pkgnet", type: .dynamic, targets: ["PkgnetCAPI"]),
        // Product names are unique, and "pkgnet" is the library's: `make build`
        // copies this one to .build/release/pkgnet, `make install` to bin/pkgnet.
        .executable(name: "pkgnet-cli", targets: ["PkgnetCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(
            name: "PkgnetKernels",
            cSettings: cFlags,
            linkerSettings: [.linkedLibrary("omp5"), .linkedLibrary("dl"), .linkedLibrary("m")]
        ),
        .target(
            name: "PkgnetCore",
            dependencies: ["PkgnetKernels"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .target(
            name: "PkgnetCAPI",
            dependencies: ["PkgnetCore", "PkgnetKernels"],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib",
                    "-Xlinker", "--version-script=linker/pkgnet.map",
                    "-Xlinker", "-soname=libpkgnet.so.0",
                ]),
                // FoundationEssentials' static archive needs these two beside it.
                .linkedLibrary("_FoundationCollections"),
                .linkedLibrary("_FoundationCShims"),
                .linkedLibrary("swiftSynchronization"),
            ]
        ),
        // Image codecs stay out of libpkgnet.so (edge devices pass raw
        // frames): only the CLI links them.
        .target(
            name: "PkgnetImageIO",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png"), .linkedLibrary("tiff")]
        ),
        .executableTarget(
            name: "PkgnetCLI",
            dependencies: [
                "PkgnetCore", "PkgnetKernels", "PkgnetImageIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: [
                // Like the library: no Swift runtime needed where it is installed.
                // Release only: `swift test` links this module into an XCTest
                // binary, which uses the shared runtime.
                .unsafeFlags(["-static-stdlib"], .when(configuration: .release)),
                .linkedLibrary("_FoundationCollections", .when(configuration: .release)),
                .linkedLibrary("_FoundationCShims", .when(configuration: .release)),
                .linkedLibrary("swiftSynchronization", .when(configuration: .release)),
            ]
        ),
        .testTarget(name: "PkgnetTests", dependencies: ["PkgnetCore", "PkgnetKernels", "PkgnetImageIO", "PkgnetCLI"]),
    ]
)
