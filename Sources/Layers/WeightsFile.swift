// Backbone weights as safetensors files: the official state_dict keys, PyTorch layouts, float32
// tensors and int64 batch counters, so that PyTorch's `load_state_dict` takes them unchanged.
import Serialization

extension ParameterStore {
    /// Writes every state_dict entry (atomically: temporary name, fsync, rename).
    public func writeSafeTensors(to path: String, metadata: [String: String] = [:],
                                 compression: Compression = .none) throws {
        try safeTensorsWriter(exportState(), metadata: metadata).write(to: path, compression: compression)
    }

    /// Writes the parameter gradients under the parameter names.
    public func writeGradientsSafeTensors(to path: String) throws {
        try safeTensorsWriter(exportGradients(), metadata: [:]).write(to: path)
    }

    /// Loads every state_dict entry from a safetensors file. Errors name the file and the key.
    public func readSafeTensors(from path: String) throws {
        let file = try SafeTensorsFile.read(path: path)
        try loadState(from: file)
    }

    public func loadState(from file: SafeTensorsFile) throws {
        try importState(source: file.source) { name in
            guard let info = file.info(name) else { return nil }
            if info.dtype == .i64 { return (info.shape, .int64(try file.int64s(name))) }
            return (info.shape, .float32(try file.floats(name)))
        }
    }

    private func safeTensorsWriter(_ state: [StateTensor], metadata: [String: String]) -> SafeTensorsWriter {
        var writer = SafeTensorsWriter()
        writer.metadata = metadata
        for tensor in state {
            switch tensor.values {
            case .float32(let v): writer.add(tensor.name, shape: tensor.shape, floats: v)
            case .int64(let v): writer.add(tensor.name, shape: tensor.shape, int64s: v)
            }
        }
        return writer
    }
}
