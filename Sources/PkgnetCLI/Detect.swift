// The built-in detector on the command line: the options that load and tune
// it (shared by `eval` and `detect`), and `pkgnet detect`, which prints the
// objects of image files.
import ArgumentParser
import PkgnetCore

struct DetectorArguments: ParsableArguments {
    @Option(name: .customLong("detector-cfg"), help: ArgumentHelp("Darknet .cfg of the detector (e.g. yolo-fastest-1.1.cfg).", valueName: "file"))
    var cfg: String?

    @Option(name: .customLong("detector-weights"), help: ArgumentHelp("Darknet .weights of the detector.", valueName: "file"))
    var weights: String?

    @Option(name: .customLong("detector-classes"), help: ArgumentHelp("Classes to report, comma-separated names or indices, e.g. person,bicycle,car,motorbike,bus,truck (default: all).", valueName: "list"))
    var classes: String?

    @Option(name: .customLong("detector-names"), help: ArgumentHelp("Class names, one per line (default: coco.names beside the cfg, when there).", valueName: "file"))
    var names: String?

    @Option(name: .customLong("detector-threshold"), help: ArgumentHelp("Keep objects whose confidence (objectness x class probability) exceeds this; eval's default is the scene's detector threshold (0.5 for ped2), detect's 0.25.", valueName: "p"))
    var threshold: Float?

    @Option(name: .customLong("detector-nms"), help: ArgumentHelp("NMS drops a box whose IoU with a more confident box of its class exceeds this; 1 = off.", valueName: "iou"))
    var nms: Float = 0.45

    /// Whether any detector option was given.
    var given: Bool { cfg != nil || weights != nil || classes != nil || names != nil || threshold != nil }

    func validate() throws {
        if (cfg == nil) != (weights == nil) {
            throw ValidationError("--detector-cfg and --detector-weights go together")
        }
        if let threshold, !(threshold.isFinite && (0...1).contains(threshold)) {
            throw ValidationError("--detector-threshold must be in [0, 1], not \(threshold)")
        }
        guard nms.isFinite, (0...1).contains(nms) else { throw ValidationError("--detector-nms must be in [0, 1], not \(nms)") }
    }

    /// The class names: --detector-names, else coco.names beside the cfg (nil when neither exists).
    private func classNames(for network: DarknetNetwork, cfg: String) throws -> [String]? {
        var folder = "."
        if let slash = cfg.lastIndex(of: "/") { folder = slash == cfg.startIndex ? "/" : String(cfg[..<slash]) }
        let path = names ?? joinPath(folder, "coco.names")
        guard names != nil || fileKind(path) == .file else { return nil }
        let text = String(decoding: try readFileBytes(path), as: UTF8.self)
        let list = text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map { String($0.trimmingWhitespace()) }.filter { !$0.isEmpty }
        guard list.count == network.classes else {
            throw CLIError("\(path) names \(list.count) classes, but the detector \(cfg) has \(network.classes)")
        }
        return list
    }

    /// Loads the network and turns the options into DetectorOptions.
    func load(threads: Int, defaultThreshold: Float) throws -> (network: DarknetNetwork, options: DetectorOptions, classNames: [String]?) {
        guard let cfg, let weights else { throw CLIError("the detector needs --detector-cfg and --detector-weights") }
        let network: DarknetNetwork
        do {
            network = try DarknetNetwork(cfgPath: cfg, weightsPath: weights)
        } catch let error as PkgnetError {
            throw CLIError(error.message)
        }
        let names = try classNames(for: network, cfg: cfg)
        var options = DetectorOptions(confidence: threshold ?? defaultThreshold, nmsThreshold: nms, threads: threads)
        if let classes {
            options.classes = try classes.split(separator: ",").map { String($0.trimmingWhitespace()) }.filter { !$0.isEmpty }.map { item in
                if let index = Int(item) { return index }
                guard let names else {
                    throw CLIError("--detector-classes names '\(item)', but there are no class names: give --detector-names (or indices)")
                }
                guard let index = names.firstIndex(of: item) else {
                    throw CLIError("--detector-classes: '\(item)' is not a class of the detector (see \(self.names ?? "coco.names"))")
                }
                return index
            }
        }
        do {
            try options.validate(classCount: network.classes)
        } catch let error as PkgnetError {
            throw CLIError(error.message)
        }
        return (network, options, names)
    }
}

struct Detect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the objects the built-in detector finds in images.",
        discussion: """
        One CSV row per object on standard output: image,class_id,class,confidence,x1,y1,x2,y2 \
        (pixels of the image; class empty without class names), most confident first per image.
        """
    )

    @OptionGroup var detector: DetectorArguments

    @Option(help: ArgumentHelp("Threads; 0 = all CPUs.", valueName: "n"))
    var threads: Int = 0

    @Argument(help: ArgumentHelp("Image files (JPEG, PNG, TIFF).", valueName: "image"))
    var images: [String]

    func validate() throws {
        guard detector.cfg != nil else { throw ValidationError("give the detector: --detector-cfg and --detector-weights") }
        guard (0...Session.maxThreads).contains(threads) else {
            throw ValidationError("--threads must be in 0...\(Session.maxThreads) (0 = all CPUs), not \(threads)")
        }
    }

    func run() throws {
        let (network, options, names) = try detector.load(threads: threads, defaultThreshold: 0.25)
        let found = try Detector(network: network)
        print("image,class_id,class,confidence,x1,y1,x2,y2")
        for path in images {
            let image = try DecodedImage(path: path, format: .bgr)
            let objects: [DetectedObject]
            do {
                objects = try image.withView { try found.detect($0, options: options) }
            } catch let error as PkgnetError {
                throw CLIError("\(path): \(error.message)")
            }
            for o in objects {
                let name = names.map { ScoreCSV.field($0[o.classID]) } ?? ""
                print([ScoreCSV.field(path), String(o.classID), name, formatFixed(Double(o.confidence), 4),
                       formatFixed(Double(o.box.x1), 2), formatFixed(Double(o.box.y1), 2),
                       formatFixed(Double(o.box.x2), 2), formatFixed(Double(o.box.y2), 2)].joined(separator: ","))
            }
        }
    }
}
