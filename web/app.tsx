import {useEffect, useState} from 'preact/hooks';
import {fetchModels, fetchStatus, onUnauthorized} from './api-client.js';
import {ChatView} from './chat/chat-view.js';
import {KeyPrompt} from './key-prompt.js';
import {NETWORK_POLL_MS, NetworkView} from './network/network-view.js';
import {useThroughput} from './network/throughput.js';
import {usePoll} from './use-poll.js';

type View = 'chat' | 'network';

/** `/api/node` feeds the header in every view, and the throughput chart: slowly while the chat is shown. */
const CHAT_NODE_POLL_MS = 10_000;
/** Models come and go with peers. */
const MODELS_POLL_MS = 15_000;

const loadNode = (signal: AbortSignal) => fetchStatus('/api/node', signal);
const loadModels = () => fetchModels();

function viewOf(hash: string): View {
    return hash === '#/network' ? 'network' : 'chat';
}

export function App() {
    const [view, setView] = useState(() => viewOf(location.hash));
    const [askKey, setAskKey] = useState(false);
    useEffect(() => onUnauthorized(() => setAskKey(true)), []);
    useEffect(() => {
        const onHash = () => setView(viewOf(location.hash));
        window.addEventListener('hashchange', onHash);
        return () => window.removeEventListener('hashchange', onHash);
    }, []);

    const node = usePoll(loadNode, view === 'network' ? NETWORK_POLL_MS : CHAT_NODE_POLL_MS);
    const models = usePoll(loadModels, MODELS_POLL_MS);
    const throughput = useThroughput(node.data);
    const status = node.data;

    return (
        <div class="app">
            <header class="top">
                <span class="brand">strongdoge</span>
                <nav>
                    <a href="#/chat" aria-current={view === 'chat' ? 'page' : undefined}>Chat</a>
                    <a href="#/network" aria-current={view === 'network' ? 'page' : undefined}>Network</a>
                </nav>
                {status !== null && (
                    <span class="node-summary muted">
                        <span class="mono" title={status.id}>{status.shortId}</span> · {status.network ?? 'offline'} · {status.peers} peers · engine {status.engine.state}
                    </span>
                )}
            </header>
            {/* Both views stay mounted: an answer keeps streaming while the network is shown. */}
            <main class="chat-main" hidden={view !== 'chat'}><ChatView models={models.data}/></main>
            <main class="network-main" hidden={view !== 'network'}><NetworkView node={node} throughput={throughput} active={view === 'network'}/></main>
            {askKey && <KeyPrompt onAccepted={() => setAskKey(false)}/>}
        </div>
    );
}
