// Conversion between the engine's parameter arena and PyTorch state_dict tensors (official names,
// PyTorch layouts), so weights move between this project and PyTorch with a rename-free copy.
import Tensors

public struct StateTensor {
    public enum Values { case float32([Float]), int64([Int64]) }
    public let name: String
    public let shape: [Int]
    public let values: Values
}

public struct StateDictError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension StorageLayout {
    /// Engine order → PyTorch order (for weights, gradients and optimizer state alike).
    public func exportValues(_ src: UnsafePointer<Float>, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        switch self {
        case .plain:
            for i in 0..<count { out[i] = src[i] }
        case let .convHWIO(o, ci, k):
            for ky in 0..<k { for kx in 0..<k { for c in 0..<ci { for oc in 0..<o {
                out[((oc * ci + c) * k + ky) * k + kx] = src[((ky * k + kx) * ci + c) * o + oc]
            } } } }
        case let .linearOverHWC(o, c, h, w):
            for r in 0..<o { for y in 0..<h { for x in 0..<w { for ch in 0..<c {
                out[r * c * h * w + (ch * h + y) * w + x] = src[r * c * h * w + (y * w + x) * c + ch]
            } } } }
        }
        return out
    }

    /// PyTorch order → engine order.
    public func importValues(_ src: [Float], into dst: UnsafeMutablePointer<Float>) {
        src.withUnsafeBufferPointer { importValues($0, into: dst) }
    }

    public func importValues(_ src: UnsafeBufferPointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        switch self {
        case .plain:
            for i in 0..<src.count { dst[i] = src[i] }
        case let .convHWIO(o, ci, k):
            for ky in 0..<k { for kx in 0..<k { for c in 0..<ci { for oc in 0..<o {
                dst[((ky * k + kx) * ci + c) * o + oc] = src[((oc * ci + c) * k + ky) * k + kx]
            } } } }
        case let .linearOverHWC(o, c, h, w):
            for r in 0..<o { for y in 0..<h { for x in 0..<w { for ch in 0..<c {
                dst[r * c * h * w + (y * w + x) * c + ch] = src[r * c * h * w + (ch * h + y) * w + x]
            } } } }
        }
    }
}

extension ParameterStore {
    /// Every state_dict entry (parameters, running statistics, batch counters) in state_dict order.
    public func exportState() -> [StateTensor] {
        stateOrder.map { entry in
            switch entry {
            case .parameter(let i):
                let p = parameters[i]
                return StateTensor(name: p.name, shape: p.shape, values: .float32(p.layout.exportValues(value(i), count: p.count)))
            case .buffer(let i):
                let b = buffers[i]
                return StateTensor(name: b.name, shape: b.shape,
                                   values: .float32(Array(UnsafeBufferPointer(start: buffer(i), count: b.count))))
            case let .counter(i, name):
                return StateTensor(name: name, shape: [], values: .int64([batchCounters[i]]))
            }
        }
    }

    /// Parameter gradients under the parameter names, in PyTorch layouts.
    public func exportGradients() -> [StateTensor] {
        parameters.indices.map { i in
            let p = parameters[i]
            return StateTensor(name: p.name, shape: p.shape, values: .float32(p.layout.exportValues(gradient(i), count: p.count)))
        }
    }

    /// Loads every state_dict entry through `lookup`, which returns a tensor's shape and values (or
    /// nil when the source has no such key). Missing keys and shape mismatches are errors naming the
    /// key; `source` names the file in messages.
    public func importState(source: String,
                            lookup: (String) throws -> (shape: [Int], values: StateTensor.Values)?) throws {
        for entry in stateOrder {
            switch entry {
            case .parameter(let i):
                let p = parameters[i]
                let floats = try Self.floats(p.name, p.shape, source: source, lookup)
                p.layout.importValues(floats, into: value(i))
            case .buffer(let i):
                let b = buffers[i]
                let floats = try Self.floats(b.name, b.shape, source: source, lookup)
                buffer(i).update(from: floats, count: b.count)
            case let .counter(i, name):
                guard let found = try lookup(name) else {
                    throw StateDictError("\(source): missing key '\(name)'")
                }
                switch found.values {
                case .int64(let v) where v.count == 1: batchCounters[i] = v[0]
                case .float32(let v) where v.count == 1: batchCounters[i] = Int64(v[0])
                default: throw StateDictError("\(source): '\(name)' must hold one integer")
                }
            }
        }
    }

    private static func floats(_ name: String, _ shape: [Int], source: String,
                               _ lookup: (String) throws -> (shape: [Int], values: StateTensor.Values)?) throws -> [Float] {
        guard let found = try lookup(name) else { throw StateDictError("\(source): missing key '\(name)'") }
        guard found.shape == shape else {
            throw StateDictError("\(source): '\(name)' has shape \(found.shape), the model expects \(shape)")
        }
        switch found.values {
        case .float32(let v): return v
        case .int64(let v): return v.map { Float($0) }
        }
    }

    /// Names of all state_dict entries, in order.
    public var stateNames: [String] {
        stateOrder.map { entry in
            switch entry {
            case .parameter(let i): return parameters[i].name
            case .buffer(let i): return buffers[i].name
            case let .counter(_, name): return name
            }
        }
    }
}
