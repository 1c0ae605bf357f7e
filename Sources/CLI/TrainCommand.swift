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
            dotted path, e.g. --set optimizer.lr=0.05. A bad configuration names the field and exits \
            with code 2 before anything is written. SIGTERM or SIGUSR1 makes every rank write a \
            checkpoint and exit with code 0.
            """,
        options: [
            .option("config", valueName: "file", help: "Training configuration (JSON).", required: true),
            .option("set", valueName: "key=value", help: "Override a configuration field (repeatable).", repeatable: true),
            .option("resume", valueName: "mode",
                    help: "auto (the newest verified checkpoint), none, or a checkpoint directory.", default: "auto"),
        ],
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
        case let directory: resume = .path(directory)
        }
        let world = try MPIRuntime.world()
        let trainer = Trainer(configuration: configuration, world: world, resume: resume) { line in
            print(line)
            fflush(stdout)
        }
        do {
            let summary = try trainer.run()
            if world.rank == 0 {
                print(String(format: "done: %d steps, loss %.4f → %.4f%@", summary.steps, summary.firstLoss, summary.lastLoss,
                             summary.skippedSteps > 0 ? ", \(summary.skippedSteps) skipped" : ""))
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
        } catch {
            fputs("Error (rank \(world.rank)): \(error)\n", stderr)
            // A failed rank must not leave the others waiting in a collective.
            if world.size > 1 { MPIRuntime.abort(code: 1) }
            return 1
        }
    }
}
