// `--set key=value`: override any field by its dotted path, then check the result like a file.
// Overrides act on the document the file gave, so derived defaults follow them: `--set name=x`
// moves a run_dir the file left out, `--set head.margin=arcface` brings ArcFace's default m.
import Foundation

extension TrainingConfiguration {
    /// Splits one `--set` argument at its first '='.
    public static func parseOverride(_ argument: String) throws -> (key: String, value: String) {
        guard let equals = argument.firstIndex(of: "=") else {
            throw ConfigurationError(.syntax, path: "", "expected key=value, e.g. optimizer.lr=0.05", source: "--set \(argument)")
        }
        let key = argument[..<equals].trimmingCharacters(in: .whitespaces)
        return (key, String(argument[argument.index(after: equals)...]))
    }

    /// Applies overrides in order (a later one wins), then checks the whole configuration again.
    /// A value is read as JSON when it is valid JSON (`0.05`, `[10,18,22]`, `true`), otherwise as
    /// text; a text field always takes the text as it is (`name=2024` is the name "2024").
    /// Errors caused by an override name it as their source.
    public mutating func apply(overrides: [(key: String, value: String)]) throws {
        guard !overrides.isEmpty else { return }
        var document = overrideBase
        for override in overrides {
            try Self.set(override.key, to: override.value, in: &document)
        }
        do {
            self = try TrainingConfiguration(document: document, source: source)
        } catch var error as ConfigurationError {
            let path = error.path
            if let culprit = overrides.last(where: {
                path == $0.key || path.hasPrefix($0.key + ".") || path.hasPrefix($0.key + "[")
            }) {
                error.source = "--set \(culprit.key)=\(culprit.value)"
            }
            throw error
        }
    }

    /// The file's document while it still describes this value; after changes made in code, the
    /// resolved form.
    private var overrideBase: ConfigJSON {
        if let document = sourceDocument, let reread = try? TrainingConfiguration(document: document, source: source),
           reread == self {
            return document
        }
        return resolvedDocument
    }

    private static func set(_ key: String, to text: String, in document: inout ConfigJSON) throws {
        let source = "--set \(key)=\(text)"
        guard !key.isEmpty else {
            throw ConfigurationError(.syntax, path: "", "the key is empty", source: source)
        }
        if key.contains("[") {
            throw ConfigurationError(.invalidValue, path: key,
                                     "set the whole array instead, e.g. optimizer.schedule.milestones=[10,18,22]",
                                     source: source)
        }
        let components = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        var node = schema
        var walked: [String] = []
        for component in components {
            guard case let .object(members) = node else {
                throw ConfigurationError(.unknownKey, path: key,
                                         "\(walked.joined(separator: ".")) is a value, not a section", source: source)
            }
            guard let next = members.first(where: { $0.key == component })?.value else {
                let here = (walked + [component]).joined(separator: ".")
                let message = ConfigSectionReader.unknownKeyMessage(component, known: members.map(\.key),
                                                                    section: walked.joined(separator: "."))
                throw ConfigurationError(.unknownKey, path: here, message, source: source)
            }
            walked.append(component)
            node = next
        }
        document = setting(overrideValue(text, like: node), at: components[...], in: document)
    }

    private static func overrideValue(_ text: String, like current: ConfigJSON) -> ConfigJSON {
        let parsed = try? ConfigJSONParser.parse(Array(text.utf8))
        if case .string = current {
            if let parsed, case .string = parsed { return parsed }
            return .string(text)
        }
        return parsed ?? .string(text)
    }

    private static func setting(_ value: ConfigJSON, at path: ArraySlice<String>, in node: ConfigJSON?) -> ConfigJSON {
        guard let key = path.first else { return value }
        var members: [(key: String, value: ConfigJSON)] = []
        if case let .object(existing)? = node { members = existing }
        if let i = members.firstIndex(where: { $0.key == key }) {
            members[i].value = setting(value, at: path.dropFirst(), in: members[i].value)
        } else {
            members.append((key, setting(value, at: path.dropFirst(), in: nil)))
        }
        return .object(members)
    }
}
