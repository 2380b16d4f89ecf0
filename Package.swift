// swift-tools-version:6.0
// pkgnet: PKG-Net video anomaly scoring, shipped as libpkgnet.so (C ABI).
//
// Pipeline by target:
//   PkgnetKernels (C, OpenMP + BLAS)  numeric kernels, BLAS loader, error slot
//   PkgnetCore    (Swift)             model file -> networks -> scores
//   PkgnetCAPI    (Swift, @_cdecl)    the C API of include/pkgnet.h
import PackageDescription

let cFlags: [CSetting] = [
    .unsafeFlags(["-O3", "-fopenmp", "-march=x86-64-v2", "-fno-math-errno",
                  "-I/usr/lib/llvm-14/lib/clang/14.0.6/include"]),
]

let package = Package(
    name: "pkgnet",
    products: [
        .library(name: "pkgnet", type: .dynamic, targets: ["PkgnetCAPI"]),
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
        .testTarget(name: "PkgnetTests", dependencies: ["PkgnetCore", "PkgnetKernels"]),
    ]
)
