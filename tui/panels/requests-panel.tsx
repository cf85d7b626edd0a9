import {Text} from 'ink';
import type {DashboardState} from '../dashboard-state.js';
import {formatRate} from '../text-graphics.js';
import {Panel} from './panel.js';

export function RequestsPanel({requests, focused, rows = 5}: Pick<DashboardState, 'requests'> & {focused?: boolean, rows?: number}) {
    return (
        <Panel title="Recent requests" focused={focused}>
            {requests.length === 0 && <Text dimColor>none yet: point a chat client at the API URL above</Text>}
            {requests.slice(0, rows).map((request) => (
                <Text key={request.id} wrap="truncate-end" color={request.status >= 400 ? 'red' : undefined}>
                    {new Date(request.finishedAt).toTimeString().slice(0, 8)} {request.status} {request.model} {request.route} {request.tokens}t {formatRate(request.tokensPerSecond)}t/s
                </Text>
            ))}
        </Panel>
    );
}
