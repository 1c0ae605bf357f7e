// Checkpoints: bit-exact round trips, head re-partitioning between rank counts, damage detection with
// fallback, failed writes that leave the previous checkpoint intact, pruning, refusal of non-finite
// values, and the inspect report. Several ranks are simulated in one process by threads sharing a
// `CollectiveGroup` (ThreadedGroup below), so the real multi-rank write and verify protocols run.
import Collectives
import Foundation
import Heads
import Layers
import Serialization
import Tensors
import Training
import XCTest

final class CheckpointTests: XCTestCase {
    private var root = ""
    private let totalClasses = 10
    private let embeddingSize = 6

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("checkpoint-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root)
    }

    // MARK: - Round trip

    func testRoundTripIsBitExact() throws {
        let model = Model(seed: 1)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 2)
        let state = trainerState(step: 1200, worldSize: 1)
        let result = try CheckpointWriter(root: root, group: SingleProcessGroup())
            .write(state: state, backbone: model.store, optimizer: model.sgd, head: head.shard(rank: 0, of: 1))
        XCTAssertEqual(result.directory, root + "/step-000001200")
        XCTAssertEqual(result.files.map(\.name), ["backbone.safetensors", "backbone_optimizer.safetensors",
                                                  "head-rank00000-of-00001.safetensors", "trainer_state.json"])
        XCTAssertEqual(try entries(root), ["step-000001200"])
        XCTAssertEqual(try entries(result.directory), ["backbone.safetensors", "backbone_optimizer.safetensors",
                                                       "head-rank00000-of-00001.safetensors", "manifest.json",
                                                       "trainer_state.json"])

        let (found, skipped) = try CheckpointStore.latestValid(root: root)
        let checkpoint = try XCTUnwrap(found)
        XCTAssertTrue(skipped.isEmpty)
        XCTAssertEqual(checkpoint.step, 1200)
        XCTAssertEqual(checkpoint.trainerState, state)
        XCTAssertEqual(checkpoint.trainerState.normMean.bitPattern, state.normMean.bitPattern)
        XCTAssertEqual(checkpoint.trainerState.normStd.bitPattern, state.normStd.bitPattern)

        let restored = Model(seed: 99)
        try checkpoint.loadBackbone(into: restored.store)
        try checkpoint.loadOptimizer(into: restored.sgd, of: restored.store)
        XCTAssertEqual(restored.parameterBits, model.parameterBits)
        XCTAssertEqual(restored.bufferBits, model.bufferBits)
        XCTAssertEqual(restored.velocityBits, model.velocityBits)
        XCTAssertEqual(restored.store.batchCounters, model.store.batchCounters)

