// The communicator's collectives on 1–4 ranks, including uneven all-gatherv counts.
import Collectives

let collectiveTests: [MPITest] = [
    MPITest("all-reduce sum and max, in place") { world, expect in
        var values: [Float] = [Float(world.rank + 1), Float(-world.rank), 0.5]
        try world.allReduce(&values, .sum)
        let n = Float(world.size)
        expect.equal(values, [n * (n + 1) / 2, -n * (n - 1) / 2, 0.5 * n], "sum")
        let maximum = try world.allReduce(Double(world.rank * 10), .max)
        expect.equal(maximum, Double((world.size - 1) * 10), "max")
        let minimum = try world.allReduce(Int64(world.rank + 3), .min)
        expect.equal(minimum, 3, "min")
    },
    MPITest("broadcast from the last rank") { world, expect in
        var values: [Int64] = world.rank == world.size - 1 ? [7, 8, 9] : [0, 0, 0]
        try world.broadcast(&values, root: world.size - 1)
        expect.equal(values, [7, 8, 9], "broadcast")
    },
    MPITest("all-gather and all-gatherv with uneven counts") { world, expect in
        var gathered = [Float](repeating: -1, count: 2 * world.size)
        let mine: [Float] = [Float(world.rank), Float(world.rank) + 0.5]
        try mine.withUnsafeBufferPointer { src in
            try gathered.withUnsafeMutableBufferPointer { try world.allGather(src.baseAddress!, count: 2, into: $0.baseAddress!) }
        }
        expect.equal(gathered, (0..<world.size).flatMap { [Float($0), Float($0) + 0.5] }, "all-gather")
        // Rank r contributes r+1 values (rank 0 one, rank 3 four).
        let counts = (0..<world.size).map { $0 + 1 }
        let contribution = [Int32](repeating: Int32(world.rank), count: world.rank + 1)
        var all = [Int32](repeating: -1, count: counts.reduce(0, +))
        try contribution.withUnsafeBufferPointer { src in
            try all.withUnsafeMutableBufferPointer { try world.allGatherV(src.baseAddress!, counts: counts, into: $0.baseAddress!) }
        }
        expect.equal(all, (0..<world.size).flatMap { [Int32](repeating: Int32($0), count: $0 + 1) }, "all-gatherv")
    },
    MPITest("reduce-scatter gives each rank its summed block") { world, expect in
        let block = 3
        let input = (0..<(world.size * block)).map { Float($0 * (world.rank + 1)) }
        var output = [Float](repeating: 0, count: block)
        try input.withUnsafeBufferPointer { src in
            try output.withUnsafeMutableBufferPointer { try world.reduceScatter(src.baseAddress!, blockCount: block, into: $0.baseAddress!) }
        }
        let rankSum = Float(world.size * (world.size + 1) / 2)
        expect.equal(output, (0..<block).map { Float((world.rank * block + $0)) * rankSum }, "reduce-scatter")
    },
    MPITest("non-blocking all-reduce completes through test and wait") { world, expect in
        let n = 1 << 16
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: Float(world.rank), count: n)
        let pending = try world.allReduceNonBlocking(buffer, count: n, .sum)
        var polls = 0
        while try !pending.test() && polls < 1_000_000 { polls += 1 }
        try pending.wait()
        let expected = Float(world.size * (world.size - 1) / 2)
        expect.check((0..<n).allSatisfy { buffer[$0] == expected }, "every element is the sum \(expected)")
    },
    MPITest("node split sees every rank of this machine") { world, expect in
        let node = try world.splitByNode()
        expect.equal(node.size, world.size, "all ranks of the test share one node")
        expect.equal(node.rank, world.rank, "node rank follows world rank")
    },
    MPITest("an invalid root is a typed error naming the call") { world, expect in
        var values: [Float] = [1]
        do {
            try world.broadcast(&values, root: world.size + 5)
            expect.fail("broadcast to a root outside the world succeeded")
        } catch let error as CollectiveError {
            expect.equal(error.call, "MPI_Bcast", "error names the MPI call")
        }
    },
]
