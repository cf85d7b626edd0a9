import {useState} from 'preact/hooks';
import {ApiRequestError, fetchModels, storeApiKey} from './api-client.js';
import {errorMessage} from './use-poll.js';

/**
 * Asked once when the node answers 401 (it runs with `--api-key`): the key is tried on `/v1/models` and kept in
 * sessionStorage, for this tab only.
 */
export function KeyPrompt({onAccepted}: {onAccepted: () => void}) {
    const [key, setKey] = useState('');
    const [problem, setProblem] = useState<string | null>(null);
    const [checking, setChecking] = useState(false);
    return (
        <div class="overlay">
            <form class="card key-prompt" aria-labelledby="key-prompt-title" onSubmit={async (event) => {
                event.preventDefault();
                setChecking(true);
                storeApiKey(key.trim());
                try {
                    await fetchModels();
                    onAccepted();
                } catch (error) {
                    storeApiKey(null);
                    setProblem(error instanceof ApiRequestError && error.status === 401 ? 'That key is not the one this node was started with.' : errorMessage(error));
                } finally {
                    setChecking(false);
                }
            }}>
                <h2 id="key-prompt-title">API key</h2>
                <p>This node asks for the key it was started with (<code>--api-key</code>). It is kept for this tab only, until you close it.</p>
                <input type="password" aria-label="API key" autocomplete="current-password" value={key} onInput={(event) => setKey(event.currentTarget.value)} required/>
                {problem !== null && <p class="error" role="alert">{problem}</p>}
                <button type="submit" class="primary" disabled={checking || key.trim() === ''}>Continue</button>
            </form>
        </div>
    );
}