        let headGroup = SingleProcessGroup()
        let live = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: totalClasses, embeddingSize: embeddingSize),
                                              group: headGroup)
        try checkpoint.restoreHead(live)
        XCTAssertEqual(bits(live.kernel), head.kernelRows(0..<totalClasses))
        XCTAssertEqual(bits(live.velocity), head.momentumRows(0..<totalClasses))
        XCTAssertEqual(live.normStatistics.mean.bitPattern, state.normMean.bitPattern)
        XCTAssertEqual(live.normStatistics.std.bitPattern, state.normStd.bitPattern)
    }

    func testFilesAreStandardSafeTensorsInPyTorchLayouts() throws {
        let model = Model(seed: 3)
        // With momentum equal to the weights, the optimizer file must hold exactly the weight tensors:
        // its layout conversion agrees with the one Layers uses for the state_dict.
        for p in model.store.parameters {
            (model.sgd.velocity.data + p.offset).update(from: model.store.values + p.offset, count: p.count)
        }
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 4)
        let directory = try CheckpointWriter(root: root, group: SingleProcessGroup())
            .write(state: trainerState(step: 7, worldSize: 1), backbone: model.store, optimizer: model.sgd,
                   head: head.shard(rank: 0, of: 1)).directory

        let reference = root + "/reference.safetensors"
        try model.store.writeSafeTensors(to: reference)
        let expected = try SafeTensorsFile.read(path: reference)
        let backbone = try SafeTensorsFile.read(path: directory + "/backbone.safetensors")
        XCTAssertEqual(backbone.names, expected.names)
        XCTAssertEqual(backbone.metadata["format"], "pt")
        for name in expected.names {
            XCTAssertEqual(backbone.info(name)?.shape, expected.info(name)?.shape, name)
            XCTAssertEqual(try backbone.bytes(name), try expected.bytes(name), name)
        }
        let optimizer = try SafeTensorsFile.read(path: directory + "/backbone_optimizer.safetensors")
        XCTAssertEqual(optimizer.names, model.store.parameters.map(\.name))
        for name in optimizer.names {
            XCTAssertEqual(try optimizer.bytes(name), try expected.bytes(name), name)
        }
        // The existing weights loader reads the checkpoint's backbone file as it is.
        let other = Model(seed: 5)
        try other.store.readSafeTensors(from: directory + "/backbone.safetensors")
        XCTAssertEqual(other.parameterBits, model.parameterBits)

        let shard = try SafeTensorsFile.read(path: directory + "/head-rank00000-of-00001.safetensors")
        XCTAssertEqual(shard.info("kernel")?.shape, [totalClasses, embeddingSize])
        XCTAssertEqual(shard.info("momentum")?.shape, [totalClasses, embeddingSize])
        XCTAssertEqual(shard.metadata["class_start"], "0")
        XCTAssertEqual(shard.metadata["class_count"], "10")
        XCTAssertEqual(shard.metadata["total_classes"], "10")
        XCTAssertEqual(shard.metadata["embedding_size"], "6")

        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/manifest.json"))) as? [String: Any]
        XCTAssertEqual(manifest?["step"] as? Int, 7)
        XCTAssertEqual(manifest?["world_size"] as? Int, 1)
        XCTAssertEqual(manifest?["format_version"] as? Int, 1)
        let listed = try XCTUnwrap(manifest?["files"] as? [[String: Any]])
        XCTAssertEqual(listed.count, 4)
        for file in listed {
            let name = try XCTUnwrap(file["name"] as? String)
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)))
            XCTAssertEqual(file["size"] as? Int, bytes.count, name)
            XCTAssertEqual(file["crc32c"] as? String, String(format: "%08x", Checksum.crc32c(bytes)), name)
        }
    }

    func testCompressedCheckpointRoundTrips() throws {
        let model = Model(seed: 6)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 7)
        _ = try CheckpointWriter(root: root, group: SingleProcessGroup(), compression: .zstd(level: 3))
            .write(state: trainerState(step: 5, worldSize: 1), backbone: model.store, optimizer: model.sgd,
                   head: head.shard(rank: 0, of: 1))
        let checkpoint = try XCTUnwrap(try CheckpointStore.latestValid(root: root).checkpoint)
        let restored = Model(seed: 8)
        try checkpoint.loadBackbone(into: restored.store)
        try checkpoint.loadOptimizer(into: restored.sgd, of: restored.store)
        XCTAssertEqual(restored.parameterBits, model.parameterBits)
        XCTAssertEqual(restored.velocityBits, model.velocityBits)
        try assertLoads(checkpoint, head, intoWorld: 2)
    }

    func testRewritingTheSameStepReplacesIt() throws {
        let model = Model(seed: 9)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 10)
        let writer = CheckpointWriter(root: root, group: SingleProcessGroup())
        _ = try writer.write(state: trainerState(step: 40, worldSize: 1), backbone: model.store, optimizer: model.sgd,
                             head: head.shard(rank: 0, of: 1))
        var state = trainerState(step: 40, worldSize: 1)
        state.samplesSeen += 1
        let second = try writer.write(state: state, backbone: model.store, optimizer: model.sgd, head: head.shard(rank: 0, of: 1))
        XCTAssertTrue(second.replacedExisting)
        XCTAssertEqual(try entries(root), ["step-000000040"])
        XCTAssertEqual(try CheckpointStore.latestValid(root: root).checkpoint?.trainerState, state)
    }

    // MARK: - Several ranks, re-partitioning

    func testThreeRanksWriteOneCheckpointThatEveryRankVerifiesAlike() throws {
        let model = Model(seed: 11)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 12)
        let results = try write(step: 300, ranks: 3, model: model, head: head)
        XCTAssertEqual(Set(results.map(\.directory)), [root + "/step-000000300"])
        XCTAssertEqual(results[0].files.map(\.name).filter { $0.hasPrefix("head-") },
                       ["head-rank00000-of-00003.safetensors", "head-rank00001-of-00003.safetensors",
                        "head-rank00002-of-00003.safetensors"])
        for result in results { XCTAssertEqual(result.files, results[0].files) }
        for r in 0..<3 {
            let shard = try SafeTensorsFile.read(path: root + "/step-000000300/head-rank0000\(r)-of-00003.safetensors")
            let range = try ClassPartition(totalClasses: totalClasses, parts: 3).range(of: r)
            XCTAssertEqual(shard.metadata["class_start"], String(range.lowerBound))
            XCTAssertEqual(shard.metadata["class_count"], String(range.count))
        }

        // Collective verification: each rank checksums some files, all reach the same verdict.
        let verdicts = try ThreadedGroup.run(ranks: 3) { group in try CheckpointStore.latestValid(root: self.root, group: group) }
        for verdict in verdicts { XCTAssertEqual(verdict.checkpoint?.step, 300) }
        try flipByte(in: root + "/step-000000300/head-rank00002-of-00003.safetensors", at: 100)
        let damaged = try ThreadedGroup.run(ranks: 3) { group in try CheckpointStore.list(root: self.root, group: group) }
        for listing in damaged {
            XCTAssertEqual(listing.map(\.problems), [["file head-rank00002-of-00003.safetensors: CRC mismatch"]])
        }
    }

    func testHeadRepartitionsExactlyBetweenRankCounts() throws {
        let model = Model(seed: 13)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 14)
        for (saved, loaded) in [(3, 2), (2, 3), (1, 4), (4, 1), (3, 4), (4, 3), (2, 2)] {
            let stepRoot = root + "/from\(saved)to\(loaded)"
            _ = try write(step: 10 * saved, ranks: saved, model: model, head: head, root: stepRoot)
            let checkpoint = try XCTUnwrap(try CheckpointStore.latestValid(root: stepRoot).checkpoint)
            XCTAssertEqual(checkpoint.worldSize, saved)
            XCTAssertEqual(checkpoint.headShards.map(\.classRange),
                           (0..<saved).map { try! ClassPartition(totalClasses: totalClasses, parts: saved).range(of: $0) })
            try assertLoads(checkpoint, head, intoWorld: loaded)
        }
    }

    func testLiveHeadsOfAnotherWorldRestoreTheirRows() throws {
        let model = Model(seed: 15)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 16)
        _ = try write(step: 60, ranks: 3, model: model, head: head)
        let rows = try ThreadedGroup.run(ranks: 2) { group -> ([UInt32], [UInt32], Range<Int>) in
            guard let checkpoint = try CheckpointStore.latestValid(root: self.root, group: group).checkpoint else { throw NoCheckpoint() }
            let live = try PartitionedSoftmaxHead(
                configuration: HeadConfiguration(totalClasses: self.totalClasses, embeddingSize: self.embeddingSize), group: group)
            try checkpoint.restoreHead(live)
            return (bits(live.kernel), bits(live.velocity), live.classRange)
        }
        for (kernel, momentum, range) in rows {
            XCTAssertEqual(kernel, head.kernelRows(range))
            XCTAssertEqual(momentum, head.momentumRows(range))
        }
    }

    // MARK: - Damage

    func testTruncatedFileIsNamedAndSkipped() throws {
        try assertDamageFallsBack(expecting: { size in ["file backbone.safetensors: size \(size - 9), manifest says \(size)"] }) { dir in
            let path = dir + "/backbone.safetensors"
            let size = try XCTUnwrap(fileSize(path))
            XCTAssertEqual(truncate(path, off_t(size - 9)), 0)
            return size
        }
    }

    func testFlippedByteIsNamedAndSkipped() throws {
        try assertDamageFallsBack(expecting: { _ in ["file head-rank00001-of-00002.safetensors: CRC mismatch"] }) { dir in
            try self.flipByte(in: dir + "/head-rank00001-of-00002.safetensors", at: 200)
            return 0
        }
    }

    func testMissingManifestIsNamedAndSkipped() throws {
        try assertDamageFallsBack(expecting: { _ in ["manifest missing"] }) { dir in
            XCTAssertEqual(unlink(dir + "/manifest.json"), 0)
            return 0
        }
    }

    func testManifestListingAMissingShardIsNamedAndSkipped() throws {
        try assertDamageFallsBack(expecting: { _ in ["shard head-rank00001-of-00002 missing"] }) { dir in
            XCTAssertEqual(unlink(dir + "/head-rank00001-of-00002.safetensors"), 0)
            return 0
        }
    }

    func testManifestNotListingAShardIsSkipped() throws {
        try assertDamageFallsBack(expecting: { _ in ["manifest does not list head-rank00001-of-00002.safetensors"] }) { dir in
            var manifest = try CheckpointManifest.decode(try self.read(dir + "/manifest.json"))
            manifest.files.removeAll { $0.name == "head-rank00001-of-00002.safetensors" }
            try Data(try manifest.encoded()).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
            return 0
        }
    }

    func testUnparsableTrainerStateIsNamedAndSkipped() throws {
        try assertDamageFallsBack(expecting: { _ in ["trainer state unparsable: not valid JSON"] }) { dir in
            // Garbage that the manifest vouches for, so only the parse can catch it.
            let garbage = Array("{\"global_step\": 200, oops".utf8)
            try Data(garbage).write(to: URL(fileURLWithPath: dir + "/trainer_state.json"))
            var manifest = try CheckpointManifest.decode(try self.read(dir + "/manifest.json"))
            manifest.files = manifest.files.map {
                $0.name == "trainer_state.json" ? .init(name: $0.name, size: garbage.count, crc32c: Checksum.crc32c(garbage)) : $0
            }
            try Data(try manifest.encoded()).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
            return 0
        }
    }

    func testDamageAfterVerificationIsNeverLoaded() throws {
        let model = Model(seed: 17)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 18)
        _ = try write(step: 100, ranks: 2, model: model, head: head)
        let checkpoint = try XCTUnwrap(try CheckpointStore.latestValid(root: root).checkpoint)
        try flipByte(in: checkpoint.directory + "/backbone.safetensors", at: 300)
        try flipByte(in: checkpoint.directory + "/head-rank00000-of-00002.safetensors", at: 300)
        let target = Model(seed: 19)
        XCTAssertThrowsError(try checkpoint.loadBackbone(into: target.store)) { error in
            XCTAssertTrue("\(error)".contains("backbone.safetensors: CRC mismatch"), "\(error)")
        }
        let partition = try ClassPartition(totalClasses: totalClasses, parts: 1)
        XCTAssertThrowsError(try checkpoint.loadHeadShard(partition: partition, rank: 0,
                                                          kernel: Tensor(shape: [totalClasses, embeddingSize]),
                                                          momentum: Tensor(shape: [totalClasses, embeddingSize]))) { error in
            XCTAssertTrue("\(error)".contains("head-rank00000-of-00002.safetensors: CRC mismatch"), "\(error)")
        }
    }

    func testStaleTemporaryDirectoriesAreIgnored() throws {
        let model = Model(seed: 20)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 21)
        _ = try write(step: 100, ranks: 1, model: model, head: head)
        // An interrupted write: files but no manifest, under a temporary name.
        let stale = root + "/.tmp-step-000000200-00000000deadbeef"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: false)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: stale + "/backbone.safetensors"))
        let (checkpoint, skipped) = try CheckpointStore.latestValid(root: root)
        XCTAssertEqual(checkpoint?.step, 100)
        XCTAssertTrue(skipped.isEmpty)
        XCTAssertEqual(CheckpointStore.temporaryDirectories(root: root).map(\.step), [200])
    }

    // MARK: - Failed writes

    func testAWriteThatRunsOutOfSpaceLeavesThePreviousCheckpoint() throws {
        let model = Model(seed: 22, wide: true)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 23)
        _ = try write(step: 100, ranks: 2, model: model, head: head, keepLast: 1)

        // A file-size limit below the backbone's size (but above a head shard's) fails rank 0's
        // backbone write with EFBIG, the way a full disk fails it with ENOSPC.
        let backboneSize = try XCTUnwrap(fileSize(root + "/step-000000100/backbone.safetensors"))
        let shardSize = try XCTUnwrap(fileSize(root + "/step-000000100/head-rank00000-of-00002.safetensors"))
        XCTAssertLessThan(shardSize, backboneSize / 2)
        let outcomes = withFileSizeLimit(backboneSize / 2) {
            ThreadedGroup.outcomes(ranks: 2) { group in
                try CheckpointWriter(root: self.root, group: group, keepLast: 1, protectedStep: 100)
                    .write(state: self.trainerState(step: 200, worldSize: 2), backbone: model.store, optimizer: model.sgd,
                           head: head.shard(rank: group.rank, of: 2))
            }
        }
        for outcome in outcomes {
            guard case .failure(let error) = outcome, let failure = error as? CheckpointError else {
                return XCTFail("the write should fail on every rank, got \(outcome)")
            }
            XCTAssertEqual(failure.kind, .writeFailed)
            XCTAssertTrue(failure.message.hasPrefix("checkpoint step 200 under \(self.root) not written: rank 0: backbone.safetensors: write failed: "),
                          failure.message)
            XCTAssertTrue(failure.message.contains("errno \(EFBIG)"), failure.message)
        }
        XCTAssertEqual(try entries(root), ["step-000000100"])
        let (checkpoint, skipped) = try CheckpointStore.latestValid(root: root)
        XCTAssertEqual(checkpoint?.step, 100)
        XCTAssertTrue(skipped.isEmpty)
    }

    func testAFileInTheWayOfTheRootFailsEveryRankClearly() throws {
        let blocked = root + "/not-a-directory"
        try Data([0]).write(to: URL(fileURLWithPath: blocked))
        let model = Model(seed: 24)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 25)
        let outcomes = ThreadedGroup.outcomes(ranks: 2) { group in
            try CheckpointWriter(root: blocked + "/checkpoints", group: group)
                .write(state: self.trainerState(step: 1, worldSize: 2), backbone: model.store, optimizer: model.sgd,
                       head: head.shard(rank: group.rank, of: 2))
        }
        for outcome in outcomes {
            guard case .failure(let error as CheckpointError) = outcome else { return XCTFail("expected a failure, got \(outcome)") }
            XCTAssertEqual(error.kind, .writeFailed)
            XCTAssertTrue(error.message.contains("\(blocked)/checkpoints: cannot create the checkpoint root"), error.message)
        }
    }

    func testRanksDisagreeingOnTheStepWriteNothing() throws {
        let model = Model(seed: 26)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 27)
        let outcomes = ThreadedGroup.outcomes(ranks: 2) { group in
            try CheckpointWriter(root: self.root, group: group)
                .write(state: self.trainerState(step: 100 + group.rank, worldSize: 2), backbone: model.store,
                       optimizer: model.sgd, head: head.shard(rank: group.rank, of: 2))
        }
        for outcome in outcomes {
            guard case .failure(let error as CheckpointError) = outcome else { return XCTFail("expected a failure, got \(outcome)") }
            XCTAssertEqual(error.kind, .invalidInput)
            XCTAssertTrue(error.message.contains("disagree on the step (100 to 101)"), error.message)
        }
        XCTAssertEqual(try entries(root), [])
    }

    // MARK: - Non-finite values

    func testNonFiniteValuesAreRefusedAndNothingIsWritten() throws {
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 28)
        let model = Model(seed: 29)
        model.store.value(model.store.parameterIndex(named: "output_layer.3.weight")!)[7] = .nan
        XCTAssertThrowsError(try CheckpointWriter(root: root, group: SingleProcessGroup())
            .write(state: trainerState(step: 1, worldSize: 1), backbone: model.store, optimizer: model.sgd,
                   head: head.shard(rank: 0, of: 1))) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .nonFiniteValue)
            XCTAssertTrue("\(error)".contains("backbone tensor 'output_layer.3.weight' holds 1 non-finite values"), "\(error)")
        }

        let clean = Model(seed: 30)
        clean.sgd.velocity.data[clean.store.parameters[0].offset + 2] = -.infinity
        XCTAssertThrowsError(try CheckpointWriter(root: root, group: SingleProcessGroup())
            .write(state: trainerState(step: 1, worldSize: 1), backbone: clean.store, optimizer: clean.sgd,
                   head: head.shard(rank: 0, of: 1))) { error in
            XCTAssertTrue("\(error)".contains("optimizer momentum for 'input_layer.0.weight'"), "\(error)")
        }

        var state = trainerState(step: 1, worldSize: 1)
        state.normStd = .nan
        let fine = Model(seed: 31)
        XCTAssertThrowsError(try CheckpointWriter(root: root, group: SingleProcessGroup())
            .write(state: state, backbone: fine.store, optimizer: fine.sgd, head: head.shard(rank: 0, of: 1))) { error in
            XCTAssertTrue("\(error)".contains("norm EMA σ"), "\(error)")
        }

        // Only rank 1's head holds an Inf; both ranks refuse, naming it.
        let outcomes = ThreadedGroup.outcomes(ranks: 2) { group in
            let shard = head.shard(rank: group.rank, of: 2)
            if group.rank == 1 { shard.momentum.data[3] = .infinity }
            return try CheckpointWriter(root: self.root, group: group)
                .write(state: self.trainerState(step: 1, worldSize: 2), backbone: fine.store, optimizer: fine.sgd, head: shard)
        }
        for outcome in outcomes {
            guard case .failure(let error as CheckpointError) = outcome else { return XCTFail("expected a failure, got \(outcome)") }
            XCTAssertEqual(error.kind, .nonFiniteValue)
            XCTAssertTrue(error.message.contains("rank 1: head momentum (classes 5..<10) holds 1 non-finite values"), error.message)
        }
        XCTAssertEqual(try entries(root), [])
    }

    // MARK: - Pruning

    func testKeepsTheLastKCheckpoints() throws {
        let model = Model(seed: 32)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 33)
        for step in stride(from: 100, through: 500, by: 100) {
            let result = try write(step: step, ranks: 2, model: model, head: head, keepLast: 2)[0]
            if step >= 300 { XCTAssertEqual(result.pruning?.removed, [root + "/step-\(String(format: "%09d", step - 200))"]) }
        }
        XCTAssertEqual(try entries(root), ["step-000000400", "step-000000500"])
        XCTAssertEqual(try CheckpointStore.list(root: root).map(\.isValid), [true, true])
    }

    func testPruningProtectsTheResumedCheckpointAndOnlyTouchesItsOwnDirectories() throws {
        let model = Model(seed: 34)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 35)
        _ = try write(step: 100, ranks: 1, model: model, head: head)
        _ = try write(step: 200, ranks: 1, model: model, head: head)
        // step 200 is damaged, so the run resumed from 100; an interrupted write of 300 remains.
        XCTAssertEqual(unlink(root + "/step-000000200/manifest.json"), 0)
        let stale = root + "/.tmp-step-000000300-0000000000000001"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: false)
        try Data([1]).write(to: URL(fileURLWithPath: stale + "/head-rank00000-of-00001.safetensors"))
        // Things that are not checkpoints of this format.
        try FileManager.default.createDirectory(atPath: root + "/step-000000050", withIntermediateDirectories: false)
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: root + "/step-000000050/notes.txt"))
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: root + "/step-000000010"))
        try FileManager.default.createDirectory(atPath: root + "/step-old", withIntermediateDirectories: false)
        try FileManager.default.createDirectory(atPath: root + "/runs", withIntermediateDirectories: false)

        // Nothing newer than the resumed-from checkpoint is complete: it stays even with keep-last 1.
        var report = CheckpointStore.prune(root: root, keepLast: 1, resumedFrom: 100)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/step-000000100"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/step-000000200"), "no manifest, so not complete")
        XCTAssertEqual(report.removed, [])

        // Once the run writes step 300 (complete), the resumed-from one and the damaged one may go.
        let result = try write(step: 300, ranks: 1, model: model, head: head, keepLast: 1, protectedStep: 100)[0]
        report = try XCTUnwrap(result.pruning)
        XCTAssertEqual(Set(report.removed), [root + "/step-000000100", root + "/step-000000200", stale])
        XCTAssertEqual(report.warnings, ["\(root)/step-000000050 holds \"notes.txt\", which is not a checkpoint file; left in place"])
        XCTAssertEqual(try entries(root), ["runs", "step-000000010", "step-000000050", "step-000000300", "step-old"])
    }

    // MARK: - Inspect

    func testInspectReportsACheckpointAndARoot() throws {
        let model = Model(seed: 36)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 37)
        _ = try write(step: 100, ranks: 2, model: model, head: head)
        _ = try write(step: 200, ranks: 2, model: model, head: head)

        guard case .checkpoint(let report) = try CheckpointInspection.inspect(path: root + "/step-000000200") else {
            return XCTFail("a step directory is a checkpoint")
        }
        XCTAssertTrue(report.isValid)
        let text = report.text()
        for expected in ["checkpoint   \(root)/step-000000200", "manifest     verified (5 files, sizes and CRC-32C match)",
                         "step         200", "epoch        3, step 17 of the epoch (204 samples in)",
                         "world size   2 ranks, global batch 8 (4 per rank)", "classes      10 × 6",
                         "norm EMA     μ \(20.123456789012345)  σ \(1.0 / 3.0)", "config       synth_small",
                         "  head-rank00000-of-00002.safetensors  classes 0..<5 (5)",
                         "  head-rank00001-of-00002.safetensors  classes 5..<10 (5)"] {
            XCTAssertTrue(text.contains(expected), "missing \"\(expected)\" in\n\(text)")
        }
        XCTAssertTrue(text.contains("  backbone.safetensors"), text)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
        XCTAssertEqual(json["status"] as? String, "verified")
        XCTAssertEqual(json["step"] as? Int, 200)
        XCTAssertEqual(json["world_size"] as? Int, 2)
        XCTAssertEqual(json["total_classes"] as? Int, 10)
        XCTAssertEqual((json["norm_ema"] as? [String: Any])?["std_bits"] as? String, String((1.0 / 3.0).bitPattern, radix: 16))
        XCTAssertEqual((json["shards"] as? [[String: Any]])?.count, 2)

        try flipByte(in: root + "/step-000000200/backbone_optimizer.safetensors", at: 64)
        guard case .root(let rootReport) = try CheckpointInspection.inspect(path: root) else {
            return XCTFail("a directory of checkpoints is a root")
        }
        XCTAssertEqual(rootReport.newestValid?.step, 100)
        let rootText = rootReport.text()
        XCTAssertTrue(rootText.contains("step-000000200  DAMAGED: file backbone_optimizer.safetensors: CRC mismatch"), rootText)
        XCTAssertTrue(rootText.contains("step-000000100  verified"), rootText)
        XCTAssertTrue(rootText.contains("newest valid: \(root)/step-000000100"), rootText)

        guard case .checkpoint(let damaged) = try CheckpointInspection.inspect(path: root + "/step-000000200") else {
            return XCTFail("a step directory is a checkpoint")
        }
        XCTAssertFalse(damaged.isValid)
        XCTAssertTrue(damaged.text().contains("manifest     DAMAGED\n               - file backbone_optimizer.safetensors: CRC mismatch"),
                      damaged.text())
        XCTAssertThrowsError(try CheckpointInspection.inspect(path: root + "/nothing-here"))
    }

    // MARK: - Helpers

    private func trainerState(step: Int, worldSize: Int) -> TrainerState {
        TrainerState(globalStep: step, epoch: 3, stepInEpoch: 17, epochSamplesConsumed: 17 * 12, samplesSeen: 12_345 + step,
                     worldSize: worldSize, localBatch: 4, globalBatch: 4 * worldSize, seed: UInt64.max - 7,
                     rngStates: ["dropout": 0xDEAD_BEEF_1234_5678], normMean: 20.123456789012345, normStd: 1.0 / 3.0,
                     learningRate: 0.1 * 0.1 * 0.1, counters: ["skipped_steps": 2],
                     totalClasses: totalClasses, embeddingSize: embeddingSize, configName: "synth_small",
                     configJSON: "{\n  \"name\": \"synth_small\",\n  \"optimizer\": {\"lr\": 0.1}\n}")
    }

    /// Writes one checkpoint from `ranks` simulated ranks; returns every rank's result.
    @discardableResult
    private func write(step: Int, ranks: Int, model: Model, head: HeadTruth, root: String? = nil,
                       keepLast: Int? = nil, protectedStep: Int? = nil) throws -> [CheckpointWriteResult] {
        let directory = root ?? self.root
        return try ThreadedGroup.run(ranks: ranks) { group in
            try CheckpointWriter(root: directory, group: group, keepLast: keepLast, protectedStep: protectedStep)
                .write(state: self.trainerState(step: step, worldSize: ranks), backbone: model.store, optimizer: model.sgd,
                       head: head.shard(rank: group.rank, of: ranks))
        }
    }

    /// Every rank of a world of `parts` loads exactly its rows.
    private func assertLoads(_ checkpoint: Checkpoint, _ head: HeadTruth, intoWorld parts: Int,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let partition = try ClassPartition(totalClasses: totalClasses, parts: parts)
        for rank in 0..<parts {
            let range = partition.range(of: rank)
            let kernel = Tensor(shape: [range.count, embeddingSize]), momentum = Tensor(shape: [range.count, embeddingSize])
            kernel.fill(.nan)
            momentum.fill(.nan)
            try checkpoint.loadHeadShard(partition: partition, rank: rank, kernel: kernel, momentum: momentum)
            XCTAssertEqual(bits(kernel), head.kernelRows(range), "\(checkpoint.worldSize) → \(parts), rank \(rank)", file: file, line: line)
            XCTAssertEqual(bits(momentum), head.momentumRows(range), "\(checkpoint.worldSize) → \(parts), rank \(rank)", file: file, line: line)
        }
    }

    /// Writes steps 100 and 200 from two ranks, damages 200, and checks resume falls back to 100 with
    /// exactly the expected problems.
    private func assertDamageFallsBack(expecting problems: (Int) -> [String], damage: (String) throws -> Int,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        let model = Model(seed: 38)
        let head = HeadTruth(classes: totalClasses, dimension: embeddingSize, seed: 39)
        _ = try write(step: 100, ranks: 2, model: model, head: head)
        _ = try write(step: 200, ranks: 2, model: model, head: head)
        let detail = try damage(root + "/step-000000200")
        let (checkpoint, skipped) = try CheckpointStore.latestValid(root: root)
        XCTAssertEqual(checkpoint?.step, 100, file: file, line: line)
        XCTAssertEqual(skipped.map(\.step), [200], file: file, line: line)
        XCTAssertEqual(skipped.first?.problems, problems(detail), file: file, line: line)
        XCTAssertEqual(skipped.first?.directory, root + "/step-000000200", file: file, line: line)
        // The fallback loads cleanly.
        let target = Model(seed: 40)
        try checkpoint?.loadBackbone(into: target.store)
        XCTAssertEqual(target.parameterBits, model.parameterBits, file: file, line: line)
    }

    private func entries(_ directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
    }

    private func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    private func flipByte(in path: String, at offset: Int) throws {
        var bytes = try read(path)
        bytes[offset] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    private func fileSize(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
    }

    /// Runs `body` with RLIMIT_FSIZE lowered (SIGXFSZ ignored, so writes fail with EFBIG instead).
    private func withFileSizeLimit<Result>(_ bytes: Int, _ body: () -> Result) -> Result {
        var saved = rlimit()
        getrlimit(RLIMIT_FSIZE_VALUE, &saved)
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        var limited = saved
        limited.rlim_cur = rlim_t(bytes)
        setrlimit(RLIMIT_FSIZE_VALUE, &limited)
        defer {
            setrlimit(RLIMIT_FSIZE_VALUE, &saved)
            signal(SIGXFSZ, previousHandler)
        }
        return body()
    }
}

