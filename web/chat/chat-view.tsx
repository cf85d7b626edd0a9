import {useEffect, useMemo, useRef, useState} from 'preact/hooks';
import type {ModelEntry} from '../api-client.js';
import {errorMessage} from '../use-poll.js';
import {streamChat, type ChatRequest} from './chat-stream.js';
import {chatSettingsDefaults, loadConversations, newConversation, saveConversations, titleOf, type ChatMessage, type Conversation} from './conversations.js';
import {Markdown} from './markdown.js';

/** How often a streaming answer is redrawn: each piece re-renders the Markdown of the whole answer. */
const REDRAW_MS = 50;

const GROUPS = {'strongdoge:pipeline': 'Pipelines', strongdoge: 'This node'} as Record<string, string>;

/**
 * Models grouped as `/v1/models` says who serves them. A model this node splits over peers is listed both as its own
 * and as the pipeline's: it shows once, under Pipelines.
 */
function modelGroups(models: ModelEntry[]) {
    const groupOf = new Map<string, string>();
    for (const model of models) {
        const group = GROUPS[model.owned_by] ?? 'Peers';
        const current = groupOf.get(model.id);
        if (current === undefined || group === 'Pipelines' || (group === 'This node' && current === 'Peers'))
            groupOf.set(model.id, group);
    }
    return ['This node', 'Pipelines', 'Peers'].map((group) => [group, [...groupOf].filter(([, each]) => each === group).map(([id]) => id)] as const)
        .filter(([, ids]) => ids.length > 0);
}

function ModelPicker({models, value, onChange}: {models: ModelEntry[] | null, value: string, onChange: (model: string) => void}) {
    const groups = modelGroups(models ?? []);
    const listed = groups.some(([, ids]) => ids.includes(value));
    return (
        <label class="field">
            <span>Model</span>
            <select aria-label="Model" value={value} onChange={(event) => onChange(event.currentTarget.value)}>
                {!listed && <option value={value}>{value === '' ? (models === null ? 'loading…' : 'no model served') : `${value} (not served now)`}</option>}
                {groups.map(([group, ids]) => (
                    <optgroup key={group} label={group}>
                        {ids.map((id) => <option key={id} value={id}>{id}</option>)}
                    </optgroup>
                ))}
            </select>
        </label>
    );
}

function NumberField({label, value, min, max, step, onChange}: {label: string, value: number, min: number, max: number, step: number, onChange: (value: number) => void}) {
    return (
        <label class="field">
            <span>{label}</span>
            <input type="number" aria-label={label} value={value} min={min} max={max} step={step} onInput={(event) => {
                const parsed = Number(event.currentTarget.value);
                if (event.currentTarget.value !== '' && Number.isFinite(parsed) && parsed >= min && parsed <= max)
                    onChange(parsed);
            }}/>
        </label>
    );
}

interface MessageProps {
    message: ChatMessage,
    streaming: boolean,
    canRegenerate: boolean,
    canEdit: boolean,
    onRegenerate: () => void,
    onResend: (content: string) => void
}

function Message({message, streaming, canRegenerate, canEdit, onRegenerate, onResend}: MessageProps) {
    const [editing, setEditing] = useState<string | null>(null);
    const [raw, setRaw] = useState(false);
    // A new answer in this place (regenerated, or after an edit) is shown formatted.
    useEffect(() => {
        if (streaming)
            setRaw(false);
    }, [streaming]);
    const rendered = useMemo(() => <Markdown source={message.content}/>, [message.content]);
    if (message.role === 'user')
        return (
            <div class="message user" data-role="user">
                {editing === null ? <div class="bubble"><p class="user-text">{message.content}</p></div> : (
                    <form class="edit" onSubmit={(event) => {
                        event.preventDefault();
                        if (editing.trim() !== '') {
                            onResend(editing);
                            setEditing(null);
                        }
                    }}>
                        <textarea aria-label="Edit message" value={editing} rows={3} onInput={(event) => setEditing(event.currentTarget.value)}/>
                        <div class="actions">
                            <button type="submit" class="primary">Save and send</button>
                            <button type="button" onClick={() => setEditing(null)}>Cancel</button>
                        </div>
                    </form>
                )}
                {editing === null && canEdit && <div class="actions"><button type="button" class="link-button" onClick={() => setEditing(message.content)}>Edit</button></div>}
            </div>
        );
    return (
        <div class="message assistant" data-role="assistant" data-finish={message.finish ?? (streaming ? 'streaming' : '')}>
            <div class="bubble">
                {raw ? <pre class="raw">{message.content}</pre> : rendered}
                {streaming && <span class="cursor" aria-hidden="true"/>}
                {message.error !== undefined && <p class="error" role="alert">{message.error}</p>}
            </div>
            {!streaming && (
                <div class="actions">
                    {message.finish === 'stopped' && <span class="muted">stopped</span>}
                    {message.finish === 'length' && <span class="muted">cut at max tokens</span>}
                    {message.tokensPerSecond !== undefined && <span class="muted">{message.tokensPerSecond.toFixed(1)} tokens/s</span>}
                    <button type="button" class="link-button" aria-pressed={raw} onClick={() => setRaw(!raw)}>{raw ? 'Formatted' : 'Source'}</button>
                    {canRegenerate && <button type="button" class="link-button" onClick={onRegenerate}>Regenerate</button>}
                </div>
            )}
        </div>
    );
}

