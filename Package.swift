// swift-tools-version:6.0
// adaface-dist: distributed data-parallel AdaFace training for Linux CPU clusters under MPI.
import PackageDescription

// MARK: - Build settings

/// Every Swift target gets these.
/// - Release builds inline across module boundaries (`-cross-module-optimization`): the kernels in
///   `Tensors` are called from `Layers` and `Heads` in hot loops, and without CMO each call would
///   go through an unspecialised entry point.
/// - Exclusivity checks are off in release: the kernels work on unsafe buffers and the dynamic
///   checks cost measurable time per access in the inner loops.
let swiftSettings: [SwiftSetting] = [
    .unsafeFlags(["-cross-module-optimization", "-enforce-exclusivity=unchecked"],
                 .when(configuration: .release)),
    .swiftLanguageMode(.v5),
]

// MARK: - C libraries (system-library targets found through pkg-config)

let cTargets: [Target] = [
    .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi",
                   providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
    .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                   providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                   providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
                   providers: [.apt(["libturbojpeg0-dev"])]),
]

// MARK: - Swift modules, one per concern

let swiftTargets: [Target] = [
    // Tensors, CPU kernels (GEMM, convolution, normalisation), threading.
    .target(name: "Tensors", dependencies: ["COpenBLAS"], swiftSettings: swiftSettings),
    // File formats: safetensors, .npy, zstd frames.
    .target(name: "Serialization", dependencies: ["CZstd"], swiftSettings: swiftSettings),
    // Layers, the IResNet backbone, the optimizer.
    .target(name: "Layers", dependencies: ["Tensors", "Serialization"], swiftSettings: swiftSettings),
    // MPI communicator.
    .target(name: "Collectives", dependencies: ["CMPI"], swiftSettings: swiftSettings),
    // Margin heads (AdaFace, ArcFace, CosFace) and the class-partitioned softmax.
    .target(name: "Heads", dependencies: ["Tensors", "Collectives"], swiftSettings: swiftSettings),
    // Image decoding, readers, augmentation, loader.
    .target(name: "DataPipeline", dependencies: ["CTurboJPEG", "Tensors", "Serialization"], swiftSettings: swiftSettings),
    // Verification protocols and embedding extraction.
    .target(name: "Evaluation", dependencies: ["Tensors", "Layers", "DataPipeline", "Collectives"], swiftSettings: swiftSettings),
    // The distributed trainer: configuration, schedules, gradient buckets, checkpoints.
    .target(name: "Training",
            dependencies: ["Tensors", "Serialization", "Layers", "Collectives", "Heads", "DataPipeline", "Evaluation"],
            swiftSettings: swiftSettings),
    // Subcommands and argument parsing (a library so that tests can drive it).
    .target(name: "CLI",
            dependencies: ["Tensors", "Serialization", "Layers", "Collectives", "Heads", "DataPipeline", "Evaluation",
                           "Training"],
            swiftSettings: swiftSettings),
    .executableTarget(name: "adaface-dist", dependencies: ["CLI"], swiftSettings: swiftSettings),
    // Multi-rank tests: MPI can be initialised once per process, so these run under mpirun.
    .executableTarget(name: "adaface-dist-mpi-tests",
                      dependencies: ["Collectives", "Tensors", "Layers", "Heads", "Training", "Evaluation", "DataPipeline"],
                      path: "Tests/MPITests", swiftSettings: swiftSettings),
]

// MARK: - Tests (single process, `swift test`)

let testTargets: [Target] = [
    .testTarget(name: "TensorsTests", dependencies: ["Tensors"], swiftSettings: swiftSettings),
    .testTarget(name: "SerializationTests", dependencies: ["Serialization"], exclude: ["Fixtures"],
                swiftSettings: swiftSettings),
    .testTarget(name: "LayersTests", dependencies: ["Layers", "Tensors", "Serialization"],
                swiftSettings: swiftSettings),
    .testTarget(name: "HeadsTests", dependencies: ["Heads", "Collectives", "Serialization", "Tensors"],
                exclude: ["Fixtures"], swiftSettings: swiftSettings),
    .testTarget(name: "DataPipelineTests", dependencies: ["DataPipeline"], exclude: ["Fixtures"],
                swiftSettings: swiftSettings),
    .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "Serialization", "DataPipeline", "Layers", "Tensors"],
                exclude: ["Fixtures"], swiftSettings: swiftSettings),
    .testTarget(name: "TrainingTests", dependencies: ["Training", "Collectives", "Serialization", "Layers", "Heads"],
                swiftSettings: swiftSettings),
    .testTarget(name: "CLITests", dependencies: ["CLI", "Serialization", "Layers", "DataPipeline", "Tensors"],
                swiftSettings: swiftSettings),
]

let package = Package(
    name: "adaface-dist",
    products: [
        .executable(name: "adaface-dist", targets: ["adaface-dist"]),
    ],
    targets: cTargets + swiftTargets + testTargets
)
