import {Command} from 'commander';
import {loadNodeSettings} from '../config/load-node-settings.js';
import type {SettingFlags} from '../config/node-config.js';
import {formatEngineBuild} from '../../tui/text-format.js';
import {addDataDirOption, settingOption} from './shared-options.js';

export function engineCommand() {
    const command = new Command('engine').description('the llama.cpp engine: build it for this machine, or go back to the prebuilt one');
    const build = command.command('build')
        .description('build llama.cpp for this machine from the source node-llama-cpp ships (offline; about 6 minutes on 2 cores; '
            + 'needs cmake, a C/C++ compiler, make or ninja, and git). Nodes started afterwards use it')
        .addOption(settingOption('gpu', {description: 'build for the GPU backend node-llama-cpp finds, or the CPU only', showDefault: false}));
    addDataDirOption(build).action(async (flags: Pick<SettingFlags, 'gpu'> & {dataDir?: string}) => {
        const {gpu} = await loadNodeSettings({gpu: flags.gpu, dataDir: flags.dataDir});
        const {buildEngine} = await import('../../engine/engine-build.js');
        const report = await buildEngine({gpu: gpu === 'off' ? false : 'auto'});
        process.stdout.write(`engine: llama.cpp ${report.llamaCppRelease} ${formatEngineBuild(report.build)} (${report.gpu || 'CPU'}). `
            + 'Restart running nodes to use it; `strongdoge bench --force` measures this device again.\n');
    });
    const reset = command.command('reset')
        .description('go back to node-llama-cpp\'s prebuilt binaries: removes what `engine build` made');
    addDataDirOption(reset).action(async (flags: {dataDir?: string}) => {
        const {gpu} = await loadNodeSettings({dataDir: flags.dataDir});
        const {clearEngineBuilds, engineBuildReport} = await import('../../engine/engine-build.js');
        await clearEngineBuilds();
        const report = await engineBuildReport(gpu === 'off' ? false : 'auto');
        process.stdout.write(`engine: llama.cpp ${report.llamaCppRelease}, ${formatEngineBuild(report.build)}\n`);
    });
    return command;
}
