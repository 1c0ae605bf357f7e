// `adaface-dist train`: the distributed trainer, under mpirun.
import Collectives
import Foundation
import Training

enum TrainCommand {
    static let spec = CommandSpec(
        name: "train",
        abstract: "Train a backbone with the AdaFace loss, data-parallel over the MPI ranks.",
        discussion: """
            Run under mpirun (a process started without it is a world of one rank). Every field of \
            the configuration is documented in configs/README.md; --set overrides any of them by its \
            dotted path, e.g. --set optimizer.lr=0.05. SIGTERM or SIGUSR1 makes every rank write a \
            checkpoint and exit with code 0.

            Exit codes: 0 finished, or stopped by a signal after its checkpoint; 1 failed (the \
            message says why; checkpoints already written are intact and --resume auto continues \
            from the newest); 2 a bad configuration or argument, named, before anything is written; \
            3 a rank made no progress for training.timeout_seconds (another rank died or hangs).

            Test hook: ADAFACE_DIST_INJECT_NONFINITE=loss@5, gradient@5:1 or weight@5 plants a NaN \
            loss, an infinite gradient or a NaN weight at step 5 on rank 0 (or the rank after ':'); \
            see Sources/Training/FaultInjection.swift.
            """,
        options: [
            .option("config", valueName: "file", help: "Training configuration (JSON).", required: true),
            .option("set", valueName: "key=value", help: "Override a configuration field (repeatable).", repeatable: true),
            .option("resume", valueName: "mode",
                    help: "auto (the newest verified checkpoint), none, or a checkpoint directory.", default: "auto"),
        ],
        usageErrorExitCode: 2,
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let path = try args.requiredString("config")
        let configuration: TrainingConfiguration
        do {
            let overrides = try args.strings("set").map { try TrainingConfiguration.parseOverride($0) }
            configuration = try TrainingConfiguration.load(path: path, overrides: overrides)
            try configuration.validatePaths()
        } catch let error as ConfigurationError {
            throw CommandExit(code: 2, message: "\(error)")
        }
        let resume: ResumeMode
        switch args.string("resume") ?? "auto" {
        case "auto": resume = .auto
        case "none": resume = .none
        case let directory:
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw CommandExit(code: 2, message: "--resume: no checkpoint directory at \(directory) "
                                  + "(give auto, none or the path of a step-… directory)")
            }
            resume = .path(directory)
        }
        let injections: [NonFiniteInjection]
        do {
            injections = try NonFiniteInjection.fromEnvironment(ProcessInfo.processInfo.environment)
        } catch {
            throw CommandExit(code: 2, message: "\(error)")
        }
        let world = try MPIRuntime.world()
        let trainer = Trainer(configuration: configuration, world: world, resume: resume) { line in
            print(line)
            fflush(stdout)
        }
        trainer.injections = injections
        do {
            let summary = try trainer.run()
            if world.rank == 0 {
                var notes: [String] = []
                if summary.skippedSteps > 0 { notes.append("\(summary.skippedSteps) skipped") }
                let bad = summary.badRecords.values.reduce(0, +)
                if bad > 0 { notes.append("\(bad) bad record\(bad == 1 ? "" : "s") skipped") }
                if summary.failedCheckpoints > 0 {
                    notes.append("\(summary.failedCheckpoints) checkpoint\(summary.failedCheckpoints == 1 ? "" : "s") "
                                 + "not written (disk full)")
                }
                print(String(format: "done: %d steps, loss %.4f → %.4f%@", summary.steps, summary.firstLoss, summary.lastLoss,
                             notes.isEmpty ? "" : ", " + notes.joined(separator: ", ")))
                for v in summary.verification {
                    print(String(format: "verification %@: %.2f%% ± %.2f", v.name, 100 * v.accuracy, 100 * v.std))
                }
                print("checkpoint: \(summary.lastCheckpoint ?? "none")")
                print("metrics: \(summary.metricsFile)/rank-*.jsonl; resolved config: \(summary.runDirectory)/config.resolved.json")
            }
            MPIRuntime.finalize()
            return 0
        } catch let error as ConfigurationError {
            fputs("Error: \(error)\n", stderr)
            if world.size > 1 { MPIRuntime.abort(code: 2) }
            return 2
        } catch let error as TrainingStopped {
            // Every rank stopped at the same point with the same message: one rank says it, and the
            // job ends without MPI_Abort.
            fflush(stdout)
            if world.rank == 0 { fputs("Error: \(error)\n", stderr) }
            MPIRuntime.finalize()
            return 1
        } catch {
            fputs("Error (rank \(world.rank)): \(error)\n", stderr)
            // A failed rank must not leave the others waiting in a collective.
            if world.size > 1 { MPIRuntime.abort(code: 1) }
            return 1
        }
    }
}
