// The adaface-dist command-line tool. Everything lives in the CLI module, so tests can drive it.
import CLI
import Foundation

setvbuf(stdout, nil, _IOLBF, 0)
exit(CommandLineTool.main(AdaFaceDist.root))
