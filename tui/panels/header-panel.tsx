import {Box, Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {formatNat} from '../text-format.js';

export function HeaderPanel({node, engine}: Pick<DashboardState, 'node' | 'engine'>) {
    const network = node.network === null ? 'offline' : `${node.network}${node.privateNetwork ? ' (private)' : ''}`;
    return (
        <Box flexDirection="column" paddingX={1}>
            <Text>
                <Text bold color="yellow">strongdoge</Text> {node.version}  node <Text bold>{node.shortId || '…'}</Text>  network {network}  engine {engine.state}{node.nat && `  NAT ${formatNat(node.nat, node.relayPairs)}`}
            </Text>
            <Text>
                API <Text color="green">{node.proxyUrl ?? 'starting…'}</Text>  key: {node.apiKeyRequired ? 'the one given to --api-key' : 'any (none required)'}
            </Text>
        </Box>
    );
}