private let RLIMIT_FSIZE_VALUE = __rlimit_resource_t(RLIMIT_FSIZE.rawValue)

private struct NoCheckpoint: Error {}

private func bits(_ tensor: Tensor) -> [UInt32] { tensor.array.map(\.bitPattern) }

// MARK: - Test model and head

/// A small backbone with every storage layout: an HWIO convolution, BatchNorm with running
/// statistics and a batch counter, PReLU, and a linear layer over an NHWC-flattened input.
private final class Model {
    let store = ParameterStore()
    let sgd: SGD

    init(seed: UInt64, wide: Bool = false) {
        let channels = wide ? 32 : 8
        _ = store.registerParameter("input_layer.0.weight", shape: [channels, 3, 3, 3],
                                    layout: .convHWIO(outChannels: channels, inChannels: 3, kernel: 3), group: .decayed)
        _ = store.registerParameter("input_layer.1.weight", shape: [channels], group: .notDecayed)
        _ = store.registerParameter("input_layer.1.bias", shape: [channels], group: .notDecayed)
        _ = store.registerBuffer("input_layer.1.running_mean", shape: [channels])
        _ = store.registerBuffer("input_layer.1.running_var", shape: [channels])
        _ = store.registerCounter("input_layer.1.num_batches_tracked")
        _ = store.registerParameter("input_layer.2.weight", shape: [channels], group: .decayed)
        _ = store.registerParameter("output_layer.3.weight", shape: [5, channels * 2 * 2],
                                    layout: .linearOverHWC(outFeatures: 5, channels: channels, height: 2, width: 2), group: .decayed)
        _ = store.registerParameter("output_layer.3.bias", shape: [5], group: .decayed)
        store.finalize()
        sgd = SGD(store: store)
        var rng = SplitMix64(seed: seed)
        for p in store.parameters { for j in 0..<p.count { store.values[p.offset + j] = rng.nextNormal() } }
        for p in store.parameters { for j in 0..<p.count { sgd.velocity.data[p.offset + j] = rng.nextNormal() * 1e-3 } }
        for b in store.buffers { for j in 0..<b.count { store.bufferValues[b.offset + j] = abs(rng.nextNormal()) } }
        store.batchCounters[0] = 123_456_789_012
        // Values whose bits a sloppy round trip would change.
        store.values[store.parameters[0].offset] = -0.0
        store.values[store.parameters[0].offset + 1] = .leastNonzeroMagnitude
        store.bufferValues[store.buffers[0].offset] = .greatestFiniteMagnitude
    }

