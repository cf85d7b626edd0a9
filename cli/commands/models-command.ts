import {join, resolve} from 'node:path';
import {Command, Option} from 'commander';
import {demoModelDefaults, writeDemoModel} from '../../engine/demo/demo-model.js';
import {ensureDataDir, modelsDir, resolveDataDir} from '../data-dir.js';
import {formatBytes} from '../../core/display.js';
import {formatTable} from '../../tui/text-format.js';
import {addDataDirOption} from './shared-options.js';

const DEMO_FILE = 'demo.gguf';

const positiveInteger = (name: string) => (value: string) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number < 1)
        throw new Error(`${name} must be a positive integer, got "${value}"`);
    return number;
};

function listCommand() {
    const command = new Command('list')
        .alias('ls')
        .description('list the models in the data dir with size, layers and quantization')
        .option('--json', 'print JSON');
    addDataDirOption(command);
    return command.action(async ({json, dataDir}: {json?: boolean, dataDir?: string}) => {
        const dir = modelsDir(resolveDataDir(dataDir));
        const {listModelFiles} = await import('../../engine/model-files.js'); // node-llama-cpp loads only when needed
        const {models, failures} = await listModelFiles(dir);
        if (json) {
            process.stdout.write(JSON.stringify({directory: dir, models, failures}, null, 2) + '\n');
            return;
        }
        if (models.length === 0)
            process.stdout.write(`no models in ${dir}\ntry: strongdoge models make-demo, or strongdoge models pull hf:<user>/<repo>/<file>.gguf\n`);
        else
            process.stdout.write(formatTable(
                ['MODEL', 'SIZE', 'LAYERS', 'QUANTIZATION', 'ARCH', 'CONTEXT'],
                models.map((model) => [model.id, formatBytes(model.sizeBytes), String(model.layers), model.quantization,
                    model.architecture, String(model.contextLength)])
            ) + '\n');
        for (const failure of failures)
            process.stderr.write(`warning: ${failure.path}: not a readable GGUF model: ${failure.message}\n`);
    });
}

function pullCommand() {
    const command = new Command('pull')
        .description('download a model (hf:<user>/<repo>/<file>.gguf or a URL) into the data dir; resumes partial downloads')
        .argument('<ref>', 'hf: reference or URL')
        .option('--sha256 <hex>', 'expected SHA-256 of the file; a mismatch deletes it');
    addDataDirOption(command);
    return command.action(async (ref: string, {sha256, dataDir}: {sha256?: string, dataDir?: string}) => {
        if (sha256 !== undefined && !/^[0-9a-f]{64}$/i.test(sha256))
            command.error(`error: --sha256 must be 64 hex digits, got "${sha256}"`, {exitCode: 2});
        const root = resolveDataDir(dataDir);
        await ensureDataDir(root);
        const [{downloadModel}, {describeModelFile}, {recordModelSource}] = await Promise.all([
            import('../../engine/model-download.js'), import('../../engine/model-files.js'), import('../../engine/model-source.js')
        ]);
        const {path, verifiedSha256} = await downloadModel(ref, {
            directory: modelsDir(root),
            showProgressBar: process.stderr.isTTY,
            ...(sha256 !== undefined && {sha256})
        });
        // Kept beside the file, so that a node loading it later can tell hosts where to fetch its layers.
        await recordModelSource(path, ref);
        const model = await describeModelFile(path);
        process.stdout.write(`pulled ${model.id}: ${formatBytes(model.sizeBytes)}, ${model.layers} layers, ${model.quantization}${verifiedSha256 ? `, sha256 ${verifiedSha256} verified` : ', no checksum published (pass --sha256 to verify)'}\n${path}\n`);
    });
}

function makeDemoCommand() {
    const command = new Command('make-demo')
        .description('write a small random-weight llama model for trying strongdoge offline (it talks nonsense)')
        .argument('[file]', `output file (default: <data dir>/models/${DEMO_FILE})`)
        .addOption(new Option('--layers <n>', 'transformer blocks').default(demoModelDefaults.layers).argParser(positiveInteger('layers')))
        .addOption(new Option('--width <n>', 'hidden size').default(demoModelDefaults.width).argParser(positiveInteger('width')))
        .addOption(new Option('--heads <n>', 'attention heads').default(demoModelDefaults.headCount).argParser(positiveInteger('heads')))
        .addOption(new Option('--ff <n>', 'feed-forward size').default(demoModelDefaults.feedForwardLength).argParser(positiveInteger('ff')))
        .addOption(new Option('--seed <n>', 'weights seed').default(demoModelDefaults.seed).argParser(positiveInteger('seed')));
    addDataDirOption(command);
    return command.action(async (file: string | undefined, options: {layers: number, width: number, heads: number, ff: number, seed: number, dataDir?: string}) => {
        let path: string;
        if (file === undefined) {
            const root = resolveDataDir(options.dataDir);
            await ensureDataDir(root);
            path = join(modelsDir(root), DEMO_FILE);
        } else {
            path = resolve(file);
        }
        try {
            await writeDemoModel(path, {
                layers: options.layers, width: options.width, headCount: options.heads,
                feedForwardLength: options.ff, seed: options.seed
            });
        } catch (error) {
            if (error instanceof RangeError)
                command.error(`error: ${error.message}`, {exitCode: 2});
            throw error;
        }
        const {describeModelFile} = await import('../../engine/model-files.js');
        const model = await describeModelFile(path);
        process.stdout.write(`wrote ${path}: ${formatBytes(model.sizeBytes)}, ${model.layers} layers\n`);
    });
}

export function modelsCommand() {
    return new Command('models')
        .description('manage local model files')
        .addCommand(listCommand())
        .addCommand(pullCommand())
        .addCommand(makeDemoCommand());
}