function initialConversations() {
    const stored = loadConversations();
    return stored.length > 0 ? stored : [newConversation(chatSettingsDefaults)];
}

/** Chat with any model the network serves; conversations stay in this browser. */
export function ChatView({models}: {models: ModelEntry[] | null}) {
    const [conversations, setConversations] = useState(initialConversations);
    const [currentId, setCurrentId] = useState(() => conversations[0]!.id);
    const [draft, setDraft] = useState('');
    const [streaming, setStreaming] = useState<AbortController | null>(null);
    const [showList, setShowList] = useState(false);
    const [storageFull, setStorageFull] = useState(false);
    const scroller = useRef<HTMLDivElement>(null);
    const current = conversations.find((conversation) => conversation.id === currentId) ?? conversations[0]!;

    const update = (id: string, change: (conversation: Conversation) => Conversation) =>
        setConversations((list) => list.map((conversation) => conversation.id === id ? change(conversation) : conversation));

    // The first model served, for a conversation that has none yet.
    const firstModel = models?.[0]?.id;
    useEffect(() => {
        if (current.model === '' && firstModel !== undefined)
            setConversations((list) => list.map((conversation) => conversation.id === current.id ? {...conversation, model: firstModel} : conversation));
    }, [current.id, current.model, firstModel]);

    // Stored once an answer is complete, not at every streamed piece; empty conversations are not kept.
    useEffect(() => {
        if (streaming === null)
            setStorageFull(!saveConversations(conversations.filter((conversation) => conversation.messages.length > 0)));
    }, [conversations, streaming]);

    // Follows a streaming answer while the reader is at the bottom.
    const lastContent = current.messages.at(-1)?.content;
    useEffect(() => {
        const element = scroller.current;
        if (element !== null && lastContent !== undefined && element.scrollHeight - element.scrollTop - element.clientHeight < 120)
            element.scrollTop = element.scrollHeight;
    }, [lastContent]);

    async function generate(conversation: Conversation, history: ChatMessage[]) {
        const controller = new AbortController();
        setStreaming(controller);
        const answerIndex = history.length;
        const setAnswer = (answer: ChatMessage) => update(conversation.id, (latest) => ({
            ...latest, updatedAt: Date.now(), messages: [...latest.messages.slice(0, answerIndex), answer]
        }));
        update(conversation.id, (latest) => ({...latest, title: titleOf(history), updatedAt: Date.now(), messages: [...history, {role: 'assistant', content: ''}]}));
        const request: ChatRequest = {
            model: conversation.model,
            messages: [...(conversation.system.trim() === '' ? [] : [{role: 'system' as const, content: conversation.system}]),
                ...history.map(({role, content}) => ({role, content}))],
            temperature: conversation.temperature,
            max_tokens: conversation.maxTokens
        };
        let text = '';
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
            const end = await streamChat(request, controller.signal, (piece) => {
                text += piece;
                timer ??= setTimeout(() => {
                    timer = undefined;
                    setAnswer({role: 'assistant', content: text});
                }, REDRAW_MS);
            });
            clearTimeout(timer);
            setAnswer({role: 'assistant', content: text, finish: end.finishReason ?? 'stop', ...(end.tokensPerSecond !== null && {tokensPerSecond: end.tokensPerSecond})});
        } catch (error) {
            clearTimeout(timer);
            setAnswer(controller.signal.aborted
                ? {role: 'assistant', content: text, finish: 'stopped'}
                : {role: 'assistant', content: text, finish: 'error', error: errorMessage(error)});
        } finally {
            setStreaming(null);
        }
    }

    const send = () => {
        if (streaming !== null || draft.trim() === '' || current.model === '')
            return;
        void generate(current, [...current.messages, {role: 'user', content: draft}]);
        setDraft('');
    };

    const startNew = () => {
        setShowList(false);
        if (current.messages.length === 0)
            return;
        const fresh = newConversation({model: current.model, system: current.system, temperature: current.temperature, maxTokens: current.maxTokens});
        setConversations((list) => [fresh, ...list]);
        setCurrentId(fresh.id);
    };

    const remove = (id: string) => {
        const rest = conversations.filter((conversation) => conversation.id !== id);
        const next = rest.length > 0 ? rest : [newConversation({...chatSettingsDefaults, model: current.model})];
        setConversations(next);
        if (id === current.id)
            setCurrentId(next[0]!.id);
    };

    const lastAssistant = current.messages.findLastIndex((message) => message.role === 'assistant');
    const busy = streaming !== null;
    const listed = conversations.filter((conversation) => conversation.messages.length > 0 || conversation.id === current.id);

    return (
        <div class={`chat${showList ? ' show-list' : ''}`}>
            <aside class="conversations" aria-label="Conversations">
                <button type="button" class="primary" onClick={startNew} disabled={busy}>New chat</button>
                <ul>
                    {listed.map((conversation) => (
                        <li key={conversation.id} class={conversation.id === current.id ? 'selected' : ''}>
                            <button type="button" class="conversation-title" disabled={busy} onClick={() => {
                                setCurrentId(conversation.id);
                                setShowList(false);
                            }}>{conversation.title}</button>
                            {conversation.messages.length > 0 && <button type="button" class="link-button" aria-label={`Delete ${conversation.title}`} disabled={busy}
                                onClick={() => remove(conversation.id)}>×</button>}
                        </li>
                    ))}
                </ul>
                {storageFull && <p class="warning">This browser refused to store more: the oldest chats may be lost.</p>}
            </aside>
            <section class="thread">
                <div class="chat-settings">
                    <button type="button" class="chats-toggle" aria-expanded={showList} onClick={() => setShowList(!showList)}>Chats</button>
                    <ModelPicker models={models} value={current.model} onChange={(model) => update(current.id, (conversation) => ({...conversation, model}))}/>
                    <details class="settings">
                        <summary>Settings</summary>
                        <div class="settings-body">
                            <label class="field wide">
                                <span>System prompt</span>
                                <textarea aria-label="System prompt" rows={3} value={current.system}
                                    onInput={(event) => update(current.id, (conversation) => ({...conversation, system: event.currentTarget.value}))}/>
                            </label>
                            <NumberField label="Temperature" value={current.temperature} min={0} max={2} step={0.1}
                                onChange={(temperature) => update(current.id, (conversation) => ({...conversation, temperature}))}/>
                            <NumberField label="Max tokens" value={current.maxTokens} min={1} max={131072} step={1}
                                onChange={(maxTokens) => update(current.id, (conversation) => ({...conversation, maxTokens}))}/>
                        </div>
                    </details>
                </div>
                <div class="messages" ref={scroller} aria-live="polite">
                    {current.messages.length === 0 && <p class="muted empty">Ask anything: the answer streams from {current.model === '' ? 'the network' : current.model}.</p>}
                    {current.messages.map((message, index) => (
                        // biome-ignore lint/suspicious/noArrayIndexKey: a message is its place in the conversation (editing one drops those after it)
                        <Message key={index} message={message} streaming={busy && index === current.messages.length - 1}
                            canRegenerate={!busy && index === lastAssistant && index === current.messages.length - 1}
                            canEdit={!busy}
                            onRegenerate={() => void generate(current, current.messages.slice(0, index))}
                            onResend={(content) => void generate(current, [...current.messages.slice(0, index), {role: 'user', content}])}/>
                    ))}
                </div>
                <form class="composer" onSubmit={(event) => {
                    event.preventDefault();
                    send();
                }}>
                    <textarea aria-label="Message" placeholder="Message (Enter sends, Shift+Enter for a new line)" rows={2} value={draft}
                        onInput={(event) => setDraft(event.currentTarget.value)}
                        onKeyDown={(event) => {
                            if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
                                event.preventDefault();
                                send();
                            }
                        }}/>
                    {busy
                        ? <button type="button" class="stop" onClick={() => streaming.abort()}>Stop</button>
                        : <button type="submit" class="primary" disabled={draft.trim() === '' || current.model === ''}>Send</button>}
                </form>
            </section>
        </div>
    );
}