    var parameterBits: [UInt32] { store.parameters.flatMap { p in (0..<p.count).map { store.values[p.offset + $0].bitPattern } } }
    var bufferBits: [UInt32] { store.buffers.flatMap { b in (0..<b.count).map { store.bufferValues[b.offset + $0].bitPattern } } }
    var velocityBits: [UInt32] { store.parameters.flatMap { p in (0..<p.count).map { sgd.velocity.data[p.offset + $0].bitPattern } } }
}

/// The whole classifier of a run; each simulated rank writes its rows.
private struct HeadTruth {
    let classes: Int
    let dimension: Int
    let kernel: [Float]
    let momentum: [Float]

    init(classes: Int, dimension: Int, seed: UInt64) {
        self.classes = classes
        self.dimension = dimension
        var rng = SplitMix64(seed: seed)
        kernel = (0..<(classes * dimension)).map { _ in rng.nextNormal() }
        momentum = (0..<(classes * dimension)).map { _ in rng.nextNormal() * 1e-2 }
    }

    func shard(rank: Int, of parts: Int) -> HeadShard {
        let range = try! ClassPartition(totalClasses: classes, parts: parts).range(of: rank)
        let rows = (range.lowerBound * dimension)..<(range.upperBound * dimension)
        return HeadShard(classRange: range, totalClasses: classes, embeddingSize: dimension,
                         kernel: Tensor(shape: [range.count, dimension], values: Array(kernel[rows])),
                         momentum: Tensor(shape: [range.count, dimension], values: Array(momentum[rows])))
    }

