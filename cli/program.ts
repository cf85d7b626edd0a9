import {Command, CommanderError} from 'commander';
import {benchCommand} from './commands/bench-command.js';
import {demoCommand} from './commands/demo-command.js';
import {doctorCommand} from './commands/doctor-command.js';
import {engineCommand} from './commands/engine-command.js';
import {ledgerCommand} from './commands/ledger-command.js';
import {modelsCommand} from './commands/models-command.js';
import {startCommand} from './commands/start-command.js';
import {statusCommands} from './commands/status-commands.js';
import {testnetCommand} from './commands/testnet-command.js';
import {walletCommand} from './commands/wallet-command.js';
import {ConfigError} from './config/config-error.js';
import {packageInfo} from '../node/package-info.js';

/** Usage errors exit with 2, like the config errors they resemble. */
const USAGE_ERROR_EXIT_CODE = 2;

/** addCommand() does not pass settings down, so they are applied to the whole tree. */
function applyToAll(command: Command, apply: (command: Command) => void) {
    apply(command);
    for (const child of command.commands)
        applyToAll(child, apply);
}

export function createProgram() {
    const program = new Command('strongdoge')
        .description('Pool GPUs with peers over Hyperswarm and serve LLMs through a local OpenAI-compatible API.')
        .version(packageInfo.version, '-v, --version');
    program.addCommand(startCommand(), {isDefault: true});
    program.addCommand(demoCommand());
    program.addCommand(modelsCommand());
    program.addCommand(benchCommand());
    program.addCommand(doctorCommand());
    program.addCommand(engineCommand());
    program.addCommand(testnetCommand());
    program.addCommand(ledgerCommand());
    program.addCommand(walletCommand());
    for (const command of statusCommands())
        program.addCommand(command);
    applyToAll(program, (command) => command.exitOverride().showHelpAfterError('(add --help for usage)'));
    return program;
}

export async function runCli(argv: string[]) {
    try {
        await createProgram().parseAsync(argv);
    } catch (error) {
        if (error instanceof CommanderError) {
            // commander has already printed the message (or the help/version).
            process.exitCode = error.exitCode === 0 ? 0 : USAGE_ERROR_EXIT_CODE;
            return;
        }
        if (error instanceof ConfigError) {
            process.stderr.write(`strongdoge: error: ${error.message}\n`);
            process.exitCode = error.exitCode;
            return;
        }
        process.stderr.write(`strongdoge: error: ${(error as Error).message}\n`);
        process.exitCode = 1;
    }
}
