// A training set held in memory as encoded images: for benchmarks and tests that need a source
// without touching the disk.

public final class InMemoryDataSet: SampleSource {
    public let images: [[UInt8]]
    public let labels: [Int]
    public let classCount: Int
    public let name: String
    public var count: Int { images.count }

    public init(images: [[UInt8]], labels: [Int], classCount: Int, name: String = "in-memory set") {
        precondition(images.count == labels.count, "one label per image")
        self.images = images; self.labels = labels; self.classCount = classCount; self.name = name
    }

    /// `identities × imagesPerIdentity` synthetic faces, JPEG-encoded.
    public static func syntheticFaces(identities: Int, imagesPerIdentity: Int, seed: UInt64) throws -> InMemoryDataSet {
        let faces = SyntheticFaces(seed: seed)
        var images: [[UInt8]] = [], labels: [Int] = []
        for identity in 0..<identities {
            for image in 0..<imagesPerIdentity {
                let quality = faces.qualityLevel(identity: identity, image: image)
                let bgr = faces.render(identity: identity, image: image, quality: quality)
                let size = SyntheticFaces.imageSize
                images.append(try bgr.withUnsafeBufferPointer {
                    try ImageEncoder.jpeg(bgr: $0, width: size, height: size,
                                          quality: SyntheticFaces.jpegQuality(forQualityLevel: quality))
                })
                labels.append(identity)
            }
        }
        return InMemoryDataSet(images: images, labels: labels, classCount: identities, name: "synthetic faces in memory")
    }

    public func label(of index: Int) throws -> Int {
        guard index >= 0 && index < images.count else { throw DataError(.indexOutOfRange, "\(name): no sample \(index)") }
        return labels[index]
    }

    public func withEncodedImage<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        guard index >= 0 && index < images.count else { throw DataError(.indexOutOfRange, "\(name): no sample \(index)") }
        return try images[index].withUnsafeBytes(body)
    }
}