    func kernelRows(_ range: Range<Int>) -> [UInt32] { kernel[(range.lowerBound * dimension)..<(range.upperBound * dimension)].map(\.bitPattern) }
    func momentumRows(_ range: Range<Int>) -> [UInt32] { momentum[(range.lowerBound * dimension)..<(range.upperBound * dimension)].map(\.bitPattern) }
}

// MARK: - Ranks as threads

/// A `CollectiveGroup` whose ranks are threads of this process: every collective is an exchange of
/// byte strings through a shared slot table between two barriers.
private final class ThreadedGroup: CollectiveGroup {
    final class World {
        let size: Int
        private let condition = NSCondition()
        private var slots: [[UInt8]]
        private var arrived = 0
        private var generation = 0

        init(size: Int) {
            self.size = size
            slots = Array(repeating: [], count: size)
        }

        func barrier() {
            condition.lock()
            defer { condition.unlock() }
            let current = generation
            arrived += 1
            if arrived == size {
                arrived = 0
                generation += 1
                condition.broadcast()
            } else {
                while generation == current { condition.wait() }
            }
        }

        func exchange(rank: Int, _ bytes: [UInt8]) -> [[UInt8]] {
            condition.lock()
            slots[rank] = bytes
            condition.unlock()
            barrier()
            condition.lock()
            let all = slots
            condition.unlock()
            barrier()
            return all
        }
    }

