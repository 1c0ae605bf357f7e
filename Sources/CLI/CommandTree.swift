// The adaface-dist command tree. Each subcommand lives in its own file; this one assembles them.

public enum AdaFaceDist {
    public static let root = CommandSpec(
        name: "adaface-dist",
        abstract: "Distributed data-parallel AdaFace training for Linux CPU clusters under MPI.",
        subcommands: [
            TrainCommand.spec,
            InspectCommand.spec,
            EvalCommand.spec,
            EvalIJBCommand.spec,
            AnalyzeNormsCommand.spec,
            SynthCommand.spec,
            PackCommand.spec,
            DataCommand.spec,
            EmbedCommand.spec,
            BenchCommand.spec,
            ParityDumpCommand.spec,
        ])
}
