// Entry point of the multi-rank test executable: `mpirun -n P adaface-dist-mpi-tests [filter]`.
import Collectives
import Foundation

setvbuf(stdout, nil, _IOLBF, 0)
let filter = CommandLine.arguments.dropFirst().first
let status = MPITestRunner.run(collectiveTests + headTests + bucketTests + dataParallelTests + extractionTests,
                                  filter: filter)
MPIRuntime.finalize()
exit(status)