    let rank: Int
    let world: World
    var size: Int { world.size }

    init(rank: Int, world: World) {
        self.rank = rank
        self.world = world
    }

    /// Runs `body` on `ranks` threads and returns each rank's outcome.
    static func outcomes<Value>(ranks: Int, _ body: @escaping (CollectiveGroup) throws -> Value) -> [Swift.Result<Value, Error>] {
        let world = World(size: ranks)
        let results = RankResults<Value>(ranks)
        let done = DispatchGroup()
        for rank in 0..<ranks {
            done.enter()
            let thread = Thread {
                let outcome = Swift.Result { try body(ThreadedGroup(rank: rank, world: world)) }
                results.lock.lock()
                results.values[rank] = outcome
                results.lock.unlock()
                done.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        done.wait()
        return results.values.map { $0! }
    }

    /// Like `outcomes`, but throws the first rank's error.
    static func run<Value>(ranks: Int, _ body: @escaping (CollectiveGroup) throws -> Value) throws -> [Value] {
        try outcomes(ranks: ranks, body).map { try $0.get() }
    }

    private func bytes<T>(_ pointer: UnsafePointer<T>, _ count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer, count: count * MemoryLayout<T>.stride))
    }

    private func values<T>(_ bytes: [UInt8], as _: T.Type) -> [T] {
        bytes.withUnsafeBytes { raw in (0..<(bytes.count / MemoryLayout<T>.stride)).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.stride, as: T.self) } }
    }

    func allReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, _ op: ReductionOperation) {
        let all = world.exchange(rank: rank, bytes(buffer, count)).map { values($0, as: T.self) }
        for i in 0..<count {
            buffer[i] = all.dropFirst().reduce(all[0][i]) { combine($0, $1[i], op) }
        }
    }

    func allGather<T: CollectiveScalar>(_ input: UnsafePointer<T>, count: Int, into output: UnsafeMutablePointer<T>) {
        let all = world.exchange(rank: rank, bytes(input, count)).flatMap { values($0, as: T.self) }
        output.update(from: all, count: all.count)
    }

    func allGatherV<T: CollectiveScalar>(_ input: UnsafePointer<T>, counts: [Int], into output: UnsafeMutablePointer<T>) {
        let all = world.exchange(rank: rank, bytes(input, counts[rank])).flatMap { values($0, as: T.self) }
        output.update(from: all, count: all.count)
    }

    func reduceScatter<T: CollectiveScalar>(_ input: UnsafePointer<T>, blockCount: Int,
                                            into output: UnsafeMutablePointer<T>, _ op: ReductionOperation) {
        let all = world.exchange(rank: rank, bytes(input, blockCount * size)).map { values($0, as: T.self) }
        for i in 0..<blockCount {
            let j = rank * blockCount + i
            output[i] = all.dropFirst().reduce(all[0][j]) { combine($0, $1[j], op) }
        }
    }

    func broadcast<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, root: Int) {
        let all = world.exchange(rank: rank, rank == root ? bytes(buffer, count) : [])
        buffer.update(from: values(all[root], as: T.self), count: count)
    }

    func barrier() { world.barrier() }

    /// Completes at once: the checkpoint code never overlaps collectives.
    func startAllReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int,
                                             _ op: ReductionOperation) -> CollectiveRequest {
        allReduce(buffer, count: count, op)
        return Completed()
    }

    private final class Completed: CollectiveRequest {
        func test() -> Bool { true }
        func wait() {}
    }
}

/// Each rank's outcome, filled in by the rank threads.
private final class RankResults<Value>: @unchecked Sendable {
    let lock = NSLock()
    var values: [Swift.Result<Value, Error>?]
    init(_ count: Int) { values = Array(repeating: nil, count: count) }
}

private func combine<T: CollectiveScalar>(_ a: T, _ b: T, _ op: ReductionOperation) -> T {
    func pick<V: Comparable & AdditiveArithmetic>(_ x: V, _ y: V) -> V {
        switch op {
        case .sum: return x + y
        case .max: return max(x, y)
        case .min: return min(x, y)
        }
    }
    switch (a, b) {
    case let (x as Float, y as Float): return pick(x, y) as! T
    case let (x as Double, y as Double): return pick(x, y) as! T
    case let (x as Int32, y as Int32): return pick(x, y) as! T
    case let (x as Int64, y as Int64): return pick(x, y) as! T
    case let (x as UInt64, y as UInt64): return pick(x, y) as! T
    case let (x as UInt8, y as UInt8): return pick(x, y) as! T
    default: preconditionFailure("unsupported collective scalar \(T.self)")
    }
}
